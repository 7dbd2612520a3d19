"""The training and held-out pairs of a reward-model run, built in the driver before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.rm.pairs import PairStats, preference_pairs, split_rows


@dataclass(frozen=True)
class PairData:
    """Pair rows (chosen first, :mod:`lire_ray.rm.pairs`) to train and to evaluate on.

    Attributes:
        train: Training pairs, shuffled with ``train.seed`` (a prompt's pairs spread over
            micro-batches).
        heldout: Held-out pairs, from prompts that no training pair has.
        facts: What the report states about the data (pools, rows, pairs, skipped rows).
    """

    train: pa.Table
    heldout: pa.Table
    facts: dict[str, Any]


def _rows(spec: str) -> pa.Table:
    from lire_ray.inputs import load_prompt_rows
    from lire_ray.pool import rows_to_table

    return rows_to_table(load_prompt_rows(spec), source=spec)


def _skipped(stats: PairStats) -> str:
    return (f"{stats.no_preference} without preference, {stats.single_candidate} with one "
            f"candidate, {stats.ties_only} ties only")


def load_pair_data(recipe: Recipe) -> PairData:
    """Read ``data.train`` (a pool directory or a built-in set), hold out ``data.eval`` or a
    seeded ``rm_train.eval_fraction`` of its rows, cut to ``data.max_prompts`` /
    ``data.eval_prompts`` rows, and form the preference pairs of each side.

    Raises:
        ConfigError: Neither ``data.eval`` nor a positive ``rm_train.eval_fraction``.
        DataError: A side gives no pair (names the pool and field, see
            :func:`~lire_ray.rm.pairs.preference_pairs`), or the split leaves no training row.
        PoolIntegrityError: A pool does not match its manifest.
    """
    rm, data = recipe.rm_train, recipe.data
    spec = data.train
    table = _rows(spec)
    if data.eval:
        train, heldout, eval_spec = table, _rows(data.eval), data.eval
    elif rm.eval_fraction > 0:
        train, heldout = split_rows(table, rm.eval_fraction, seed=recipe.train.seed, source=spec)
        eval_spec = f"{spec} (held-out {rm.eval_fraction:g} of its rows)"
    else:
        raise ConfigError("reward-model training needs held-out pairs: set data.eval "
                          "(eval_data=POOL) or rm_train.eval_fraction > 0")
    rng = np.random.default_rng(recipe.train.seed)
    if data.max_prompts is not None:
        train = train.take(np.sort(rng.permutation(train.num_rows)[:data.max_prompts]))
    if data.eval_prompts is not None:
        heldout = heldout.slice(0, data.eval_prompts)
    train_pairs, ts = preference_pairs(train, source=spec, preference=rm.preference,
                                       scheme=rm.pairs)
    eval_pairs, es = preference_pairs(heldout, source=eval_spec, preference=rm.preference,
                                      scheme=rm.pairs)
    train_pairs = train_pairs.take(rng.permutation(train_pairs.num_rows))
    facts = {"training pool": spec, "held-out pool": eval_spec,
             "training rows (prompts)": ts.rows, "training pairs": ts.pairs,
             "training rows skipped": _skipped(ts), "held-out rows (prompts)": es.rows,
             "held-out pairs": es.pairs, "held-out rows skipped": _skipped(es)}
    return PairData(train_pairs, eval_pairs, facts)
