"""Python reward functions (``kind: python``) and the built-in ``label`` reward.

A Python reward function is named ``module:function`` and called once per batch of pairs:

* ``fn(prompts, responses)`` gets the two lists;
* a function with a parameter named ``metadata`` (``fn(prompts, responses, metadata)`` or
  ``fn(prompts, responses, *, metadata=None)``) also gets ``metadata=``: one dict per pair
  (see :mod:`lire_ray.rewards` for its keys), a fresh copy per call, so a function may change
  it freely.

It returns one number per response.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError
from lire_ray.rewards.pairs import Pairs

ScoreFn = Callable[..., Sequence[float]]


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


def metadata_parameter(fn: Callable) -> str | None:
    """How ``fn`` takes per-pair metadata.

    Returns:
        ``"keyword"`` when ``fn`` has a parameter named ``metadata`` that can be passed by
        keyword, ``"positional"`` when it is positional-only (third argument), None when it
        has none (a catch-all ``**kwargs`` does not count: the function did not ask).
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return None
    param = params.get("metadata")
    if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        return None
    return "positional" if param.kind == param.POSITIONAL_ONLY else "keyword"


class PythonReward:
    """A reward function ``module:function``, given metadata when its signature asks.

    Args:
        cfg: The recipe entry (``kind: python``).

    Raises:
        ModelLoadError: The function cannot be imported.
    """

    def __init__(self, cfg: RewardModelConfig):
        assert cfg.path is not None, "RewardModelConfig requires path for kind 'python'"
        self.cfg = cfg
        self.fn = load_python_scorer(cfg.path)
        self.takes_metadata = metadata_parameter(self.fn)

    def score_pairs(self, pairs: Pairs) -> Sequence[float]:
        """The function's scores of ``pairs`` (checked by the caller)."""
        prompts, responses = list(pairs.prompts), list(pairs.responses)
        if self.takes_metadata is None:
            return self.fn(prompts, responses)
        metadata = copy.deepcopy(pairs.metadata)
        if self.takes_metadata == "positional":
            return self.fn(prompts, responses, metadata)
        return self.fn(prompts, responses, metadata=metadata)


class LabelReward:
    """The data's human judgement as a reward (``kind: label``), for training on human
    preferences with no reward model.

    Per pair, from its metadata (pairs built from pool rows have these keys):

    * the row marks a preferred candidate (``preferred_index >= 0``): 1.0 for it, 0.0 for every
      other candidate (policy samples included);
    * else the row's metadata has ``labels``, one bool per candidate (unpaired data such as
      KTO's): 1.0 for true, 0.0 for false;
    * else the pair cannot be scored: :class:`~lire_ray.errors.DataError` naming the prompt_id.

    ``labels`` index the row's candidates as they are in the pool: a row whose candidates were
    replaced by new samples (and which has no preferred candidate) no longer matches its labels,
    which is an error, never a guess.

    Args:
        cfg: The recipe entry (``kind: label``).
    """

    def __init__(self, cfg: RewardModelConfig):
        self.cfg = cfg

    def score_pairs(self, pairs: Pairs) -> list[float]:
        return [label_score(m, self.cfg.name) for m in pairs.metadata]


def label_score(meta: dict[str, Any], name: str = "label") -> float:
    """The ``label`` reward of one pair from its metadata (see :class:`LabelReward`).

    Args:
        meta: The pair's metadata.
        name: The reward model's name, for errors.

    Raises:
        DataError: The pair has neither a preferred candidate nor usable ``labels`` (names the
            prompt_id and the reward model).
    """
    where = f"reward model '{name}', prompt_id {meta.get('prompt_id', '<unknown>')!r}"
    preferred = meta.get("preferred_index", -1)
    index = meta.get("candidate_index")
    if isinstance(preferred, int) and not isinstance(preferred, bool) and preferred >= 0:
        return 1.0 if index == preferred else 0.0
    if index is None and "prompt_id" in meta:
        raise DataError("the response is not one of the row's candidates (a new sample), so "
                        "the label reward has no human judgement of it", source=where)
    if "labels" not in meta:
        if "prompt_id" not in meta:  # a flat pair, scored without its row
            raise DataError("the pair has no row context: score pool rows, or pass metadata "
                            "with 'preferred_index' and 'candidate_index', or 'labels', "
                            "'candidate_index' and 'num_candidates'", source=where)
        raise DataError("the row has neither a preferred candidate nor 'labels' in its "
                        "metadata, so the label reward cannot score it", source=where)
    labels = meta["labels"]
    k = meta.get("num_candidates")
    if not isinstance(labels, list) or not all(isinstance(v, bool) for v in labels):
        raise DataError(f"'labels' must be a list of true/false, got {labels!r}", source=where,
                        field="metadata.labels")
    if not isinstance(index, int) or len(labels) != k or not 0 <= index < len(labels):
        raise DataError(f"'labels' has {len(labels)} entries for {k} candidates (candidate "
                        f"{index}); labels must match the row's candidates one to one",
                        source=where, field="metadata.labels")
    return 1.0 if labels[index] else 0.0
