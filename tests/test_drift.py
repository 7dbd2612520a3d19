"""Recipe drift on resume: refused with the differing keys, or recorded when continuable; jobs
other than the main one never break a run directory's resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from _selfenhance import ROOT, job_env

from lire_ray import drift
from lire_ray.config import load_recipe
from lire_ray.errors import RunDirError
from lire_ray.pool import PoolRow, write_pool
from lire_ray.rundir import COMPLETE_MARKER, RunDir, confine_output, run_entries, run_entry


def _run(tmp_path, *overrides: str, steps_done: int = 0):
    """A run directory started with the tiny recipe and ``overrides``, ``steps_done`` complete."""
    recipe = load_recipe(None, [f"run.dir={tmp_path / 'run'}", *overrides])
    rd = RunDir(recipe.run.dir, resume=False)
    rd.create(recipe.to_yaml())
    state = rd.load_state()
    for step in range(1, steps_done + 1):
        write_pool([PoolRow(prompt_id="a", prompt="p", responses=["r"], sources=["human"],
                            policy_version=[-1])], rd.pool_dir(step))
        rd.checkpoint_dir(step).mkdir(parents=True)
        (rd.checkpoint_dir(step) / COMPLETE_MARKER).write_text("")
        rd.mark_complete(state, step)
    return rd


def _resume(rd: RunDir, *overrides: str):
    return load_recipe(None, [f"run.dir={rd.root}", "run.resume=true", *overrides])


def test_an_unchanged_recipe_resumes_without_a_history(tmp_path):
    rd = _run(tmp_path)
    before = rd.config_path.read_text()
    changes = drift.check_resume(rd, _resume(rd))
    assert changes == []  # run.resume differs and is ignored
    drift.record_changes(rd, _resume(rd), changes)
    assert rd.config_path.read_text() == before
    assert not (rd.root / drift.HISTORY_FILE).exists()


def test_a_changed_learning_rate_is_refused_naming_every_key(tmp_path):
    rd = _run(tmp_path)
    with pytest.raises(RunDirError) as err:
        drift.check_resume(rd, _resume(rd, "train.lr=1e-3", "loss.params.temperature=1.0",
                                       "evolve.steps=3"))
    text = str(err.value)
    assert "train.lr: 0.0005 -> 0.001" in text
    assert "loss.params.temperature: 2.0 -> 1.0" in text
    assert "evolve.steps" not in text.split("A resumed run")[0], "steps may grow"
    assert "config.yaml" in text


@pytest.mark.parametrize("override", ["run.seed=1", "sampler.seed=5", "rewards.0.normalize=zscore",
                                      "data.max_prompts=8", "model.lora.enabled=true"])
def test_keys_that_change_results_are_refused(tmp_path, override):
    rd = _run(tmp_path)
    with pytest.raises(RunDirError, match=override.split("=")[0].replace(".", r"\.")):
        drift.check_resume(rd, _resume(rd, override))


def test_continuable_changes_are_recorded_and_config_rewritten(tmp_path):
    rd = _run(tmp_path, steps_done=2)
    new = _resume(rd, "evolve.steps=3", "train.logger=none", "resources.sampler.num_cpus=0.5",
                  "ray.num_cpus=2", "ray.forward_env=[MY_TOKEN]")
    changes = drift.check_resume(rd, new)
    assert {c.key for c in changes} == {"evolve.steps", "train.logger",
                                        "resources.sampler.num_cpus", "ray.num_cpus",
                                        "ray.forward_env"}
    drift.record_changes(rd, new, changes)
    stored = yaml.safe_load(rd.config_path.read_text())
    assert stored["evolve"]["steps"] == 3 and stored["train"]["logger"] == "none"
    (line,) = (rd.root / drift.HISTORY_FILE).read_text().splitlines()
    record = json.loads(line)
    assert record["completed_steps"] == [1, 2]
    assert record["changes"]["evolve.steps"] == {"old": 2, "new": 3}
    # The rewritten config.yaml is what the next resume compares with.
    assert drift.check_resume(rd, _resume(rd, "evolve.steps=3", "train.logger=none",
                                          "resources.sampler.num_cpus=0.5", "ray.num_cpus=2",
                                          "ray.forward_env=[MY_TOKEN]")) == []


def test_fewer_steps_than_completed_is_refused(tmp_path):
    rd = _run(tmp_path, "evolve.steps=3", steps_done=3)
    with pytest.raises(RunDirError, match="completed 3 Evolve steps"):
        drift.check_resume(rd, _resume(rd, "evolve.steps=2"))
    rd2 = _run(tmp_path / "b", "evolve.steps=3", steps_done=1)
    assert [c.key for c in drift.check_resume(rd2, _resume(rd2, "evolve.steps=2"))] == \
        ["evolve.steps"]


def test_steps_cannot_change_under_one_spanning_schedule(tmp_path):
    rd = _run(tmp_path, "train.schedule=continue", steps_done=1)
    with pytest.raises(RunDirError, match="train.schedule=continue"):
        drift.check_resume(rd, _resume(rd, "train.schedule=continue", "evolve.steps=3"))


def test_a_config_from_another_schema_is_named(tmp_path):
    rd = _run(tmp_path)
    data = yaml.safe_load(rd.config_path.read_text())
    data["train"]["old_key"] = 1
    rd.config_path.write_text(yaml.safe_dump(data))
    with pytest.raises(RunDirError, match="old_key"):
        drift.check_resume(rd, _resume(rd))


def test_the_main_job_refuses_a_changed_lr_before_ray_starts(tmp_path):
    rd = _run(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "self_enhance.py"),
                           f"run.dir={rd.root}", "resume=true", "train.lr=1e-3"],
                          env=job_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.lr: 0.0005 -> 0.001" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in rd.root.iterdir()) == ["config.yaml"], "nothing written"


# ---------------------------------------------------------------------------------------------
# Other jobs' outputs in a run directory.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,owned", [
    ("config.yaml", True), ("pools/e1", True), ("pools/e12/part.parquet", True),
    ("pools/.e2.parts", True), ("checkpoints/e2", True), ("eval_after_e2.json", True),
    ("plots", True), ("pools", True), ("ray_train/policy", True),
    ("pools/sampled", False), ("pools/scored", False), ("checkpoints/train", False),
    ("checkpoints/dpo", False), ("eval", False), ("eval-e2", False), ("compare", False),
    ("pools/eval", False)])
def test_run_entries_are_told_from_job_outputs(path, owned):
    assert run_entry(path) is owned


def test_job_outputs_may_not_replace_a_runs_files(tmp_path):
    for output in ("pools/e1", "checkpoints/e2", "plots", "pools", "report.md"):
        with pytest.raises(RunDirError, match="keeps its own files"):
            confine_output(tmp_path, output)
    assert confine_output(tmp_path, "pools/sampled") == tmp_path.resolve() / "pools" / "sampled"


def test_resume_starts_a_run_beside_other_jobs_outputs(tmp_path):
    root = tmp_path / "run"
    write_pool([PoolRow(prompt_id="a", prompt="p", responses=["r"], sources=["human"],
                        policy_version=[-1])], root / "pools" / "sampled")
    (root / "eval").mkdir()
    (root / "eval" / "report.md").write_text("x")
    assert run_entries(root) == []
    with pytest.raises(RunDirError, match="resume=true"):
        RunDir(root, resume=False)
    rd = RunDir(root, resume=True)  # a new run beside them
    assert rd.load_state().completed == []
    # Files of a run without its config.yaml: refused, naming what was found.
    rd.pool_dir(1).mkdir(parents=True)
    with pytest.raises(RunDirError, match=r"pools/e1 of a run but no config\.yaml"):
        RunDir(root, resume=True)
