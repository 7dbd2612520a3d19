"""Reading the raw records of one input file, and checking their fields.

Files: JSONL, JSON (one array of objects) or Parquet, each optionally gzipped (folders, saved
datasets and hub ids are opened by :mod:`lire_ray.adapters.inputs`, which reads their files
here). Every record carries its file and a row number for error messages: the 1-based line for
JSONL, the 0-based element or row index for JSON arrays and Parquet.

A problem confined to one record (bad JSON on one line, invalid UTF-8 on one line, a missing or
mistyped field) is a :class:`BadRow`, which ``on_bad_row="skip"`` may skip; a problem with the
whole input (unreadable file, unknown format, malformed JSON array) is a plain ``DataError``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.errors import DataError

_TYPE_NAMES = {str: "string", int: "integer", float: "number", list: "list", dict: "object"}


class BadRow(DataError):
    """A single input record is malformed.

    Attributes:
        reason: Short machine-readable cause ("invalid_json", "missing_field", "wrong_type",
            "empty_prompt", "no_candidates", "duplicate_prompt_id", "rewards_length",
            "non_finite_reward", "invalid_utf8", "hh_prefix_mismatch", ...), used to count
            skipped rows in the manifest.
    """

    def __init__(self, reason: str, message: str, *, source=None, row=None, field=None):
        self.reason = reason
        self.detail = message  # the message without the "file, row, field" prefix
        super().__init__(message, source=source, row=row, field=field)


class Record(NamedTuple):
    """One raw input record with where it came from.

    Attributes:
        source: The file (or folder, or dataset) named in errors about this record.
        row: Its row number in ``source`` (1-based line for JSONL, else 0-based index).
        value: The record, or the :class:`BadRow` saying why it could not be read.
    """

    source: str
    row: int
    value: dict | BadRow


def iter_file(path: Path) -> Iterator[Record]:
    """Iterate over the records of one local JSONL, JSON or Parquet file (optionally .gz).

    Args:
        path: An existing file.

    Returns:
        Iterator of :class:`Record`, named by the file path.

    Raises:
        DataError: The file cannot be read or has an unknown format.
    """
    src = str(path)
    return (Record(src, row, value) for row, value in _iter_file(path))


def _iter_file(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    src = str(path)
    try:
        with _open(path) as f:
            head = f.read(4)
    except OSError as exc:
        raise DataError(f"cannot read: {exc}", source=src) from exc
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet") or head == b"PAR1":
        return _iter_parquet(path, src)
    if name.endswith(".json") and head.lstrip()[:1] in (b"[", b""):
        return _iter_json_array(path, src)
    if name.endswith((".json", ".jsonl", ".ndjson")) or head.lstrip()[:1] == b"{":
        return _iter_jsonl(path, src)
    if head.lstrip()[:1] == b"[":
        return _iter_json_array(path, src)
    raise DataError("unknown input format (expected .jsonl, .json or .parquet, optionally "
                    ".gz)", source=src)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _iter_jsonl(path: Path, src: str) -> Iterator[tuple[int, dict | BadRow]]:
    try:
        with _open(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                yield line_no, _parse_line(raw, src, line_no)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", source=src) from exc


def _parse_line(raw: bytes, src: str, line_no: int) -> dict | BadRow:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRow("invalid_utf8", f"invalid UTF-8 at byte {exc.start} of the line",
                      source=src, row=line_no)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRow("invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}",
                      source=src, row=line_no)
    if not isinstance(record, dict):
        return BadRow("wrong_type", f"expected a JSON object, got {_tname(record)}",
                      source=src, row=line_no)
    return record


def _iter_json_array(path: Path, src: str) -> Iterator[tuple[int, dict | BadRow]]:
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", source=src) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"invalid UTF-8 on line {line} (byte {exc.start})", source=src) from exc
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}",
                        source=src) from exc
    if not isinstance(records, list):
        raise DataError("a .json input must hold one array of objects", source=src)
    for i, record in enumerate(records):
        if isinstance(record, dict):
            yield i, record
        else:
            yield i, BadRow("wrong_type", f"expected an object, got {_tname(record)}",
                            source=src, row=i)


def _iter_parquet(path: Path, src: str) -> Iterator[tuple[int, dict | BadRow]]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                pf = pq.ParquetFile(pa.BufferReader(f.read()))
        else:
            pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=1024)
        i = 0
        for batch in batches:
            for record in batch.to_pylist():
                yield i, record
                i += 1
    except (OSError, EOFError, pa.ArrowException) as exc:
        raise DataError(f"cannot read Parquet: {exc}", source=src) from exc


def _tname(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def source_field(field: str | None, columns: Mapping[str, str]) -> str | None:
    """Name a field the way the input spells it: ``chosen[0].content`` read through
    ``--columns chosen=good`` is ``good[0].content`` in the user's file.

    Args:
        field: A field name as a format calls it, possibly with ``[i]`` / ``.key`` suffixes.
        columns: {format name: source column}.

    Returns:
        The field with a renamed column's source name substituted.
    """
    if not field or not columns:
        return field
    for target, source in columns.items():
        if field == target or field.startswith((target + "[", target + ".")):
            return source + field[len(target):]
    return field


class Fields:
    """Typed access to one record's fields; every failure is a :class:`BadRow` naming the field.

    Args:
        record: The raw record (its keys already renamed by ``--columns``, if any).
        source: Input name for messages.
        row: Row number for messages.
        columns: The ``--columns`` renaming {format name: source column}, so that errors name
            fields as the input spells them.
    """

    def __init__(self, record: dict, source: str, row: int,
                 columns: Mapping[str, str] | None = None):
        self.record, self.source, self.row = record, source, row
        self.columns = columns or {}

    def name(self, field: str | None) -> str | None:
        """``field`` as the input spells it (see :func:`source_field`)."""
        return source_field(field, self.columns)

    def bad(self, reason: str, message: str, field: str | None = None) -> BadRow:
        return BadRow(reason, message, source=self.source, row=self.row, field=self.name(field))

    def get(self, name: str, kind: type | tuple[type, ...], *, within: dict | None = None,
            prefix: str = "", optional: bool = False):
        """Return field ``name`` (of ``within`` or the record) checked to be of type ``kind``."""
        obj = self.record if within is None else within
        label = prefix + name
        if name not in obj or (optional and obj[name] is None):
            if optional:
                return None
            raise self.bad("missing_field", "missing field", label)
        return self.check(obj[name], kind, label)

    def check(self, value, kind: type | tuple[type, ...], label: str):
        """Return ``value`` if it has type ``kind`` (float accepts int; bool is never a number)."""
        wanted = kind if isinstance(kind, tuple) else (kind,)
        kinds = (*wanted, int) if float in wanted else wanted
        if isinstance(value, bool) or not isinstance(value, kinds):
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in wanted)
            raise self.bad("wrong_type", f"expected {want}, got {_tname(value)}", label)
        return value

    @overload
    def text_list(self, name: str, *, optional: Literal[False] = False) -> list[str]: ...

    @overload
    def text_list(self, name: str, *, optional: bool) -> list[str] | None: ...

    def text_list(self, name: str, *, optional: bool = False) -> list[str] | None:
        values = self.get(name, list, optional=optional)
        if values is None:
            return None
        return [self.check(v, str, f"{name}[{j}]") for j, v in enumerate(values)]

    def prompt_id(self, prompt_text: str) -> str:
        """The given ``prompt_id`` (string or integer) or the sha1 of the prompt text."""
        value = self.record.get("prompt_id")
        if value is None:
            return hashlib.sha1(prompt_text.encode("utf-8")).hexdigest()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        value = self.check(value, str, "prompt_id")
        if not value:
            raise self.bad("empty_prompt_id", "is empty", "prompt_id")
        return value

    def rewards(self, k: int) -> dict[str, tuple[float, ...]]:
        """Optional ``rewards``: a list of K scores (named "given") or {name: K scores}."""
        value = self.record.get("rewards")
        if value is None:
            return {}
        if isinstance(value, list):
            value = {"given": value}
            labels = {"given": "rewards"}
        else:
            self.check(value, dict, "rewards")
            labels = {n: f"rewards.{n}" for n in value}
        out = {}
        for name, scores in value.items():
            label = labels[name]
            if not name:
                raise self.bad("wrong_value", "reward-model name is empty", "rewards")
            self.check(scores, list, label)
            if len(scores) != k:
                raise self.bad("rewards_length", f"{len(scores)} rewards for {k} responses",
                               label)
            for j, s in enumerate(scores):
                self.check(s, float, f"{label}[{j}]")
                if not math.isfinite(s):
                    raise self.bad("non_finite_reward", f"reward is {s}", f"{label}[{j}]")
            out[name] = tuple(float(s) for s in scores)
        return out

    def preferred(self, k: int, name: str = "preferred") -> int:
        value = self.get(name, int, optional=True)
        if value is None:
            return -1
        if not -1 <= value < k:
            raise self.bad("out_of_range", f"{value} is not -1 or an index below {k}", name)
        return value

