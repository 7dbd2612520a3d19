"""Reward actor: scores every candidate of a batch of pool rows with every reward model.

Undecorated on purpose: jobs apply resources from the recipe with
``ray.remote(**resources)(RewardActor)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError
from lire_ray.models import default_device
from lire_ray.pool import PoolRow
from lire_ray.rewards import NormStats, RewardSet, load_norm_stats, stats_to_dict


class RewardActor:
    """Hosts a :class:`~lire_ray.rewards.RewardSet`.

    Args:
        configs: The recipe's reward models.
        norm_stats: Frozen z-score statistics, by reward-model name.
        device: Torch device for HF reward models; default: the GPU Ray assigned this actor,
            else the CPU.
        norm_file: JSON file ``{name: {"mean", "std"}}`` (see
            :func:`~lire_ray.rewards.save_norm_stats`) holding the frozen statistics the driver
            chose. When it exists at construction its statistics are loaded (over
            ``norm_stats``): Ray restarts an actor with its original arguments, so the file is
            what lets a restarted actor keep statistics fitted after it first started.

    Raises:
        ModelLoadError: A reward model cannot be loaded.
        DataError: ``norm_file`` exists but is malformed.
    """

    def __init__(self, configs: Sequence[RewardModelConfig],
                 norm_stats: dict[str, NormStats] | None = None, device: str | None = None,
                 norm_file: str | None = None):
        self.norm_file = norm_file
        self.rewards = RewardSet(configs, norm_stats=norm_stats, device=device or default_device())
        if norm_file and os.path.isfile(norm_file):
            self.rewards.norm_stats.update(load_norm_stats(norm_file))

    def score_rows(self, rows: Sequence[PoolRow]) -> list[PoolRow]:
        """Rows with fresh rewards of all their candidates, each scored with its row's metadata
        (see :meth:`~lire_ray.rewards.RewardSet.score_rows`)."""
        return self.rewards.score_rows(rows)

    def score_samples(self, rows: Sequence[PoolRow],
                      samples: Sequence[Sequence[str]]) -> dict[str, list[list[float]]]:
        """Scores of new responses (``samples[i]`` for ``rows[i]``) with the rows' metadata
        and chat turns (see :meth:`~lire_ray.rewards.RewardSet.score_samples`)."""
        return self.rewards.score_samples(rows, samples)

    def score(self, prompts: list[str], responses: list[str],
              metadata: Sequence[Mapping[str, Any] | None] | None = None) -> dict[str, list[float]]:
        """Scores of flat (prompt, response) pairs by every reward model, with optional
        per-pair metadata dicts."""
        return self.rewards.score(prompts, responses, metadata)

    def score_raw(self, prompts: list[str], responses: list[str],
                  names: Sequence[str] | None = None,
                  metadata: Sequence[Mapping[str, Any] | None] | None = None
                  ) -> dict[str, list[float]]:
        """Unnormalised scores of flat pairs by every model (or those in ``names``)."""
        return self.rewards.score_raw(prompts, responses, names, metadata=metadata)

    def reload_normalisation(self) -> dict[str, dict[str, float]]:
        """Load ``norm_file`` again (the driver rewrote it) and return the statistics in use.

        Returns:
            The frozen statistics in manifest form, ``{name: {"mean", "std"}}``.

        Raises:
            DataError: The actor has no ``norm_file`` or the file is missing or malformed.
        """
        if not self.norm_file:
            raise DataError("this reward actor was started without a norm_file")
        self.rewards.norm_stats.update(load_norm_stats(self.norm_file))
        return self.normalisation()

    def normalisation(self) -> dict[str, dict[str, float]]:
        """The frozen statistics in use, in manifest form ``{name: {"mean", "std"}}``."""
        return stats_to_dict(self.rewards.norm_stats)

    def truncation_counts(self) -> dict[str, int]:
        return self.rewards.truncation_counts()

    def ping(self) -> str:
        return "reward"
