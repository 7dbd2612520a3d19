"""Sampling ahead without Ray: the background build of D_{e+1} (lire_ray.pool_sources) waits for
D_e to be fully persisted, hands back its parts, passes failures on and can be cancelled."""

from __future__ import annotations

import time

import pytest

from lire_ray.config import load_recipe
from lire_ray.errors import ActorFailure
from lire_ray.pool import PoolRow, rows_to_table
from lire_ray.pool.parts import persisted_ids, write_part
from lire_ray.pool_sources import (
    MaterialisedPools,
    SampledAheadPools,
    StreamedPools,
    _Ahead,
    pool_source,
    pool_stats,
)


def _table(*ids):
    return rows_to_table([PoolRow(prompt_id=i, prompt=f"p {i}", responses=["r"],
                                  sources=["human"], policy_version=[-1]) for i in ids])


def test_persisted_ids_reads_every_part_once(tmp_path):
    write_part(tmp_path, _table("a", "b"))
    cache: dict = {}
    assert persisted_ids(tmp_path, cache) == {"a", "b"}
    write_part(tmp_path, _table("c"))
    assert persisted_ids(tmp_path, cache) == {"a", "b", "c"}
    assert len(cache) == 2
    assert persisted_ids(tmp_path / "missing") == set()


def test_waits_for_the_current_pool_then_runs_to_completion(tmp_path, monkeypatch):
    import threading

    from lire_ray import pool_sources

    current = tmp_path / "current"
    calls = []
    # The background thread reports each look at D_e's parts; the test goes on once it has
    # seen 'a' without 'b' (not after some sleep a loaded machine may not honour).
    saw_incomplete = threading.Event()

    def watched(parts_dir, cache=None):
        ids = persisted_ids(parts_dir, cache)
        if ids == {"a"}:
            saw_incomplete.set()
        return ids

    monkeypatch.setattr(pool_sources, "persisted_ids", watched)

    def build(stop):
        calls.append(time.time())
        write_part(tmp_path / "ahead", _table("a", "b"))

    write_part(current, _table("a"))
    ahead = _Ahead(build, tmp_path / "ahead", step=2, wait_for=current, expected=["a", "b"],
                   poll_s=0.02)
    assert saw_incomplete.wait(timeout=60), "the background thread never looked at the parts"
    assert calls == [], "started before 'b' was sampled"
    released = time.time()
    write_part(current, _table("b"))
    parts = ahead.result()
    assert parts == tmp_path / "ahead"
    assert len(calls) == 1 and calls[0] >= released
    assert persisted_ids(parts) == {"a", "b"}


def test_clears_parts_left_by_a_crash(tmp_path):
    stale = tmp_path / "ahead" / "part-old.parquet"
    stale.parent.mkdir()
    stale.write_text("left by a crash")
    write_part(tmp_path / "current", _table("x"))
    ahead = _Ahead(lambda stop: None, tmp_path / "ahead", step=3,
                   wait_for=tmp_path / "current", expected=["x"])
    assert ahead.result() == tmp_path / "ahead"
    assert not stale.exists()


def test_build_errors_reach_the_caller(tmp_path):
    def build(stop):
        raise ActorFailure("sampler", "died")

    write_part(tmp_path / "current", _table("x"))
    ahead = _Ahead(build, tmp_path / "ahead", step=2, wait_for=tmp_path / "current",
                   expected=["x"])
    with pytest.raises(ActorFailure, match="died"):
        ahead.result()


def test_cancel_before_start_drops_everything(tmp_path):
    ahead = _Ahead(lambda stop: None, tmp_path / "ahead", step=2, wait_for=tmp_path / "never",
                   expected=["x"], poll_s=0.02)
    ahead.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        ahead.result()
    assert not (tmp_path / "ahead").exists()


def test_the_recipe_picks_the_way_pools_are_built(tmp_path):
    cases = {("colocate", 0): MaterialisedPools, ("split", 0): StreamedPools,
             ("split", 1): SampledAheadPools}
    for (placement, lag), cls in cases.items():
        recipe = load_recipe(None, [f"resources.placement={placement}",
                                    f"evolve.max_staleness={lag}"])
        assert type(pool_source(recipe, None, None, [])) is cls


def test_pool_stats_by_hand():
    rows = [PoolRow(prompt_id="a", prompt="p", responses=["h", "x", "y"],
                    sources=["human", "policy@e1", "policy@e0"], policy_version=[-1, 1, 0],
                    rewards={"rm": [1.0, 2.0, 4.0]})]
    stats = pool_stats(rows, "rm", step=2)
    assert stats == {"prompts": 1, "candidates": 3, "policy_reward_mean": 3.0,
                     "human_reward_mean": 1.0, "max_staleness_seen": 1}
