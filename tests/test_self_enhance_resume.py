"""Kill -9 of the main job's driver after its first Evolve step, then ``resume=true``.

The run trains a LoRA adapter without merging it (``model.lora.merge_on_save=false``): the
samplers serve each step's adapter as a vLLM LoRA request on the initial policy, the next step
keeps training that adapter, and a resumed run picks the adapter up from the checkpoint. The
training reward is z-score normalised with statistics fitted once, before the first pool, and
reused by the resumed run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _selfenhance import BIN, ROOT, check_pools, job_env

from lire_ray.demo.reviews import afinn_reward, vader_reward
from lire_ray.pool import read_pool, table_to_rows

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
            "train.epochs=1", "evolve.steps=2", "model.lora.enabled=true",
            "model.lora.merge_on_save=false", "model.lora.r=8", "model.lora.alpha=16",
            "rewards.0.normalize=zscore"]
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
    norm = json.loads((run / "reward_norm.json").read_text())

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
    infos = [json.loads((run / "checkpoints" / f"e{k}" / "train_info.json").read_text())
             for k in (1, 2)]
    assert [i["full_model"] for i in infos] == [False, False]
    assert not (run / "checkpoints" / "e2" / "model.safetensors").exists()
    adapter_1 = run.resolve() / "checkpoints" / "e1" / "adapter"
    assert infos[0]["init_adapter"] is None
    assert infos[1]["init_adapter"] == str(adapter_1), "step 2 must continue step 1's adapter"
    assert infos[1]["init_model"] == infos[0]["init_model"], "adapters share the initial base"
    # Frozen normalisation: fitted once, recorded in every pool, applied to every vader score.
    assert set(norm) == {"vader"} and norm["vader"]["std"] > 0
    assert json.loads((run / "reward_norm.json").read_text()) == norm
    for step in (1, 2):
        manifest = json.loads((run / "pools" / f"e{step}" / "manifest.json").read_text())
        assert manifest["metadata"]["reward_normalisation"] == norm
        rows = table_to_rows(read_pool(run / "pools" / f"e{step}"))
        prompts = [r.prompt for r in rows for _ in r.responses]
        texts = [t for r in rows for t in r.responses]
        raw = vader_reward(prompts, texts)
        stored = [s for r in rows for s in r.rewards["vader"]]
        expected = [(x - norm["vader"]["mean"]) / norm["vader"]["std"] for x in raw]
        assert stored == pytest.approx(expected, abs=1e-9)
        assert [s for r in rows for s in r.rewards["afinn"]] == \
            pytest.approx(afinn_reward(prompts, texts), abs=1e-9), "afinn is not normalised"
    served = json.loads((run / "served_policy.json").read_text())
    assert served == {"path": str(run.resolve() / "checkpoints" / "e2" / "adapter"), "version": 2,
                      "adapter": True}
    assert not list((run / "pools").glob(".*")), "temporary pool parts left behind"
