"""Reward actor: scores every candidate of a batch of pool rows with every reward model.

Undecorated on purpose: jobs apply resources from the recipe with
``ray.remote(**resources)(RewardActor)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lire_ray.config import RewardModelConfig
from lire_ray.models import default_device
from lire_ray.pool import PoolRow
from lire_ray.rewards import NormStats, RewardSet


class RewardActor:
    """Hosts a :class:`~lire_ray.rewards.RewardSet`.

    Args:
        configs: The recipe's reward models.
        norm_stats: Frozen z-score statistics, by reward-model name.
        device: Torch device for HF reward models; default: the GPU Ray assigned this actor,
            else the CPU.
    """

    def __init__(self, configs: Sequence[RewardModelConfig],
                 norm_stats: dict[str, NormStats] | None = None, device: str | None = None):
        self.rewards = RewardSet(configs, norm_stats=norm_stats, device=device or default_device())

    def score_rows(self, rows: Sequence[PoolRow]) -> list[PoolRow]:
        """Replace each row's rewards with fresh scores of all its candidates."""
        prompts = [r.prompt for r in rows for _ in r.responses]
        responses = [c for r in rows for c in r.responses]
        scores = self.rewards.score(prompts, responses) if responses else {}
        out, at = [], 0
        for r in rows:
            k = r.num_candidates
            out.append(replace(r, rewards={n: tuple(s[at:at + k]) for n, s in scores.items()}))
            at += k
        return out

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Scores of flat (prompt, response) pairs by every reward model."""
        return self.rewards.score(prompts, responses)

    def fit_normalisation(self, prompts: list[str], responses: list[str]) -> dict[str, NormStats]:
        return self.rewards.fit_normalisation(prompts, responses)

    def truncation_counts(self) -> dict[str, int]:
        return self.rewards.truncation_counts()

    def ping(self) -> str:
        return "reward"
