"""What a reward model scores: (prompt, response) pairs with per-pair metadata and chat turns.

Pairs come either flat (``prompts``, ``responses`` and optional per-pair metadata, as evaluation
and normalisation fitting pass them) or from pool rows (:meth:`Pairs.from_rows`), one pair per
candidate, in row order then candidate order. Pairs from rows carry each row's ``meta`` dict
plus the keys of :data:`RESERVED_KEYS` that say which candidate of which row the pair is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lire_ray.errors import DataError
from lire_ray.pool import PoolRow

#: Keys the scorer adds to every per-pair metadata dict built from a pool row. A row's own
#: metadata may not use them (the row would be ambiguous, so it is refused, never shadowed).
#:
#: * ``prompt_id`` (str): the row's prompt_id.
#: * ``candidate_index`` (int): the candidate's 0-based position in the row's responses.
#: * ``num_candidates`` (int): K, the row's number of candidates.
#: * ``preferred_index`` (int): the row's human-preferred candidate, -1 when it marks none.
#: * ``is_preferred`` (bool): ``candidate_index == preferred_index``.
#: * ``candidate_source`` (str): "human", "dataset" or "policy@e{k}".
RESERVED_KEYS = ("prompt_id", "candidate_index", "num_candidates", "preferred_index",
                 "is_preferred", "candidate_source")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Pairs:
    """N (prompt, response) pairs and what comes with each.

    Attributes:
        prompts: N prompt texts.
        responses: N response texts.
        metadata: N dicts (empty where nothing is known about a pair).
        messages: N chat-turn lists (``[{"role", "content"}, ...]``, the turns before the
            response) or None where the prompt is plain text.
    """

    prompts: list[str]
    responses: list[str]
    metadata: list[dict[str, Any]]
    messages: list[Messages | None]

    def __len__(self) -> int:
        return len(self.responses)

    @classmethod
    def flat(cls, prompts: Sequence[str], responses: Sequence[str],
             metadata: Sequence[Mapping[str, Any] | None] | None = None,
             messages: Sequence[Messages | None] | None = None) -> Pairs:
        """Pairs from parallel lists.

        Args:
            prompts: The prompt of each response.
            responses: The responses.
            metadata: Optional per-pair dicts (None entries mean ``{}``), passed to the
                scorers as given.
            messages: Optional per-pair chat turns (None entries: plain-text prompt).

        Raises:
            DataError: The lists differ in length, or a metadata entry is not a mapping.
        """
        n = len(responses)
        for what, values in (("prompts", prompts), ("metadata", metadata),
                             ("messages", messages)):
            if values is not None and len(values) != n:
                raise DataError(f"{len(values)} {what} for {n} responses", source="reward input")
        metas = []
        for i, m in enumerate(metadata if metadata is not None else [None] * n):
            if m is not None and not isinstance(m, Mapping):
                raise DataError(f"metadata of pair {i} is a {type(m).__name__}, not a dict",
                                source="reward input")
            metas.append(dict(m or {}))
        return cls(prompts=list(prompts), responses=list(responses), metadata=metas,
                   messages=list(messages) if messages is not None else [None] * n)

    @classmethod
    def from_rows(cls, rows: Sequence[PoolRow]) -> Pairs:
        """One pair per candidate of every row, with the row's metadata and chat turns.

        Args:
            rows: Pool rows (rows with no candidates contribute no pairs).

        Returns:
            The pairs, row by row, candidate by candidate.

        Raises:
            DataError: A row's ``metadata`` or ``prompt_messages`` is not valid JSON of the
                right shape, or its metadata uses a key of :data:`RESERVED_KEYS` (names the
                prompt_id and the key).
        """
        prompts, responses, metadata, messages = [], [], [], []
        for row in rows:
            meta = row_metadata(row)
            where = f"prompt_id {row.prompt_id!r}"
            turns = _turns(row, where)
            for j, response in enumerate(row.responses):
                prompts.append(row.prompt)
                responses.append(response)
                messages.append(turns)
                metadata.append({**meta, "candidate_index": j,
                                 "num_candidates": row.num_candidates,
                                 "preferred_index": row.preferred,
                                 "is_preferred": j == row.preferred,
                                 "candidate_source": row.sources[j]})
        return cls(prompts=prompts, responses=responses, metadata=metadata, messages=messages)

    @classmethod
    def from_samples(cls, rows: Sequence[PoolRow], samples: Sequence[Sequence[str]]) -> Pairs:
        """One pair per new response of every row (fresh policy samples, not its candidates),
        with the row's chat turns and :func:`row_metadata` (no candidate keys).

        Args:
            rows: The prompts' pool rows.
            samples: ``samples[i]``: the responses to score for ``rows[i]``.

        Raises:
            DataError: ``samples`` and ``rows`` differ in length, or a row's metadata or chat
                turns are malformed.
        """
        if len(samples) != len(rows):
            raise DataError(f"{len(samples)} sample lists for {len(rows)} rows",
                            source="reward input")
        prompts, responses, metadata, messages = [], [], [], []
        for row, texts in zip(rows, samples):
            meta, turns = row_metadata(row), _turns(row, f"prompt_id {row.prompt_id!r}")
            for text in texts:
                prompts.append(row.prompt)
                responses.append(text)
                metadata.append(dict(meta))
                messages.append(turns)
        return cls(prompts=prompts, responses=responses, metadata=metadata, messages=messages)

    def slice(self, start: int, stop: int) -> Pairs:
        """Pairs ``start`` to ``stop`` (a batch)."""
        return Pairs(self.prompts[start:stop], self.responses[start:stop],
                     self.metadata[start:stop], self.messages[start:stop])


def row_metadata(row: PoolRow) -> dict[str, Any]:
    """The metadata of a pair whose prompt is ``row``'s but whose response is not one of its
    candidates (a fresh policy sample scored flat, at evaluation or for RSO): the row's
    ``meta`` plus ``prompt_id``; the candidate keys of :data:`RESERVED_KEYS` are absent.

    Args:
        row: The prompt's pool row.

    Returns:
        A new dict.

    Raises:
        DataError: The row's metadata is not a JSON object or uses a reserved key.
    """
    where = f"prompt_id {row.prompt_id!r}"
    try:
        meta = row.meta
    except ValueError as exc:
        raise DataError(f"metadata is not valid JSON: {exc}", source=where,
                        field="metadata") from None
    if not isinstance(meta, dict):
        raise DataError("metadata is not a JSON object", source=where, field="metadata")
    clash = sorted(set(meta) & set(RESERVED_KEYS))
    if clash:
        raise DataError(f"metadata uses key(s) {clash}, which reward scoring reserves for the "
                        f"candidate's position ({', '.join(RESERVED_KEYS)}); rename them in "
                        "the data", source=where, field="metadata")
    return {**meta, "prompt_id": row.prompt_id}


def _turns(row: PoolRow, where: str) -> Messages | None:
    if row.prompt_messages is None:
        return None
    try:
        turns = json.loads(row.prompt_messages)
    except ValueError:
        turns = None
    if not isinstance(turns, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in turns):
        raise DataError("is not a JSON array of {role, content} string objects", source=where,
                        field="prompt_messages")
    return turns
