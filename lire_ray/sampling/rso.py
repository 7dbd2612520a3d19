"""Statistical rejection sampling (RSO: Liu et al. 2023, "Statistical Rejection Sampling
Improves Preference Optimization", Algorithm 1), used by the LIRE paper (sec. 4.7) to keep K of
N sampled candidates per prompt before training.

RSO treats the N candidates of a prompt as draws from the sampling policy and keeps draws from
the optimal KL-regularised policy ``pi*(y) ∝ pi_sft(y) exp(r(y) / beta)``: a candidate is
accepted with probability ``exp((r - r_max) / beta)``, where ``r_max`` (the envelope constant)
is the best reward among the candidates not yet kept.

Exact procedure of :func:`rso_select`, repeated until K candidates are kept:

1. ``r_max`` = max reward over the remaining (not yet kept) candidates;
2. propose a remaining candidate ``j`` uniformly at random;
3. draw ``u ~ U[0, 1)``; if ``u < exp((r_j - r_max) / beta)`` keep ``j`` and remove it.

The proposal is uniform over the remaining candidates (their empirical distribution), so every
kept candidate is an exact draw from ``softmax(r / beta)`` restricted to the remaining ones: the
first pick has ``P(i) = exp(r_i / beta) / sum_j exp(r_j / beta)`` and the kept list follows the
Plackett-Luce law with weights ``exp(r / beta)``. The best remaining candidate is accepted with
probability 1, so each pick takes at most ``m / sum_j exp((r_j - r_max) / beta) <= m`` proposals
on average (m remaining). (The paper's listing instead sweeps the candidates in their stored
order within each round, which favours earlier indices when rewards are fixed; drawing the
proposal uniformly removes that order dependence and is otherwise the same rule.)
``beta -> inf`` keeps a uniform random subset; ``beta -> 0`` keeps the top-K rewards in order.

Shape notation: N candidates of one prompt, K kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lire_ray.errors import ConfigError, DataError


def acceptance_probabilities(rewards: Sequence[float], beta: float) -> np.ndarray:
    """RSO's acceptance probability of each candidate against the best one.

    Args:
        rewards: ``[N]`` rewards.
        beta: RSO's beta (> 0).

    Returns:
        ``[N]`` ``exp((r_i - max r) / beta)``, in (0, 1].
    """
    r = np.asarray(rewards, dtype=np.float64)
    return np.exp((r - r.max()) / beta)


def rso_select(rewards: Sequence[float], k: int, beta: float,
               rng: np.random.Generator | int | None) -> list[int]:
    """Choose K of N candidates by statistical rejection sampling (RSO, Algorithm 1).

    Args:
        rewards: ``[N]`` finite rewards of one prompt's candidates.
        k: K, how many to keep (1 <= K <= N).
        beta: RSO's beta (> 0): lower keeps fewer low-reward candidates.
        rng: A NumPy ``Generator`` (advanced in place) or a seed for a new one.

    Returns:
        K distinct candidate indices, in the order they were accepted.

    Raises:
        ConfigError: ``k`` outside [1, N] or ``beta`` not a positive finite number.
        DataError: A reward is NaN or infinite.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"RSO beta must be a positive finite number, got {beta!r}")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= r.size:
        raise ConfigError(f"RSO must keep between 1 and {r.size} candidates, got k={k!r}")
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise DataError(f"RSO needs finite rewards; candidate {int(bad[0])} has {r[bad[0]]}",
                        field="rewards")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    remaining = list(range(r.size))
    kept: list[int] = []
    while len(kept) < k:
        r_max = r[remaining].max()
        pos = int(gen.integers(len(remaining)))
        j = remaining[pos]
        if gen.random() < math.exp((r[j] - r_max) / beta):
            kept.append(j)
            remaining.pop(pos)
    return kept


def rso_seed(seed: int, policy_version: int, prompt_id: str) -> int:
    """The RSO selection seed of one prompt: a function of what identifies its candidates.

    The sampler seeds a batch from ``sampler.seed``, the policy version and the prompt ids, so
    a retried batch gets the same candidates; seeding the selection from the same three keeps
    the same subset of them, whichever replica or retry runs it.

    Args:
        seed: ``sampler.seed``.
        policy_version: The version of the policy that sampled the candidates.
        prompt_id: The prompt's id.

    Returns:
        A 64-bit seed for :func:`rso_select`.
    """
    import hashlib

    digest = hashlib.sha256(f"rso\0{seed}\0{policy_version}\0{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def select_candidates(row, samples, rewards: Sequence[float], *, num_candidates: int,
                      keep_human: bool, evolve_step: int, beta: float, seed: int):
    """Keep K - h of N sampled candidates by RSO and merge them into the row (paper sec. 4.7).

    h is the number of human-written candidates the row keeps (0 unless ``keep_human``); at
    least one policy candidate is kept, as without RSO. The kept candidates stay in their
    sampling order.

    Args:
        row: The prompt row (a :class:`~lire_ray.pool.PoolRow`).
        samples: Its N samples (a :class:`~lire_ray.sampling.base.PromptSamples`).
        rewards: The training reward of each sample (N floats).
        num_candidates: K, candidates per prompt in the pool (human ones included).
        keep_human: Keep human-written candidates.
        evolve_step: Written to the row's ``evolve_step``.
        beta: RSO's beta (> 0).
        seed: ``sampler.seed``; the selection seed is :func:`rso_seed` of it, the samples'
            policy version and the prompt id.

    Returns:
        The row with the kept candidates (see :func:`~lire_ray.sampling.base.merge_candidates`).

    Raises:
        DataError: The rewards do not match the samples in number, or one is not finite.
        ConfigError: ``beta`` is not a positive finite number.
    """
    from lire_ray.pool import HUMAN
    from lire_ray.sampling.base import merge_candidates

    cands = samples.candidates
    if len(rewards) != len(cands):
        raise DataError(f"{len(cands)} candidates and {len(rewards)} rewards",
                        source=f"prompt {row.prompt_id!r}")
    humans = sum(s == HUMAN for s in row.sources) if keep_human else 0
    keep = min(max(num_candidates - humans, 1), len(cands))
    version = max((c.policy_version for c in cands), default=-1)
    kept = sorted(rso_select(rewards, keep, beta, rng=rso_seed(seed, version, row.prompt_id)))
    return merge_candidates(row, samples, keep_human=keep_human, evolve_step=evolve_step,
                            keep=kept)
