"""Preference pairs for reward-model training, formed within each pool row.

A pool row holds one prompt with K candidates. What ranks them is either the data's own
judgement (``preference: label``: the row's ``preferred`` candidate over every other one, or,
for unpaired data, its metadata ``labels``, true over false) or a reward model's scores in the
pool (``preference: <name>``). Pairs are formed with the pairwise losses' schemes
(:func:`lire_ray.losses._common.pair_weights`: ``best_vs_rest``, ``best_vs_worst``,
``all_ranked``); a tie carries no preference and never pairs.

Each pair becomes one pool row with two candidates, chosen first (``preferred = 0``), and the
ranking scores of the two under the reward name :data:`PREFERENCE`. So the pairs travel through
Ray Data and the trainer's shard cache like any pool, a micro-batch holds whole pairs, and the
schedule's length (pairs, not prompts) is known before training starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lire_ray.errors import DataError
from lire_ray.pool import PoolRow, rows_to_table, table_to_rows

#: Reward name under which a pair row keeps the two candidates' ranking scores.
PREFERENCE = "preference"
#: The ``rm_train.preference`` value that ranks candidates by the data's labels.
LABEL = "label"


def candidate_ranking(row: PoolRow, preference: str) -> list[float] | None:
    """Scores that rank ``row``'s candidates (higher is preferred), or None when it has none.

    Args:
        row: A pool row.
        preference: ``label`` or the name of a reward model in the row's ``rewards``.

    Returns:
        With ``label``: 1 for the preferred candidate and 0 for the others, else 1/0 from the
        metadata ``labels`` (one bool per candidate); with a reward name: its scores.

    Raises:
        DataError: Metadata ``labels`` that do not match the candidates (names the prompt_id).
    """
    if preference != LABEL:
        scores = row.rewards.get(preference)
        return None if scores is None else list(scores)
    if 0 <= row.preferred < row.num_candidates:
        return [float(j == row.preferred) for j in range(row.num_candidates)]
    labels = row.meta.get("labels") if row.metadata else None
    if labels is None:
        return None
    if not isinstance(labels, list) or len(labels) != row.num_candidates or not all(
            isinstance(v, bool) for v in labels):
        raise DataError(f"'labels' must be {row.num_candidates} true/false values, one per "
                        f"candidate, got {labels!r}", source=f"prompt_id {row.prompt_id!r}",
                        field="metadata.labels")
    return [float(v) for v in labels]


def _field(preference: str) -> str:
    return "preferred" if preference == LABEL else f"rewards.{preference}"


@dataclass(frozen=True)
class PairStats:
    """How a pool turned into pairs.

    Attributes:
        rows: Rows read.
        rows_with_pairs: Rows that gave at least one pair.
        no_preference: Rows skipped because nothing ranks their candidates.
        single_candidate: Rows skipped because they have fewer than two candidates.
        ties_only: Rows skipped because every candidate ranks the same.
        pairs: Pairs formed.
    """

    rows: int
    rows_with_pairs: int
    no_preference: int
    single_candidate: int
    ties_only: int
    pairs: int


def row_pairs(scores: Sequence[float], scheme: str) -> list[tuple[int, int]]:
    """The (chosen, rejected) candidate indices of one ranked row under a pair scheme.

    Args:
        scores: K ranking scores.
        scheme: ``best_vs_rest``, ``best_vs_worst`` or ``all_ranked``.

    Returns:
        Index pairs ``(i, j)`` with ``scores[i] > scores[j]``, in row-major order.
    """
    import torch

    from lire_ray.losses._common import pair_weights

    if len(scores) < 2:
        return []
    r = torch.tensor([list(scores)], dtype=torch.float64)
    w = pair_weights(r, torch.ones_like(r, dtype=torch.bool), scheme)[0]
    return [(int(i), int(j)) for i, j in w.nonzero().tolist()]


def preference_pairs(table: pa.Table, *, source: str, preference: str,
                     scheme: str) -> tuple[pa.Table, PairStats]:
    """Turn pool rows into pair rows (chosen first) for reward-model training.

    Args:
        table: Pool rows.
        source: The pool's name, for errors.
        preference: ``label`` or a reward name (see :func:`candidate_ranking`).
        scheme: The pair scheme (see :func:`row_pairs`).

    Returns:
        A pool table of pair rows (``prompt_id`` ``"<row id>/<i>>j"``, ``responses`` [chosen,
        rejected], ``preferred`` 0, ``rewards`` {``preference``: the two ranking scores},
        metadata ``source_prompt_id``), and the counts of what was kept and skipped.

    Raises:
        DataError: No pair at all; the message names the pool and the field at fault (a pool
            without the preference: ``preferred`` / ``rewards.<name>``; rows of one candidate:
            ``responses``; only ties: the preference field).
    """
    rows = table_to_rows(table)
    out: list[PoolRow] = []
    none = single = ties = kept = 0
    for row in rows:
        if row.num_candidates < 2:
            single += 1
            continue
        scores = candidate_ranking(row, preference)
        if scores is None:
            none += 1
            continue
        pairs = row_pairs(scores, scheme)
        if not pairs:
            ties += 1
            continue
        kept += 1
        meta = json.dumps({"source_prompt_id": row.prompt_id})
        for i, j in pairs:
            out.append(PoolRow(
                prompt_id=f"{row.prompt_id}/{i}>{j}", prompt=row.prompt,
                prompt_messages=row.prompt_messages,
                responses=(row.responses[i], row.responses[j]),
                sources=(row.sources[i], row.sources[j]),
                policy_version=(row.policy_version[i], row.policy_version[j]),
                rewards={PREFERENCE: (scores[i], scores[j])}, preferred=0, metadata=meta))
    stats = PairStats(len(rows), kept, none, single, ties, len(out))
    if not out:
        raise DataError(_no_pairs_message(stats, preference), source=source,
                        field=_no_pairs_field(stats, preference))
    return rows_to_table(out, source=source), stats


def _no_pairs_field(stats: PairStats, preference: str) -> str:
    if stats.single_candidate == stats.rows:
        return "responses"
    return _field(preference)


def _no_pairs_message(stats: PairStats, preference: str) -> str:
    if stats.rows == 0:
        return "holds no rows, so no preference pair can be formed"
    if stats.single_candidate == stats.rows:
        return ("every row has fewer than two candidates, so no preference pair can be formed; "
                "a reward model trains on two or more ranked candidates per prompt")
    what = ("a preferred candidate (preferred >= 0) or metadata 'labels'" if preference == LABEL
            else f"scores of reward model '{preference}' (score the pool with jobs/score.py, "
            "or set rm_train.preference)")
    if stats.no_preference + stats.single_candidate == stats.rows:
        return (f"no row has {what}, so no preference pair can be formed "
                f"({stats.no_preference} row(s) without, {stats.single_candidate} with one "
                "candidate)")
    return (f"every ranked row ranks all its candidates the same ({stats.ties_only} row(s) of "
            "ties only), so no preference pair can be formed")


def split_rows(table: pa.Table, fraction: float, *, seed: int,
               source: str) -> tuple[pa.Table, pa.Table]:
    """Hold out a seeded share of a pool's rows (prompts, before pairing: no prompt's pairs
    fall on both sides).

    Args:
        table: Pool rows.
        fraction: Share of rows held out, in [0, 1); at least one row when above 0.
        seed: Seed of the split.
        source: The pool's name, for errors.

    Returns:
        ``(train rows, held-out rows)``.

    Raises:
        DataError: The split would leave no training row.
    """
    n = table.num_rows
    held = 0 if fraction <= 0 else max(1, round(fraction * n))
    if held >= n:
        raise DataError(f"has {n} row(s): holding out {fraction:g} of them leaves none to "
                        "train on; give a held-out pool (eval_data=...) or lower "
                        "rm_train.eval_fraction", source=source, field="rm_train.eval_fraction")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return table.take(np.sort(order[held:])), table.take(np.sort(order[:held]))
