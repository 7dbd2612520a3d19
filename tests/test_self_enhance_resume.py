"""Kill -9 of the main job's driver mid-sampling and mid-training, then ``resume=true``.

The run keeps one resident trainer group, trains a LoRA adapter without merging it
(``model.lora.merge_on_save=false``: the samplers, here the transformers backend, attach it
with peft on the initial policy; vLLM serving an unmerged adapter is checked on the real
model in ``tests/test_real_model.py``), z-score normalises the training reward with
statistics fitted once before the first pool, and logs to TensorBoard. Each resume must redo
no finished work: the prompts of D_1 already sampled and scored are not sampled again, and
training of step 2 continues from its last epoch checkpoint. In the end every pool holds each
prompt once, every epoch trained on each prompt once, and the run is one experiment.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _faults import fault_env, reached, registered_checkpoint
from _selfenhance import ROOT, check_pools, job_env

from lire_ray.demo.reviews import afinn_reward, vader_reward
from lire_ray.pool import read_pool, table_to_rows

pytestmark = pytest.mark.integration

PROMPTS = 12
#: Prompts per optimizer step (three optimizer steps per epoch).
MICRO = 4


def _run_until(args, log: Path, predicate, timeout: float = 900, env=None) -> None:
    """Start the job and kill -9 its whole process group (driver and local Ray cluster) as
    soon as ``predicate()`` holds."""
    with log.open("w") as fh:
        proc = subprocess.Popen(args, env=env or job_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + timeout
            while not predicate():
                if proc.poll() is not None:
                    raise AssertionError(f"job exited early with {proc.returncode}: "
                                         + log.read_text()[-2000:])
                if time.time() > deadline:
                    raise AssertionError("timed out waiting for the kill point")
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(2)  # let the killed cluster's processes go


def _trusted_parts(parts: Path) -> int:
    return len(list(parts.glob("part-*.parquet.sha256"))) if parts.is_dir() else 0


def _tensorboard_scalars(log_dir: Path) -> dict[str, list[int]]:
    """``{tag: [steps]}`` from every TensorBoard event file in ``log_dir`` (TFRecord framing:
    length, crc, event proto, crc)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[int]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(event.step)
    return out


@pytest.mark.timeout(2400)  # three launches of the job
def test_kill_mid_sampling_and_mid_training_then_resume(tmp_path, tiny_cache):
    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "jobs" / "self_enhance.py"), f"run.dir={run}",
            f"run.cache_dir={tiny_cache}", f"data.max_prompts={PROMPTS}",
            "data.eval_prompts=4", "sampler.batch_size=4", "sampler.backend=hf",
            "train.epochs=2",
            f"train.micro_batch_prompts={MICRO}", "evolve.steps=2",
            "model.lora.enabled=true", "model.lora.merge_on_save=false", "model.lora.r=8",
            "model.lora.alpha=16", "rewards.0.normalize=zscore", "train.logger=tensorboard",
            "ray.address=local"]

    # 1. Killed while D_1 is being sampled: some of its parts are persisted, the pool is not.
    parts = run / "pools" / ".e1.parts"
    first_fault = tmp_path / "first-fault.json"
    _run_until(args, tmp_path / "first.log", lambda: reached(first_fault),
               env=job_env(**fault_env("pool_part:2", first_fault)))
    assert _trusted_parts(parts) >= 2
    assert not (run / "pools" / "e1").exists()
    built = {p.name for p in parts.glob("part-*.parquet")}
    norm = json.loads((run / "reward_norm.json").read_text())

    refused = subprocess.run(args, env=job_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "resume=true" in refused.stderr
    assert "Traceback" not in refused.stderr

    # 2. Resumed, then killed during Evolve step 2's second epoch: the trainer worker stops at
    # the fault point right after reporting the first epoch's checkpoint, and the job is
    # killed once Ray Train has registered it (the worker cannot train on meanwhile).
    storage = run / "ray_train" / "policy"
    fault = tmp_path / "fault.json"
    _run_until(args + ["resume=true"], tmp_path / "second.log",
               lambda: reached(fault) and registered_checkpoint(storage) == "v2-epoch-0001",
               env=job_env(**fault_env("epoch_checkpoint:v2-epoch-0001", fault)))
    second = (tmp_path / "second.log").read_text()
    assert "already built" in second, "the resumed run sampled D_1's finished prompts again"
    assert json.loads((run / "state.json").read_text())["completed"] == [1]
    first_pool = (run / "pools" / "e1" / "manifest.json").read_bytes()
    kept = {Path(f["name"]).name for f in json.loads(first_pool)["files"]}
    assert kept and built, "the pool and the surviving parts must both be there"

    # 3. Resumed again: step 2 continues from its first epoch's checkpoint.
    done = subprocess.run(args + ["resume=true"], env=job_env(), capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The trainer worker's lines are in the run's log of the actors' output.
    assert "resumed after epoch 1" in (run / "job.log").read_text()
    assert json.loads((run / "state.json").read_text())["completed"] == [1, 2]
    assert (run / "pools" / "e1" / "manifest.json").read_bytes() == first_pool, \
        "a completed pool must not be redone"
    check_pools(run, steps=2, num_prompts=PROMPTS)
    for step in (1, 2):
        history = [json.loads(line) for line in (run / "checkpoints" / f"e{step}" /
                                                 "train_history.jsonl").read_text().splitlines()]
        for epoch in (1, 2):
            trained = sum(h["prompts"] for h in history if h["epoch"] == epoch)
            assert trained == PROMPTS, (step, epoch, trained)

    # LoRA without merge: every checkpoint is an adapter on the same initial policy.
    infos = [json.loads((run / "checkpoints" / f"e{k}" / "train_info.json").read_text())
             for k in (1, 2)]
    assert [i["full_model"] for i in infos] == [False, False]
    assert not (run / "checkpoints" / "e2" / "model.safetensors").exists()
    assert infos[1]["init_model"] == infos[0]["init_model"], "adapters share the initial base"
    served = json.loads((run / "served_policy.json").read_text())
    assert served["path"] == str(run.resolve() / "checkpoints" / "e2" / "adapter")
    assert served["version"] == 2 and served["adapter"] is True

    # Frozen normalisation: fitted once, recorded in every pool, applied to every vader score.
    assert set(norm) == {"vader"} and norm["vader"]["std"] > 0
    assert json.loads((run / "reward_norm.json").read_text()) == norm
    for step in (1, 2):
        manifest = json.loads((run / "pools" / f"e{step}" / "manifest.json").read_text())
        assert manifest["metadata"]["reward_normalisation"] == norm
        rows = table_to_rows(read_pool(run / "pools" / f"e{step}"))
        prompts = [r.prompt for r in rows for _ in r.responses]
        texts = [t for r in rows for t in r.responses]
        expected = [(x - norm["vader"]["mean"]) / norm["vader"]["std"]
                    for x in vader_reward(prompts, texts)]
        assert [s for r in rows for s in r.rewards["vader"]] == pytest.approx(expected, abs=1e-9)
        assert [s for r in rows for s in r.rewards["afinn"]] == \
            pytest.approx(afinn_reward(prompts, texts), abs=1e-9), "afinn is not normalised"
    assert not list((run / "pools").glob(".*")), "temporary pool parts left behind"

    # One experiment: training steps of both Evolve steps on one global step axis, the Evolve
    # steps' metrics and the held-out evaluation before (step 0) and after.
    scalars = _tensorboard_scalars(run / "tracking")
    steps = sorted(set(scalars["train/loss"]))
    assert steps[0] == 1 and len(steps) == 2 * 2 * PROMPTS // MICRO  # E x I x steps per epoch
    assert sorted(set(scalars["evolve/policy_reward_mean"])) == [steps[len(steps) // 2 - 1],
                                                                 steps[-1]]
    assert sorted(set(scalars["eval/T0/mean/afinn"])) == [0, steps[-1]]
