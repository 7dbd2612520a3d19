"""Pool schema, row conversion, validation, atomic writes and manifest verification (no Ray)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lire_ray.errors import DataError, PoolIntegrityError
from lire_ray.pool import (
    POOL_SCHEMA,
    PoolRow,
    policy_source,
    read_manifest,
    read_pool,
    rows_to_table,
    source_version,
    store,
    table_to_rows,
    validate_table,
    write_pool,
)


def make_rows(n: int = 5) -> list[PoolRow]:
    rows = []
    for i in range(n):
        k = 1 + i % 3
        rows.append(PoolRow(
            prompt_id=f"p{i}", prompt=f"prompt number {i} ✓",
            responses=[f"r{i}.{j}" for j in range(k)],
            sources=["human"] + [policy_source(i)] * (k - 1),
            policy_version=[-1] + [i] * (k - 1),
            rewards={"rm": [0.5 * j - i for j in range(k)], "rm_star": [float(j) for j in range(k)]},
            preferred=k - 1 if i % 2 else -1,
            ref_logps=None if i % 2 else [-1.25 * (j + 1) for j in range(k)],
            evolve_step=i,
            prompt_messages=json.dumps([{"role": "user", "content": f"q{i}"}]) if i == 0 else None,
        ))
    return rows


def listed_dirs(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_source_tags():
    assert policy_source(3) == "policy@e3"
    assert source_version("policy@e12") == 12
    assert [source_version(s) for s in ("human", "dataset", "policy@e", "policy@ex")] == [-1] * 4


def test_rows_table_rows_round_trip_and_types():
    rows = make_rows()
    table = rows_to_table(rows)
    assert table.schema.equals(POOL_SCHEMA, check_metadata=True)
    assert table.num_rows == 5
    assert table.column("policy_version").type == pa.list_(pa.int32())
    back = table_to_rows(table)
    assert back == rows
    # Hand-checked fields of one row, independent of the conversion code.
    r = back[2]
    assert r.responses == ("r2.0", "r2.1", "r2.2")
    assert r.rewards == {"rm": (-2.0, -1.5, -1.0), "rm_star": (0.0, 1.0, 2.0)}
    assert r.is_human == (True, False, False)
    assert r.ref_logps == (-1.25, -2.5, -3.75)


BAD_CASES = [
    ("prompt_id", "", "prompt_id"),
    ("prompt", "  ", "prompt"),
    ("responses", [], "sources"),  # K = 0 is allowed, but then sources must be empty too
    ("sources", ["human"], "sources"),
    ("policy_version", [-1, -1, -1], "policy_version"),
    ("rewards", {"rm": [1.0]}, "rewards.rm"),
    ("rewards", {"rm": [1.0, math.nan]}, "rewards.rm"),
    ("rewards", {"rm": [math.inf, 1.0]}, "rewards.rm"),
    ("preferred", 2, "preferred"),
    ("preferred", -2, "preferred"),
    ("ref_logps", [0.0], "ref_logps"),
    ("evolve_step", -1, "evolve_step"),
    ("prompt_messages", "not json", "prompt_messages"),
    ("prompt_messages", '[{"role": "user"}]', "prompt_messages"),
    ("metadata", "[1, 2]", "metadata"),
    ("metadata", "{not json", "metadata"),
]


def test_prompt_only_rows_and_new_columns_round_trip(tmp_path):
    from lire_ray.pool import read_pool, table_to_rows, write_pool

    rows = [PoolRow(prompt_id="p", prompt="q", responses=[], sources=[], policy_version=[],
                    metadata='{"answer": "4"}'),
            PoolRow(prompt_id="h", prompt="q2", responses=["a"], sources=["human"],
                    policy_version=[-1], prompt_text="<|user|>q2", preferred=0)]
    write_pool(rows, tmp_path / "pool")
    back = table_to_rows(read_pool(tmp_path / "pool"))
    assert back == rows
    assert back[0].num_candidates == 0 and back[0].meta == {"answer": "4"}
    assert back[0].human_reference is None and back[1].human_reference == "a"


@pytest.mark.parametrize("name,value,field", BAD_CASES)
def test_validate_rejects_each_invariant(name, value, field):
    good = dict(prompt_id="a", prompt="p", responses=["x", "y"], sources=["human", "human"],
                policy_version=[-1, -1], rewards={"rm": [1.0, 2.0]}, preferred=0)
    other = PoolRow(prompt_id="b", prompt="q", responses=["z"], sources=["dataset"],
                    policy_version=[-1])
    bad = PoolRow(**{**good, name: value})
    with pytest.raises(DataError) as err:
        rows_to_table([other, bad], source="unit")
    assert (err.value.source, err.value.row, err.value.field) == ("unit", 1, field)


def test_validate_rejects_duplicate_ids_and_schema_errors():
    rows = make_rows(3)
    with pytest.raises(DataError) as err:
        rows_to_table(rows + [rows[1]])
    assert (err.value.row, err.value.field) == (3, "prompt_id")
    table = rows_to_table(rows)
    with pytest.raises(DataError) as err:
        validate_table(table.drop_columns(["sources"]), "t")
    assert err.value.field == "sources"
    with pytest.raises(DataError) as err:
        validate_table(table.append_column("extra", pa.array([1, 2, 3])), "t")
    assert err.value.field == "extra"
    wrong = table.set_column(table.column_names.index("preferred"), "preferred",
                             pa.array(["0", "0", "0"]))
    with pytest.raises(DataError) as err:
        validate_table(wrong, "t")
    assert err.value.field == "preferred"


def test_validate_rejects_other_integer_widths():
    table = rows_to_table(make_rows(2))
    as64 = table.set_column(table.column_names.index("evolve_step"), "evolve_step",
                            table.column("evolve_step").cast(pa.int64()))
    with pytest.raises(DataError, match="evolve_step"):
        validate_table(as64, "t")


def test_write_read_round_trip_and_manifest(tmp_path):
    rows = make_rows(7)
    out = tmp_path / "pool"
    skipped = [{"row": 4, "field": "rewards", "reason": "rewards_length", "message": "m"},
               {"row": 9, "field": None, "reason": "invalid_json", "message": "m2"},
               {"row": 11, "field": "rewards", "reason": "rewards_length", "message": "m3"}]
    manifest = write_pool(rows, out, metadata={"norm": {"rm": [0.1, 2.0]}}, rows_per_file=3,
                          skipped=skipped)
    assert listed_dirs(tmp_path) == ["pool"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["manifest.json", "part-00000.parquet", "part-00001.parquet",
                     "part-00002.parquet"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest == read_manifest(out)
    assert on_disk["schema_version"] == store.SCHEMA_VERSION
    assert on_disk["num_rows"] == 7
    assert on_disk["num_candidates"] == sum(len(r.responses) for r in rows)
    assert on_disk["reward_models"] == ["rm", "rm_star"]
    assert on_disk["metadata"] == {"norm": {"rm": [0.1, 2.0]}}
    assert [f["num_rows"] for f in on_disk["files"]] == [3, 3, 1]
    for f in on_disk["files"]:
        assert f["sha256"] == hashlib.sha256((out / f["name"]).read_bytes()).hexdigest()
        meta = pq.read_schema(out / f["name"]).metadata
        assert meta[b"lire_ray.pool.schema_version"] == str(store.SCHEMA_VERSION).encode()
    assert on_disk["skipped"]["count"] == 3
    assert on_disk["skipped"]["by_reason"] == {
        "rewards_length": {"count": 2, "rows": [4, 11]}, "invalid_json": {"count": 1, "rows": [9]}}
    table = read_pool(out)
    assert table_to_rows(table) == rows


def test_write_refuses_existing_dir_and_overwrites_on_request(tmp_path):
    out = tmp_path / "pool"
    write_pool(make_rows(2), out)
    with pytest.raises(DataError, match="already exists"):
        write_pool(make_rows(4), out)
    assert len(read_pool(out)) == 2
    write_pool(make_rows(4), out, overwrite=True)
    assert len(read_pool(out)) == 4
    assert listed_dirs(tmp_path) == ["pool"]


def test_overwrite_never_replaces_something_that_is_not_a_pool(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a pool"):
        write_pool(make_rows(1), precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    write_pool(make_rows(1), empty, overwrite=True)
    assert len(read_pool(empty)) == 1


def test_invalid_rows_write_nothing(tmp_path):
    rows = make_rows(2) + [PoolRow(prompt_id="x", prompt="p", responses=["a"], sources=[],
                                   policy_version=[-1])]
    with pytest.raises(DataError):
        write_pool(rows, tmp_path / "pool")
    assert listed_dirs(tmp_path) == []


def test_non_json_metadata_is_refused(tmp_path):
    with pytest.raises(DataError, match="metadata"):
        write_pool(make_rows(1), tmp_path / "pool", metadata={"x": math.nan})
    assert listed_dirs(tmp_path) == []


def test_failure_while_writing_files_leaves_nothing(tmp_path, monkeypatch):
    real = pq.write_table
    calls = []

    def failing_write(table, where, **kw):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(table, where, **kw)

    monkeypatch.setattr(store.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_pool(make_rows(5), tmp_path / "pool", rows_per_file=2)
    assert listed_dirs(tmp_path) == []


def test_failed_final_rename_leaves_no_pool_and_no_temp_dir(tmp_path, monkeypatch):
    def failing_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(store.os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        write_pool(make_rows(3), tmp_path / "pool")
    assert listed_dirs(tmp_path) == []


def test_failed_overwrite_keeps_the_old_pool(tmp_path, monkeypatch):
    out = tmp_path / "pool"
    write_pool(make_rows(2), out)
    real = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr(store.os, "rename", rename)
    with pytest.raises(OSError):
        write_pool(make_rows(4), out, overwrite=True)
    assert listed_dirs(tmp_path) == ["pool"]
    assert table_to_rows(read_pool(out)) == make_rows(2)


def test_a_killed_writer_leaves_no_trusted_pool(tmp_path):
    # What a writer killed before its rename leaves: data files but no manifest.
    out = tmp_path / "pool"
    write_pool(make_rows(3), out)
    (out / "manifest.json").unlink()
    with pytest.raises(PoolIntegrityError, match="manifest"):
        read_pool(out)
    with pytest.raises(PoolIntegrityError):
        read_pool(tmp_path / "never-written")


@pytest.fixture
def written(tmp_path):
    out = tmp_path / "pool"
    write_pool(make_rows(6), out, rows_per_file=2)
    return out


def test_tampered_file_is_named(written):
    target = written / "part-00001.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(PoolIntegrityError, match="sha256") as err:
        read_pool(written)
    assert err.value.source == str(target)


def test_missing_and_extra_files_are_named(written):
    extra = written / "part-00009.parquet"
    extra.write_bytes((written / "part-00000.parquet").read_bytes())
    with pytest.raises(PoolIntegrityError, match="not listed") as err:
        read_pool(written)
    assert err.value.source == str(extra)
    extra.unlink()
    (written / "part-00002.parquet").unlink()
    with pytest.raises(PoolIntegrityError, match="missing") as err:
        read_pool(written)
    assert err.value.source == str(written / "part-00002.parquet")


def test_row_count_and_version_mismatch(written):
    manifest = json.loads((written / "manifest.json").read_text())
    manifest["files"][0]["num_rows"] = 3
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoolIntegrityError, match="rows") as err:
        read_pool(written)
    assert err.value.source == str(written / "part-00000.parquet")
    manifest["files"][0]["num_rows"] = 2
    manifest["num_rows"] = 7
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoolIntegrityError, match="7"):
        read_pool(written)
    manifest["num_rows"] = 6
    manifest["schema_version"] = 99
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoolIntegrityError, match="schema_version"):
        read_pool(written)


def test_rewritten_file_with_matching_manifest_is_still_validated(written):
    # A consistent manifest does not excuse invalid rows: read_pool validates them.
    target = written / "part-00000.parquet"
    table = pq.read_table(target)
    bad = table.set_column(table.column_names.index("preferred"), "preferred",
                           pa.array([5, 5], pa.int32()))
    pq.write_table(bad, target)
    manifest = json.loads((written / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    (written / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as err:
        read_pool(written)
    assert (err.value.source, err.value.row, err.value.field) == (str(target), 0, "preferred")


def test_empty_pool_round_trips(tmp_path):
    manifest = write_pool([], tmp_path / "pool")
    assert manifest["num_rows"] == 0 and manifest["files"] == []
    table = read_pool(tmp_path / "pool")
    assert table.num_rows == 0 and table.schema.equals(POOL_SCHEMA)
