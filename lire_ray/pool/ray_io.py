"""Pools through Ray Data. ``ray`` is imported inside the functions only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.errors import DataError
from lire_ray.pool.schema import POOL_SCHEMA, validate_table
from lire_ray.pool.store import (
    _finish,
    _prepare_target,
    _sha256,
    _table_stats,
    verify_pool,
)


def read_pool_dataset(pool_dir):
    """Verify a pool (see :func:`verify_pool`) and open its files as a ``ray.data.Dataset``.

    Rows are not re-validated here: the files match the checksums of a manifest that is only
    written after validation.

    Args:
        pool_dir: Pool directory (local or on a filesystem every Ray node sees).

    Returns:
        A lazy dataset over exactly the manifest's files, one row per prompt.

    Raises:
        PoolIntegrityError: The directory does not match its manifest.
    """
    import ray.data

    manifest = verify_pool(pool_dir)
    paths = [str(Path(pool_dir).absolute() / e["name"]) for e in manifest["files"]]
    if not paths:
        return ray.data.from_arrow(POOL_SCHEMA.empty_table())
    # Reading moves a few rows; it must not wait for a whole CPU a trainer worker holds.
    return ray.data.read_parquet(paths, partitioning=None, num_cpus=0.01)


def _conform_batch(batch: pa.Table) -> pa.Table:
    names = [f.name for f in POOL_SCHEMA]
    missing = [n for n in names if n not in batch.column_names]
    if missing or len(batch.column_names) != len(names):
        raise DataError(f"dataset columns {batch.column_names} differ from the pool schema "
                        f"{names}", field=(missing or [None])[0])
    return batch.select(names).cast(POOL_SCHEMA)


def write_pool_dataset(ds, out_dir, *, metadata: dict | None = None,
                       overwrite: bool = False) -> dict:
    """Write a ``ray.data.Dataset`` of pool rows atomically with a manifest; return the manifest.

    Ray Data writes the Parquet files (cast to ``POOL_SCHEMA``) into a temporary sibling
    directory; the files are then validated, checksummed and renamed into place together.

    Args:
        ds: Dataset whose rows have exactly the pool columns (integer widths and list field
            names may differ; they are cast).
        out_dir: Target directory; must not exist unless ``overwrite``.
        metadata: JSON-serialisable user metadata stored in the manifest.
        overwrite: Replace an existing directory.

    Returns:
        The manifest.

    Raises:
        DataError: Columns differ from the schema, a row is invalid, or ``out_dir`` exists.
    """
    out, tmp, metadata = _prepare_target(out_dir, overwrite, metadata)
    try:
        try:
            ds.map_batches(_conform_batch, batch_format="pyarrow").write_parquet(str(tmp))
        except Exception as exc:
            # Ray Data re-raises a UDF failure with the original error only as traceback text.
            tag = "lire_ray.errors.DataError: "
            lines = [ln.split(tag, 1)[1] for ln in str(exc).splitlines() if tag in ln]
            if lines:
                raise DataError(lines[-1], source=str(out)) from exc
            raise
        tmp.mkdir(exist_ok=True)
        seen: dict = {}
        files, tables = [], []
        for path in sorted(tmp.iterdir()):
            table = validate_table(pq.read_table(path), str(path), _seen=seen)
            tables.append(table.select(["responses", "rewards"]))
            files.append({"name": path.name, "num_rows": table.num_rows,
                          "sha256": _sha256(path)})
        return _finish(tmp, out, files, _table_stats(tables), metadata, None, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
