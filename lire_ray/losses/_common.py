"""Input checks and masked tensor utilities shared by every loss.

Shape notation (this module and the whole ``lire_ray.losses`` package): B prompts, K candidates
per prompt (padded to the largest K in the micro-batch; a boolean ``mask`` marks real
candidates, padding never counts as a candidate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lire_ray.errors import ConfigError, DataError

PAIR_SCHEMES = ("best_vs_rest", "best_vs_worst", "all_ranked")
SFT_TARGETS = ("best", "human")


# ---------------------------------------------------------------------------------------------
# Parameter validation (raised at build time by the registry and again at call time).
# ---------------------------------------------------------------------------------------------

def require_number(loss: str, name: str, value, *, positive: bool = False,
                   non_negative: bool = False, below: float | None = None) -> float:
    """Checks that a loss parameter is a finite real number within bounds.

    Args:
        loss: Registry name of the loss, for the message.
        name: Parameter name.
        value: The value given.
        positive: Require ``value > 0``.
        non_negative: Require ``value >= 0``.
        below: Require ``value < below``.

    Returns:
        The value as a float.

    Raises:
        ConfigError: The value is not a finite number or violates a bound.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be finite, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be >= 0, got {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be < {below}, got {value!r}")
    return value


def require_choice(loss: str, name: str, value, choices: tuple[str, ...]) -> str:
    """Checks that a loss parameter is one of a fixed set of strings.

    Raises:
        ConfigError: The value is not one of ``choices``.
    """
    if value not in choices:
        raise ConfigError(
            f"loss '{loss}': parameter '{name}' must be one of {list(choices)}, got {value!r}")
    return value


def require_bool(loss: str, name: str, value) -> bool:
    """Checks that a loss parameter is a bool.

    Raises:
        ConfigError: The value is not a bool.
    """
    if not isinstance(value, bool):
        raise ConfigError(f"loss '{loss}': parameter '{name}' must be true or false, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Tensor inputs.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """Checked and sanitised loss inputs; padded slots hold finite neutral values.

    Attributes:
        logps: [B, K] policy summed log-probs, 0 at padded slots (gradient flows only through
            real candidates).
        rewards: [B, K] detached rewards, 0 at padded slots.
        mask: [B, K] bool, True for real candidates.
        ref_logps: [B, K] detached reference summed log-probs (0 at padded slots), or None.
        lengths: [B, K] float response token counts clamped to >= 1 (1 at padded slots), or None.
        human_mask: [B, K] bool, True for the real candidate(s) an SFT target ``"human"`` may
            pick (the human reference answer), or None.
        n_valid: [B] number of real candidates per prompt (long).
    """

    logps: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    ref_logps: torch.Tensor | None
    lengths: torch.Tensor | None
    human_mask: torch.Tensor | None
    n_valid: torch.Tensor


def _check_like(loss: str, name: str, t, shape: torch.Size) -> None:
    if not isinstance(t, torch.Tensor):
        raise DataError(f"loss '{loss}' expects a tensor, got {type(t).__name__}", field=name)
    if t.shape != shape:
        raise DataError(f"loss '{loss}': shape {tuple(t.shape)} does not match policy_logps "
                        f"{tuple(shape)}", field=name)


def prepare_inputs(loss: str, policy_logps, rewards, *, mask=None, ref_logps=None,
                   lengths=None, human_mask=None, need_ref: bool = False,
                   need_lengths: bool = False) -> Inputs:
    """Validates the uniform loss inputs and replaces padded slots by neutral finite values.

    Args:
        loss: Registry name of the calling loss, for messages.
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float reward-model scores (higher is better).
        mask: [B, K] bool, True for real candidates; None means all real.
        ref_logps: [B, K] float summed log-probs under the reference policy, or None.
        lengths: [B, K] int response token counts, or None.
        human_mask: [B, K] bool, True for each prompt's human reference answer (see
            :func:`sft_target_index`), or None.
        need_ref: The loss cannot run without ``ref_logps``.
        need_lengths: The loss (with its current parameters) cannot run without ``lengths``.

    Returns:
        The sanitised :class:`Inputs`.

    Raises:
        ConfigError: A required input (reference log-probs, lengths) was not supplied.
        DataError: A tensor has the wrong shape or dtype, or a real candidate's reward is not
            finite.
    """
    if not isinstance(policy_logps, torch.Tensor) or policy_logps.dim() != 2:
        raise DataError(f"loss '{loss}' expects a 2-D [B, K] tensor", field="policy_logps")
    if not policy_logps.is_floating_point():
        raise DataError(f"loss '{loss}' expects a floating tensor, got {policy_logps.dtype}",
                        field="policy_logps")
    shape = policy_logps.shape
    _check_like(loss, "rewards", rewards, shape)
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=policy_logps.device)
    _check_like(loss, "mask", mask, shape)
    if mask.dtype != torch.bool:
        raise DataError(f"loss '{loss}' expects a bool mask, got {mask.dtype}", field="mask")
    if need_ref and ref_logps is None:
        raise ConfigError(f"loss '{loss}' needs reference log-probs (ref_logps); enable the "
                          "reference model for this recipe")
    if need_lengths and lengths is None:
        raise ConfigError(f"loss '{loss}' needs response lengths (lengths) with these parameters")
    dtype = policy_logps.dtype
    zero = torch.zeros((), dtype=dtype, device=policy_logps.device)
    logps = torch.where(mask, policy_logps, zero)
    rw = torch.where(mask, rewards.detach().to(dtype), zero)
    if not bool(torch.isfinite(rw).all()):
        bad = (~torch.isfinite(rw)).any(dim=1).nonzero().flatten().tolist()
        raise DataError(f"loss '{loss}': non-finite reward for a real candidate in prompt "
                        f"rows {bad}", field="rewards")
    ref = None
    if ref_logps is not None:
        _check_like(loss, "ref_logps", ref_logps, shape)
        ref = torch.where(mask, ref_logps.detach().to(dtype), zero)
    lens = None
    if lengths is not None:
        _check_like(loss, "lengths", lengths, shape)
        lens = torch.where(mask, lengths.to(dtype).clamp(min=1.0), torch.ones_like(zero))
    human = None
    if human_mask is not None:
        _check_like(loss, "human_mask", human_mask, shape)
        if human_mask.dtype != torch.bool:
            raise DataError(f"loss '{loss}' expects a bool human_mask, got {human_mask.dtype}",
                            field="human_mask")
        human = human_mask & mask
    return Inputs(logps, rw, mask, ref, lens, human, mask.sum(dim=1))


# ---------------------------------------------------------------------------------------------
# Masked tensor utilities.
# ---------------------------------------------------------------------------------------------

def masked_log_softmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the real candidates of each row.

    Args:
        x: [B, K] logits (finite).
        mask: [B, K] bool.

    Returns:
        [B, K] log-probabilities; -inf at padded slots. Rows without real candidates get a
        finite uniform distribution so nothing downstream turns into NaN (callers multiply it by
        the mask).
    """
    any_valid = mask.any(dim=1, keepdim=True)
    keep = mask | ~any_valid
    neg_inf = torch.full((), float("-inf"), dtype=x.dtype, device=x.device)
    return torch.log_softmax(torch.where(keep, x, neg_inf), dim=1)


def masked_argmax(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the largest real entry per row (first one on ties; 0 for empty rows).

    Args:
        x: [B, K] values.
        mask: [B, K] bool.

    Returns:
        [B] long indices.
    """
    neg_inf = torch.full((), float("-inf"), dtype=x.dtype, device=x.device)
    return torch.where(mask, x, neg_inf).argmax(dim=1)


def masked_argmin(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Index of the smallest real entry per row (first one on ties; 0 for empty rows).

    Args:
        x: [B, K] values.
        mask: [B, K] bool.

    Returns:
        [B] long indices.
    """
    pos_inf = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    return torch.where(mask, x, pos_inf).argmin(dim=1)


def metric_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Detached mean of ``values`` over the prompts marked ``valid`` (0 when none is).

    Args:
        values: [B] per-prompt values.
        valid: [B] bool.

    Returns:
        A detached 0-dim tensor.
    """
    values = values.detach()
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp(min=1).to(values.dtype)


def sft_target_index(loss: str, inp: Inputs, target: str) -> torch.Tensor:
    """Chooses the candidate a supervised (cross-entropy) term trains on, per prompt.

    ``"best"`` is the real candidate with the highest reward (the first on ties). ``"human"`` is
    the candidate ``human_mask`` marks: the trainer marks the human reference answer
    (``PoolRow.human_reference_index``: the human-preferred one where the labels name it, e.g.
    HH's chosen reply, else the first human-written one), so the target follows the human
    label, not the reward model, as in paper sec. 4.6 ("CE loss on the high-quality
    human-annotated data"). Where a caller marks several, the highest-reward marked one.

    Args:
        loss: Registry name of the calling loss, for messages.
        inp: Checked inputs.
        target: ``"best"`` or ``"human"``.

    Returns:
        [B] long candidate indices (0 for prompts without real candidates).

    Raises:
        ConfigError: ``target`` is ``"human"`` but ``human_mask`` was not supplied.
        DataError: ``target`` is ``"human"`` and a prompt with candidates has none marked.
    """
    if target == "best":
        return masked_argmax(inp.rewards, inp.mask)
    if inp.human_mask is None:
        raise ConfigError(f"loss '{loss}': sft target 'human' needs human_mask")
    has_human = inp.human_mask.any(dim=1)
    missing = (~has_human) & (inp.n_valid > 0)
    if bool(missing.any()):
        rows = missing.nonzero().flatten().tolist()
        raise DataError(f"loss '{loss}': sft target 'human' but prompt rows {rows} have no "
                        "human-written candidate", field="human_mask")
    return masked_argmax(inp.rewards, inp.human_mask)


def token_mean_nll(inp: Inputs, index: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood ``-s_i / len_i`` of one candidate per prompt.

    Args:
        inp: Checked inputs with lengths.
        index: [B] long candidate indices.

    Returns:
        [B] NLL per prompt; 0 for prompts without real candidates.
    """
    assert inp.lengths is not None, "callers prepare inputs with need_lengths"
    idx = index.unsqueeze(1)
    nll = -inp.logps.gather(1, idx).squeeze(1) / inp.lengths.gather(1, idx).squeeze(1)
    return torch.where(inp.n_valid > 0, nll, torch.zeros_like(nll))


def pair_weights(rewards: torch.Tensor, mask: torch.Tensor, scheme: str) -> torch.Tensor:
    """Builds the (chosen, rejected) pairs a pairwise loss uses on a K-candidate list.

    ``W[b, i, j] = 1`` when candidate ``i`` is trained as chosen against rejected ``j``. Pairs
    always have ``R_i > R_j`` strictly (equal rewards carry no preference and are skipped).

    - ``"best_vs_rest"``: the best candidate against every other real candidate.
    - ``"best_vs_worst"``: the best against the worst (one pair per prompt).
    - ``"all_ranked"``: every ordered pair with ``R_i > R_j`` (up to K(K-1)/2 pairs).

    "Best"/"worst" are the first highest/lowest-reward real candidates.

    Args:
        rewards: [B, K] rewards (finite, 0 at padded slots).
        mask: [B, K] bool.
        scheme: One of ``PAIR_SCHEMES``.

    Returns:
        [B, K, K] float 0/1 weights in the rewards' dtype.
    """
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    better = rewards.unsqueeze(2) > rewards.unsqueeze(1)
    ranked = both & better
    k = rewards.shape[1]
    if scheme == "all_ranked":
        sel = ranked
    else:
        best = torch.nn.functional.one_hot(masked_argmax(rewards, mask), k).bool()
        if scheme == "best_vs_rest":
            rejected = mask
        else:
            rejected = torch.nn.functional.one_hot(masked_argmin(rewards, mask), k).bool()
        sel = ranked & best.unsqueeze(2) & rejected.unsqueeze(1)
    return sel.to(rewards.dtype)


def reward_order(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidate order by decreasing reward, real candidates first (stable on ties).

    Args:
        rewards: [B, K] rewards.
        mask: [B, K] bool.

    Returns:
        [B, K] long permutation: position p of row b holds the index of the candidate ranked
        p-th (0 = best). Padded slots come last.
    """
    neg_inf = torch.full((), float("-inf"), dtype=rewards.dtype, device=rewards.device)
    key = torch.where(mask, rewards, neg_inf)
    return torch.sort(key, dim=1, descending=True, stable=True).indices
