"""Kill -9 of the main job's driver after its first Evolve step, then ``resume=true``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _selfenhance import BIN, ROOT, check_pools, job_env

pytestmark = pytest.mark.integration


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"job exited early with {proc.returncode}")
        time.sleep(1)
    raise AssertionError("timed out")


def test_kill_driver_then_resume(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "jobs" / "self_enhance.py"), f"run.dir={run}",
            f"run.cache_dir={tmp_path / 'cache'}", "data.max_prompts=24", "data.eval_prompts=8",
            "train.epochs=1", "evolve.steps=2"]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(args, env=job_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_for(lambda: (run / "state.json").is_file(), 900, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=job_env(), capture_output=True)
    state = json.loads((run / "state.json").read_text())
    assert state["completed"] == [1]
    first_pool = (run / "pools" / "e1" / "manifest.json").read_bytes()

    refused = subprocess.run(args, env=job_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = subprocess.run(args + ["resume=true"], env=job_env(), capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((run / "state.json").read_text())["completed"] == [1, 2]
    assert (run / "pools" / "e1" / "manifest.json").read_bytes() == first_pool, \
        "a completed stage must not be redone"
    check_pools(run, steps=2, num_prompts=24)
    assert not list((run / "pools").glob(".*")), "temporary pool parts left behind"
