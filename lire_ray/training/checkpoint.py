"""Checkpoints: the resumable training state, and the Hugging Face policy a run produces.

Two kinds of output:

- *Training state* (one directory per epoch end, handed to Ray Train, which merges the workers'
  files): the DeepSpeed checkpoint (module, ZeRO-partitioned optimizer state, lr scheduler,
  step counters; frozen base weights left out under LoRA), every worker's RNG state and epoch-1
  row cache, and ``trainer_state.json`` (epoch, step, metric history). Resuming from it
  continues the exact loss trajectory of an uninterrupted run.
- *Policy output* (once, at the end, rank 0): a directory in Hugging Face format
  (``save_pretrained``, safetensors) with the tokenizer, a LoRA adapter under ``adapter/`` when
  LoRA is on (and the merged full model beside it when ``merge_on_save``), the per-step metric
  history ``train_history.jsonl`` and ``train_info.json``. It is built under a temporary name,
  renamed into place, and the ``COMPLETE`` marker is written last.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lire_ray.atomic import atomic_write_text, replace_dir
from lire_ray.errors import RunDirError
from lire_ray.rundir import COMPLETE_MARKER
from lire_ray.training.data import ShardCache

DS_TAG = "deepspeed"
STATE_FILE = "trainer_state.json"
HISTORY_FILE = "train_history.jsonl"
INFO_FILE = "train_info.json"
ADAPTER_DIR = "adapter"


@dataclass
class TrainState:
    """Progress of a training run, restored on resume.

    Attributes:
        epoch: Epochs completed of the Evolve step being trained.
        step: Optimizer steps completed (all Evolve steps of the run).
        history: One metrics dict per optimizer step so far.
        version: The policy version the Evolve step being trained produces.
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng_rank{rank}.pt"


def _cache_file(directory: Path, rank: int) -> Path:
    return directory / f"rows_rank{rank}.parquet"


def save_train_state(engine, directory: str | Path, *, rank: int, state: TrainState,
                     cache: ShardCache | None, exclude_frozen: bool) -> None:
    """Write this worker's part of a resumable checkpoint into ``directory``.

    Every worker must call it (DeepSpeed's checkpoint is collective under ZeRO).

    Args:
        engine: The DeepSpeed engine.
        directory: A local directory (each worker its own; Ray Train merges them).
        rank: The worker's rank.
        state: Progress to record (rank 0 writes it).
        cache: The worker's epoch-1 rows, or None before epoch 1 finished.
        exclude_frozen: Leave frozen parameters (the LoRA base model) out of the checkpoint.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=DS_TAG, exclude_frozen_parameters=exclude_frozen)
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, _rng_file(directory, rank))
    if cache is not None:
        cache.save(_cache_file(directory, rank))
    if rank == 0:
        atomic_write_text(directory / STATE_FILE, json.dumps(asdict(state)))


def load_train_state(engine, directory: str | Path, *, rank: int,
                     exclude_frozen: bool) -> tuple[TrainState, ShardCache | None]:
    """Restore a checkpoint written by :func:`save_train_state` into ``engine``.

    Args:
        engine: A freshly built engine with the same model, config and world size.
        directory: The merged checkpoint directory.
        rank: The worker's rank.
        exclude_frozen: The checkpoint left frozen parameters out (LoRA).

    Returns:
        The recorded progress and the worker's row cache (None if not saved).

    Raises:
        RunDirError: The directory lacks the state file or this worker's DeepSpeed files.
        DataError: The cached rows lack pool columns.
    """
    import torch

    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        raise RunDirError(f"training checkpoint {directory} has no {STATE_FILE}")
    path, _ = engine.load_checkpoint(str(directory), tag=DS_TAG,
                                     load_module_strict=not exclude_frozen,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RunDirError(f"training checkpoint {directory} has no DeepSpeed state under "
                          f"'{DS_TAG}' for rank {rank} (was it written with another world size?)")
    if _rng_file(directory, rank).is_file():
        rng = torch.load(_rng_file(directory, rank), weights_only=False)
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    raw = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    cache_path = _cache_file(directory, rank)
    cache = ShardCache.load(cache_path) if cache_path.is_file() else None
    return TrainState(**raw), cache


def _gathered(engine, zero_stage: int):
    """A context in which every parameter is whole on every rank (ZeRO-3 partitions them)."""
    import contextlib

    if zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


@dataclass
class PolicySnapshot:
    """The trained weights, copied to CPU memory, so they can be written or sent to the
    samplers while training goes on (the engine's own tensors keep changing).

    Attributes:
        tensors: ``{name: tensor}``: the full model's state dict (Hugging Face names), or with
            LoRA only the adapter's (peft names, as in ``adapter_model.safetensors``).
        adapter_config: With LoRA, the adapter's ``adapter_config.json`` content; else None.
    """

    tensors: dict[str, Any]
    adapter_config: dict[str, Any] | None = None


def snapshot_policy(engine, *, rank: int, lora_enabled: bool, zero_stage: int
                    ) -> PolicySnapshot | None:
    """Copy the trained weights to CPU memory on rank 0 (every rank must call: ZeRO-3 gathers
    parameters collectively).

    Returns:
        The snapshot on rank 0, None on the other ranks.
    """
    with _gathered(engine, zero_stage):
        if rank != 0:
            return None
        module = engine.module
        if lora_enabled:
            from peft import get_peft_model_state_dict

            tensors = get_peft_model_state_dict(module)
            config = module.peft_config["default"].to_dict()
            config = json.loads(json.dumps(config, default=lambda v: sorted(v)
                                           if isinstance(v, set) else str(v)))
        else:
            tensors, config = module.state_dict(), None
        # Tied weights (a shared embedding and lm_head) stay one tensor, so the copy is made
        # once and save_pretrained stores it once.
        copies: dict[tuple, Any] = {}
        out = {}
        for k, v in tensors.items():
            key = (v.data_ptr(), v.dtype, tuple(v.shape), v.device)
            if key not in copies:
                copies[key] = v.detach().to("cpu").clone()
            out[k] = copies[key]
        return PolicySnapshot(out, config)


def write_adapter(directory: str | Path, tensors: dict[str, Any], config: dict[str, Any]) -> None:
    """Write a peft LoRA adapter directory (``adapter_config.json``,
    ``adapter_model.safetensors``) from tensors and config."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2),
                                                   encoding="utf-8")


def write_policy(snapshot: PolicySnapshot, *, module, output_dir: str | Path, tokenizer,
                 init_model: str, merge_on_save: bool, history: Sequence[dict[str, Any]],
                 info: dict[str, Any]) -> Path:
    """Write a snapshot as a Hugging Face policy directory; safe in a background thread.

    Layout of ``output_dir``: without LoRA, the full model (``config.json``,
    ``model.safetensors``) and tokenizer. With LoRA, ``adapter/`` holds the peft adapter
    (its ``base_model_name_or_path`` is ``init_model``); with ``merge_on_save`` the merged full
    model is also written at the top level. Always: ``train_history.jsonl``,
    ``train_info.json``, and ``COMPLETE`` (last). Built under a temporary name and renamed into
    place, so an interrupted write is never trusted.

    Args:
        snapshot: The weights (see :func:`snapshot_policy`).
        module: The model the snapshot came from; only its configuration is read (the full
            model's ``save_pretrained`` is given the snapshot's tensors).
        output_dir: Destination directory (replaced if it exists).
        tokenizer: The policy's tokenizer.
        init_model: The model training started from (the base of a LoRA adapter).
        merge_on_save: With LoRA, also save the merged full model.
        history: Per-step metric dicts.
        info: Extra facts for ``train_info.json`` (steps, loss, policy version, ...).

    Returns:
        The written directory.
    """
    lora = snapshot.adapter_config is not None
    out = Path(output_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if snapshot.adapter_config is not None:
            config = {**snapshot.adapter_config, "base_model_name_or_path": str(init_model)}
            write_adapter(tmp / ADAPTER_DIR, snapshot.tensors, config)
            tokenizer.save_pretrained(str(tmp / ADAPTER_DIR))
            if merge_on_save:
                _save_merged(init_model, tmp / ADAPTER_DIR, tmp)
        else:
            module.save_pretrained(str(tmp), state_dict=snapshot.tensors, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        with open(tmp / HISTORY_FILE, "w", encoding="utf-8") as fh:
            for record in history:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        meta = {**info, "init_model": str(init_model), "lora": lora,
                "full_model": (not lora) or merge_on_save,
                "adapter_dir": ADAPTER_DIR if lora else None}
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True),
                                     encoding="utf-8")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(out / COMPLETE_MARKER, "complete\n")
    return out


def save_policy(engine, *, rank: int, output_dir: str | Path, tokenizer, init_model: str,
                lora_enabled: bool, merge_on_save: bool, zero_stage: int,
                history: Sequence[dict[str, Any]], info: dict[str, Any]) -> None:
    """Snapshot and write the trained policy now (rank 0 writes; all ranks must call); see
    :func:`write_policy` for the layout."""
    snap = snapshot_policy(engine, rank=rank, lora_enabled=lora_enabled, zero_stage=zero_stage)
    if snap is not None:
        module = engine.module.get_base_model() if lora_enabled else engine.module
        write_policy(snap, module=module, output_dir=output_dir, tokenizer=tokenizer,
                     init_model=init_model, merge_on_save=merge_on_save, history=history,
                     info=info)


def _save_merged(init_model: str, adapter_dir: Path, out: Path) -> None:
    """Load the base again, apply the saved adapter, merge it and save the full model (the
    engine's own module stays untouched)."""
    from peft import PeftModel

    from lire_ray.models import load_causal_lm

    base = load_causal_lm(init_model, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
