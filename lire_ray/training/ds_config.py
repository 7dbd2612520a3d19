"""``train.deepspeed``: recipe additions merged over the generated DeepSpeed config.

:func:`lire_ray.training.engine.build_ds_config` writes the DeepSpeed config from the recipe's
``train`` section. ``train.deepspeed: {...}`` is a dict deep-merged over it (its values win), for
what the recipe has no key of its own: ZeRO offload (``zero_optimization.offload_optimizer``,
``offload_param``), bucket sizes, the optimizer (``optimizer.type``, ``optimizer.params.
torch_adam``, betas, eps), activation checkpointing, profilers. DeepSpeed keys this module does
not know are passed as they are, since DeepSpeed grows keys faster than a list here could.

Settings the recipe already owns are refused (:data:`RECIPE_OWNED`), naming the recipe key to
use instead, so that one number has one place: a ``train_micro_batch_size_per_gpu`` here would
silently disagree with ``train.micro_batch_prompts``, which the data loader also reads.

No DeepSpeed import: :mod:`lire_ray.config` validates recipes with :func:`check_overrides`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: DeepSpeed config paths (dotted) that the recipe sets, and the recipe key that sets them.
RECIPE_OWNED: dict[str, str] = {
    "train_micro_batch_size_per_gpu": "train.micro_batch_prompts",
    "train_batch_size": "train.micro_batch_prompts and train.grad_accum (the global batch is "
                        "their product with resources.trainer.num_workers)",
    "gradient_accumulation_steps": "train.grad_accum",
    "gradient_clipping": "train.max_grad_norm",
    "zero_optimization.stage": "train.zero_stage",
    "bf16.enabled": "train.precision",
    "fp16.enabled": "train.precision",
    "amp.enabled": "train.precision",
    "optimizer.params.lr": "train.lr",
    "optimizer.params.weight_decay": "train.weight_decay",
    "scheduler": "train.warmup_ratio and train.schedule (the cosine schedule with warmup is "
                 "built from them)",
}

#: Optimizer types whose parameters the generated config writes (AdamW moments, torch_adam).
ADAM_TYPES = ("adam", "adamw")


def _paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path in ``tree``: inner nodes as well as leaves."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, Mapping):
            out.extend(_paths(value, path + "."))
    return out


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a ``train.deepspeed`` dict.

    Args:
        overrides: The recipe's ``train.deepspeed`` value.

    Returns:
        A deep copy of ``overrides``.

    Raises:
        ValueError: A key is not a string, or a path the recipe owns is set (the message names
            the DeepSpeed path and the recipe key to use instead). Pydantic turns this into a
            :class:`~lire_ray.errors.ConfigError` naming ``train.deepspeed``.
    """
    bad = [k for k in _all_keys(overrides) if not isinstance(k, str)]
    if bad:
        raise ValueError(f"keys must be strings, got {bad}")
    owned = [p for p in _paths(overrides) if p in RECIPE_OWNED]
    if owned:
        lines = [f"'{p}' is set by the recipe: use {RECIPE_OWNED[p]}" for p in owned]
        raise ValueError("; ".join(lines))
    return copy.deepcopy(dict(overrides))


def _all_keys(tree: Mapping) -> list:
    out = []
    for key, value in tree.items():
        out.append(key)
        if isinstance(value, Mapping):
            out.extend(_all_keys(value))
    return out


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: dicts merge key by key, anything else is replaced.

    Args:
        base: The generated config (not modified).
        extra: The additions; their values win.

    Returns:
        A new dict.
    """
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(generated: Mapping[str, Any], overrides: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """Merge a recipe's ``train.deepspeed`` over the generated config.

    Choosing another optimizer type (``optimizer.type: Lion``, ``Adagrad``, ...) keeps only the
    recipe's ``lr`` and ``weight_decay`` from the generated AdamW parameters, since the AdamW
    moments and switches (``betas``, ``eps``, ``torch_adam``, ``adam_w_mode``) would be
    unknown arguments to another optimizer.

    Args:
        generated: The config :func:`~lire_ray.training.engine.build_ds_config` wrote.
        overrides: ``train.deepspeed`` (already validated by :func:`check_overrides`).

    Returns:
        The merged config.
    """
    base = copy.deepcopy(dict(generated))
    new_type = (overrides.get("optimizer") or {}).get("type")
    if isinstance(new_type, str) and new_type.lower() not in ADAM_TYPES and "optimizer" in base:
        params = base["optimizer"].get("params", {})
        base["optimizer"] = {"type": new_type, "params": {
            k: params[k] for k in ("lr", "weight_decay") if k in params}}
    return deep_merge(base, overrides)
