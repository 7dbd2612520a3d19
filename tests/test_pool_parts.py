"""Pool-building logic without Ray: candidate replacement, RSO selection, part files (trusted
only once their checksum matches), pool finalisation, busy intervals, job output checks."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lire_ray.errors import DataError, PoolIntegrityError, RunDirError
from lire_ray.inputs import source_metadata
from lire_ray.pool import (
    PoolRow,
    read_manifest,
    read_pool,
    rows_to_table,
    table_to_rows,
    write_pool,
)
from lire_ray.pool.parts import (
    finalize_parts,
    part_name,
    persisted_ids,
    read_parts,
    trusted_parts,
    write_part,
)
from lire_ray.rundir import pool_output_dir
from lire_ray.runtime.cluster import namespace_for
from lire_ray.sampling import Candidate, PromptSamples, merge_candidates
from lire_ray.sampling.rso import rso_seed, select_candidates
from lire_ray.timing import busy_intervals, in_flight, overlap_seconds, record_busy, record_start


def _samples(texts, versions, prompt_text="rendered"):
    return PromptSamples(prompt_text, tuple(Candidate(t, 1, "stop", v)
                                            for t, v in zip(texts, versions)))


def _row(pid: str, responses=("h",), sources=("human",), versions=(-1,), preferred=-1):
    return PoolRow(prompt_id=pid, prompt=f"prompt {pid}", responses=responses, sources=sources,
                   policy_version=versions, rewards={"rm": [0.0] * len(responses)},
                   preferred=preferred)


def test_merge_keeps_human_and_replaces_policy_samples():
    row = _row("a", responses=("human text", "old sample"), sources=("human", "policy@e0"),
               versions=(-1, 0), preferred=0)
    new = merge_candidates(row, _samples(["s1", "s2", "s3"], [1, 1, 1]), keep_human=True,
                           evolve_step=2)
    assert new.responses == ("human text", "s1", "s2", "s3") and new.prompt_text == "rendered"
    assert new.sources == ("human", "policy@e1", "policy@e1", "policy@e1")
    assert new.policy_version == (-1, 1, 1, 1)
    assert new.preferred == 0 and new.evolve_step == 2
    assert new.rewards == {} and new.ref_logps is None
    dropped = merge_candidates(row, _samples(["s1"], [1]), keep_human=False, evolve_step=2)
    assert dropped.responses == ("s1",) and dropped.preferred == -1
    some = merge_candidates(row, _samples(["s1", "s2", "s3"], [1, 1, 1]), keep_human=True,
                            evolve_step=2, keep=[2, 0])
    assert some.responses == ("human text", "s3", "s1")


def test_part_name_is_order_independent_and_distinct():
    assert part_name(["b", "a"]) == part_name(["a", "b"])
    assert part_name(["a"]) != part_name(["a", "b"])


def writer(parts):
    return lambda table: write_part(parts, table)


def test_parts_finalize_into_a_pool(tmp_path):
    parts = tmp_path / "parts"
    write = writer(parts)
    t1 = rows_to_table([_row("a"), _row("b")])
    t2 = rows_to_table([_row("c")])
    write(t1)
    write(t2)
    write(t1)  # a retried batch overwrites its own part
    assert len(list(parts.glob("part-*.parquet"))) == 2
    assert persisted_ids(parts) == {"a", "b", "c"}
    assert sorted(read_parts(parts).column("prompt_id").to_pylist()) == ["a", "b", "c"]
    manifest = finalize_parts(parts, tmp_path / "pool", expected_ids=["a", "b", "c"])
    assert manifest["num_rows"] == 3
    assert sorted(r.prompt_id for r in table_to_rows(read_pool(tmp_path / "pool"))) == \
        ["a", "b", "c"]


def test_finalize_refuses_missing_or_duplicated_prompts(tmp_path):
    parts = tmp_path / "parts"
    write = writer(parts)
    write(rows_to_table([_row("a"), _row("b")]))
    with pytest.raises(DataError, match="1 missing"):
        finalize_parts(parts, tmp_path / "pool", expected_ids=["a", "b", "c"])
    with pytest.raises(DataError, match="1 not expected"):
        finalize_parts(parts, tmp_path / "pool", expected_ids=["a"])
    write(rows_to_table([_row("b")]))  # another batch with "b" again
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
    assert overlap_seconds([(0.0, 3.0), (5.0, 6.0)], (2.0, 5.5)) == pytest.approx(1.5)


def test_batches_in_flight_are_those_started_and_not_done(tmp_path):
    record_start(tmp_path, "sampler", "a")
    record_start(tmp_path, "sampler", "b")
    assert sorted(in_flight(tmp_path, "sampler")) == ["a", "b"]
    record_busy(tmp_path, "sampler", 0.0, "a")
    assert in_flight(tmp_path, "sampler") == ["b"] and in_flight(tmp_path, "reward") == []
    assert len(busy_intervals(tmp_path)) == 1  # start markers are not intervals


def test_empty_batch_writes_nothing(tmp_path):
    assert write_part(tmp_path / "parts", rows_to_table([_row("a")]).slice(0, 0)) is None
    assert not list((tmp_path / "parts").glob("part-*"))


def test_a_part_is_trusted_only_when_its_checksum_matches(tmp_path):
    parts = tmp_path / "parts"
    good = write_part(parts, rows_to_table([_row("a")]))
    torn = write_part(parts, rows_to_table([_row("b")]))
    assert trusted_parts(parts) == sorted([good, torn])
    # A crash between the part and its checksum file, and a part damaged afterwards.
    torn.with_name(torn.name + ".sha256").unlink()
    assert persisted_ids(parts) == {"a"}
    (parts / good.name).write_bytes(good.read_bytes()[:-7])
    assert trusted_parts(parts) == [] and persisted_ids(parts) == set()
    with pytest.raises(DataError, match="1 missing"):
        finalize_parts(parts, tmp_path / "pool", expected_ids=["b"])


# --- RSO selection (paper sec. 4.7) -------------------------------------------------------------

TEXTS = [f"sample {i}" for i in range(6)]
REWARDS = [0.3, -1.0, 2.5, 0.9, 1.7, -0.2]


def _select(row, *, k=4, keep_human=True, beta=0.5, seed=0, rewards=REWARDS, version=0):
    return select_candidates(row, _samples(TEXTS, [version] * len(TEXTS)), rewards,
                             num_candidates=k, keep_human=keep_human, evolve_step=1, beta=beta,
                             seed=seed)


def test_select_keeps_k_minus_h_policy_candidates_and_the_human_ones():
    row = _row("a", responses=("human text", "old sample"), sources=("human", "policy@e0"),
               versions=(-1, 0), preferred=0)
    out = _select(row, k=4)
    assert out.num_candidates == 4
    assert out.responses[0] == "human text" and out.sources[0] == "human"
    assert out.preferred == 0 and out.evolve_step == 1
    policy = out.responses[1:]
    assert len(set(policy)) == 3 and set(policy) <= set(TEXTS)
    assert "old sample" not in out.responses
    assert out.sources[1:] == ("policy@e0",) * 3 and out.policy_version == (-1, 0, 0, 0)
    assert out.rewards == {} and out.ref_logps is None
    # The kept candidates stay in their sampling order.
    assert list(policy) == sorted(policy, key=TEXTS.index)

    two_humans = _row("b", responses=("h1", "h2"), sources=("human", "human"), versions=(-1, -1))
    assert _select(two_humans, k=4).num_candidates == 4
    assert _select(two_humans, k=4).sources.count("human") == 2
    no_human = _select(row, k=4, keep_human=False)
    assert no_human.num_candidates == 4 and "human" not in no_human.sources
    # At least one policy candidate, as without RSO, even when the humans fill K.
    assert _select(two_humans, k=2).num_candidates == 3


def test_select_is_deterministic_per_seed_prompt_and_version():
    rows = [_row(f"p{i}") for i in range(40)]
    first = [_select(r, beta=1.0).responses for r in rows]
    assert first == [_select(r, beta=1.0).responses for r in rows]  # a retried batch
    assert first != [_select(r, beta=1.0, seed=1).responses for r in rows]
    assert first != [_select(r, beta=1.0, version=3).responses for r in rows]
    assert len(set(first)) > 1, "every prompt got the same subset: the prompt id is ignored"
    assert rso_seed(0, 0, "p1") == rso_seed(0, 0, "p1")
    assert len({rso_seed(s, v, p) for s in (0, 1) for v in (0, 1) for p in ("a", "b")}) == 8


def test_select_with_tiny_beta_keeps_the_top_rewards():
    order = sorted(range(len(REWARDS)), key=lambda i: REWARDS[i], reverse=True)
    for k in (2, 4, 6):
        top = {TEXTS[i] for i in order[:k - 1]}
        for pid in ("a", "b", "c"):
            out = _select(_row(pid), k=k, beta=1e-6)
            assert set(out.responses[1:]) == top, (k, pid)


def test_select_across_prompts_follows_softmax_of_rewards():
    """Keeping one of N over many prompt ids: the per-prompt seeds must not bias the choice,
    so the kept candidate follows softmax(r / beta) (chi-square against the 0.999 quantile)."""
    beta, trials = 0.8, 4000
    counts = Counter(_select(_row(f"p{i}"), k=2, beta=beta).responses[1] for i in range(trials))
    weights = [math.exp(r / beta) for r in REWARDS]
    probs = {t: w / sum(weights) for t, w in zip(TEXTS, weights)}
    chi2 = sum((counts.get(t, 0) - trials * p) ** 2 / (trials * p) for t, p in probs.items())
    assert chi2 < 20.515, (chi2, counts)  # 5 degrees of freedom


def test_select_refuses_mismatched_lengths():
    with pytest.raises(DataError, match="3 rewards"):
        select_candidates(_row("a"), _samples(TEXTS, [0] * 6), [0.0] * 3, num_candidates=4,
                          keep_human=True, evolve_step=1, beta=0.5, seed=0)


# --- pools written by the jobs ------------------------------------------------------------------

def test_finalize_replaces_an_existing_pool_only_with_overwrite(tmp_path):
    parts = tmp_path / "parts"
    write_part(parts, rows_to_table([_row("a")]))
    finalize_parts(parts, tmp_path / "pool", expected_ids=["a"], metadata={"v": 1})
    with pytest.raises(DataError, match="already exists"):
        finalize_parts(parts, tmp_path / "pool", expected_ids=["a"], metadata={"v": 2})
    assert read_manifest(tmp_path / "pool")["metadata"] == {"v": 1}
    finalize_parts(parts, tmp_path / "pool", expected_ids=["a"], metadata={"v": 2},
                   overwrite=True)
    assert read_manifest(tmp_path / "pool")["metadata"] == {"v": 2}


def test_pool_output_dir_stays_under_run_dir_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    assert pool_output_dir(run, "pools/x", overwrite=False) == (run / "pools" / "x").resolve()
    for bad in ("../escape", "/abs/pool", "pools/../../escape", "."):
        with pytest.raises(RunDirError):
            pool_output_dir(run, bad, overwrite=False)
    assert not run.exists() and not (tmp_path / "escape").exists()
    write_pool([_row("a")], run / "pools" / "done")
    with pytest.raises(DataError, match="already exists"):
        pool_output_dir(run, "pools/done", overwrite=False)
    assert pool_output_dir(run, "pools/done", overwrite=True) == (run / "pools" / "done")
    (run / "notes").mkdir()
    (run / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a pool"):
        pool_output_dir(run, "notes", overwrite=True)


def test_source_metadata(tmp_path):
    assert source_metadata("builtin:reviews") == {}
    write_pool([_row("a")], tmp_path / "pool", metadata={"reward_normalisation": {
        "rm": {"mean": 1.0, "std": 2.0}}})
    assert source_metadata(str(tmp_path / "pool")) == {
        "reward_normalisation": {"rm": {"mean": 1.0, "std": 2.0}}}
    with pytest.raises(PoolIntegrityError):
        source_metadata(str(tmp_path / "missing"))


def test_namespaces_differ_per_job_and_output(tmp_path):
    a = namespace_for("base", "sample", tmp_path / "a")
    assert a.startswith("base-")
    assert a == namespace_for("base", "sample", tmp_path / "a")
    assert a != namespace_for("base", "sample", tmp_path / "b")
    assert a != namespace_for("base", "score", tmp_path / "a")


def test_finalize_keeps_the_input_row_order(tmp_path):
    """Parts land in the order actors finish; the pool has the order of expected_ids."""
    parts = tmp_path / "parts"
    write = writer(parts)
    write(rows_to_table([_row("c")]))
    write(rows_to_table([_row("b"), _row("a")]))
    finalize_parts(parts, tmp_path / "pool", expected_ids=["b", "c", "a"])
    assert [r.prompt_id for r in table_to_rows(read_pool(tmp_path / "pool"))] == ["b", "c", "a"]
