"""Turn an input dataset into a candidate pool on disk (the library side of ``jobs/prepare.py``).

Bad rows (see :class:`~lire_ray.adapters.records.BadRow`) either stop the conversion
(``on_bad_row="error"``, the default; the error names file, row and field) or are skipped
(``on_bad_row="skip"``), in which case each one is listed in the report and counted by reason
in the pool manifest. Duplicate ``prompt_id`` values are bad rows (the later row is the bad
one). Nothing is written unless the whole input converts, and the pool is written atomically,
so a failed preparation leaves no output directory behind.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from lire_ray.adapters.formats import PARSERS, merge_tldr
from lire_ray.adapters.records import BadRow, Fields, iter_records
from lire_ray.errors import ConfigError, DataError
from lire_ray.pool import PoolRow, check_pool_target, write_pool

FORMATS = tuple(PARSERS)
ON_BAD_ROW = ("error", "skip")


@dataclass(frozen=True)
class SkippedRow:
    """One input row left out under ``on_bad_row="skip"``."""

    row: int | None
    field: str | None
    reason: str
    message: str


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
    """

    source: str
    output: str | None = None
    input_rows: int = 0
    num_rows: int = 0
    num_candidates: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

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
            for reason, rows in sorted(self.skipped_by_reason().items()):
                shown = ", ".join(str(r) for r in rows[:max_rows_listed])
                more = f", ... ({len(rows) - max_rows_listed} more)" \
                    if len(rows) > max_rows_listed else ""
                lines.append(f"  {reason}: {len(rows)} (rows {shown}{more})")
            first = self.skipped[0]
            lines.append(f"  first: {first.message}")
        return "\n".join(lines)


def convert_records(fmt: str, records: Iterable[tuple[int, dict | BadRow]], *, source: str,
                    on_bad_row: str = "error", limit: int | None = None
                    ) -> tuple[list[PoolRow], PrepareReport]:
    """Convert raw records of one format to pool rows.

    Args:
        fmt: One of ``FORMATS``.
        records: (row number, record or BadRow) as produced by
            :func:`~lire_ray.adapters.records.iter_records`.
        source: Input name for messages.
        on_bad_row: "error" (raise the first bad row) or "skip" (record it and go on).
        limit: Read at most this many records.

    Returns:
        (pool rows in input order, report).

    Raises:
        ConfigError: Unknown format or on_bad_row value, or a negative limit.
        DataError: A bad row under ``on_bad_row="error"``, or no valid rows at all.
    """
    if fmt not in PARSERS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    report = PrepareReport(source=source)

    def on_bad(err: BadRow) -> None:
        if on_bad_row == "error":
            raise err
        report.skipped.append(SkippedRow(err.row, err.field, err.reason, str(err)))

    parse = PARSERS[fmt]
    items: list[tuple[int, PoolRow]] = []
    for row_no, record in itertools.islice(records, limit):
        report.input_rows += 1
        try:
            if isinstance(record, BadRow):
                raise record
            items.append((row_no, parse(Fields(record, source, row_no))))
        except BadRow as err:
            on_bad(err)
    if fmt == "tldr":
        items = merge_tldr(items, on_bad, source)
    rows, first_seen = [], {}
    for row_no, row in items:
        if row.prompt_id in first_seen:
            on_bad(BadRow("duplicate_prompt_id", f"duplicate prompt_id {row.prompt_id!r} (first "
                          f"at row {first_seen[row.prompt_id]})", source=source, row=row_no,
                          field="prompt_id"))
            continue
        first_seen[row.prompt_id] = row_no
        rows.append(row)
    if not rows:
        raise DataError(f"no valid rows (read {report.input_rows}, skipped "
                        f"{len(report.skipped)})", source=source)
    report.num_rows = len(rows)
    report.num_candidates = sum(r.num_candidates for r in rows)
    return rows, report


def prepare_pool(fmt: str, input_spec: str, output, *, split: str = "train",
                 hf_config: str | None = None, on_bad_row: str = "error",
                 limit: int | None = None, overwrite: bool = False) -> PrepareReport:
    """Read an input dataset, convert it, and write the pool atomically.

    Args:
        fmt: One of ``FORMATS`` ("hh", "tldr", "listwise", "chat").
        input_spec: Local JSONL/JSON/Parquet file (optionally .gz) or Hugging Face dataset id.
        output: Pool directory to create.
        split: Split of a hub dataset.
        hf_config: Configuration name of a hub dataset.
        on_bad_row: "error" or "skip".
        limit: Read at most this many input rows.
        overwrite: Replace an existing pool directory.

    Returns:
        The report; its skipped rows are also counted by reason in the manifest.

    Raises:
        ConfigError: Bad arguments.
        DataError: Unreadable input, a bad row under "error", no valid rows, or an existing
            output directory without ``overwrite``.
    """
    if fmt not in PARSERS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_pool_target(output, overwrite)  # before the conversion, which may be long
    source, records = iter_records(input_spec, split=split, hf_config=hf_config)
    rows, report = convert_records(fmt, records, source=source, on_bad_row=on_bad_row,
                                   limit=limit)
    metadata = {"prepare": {"format": fmt, "input": input_spec, "split": split,
                            "hf_config": hf_config, "on_bad_row": on_bad_row, "limit": limit,
                            "input_rows": report.input_rows}}
    write_pool(rows, output, metadata=metadata, overwrite=overwrite,
               skipped=[asdict(s) for s in report.skipped])
    report.output = str(output)
    return report
