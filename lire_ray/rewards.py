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
recorded in the pool manifest.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError

ScoreFn = Callable[[list[str], list[str]], Sequence[float]]


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
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
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

    def score_raw(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Unnormalised scores of every model.

        Raises:
            DataError: A scorer returned the wrong number of scores or a non-finite score.
        """
        out = {}
        for name, scorer in self.scorers.items():
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
        """Fit and freeze z-score statistics for models configured with ``normalize: zscore``."""
        raw = self.score_raw(prompts, responses)
        for cfg in self.configs:
            if cfg.normalize == "zscore":
                self.norm_stats[cfg.name] = NormStats.fit(raw[cfg.name])
        return dict(self.norm_stats)
