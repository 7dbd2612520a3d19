"""Supervised and ranking baselines over whole candidate lists: SFT, RRHF, PRO, PL-DPO.

Shape notation: B prompts, K candidates per prompt (padded; ``mask`` marks real ones).
"""

from __future__ import annotations

import torch

from lire_ray.losses._common import (
    SFT_TARGETS,
    Inputs,
    masked_argmax,
    masked_log_softmax,
    metric_mean,
    pair_weights,
    prepare_inputs,
    require_choice,
    require_number,
    reward_order,
    sft_target_index,
    token_mean_nll,
)


def _top1_accuracy(score: torch.Tensor, inp: Inputs) -> torch.Tensor:
    """Share of prompts (with >= 2 candidates) whose top-scored candidate has the top reward."""
    with torch.no_grad():
        hit = masked_argmax(score, inp.mask) == masked_argmax(inp.rewards, inp.mask)
        return metric_mean(hit.to(score.dtype), inp.n_valid >= 2)


def _ranked_prefix_nll(score: torch.Tensor, inp: Inputs,
                       inv_temp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over ranking positions k of ``-log softmax`` of the k-th candidate among k..n-1.

    Candidates are ranked by decreasing reward (stable on ties). Position k's logits are
    ``score_i * inv_temp[k, i]`` over the real candidates ranked at i >= k (``inv_temp`` = 1 when
    None).

    Args:
        score: [B, K] per-candidate scores.
        inp: Checked inputs.
        inv_temp: [B, K, K] inverse temperatures indexed by ranking positions (k, i), or None.

    Returns:
        ``(nll [B], order [B, K])``: summed NLL per prompt and the ranking permutation.
    """
    order = reward_order(inp.rewards, inp.mask)
    s = score.gather(1, order)
    m = inp.mask.gather(1, order)
    k = s.shape[1]
    pos = torch.arange(k, device=s.device)
    later = pos.unsqueeze(0) >= pos.unsqueeze(1)                     # [K, K]: i >= k
    cand = later.unsqueeze(0) & m.unsqueeze(1) & m.unsqueeze(2)      # [B, K, K]
    logits = s.unsqueeze(1).expand(-1, k, -1)
    if inv_temp is not None:
        logits = logits * inv_temp
    log_p = masked_log_softmax(logits.reshape(-1, k), cand.reshape(-1, k)).reshape(-1, k, k)
    diag = log_p.diagonal(dim1=1, dim2=2)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    return torch.where(m, -diag, zero).sum(dim=1), order


def check_sft_params(*, target="best") -> None:
    """Validates :func:`sft_loss` parameters.

    Raises:
        ConfigError: ``target`` is not "best" or "human".
    """
    require_choice("sft", "target", target, SFT_TARGETS)


def sft_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
             mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
             lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
             target: str = "best") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SFT baseline: maximise the likelihood of the top-1 candidate (LIRE paper, related work).

    ``loss_b = -s_t / len_t``: token-mean NLL of the highest-reward candidate
    (``target="best"``) or of the human reference answer ``human_mask`` marks (``"human"``: the
    human-preferred answer, as the paper's SFT baseline trains on the human-annotated data).

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards (select the target).
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K]; unused.
        lengths: [B, K] int response token counts (required).
        human_mask: [B, K] bool, each prompt's human reference answer; required for
            ``target="human"``.
        target: ``"best"`` or ``"human"``.

    Returns:
        ``(loss [B], {"nll": ...})`` averaged over prompts with candidates.

    Raises:
        ConfigError: Invalid ``target`` or missing lengths/human_mask.
        DataError: Mis-shaped inputs, non-finite rewards, or no human candidate in a prompt.
    """
    check_sft_params(target=target)
    inp = prepare_inputs("sft", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_lengths=True)
    nll = token_mean_nll(inp, sft_target_index("sft", inp, target))
    return nll, {"nll": metric_mean(nll, inp.n_valid > 0)}


def check_rrhf_params(*, rank_weight=1.0, sft_weight=1.0, sft_target="best") -> None:
    """Validates :func:`rrhf_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("rrhf", "rank_weight", rank_weight, non_negative=True)
    require_number("rrhf", "sft_weight", sft_weight, non_negative=True)
    require_choice("rrhf", "sft_target", sft_target, SFT_TARGETS)


def rrhf_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
              mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
              rank_weight: float = 1.0, sft_weight: float = 1.0, sft_target: str = "best",
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RRHF loss (Yuan et al. 2023, "RRHF": ``L = L_rank + L_ft``).

    With length-normalised scores ``p_i = s_i / len_i``:
    ``L_rank = sum_{R_i < R_j} max(0, p_i - p_j)`` over all real ordered pairs (a sum, not a
    mean, as in the paper and its code), ``L_ft = -p_t`` for the target t (highest reward, or
    highest-reward human candidate) and ``loss = rank_weight * L_rank + sft_weight * L_ft``.
    The paper's total loss has both weights 1; the authors' training script scales ``L_rank`` by
    ``rrhf_weight`` (100 by default there), which ``rank_weight`` reproduces.

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards.
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K]; unused.
        lengths: [B, K] int response token counts (required).
        human_mask: [B, K] bool, required for ``sft_target="human"`` when ``sft_weight > 0``.
        rank_weight: Weight of the ranking term (>= 0).
        sft_weight: Weight of the cross-entropy term (>= 0).
        sft_target: ``"best"`` or ``"human"``.

    Returns:
        ``(loss [B], metrics)``: ``accuracy`` (share of ranked pairs with p ordered like R) and
        ``rank`` (L_rank) over prompts with a ranked pair; ``sft`` over prompts with candidates.

    Raises:
        ConfigError: Invalid parameters or missing lengths/human_mask.
        DataError: Mis-shaped inputs, non-finite rewards, or no human candidate in a prompt.
    """
    check_rrhf_params(rank_weight=rank_weight, sft_weight=sft_weight, sft_target=sft_target)
    inp = prepare_inputs("rrhf", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_lengths=True)
    assert inp.lengths is not None  # need_lengths=True
    p = inp.logps / inp.lengths
    w = pair_weights(inp.rewards, inp.mask, "all_ranked")        # w[b, j, i]: R_j > R_i
    gap = p.unsqueeze(1) - p.unsqueeze(2)                          # [b, j, i]: p_i - p_j
    rank = (w * torch.relu(gap)).sum(dim=(1, 2))
    loss = float(rank_weight) * rank
    has_pairs = w.sum(dim=(1, 2)) > 0
    metrics = {"rank": metric_mean(rank, has_pairs)}
    with torch.no_grad():
        ok = (w * (gap < 0).to(w.dtype)).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp(min=1)
        metrics["accuracy"] = metric_mean(ok, has_pairs)
    if sft_weight > 0:
        sft = token_mean_nll(inp, sft_target_index("rrhf", inp, sft_target))
        loss = loss + float(sft_weight) * sft
        metrics["sft"] = metric_mean(sft, inp.n_valid > 0)
    return loss, metrics


def check_pro_params(*, sft_weight=0.05, sft_target="best") -> None:
    """Validates :func:`pro_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("pro", "sft_weight", sft_weight, non_negative=True)
    require_choice("pro", "sft_target", sft_target, SFT_TARGETS)


def pro_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
             mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
             lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
             sft_weight: float = 0.05, sft_target: str = "best",
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PRO loss with dynamic temperature (Song et al. 2023, "Preference Ranking Optimization").

    Rank a prompt's n real candidates by decreasing reward, ``y^1 > ... > y^n`` (stable on
    ties), with length-normalised scores ``p_i = s_i / len_i``. Then::

        L_PRO = sum_{k=1}^{n-1} -log( exp(p_k / T_k^k) / sum_{i>=k} exp(p_i / T_k^i) )
        1 / T_k^i = r_k - r_i  (i > k),    1 / T_k^k = max_{i>k} (r_k - r_i)
        loss  = L_PRO + sft_weight * (n - 1)^2 * (-s_t)

    i.e. T_k^k = min_{i>k} T_k^i. This follows the authors' released code: the temperatures are
    written as inverse temperatures (reward gaps), so tied rewards give a gap of 0 (infinite
    temperature, logit 0) instead of a division by zero, and a prefix whose later rewards all
    tie contributes the constant log(n-k+1) with zero gradient. The SFT term uses the summed
    log-prob of the target t (highest reward, or highest-reward human candidate) scaled by
    (n-1)^2, as that code does; the paper reports beta = 0.05 (n-1)^2, hence the default 0.05.
    Rewards are used as given (scale them in the reward stage if needed).

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards (define the ranking and the temperatures).
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K]; unused.
        lengths: [B, K] int response token counts (required).
        human_mask: [B, K] bool, required for ``sft_target="human"`` when ``sft_weight > 0``.
        sft_weight: Base SFT weight (>= 0), multiplied by (n-1)^2 per prompt.
        sft_target: ``"best"`` or ``"human"``.

    Returns:
        ``(loss [B], metrics)``: ``accuracy`` (top-1 of p equals top-1 of R) and ``rank``
        (L_PRO) over prompts with >= 2 candidates; ``sft`` (summed NLL) over prompts with
        candidates.

    Raises:
        ConfigError: Invalid parameters or missing lengths/human_mask.
        DataError: Mis-shaped inputs, non-finite rewards, or no human candidate in a prompt.
    """
    check_pro_params(sft_weight=sft_weight, sft_target=sft_target)
    inp = prepare_inputs("pro", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_lengths=True)
    assert inp.lengths is not None  # need_lengths=True
    p = inp.logps / inp.lengths
    order = reward_order(inp.rewards, inp.mask)
    r = inp.rewards.gather(1, order)
    m = inp.mask.gather(1, order)
    k = r.shape[1]
    pos = torch.arange(k, device=r.device)
    after = (pos.unsqueeze(0) > pos.unsqueeze(1)).unsqueeze(0) & m.unsqueeze(1)  # [B, k, i]
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    gap = torch.where(after, r.unsqueeze(2) - r.unsqueeze(1), zero)          # r_k - r_i
    top = gap.amax(dim=2)                                                    # 1 / T_k^k
    inv_temp = gap + torch.diag_embed(top)
    rank, _ = _ranked_prefix_nll(p, inp, inv_temp)
    loss = rank
    multi = inp.n_valid >= 2
    metrics = {"rank": metric_mean(rank, multi), "accuracy": _top1_accuracy(p, inp)}
    if sft_weight > 0:
        t = sft_target_index("pro", inp, sft_target).unsqueeze(1)
        scale = (inp.n_valid.to(p.dtype) - 1.0).clamp(min=0.0).square()
        sft = torch.where(inp.n_valid > 0, -inp.logps.gather(1, t).squeeze(1), zero)
        loss = loss + float(sft_weight) * scale * sft
        metrics["sft"] = metric_mean(sft, inp.n_valid > 0)
    return loss, metrics


def check_pl_params(*, beta=0.1) -> None:
    """Validates :func:`pl_loss` parameters.

    Raises:
        ConfigError: ``beta`` is not a positive number.
    """
    require_number("pl", "beta", beta, positive=True)


def pl_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
            mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
            lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
            beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plackett-Luce listwise DPO (Rafailov et al. 2023, "DPO", appendix A.3, PL objective).

    With implicit rewards ``u_i = beta (s_i - ref_i)`` and the ranking tau of the prompt's n
    real candidates by decreasing reward (stable on ties, which the PL model cannot express)::

        loss = -sum_{k=1}^{n} log( exp(u_tau(k)) / sum_{j>=k} exp(u_tau(j)) )

    the negative log-likelihood of tau under the PL model (the last term is log 1 = 0). For
    n = 2 this is the DPO loss.

    Args:
        policy_logps: [B, K] float summed token log-probs under the policy.
        rewards: [B, K] float rewards (define the ranking).
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K] float summed log-probs under the reference policy (required).
        lengths: [B, K]; unused.
        human_mask: [B, K]; unused.
        beta: KL strength beta (> 0).

    Returns:
        ``(loss [B], {"accuracy": ...})``: share of prompts (with >= 2 candidates) whose
        highest implicit reward is the highest-reward candidate.

    Raises:
        ConfigError: Invalid ``beta`` or ``ref_logps`` missing.
        DataError: Mis-shaped inputs or non-finite rewards.
    """
    check_pl_params(beta=beta)
    inp = prepare_inputs("pl", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask, need_ref=True)
    assert inp.ref_logps is not None  # need_ref=True
    u = float(beta) * (inp.logps - inp.ref_logps)
    loss, _ = _ranked_prefix_nll(u, inp)
    return loss, {"accuracy": _top1_accuracy(u, inp)}
