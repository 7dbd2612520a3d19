"""Evaluation metrics against hand-computed cases."""

from __future__ import annotations

import math
import random

import pytest

from lire_ray.metrics import stats as ev


def test_win_rate_counts_ties_half():
    # wins: 3 > 1, tie 2 == 2, loss 0 < 5, win 4 > -1  -> (1 + 0.5 + 0 + 1) / 4
    assert ev.win_rate([3, 2, 0, 4], [1, 2, 5, -1]) == pytest.approx(2.5 / 4)
    assert ev.win_rate([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        ev.win_rate([1, 2], [1])
    with pytest.raises(ValueError):
        ev.win_rate([], [])


def test_negative_flip_rate():
    assert ev.negative_flip_rate([1, 0, 3, 2], [0, 1, 3, 5]) == pytest.approx(2 / 4)
    assert ev.negative_flip_rate([2, 2], [1, 1]) == 0.0


def test_kl_estimate_recovers_known_kl():
    # pi = N(0, 1) and pi_ref = N(1, 1) over a real "sequence": KL(pi||ref) = (0-1)^2 / 2 = 0.5.
    rng = random.Random(0)
    xs = [rng.gauss(0.0, 1.0) for _ in range(20000)]

    def logn(x, mu):
        return -0.5 * (x - mu) ** 2 - 0.5 * math.log(2 * math.pi)

    est = ev.kl_estimate([logn(x, 0.0) for x in xs], [logn(x, 1.0) for x in xs])
    assert est.n == 20000
    assert abs(est.value - 0.5) < 4 * est.stderr
    # The standard error of the mean of (0.5 - x) with x ~ N(0,1) is 1/sqrt(n).
    assert est.stderr == pytest.approx(1 / math.sqrt(20000), rel=0.05)


def test_kl_estimate_of_identical_policies_is_zero():
    est = ev.kl_estimate([-3.0, -1.5, -7.0], [-3.0, -1.5, -7.0])
    assert est.value == 0.0 and est.stderr == 0.0


def test_best_of_n_uses_picker_and_reports_judge():
    picker = [[0.1, 0.9, 0.5], [2.0, 1.0]]
    judge = [[10.0, -1.0, 3.0], [7.0, 8.0]]
    assert ev.best_of_n(picker, judge) == [-1.0, 7.0]
    with pytest.raises(ValueError):
        ev.best_of_n([[1.0]], [[1.0, 2.0]])


def test_summarize():
    out = ev.summarize({"rm": [1.0, 3.0]}, {"rm": [2.0, 2.0]})
    assert out == {"rm": {"mean": 2.0, "win_rate": 0.5}}
    assert ev.summarize({"rm": [1.0]}) == {"rm": {"mean": 1.0}}
