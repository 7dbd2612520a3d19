"""Reward models: HF sequence classifiers and Python scorers, several at once.

A reward model maps (prompt, response) pairs to one float each. Two kinds exist:

* ``hf``: an ``AutoModelForSequenceClassification`` (hub id or local directory; safetensors
  only) whose first logit is the reward. The input template is chosen per model:
  ``plain`` (prompt + response as one text), ``openassistant``
  (``<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>``), ``qa`` (a
  question/answer text pair, as DeBERTa reward models expect) and ``chat`` (the tokenizer's chat
  template over a user and an assistant turn). Inputs longer than ``max_length`` are truncated
  and counted.
* ``python``: a function named ``"module:function"`` taking ``(prompts, responses)`` and
  returning one float per response.

Optional per-model normalisation (``zscore``) uses statistics fitted once (on the initial pool)
and then frozen, so that rewards of different Evolve steps stay comparable; the statistics are
recorded in the pool manifest's metadata under :data:`NORM_METADATA_KEY` as
``{name: {"mean": float, "std": float}}`` (:func:`stats_to_dict`, :func:`stats_from_dict`), and
handed to reward actors as a JSON file of the same form (:func:`save_norm_stats`,
:func:`load_norm_stats`), so an actor restarted by Ray loads the same frozen statistics.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError

ScoreFn = Callable[[list[str], list[str]], Sequence[float]]

#: Key of the frozen z-score statistics in a pool manifest's ``metadata``.
NORM_METADATA_KEY = "reward_normalisation"


@dataclass(frozen=True)
class NormStats:
    """Frozen z-score statistics of one reward model."""

    mean: float
    std: float

    @classmethod
    def fit(cls, scores: Sequence[float]) -> NormStats:
        """Mean and (population) standard deviation; a constant score gets std 1."""
        n = len(scores)
        if n == 0:
            raise ValueError("cannot fit normalisation statistics on no scores")
        mean = sum(scores) / n
        var = sum((s - mean) ** 2 for s in scores) / n
        return cls(mean=mean, std=math.sqrt(var) if var > 0 else 1.0)

    def apply(self, scores: Sequence[float]) -> list[float]:
        return [(s - self.mean) / self.std for s in scores]


def stats_to_dict(stats: Mapping[str, NormStats]) -> dict[str, dict[str, float]]:
    """The manifest form of normalisation statistics.

    Args:
        stats: Statistics by reward-model name.

    Returns:
        ``{name: {"mean": float, "std": float}}``, names sorted.
    """
    return {name: {"mean": float(stats[name].mean), "std": float(stats[name].std)}
            for name in sorted(stats)}


def stats_from_dict(data: object, source: str = "reward normalisation") -> dict[str, NormStats]:
    """Statistics from their manifest form, checked.

    Args:
        data: ``{name: {"mean": number, "std": number}}``.
        source: Where ``data`` came from, named in errors (a file or a manifest).

    Returns:
        :class:`NormStats` by reward-model name.

    Raises:
        DataError: ``data`` is not of that form, a value is not a finite number, or a standard
            deviation is not positive (it would divide by zero or flip the ranking).
    """
    if not isinstance(data, Mapping):
        raise DataError(f"expected {{name: {{mean, std}}}}, got {type(data).__name__}",
                        source=source, field=NORM_METADATA_KEY)
    out = {}
    for name, entry in data.items():
        where = f"{NORM_METADATA_KEY}.{name}"
        if not isinstance(entry, Mapping) or set(entry) != {"mean", "std"}:
            raise DataError("expected exactly the keys 'mean' and 'std'", source=source,
                            field=where)
        values = []
        for key in ("mean", "std"):
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise DataError(f"'{key}' is {value!r}, not a finite number", source=source,
                                field=where)
            values.append(float(value))
        if values[1] <= 0:
            raise DataError(f"'std' is {values[1]}, must be positive", source=source, field=where)
        out[str(name)] = NormStats(mean=values[0], std=values[1])
    return out


def save_norm_stats(path: str | os.PathLike, stats: Mapping[str, NormStats]) -> None:
    """Write statistics to a JSON file atomically (a reader never sees half a file).

    Args:
        path: The file to (re)write.
        stats: Statistics by reward-model name.
    """
    from lire_ray.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(stats_to_dict(stats), indent=2, allow_nan=False))


def load_norm_stats(path: str | os.PathLike) -> dict[str, NormStats]:
    """Read statistics written by :func:`save_norm_stats`.

    Args:
        path: The JSON file.

    Returns:
        :class:`NormStats` by reward-model name.

    Raises:
        DataError: The file is missing, not JSON, or not of the form ``{name: {mean, std}}``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read normalisation statistics: {exc}", source=str(path)) from None
    return stats_from_dict(data, source=str(path))


def load_python_scorer(path: str) -> ScoreFn:
    """Import ``module:function``.

    Raises:
        ModelLoadError: The module or the function cannot be found, or it is not callable.
    """
    module_name, _, func_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"reward function '{path}': cannot import module "
                             f"'{module_name}': {exc}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ModelLoadError(f"reward function '{path}': '{func_name}' is not a function of "
                             f"'{module_name}'")
    return fn


def format_reward_input(template: str, prompt: str, response: str, tokenizer=None):
    """The text (or text pair) a reward model of ``template`` expects.

    Returns:
        A string, or a ``(question, answer)`` tuple for the ``qa`` template.
    """
    if template == "plain":
        return prompt + response
    if template == "openassistant":
        return f"<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>"
    if template == "qa":
        return (prompt, response)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError("reward template 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            tokenize=False)
    raise ValueError(f"unknown reward template {template!r}")


class HFRewardModel:
    """A sequence-classification reward model, scored in batches on one device.

    Args:
        cfg: The reward model's recipe entry (``kind: hf``).
        device: Torch device string.
    """

    def __init__(self, cfg: RewardModelConfig, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lire_ray.models import ensure_pad_token

        self.cfg = cfg
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                cfg.path, trust_remote_code=cfg.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, trust_remote_code=cfg.trust_remote_code, use_safetensors=True,
                dtype=torch.float32 if device == "cpu" else "auto").to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"reward model '{cfg.name}': cannot load '{cfg.path}' (a hub id "
                                 f"needs network access; a local directory must hold a HF model "
                                 f"with safetensors weights): {exc}") from None
        ensure_pad_token(self.tokenizer, cfg.path)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.truncated = 0

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        inputs = [format_reward_input(self.cfg.template, p, r, self.tokenizer)
                  for p, r in zip(prompts, responses)]
        scores: list[float] = []
        for start in range(0, len(inputs), self.cfg.batch_size):
            chunk = inputs[start:start + self.cfg.batch_size]
            if self.cfg.template == "qa":
                firsts, seconds = [c[0] for c in chunk], [c[1] for c in chunk]
                full = self.tokenizer(firsts, seconds)["input_ids"]
                enc = self.tokenizer(firsts, seconds, truncation=True, padding=True,
                                     max_length=self.cfg.max_length, return_tensors="pt")
            else:
                full = self.tokenizer(chunk)["input_ids"]
                enc = self.tokenizer(chunk, truncation=True, padding=True,
                                     max_length=self.cfg.max_length, return_tensors="pt")
            self.truncated += sum(len(ids) > self.cfg.max_length for ids in full)
            with torch.no_grad():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores


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
        self.scorers: dict[str, ScoreFn] = {}
        for cfg in self.configs:
            self.scorers[cfg.name] = (load_python_scorer(cfg.path) if cfg.kind == "python"
                                      else HFRewardModel(cfg, device))

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

    def score_raw(self, prompts: list[str], responses: list[str],
                  names: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Unnormalised scores of every model (or of the models in ``names``).

        Raises:
            DataError: A scorer returned the wrong number of scores or a non-finite score.
            KeyError: ``names`` holds a name that is not a configured reward model.
        """
        chosen = self.names if names is None else list(names)
        unknown = [n for n in chosen if n not in self.scorers]
        if unknown:
            raise KeyError(f"unknown reward model(s) {unknown}; configured: {self.names}")
        out = {}
        for name in chosen:
            scorer = self.scorers[name]
            scores = [float(s) for s in scorer(list(prompts), list(responses))]
            if len(scores) != len(responses):
                raise DataError(f"returned {len(scores)} scores for {len(responses)} responses",
                                source=f"reward model '{name}'")
            bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
            if bad:
                raise DataError(f"non-finite score for response {bad[0]}: "
                                f"{responses[bad[0]][:80]!r}", source=f"reward model '{name}'")
            out[name] = scores
        return out

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Scores of every model, normalised where configured and fitted."""
        raw = self.score_raw(prompts, responses)
        return {n: (self.norm_stats[n].apply(s) if n in self.norm_stats else s)
                for n, s in raw.items()}

    def fit_normalisation(self, prompts: list[str], responses: list[str]) -> dict[str, NormStats]:
        """Fit and freeze z-score statistics for models configured with ``normalize: zscore``.

        Args:
            prompts: The prompt of each response.
            responses: The responses whose raw scores define the statistics.

        Returns:
            Every frozen statistic by reward-model name (earlier ones included).
        """
        raw = self.score_raw(prompts, responses, self.zscore_names)
        for name, scores in raw.items():
            self.norm_stats[name] = NormStats.fit(scores)
        return dict(self.norm_stats)
