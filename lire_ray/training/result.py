"""What a training run hands back to its driver."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lire_ray.rundir import COMPLETE_MARKER
from lire_ray.training.checkpoint import INFO_FILE


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :meth:`lire_ray.runtime.trainer.TrainerGroup.fit`.

    Attributes:
        checkpoint_dir: The policy output directory (Hugging Face format, ``COMPLETE`` marker
            inside), or None when the call stopped before the last epoch.
        adapter_dir: The LoRA adapter directory inside it, or None without LoRA.
        full_model: Whether ``checkpoint_dir`` holds a loadable full model (no LoRA, or LoRA
            with ``merge_on_save``); otherwise load ``init_model`` plus ``adapter_dir``.
        metrics: The last step's metrics (empty if no step ran).
        history: One metrics dict per optimizer step, in order.
        epochs_done: Epochs completed so far.
    """

    checkpoint_dir: Path | None
    adapter_dir: Path | None
    full_model: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_done: int = 0


def collect_result(output_dir: str | Path, history: list[dict[str, Any]] | None,
                   epochs_done: int) -> TrainResult:
    """Build a :class:`TrainResult` from a finished (or stopped) run's output directory.

    Args:
        output_dir: Where the policy was to be written.
        history: The per-step metrics returned by the workers.
        epochs_done: Epochs completed.

    Returns:
        The result; ``checkpoint_dir`` is None unless the directory is complete.
    """
    out = Path(output_dir).absolute()
    history = list(history or [])
    metrics = dict(history[-1]) if history else {}
    if not (out / COMPLETE_MARKER).is_file():
        return TrainResult(None, None, False, metrics, history, epochs_done)
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    adapter = out / info["adapter_dir"] if info.get("adapter_dir") else None
    return TrainResult(out, adapter, bool(info.get("full_model")), metrics, history,
                       epochs_done)


@dataclass(frozen=True)
class PolicyInit:
    """A policy as weights on disk: where training starts and what the samplers serve.

    Attributes:
        model: Directory or hub id of a full model.
        adapter: A LoRA adapter on ``model`` (LoRA with ``merge_on_save: false``: every step
            keeps training the previous step's adapter on the initial policy), or None.
    """

    model: str
    adapter: str | None = None


def policy_in(checkpoint: str | Path, *, base: str) -> PolicyInit:
    """The policy a checkpoint holds, deciding once between full weights and an adapter.

    A training checkpoint (``train_info.json``) with only a LoRA adapter is that adapter on
    ``base`` (the initial policy, whose weights the samplers hold); a full training checkpoint,
    or any Hugging Face model directory, is a full model.

    Args:
        checkpoint: A checkpoint or model directory.
        base: The initial policy (the base of adapter-only checkpoints).

    Returns:
        The policy.

    Raises:
        ConfigError: ``checkpoint`` does not exist, or is a training checkpoint without its
            ``COMPLETE`` marker (an interrupted save).
    """
    from lire_ray.errors import ConfigError

    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ConfigError(f"policy checkpoint {path} does not exist")
    # Absolute: the actors that load it may run in another working directory (a cluster
    # joined with ray.address=auto or ray job submit).
    path = path.resolve()
    info_file = path / INFO_FILE
    if not info_file.is_file():
        return PolicyInit(str(path))
    if not (path / COMPLETE_MARKER).is_file():
        raise ConfigError(f"checkpoint {path} has no {COMPLETE_MARKER} marker (interrupted save)")
    info = json.loads(info_file.read_text(encoding="utf-8"))
    if info.get("adapter_dir") and not info.get("full_model"):
        return PolicyInit(str(base), str(path / info["adapter_dir"]))
    return PolicyInit(str(path))
