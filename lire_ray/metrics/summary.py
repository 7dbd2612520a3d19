"""Turning raw evaluation samples into the numbers a report shows (pure; no Ray, no model).

Shape notation: P held-out prompts, n samples per prompt (n = 1 for greedy decoding), N the
largest Best-of-n. Scores are keyed by reward-model name; per prompt they hold n floats.

Estimators (stated in every report that uses them):

* mean reward: mean over all P x n samples;
* win rate against the human-written answer: every sample is compared with its prompt's human
  answer under the same reward model, ties count half, averaged over all P x n comparisons;
  the *average win rate* is the mean of the judges' win rates (paper Table 2);
* D_tau = mean over samples y ~ pi_tau of ``log pi(y|x) - log pi_ref(y|x)``, with
  ``log pi`` the policy's own (temperature 1, untruncated) log-probability; at tau = 1 this is
  the Monte-Carlo estimate of the sequence-level KL(pi || pi_ref) (paper sec. 4.5); its
  standard error treats the samples as independent (stratified by prompt, so conservative);
* negative-flip rate: share of prompts whose first-sample reward is strictly lower than the
  base policy's (paper A.8);
* Best-of-n: the first n base-policy samples of each prompt, the one the training reward model
  (RM) scores highest, judged by every judge (RM*) (paper sec. 4.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lire_ray.metrics import stats as ev

Scores = Mapping[str, Sequence[Sequence[float]]]

WIN_RATE_NOTE = ("Win rate: each response is compared with the prompt's human-written answer "
                 "(the preferred one where the data marks it) under the same reward model; "
                 "ties count half.")
KL_NOTE = ("KL(pi || pi_ref): mean over policy samples at temperature 1 (top_p 1) of "
           "log pi(y|x) - log pi_ref(y|x), summed over response tokens; log pi is the "
           "sampler's cumulative log-probability, log pi_ref comes from the reference policy. "
           "Samples whose response text does not re-tokenise to the generated tokens (e.g. cut "
           "at a stop string) are left out, since the two log-probabilities would then be of "
           "different token sequences. Standard error: sample std / sqrt(samples).")
CI_NOTE = ("Cells are mean ± half-width of the two-sided 95% Student-t confidence interval over "
           "seeds (t quantile with seeds - 1 degrees of freedom); a single seed has no interval.")


def first_samples(scores: Scores) -> dict[str, list[float]]:
    """Per reward model, the first sample's score of every prompt ([P])."""
    return {rm: [float(s[0]) for s in per] for rm, per in scores.items()}


def sample_summary(scores: Scores, human: Mapping[str, Sequence[float | None]] | None,
                   judges: Sequence[str]) -> dict:
    """Mean reward and win rate against the human answer, per reward model.

    Args:
        scores: ``{rm: [P][n]}`` rewards of the policy's samples.
        human: ``{rm: [P]}`` rewards of each prompt's human-written answer (None for a prompt
            without one, which then has no win rate), or None.
        judges: Reward models averaged into ``avg_win_rate``.

    Returns:
        ``{"mean": {rm: float}, "win_rate": {rm: float}, "avg_win_rate": float,
        "win_rate_prompts": int}``: win rates over the prompts that have a human answer
        (``win_rate_prompts`` of them); absent (and the average NaN) when none has one.

    Raises:
        ValueError: ``human`` has a different number of prompts than ``scores``.
    """
    out: dict = {"mean": {}, "win_rate": {}, "win_rate_prompts": 0}
    for rm, per in scores.items():
        out["mean"][rm] = ev.mean([float(x) for s in per for x in s])
        if human and rm in human:
            if len(human[rm]) != len(per):
                raise ValueError(f"{rm}: {len(human[rm])} human scores for {len(per)} prompts")
            pairs = [(float(x), float(h)) for h, s in zip(human[rm], per) if h is not None
                     for x in s]
            if pairs:
                out["win_rate"][rm] = ev.win_rate([x for x, _ in pairs], [h for _, h in pairs])
                out["win_rate_prompts"] = sum(h is not None for h in human[rm])
    rates = [out["win_rate"][j] for j in judges if j in out["win_rate"]]
    out["avg_win_rate"] = ev.mean(rates)
    return out


def kl_summary(policy_logps: Sequence[Sequence[float | None]],
               ref_logps: Sequence[Sequence[float]],
               matched: Sequence[Sequence[bool]] | None = None) -> dict:
    """D_tau (the KL estimate at tau = 1) from per-sample log-probs.

    Args:
        policy_logps: [P][n] summed policy log-probs of the samples (None: not reported).
        ref_logps: [P][n] summed reference log-probs of the same samples.
        matched: [P][n] whether both log-probs are of the same token sequence; unmatched
            samples (and those without a policy log-prob) are left out.

    Returns:
        ``{"value", "stderr", "n", "excluded"}``; value and stderr are NaN when no sample is
        usable, stderr also for a single one.
    """
    used, excluded = [], 0
    for i, (pp, rr) in enumerate(zip(policy_logps, ref_logps, strict=True)):
        mm = matched[i] if matched is not None else [True] * len(pp)
        for p, r, m in zip(pp, rr, mm, strict=True):
            if m and p is not None and math.isfinite(p) and math.isfinite(r):
                used.append((float(p), float(r)))
            else:
                excluded += 1
    if not used:
        return {"value": float("nan"), "stderr": float("nan"), "n": 0, "excluded": excluded}
    est = ev.kl_estimate([p for p, _ in used], [r for _, r in used])
    return {"value": est.value, "stderr": est.stderr, "n": est.n, "excluded": excluded}


def flip_rates(after: Scores, before: Scores, judges: Sequence[str]) -> dict[str, float]:
    """Negative-flip rate per judge between two policies' first samples (paper A.8)."""
    a, b = first_samples(after), first_samples(before)
    return {j: ev.negative_flip_rate(a[j], b[j]) for j in judges if j in a and j in b}


def best_of_n_summary(scores: Scores, human: Mapping[str, Sequence[float | None]] | None, *,
                      picker: str, judges: Sequence[str], ns: Sequence[int]) -> list[dict]:
    """Best-of-n of base-policy samples, picked by ``picker`` and judged by every judge.

    Args:
        scores: ``{rm: [P][N]}`` rewards of N base-policy samples per prompt.
        human: ``{rm: [P]}`` human-answer rewards, or None.
        picker: The reward model that picks (RM, the training reward).
        judges: The reward models that judge the pick (RM*).
        ns: The n values, each 1 <= n <= N.

    Returns:
        One ``{"n", "mean": {judge}, "win_rate": {judge}, "avg_win_rate"}`` per n.

    Raises:
        ValueError: An n outside [1, N] or ``picker`` without scores.
    """
    if picker not in scores:
        raise ValueError(f"Best-of-n picker {picker!r} has no scores (have {sorted(scores)})")
    have = min((len(s) for s in scores[picker]), default=0)
    out = []
    for n in ns:
        if not 1 <= n <= have:
            raise ValueError(f"Best-of-n needs 1 <= n <= {have} samples per prompt, got {n}")
        pick = [list(s[:n]) for s in scores[picker]]
        chosen = {j: [[x] for x in ev.best_of_n(pick, [list(s[:n]) for s in scores[j]])]
                  for j in judges}
        out.append({"n": int(n), **sample_summary(chosen, human, judges)})
    return out


def flatten_run(result: Mapping, judges: Sequence[str]) -> dict[str, float]:
    """One method/seed evaluation as flat ``{metric: value}`` (the comparison table's columns).

    Args:
        result: ``{"table": sample_summary(...), "kl": kl_summary(...),
            "negative_flip_rate": {judge: rate}}`` and optionally ``"final_loss"``.
        judges: The judges whose columns are kept.
    """
    table, out = result["table"], {}
    for j in judges:
        out[f"reward/{j}"] = table["mean"].get(j, float("nan"))
        out[f"win_rate/{j}"] = table["win_rate"].get(j, float("nan"))
        out[f"negative_flip/{j}"] = result.get("negative_flip_rate", {}).get(j, float("nan"))
    out["avg_win_rate"] = table["avg_win_rate"]
    out["kl"] = result["kl"]["value"]
    if "final_loss" in result:
        out["final_loss"] = result["final_loss"]
    return out


def aggregate_seeds(runs: Sequence[Mapping[str, float]],
                    confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Mean and t-based confidence interval of every metric over seeds.

    Args:
        runs: One flat ``{metric: value}`` per seed (see :func:`flatten_run`).
        confidence: Two-sided confidence level.

    Returns:
        ``{metric: {"mean", "half_width", "low", "high", "n"}}``; non-finite values are left
        out of a metric (``n`` counts the rest).
    """
    keys = sorted({k for r in runs for k in r})
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in runs if k in r and math.isfinite(float(r[k]))]
        if not vals:
            out[k] = {"mean": float("nan"), "half_width": float("nan"), "low": float("nan"),
                      "high": float("nan"), "n": 0}
            continue
        iv = ev.mean_ci(vals, confidence)
        out[k] = {"mean": iv.mean, "half_width": iv.half_width, "low": iv.low, "high": iv.high,
                  "n": iv.n}
    return out


def format_ci(cell: Mapping[str, float], digits: int = 4) -> str:
    """``"m ± h"`` for an aggregated cell, ``"m"`` when it has no interval, ``"n/a"`` if empty."""
    m, h = cell["mean"], cell["half_width"]
    if not math.isfinite(m):
        return "n/a"
    if not math.isfinite(h):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {h:.{digits}f}"
