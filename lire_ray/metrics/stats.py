"""Evaluation metrics of the paper (sec. 4.3-4.5, A.8), as pure functions over numbers.

* mean reward per reward model;
* win rate against the human-written reference answer, ties counted half;
* sequence-level KL(pi || pi_ref) estimated from policy samples, with its standard error;
* negative-flip rate: share of prompts whose reward dropped against the base policy (A.8);
* Best-of-n: pick the best of n base-policy samples by RM, report what RM* says of it (4.4);
* mean over seeds with a two-sided Student-t confidence interval (the comparison table), with
  the t quantile computed here (regularized incomplete beta, bisection) rather than from SciPy;
* distinct-n: the share of distinct word n-grams among all n-grams of a set of responses, which
  falls when a policy collapses onto a few templates.
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


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n of a set of responses: distinct word n-grams / all word n-grams.

    Words are whitespace-separated, lower-cased; n-grams do not cross responses.

    Args:
        texts: The responses.
        n: The n-gram order, >= 1.

    Returns:
        A value in (0, 1]; NaN when the responses hold no n-gram.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    grams = [tuple(words[i:i + n]) for words in (t.lower().split() for t in texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf`: the t with ``P(T <= t) = p`` (bisection to ~1e-12).

    Raises:
        ValueError: ``p`` outside (0, 1) or ``df <= 0``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A mean over independent runs (e.g. seeds) with a two-sided t-based confidence interval.

    Attributes:
        mean: Sample mean.
        half_width: ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
            deviation; NaN for fewer than two values.
        n: Number of values.
        confidence: The interval's confidence level.
    """

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean ± Student-t confidence interval over independent runs.

    Args:
        values: One value per run (seed).
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        The :class:`Interval`; its half-width is NaN for a single value.

    Raises:
        ValueError: No values, or ``confidence`` outside (0, 1).
    """
    if not values:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, m = len(values), mean(values)
    if n < 2:
        return Interval(m, float("nan"), n, confidence)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return Interval(m, t_quantile(0.5 + confidence / 2.0, n - 1) * s / math.sqrt(n), n,
                    confidence)
