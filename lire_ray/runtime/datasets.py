"""Pools as Ray datasets, both ways. ``ray`` is imported inside the functions only.

:func:`pool_dataset` is the one way a pool becomes a ``ray.data.Dataset`` (the trainer's
input): a finished pool of an Evolve step, a comparison's shared pool in a seeded order, a
prepared training pool or reward-model pairs. :func:`write_pool_dataset` writes a dataset of
pool rows as a verified pool.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.errors import DataError
from lire_ray.pool import read_pool
from lire_ray.pool.schema import POOL_SCHEMA, validate_table
from lire_ray.pool.store import (
    _finish,
    _prepare_target,
    _sha256,
    _table_stats,
)


def pool_dataset(source: str | Path | pa.Table, *, seed: int | None = None):
    """A pool as a Ray dataset, read here: a pool is small, and reading it in Ray Data tasks
    would start worker processes for every step, comparison run or job.

    Args:
        source: A pool directory (verified against its manifest and every row validated, see
            :func:`~lire_ray.pool.read_pool`), or rows already loaded and checked (a training
            pool with label scores added, reward-model pairs).
        seed: Shuffle the rows in this seeded order (the seed of a comparison run); None keeps
            the pool's order.

    Returns:
        A ``ray.data.Dataset`` with one row per table row.

    Raises:
        PoolIntegrityError: The directory does not match its manifest.
        DataError: A row breaks a pool invariant.
    """
    import ray.data

    table = source if isinstance(source, pa.Table) else read_pool(source)
    if seed is not None:
        order = list(range(table.num_rows))
        random.Random(seed).shuffle(order)
        table = table.take(order)
    return ray.data.from_arrow(table)


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
