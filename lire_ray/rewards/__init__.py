"""Reward models: several at once, each mapping (prompt, response) pairs to one float each.

Kinds (``RewardModelConfig.kind``):

* ``hf`` (:mod:`~lire_ray.rewards.hf`): an ``AutoModelForSequenceClassification`` (hub id at
  an optional ``revision``, or a local directory) whose first logit is the reward. Weights:
  ``model.safetensors`` when present, else ``pytorch_model.bin`` read with
  ``torch.load(weights_only=True)``, which refuses a file that would run code. The input
  template is chosen per model: ``plain`` (prompt + response as one text), ``openassistant``
  (``<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>``), ``qa`` (a
  question/answer text pair, as DeBERTa reward models expect) and ``chat`` (the reward model's
  own chat template over the prompt's chat turns, a row's ``prompt_messages``, or else one user
  turn, followed by an assistant turn holding the response). Inputs longer than ``max_length``
  are truncated and counted.
* ``python`` (:mod:`~lire_ray.rewards.functions`): a function ``module:function``.
* ``remote`` (:mod:`~lire_ray.rewards.remote`): an HTTP server speaking OpenRLHF's
  ``serve_rm`` protocol, with batching, a timeout and bounded retries.
* ``label``: the data's human judgement, for training from preferences with no reward model:
  1 for a row's preferred candidate and 0 for the others; in rows without one, 1/0 from the
  row's ``labels`` metadata (one bool per candidate); neither is an error naming the prompt_id.

Metadata convention (Python functions, ``label``, ``remote``): every pair has a metadata dict.
Scoring pool rows (:meth:`RewardSet.score_rows`) builds it as the row's ``meta`` (its
``metadata`` JSON object: reference ``answer``, ``labels``, extra dataset columns) plus the
keys of :data:`~lire_ray.rewards.pairs.RESERVED_KEYS`: ``prompt_id``, ``candidate_index``
(0-based), ``num_candidates`` (K), ``preferred_index`` (the row's ``preferred``, -1 for none),
``is_preferred`` and ``candidate_source``. A row whose own metadata uses one of these keys is
refused. New responses to a row's prompt (:meth:`RewardSet.score_samples`: policy samples at
evaluation or for RSO) get the row's ``meta`` plus ``prompt_id`` only. Flat scoring (:meth:`RewardSet.score`) passes the per-pair dicts the caller gives, or
``{}`` for each pair. A Python function receives the list of these dicts (a fresh copy per
call) only when it has a parameter named ``metadata``, passed by keyword: ``fn(prompts,
responses)`` is called as before, ``fn(prompts, responses, metadata)`` and ``fn(prompts,
responses, *, metadata=None)`` get ``metadata=[{...}, ...]`` in pair order. A remote server gets
each pair's ``answer`` as its OpenRLHF ``labels`` entry.

Normalisation: a model with ``normalize: zscore`` is scored with statistics fitted once (on
the initial pool) and then frozen, so rewards of different Evolve steps stay comparable
(:mod:`~lire_ray.rewards.norm`). Scoring such a model (:meth:`RewardSet.score`,
:meth:`RewardSet.score_rows`) before its statistics are fitted or loaded is a
:class:`~lire_ray.errors.ConfigError`, never a silent fallback to raw scores;
:meth:`RewardSet.score_raw` is always raw.
"""

from lire_ray.rewards.functions import LabelReward, PythonReward, load_python_scorer
from lire_ray.rewards.hf import HFRewardModel, format_reward_input
from lire_ray.rewards.norm import (
    NORM_METADATA_KEY,
    NormStats,
    load_norm_stats,
    save_norm_stats,
    stats_from_dict,
    stats_to_dict,
)
from lire_ray.rewards.pairs import RESERVED_KEYS, Pairs, row_metadata
from lire_ray.rewards.remote import RemoteRewardModel
from lire_ray.rewards.reward_set import RewardSet, build_scorer

__all__ = ["NORM_METADATA_KEY", "RESERVED_KEYS", "HFRewardModel", "LabelReward", "NormStats",
           "Pairs", "PythonReward", "RemoteRewardModel", "RewardSet", "build_scorer",
           "format_reward_input", "load_norm_stats", "load_python_scorer", "row_metadata",
           "save_norm_stats", "stats_from_dict", "stats_to_dict"]
