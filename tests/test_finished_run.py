"""Re-running a finished run re-reports it without starting anything (no Ray, no actors)."""

from __future__ import annotations

import sys

from lire_ray import self_enhance
from lire_ray.config import load_recipe
from lire_ray.run_report import finished_report, finished_run
from lire_ray.rundir import COMPLETE_MARKER, RunDir


def _finished_run(tmp_path, steps: int = 2):
    recipe = load_recipe(None, [f"run.dir={tmp_path / 'run'}", f"evolve.steps={steps}",
                                "run.resume=true"])
    rundir = RunDir(recipe.run.dir, resume=True)
    rundir.create(recipe.to_yaml())
    state = rundir.load_state()
    for k in range(1, steps + 1):
        rundir.pool_dir(k).mkdir(parents=True)
        (rundir.pool_dir(k) / "manifest.json").write_text("{}")
        rundir.checkpoint_dir(k).mkdir(parents=True)
        (rundir.checkpoint_dir(k) / COMPLETE_MARKER).write_text("")
        rundir.mark_complete(state, k)
    (rundir.root / f"eval_after_e{steps}.json").write_text("{}")
    (rundir.root / "summary.txt").write_text("vader: 0.1 -> 0.8\n")
    (rundir.root / "report.md").write_text("# report\n")
    return recipe, rundir


def test_a_finished_run_returns_its_report_without_ray(tmp_path):
    recipe, rundir = _finished_run(tmp_path)
    before = (rundir.root / "report.md").stat().st_mtime_ns
    assert finished_run(recipe) == rundir.root / "report.md"
    assert self_enhance.run(recipe) == rundir.root / "report.md"
    assert (rundir.root / "report.md").stat().st_mtime_ns == before, "report rewritten"
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray was started for a finished run"


def test_what_is_not_finished(tmp_path):
    recipe, rundir = _finished_run(tmp_path)
    assert finished_report(rundir, recipe) == rundir.root / "report.md"
    more = recipe.model_copy(update={"evolve": recipe.evolve.model_copy(update={"steps": 3})})
    assert finished_report(rundir, more) is None, "a step is still to run"
    (rundir.root / f"eval_after_e{recipe.evolve.steps}.json").unlink()
    assert finished_report(rundir, recipe) is None, "the final evaluation is due"
    (rundir.root / f"eval_after_e{recipe.evolve.steps}.json").write_text("{}")
    (rundir.root / "report.md").unlink()
    assert finished_report(rundir, recipe) is None, "the report is due"
