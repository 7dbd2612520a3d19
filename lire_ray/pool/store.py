"""Writing and reading pools on disk: atomic directory writes, manifest, verification.

Layout of a pool directory: ``part-*.parquet`` files and ``manifest.json``; see
:mod:`lire_ray.pool` for what the manifest holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.atomic import replace_dir
from lire_ray.errors import DataError, PoolIntegrityError
from lire_ray.pool.schema import (
    POOL_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    PoolRow,
    rows_to_table,
    validate_table,
)

MANIFEST_NAME = "manifest.json"
DEFAULT_ROWS_PER_FILE = 4096
_MAX_SKIPPED_ROWS_LISTED = 1000


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _skipped_summary(skipped: Sequence[Mapping] | None) -> dict:
    """Manifest entry for rows left out by an adapter (each: row, field, reason, message)."""
    skipped = list(skipped or [])
    by_reason: dict[str, dict] = {}
    for s in skipped:
        entry = by_reason.setdefault(s["reason"], {"count": 0, "rows": []})
        entry["count"] += 1
        if len(entry["rows"]) < _MAX_SKIPPED_ROWS_LISTED:
            entry["rows"].append(s.get("row"))
    return {"count": len(skipped), "by_reason": by_reason,
            "examples": [dict(s) for s in skipped[:20]]}


def _finish(tmp: Path, out: Path, files: list[dict], table_stats: dict, metadata: dict,
            skipped, overwrite: bool) -> dict:
    """Write the manifest into ``tmp``, fsync, and rename ``tmp`` onto ``out``."""
    manifest = {"format": "lire-ray-pool", "schema_version": SCHEMA_VERSION, **table_stats,
                "files": files, "metadata": metadata, "skipped": _skipped_summary(skipped)}
    with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    for entry in files:
        _fsync(tmp / entry["name"])
    _fsync(tmp)
    if out.exists() and not overwrite:
        raise DataError("output directory already exists; pass overwrite=True (--overwrite) to replace it",
                        source=str(out))
    replace_dir(tmp, out)
    _fsync(out.parent)
    return manifest


def check_pool_target(out_dir, overwrite: bool = False) -> Path:
    """Check that a pool may be written to ``out_dir``.

    Args:
        out_dir: Target directory.
        overwrite: Whether an existing pool (or empty directory) there may be replaced.

    Returns:
        The absolute target path.

    Raises:
        DataError: The target exists and ``overwrite`` is False, or it exists and is neither a
            pool nor an empty directory (replacing deletes it, so nothing else is replaced).
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise DataError("output directory already exists; pass overwrite=True (--overwrite) to replace it",
                        source=str(out))
    if out.exists() and not (out / MANIFEST_NAME).is_file() and (
            not out.is_dir() or any(out.iterdir())):
        raise DataError("exists and is not a pool (no manifest.json); refusing to replace it",
                        source=str(out))
    return out


def _prepare_target(out_dir, overwrite: bool, metadata: dict | None) -> tuple[Path, Path, dict]:
    out = check_pool_target(out_dir, overwrite)
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"metadata is not plain JSON: {exc}", source=str(out),
                        field="metadata") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}", metadata


def _table_stats(tables: Iterable[pa.Table]) -> dict:
    rows = cands = 0
    names: Counter = Counter()
    for t in tables:
        rows += t.num_rows
        cands += sum(len(r) for r in t.column("responses").to_pylist())
        names.update(e["name"] for rw in t.column("rewards").to_pylist() for e in rw)
    return {"num_rows": rows, "num_candidates": cands, "reward_models": sorted(names)}


def write_pool(table_or_rows: pa.Table | Iterable[PoolRow], out_dir, *,
               metadata: dict | None = None, rows_per_file: int = DEFAULT_ROWS_PER_FILE,
               overwrite: bool = False, skipped: Sequence[Mapping] | None = None) -> dict:
    """Validate and write a pool atomically; return its manifest.

    Args:
        table_or_rows: A pool table or an iterable of :class:`PoolRow`.
        out_dir: Target directory; must not exist unless ``overwrite``.
        metadata: JSON-serialisable user metadata stored in the manifest.
        rows_per_file: Maximum rows per Parquet file.
        overwrite: Replace an existing directory (renamed away, then deleted, after success).
        skipped: Rows an adapter left out, each a mapping with row, field, reason, message.

    Raises:
        DataError: Invalid rows, non-JSON metadata, or ``out_dir`` exists without overwrite.
    """
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    out, tmp, metadata = _prepare_target(out_dir, overwrite, metadata)
    table = (validate_table(table_or_rows, str(out)) if isinstance(table_or_rows, pa.Table)
             else rows_to_table(table_or_rows, source=str(out)))
    try:
        tmp.mkdir()
        files = []
        for n, start in enumerate(range(0, table.num_rows, rows_per_file)):
            name = f"part-{n:05d}.parquet"
            part = table.slice(start, rows_per_file)
            pq.write_table(part, tmp / name, compression="zstd")
            files.append({"name": name, "num_rows": part.num_rows,
                          "sha256": _sha256(tmp / name)})
        return _finish(tmp, out, files, _table_stats([table]), metadata, skipped, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(pool_dir) -> dict:
    """Load a pool's manifest without checking the data files (see :func:`verify_pool`).

    Args:
        pool_dir: Pool directory.

    Returns:
        The manifest as a dict.

    Raises:
        PoolIntegrityError: The directory or manifest is missing, unreadable or of another
            schema version.
    """
    path = Path(pool_dir) / MANIFEST_NAME
    if not path.is_file():
        raise PoolIntegrityError("no manifest.json: not a complete pool", source=str(pool_dir))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PoolIntegrityError(f"unreadable manifest: {exc}", source=str(path)) from exc
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        got = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise PoolIntegrityError(f"schema_version {got!r}, this reader supports "
                                 f"{SCHEMA_VERSION}", source=str(path), field="schema_version")
    return manifest


def verify_pool(pool_dir) -> dict:
    """Check every file against the manifest (names, sha256, row counts); return the manifest.

    Hidden files (names starting with ".") are ignored; any other file not in the manifest is
    an error.

    Args:
        pool_dir: Pool directory.

    Returns:
        The manifest as a dict.

    Raises:
        PoolIntegrityError: Missing manifest, missing or extra file, checksum, row-count or
            schema-version mismatch; the message names the file.
    """
    root = Path(pool_dir)
    manifest = read_manifest(root)
    try:
        listed = {e["name"]: e for e in manifest["files"]}
        present = {p.name for p in root.iterdir() if p.name != MANIFEST_NAME
                   and not p.name.startswith(".")}
        for extra in sorted(present - set(listed)):
            raise PoolIntegrityError("file not listed in manifest", source=str(root / extra))
        total = 0
        for name, entry in listed.items():
            path = root / name
            if not path.is_file():
                raise PoolIntegrityError("file listed in manifest is missing", source=str(path))
            if _sha256(path) != entry["sha256"]:
                raise PoolIntegrityError("sha256 differs from manifest", source=str(path))
            meta = pq.ParquetFile(path).metadata
            if meta.num_rows != entry["num_rows"]:
                raise PoolIntegrityError(f"{meta.num_rows} rows, manifest says "
                                         f"{entry['num_rows']}", source=str(path))
            version = (pq.read_schema(path).metadata or {}).get(SCHEMA_VERSION_KEY)
            if version != str(SCHEMA_VERSION).encode():
                raise PoolIntegrityError(f"Parquet schema version {version!r}",
                                         source=str(path), field="schema_version")
            total += entry["num_rows"]
        if total != manifest["num_rows"]:
            raise PoolIntegrityError(f"files hold {total} rows, manifest says "
                                     f"{manifest['num_rows']}", source=str(root))
    except (KeyError, TypeError) as exc:
        raise PoolIntegrityError(f"malformed manifest ({exc!r})", source=str(root)) from exc
    return manifest


def read_pool(pool_dir) -> pa.Table:
    """Verify a pool against its manifest, validate every row, and return it as one table.

    Args:
        pool_dir: Pool directory.

    Returns:
        All rows, files in manifest order, with schema ``POOL_SCHEMA``.

    Raises:
        PoolIntegrityError: See :func:`verify_pool`.
        DataError: A row breaks a pool invariant (names file, row and field).
    """
    manifest = verify_pool(pool_dir)
    seen: dict = {}
    tables = [validate_table(pq.read_table(Path(pool_dir) / e["name"]),
                             str(Path(pool_dir) / e["name"]), _seen=seen)
              for e in manifest["files"]]
    return pa.concat_tables(tables) if tables else POOL_SCHEMA.empty_table()
