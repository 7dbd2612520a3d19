"""Every configured reward model at once: scoring flat pairs or pool rows, raw or normalised."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from lire_ray.config import RewardModelConfig
from lire_ray.errors import ConfigError, DataError
from lire_ray.pool import PoolRow
from lire_ray.rewards.functions import LabelReward, PythonReward
from lire_ray.rewards.hf import HFRewardModel
from lire_ray.rewards.norm import NormStats
from lire_ray.rewards.pairs import Messages, Pairs
from lire_ray.rewards.remote import RemoteRewardModel

Metadata = Sequence[Mapping[str, Any] | None] | None


def build_scorer(cfg: RewardModelConfig, device: str = "cpu"):
    """The scorer of one recipe entry (an object with ``score_pairs(pairs) -> scores``).

    Raises:
        ModelLoadError: The model or function cannot be loaded.
    """
    if cfg.kind == "python":
        return PythonReward(cfg)
    if cfg.kind == "label":
        return LabelReward(cfg)
    if cfg.kind == "remote":
        return RemoteRewardModel(cfg)
    return HFRewardModel(cfg, device)


class RewardSet:
    """Every configured reward model, each scoring under its own name.

    Args:
        configs: The recipe's ``rewards`` list.
        norm_stats: Frozen normalisation statistics for models with ``normalize: zscore``.
        device: Torch device for HF reward models.

    Raises:
        ModelLoadError: A model or function cannot be loaded.
    """

    def __init__(self, configs: Sequence[RewardModelConfig],
                 norm_stats: dict[str, NormStats] | None = None, device: str = "cpu"):
        self.configs = list(configs)
        self.norm_stats = dict(norm_stats or {})
        self.scorers = {cfg.name: build_scorer(cfg, device) for cfg in self.configs}

    @property
    def names(self) -> list[str]:
        return [cfg.name for cfg in self.configs]

    def truncation_counts(self) -> dict[str, int]:
        """Inputs truncated so far, per HF reward model."""
        return {n: s.truncated for n, s in self.scorers.items() if isinstance(s, HFRewardModel)}

    @property
    def zscore_names(self) -> list[str]:
        """The reward models configured with ``normalize: zscore``."""
        return [cfg.name for cfg in self.configs if cfg.normalize == "zscore"]

    @property
    def unfitted_names(self) -> list[str]:
        """The ``normalize: zscore`` models that have no statistics yet (scoring them fails)."""
        return [n for n in self.zscore_names if n not in self.norm_stats]

    def score_pairs_raw(self, pairs: Pairs,
                        names: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Unnormalised scores of ``pairs`` by every model (or by the models in ``names``).

        Raises:
            DataError: A scorer returned the wrong number of scores or a value that is not a
                finite number (names the reward model), or the input is malformed.
            KeyError: ``names`` holds a name that is not a configured reward model.
            ModelLoadError: A remote reward model did not answer.
        """
        chosen = self.names if names is None else list(names)
        unknown = [n for n in chosen if n not in self.scorers]
        if unknown:
            raise KeyError(f"unknown reward model(s) {unknown}; configured: {self.names}")
        out = {}
        for name in chosen:
            # No call for no pairs: a remote server or a user function need not handle [].
            got = self.scorers[name].score_pairs(pairs) if len(pairs) else []
            out[name] = _checked(got, pairs, name)
        return out

    @property
    def judge_names(self) -> list[str]:
        """The models that can score new responses: all but ``kind: label`` (which scores only
        a dataset's own candidates)."""
        return [cfg.name for cfg in self.configs if cfg.kind != "label"]

    def score_pairs(self, pairs: Pairs, names: Sequence[str] | None = None
                    ) -> dict[str, list[float]]:
        """Scores of ``pairs`` by every model (or those in ``names``), z-scored where configured.

        Raises:
            ConfigError: A ``normalize: zscore`` model has no fitted or loaded statistics.
            DataError, ModelLoadError: As :meth:`score_pairs_raw`.
        """
        missing = [n for n in self.unfitted_names if names is None or n in names]
        if missing:
            raise ConfigError(
                f"reward model(s) {missing} have normalize: zscore but no normalisation "
                "statistics: fit them (RewardSet.fit_normalisation) or load them (norm_stats, "
                "a norm_file, a pool manifest) before scoring, or set normalize: none; raw "
                "scores are never substituted")
        raw = self.score_pairs_raw(pairs, names)
        return {n: (self.norm_stats[n].apply(s) if n in self.zscore_names else s)
                for n, s in raw.items()}

    def score_raw(self, prompts: Sequence[str], responses: Sequence[str],
                  names: Sequence[str] | None = None, *, metadata: Metadata = None,
                  messages: Sequence[Messages | None] | None = None) -> dict[str, list[float]]:
        """Unnormalised scores of flat pairs by every model (or those in ``names``).

        Args:
            prompts: The prompt of each response.
            responses: The responses.
            names: The reward models to use; default: all.
            metadata: Optional per-pair dicts for Python functions, ``label`` and remote
                models (see :mod:`lire_ray.rewards`).
            messages: Optional per-pair chat turns for the ``chat`` template.

        Raises:
            As :meth:`score_pairs_raw`.
        """
        return self.score_pairs_raw(Pairs.flat(prompts, responses, metadata, messages), names)

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              metadata: Metadata = None, *,
              messages: Sequence[Messages | None] | None = None) -> dict[str, list[float]]:
        """Scores of flat pairs by every model, z-scored where configured.

        Args:
            prompts: The prompt of each response.
            responses: The responses.
            metadata: Optional per-pair dicts (see :meth:`score_raw`).
            messages: Optional per-pair chat turns.

        Raises:
            As :meth:`score_pairs`.
        """
        return self.score_pairs(Pairs.flat(prompts, responses, metadata, messages))

    def score_rows(self, rows: Sequence[PoolRow]) -> list[PoolRow]:
        """Rows whose ``rewards`` are fresh scores of all their candidates by every model.

        Each candidate is scored with its row's metadata and chat turns (see
        :meth:`~lire_ray.rewards.pairs.Pairs.from_rows`); scores are z-scored where configured.

        Returns:
            The rows in order, each with ``rewards`` replaced (``{name: K scores}``).

        Raises:
            As :meth:`score_pairs`; DataError also for a row whose metadata is malformed or
            which the ``label`` reward cannot score (names the prompt_id).
        """
        scores = self.score_pairs(Pairs.from_rows(rows))
        out, at = [], 0
        for row in rows:
            k = row.num_candidates
            out.append(replace(row, rewards={n: tuple(s[at:at + k]) for n, s in scores.items()}))
            at += k
        return out

    def score_samples(self, rows: Sequence[PoolRow],
                      samples: Sequence[Sequence[str]]) -> dict[str, list[list[float]]]:
        """Scores of new responses to the rows' prompts (policy samples at evaluation or for
        RSO), each with its row's metadata and chat turns, z-scored where configured.

        Args:
            rows: The prompts' pool rows.
            samples: ``samples[i]``: the responses to score for ``rows[i]``.

        Returns:
            ``{name: [scores of samples[0], scores of samples[1], ...]}`` for every model but
            those of ``kind: label``, which score only a dataset's own candidates.

        Raises:
            As :meth:`score_pairs`.
        """
        flat = self.score_pairs(Pairs.from_samples(rows, samples), self.judge_names)
        out: dict[str, list[list[float]]] = {}
        for name, scores in flat.items():
            out[name], at = [], 0
            for texts in samples:
                out[name].append(scores[at:at + len(texts)])
                at += len(texts)
        return out

    def fit_normalisation(self, prompts: Sequence[str], responses: Sequence[str],
                          metadata: Metadata = None) -> dict[str, NormStats]:
        """Fit and freeze z-score statistics for models configured with ``normalize: zscore``.

        Args:
            prompts: The prompt of each response.
            responses: The responses whose raw scores define the statistics.
            metadata: Optional per-pair dicts (see :meth:`score_raw`).

        Returns:
            Every frozen statistic by reward-model name (earlier ones included).
        """
        raw = self.score_raw(prompts, responses, self.zscore_names, metadata=metadata)
        for name, scores in raw.items():
            self.norm_stats[name] = NormStats.fit(scores)
        return dict(self.norm_stats)


def _checked(scores: Sequence[float], pairs: Pairs, name: str) -> list[float]:
    source = f"reward model '{name}'"
    try:
        out = [float(s) for s in scores]
    except (TypeError, ValueError) as exc:
        raise DataError(f"returned something other than numbers: {exc}", source=source) from None
    if len(out) != len(pairs):
        raise DataError(f"returned {len(out)} scores for {len(pairs)} responses", source=source)
    bad = [i for i, s in enumerate(out) if not math.isfinite(s)]
    if bad:
        raise DataError(f"non-finite score for response {bad[0]}: "
                        f"{pairs.responses[bad[0]][:80]!r}", source=source)
    return out
