"""Experiment tracking: TensorBoard (default), Weights & Biases, MLflow, or none.

A self-enhancement run is one experiment: the driver opens one :class:`MetricSink` for the run
and logs every optimizer step's training metrics (``train/...``, sent by the resident trainer's
rank 0 as they happen), every Evolve step's metrics (``evolve/...``) and the held-out evaluation
per judge (``eval/...``) against one global step, the optimizer step count across all Evolve
steps. The experiment's identity (the W&B run id, the MLflow run id) is kept in the run
directory (``tracking.json``), so ``resume=true`` continues the same experiment. Project,
entity, run name and tags come from the recipe's ``train.tracking``. W&B runs offline with
``WANDB_MODE=offline`` (nothing leaves the machine; ``wandb sync`` uploads later).

W&B and MLflow are optional dependencies, imported when a recipe selects them;
:func:`check_logger` lets a driver fail before any worker starts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from lire_ray.errors import ConfigError, DependencyError

LOGGERS = ("tensorboard", "wandb", "mlflow", "none")
_PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}
#: Where a run directory keeps its experiment's identity.
TRACKING_FILE = "tracking.json"


def check_logger(kind: str) -> None:
    """Fail fast when the chosen logger's package is missing.

    Args:
        kind: ``train.logger``.

    Raises:
        ConfigError: Unknown logger name.
        DependencyError: Its package is not installed (the message says which to install).
    """
    if kind not in LOGGERS:
        raise ConfigError(f"train.logger must be one of {', '.join(LOGGERS)}, got '{kind}'")
    package = _PACKAGES.get(kind)
    if package and importlib.util.find_spec(package) is None:
        raise DependencyError(f"train.logger={kind} needs the '{package}' package: "
                              f"pip install {package} (or set train.logger=none)")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (booleans, strings and NaN left out)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MetricSink:
    """One experiment's scalars, logged under prefixes against a global step.

    Args:
        kind: ``tensorboard``, ``wandb``, ``mlflow`` or ``none``.
        log_dir: Directory for TensorBoard event files (and W&B's local files).
        run_name: Run name shown by W&B / MLflow.
        config: Flat-able run configuration recorded by W&B / MLflow.
        project: W&B project / MLflow experiment name.
        entity: W&B entity (team or user); None: the default.
        tags: W&B tags / MLflow tags.
        state_dir: Where ``tracking.json`` keeps the experiment's id, so a later sink with the
            same ``state_dir`` continues the same W&B / MLflow run; None starts a new one.

    Raises:
        ConfigError: Unknown kind, or TensorBoard without a log directory.
        DependencyError: The package for ``kind`` is missing.
    """

    def __init__(self, kind: str, *, log_dir: str | Path | None, run_name: str,
                 config: dict[str, Any] | None = None, project: str = "lire-ray",
                 entity: str | None = None, tags: list[str] | None = None,
                 state_dir: str | Path | None = None):
        check_logger(kind)
        self.kind = kind
        self._writer: Any = None
        state = Path(state_dir) / TRACKING_FILE if state_dir is not None else None
        known = json.loads(state.read_text(encoding="utf-8")) if state and state.is_file() else {}
        if kind == "tensorboard":
            from tensorboardX import SummaryWriter

            if log_dir is None:
                raise ConfigError("train.logger=tensorboard needs a log directory")
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            # A unique file per writer: a resumed run's writer adds to the same experiment
            # instead of overwriting a file opened in the same second.
            self._writer = SummaryWriter(logdir=str(log_dir),
                                         filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")
            known = {"kind": kind, "log_dir": str(log_dir)}
        elif kind == "wandb":
            import wandb

            if log_dir is not None:
                Path(log_dir).mkdir(parents=True, exist_ok=True)
            run_id = known.get("id") if known.get("kind") == "wandb" else None
            self._writer = wandb.init(project=project, entity=entity, name=run_name,
                                      tags=list(tags or []), config=config or {},
                                      dir=str(log_dir) if log_dir else None,
                                      id=run_id, resume="allow" if run_id else None)
            known = {"kind": kind, "id": self._writer.id, "project": project}
        elif kind == "mlflow":
            import mlflow

            mlflow.set_experiment(project)
            run_id = known.get("id") if known.get("kind") == "mlflow" else None
            self._writer = mlflow.start_run(run_id=run_id,
                                            run_name=None if run_id else run_name,
                                            tags={t: "" for t in tags or []})
            if config and not run_id:
                mlflow.log_dict(config, "recipe.json")
            known = {"kind": kind, "id": self._writer.info.run_id, "project": project}
        if state is not None and kind != "none":
            from lire_ray.atomic import atomic_write_text

            atomic_write_text(state, json.dumps(known))

    def log(self, record: dict[str, Any], step: int, prefix: str = "train") -> None:
        """Record the numeric entries of ``record`` as ``prefix/key`` at global ``step``."""
        values = {f"{prefix}/{k}": v for k, v in scalars(record).items()}
        if not values:
            return
        if self.kind == "tensorboard":
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        elif self.kind == "wandb":
            # W&B refuses steps below the last one logged: evaluation at the same step merges.
            self._writer.log(values, step=max(step, self._writer.step))
        elif self.kind == "mlflow":
            import mlflow

            mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        """Flush and close the sink."""
        if self.kind == "tensorboard":
            self._writer.close()
        elif self.kind == "wandb":
            self._writer.finish()
        elif self.kind == "mlflow":
            import mlflow

            mlflow.end_run()


class ForwardingSink:
    """A sink that forwards each record to another process's sink (a resident trainer's rank 0
    hands its per-step metrics to the driver's experiment through ``forward``).

    Args:
        forward: Called with ``(record, step, prefix)``.
    """

    def __init__(self, forward):
        self._forward = forward

    def log(self, record: dict[str, Any], step: int, prefix: str = "train") -> None:
        self._forward(scalars(record), step, prefix)

    def close(self) -> None:
        """Nothing to close."""
