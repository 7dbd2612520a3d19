"""The LIRE listwise reward-enhancement loss (paper sec. 3.1, eq. 5-7; sec. 4.6 SFT term).

Shape notation: B prompts, K candidates per prompt (padded; ``mask`` marks real ones).

For one prompt with real candidates j, policy scores s_j and rewards R_j::

    Q_j   = softmax_j(s_j / T)                       (eq. 5)
    R~    = transform(R)                             (sec. 3.1 "in practice": softmax)
    loss  = -sum_j Q_j R~_j  +  alpha * L_SFT        (eq. 6; sec. 4.6)

where s_j is the candidate's summed token log-prob (``score="sum"``: eq. 4-5 and the authors'
code) or that sum divided by its token count (``score="mean"``: length-normalised, as RRHF
scores candidates). The gradient w.r.t. s_j is ``-w_j`` with ``w_j = Q_j (R~_j - E_Q[R~]) / T``
(eq. 7), so a prompt with one candidate, or with all rewards equal, gives exactly zero gradient.

Gradient health: summed log-probs of long responses differ by tens of nats, so at T = 2 Q is
numerically one-hot for most prompts and every w_j is ~0 (the policy does not move). The loss
reports how often that happens (``onehot_share``) and how large the weights are
(``grad_weight``); see :func:`lire_loss`.
"""

from __future__ import annotations

import torch

from lire_ray.losses._common import (
    SFT_TARGETS,
    masked_argmax,
    masked_log_softmax,
    metric_mean,
    prepare_inputs,
    require_choice,
    require_number,
    sft_target_index,
    token_mean_nll,
)

REWARD_TRANSFORMS = ("softmax", "raw", "zscore", "rank")
#: What s_j in Q = softmax(s / T) is: the summed log-prob (paper) or the per-token mean.
SCORES = ("sum", "mean")
#: A prompt's Q counts as numerically one-hot when its largest entry exceeds this.
ONEHOT_Q = 0.99


def check_lire_params(*, temperature=2.0, reward_transform="softmax", sft_weight=0.0,
                      sft_target="best", score="sum") -> None:
    """Validates :func:`lire_loss` parameters.

    Raises:
        ConfigError: A parameter has the wrong type or an out-of-range value.
    """
    require_number("lire", "temperature", temperature, positive=True)
    require_choice("lire", "reward_transform", reward_transform, REWARD_TRANSFORMS)
    require_number("lire", "sft_weight", sft_weight, non_negative=True)
    require_choice("lire", "sft_target", sft_target, SFT_TARGETS)
    require_choice("lire", "score", score, SCORES)


def transform_rewards(rewards: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Maps raw rewards to the per-prompt targets R~ of eq. 6.

    Every transform works per prompt over its real candidates only and returns 0 at padded
    slots. All of them are monotone, so they keep the reward ranking.

    - ``"softmax"`` (paper practice, sec. 3.1): ``softmax_j(R_j)``; invariant to shifting a
      prompt's rewards, sums to 1 per prompt, so reward scale differences between prompts and
      reward models do not change the step size much.
    - ``"raw"``: ``R_j`` unchanged (the formulation of eq. 6 and the appendix A.4 code).
    - ``"zscore"``: ``(R_j - mean) / std`` with the population std (ddof 0) over the prompt's
      real candidates; invariant to shift and scale. A prompt whose rewards are all equal
      (std 0), or with one candidate, gets all zeros.
    - ``"rank"``: ascending rank of ``R_j`` among the prompt's real candidates, scaled to [0, 1]
      (worst 0, best 1); tied rewards share their average rank; a one-candidate prompt gets 0.
      Ignores reward magnitudes entirely.

    Args:
        rewards: [B, K] rewards (finite, 0 at padded slots).
        mask: [B, K] bool, True for real candidates.
        kind: One of ``REWARD_TRANSFORMS``.

    Returns:
        [B, K] transformed rewards, 0 at padded slots.
    """
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    if kind == "raw":
        return torch.where(mask, rewards, zero)
    if kind == "softmax":
        return torch.where(mask, masked_log_softmax(rewards, mask).exp(), zero)
    n = mask.sum(dim=1, keepdim=True).to(rewards.dtype)
    if kind == "zscore":
        mean = torch.where(mask, rewards, zero).sum(dim=1, keepdim=True) / n.clamp(min=1)
        dev = torch.where(mask, rewards - mean, zero)
        std = (dev.square().sum(dim=1, keepdim=True) / n.clamp(min=1)).sqrt()
        # Decide "all equal" exactly from max == min: a float mean of equal values can differ
        # from them by one ulp, which would turn rounding noise into +-1 z-scores.
        hi = torch.where(mask, rewards, torch.full_like(rewards, float("-inf"))).amax(1, True)
        lo = torch.where(mask, rewards, torch.full_like(rewards, float("inf"))).amin(1, True)
        spread = (n >= 2) & (hi > lo)
        return torch.where(mask & spread, dev / torch.where(spread, std, 1.0 + zero), zero)
    if kind == "rank":
        both = mask.unsqueeze(1) & mask.unsqueeze(2)
        r_i, r_j = rewards.unsqueeze(2), rewards.unsqueeze(1)
        below = (both & (r_j < r_i)).sum(dim=2).to(rewards.dtype)
        ties = (both & (r_j == r_i)).sum(dim=2).to(rewards.dtype)
        rank = below + 0.5 * (ties - 1.0)
        scaled = rank / (n - 1.0).clamp(min=1.0)
        return torch.where(mask & (n >= 2), scaled, zero)
    raise ValueError(f"unknown reward transform {kind!r}")


def lire_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, *,
              mask: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None, human_mask: torch.Tensor | None = None,
              temperature: float = 2.0, reward_transform: str = "softmax",
              sft_weight: float = 0.0, sft_target: str = "best", score: str = "sum",
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LIRE loss per prompt (paper eq. 5-6, with the optional SFT term of sec. 4.6).

    ``loss_b = -sum_j Q_j R~_j + sft_weight * L_SFT`` where ``Q = softmax(s / T)`` over the
    prompt's real candidates (eq. 5), ``R~ = transform(R)`` (see :func:`transform_rewards`) and
    ``L_SFT = -logp_t / len_t`` is the token-mean NLL of the target candidate t: the
    highest-reward one (``sft_target="best"``) or the human reference answer marked by
    ``human_mask`` (``"human"``: the human-preferred answer, paper sec. 4.6). The score s_j is
    the summed log-prob ``logp_j`` (``score="sum"``, the paper) or ``logp_j / max(len_j, 1)``
    (``score="mean"``); a zero-length response thus scores its (zero) summed log-prob.

    Padded candidates get no probability mass and no gradient; a prompt with one real candidate
    (or all rewards equal) has exactly zero listwise gradient, as eq. 7 predicts; a prompt with
    no real candidate has loss 0.

    Args:
        policy_logps: [B, K] float summed token log-probs of each candidate under the policy.
        rewards: [B, K] float training reward-model scores (higher is better); not
            differentiated.
        mask: [B, K] bool, True for real candidates; None means all are real.
        ref_logps: [B, K] reference log-probs; unused (accepted for the uniform convention).
        lengths: [B, K] int response token counts; required when ``sft_weight > 0`` or
            ``score="mean"``.
        human_mask: [B, K] bool, each prompt's human reference answer; required for
            ``sft_target="human"`` with ``sft_weight > 0``.
        temperature: T of eq. 5 (> 0). Larger T flattens Q; the paper's default is 2.
        reward_transform: ``"softmax"`` (paper practice), ``"raw"``, ``"zscore"`` or ``"rank"``.
        sft_weight: alpha of sec. 4.6 (>= 0; the paper's best was 0.02, default 0).
        sft_target: ``"best"`` or ``"human"``.
        score: ``"sum"`` (summed log-probs, eq. 4-5 and the authors' code) or ``"mean"``
            (length-normalised, as RRHF scores candidates).

    Returns:
        ``(loss [B], metrics)``; metrics are detached scalars averaged over prompts with at
        least two real candidates: ``accuracy`` (argmax Q equals argmax R), ``entropy`` (of Q,
        nats), ``q_best`` (Q of the highest-reward candidate), ``onehot_share`` (1 for a prompt
        whose largest Q exceeds :data:`ONEHOT_Q`, else 0) and ``grad_weight`` (per prompt, the
        mean over its real candidates of ``|w_j| = |Q_j (R~_j - E_Q[R~]) / T|``, the eq. 7
        weight of the listwise term on the gradient of s_j); and over prompts with a real
        candidate: ``listwise`` (the -sum Q R~ term) and, when ``sft_weight > 0``, ``sft``.

    Raises:
        ConfigError: Invalid parameters, or lengths/human_mask missing where needed.
        DataError: Mis-shaped inputs, non-finite rewards, or a prompt without a human candidate
            under ``sft_target="human"``.
    """
    check_lire_params(temperature=temperature, reward_transform=reward_transform,
                      sft_weight=sft_weight, sft_target=sft_target, score=score)
    inp = prepare_inputs("lire", policy_logps, rewards, mask=mask, ref_logps=ref_logps,
                         lengths=lengths, human_mask=human_mask,
                         need_lengths=sft_weight > 0 or score == "mean")
    zero = torch.zeros((), dtype=inp.logps.dtype, device=inp.logps.device)
    # prepare_inputs clamps lengths to >= 1 (1 at padded slots), so no division by zero.
    scores = inp.logps / inp.lengths if score == "mean" and inp.lengths is not None \
        else inp.logps
    log_q = masked_log_softmax(scores / float(temperature), inp.mask)
    q = torch.where(inp.mask, log_q.exp(), zero)
    r_t = transform_rewards(inp.rewards, inp.mask, reward_transform)
    best = masked_argmax(inp.rewards, inp.mask)
    # Subtracting a per-prompt constant c leaves value and gradient unchanged (sum_j Q_j = 1)
    # but makes the gradient exactly zero when all R~ tie, instead of rounding noise.
    c = r_t.gather(1, best.unsqueeze(1))
    listwise = -(q * torch.where(inp.mask, r_t - c, zero)).sum(dim=1) - c.squeeze(1)
    has_any = inp.n_valid > 0
    listwise = torch.where(has_any, listwise, zero)
    loss = listwise
    metrics: dict[str, torch.Tensor] = {}
    if sft_weight > 0:
        sft = token_mean_nll(inp, sft_target_index("lire", inp, sft_target))
        loss = loss + float(sft_weight) * sft
        metrics["sft"] = metric_mean(sft, has_any)
    multi = inp.n_valid >= 2
    with torch.no_grad():
        acc = (masked_argmax(scores, inp.mask) == best).to(q.dtype)
        ent = -torch.where(inp.mask, q * log_q, zero).sum(dim=1)
        q_best = q.gather(1, best.unsqueeze(1)).squeeze(1)
        onehot = (q.amax(dim=1) > ONEHOT_Q).to(q.dtype)
        expected = (q * r_t).sum(dim=1, keepdim=True)
        w = torch.where(inp.mask, q * (r_t - expected) / float(temperature), zero)
        weight = w.abs().sum(dim=1) / inp.n_valid.clamp(min=1).to(q.dtype)
    metrics.update(accuracy=metric_mean(acc, multi), entropy=metric_mean(ent, multi),
                   q_best=metric_mean(q_best, multi), onehot_share=metric_mean(onehot, multi),
                   grad_weight=metric_mean(weight, multi),
                   listwise=metric_mean(listwise, has_any))
    return loss, metrics
