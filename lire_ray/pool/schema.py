"""Pool schema (see :mod:`lire_ray.pool` for the field-by-field description), the
:class:`PoolRow` Python row type, and row validation."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lire_ray.errors import DataError

SCHEMA_VERSION = 2
SCHEMA_VERSION_KEY = b"lire_ray.pool.schema_version"
HUMAN = "human"
DATASET = "dataset"

_REWARD_TYPE = pa.struct([pa.field("name", pa.string(), nullable=False),
                          pa.field("scores", pa.list_(pa.float64()), nullable=False)])
POOL_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("prompt_messages", pa.string(), nullable=True),
        pa.field("responses", pa.list_(pa.string()), nullable=False),
        pa.field("sources", pa.list_(pa.string()), nullable=False),
        pa.field("policy_version", pa.list_(pa.int32()), nullable=False),
        pa.field("rewards", pa.list_(_REWARD_TYPE), nullable=False),
        pa.field("preferred", pa.int32(), nullable=False),
        pa.field("ref_logps", pa.list_(pa.float64()), nullable=True),
        pa.field("evolve_step", pa.int32(), nullable=False),
        pa.field("prompt_text", pa.string(), nullable=True),
        pa.field("metadata", pa.string(), nullable=True),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


def policy_source(version: int) -> str:
    """Source tag of a candidate sampled from the policy after self-enhancement step ``version``.

    Args:
        version: Policy version k (self-enhancement step of Algorithm 1 in the LIRE paper).

    Returns:
        ``"policy@e{k}"``.
    """
    return f"policy@e{int(version)}"


def source_version(source: str) -> int:
    """Policy version encoded in a source tag.

    Args:
        source: A candidate's source tag.

    Returns:
        k for ``"policy@e{k}"``, -1 for anything else ("human", "dataset", ...).
    """
    tail = source[len("policy@e"):] if source.startswith("policy@e") else ""
    return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class PoolRow:
    """One prompt with its K candidates; field meanings are those of ``POOL_SCHEMA``.

    Sequences are stored as tuples; ``rewards`` maps reward-model name to K scores and should
    be treated as read-only (it makes the row unhashable). Invariants are checked by
    :func:`validate_table`, which every writer and reader runs.
    """

    prompt_id: str
    prompt: str
    responses: tuple[str, ...]
    sources: tuple[str, ...]
    policy_version: tuple[int, ...]
    rewards: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    preferred: int = -1
    ref_logps: tuple[float, ...] | None = None
    evolve_step: int = 0
    prompt_messages: str | None = None
    prompt_text: str | None = None
    metadata: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("responses", tuple(self.responses))
        put("sources", tuple(self.sources))
        put("policy_version", tuple(int(v) for v in self.policy_version))
        put("rewards", {str(k): tuple(float(x) for x in v) for k, v in self.rewards.items()})
        if self.ref_logps is not None:
            put("ref_logps", tuple(float(x) for x in self.ref_logps))

    @property
    def num_candidates(self) -> int:
        """K, the number of candidates."""
        return len(self.responses)

    @property
    def is_human(self) -> tuple[bool, ...]:
        """Per candidate, whether its source is "human"."""
        return tuple(s == HUMAN for s in self.sources)

    @property
    def human_reference_index(self) -> int | None:
        """The candidate a policy's answer is compared with (win rates): the preferred one when
        the data marks one and it is human-written (HH: the chosen response), else the first
        human-written candidate, else None."""
        if 0 <= self.preferred < self.num_candidates and self.sources[self.preferred] == HUMAN:
            return self.preferred
        return self.sources.index(HUMAN) if HUMAN in self.sources else None

    @property
    def human_reference(self) -> str | None:
        """The text of :attr:`human_reference_index`, or None."""
        i = self.human_reference_index
        return None if i is None else self.responses[i]

    @property
    def meta(self) -> dict[str, Any]:
        """The row's ``metadata`` JSON object as a dict (empty when there is none)."""
        return json.loads(self.metadata) if self.metadata else {}


def rows_to_table(rows: Iterable[PoolRow], *, source: str = "<rows>") -> pa.Table:
    """Build a validated pool table from rows.

    Args:
        rows: Pool rows, one per prompt.
        source: Name used in error messages.

    Returns:
        A table with schema ``POOL_SCHEMA``.

    Raises:
        DataError: A row breaks a pool invariant (names the row index and field).
    """
    rows = list(rows)
    cols: dict[str, list[Any]] = {f.name: [] for f in POOL_SCHEMA}
    for r in rows:
        cols["prompt_id"].append(r.prompt_id)
        cols["prompt"].append(r.prompt)
        cols["prompt_messages"].append(r.prompt_messages)
        cols["responses"].append(list(r.responses))
        cols["sources"].append(list(r.sources))
        cols["policy_version"].append(list(r.policy_version))
        cols["rewards"].append([{"name": k, "scores": list(v)} for k, v in r.rewards.items()])
        cols["preferred"].append(r.preferred)
        cols["ref_logps"].append(None if r.ref_logps is None else list(r.ref_logps))
        cols["evolve_step"].append(r.evolve_step)
        cols["prompt_text"].append(r.prompt_text)
        cols["metadata"].append(r.metadata)
    try:
        table = pa.Table.from_pydict(cols, schema=POOL_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
        raise DataError(f"rows do not fit the pool schema: {exc}", source=source) from exc
    return validate_table(table, source)


def table_to_rows(table: pa.Table) -> list[PoolRow]:
    """Convert a pool table to rows.

    Args:
        table: A table with the pool columns, e.g. from :func:`~lire_ray.pool.read_pool`.

    Returns:
        One :class:`PoolRow` per table row, in order.
    """
    out = []
    for d in table.to_pylist():
        d["rewards"] = {r["name"]: r["scores"] for r in d["rewards"]}
        out.append(PoolRow(**d))
    return out


def _plain(t: pa.DataType) -> pa.DataType:
    """Type with list child names dropped, so Parquet's "element" equals Arrow's "item"."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_plain(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in t])
    return t


def validate_table(table: pa.Table, source: str, *, _seen: dict | None = None) -> pa.Table:
    """Check a table against ``POOL_SCHEMA`` and every row invariant; return it conformed.

    Args:
        table: Candidate table, one row per prompt.
        source: File or directory named in errors.
        _seen: prompt_id -> "source row i", shared across the files of one pool.

    Returns:
        The table cast to ``POOL_SCHEMA`` (column nullability and schema metadata).

    Raises:
        DataError: Missing/unexpected column or wrong type (names the field), a null where none
            is allowed, or a row breaking an invariant (names the 0-based row and field).
    """
    names = [f.name for f in POOL_SCHEMA]
    for name in table.column_names:
        if name not in names:
            raise DataError("unexpected column", source=source, field=name)
    for f in POOL_SCHEMA:
        if f.name not in table.column_names:
            raise DataError("missing column", source=source, field=f.name)
        got = table.schema.field(f.name).type
        if _plain(got) != _plain(f.type):
            raise DataError(f"has type {got}, expected {f.type}", source=source, field=f.name)
    table = table.select(names)
    seen = {} if _seen is None else _seen
    for i, row in enumerate(table.to_pylist()):
        _check_row(row, source, i)
        pid = row["prompt_id"]
        if pid in seen:
            raise DataError(f"duplicate prompt_id {pid!r} (first at {seen[pid]})",
                            source=source, row=i, field="prompt_id")
        seen[pid] = f"{source} row {i}"
    return table.cast(POOL_SCHEMA)


def _check_row(r: dict, source: str, i: int) -> None:
    def bad(fld: str, msg: str):
        raise DataError(msg, source=source, row=i, field=fld)

    for fld in ("prompt_id", "prompt", "responses", "sources", "policy_version", "rewards",
                "preferred", "evolve_step"):
        if r[fld] is None:
            bad(fld, "is null")
    if not r["prompt_id"]:
        bad("prompt_id", "is empty")
    if not r["prompt"].strip():
        bad("prompt", "is empty")
    # K = 0 is a prompt-only row: self-enhancement samples its candidates.
    k = len(r["responses"])
    for fld in ("responses", "sources", "policy_version"):
        if len(r[fld]) != k:
            bad(fld, f"has {len(r[fld])} entries for {k} responses")
        if any(v is None for v in r[fld]):
            bad(fld, "contains null")
    names = set()
    for entry in r["rewards"]:
        name, scores = entry["name"], entry["scores"]
        if not name or name in names:
            bad("rewards", f"reward-model name {name!r} is empty or repeated")
        names.add(name)
        _check_floats(scores, k, f"rewards.{name}", bad)
    if not -1 <= r["preferred"] < k:
        bad("preferred", f"{r['preferred']} is not -1 or a candidate index below {k}")
    if r["ref_logps"] is not None:
        _check_floats(r["ref_logps"], k, "ref_logps", bad)
    if r["evolve_step"] < 0:
        bad("evolve_step", f"{r['evolve_step']} is negative")
    if r["prompt_messages"] is not None:
        try:
            msgs = json.loads(r["prompt_messages"])
        except ValueError:
            msgs = None
        if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in msgs):
            bad("prompt_messages", "is not a JSON array of {role, content} string objects")
    if r["metadata"] is not None:
        try:
            meta = json.loads(r["metadata"])
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            bad("metadata", "is not a JSON object")


def _check_floats(values, k, fld, bad) -> None:
    if values is None or len(values) != k:
        bad(fld, f"has {0 if values is None else len(values)} scores for {k} responses")
    for j, v in enumerate(values):
        if v is None or not math.isfinite(v):
            bad(fld, f"score {j} is {v} (must be finite)")
