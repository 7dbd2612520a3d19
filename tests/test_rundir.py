"""Run directory bookkeeping: refusal without resume, trusted stages, path confinement."""

from __future__ import annotations

import json

import pytest

from lire_ray.atomic import atomic_write_text
from lire_ray.errors import RunDirError
from lire_ray.pool import PoolRow, write_pool
from lire_ray.rundir import COMPLETE_MARKER, RunDir, confine


def _complete_stage(rd: RunDir, step: int) -> None:
    write_pool([PoolRow(prompt_id="a", prompt="p", responses=["r"], sources=["human"],
                        policy_version=[-1])], rd.pool_dir(step))
    rd.checkpoint_dir(step).mkdir(parents=True)
    (rd.checkpoint_dir(step) / COMPLETE_MARKER).write_text("")


def test_non_empty_dir_needs_resume(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(RunDirError, match="resume=true"):
        RunDir(tmp_path, resume=False)
    RunDir(tmp_path, resume=True)  # no run here: one starts beside the file
    (tmp_path / "state.json").write_text("{}")  # a run's file without its recipe
    with pytest.raises(RunDirError, match="config.yaml"):
        RunDir(tmp_path, resume=True)
    RunDir(tmp_path / "fresh", resume=False)  # a new directory is fine
    RunDir(tmp_path / "fresh2", resume=True)  # resume of nothing starts fresh


def test_a_run_continues_from_its_last_complete_checkpoint(tmp_path):
    rd = RunDir(tmp_path / "run", resume=False)
    state = rd.load_state()
    assert state.completed == [] and state.policy_version == 0
    _complete_stage(rd, 1)
    rd.mark_complete(state, 1)
    _complete_stage(rd, 2)
    rd.mark_complete(state, 2)
    assert rd.load_state().completed == [1, 2]
    # The last checkpoint lost its marker (interrupted rewrite): continue from the one before.
    (rd.checkpoint_dir(2) / COMPLETE_MARKER).unlink()
    assert rd.load_state().completed == [1] and rd.load_state().policy_version == 1
    # An earlier step without a checkpoint (train.checkpoint_every > 1) does not matter ...
    (rd.checkpoint_dir(2) / COMPLETE_MARKER).write_text("complete\n")
    (rd.checkpoint_dir(1) / COMPLETE_MARKER).unlink()
    assert rd.load_state().completed == [1, 2]
    # ... but every pool up to the checkpoint must be complete.
    (rd.pool_dir(1) / "manifest.json").unlink()
    state = rd.load_state()
    assert state.completed == [] and state.policy_version == 0


def test_mark_complete_refuses_incomplete_checkpoint(tmp_path):
    rd = RunDir(tmp_path / "run", resume=False)
    rd.checkpoint_dir(1).mkdir(parents=True)
    with pytest.raises(RunDirError, match="not complete"):
        rd.mark_complete(rd.load_state(), 1)
    assert not rd.state_path.exists()


def test_discard_incomplete_removes_leftovers(tmp_path):
    rd = RunDir(tmp_path / "run", resume=False)
    rd.checkpoint_dir(3).mkdir(parents=True)
    rd.pool_dir(3).mkdir(parents=True)
    rd.discard_incomplete(3)
    assert not rd.checkpoint_dir(3).exists() and not rd.pool_dir(3).exists()


def test_confine_rejects_escapes(tmp_path):
    assert confine(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(RunDirError, match="escapes"):
        confine(tmp_path, "../outside")
    with pytest.raises(RunDirError, match="escapes"):
        confine(tmp_path, "/etc/passwd")


def test_confine_accepts_absolute_paths_inside_and_follows_links(tmp_path):
    base = tmp_path / "run"
    base.mkdir()
    (tmp_path / "elsewhere").mkdir()
    assert confine(base, base / "eval") == base.resolve() / "eval"
    assert confine(base, "a/../b") == base.resolve() / "b"
    assert confine(base, ".") == base.resolve()
    with pytest.raises(RunDirError, match="escapes"):
        confine(base, tmp_path / "run-sibling")  # shares the prefix, is not inside
    (base / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="escapes"):
        confine(base, "link/eval")


def test_atomic_write_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_text(target, json.dumps({"ok": 1}))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("lire_ray.rundir.os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "partial")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
