"""Sampling ahead (lire_ray.lookahead) without Ray: when it starts, what it hands back, failures."""

from __future__ import annotations

import time

import pytest

from lire_ray.errors import ActorFailure
from lire_ray.lookahead import Lookahead, persisted_ids
from lire_ray.pool import PoolRow, rows_to_table
from lire_ray.stream import PartWriter


def _table(*ids):
    return rows_to_table([PoolRow(prompt_id=i, prompt=f"p {i}", responses=["r"],
                                  sources=["human"], policy_version=[-1]) for i in ids])


def test_persisted_ids_reads_every_part_once(tmp_path):
    writer = PartWriter(str(tmp_path))
    writer(_table("a", "b"))
    cache: dict = {}
    assert persisted_ids(tmp_path, cache) == {"a", "b"}
    writer(_table("c"))
    assert persisted_ids(tmp_path, cache) == {"a", "b", "c"}
    assert len(cache) == 2
    assert persisted_ids(tmp_path / "missing") == set()


def test_waits_for_the_current_stream_then_runs_to_completion(tmp_path):
    current = tmp_path / "current"
    calls = []

    def stream():
        calls.append(time.time())
        PartWriter(str(tmp_path / "ahead"))(_table("a", "b"))
        return iter([1, 2, 3])

    ahead = Lookahead(stream, tmp_path / "ahead", step=2, wait_for=current,
                      expected=["a", "b"], poll_s=0.02)
    writer = PartWriter(str(current))
    writer(_table("a"))
    time.sleep(0.2)
    assert calls == [] and ahead.started_at is None, "started before 'b' was sampled"
    released = time.time()
    writer(_table("b"))
    parts = ahead.result(timeout=10)
    assert parts == tmp_path / "ahead"
    assert len(calls) == 1 and calls[0] >= released
    assert ahead.started_at <= ahead.finished_at
    assert persisted_ids(parts) == {"a", "b"}


def test_starts_at_once_without_wait_for_and_clears_old_parts(tmp_path):
    stale = tmp_path / "ahead" / "part-old.parquet"
    stale.parent.mkdir()
    stale.write_text("left by a crash")
    ahead = Lookahead(lambda: iter(()), tmp_path / "ahead", step=3)
    assert ahead.result(timeout=10) == tmp_path / "ahead"
    assert not stale.exists()


def test_stream_errors_reach_the_caller(tmp_path):
    def stream():
        raise ActorFailure("sampler", "died")

    ahead = Lookahead(stream, tmp_path / "ahead", step=2)
    with pytest.raises(ActorFailure, match="died"):
        ahead.result(timeout=10)


def test_cancel_before_start_drops_everything(tmp_path):
    ahead = Lookahead(lambda: iter(()), tmp_path / "ahead", step=2,
                      wait_for=tmp_path / "never", expected=["x"], poll_s=0.02)
    with pytest.raises(TimeoutError):
        ahead.result(timeout=0.1)
    ahead.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        ahead.result(timeout=1)
    assert not (tmp_path / "ahead").exists()
