"""Pools through Ray Data: write with ``write_pool_dataset``, read with ``read_pool_dataset``."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from test_pool import make_rows

from lire_ray.errors import DataError, PoolIntegrityError
from lire_ray.pool import (
    POOL_SCHEMA,
    SCHEMA_VERSION,
    read_manifest,
    read_pool,
    read_pool_dataset,
    rows_to_table,
    table_to_rows,
    write_pool,
    write_pool_dataset,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def as_items(rows):
    """Plain Python dicts, as a user's ``map`` would produce (int64 ints, list rewards)."""
    return rows_to_table(rows).to_pylist()


def test_dataset_round_trip(ray_local, tmp_path):
    rows = make_rows(9)
    ds = ray_local.data.from_items(as_items(rows), override_num_blocks=3)
    out = tmp_path / "pool"
    manifest = write_pool_dataset(ds, out, metadata={"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]
    assert manifest["num_rows"] == 9 == sum(f["num_rows"] for f in manifest["files"])
    assert manifest["num_candidates"] == sum(len(r.responses) for r in rows)
    assert manifest["reward_models"] == ["rm", "rm_star"]
    assert read_manifest(out)["metadata"] == {"epoch": 2}
    back = sorted(table_to_rows(read_pool(out)), key=lambda r: int(r.prompt_id[1:]))
    assert back == rows

    ds_back = read_pool_dataset(out)
    table = pa.Table.from_pylist(ds_back.take_all(), schema=POOL_SCHEMA)
    assert sorted(table_to_rows(table), key=lambda r: int(r.prompt_id[1:])) == rows


def test_read_dataset_verifies_manifest(ray_local, tmp_path):
    out = tmp_path / "pool"
    write_pool(make_rows(4), out)
    target = out / "part-00000.parquet"
    target.write_bytes(target.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(PoolIntegrityError) as err:
        read_pool_dataset(out)
    assert err.value.source == str(target)


def test_invalid_dataset_writes_nothing(ray_local, tmp_path):
    items = as_items(make_rows(3))
    items[2]["prompt_id"] = items[0]["prompt_id"]
    with pytest.raises(DataError, match="duplicate prompt_id"):
        write_pool_dataset(ray_local.data.from_items(items), tmp_path / "pool")
    for item in items:
        item.pop("sources")
    with pytest.raises(DataError, match="sources"):
        write_pool_dataset(ray_local.data.from_items(items), tmp_path / "pool")
    assert list(tmp_path.iterdir()) == []


def test_dataset_files_carry_the_schema_version(ray_local, tmp_path):
    import pyarrow.parquet as pq

    write_pool_dataset(ray_local.data.from_items(as_items(make_rows(2))), tmp_path / "pool")
    manifest = json.loads((tmp_path / "pool" / "manifest.json").read_text())
    for f in manifest["files"]:
        schema = pq.read_schema(tmp_path / "pool" / f["name"])
        assert schema.metadata[b"lire_ray.pool.schema_version"] == str(SCHEMA_VERSION).encode()
        assert schema.remove_metadata().equals(POOL_SCHEMA.remove_metadata())
