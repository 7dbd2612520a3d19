"""What a comparison trains on: a prepared pool's own candidates, or the base policy's samples.

Two modes (``jobs/compare.py --candidates``):

- ``pool`` (the paper's offline setting, Table 2): every loss trains on exactly the candidates of
  the pool in ``data.train`` (HH pairs from ``jobs/prepare.py --format hh``, a TRL preference
  set, any listwise pool), with the scores it carries for the training reward, or with the
  ``kind: label`` reward computed here from its labels. No sampler is started until every loss
  is trained; samplers start afterwards, for the held-out evaluation only.
- ``sample``: the base policy samples K candidates per training prompt (human-written ones
  kept, paper sec. 4.7), every reward model scores them, and every loss trains on that pool
  (as paper sec. 4.4 / Table 9 augment the data with the base model's samples).

Everything here runs in the driver before Ray starts, so a pool that cannot be trained on fails
in a few lines naming the file and the field.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError, DataError
from lire_ray.inputs import load_prompt_rows
from lire_ray.pool import PoolRow

log = logging.getLogger(__name__)

MODES = ("pool", "sample")


def default_mode(recipe: Recipe) -> str:
    """``pool`` when ``data.train`` is a pool directory, ``sample`` for a builtin prompt set
    (whose rows carry one unscored human answer, nothing to compare losses on)."""
    return "sample" if recipe.data.train.startswith("builtin:") else "pool"


def training_rows(recipe: Recipe, mode: str) -> list[PoolRow]:
    """The training rows of a comparison, checked for ``mode``.

    Args:
        recipe: The recipe (``data.train``, ``data.max_prompts``, the training reward).
        mode: ``pool`` or ``sample``.

    Returns:
        The rows; in ``pool`` mode with the training reward's scores on every candidate.

    Raises:
        ConfigError: Unknown mode, or ``pool`` mode on a builtin prompt set.
        DataError: ``pool`` mode and a row without candidates, or without scores of the
            training reward (the message names the pool, the field and the rewards it has).
    """
    if mode not in MODES:
        raise ConfigError(f"--candidates must be one of {list(MODES)}, got {mode!r}")
    spec = recipe.data.train
    if mode == "pool" and spec.startswith("builtin:"):
        raise ConfigError(f"--candidates pool trains on a prepared pool's own candidates, but "
                          f"data.train is the prompt set '{spec}'; give a pool directory "
                          "(jobs/prepare.py) or use --candidates sample")
    rows = load_prompt_rows(spec, recipe.data.max_prompts)
    return check_pool_rows(rows, recipe, source=spec) if mode == "pool" else rows


def check_pool_rows(rows: Sequence[PoolRow], recipe: Recipe, *, source: str) -> list[PoolRow]:
    """Refuse rows a comparison cannot train on; add ``kind: label`` training scores.

    Args:
        rows: The pool's rows.
        recipe: The recipe (its training reward).
        source: The pool, named in errors.

    Returns:
        The rows, each with scores of the training reward.

    Raises:
        DataError: A row without candidates, or the training reward's scores missing (and
            not computable from labels).
    """
    empty = [r.prompt_id for r in rows if r.num_candidates == 0]
    if empty:
        raise DataError(f"{len(empty)} of {len(rows)} rows have no candidates (prompt_id "
                        f"{', '.join(map(repr, empty[:3]))}{', ...' if len(empty) > 3 else ''}); "
                        "training on a pool's own candidates needs them: prepare a pool with "
                        "candidates, or sample them with --candidates sample", source=source,
                        field="responses")
    name = recipe.train_reward_name
    cfg = next((rm for rm in recipe.rewards if rm.name == name), None)
    if cfg is not None and cfg.kind == "label":
        rows = label_scores(rows, cfg)
    missing = [r for r in rows if name not in r.rewards]
    if missing:
        have = sorted({n for r in rows for n in r.rewards})
        raise DataError(f"{len(missing)} of {len(rows)} rows have no scores from the training "
                        f"reward '{name}' (evolve.train_reward); the pool has "
                        f"{have or 'no scores at all'}. Score it with jobs/score.py, set "
                        "evolve.train_reward to one it has, or train on its labels with a "
                        "reward of kind label", source=source, field=f"rewards.{name}")
    single = sum(r.num_candidates == 1 for r in rows)
    if single:
        log.warning("%d of %d rows have one candidate: pairwise losses skip them and LIRE's "
                    "gradient on them is zero", single, len(rows))
    return list(rows)


def label_scores(rows: Sequence[PoolRow], cfg) -> list[PoolRow]:
    """Rows with the ``kind: label`` reward's scores of their own candidates added (1 for the
    preferred or true-labelled candidate, else 0).

    Raises:
        DataError: A row has neither a preferred candidate nor labels (names the prompt_id).
    """
    from lire_ray.rewards import RewardSet

    scored = RewardSet([cfg]).score_rows(rows)
    return [replace(r, rewards={**r.rewards, cfg.name: s.rewards[cfg.name]})
            for r, s in zip(rows, scored, strict=True)]


def pool_summary(rows: Sequence[PoolRow]) -> dict:
    """Prompts, candidates, K per row (histogram) and candidate sources of a training pool."""
    ks = Counter(r.num_candidates for r in rows)
    return {"prompts": len(rows), "candidates": sum(r.num_candidates for r in rows),
            "k_min": min(ks, default=0), "k_max": max(ks, default=0),
            "k_rows": {str(k): n for k, n in sorted(ks.items())},
            "sources": dict(Counter(s.split("@")[0] for r in rows for s in r.sources))}
