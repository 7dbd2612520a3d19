"""Turn an input dataset into a candidate pool on disk (the library side of ``jobs/prepare.py``).

Bad rows (see :class:`~lire_ray.adapters.records.BadRow`) either stop the conversion
(``on_bad_row="error"``, the default; the error names file, row and field) or are skipped
(``on_bad_row="skip"``), in which case each one is listed in the report and counted by reason
in the pool manifest. Duplicate ``prompt_id`` values are bad rows (the later row is the bad
one). A problem with the input as a whole (unreadable file, an unknown ``--columns`` source,
TRL records of two types) stops the conversion in both modes. Nothing is written unless the
whole input converts, and the pool is written atomically, so a failed preparation leaves no
output directory behind.

Inputs are opened by :mod:`lire_ray.adapters.inputs` (a file, a folder of shards, a saved
``datasets`` folder, or a hub id from the local cache); each record names its own file and
row, so errors about a shard name the shard.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lire_ray.adapters.builtin import BUILTIN_SETS, builtin_rows
from lire_ray.adapters.formats import PARSERS, RecordParser, merge_tldr
from lire_ray.adapters.inputs import open_input, parse_columns, rename_columns
from lire_ray.adapters.records import BadRow, Fields, Record, source_field
from lire_ray.adapters.trl import TrlParser
from lire_ray.errors import ConfigError, DataError
from lire_ray.pool import PoolRow, check_pool_target, write_pool

#: ``builtin``: a built-in prompt set named as the input (``--input builtin:chitchat``).
FORMATS = (*PARSERS, "trl", "builtin")
ON_BAD_ROW = ("error", "skip")


@dataclass(frozen=True)
class SkippedRow:
    """One input row left out under ``on_bad_row="skip"``."""

    row: int | None
    field: str | None
    reason: str
    message: str
    source: str | None = None


@dataclass
class PrepareReport:
    """What a preparation read, wrote and skipped.

    Attributes:
        source: Input name.
        output: Pool directory written (None for :func:`convert_records`).
        input_rows: Records read (including bad ones).
        num_rows: Pool rows (prompts) produced.
        num_candidates: Candidates over all pool rows.
        skipped: Rows left out, in input order.
        details: What the format learned about the input, for the manifest (``trl``:
            ``dataset_type`` and ``conversational``).
    """

    source: str
    output: str | None = None
    input_rows: int = 0
    num_rows: int = 0
    num_candidates: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def skipped_by_reason(self) -> dict[str, list[int | None]]:
        out: dict[str, list[int | None]] = {}
        for s in self.skipped:
            out.setdefault(s.reason, []).append(s.row)
        return out

    def summary(self, max_rows_listed: int = 10) -> str:
        """A few human-readable lines: counts, then each skip reason with its first rows."""
        lines = [f"{self.source}: read {self.input_rows} rows, wrote {self.num_rows} prompts "
                 f"with {self.num_candidates} candidates" + (f" to {self.output}"
                                                              if self.output else "")]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad rows:")
            where: dict[str, list[str]] = {}
            for s in self.skipped:  # rows of other files (shards) are shown as file:row
                tag = str(s.row) if s.source in (None, self.source) \
                    else f"{Path(s.source).name}:{s.row}"
                where.setdefault(s.reason, []).append(tag)
            for reason, rows in sorted(where.items()):
                shown = ", ".join(rows[:max_rows_listed])
                more = f", ... ({len(rows) - max_rows_listed} more)" \
                    if len(rows) > max_rows_listed else ""
                lines.append(f"  {reason}: {len(rows)} (rows {shown}{more})")
            first = self.skipped[0]
            lines.append(f"  first: {first.message}")
        return "\n".join(lines)


def convert_records(fmt: str, records: Iterable[Record | tuple[int, dict | BadRow]], *,
                    source: str, on_bad_row: str = "error", limit: int | None = None,
                    columns: str | Mapping[str, str] | None = None,
                    reward_name: str = "given") -> tuple[list[PoolRow], PrepareReport]:
    """Convert raw records of one format to pool rows.

    Args:
        fmt: One of ``FORMATS``.
        records: :class:`~lire_ray.adapters.records.Record` items as produced by
            :func:`~lire_ray.adapters.inputs.open_input`, or (row number, record or BadRow)
            pairs, which are taken to come from ``source``.
        source: Input name for messages.
        on_bad_row: "error" (raise the first bad row) or "skip" (record it and go on).
        limit: Read at most this many records.
        columns: ``--columns`` renaming, ``"prompt=question,..."`` or {format name: source
            column}; errors name fields by their source names.
        reward_name: ``trl`` only: the reward name of ``score_*`` columns.

    Returns:
        (pool rows in input order, report).

    Raises:
        ConfigError: Unknown format or on_bad_row value, a negative limit, bad ``columns``.
        DataError: A bad row under ``on_bad_row="error"``, a problem with the whole input, or
            no valid rows at all.
    """
    if fmt not in FORMATS or fmt == "builtin":
        raise ConfigError(f"unknown record format {fmt!r}; choose one of "
                          f"{', '.join(f for f in FORMATS if f != 'builtin')}")
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    columns = parse_columns(columns)
    report = PrepareReport(source=source)

    def on_bad(err: BadRow) -> None:
        if on_bad_row == "error":
            raise err
        report.skipped.append(SkippedRow(err.row, err.field, err.reason, str(err), err.source))

    trl = TrlParser(reward_name, columns) if fmt == "trl" else None
    parse: RecordParser = PARSERS[fmt] if trl is None else trl
    stream = (r if len(r) == 3 else Record(source, *r) for r in records)
    items: list[tuple[str, int, PoolRow]] = []
    for src, row_no, record in itertools.islice(rename_columns(stream, columns), limit):
        report.input_rows += 1
        try:
            if isinstance(record, BadRow):
                raise record
            items.append((src, row_no, parse(Fields(record, src, row_no, columns))))
        except BadRow as err:
            on_bad(err)
    if fmt == "tldr":
        items = merge_tldr(items, on_bad)
    elif trl is not None:
        items = trl.finish(items, on_bad)
        report.details = trl.details
    rows: list[PoolRow] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for src, row_no, row in items:
        if row.prompt_id in first_seen:
            first_src, first_row = first_seen[row.prompt_id]
            where = f"row {first_row}" + ("" if first_src == src else f" of {first_src}")
            on_bad(BadRow("duplicate_prompt_id", f"duplicate prompt_id {row.prompt_id!r} (first "
                          f"at {where})", source=src, row=row_no,
                          field=source_field("prompt_id", columns)))
            continue
        first_seen[row.prompt_id] = (src, row_no)
        rows.append(row)
    if not rows:
        raise DataError(f"no valid rows (read {report.input_rows}, skipped "
                        f"{len(report.skipped)})", source=source)
    report.num_rows = len(rows)
    report.num_candidates = sum(r.num_candidates for r in rows)
    return rows, report


def prepare_pool(fmt: str, input_spec: str, output, *, split: str | None = None,
                 hf_config: str | None = None, on_bad_row: str = "error",
                 limit: int | None = None, overwrite: bool = False,
                 columns: str | Mapping[str, str] | None = None,
                 reward_name: str = "given") -> PrepareReport:
    """Read an input dataset, convert it, and write the pool atomically.

    Args:
        fmt: One of ``FORMATS`` ("hh", "tldr", "listwise", "chat", "trl", "builtin").
        input_spec: A JSONL/JSON/Parquet file (optionally .gz), a folder of Parquet or JSONL
            shards, a ``datasets`` ``save_to_disk`` folder, or a Hugging Face hub dataset id
            read from the local cache (see :mod:`lire_ray.adapters.inputs`); with ``fmt``
            "builtin", a built-in prompt set (``builtin:chitchat``, ...).
        output: Pool directory to create.
        split: Split to read from a folder of several splits, a saved DatasetDict or a hub id
            (None: "train", or the only split there is).
        hf_config: Configuration name of a hub dataset.
        on_bad_row: "error" or "skip".
        limit: Read at most this many input rows.
        overwrite: Replace an existing pool directory.
        columns: Source columns renamed to the names the format expects,
            ``"prompt=question,chosen=answer_good"`` or a mapping.
        reward_name: ``trl`` only: the reward name of ``score_chosen`` / ``score_rejected`` /
            ``score_completion`` columns.

    Returns:
        The report; its skipped rows are also counted by reason in the manifest, whose
        metadata records ``source_format`` (``fmt``), for ``trl`` the ``dataset_type`` and
        ``conversational``, and under ``prepare`` how the input was read.

    Raises:
        ConfigError: Bad arguments.
        DataError: Unreadable input, a bad row under "error", no valid rows, or an existing
            output directory without ``overwrite``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    columns = parse_columns(columns)
    check_pool_target(output, overwrite)  # before the conversion, which may be long
    if fmt == "builtin" or input_spec.startswith("builtin:"):
        return _prepare_builtin(fmt, input_spec, output, limit=limit, overwrite=overwrite)
    opened = open_input(input_spec, split=split, hf_config=hf_config)
    rows, report = convert_records(fmt, opened.records, source=opened.source,
                                   on_bad_row=on_bad_row, limit=limit, columns=columns,
                                   reward_name=reward_name)
    prepare: dict[str, Any] = {
        "format": fmt, "input": input_spec, "input_kind": opened.kind, "split": opened.split,
        "hf_config": hf_config, "columns": columns or None, "on_bad_row": on_bad_row,
        "limit": limit, "input_rows": report.input_rows}
    if opened.files:
        prepare["files"] = opened.files
    if fmt == "trl":
        prepare["reward_name"] = reward_name
    metadata = {"source_format": fmt, **report.details, "prepare": prepare}
    write_pool(rows, output, metadata=metadata, overwrite=overwrite,
               skipped=[asdict(s) for s in report.skipped])
    report.output = str(output)
    return report


def _prepare_builtin(fmt: str, input_spec: str, output, *, limit: int | None,
                     overwrite: bool) -> PrepareReport:
    """Write a built-in prompt set (``--format builtin --input builtin:NAME``) as a pool."""
    if fmt != "builtin" or input_spec not in BUILTIN_SETS:
        raise ConfigError(f"built-in prompt sets are read with --format builtin and --input one "
                          f"of {', '.join(sorted(BUILTIN_SETS))}; got --format {fmt} --input "
                          f"{input_spec}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    rows = builtin_rows(input_spec, limit)
    report = PrepareReport(source=input_spec, input_rows=len(rows), num_rows=len(rows),
                           num_candidates=sum(r.num_candidates for r in rows))
    metadata = {"source_format": "builtin",
                "prepare": {"format": fmt, "input": input_spec, "input_kind": "builtin",
                            "limit": limit, "input_rows": len(rows)}}
    write_pool(rows, output, metadata=metadata, overwrite=overwrite, skipped=[])
    report.output = str(output)
    return report
