"""A worker's pool shard: micro-batches of whole prompts, cached after the first epoch.

Epoch 1 reads the shard as it streams in (for Algorithm 1 the rows may still be being sampled
and scored upstream) and keeps every row in worker memory as Arrow tables. Later epochs iterate
that cache in a seed-determined order, so the upstream sampling is never run twice and a
resumed run sees exactly the order an uninterrupted one would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.errors import DataError
from lire_ray.pool import POOL_SCHEMA

T = TypeVar("T")


def group_steps(micro_batches: Iterable[T], grad_accum: int) -> Iterator[list[T]]:
    """Chunk micro-batches into optimizer steps of ``grad_accum`` (the last may be shorter).

    Args:
        micro_batches: Micro-batches in training order.
        grad_accum: Micro-batches per optimizer step, >= 1.

    Yields:
        Lists of 1..grad_accum micro-batches.
    """
    step: list[T] = []
    for mb in micro_batches:
        step.append(mb)
        if len(step) == grad_accum:
            yield step
            step = []
    if step:
        yield step


class Prefetched(Generic[T]):
    """Opens an iterable in a background thread and fetches its first item early.

    Calling the object (once) returns an iterator over all items, the prefetched one first;
    an error raised while opening or fetching is re-raised there.

    Args:
        open_items: Returns the iterable (e.g. a Ray Data shard's ``iter_batches``).
    """

    def __init__(self, open_items: Callable[[], Iterable[T]]):
        self._open = open_items
        self._iterator: Iterator[T] | None = None
        self._first: list[T] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="shard-prefetch", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._iterator = iter(self._open())
            self._first = [next(self._iterator)]
        except StopIteration:
            pass
        except BaseException as exc:  # re-raised in the consuming thread
            self._error = exc

    def __call__(self) -> Iterator[T]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        if self._iterator is not None:
            yield from self._iterator


def epoch_order(num_rows: int, *, seed: int, epoch: int, rank: int) -> np.ndarray:
    """Row order of a cached epoch: a permutation fixed by (seed, epoch, rank).

    Args:
        num_rows: Rows in the worker's cache.
        seed: ``train.seed``.
        epoch: 0-based epoch (>= 1 for cached epochs).
        rank: The worker's rank.

    Returns:
        An int64 permutation of ``range(num_rows)``.
    """
    return np.random.default_rng([seed, epoch, rank]).permutation(num_rows)


class ShardCache:
    """The rows one worker saw in epoch 1, kept to replay later epochs without upstream work.

    Args:
        expected_rows: Rows the worker must receive in epoch 1 (``num_prompts // world``).
    """

    def __init__(self, expected_rows: int):
        self.expected_rows = expected_rows
        self._tables: list[pa.Table] = []
        self._rows = 0

    @property
    def num_rows(self) -> int:
        return self._rows

    def _conform(self, table: pa.Table) -> pa.Table:
        missing = [f.name for f in POOL_SCHEMA if f.name not in table.column_names]
        if missing:
            raise DataError(f"the training dataset lacks pool column(s) {missing}; it must "
                            "follow the pool schema (lire_ray.pool.POOL_SCHEMA)",
                            field=missing[0])
        return table.select([f.name for f in POOL_SCHEMA]).cast(POOL_SCHEMA)

    def stream(self, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """Pass the epoch-1 micro-batches through, caching each one.

        Args:
            batches: Arrow micro-batches from the shard iterator.

        Yields:
            The same micro-batches, conformed to the pool schema.

        Raises:
            DataError: The shard yields more rows than ``expected_rows`` (the run's
                ``num_prompts`` disagrees with the dataset, so the schedule would be wrong).
        """
        for table in batches:
            table = self._conform(table)
            self._rows += table.num_rows
            if self._rows > self.expected_rows:
                raise DataError(
                    f"the dataset delivered more than the {self.expected_rows} rows per worker "
                    "that num_prompts announced; pass the dataset's true row count as "
                    "num_prompts", field="num_prompts")
            self._tables.append(table)
            yield table

    def table(self) -> pa.Table:
        """All cached rows as one table (in epoch-1 order)."""
        if not self._tables:
            return POOL_SCHEMA.empty_table()
        table = pa.concat_tables(self._tables).combine_chunks()
        self._tables = [table]
        return table

    def micro_batches(self, micro_batch_prompts: int, *, seed: int, epoch: int,
                      rank: int) -> Iterator[pa.Table]:
        """Micro-batches of a cached epoch in :func:`epoch_order`.

        Args:
            micro_batch_prompts: Rows per micro-batch.
            seed: ``train.seed``.
            epoch: 0-based epoch.
            rank: The worker's rank.

        Yields:
            Arrow tables of up to ``micro_batch_prompts`` rows.
        """
        table = self.table()
        order = epoch_order(table.num_rows, seed=seed, epoch=epoch, rank=rank)
        for start in range(0, len(order), micro_batch_prompts):
            yield table.take(pa.array(order[start:start + micro_batch_prompts]))

    def save(self, path: str | Path) -> None:
        """Write the cache as one Parquet file."""
        pq.write_table(self.table(), str(path))

    @classmethod
    def load(cls, path: str | Path) -> ShardCache:
        """Read a cache written by :meth:`save`.

        Raises:
            DataError: The file lacks pool columns.
        """
        table = pq.read_table(str(path))
        cache = cls(table.num_rows)
        table = cache._conform(table)
        cache._tables, cache._rows = [table], table.num_rows
        return cache


def deal(batches: Iterable[pa.Table], *, world_size: int, rows_per_worker: int,
         micro_batch_prompts: int) -> Iterator[tuple[int, pa.Table]]:
    """Deal a stream of pool rows to ``world_size`` workers in micro-batches, in order.

    Worker ``r`` receives micro-batches ``r, r + W, r + 2W, ...`` of ``micro_batch_prompts``
    rows, until each worker has ``rows_per_worker`` rows (a worker's last micro-batch may be
    smaller); rows beyond ``W * rows_per_worker`` are dropped, as an equal split drops them.

    Args:
        batches: Arrow tables of pool rows in stream order.
        world_size: W, the number of workers.
        rows_per_worker: Rows each worker trains on per epoch.
        micro_batch_prompts: Rows per micro-batch.

    Yields:
        ``(rank, micro_batch)`` pairs as soon as a micro-batch is complete.
    """
    left = [rows_per_worker] * world_size
    pending: list[pa.Table] = []
    rank = 0

    def take(n: int) -> pa.Table:
        nonlocal pending
        table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        pending = [table.slice(n)] if table.num_rows > n else []
        return table.slice(0, n)

    for batch in batches:
        if batch.num_rows:
            pending.append(batch)
        while any(left):
            while not left[rank]:
                rank = (rank + 1) % world_size
            n = min(micro_batch_prompts, left[rank])
            if sum(t.num_rows for t in pending) < n:
                break
            yield rank, take(n)
            left[rank] -= n
            rank = (rank + 1) % world_size
        if not any(left):
            return
