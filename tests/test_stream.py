"""Stream stage logic without Ray: candidate replacement, part files, pool finalisation."""

from __future__ import annotations

import pytest

from lire_ray.errors import DataError
from lire_ray.pool import PoolRow, read_pool, rows_to_table, table_to_rows
from lire_ray.stream import (
    PartWriter,
    busy_intervals,
    finalize_parts,
    merge_candidates,
    part_name,
    record_busy,
)


def _row(pid: str, responses=("h",), sources=("human",), versions=(-1,), preferred=-1):
    return PoolRow(prompt_id=pid, prompt=f"prompt {pid}", responses=responses, sources=sources,
                   policy_version=versions, rewards={"rm": [0.0] * len(responses)},
                   preferred=preferred)


def test_merge_keeps_human_and_replaces_policy_samples():
    row = _row("a", responses=("human text", "old sample"), sources=("human", "policy@e0"),
               versions=(-1, 0), preferred=0)
    new = merge_candidates(row, ["s1", "s2", "s3"], [1, 1, 1], keep_human=True, evolve_step=2)
    assert new.responses == ("human text", "s1", "s2", "s3")
    assert new.sources == ("human", "policy@e1", "policy@e1", "policy@e1")
    assert new.policy_version == (-1, 1, 1, 1)
    assert new.preferred == 0 and new.evolve_step == 2
    assert new.rewards == {} and new.ref_logps is None
    dropped = merge_candidates(row, ["s1"], [1], keep_human=False, evolve_step=2)
    assert dropped.responses == ("s1",) and dropped.preferred == -1


def test_part_name_is_order_independent_and_distinct():
    assert part_name(["b", "a"]) == part_name(["a", "b"])
    assert part_name(["a"]) != part_name(["a", "b"])


def test_parts_finalize_into_a_pool(tmp_path):
    parts = tmp_path / "parts"
    writer = PartWriter(str(parts))
    t1 = rows_to_table([_row("a"), _row("b")])
    t2 = rows_to_table([_row("c")])
    assert writer(t1) is t1
    writer(t2)
    writer(t1)  # a retried batch overwrites its own part
    assert len(list(parts.glob("part-*.parquet"))) == 2
    manifest = finalize_parts(parts, tmp_path / "pool", expected_ids=["a", "b", "c"])
    assert manifest["num_rows"] == 3
    assert sorted(r.prompt_id for r in table_to_rows(read_pool(tmp_path / "pool"))) == \
        ["a", "b", "c"]


def test_finalize_refuses_missing_or_duplicated_prompts(tmp_path):
    parts = tmp_path / "parts"
    writer = PartWriter(str(parts))
    writer(rows_to_table([_row("a"), _row("b")]))
    with pytest.raises(DataError, match="1 missing"):
        finalize_parts(parts, tmp_path / "pool", expected_ids=["a", "b", "c"])
    writer(rows_to_table([_row("b")]))  # another batch with "b" again
    with pytest.raises(DataError, match="1 duplicated"):
        finalize_parts(parts, tmp_path / "pool2", expected_ids=["a", "b"])
    assert not (tmp_path / "pool").exists() and not (tmp_path / "pool2").exists()


def test_busy_intervals_merge(tmp_path):
    import json

    for i, (a, b) in enumerate([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]):
        (tmp_path / f"{i}.json").write_text(json.dumps({"role": "x", "start": a, "end": b}))
    assert busy_intervals(tmp_path) == [(0.0, 3.0), (5.0, 6.0)]
    record_busy(str(tmp_path / "new"), "sampler", 1.0)
    assert len(busy_intervals(tmp_path / "new")) == 1


def test_empty_batch_writes_nothing(tmp_path):
    writer = PartWriter(str(tmp_path / "parts"))
    writer(rows_to_table([_row("a")]).slice(0, 0))
    assert not list((tmp_path / "parts").glob("part-*"))
