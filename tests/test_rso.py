"""Statistical rejection sampling (lire_ray.sampling.rso) against its closed-form law.

Each accepted candidate must be a draw from softmax(r / beta) over the candidates not yet kept,
so the first pick has P(i) = exp(r_i / beta) / sum_j exp(r_j / beta) and the ordered first two
picks follow the Plackett-Luce law. Expected frequencies are computed here by hand and compared
with Pearson's chi-square statistic against the 0.999 quantile of the chi-square distribution
(table values), with fixed seeds.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from lire_ray.errors import ConfigError, DataError
from lire_ray.sampling.rso import acceptance_probabilities, rso_select

# Upper 0.001 quantiles of the chi-square distribution (standard tables), by degrees of freedom.
CHI2_999 = {3: 16.266, 5: 20.515, 11: 31.264}


def chi_square(counts: Counter, probs: dict, trials: int) -> float:
    return sum((counts.get(cell, 0) - trials * p) ** 2 / (trials * p) for cell, p in probs.items())


def softmax_by_hand(rewards, beta):
    weights = [math.exp(r / beta) for r in rewards]
    total = sum(weights)
    return [w / total for w in weights]


def test_first_pick_follows_softmax_of_rewards_over_beta():
    rewards, beta, trials = [0.0, 0.5, 1.0, -1.0, 2.0, 0.2], 0.7, 20000
    rng = np.random.default_rng(1234)
    counts = Counter(rso_select(rewards, 1, beta, rng)[0] for _ in range(trials))
    probs = dict(enumerate(softmax_by_hand(rewards, beta)))
    assert chi_square(counts, probs, trials) < CHI2_999[5]


def test_the_bound_rejects_an_order_biased_sweep():
    # The same acceptance rule applied in stored order within each round (no random proposal)
    # favours early indices; the chi-square bound above must be able to tell.
    rewards, beta, trials = [0.0, 0.5, 1.0, -1.0, 2.0, 0.2], 0.7, 20000
    rng = np.random.default_rng(1234)

    def sweep_first_pick():
        r_max = max(rewards)
        while True:
            for i, r in enumerate(rewards):
                if rng.random() < math.exp((r - r_max) / beta):
                    return i

    counts = Counter(sweep_first_pick() for _ in range(trials))
    probs = dict(enumerate(softmax_by_hand(rewards, beta)))
    assert chi_square(counts, probs, trials) > CHI2_999[5]


def test_ordered_first_two_picks_follow_plackett_luce():
    rewards, beta, trials = [1.0, 0.0, -0.5, 0.4], 0.5, 24000
    w = [math.exp(r / beta) for r in rewards]
    probs = {(i, j): w[i] / sum(w) * w[j] / (sum(w) - w[i])
             for i in range(4) for j in range(4) if i != j}
    rng = np.random.default_rng(7)
    counts = Counter(tuple(rso_select(rewards, 2, beta, rng)) for _ in range(trials))
    assert chi_square(counts, probs, trials) < CHI2_999[11]


def test_returns_k_distinct_valid_indices():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 9))
        k = int(rng.integers(1, n + 1))
        rewards = rng.normal(size=n) * 3
        picked = rso_select(rewards, k, float(rng.uniform(0.05, 5)), rng)
        assert len(picked) == k
        assert len(set(picked)) == k
        assert all(0 <= i < n for i in picked), (trial, picked)


def test_large_beta_approaches_uniform():
    rewards, trials = [3.0, -2.0, 0.0, 10.0], 12000
    rng = np.random.default_rng(99)
    counts = Counter(rso_select(rewards, 1, 1e12, rng)[0] for _ in range(trials))
    assert chi_square(counts, {i: 0.25 for i in range(4)}, trials) < CHI2_999[3]


def test_small_beta_picks_best_first_and_keeps_reward_order():
    rewards = [0.3, 1.7, -0.4, 0.9, 1.2]
    by_reward = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    rng = np.random.default_rng(5)
    for _ in range(50):
        assert rso_select(rewards, 1, 1e-9, rng) == [1]
        assert rso_select(rewards, len(rewards), 1e-9, rng) == by_reward


def test_deterministic_for_a_seed_and_advances_a_generator():
    rewards = np.linspace(-1, 1, 8)
    assert rso_select(rewards, 4, 0.5, 42) == rso_select(rewards, 4, 0.5, 42)
    rng = np.random.default_rng(42)
    draws = [tuple(rso_select(rewards, 4, 0.5, rng)) for _ in range(20)]
    assert len(set(draws)) > 1


def test_acceptance_probabilities_match_hand_values():
    got = acceptance_probabilities([1.0, 0.0, 2.0], 0.5)
    assert got == pytest.approx([math.exp(-2.0), math.exp(-4.0), 1.0], rel=1e-12)


@pytest.mark.parametrize("k, beta", [(0, 1.0), (4, 1.0), (2, 0.0), (2, -1.0), (2, float("inf"))])
def test_bad_arguments_raise_config_error(k, beta):
    with pytest.raises(ConfigError):
        rso_select([0.1, 0.2, 0.3], k, beta, 0)


def test_non_finite_reward_raises_data_error():
    with pytest.raises(DataError, match="candidate 1"):
        rso_select([0.1, float("nan"), 0.3], 2, 1.0, 0)
