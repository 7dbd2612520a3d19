"""``jobs/train.py`` on prepared preference pairs: from the data's labels alone, no reward model
(real Ray Train + DeepSpeed on CPU), and a recipe whose training reward the pool lacks is
refused before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.pool import read_pool, table_to_rows

pytestmark = pytest.mark.integration


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=job_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def hh_pool(tmp_path_factory):
    pool = tmp_path_factory.mktemp("pools") / "hh"
    prep = _run("jobs/prepare.py", "--format", "hh", "--input",
                str(ROOT / "tests" / "fixtures" / "hh.jsonl"), "--output", str(pool))
    assert prep.returncode == 0, prep.stderr[-2000:]
    rows = table_to_rows(read_pool(pool))
    assert rows and all(r.rewards == {} and r.preferred == 0 for r in rows)
    return pool


def test_train_from_labels_alone(hh_pool, tmp_path, tiny_cache):
    run = tmp_path / "run"
    proc = _run("jobs/train.py", "--config", "configs/tiny-labels.yaml", f"data={hh_pool}",
                f"run.dir={run}", f"run.cache_dir={tiny_cache}", "ray.address=local")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = run / "checkpoints" / "train"
    assert (out / "COMPLETE").is_file()
    history = [json.loads(line) for line in (out / "train_history.jsonl").read_text()
               .splitlines()]
    rows = len(table_to_rows(read_pool(hh_pool)))
    assert sum(h["prompts"] for h in history if h["epoch"] == 1) == rows
    # The label reward gives the chosen answer 1 and the rejected one 0, so LIRE's expected
    # reward under Q lies strictly between them.
    assert all(-1.0 < h["loss"] < 0.0 for h in history)


def test_a_training_reward_the_pool_lacks_is_refused_before_ray(hh_pool, tmp_path,
                                                              tiny_cache):
    run = tmp_path / "run"
    proc = _run("jobs/train.py", "--config", "configs/tiny.yaml", f"data={hh_pool}",
                f"run.dir={run}", f"run.cache_dir={tiny_cache}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "trains on reward 'vader'" in proc.stderr and "no reward model" in proc.stderr
    assert "started a local Ray cluster" not in proc.stderr and not run.exists()
