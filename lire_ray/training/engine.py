"""Engine construction: DeepSpeed config dict, learning-rate schedule, optional LoRA.

The paper trains with LoRA under DeepSpeed ZeRO-2 and a cosine learning-rate decay (sec. 4.2);
this module turns a recipe's :class:`~lire_ray.config.TrainConfig` into exactly that (a single
CPU worker trains with the plain PyTorch engine of :mod:`lire_ray.training.torch_engine`
instead, see :func:`engine_kind`): AdamW
(on GPUs DeepSpeed's fused kernel, or its CPU Adam when the optimizer is offloaded; on the CPU
accelerator ``torch.optim.AdamW`` through DeepSpeed's ``torch_adam`` switch, so nothing has to be
compiled there), a linear warmup followed by a cosine decay to zero, gradient clipping, and ZeRO
stage 0-3. bf16 is used on GPUs and fp32 on the CPU accelerator. ``train.deepspeed`` is merged
over the result (:mod:`lire_ray.training.ds_config`).

DeepSpeed is imported lazily (:func:`import_deepspeed`); on machines without CUDA the CPU
accelerator is selected before the import, since DeepSpeed decides its accelerator once, at
import time.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any

from lire_ray.config import LoraConfig, TrainConfig
from lire_ray.errors import ConfigError, DataError, DependencyError, ModelLoadError
from lire_ray.training.ds_config import apply_overrides

#: AdamW moments and epsilon (the recipe exposes lr and weight decay only).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


#: A torch extension build lock older than this is taken to be left by a killed process.
STALE_LOCK_S = 600.0


def clear_stale_build_locks(max_age_s: float = STALE_LOCK_S) -> list[str]:
    """Remove torch-extension build locks left behind by killed processes.

    DeepSpeed loads its CPU ops (e.g. the shared-memory collectives) through torch's extension
    builder, which holds ``<extensions dir>/<op>/lock`` while it checks or builds the op and
    waits, silently and forever, while that file exists. A process killed in that window leaves
    it, and every later training run hangs at start-up. A build takes well under a minute, so
    a lock older than ``max_age_s`` cannot belong to a live one.

    Args:
        max_age_s: Age in seconds from which a lock counts as stale.

    Returns:
        The lock files removed.
    """
    import glob
    import logging
    import time

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "torch_extensions", "*")
    removed = []
    for lock in glob.glob(os.path.join(root, "*", "lock")):
        try:
            if time.time() - os.path.getmtime(lock) > max_age_s:
                os.remove(lock)
                removed.append(lock)
        except OSError:  # gone meanwhile
            continue
    for lock in removed:
        logging.getLogger(__name__).warning(
            "removed a stale torch extension build lock left by a killed process: %s", lock)
    return removed


def import_deepspeed(use_gpu: bool | None = None):
    """Import DeepSpeed, choosing the CPU accelerator first when no GPU is used.

    Args:
        use_gpu: Whether this process trains on a GPU; ``None`` asks torch whether CUDA is
            available.

    Returns:
        The ``deepspeed`` module.

    Raises:
        DependencyError: DeepSpeed is not installed.
    """
    if use_gpu is None:
        import torch

        use_gpu = torch.cuda.is_available()
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    clear_stale_build_locks()
    try:
        import deepspeed
    except ImportError as exc:
        raise DependencyError(
            "training needs DeepSpeed: pip install 'deepspeed==0.19.8' (it builds from source "
            f"with no compiler needed for the ops this project uses): {exc}") from exc
    return deepspeed


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """The training precision actually used: ``auto`` is bf16 on GPU and fp32 on CPU.

    Args:
        precision: ``TrainConfig.precision`` (``auto``, ``fp32`` or ``bf16``).
        use_gpu: Whether the workers train on GPUs.

    Returns:
        ``"fp32"`` or ``"bf16"``.

    Raises:
        ConfigError: Unknown precision name.
    """
    if precision == "auto":
        return "bf16" if use_gpu else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, got '{precision}'")
    return precision


def rows_per_worker(num_prompts: int, world_size: int) -> int:
    """Prompts each worker trains on per epoch.

    Ray Train splits the dataset with ``streaming_split(world_size, equal=True)``, which gives
    every worker the same number of rows and drops the remainder, so workers stay in lockstep.

    Args:
        num_prompts: Rows (prompts) in the dataset.
        world_size: Number of training workers.

    Returns:
        ``num_prompts // world_size``.

    Raises:
        DataError: Fewer prompts than workers (some worker would get nothing).
    """
    if num_prompts < world_size or world_size < 1:
        raise DataError(f"the dataset has {num_prompts} prompt(s), fewer than the "
                        f"{world_size} training worker(s); every worker needs at least one")
    return num_prompts // world_size


def steps_per_epoch(num_prompts: int, world_size: int, micro_batch_prompts: int,
                    grad_accum: int) -> int:
    """Optimizer steps in one epoch over a dataset of ``num_prompts`` rows.

    Each worker reads its rows in micro-batches of ``micro_batch_prompts`` prompts (the last
    one may be smaller) and steps after every ``grad_accum`` micro-batches; the last step of an
    epoch may use fewer micro-batches, so an epoch never carries gradients into the next.

    Args:
        num_prompts: Rows (prompts) in the dataset.
        world_size: Number of training workers.
        micro_batch_prompts: Prompts per micro-batch per worker.
        grad_accum: Micro-batches per optimizer step.

    Returns:
        ``ceil(ceil(rows_per_worker / micro_batch_prompts) / grad_accum)``.

    Raises:
        DataError: Fewer prompts than workers.
    """
    micro = math.ceil(rows_per_worker(num_prompts, world_size) / micro_batch_prompts)
    return math.ceil(micro / grad_accum)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length ``ceil(warmup_ratio * total_steps)`` (the transformers Trainer rule)."""
    return math.ceil(warmup_ratio * total_steps)


def lr_factor(step: int, *, total_steps: int, warmup: int) -> float:
    """The schedule's multiplier of the base lr at 0-based optimizer step ``step``.

    A linear warmup over ``warmup`` steps that starts above 0, ``(step + 1) / (warmup + 1)``,
    then a cosine decay ``(1 + cos(pi * (step - warmup) / (total_steps - warmup))) / 2``
    (paper sec. 4.2). transformers' warmup ``step / warmup`` gives the first step lr 0, which
    spends a whole forward and backward pass on no update; without warmup both are the plain
    cosine from the full lr, as TRL and the transformers Trainer run it.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_scheduler(optimizer, *, total_steps: int, warmup: int):
    """Linear warmup, then cosine decay to 0 (:func:`lr_factor`): a ``LambdaLR`` that the
    engine steps once per optimizer step and saves in its checkpoints."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, partial(lr_factor, total_steps=total_steps, warmup=warmup))


def build_ds_config(train: TrainConfig, *, use_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config for a recipe's training section.

    Args:
        train: The recipe's training settings (ZeRO stage, precision, accumulation, clipping,
            lr, weight decay, micro-batch size in prompts).
        use_gpu: Whether the workers train on GPUs (decides ``precision: auto``).

    Returns:
        A DeepSpeed config dict: AdamW (``torch_adam`` on CPU; DeepSpeed's fused Adam on GPU,
        its CPU Adam when ``train.deepspeed`` offloads the optimizer), ``gradient_clipping``
        equal to ``max_grad_norm``, ``zero_optimization.stage`` equal to ``zero_stage``, bf16
        enabled exactly when the resolved precision is bf16, with ``train.deepspeed`` merged
        over it (:func:`~lire_ray.training.ds_config.apply_overrides`). The learning-rate
        schedule is not in the dict: :func:`build_engine` passes it as a scheduler object.

    Raises:
        ConfigError: Unknown precision.
    """
    precision = resolve_precision(train.precision, use_gpu)
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage in (1, 2):
        # Overlapping the gradient reduction with backward only helps with a real interconnect.
        zero.update(overlap_comm=use_gpu, contiguous_gradients=True)
    elif train.zero_stage == 3:
        zero.update(overlap_comm=use_gpu, stage3_gather_16bit_weights_on_model_save=True)
    generated = {
        "train_micro_batch_size_per_gpu": train.micro_batch_prompts,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": train.max_grad_norm,
        # DeepSpeed's fused Adam needs a CUDA device; on the CPU accelerator torch's AdamW
        # avoids compiling DeepSpeed's CPU Adam op.
        "optimizer": {"type": "AdamW", "params": {
            "lr": train.lr, "betas": list(ADAM_BETAS), "eps": ADAM_EPS,
            "weight_decay": train.weight_decay, "torch_adam": not use_gpu,
            "adam_w_mode": True}},
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return apply_overrides(generated, train.deepspeed)


def apply_lora(model, lora: LoraConfig, *, seed: int):
    """Wrap a causal LM with LoRA adapters (peft) so that only adapter weights train.

    Every worker draws the same adapter initialisation from ``seed``.

    Args:
        model: A transformers causal LM.
        lora: The recipe's LoRA settings (must be enabled).
        seed: Seed of the adapter initialisation.

    Returns:
        A ``peft.PeftModel`` whose only trainable parameters are the LoRA matrices.

    Raises:
        DependencyError: peft is not installed.
        ConfigError: None of ``target_modules`` exists in the model.
    """
    import torch

    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError as exc:
        raise DependencyError(f"model.lora.enabled needs peft: pip install peft ({exc})") from exc
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in lora.target_modules if t not in names]
    if len(missing) == len(lora.target_modules):
        raise ConfigError(f"model.lora.target_modules {lora.target_modules}: no such modules in "
                          f"{type(model).__name__}; it has e.g. {sorted(names)[:12]}")
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def load_lora(model, adapter_dir: str):
    """Wrap a causal LM with a saved LoRA adapter whose weights keep training.

    Used when an Evolve step continues the adapter of the previous one on the same base model
    (``merge_on_save: false``), so every checkpoint's adapter applies to the initial policy.

    Args:
        model: The base causal LM the adapter was trained on.
        adapter_dir: A peft adapter directory (``adapter_config.json`` + safetensors).

    Returns:
        A trainable ``peft.PeftModel``.

    Raises:
        DependencyError: peft is not installed.
        ModelLoadError: ``adapter_dir`` holds no loadable adapter.
    """
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise DependencyError(f"model.lora.enabled needs peft: pip install peft ({exc})") from exc
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the LoRA adapter in {adapter_dir}: {exc}") from None


def engine_kind(train: TrainConfig, *, use_gpu: bool, world_size: int) -> str:
    """Which engine trains: ``"torch"`` (:class:`~lire_ray.training.torch_engine.TorchEngine`)
    or ``"deepspeed"``.

    ``train.engine: auto`` picks torch for a single CPU worker whose recipe asks nothing of
    DeepSpeed (no ``train.deepspeed`` additions such as offload), where ZeRO has nothing to
    partition; GPU workers and multi-worker runs keep DeepSpeed, so GPU defaults are unchanged.

    Raises:
        ConfigError: ``train.engine: torch`` with more than one worker or on GPU.
    """
    if train.engine == "torch" and (world_size > 1 or use_gpu):
        raise ConfigError("train.engine=torch trains one CPU worker; with "
                          f"{world_size} worker(s){' on GPU' if use_gpu else ''} use "
                          "train.engine=deepspeed (or auto)")
    if train.engine != "auto":
        return train.engine
    return "torch" if not use_gpu and world_size == 1 and not train.deepspeed else "deepspeed"


def build_engine(model, train: TrainConfig, *, use_gpu: bool, total_steps: int,
                 world_size: int = 1):
    """Wrap ``model`` in a training engine with AdamW and the cosine-with-warmup schedule.

    With DeepSpeed, ``torch.distributed`` must already be initialised (Ray Train does it,
    with gloo on CPU).

    Args:
        model: The policy (transformers model or peft model); only parameters with
            ``requires_grad`` are optimised.
        train: The recipe's training settings.
        use_gpu: Whether this worker trains on a GPU.
        total_steps: Optimizer steps of the whole run (sets the schedule's length).
        world_size: Training workers (see :func:`engine_kind`).

    Returns:
        The ``DeepSpeedEngine``, or a :class:`~lire_ray.training.torch_engine.TorchEngine`.

    Raises:
        DependencyError: DeepSpeed is missing.
        ConfigError: No trainable parameters, or ``total_steps < 1``.
    """
    if total_steps < 1:
        raise ConfigError(f"the run has {total_steps} optimizer steps; it needs at least one")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    scheduler = partial(make_scheduler, total_steps=total_steps,
                        warmup=warmup_steps(total_steps, train.warmup_ratio))
    if engine_kind(train, use_gpu=use_gpu, world_size=world_size) == "torch":
        from lire_ray.training.torch_engine import TorchEngine, make_adamw

        optimizer = make_adamw(params, lr=train.lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                               weight_decay=train.weight_decay)
        return TorchEngine(model, optimizer, scheduler, max_grad_norm=train.max_grad_norm)
    deepspeed = import_deepspeed(use_gpu)
    config = build_ds_config(train, use_gpu=use_gpu)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=config,
                                      lr_scheduler=scheduler, dist_init_required=False)
    return engine
