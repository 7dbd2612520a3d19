"""Training losses: LIRE and the baselines it is compared with, behind one registry.

Shape notation: B prompts, K candidates per prompt (padded to the largest K in the
micro-batch; a boolean ``mask`` marks real candidates).

Every loss is a pure function over tensors with the same call convention::

    fn(policy_logps, rewards, *, mask=None, ref_logps=None, lengths=None, human_mask=None,
       **params) -> (per_prompt_loss [B], metrics: dict[str, 0-dim detached tensor])

where ``policy_logps`` / ``ref_logps`` are [B, K] summed response log-probs, ``rewards`` [B, K]
training reward-model scores, ``lengths`` [B, K] response token counts and ``human_mask``
[B, K] marks each prompt's human reference answer (the trainer marks
``PoolRow.human_reference_index``: the human-preferred answer where the labels name one, as HH's
chosen reply; the SFT target ``"human"`` of paper sec. 4.6). Losses never reduce over B: the
trainer averages and accumulates. Recipes select a loss by registry name and parameters via :func:`build_loss`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lire_ray.errors import ConfigError
from lire_ray.losses.bradley_terry import bradley_terry_loss
from lire_ray.losses.lire import check_lire_params, lire_loss, transform_rewards
from lire_ray.losses.listwise import (
    check_pl_params,
    check_pro_params,
    check_rrhf_params,
    check_sft_params,
    pl_loss,
    pro_loss,
    rrhf_loss,
    sft_loss,
)
from lire_ray.losses.pairwise import (
    check_dpo_params,
    check_ipo_params,
    check_slic_params,
    dpo_loss,
    ipo_loss,
    slic_loss,
)

__all__ = [
    "LOSSES", "BuiltLoss", "LossSpec", "bradley_terry_loss", "build_loss", "list_losses",
    "lire_loss", "sft_loss", "dpo_loss", "ipo_loss", "slic_loss", "rrhf_loss", "pro_loss",
    "pl_loss", "transform_rewards",
]

# Keyword arguments of the call convention; everything else in a signature is a parameter.
INPUT_KEYWORDS = ("mask", "ref_logps", "lengths", "human_mask")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        name: Registry name used in recipes.
        fn: The loss function (uniform call convention).
        needs_reference: Always needs ``ref_logps`` (a reference model must run).
        needs_lengths: Needs ``lengths`` with its default parameters.
        defaults: Parameter defaults, read from ``fn``'s signature.
        check: Validates a full parameter dict (raises ConfigError).
        lengths_needed: Whether given parameters need ``lengths`` (defaults to
            ``needs_lengths``).
    """

    name: str
    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    needs_reference: bool
    needs_lengths: bool
    defaults: dict[str, Any]
    check: Callable[..., None] = field(repr=False, default=lambda **_: None)
    lengths_needed: Callable[[dict[str, Any]], bool] | None = field(repr=False, default=None)


@dataclass(frozen=True)
class BuiltLoss:
    """A loss bound to validated parameters; call it with the tensors only.

    Attributes:
        spec: The registry entry.
        params: Full parameter dict (defaults merged with the recipe's values).
        needs_reference: Whether ``ref_logps`` must be supplied.
        needs_lengths: Whether ``lengths`` must be supplied with these parameters.
    """

    spec: LossSpec
    params: dict[str, Any]
    needs_reference: bool
    needs_lengths: bool

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, policy_logps: torch.Tensor, rewards: torch.Tensor, *,
                 mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Computes the per-prompt loss.

        Args:
            policy_logps: [B, K] float summed policy log-probs.
            rewards: [B, K] float rewards.
            mask: [B, K] bool real-candidate mask, or None.
            ref_logps: [B, K] float summed reference log-probs, or None.
            lengths: [B, K] int response token counts, or None.
            human_mask: [B, K] bool, the human reference answer of each prompt, or None.

        Returns:
            ``(loss [B], metrics)`` as returned by the loss function, plus ``candidates``: the
            mean number of real candidates per prompt (what the loss was given; a study checks
            with it that, e.g., HH pairs train with K = 2).
        """
        loss, metrics = self.spec.fn(policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                                     lengths=lengths, human_mask=human_mask, **self.params)
        real = mask if mask is not None else torch.ones_like(policy_logps, dtype=torch.bool)
        metrics["candidates"] = real.sum(dim=1).to(policy_logps.dtype).mean().detach()
        return loss, metrics


def _spec(name, fn, check, *, needs_reference, needs_lengths, lengths_needed=None) -> LossSpec:
    sig = inspect.signature(fn)
    defaults = {
        p.name: p.default for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in INPUT_KEYWORDS
    }
    return LossSpec(name, fn, needs_reference, needs_lengths, defaults, check, lengths_needed)


LOSSES: dict[str, LossSpec] = {
    s.name: s for s in (
        _spec("lire", lire_loss, check_lire_params, needs_reference=False, needs_lengths=False,
              lengths_needed=lambda p: p["sft_weight"] > 0 or p["score"] == "mean"),
        _spec("sft", sft_loss, check_sft_params, needs_reference=False, needs_lengths=True),
        _spec("dpo", dpo_loss, check_dpo_params, needs_reference=True, needs_lengths=False),
        _spec("ipo", ipo_loss, check_ipo_params, needs_reference=True, needs_lengths=True,
              lengths_needed=lambda p: p["length_normalize"]),
        _spec("slic", slic_loss, check_slic_params, needs_reference=False, needs_lengths=True,
              lengths_needed=lambda p: p["reg_weight"] > 0),
        _spec("rrhf", rrhf_loss, check_rrhf_params, needs_reference=False, needs_lengths=True),
        _spec("pro", pro_loss, check_pro_params, needs_reference=False, needs_lengths=True),
        _spec("pl", pl_loss, check_pl_params, needs_reference=True, needs_lengths=False),
    )
}


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return sorted(LOSSES)


def build_loss(name: str, params: dict[str, Any] | None = None) -> BuiltLoss:
    """Looks up a loss by name and binds validated parameters.

    Args:
        name: Registry name ("lire", "sft", "dpo", "ipo", "slic", "rrhf", "pro", "pl").
        params: Parameter overrides (e.g. ``{"temperature": 2.0}``); missing ones take the
            function's defaults.

    Returns:
        A :class:`BuiltLoss` callable with the uniform tensor convention.

    Raises:
        ConfigError: Unknown loss name, unknown parameter (the message lists the allowed
            ones), or an invalid parameter value.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; available: {', '.join(list_losses())}")
    spec = LOSSES[name]
    params = dict(params or {})
    if not all(isinstance(k, str) for k in params):
        raise ConfigError(f"loss '{name}': parameter names must be strings, got {list(params)}")
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(sorted(spec.defaults)) or "(none)"
        raise ConfigError(f"loss '{name}': unknown parameter(s) {', '.join(unknown)}; "
                          f"allowed: {allowed}")
    full = {**spec.defaults, **params}
    spec.check(**full)
    lengths = spec.lengths_needed(full) if spec.lengths_needed else spec.needs_lengths
    return BuiltLoss(spec, full, spec.needs_reference, bool(lengths))
