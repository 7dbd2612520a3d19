"""Pairwise baselines on K-candidate lists: DPO, IPO and SLiC-HF.

Shape notation: B prompts, K candidates per prompt (padded; ``mask`` marks real ones).

Each prompt's list is turned into (chosen w, rejected l) pairs with ``R_w > R_l`` by the
``pairs`` scheme (see :func:`lire_ray.losses._common.pair_weights`); pairs with equal rewards
are skipped and a prompt's loss is the mean over its pairs (0, with zero gradient, when it has
none). The default ``"best_vs_rest"`` trains the top candidate against every other one: it
equals the plain pairwise loss at K = 2, uses every sampled candidate, keeps "chosen" anchored
on the response the reward model is most confident about (unlike ``"all_ranked"``, whose
mid-list pairs carry the reward model's noisiest orderings), and costs K-1 pairs, not K(K-1)/2.
The per-pair mean keeps the loss scale independent of K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lire_ray.losses._common import (
    PAIR_SCHEMES,
    SFT_TARGETS,
    metric_mean,
    pair_weights,
    prepare_inputs,
    require_bool,
    require_choice,
    require_number,
    sft_target_index,
    token_mean_nll,
)


def _pair_deltas(z: torch.Tensor) -> torch.Tensor:
    """[B, K] scores -> [B, K, K] differences ``z_i - z_j`` (i chosen, j rejected)."""
    return z.unsqueeze(2) - z.unsqueeze(1)


def _pair_mean(values: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of per-pair ``values`` [B, K, K] over the pairs selected by ``w`` [B, K, K].

    Returns:
        ``(mean [B], has_pairs [B] bool)``; the mean is 0 for prompts without pairs.
    """
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    count = w.sum(dim=(1, 2))
    total = torch.where(w > 0, values, zero).sum(dim=(1, 2))
    return total / count.clamp(min=1), count > 0


def _pair_metrics(delta: torch.Tensor, w: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        acc, has = _pair_mean((delta > 0).to(delta.dtype), w)
        margin, _ = _pair_mean(delta * scale, w)
        return {"accuracy": metric_mean(acc, has), "margin": metric_mean(margin, has)}


def check_dpo_params(*, beta=0.1, label_smoothing=0.0, pairs="best_vs_rest") -> None:
    """Validates :func:`dpo_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("dpo", "beta", beta, positive=True)
    require_number("dpo", "label_smoothing", label_smoothing, non_negative=True, below=0.5)
    require_choice("dpo", "pairs", pairs, PAIR_SCHEMES)


def dpo_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
             mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
             lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
             beta: float = 0.1, label_smoothing: float = 0.0, pairs: str = "best_vs_rest",
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO sigmoid loss (Rafailov et al. 2023, eq. 7), with conservative label smoothing.

    Per pair: ``h = (s_w - ref_w) - (s_l - ref_l)`` and
    ``loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``; eps = 0 is eq. 7 of
    the DPO paper, eps > 0 is conservative DPO (cDPO: the preference label is assumed flipped
    with probability eps), the same form as TRL's label-smoothed sigmoid loss
    (``CPOTrainer.cpo_loss`` applied to log-ratios).

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards; only their order within a prompt is used.
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K] float summed log-probs under the reference policy (required).
        lengths: [B, K] response token counts; unused.
        human_mask: [B, K] bool; unused.
        beta: KL strength beta (> 0).
        label_smoothing: eps in [0, 0.5).
        pairs: Pair construction, one of ``"best_vs_rest"`` (default), ``"best_vs_worst"``,
            ``"all_ranked"``.

    Returns:
        ``(loss [B], metrics)``; metrics are averaged over prompts with at least one pair:
        ``accuracy`` (fraction of pairs with h > 0) and ``margin`` (mean beta h).

    Raises:
        ConfigError: Invalid parameters or ``ref_logps`` missing.
        DataError: Mis-shaped inputs or non-finite rewards.
    """
    check_dpo_params(beta=beta, label_smoothing=label_smoothing, pairs=pairs)
    inp = prepare_inputs("dpo", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_ref=True)
    assert inp.ref_logps is not None  # need_ref=True
    w = pair_weights(inp.rewards, inp.mask, pairs)
    h = _pair_deltas(inp.logps - inp.ref_logps)
    eps = float(label_smoothing)
    per_pair = -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    loss, _ = _pair_mean(per_pair, w)
    return loss, _pair_metrics(h, w, float(beta))


def check_ipo_params(*, beta=0.1, pairs="best_vs_rest", length_normalize=True) -> None:
    """Validates :func:`ipo_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("ipo", "beta", beta, positive=True)
    require_choice("ipo", "pairs", pairs, PAIR_SCHEMES)
    require_bool("ipo", "length_normalize", length_normalize)


def ipo_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
             mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
             lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
             beta: float = 0.1, pairs: str = "best_vs_rest", length_normalize: bool = True,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO loss (Azar et al. 2023, "A General Theoretical Paradigm...", eq. 17).

    Per pair: ``loss = (h - 1 / (2 beta))^2`` with beta the regulariser (tau in the paper) and
    h the chosen-minus-rejected log-ratio difference. With ``length_normalize=True`` (default)
    each log-ratio is divided by its response's token count,
    ``h = (s_w - ref_w) / len_w - (s_l - ref_l) / len_l``, as TRL's ``ipo`` loss does: the
    paper's equation uses sequence log-probs, but on summed log-probs the squared loss grows
    with response length; TRL notes the IPO authors confirmed the per-token form matches their
    reported results. ``length_normalize=False`` is eq. 17 on summed log-probs.

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards; only their order within a prompt is used.
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K] float summed log-probs under the reference policy (required).
        lengths: [B, K] int response token counts; required when ``length_normalize``.
        human_mask: [B, K] bool; unused.
        beta: Regulariser tau (> 0); the target margin is 1 / (2 beta).
        pairs: Pair construction (see module docstring).
        length_normalize: Use per-token log-ratios (TRL's form).

    Returns:
        ``(loss [B], metrics)``: ``accuracy`` (pairs with h > 0) and ``margin`` (mean h), over
        prompts with at least one pair.

    Raises:
        ConfigError: Invalid parameters, or ``ref_logps`` / ``lengths`` missing.
        DataError: Mis-shaped inputs or non-finite rewards.
    """
    check_ipo_params(beta=beta, pairs=pairs, length_normalize=length_normalize)
    inp = prepare_inputs("ipo", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_ref=True,
                         need_lengths=length_normalize)
    assert inp.ref_logps is not None  # need_ref=True
    z = inp.logps - inp.ref_logps
    if length_normalize:
        assert inp.lengths is not None  # need_lengths=length_normalize
        z = z / inp.lengths
    w = pair_weights(inp.rewards, inp.mask, pairs)
    h = _pair_deltas(z)
    loss, _ = _pair_mean((h - 1.0 / (2.0 * float(beta))).square(), w)
    return loss, _pair_metrics(h, w, 1.0)


def check_slic_params(*, delta=1.0, reg_weight=0.5, pairs="best_vs_rest",
                      sft_target="best") -> None:
    """Validates :func:`slic_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("slic", "delta", delta, positive=True)
    require_number("slic", "reg_weight", reg_weight, non_negative=True)
    require_choice("slic", "pairs", pairs, PAIR_SCHEMES)
    require_choice("slic", "sft_target", sft_target, SFT_TARGETS)


def slic_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
              mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
              delta: float = 1.0, reg_weight: float = 0.5, pairs: str = "best_vs_rest",
              sft_target: str = "best") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SLiC-HF loss (Zhao et al. 2023, "SLiC-HF": rank-calibration hinge + cross-entropy term).

    ``loss = mean_pairs max(0, delta - (s_w - s_l)) + reg_weight * L_SFT``: the rank-calibration
    hinge on summed policy log-probs (no reference model), plus the token-mean NLL
    ``-s_t / len_t`` of the regularisation target t (the highest-reward candidate, or the
    highest-reward human-written one). SLiC-HF regularises towards its SFT targets with a summed
    NLL; the token-mean form keeps ``reg_weight`` comparable with the other losses here. The hinge
    equals ``delta`` times TRL's ``hinge`` loss with ``beta = 1/delta`` on zero reference
    log-probs.

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards; their order defines the pairs and the "best" target.
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K] reference log-probs; unused.
        lengths: [B, K] int response token counts; required when ``reg_weight > 0``.
        human_mask: [B, K] bool, human-written candidates; required for
            ``sft_target="human"`` when ``reg_weight > 0``.
        delta: Hinge margin (> 0).
        reg_weight: lambda, weight of the cross-entropy regulariser (>= 0); 0.5 is this
            library's default, tune it per recipe.
        pairs: Pair construction (see module docstring).
        sft_target: ``"best"`` or ``"human"``.

    Returns:
        ``(loss [B], metrics)``: ``accuracy`` (pairs with s_w > s_l) and ``margin``
        (mean s_w - s_l) over prompts with pairs; ``sft`` over prompts with candidates when
        ``reg_weight > 0``.

    Raises:
        ConfigError: Invalid parameters, or ``lengths`` / ``human_mask`` missing.
        DataError: Mis-shaped inputs, non-finite rewards, or a prompt without a human candidate
            under ``sft_target="human"``.
    """
    check_slic_params(delta=delta, reg_weight=reg_weight, pairs=pairs, sft_target=sft_target)
    inp = prepare_inputs("slic", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_lengths=reg_weight > 0)
    w = pair_weights(inp.rewards, inp.mask, pairs)
    h = _pair_deltas(inp.logps)
    loss, _ = _pair_mean(torch.relu(float(delta) - h), w)
    metrics = _pair_metrics(h, w, 1.0)
    if reg_weight > 0:
        sft = token_mean_nll(inp, sft_target_index("slic", inp, sft_target))
        loss = loss + float(reg_weight) * sft
        metrics["sft"] = metric_mean(sft, inp.n_valid > 0)
    return loss, metrics
