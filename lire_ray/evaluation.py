"""Evaluation metrics of the paper (sec. 4.3-4.5, A.8), as pure functions over numbers.

* mean reward per reward model;
* win rate against the human-written reference answer, ties counted half;
* sequence-level KL(pi || pi_ref) estimated from policy samples, with its standard error;
* negative-flip rate: share of prompts whose reward dropped against the base policy (A.8);
* Best-of-n: pick the best of n base-policy samples by RM, report what RM* says of it (4.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    return sum(values) / len(values) if values else float("nan")


def win_rate(policy: Sequence[float], reference: Sequence[float]) -> float:
    """Share of prompts where the policy's reward beats the reference answer's; ties count 1/2.

    Raises:
        ValueError: The two lists differ in length or are empty.
    """
    if len(policy) != len(reference) or not policy:
        raise ValueError(f"win_rate needs two equally long, non-empty lists "
                         f"({len(policy)} vs {len(reference)})")
    wins = sum(1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy, reference))
    return wins / len(policy)


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate with its standard error."""

    value: float
    stderr: float
    n: int


def kl_estimate(policy_logps: Sequence[float], ref_logps: Sequence[float]) -> Estimate:
    """Sequence-level KL(pi || pi_ref) from samples y ~ pi: mean of log pi(y) - log pi_ref(y).

    Args:
        policy_logps: ``log pi(y_i|x_i)`` of N policy samples (summed over tokens).
        ref_logps: ``log pi_ref(y_i|x_i)`` of the same samples.

    Returns:
        The unbiased estimate and its standard error (sample std / sqrt(N)).
    """
    if len(policy_logps) != len(ref_logps) or not policy_logps:
        raise ValueError("kl_estimate needs two equally long, non-empty lists")
    d = [p - r for p, r in zip(policy_logps, ref_logps)]
    m = mean(d)
    if len(d) < 2:
        return Estimate(m, float("nan"), len(d))
    var = sum((x - m) ** 2 for x in d) / (len(d) - 1)
    return Estimate(m, math.sqrt(var / len(d)), len(d))


def negative_flip_rate(after: Sequence[float], before: Sequence[float]) -> float:
    """Share of prompts whose reward after tuning is strictly lower than before (paper A.8)."""
    if len(after) != len(before) or not after:
        raise ValueError("negative_flip_rate needs two equally long, non-empty lists")
    return sum(a < b for a, b in zip(after, before)) / len(after)


def best_of_n(picker: Sequence[Sequence[float]], judge: Sequence[Sequence[float]]) -> list[float]:
    """For each prompt, the judge's score of the candidate the picker scores highest.

    Args:
        picker: Per prompt, n scores by the reward model that picks (RM).
        judge: Per prompt, the same n candidates scored by the judge (RM*).

    Returns:
        One judge score per prompt (first maximum on ties).
    """
    out = []
    for p, j in zip(picker, judge, strict=True):
        if len(p) != len(j) or not p:
            raise ValueError("best_of_n needs equally long, non-empty score lists per prompt")
        out.append(j[max(range(len(p)), key=p.__getitem__)])
    return out


def summarize(scores: dict[str, Sequence[float]],
              human: dict[str, Sequence[float]] | None = None) -> dict[str, dict[str, float]]:
    """Mean reward and (when human scores are given) win rate, per reward model."""
    out = {}
    for name, s in scores.items():
        row = {"mean": mean(list(s))}
        if human is not None and name in human:
            row["win_rate"] = win_rate(list(s), list(human[name]))
        out[name] = row
    return out
