"""Pool parts: the scored batches of a pool being built, persisted one by one, then finalized.

While a pool D_e is sampled and scored, every finished batch is written to a parts directory as
one Parquet file named after its prompt ids (:func:`part_name`), so a retried batch overwrites
its own part instead of duplicating it. A part is written under a temporary name and renamed
into place, and its sha256 is written beside it (``<part>.sha256``) afterwards: a part counts
(:func:`trusted_parts`) only when its checksum file exists and matches, so a crash mid-write
leaves nothing a resumed build would trust. :func:`finalize_parts` turns the parts into a pool
(:func:`~lire_ray.pool.write_pool`) after checking that every expected prompt is present exactly
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.atomic import atomic_file, atomic_write_text
from lire_ray.errors import DataError
from lire_ray.pool.schema import POOL_SCHEMA, validate_table
from lire_ray.pool.store import _sha256, write_pool

PART_GLOB = "part-*.parquet"


def part_name(prompt_ids: Sequence[str]) -> str:
    """A deterministic part file name for a batch: retries overwrite, never duplicate."""
    digest = hashlib.sha1("\n".join(sorted(prompt_ids)).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


def write_part(parts_dir: str | Path, table: pa.Table) -> Path | None:
    """Persist one batch of pool rows as a part (atomically, checksum last).

    Args:
        parts_dir: The parts directory (created if missing).
        table: Pool rows (``POOL_SCHEMA``); an empty table writes nothing.

    Returns:
        The part's path, or None for an empty table.
    """
    if not table.num_rows:
        return None
    path = Path(parts_dir) / part_name(table.column("prompt_id").to_pylist())
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    atomic_write_text(path.with_name(path.name + ".sha256"), _sha256(path))
    return path


def trusted_parts(parts_dir: str | Path) -> list[Path]:
    """The parts whose checksum file exists and matches, in name order."""
    out = []
    for path in sorted(Path(parts_dir).glob(PART_GLOB)):
        check = path.with_name(path.name + ".sha256")
        if check.is_file() and check.read_text(encoding="utf-8").strip() == _sha256(path):
            out.append(path)
    return out


def persisted_ids(parts_dir: str | Path, cache: dict[str, list[str]] | None = None) -> set[str]:
    """Prompt ids of every trusted part in ``parts_dir``.

    Args:
        parts_dir: A parts directory.
        cache: File name -> ids of parts read before (a retried batch rewrites the same ids
            under the same name), so polling reads each file once.

    Returns:
        The union of their ``prompt_id`` columns.
    """
    cache = {} if cache is None else cache
    ids: set[str] = set()
    for path in trusted_parts(parts_dir):
        if path.name not in cache:
            cache[path.name] = pq.read_table(path, columns=["prompt_id"]).column(
                "prompt_id").to_pylist()
        ids.update(cache[path.name])
    return ids


def read_parts(parts_dir: str | Path) -> pa.Table:
    """Every trusted part as one validated pool table (empty when there is none).

    Raises:
        DataError: A part breaks a pool invariant, or two parts hold the same prompt.
    """
    seen: dict = {}
    tables = [validate_table(pq.read_table(p), str(p), _seen=seen)
              for p in trusted_parts(parts_dir)]
    return pa.concat_tables(tables) if tables else POOL_SCHEMA.empty_table()


def finalize_parts(parts_dir: str | Path, out_dir: str | Path, *, expected_ids: Sequence[str],
                   metadata: dict | None = None, overwrite: bool = False) -> dict:
    """Turn persisted parts into a verified pool; return its manifest.

    Args:
        parts_dir: The directory :func:`write_part` wrote to.
        out_dir: The pool directory to create.
        expected_ids: Every prompt id the pool must hold, once each, in the pool's row order.
        metadata: JSON metadata stored in the pool's manifest.
        overwrite: Replace an existing pool at ``out_dir``.

    Returns:
        The new pool's manifest.

    Raises:
        DataError: A prompt is missing or present twice (names the first few ids), or
            ``out_dir`` exists and ``overwrite`` is false.
    """
    parts = trusted_parts(parts_dir)
    table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
    ids = table.column("prompt_id").to_pylist() if table is not None else []
    seen: set[str] = set()
    dupes: list[str] = []
    for pid in ids:
        (dupes.append(pid) if pid in seen else seen.add(pid))
    missing = sorted(set(expected_ids) - seen)
    extra = sorted(seen - set(expected_ids))
    if dupes or missing or extra:
        raise DataError(f"pool parts are inconsistent: {len(dupes)} duplicated prompt(s) "
                        f"{dupes[:3]}, {len(missing)} missing {missing[:3]}, {len(extra)} not "
                        f"expected {extra[:3]}", source=str(parts_dir))
    if table is not None:
        # Parts finish in whatever order the actors return them; the pool keeps the input's.
        position = {pid: i for i, pid in enumerate(ids)}
        table = table.take(pa.array([position[pid] for pid in expected_ids], type=pa.int64()))
    return write_pool(table if table is not None else POOL_SCHEMA.empty_table(), out_dir,
                      metadata=metadata, overwrite=overwrite)
