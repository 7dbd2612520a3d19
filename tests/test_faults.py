"""Fault injection on a real local Ray cluster: a sampler actor and a trainer worker are killed.

* The vLLM sampler actor killed while it samples a batch is restarted (``max_restarts``), comes
  back serving the policy version it served before, the batch is retried, and the pool holds
  every prompt exactly once.
* A trainer worker killed after the first epoch's checkpoint makes Ray Train restore from that
  checkpoint (``FailureConfig``), and the run completes with a complete checkpoint.

Each kill happens at a fault point the code under test honours (:mod:`lire_ray.faults`), not
at a moment a polling thread catches.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from _faults import fault_env, reached, registered_checkpoint, wait_for

from lire_ray.config import load_recipe
from lire_ray.pool import read_pool, read_pool_dataset, table_to_rows, write_pool
from lire_ray.rundir import COMPLETE_MARKER

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="faults")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def policy(tiny_cache):
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    return str(ensure_tiny_policy(tiny_cache))


def _recipe(tmp_path, *extra):
    return load_recipe(None, ["sampler.backend=hf", "sampler.batch_size=4", "data.max_prompts=24",
                              "ray.namespace=faults", "resources.sampler.max_restarts=2",
                              f"run.dir={tmp_path / 'run'}", *extra])


def test_vllm_sampler_killed_with_a_batch_in_flight_is_restarted_and_nothing_is_lost(
        cluster, policy, tmp_path, monkeypatch):
    """The vLLM sampler actor is killed while it samples a batch (the stage marked the batch
    started and not done): Ray restarts the actor, which serves the latest weights again, the
    interrupted batch is retried to completion, and the pool holds every prompt exactly once."""
    from lire_ray.inputs import load_prompt_rows
    from lire_ray.runtime import PoolBuilder, RoleGroup
    from lire_ray.runtime.pools import TIMING_DIR
    from lire_ray.timing import in_flight
    from lire_ray.training.result import PolicyInit

    recipe = _recipe(tmp_path, "sampler.backend=vllm", "sampler.gpu_memory_utilization=0.2")
    rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    fault = tmp_path / "fault.json"
    # The sampler kills itself in the first batch it is given, once (its restart carries on).
    for key, value in fault_env("sample_rows", fault, action="kill").items():
        monkeypatch.setenv(key, value)
    with RoleGroup(recipe, namespace="faults", policy=policy, rewards=True,
                   state_dir=tmp_path / "state") as roles:
        roles.serve(PolicyInit(policy), 1)  # the samplers now serve "version 1"
        parts = tmp_path / "parts"
        builder = PoolBuilder(recipe, roles)
        first_pid = ray.get(roles.samplers[0].ping.remote())["pid"]
        builder.run(rows, parts_dir=parts, evolve_step=2)
        assert reached(fault) == {"pid": first_pid, "point": "sample_rows"}, \
            "the sampler was not killed with a batch in flight"
        info = ray.get(roles.samplers[0].ping.remote())
        assert info["pid"] != first_pid, "the sampler was not restarted"
        assert info["policy_version"] == 1, "a restarted sampler must serve the latest weights"
        assert not in_flight(parts / TIMING_DIR, "sampler"), "the interrupted batch never finished"
        builder.finalize(rows, parts_dir=parts, out_dir=tmp_path / "pool")
        pool = table_to_rows(read_pool(tmp_path / "pool"))
        assert sorted(r.prompt_id for r in pool) == sorted(r.prompt_id for r in rows)
        assert all(set(v for v in r.policy_version if v >= 0) == {1} for r in pool)


def _kill_after_registration(fault, storage: Path, killed: list) -> None:
    """Wait for the worker stopped at the fault point and for Ray Train to register the
    checkpoint it reported, then kill that worker."""
    record = wait_for(lambda: reached(fault), "the fault point")
    try:
        wait_for(lambda: registered_checkpoint(storage) == record["point"].split(":")[1],
                 "the checkpoint's registration", timeout=300)
        killed.append(record["pid"])
    finally:
        # Killed in any case: a worker left waiting at the fault point would hang the run.
        os.kill(record["pid"], signal.SIGKILL)


def test_trainer_worker_killed_restores_from_checkpoint(cluster, policy, tmp_path, monkeypatch):
    from lire_ray.runtime.trainer import TrainerGroup
    from lire_ray.training.result import PolicyInit

    pool_dir = _score_tiny_pool(policy, tmp_path)
    rows = table_to_rows(read_pool(pool_dir))
    recipe = _recipe(tmp_path, "resources.trainer.max_failures=2", "train.epochs=3",
                     "train.micro_batch_prompts=4")
    storage = tmp_path / "ray_train"
    fault = tmp_path / "fault.json"
    for key, value in fault_env("epoch_checkpoint:v1-epoch-0001", fault).items():
        monkeypatch.setenv(key, value)
    killed: list[int] = []
    # A TrainerGroup names its Ray Train run after the policy version it trains.
    thread = threading.Thread(target=_kill_after_registration,
                              args=(fault, storage / "policy-v1", killed), daemon=True)
    thread.start()
    result = TrainerGroup(recipe, storage_path=str(storage), name="policy").fit(
        read_pool_dataset(pool_dir), num_prompts=len(rows), init=PolicyInit(policy),
        output_dir=str(tmp_path / "ckpt"), policy_version=1)
    thread.join(timeout=5)
    assert killed, "no trainer worker was killed after its first epoch's checkpoint"
    assert result.checkpoint_dir is not None
    assert (tmp_path / "ckpt" / COMPLETE_MARKER).is_file()
    assert result.epochs_done == 3


def _score_tiny_pool(policy: str, tmp_path):
    """A small scored pool of the builtin task (human review + 3 policy samples, VADER)."""
    from actors.reward import RewardActor
    from lire_ray.config import RewardModelConfig
    from lire_ray.inputs import load_prompt_rows
    from lire_ray.sampling import PromptSamples, build_sampler, merge_candidates

    recipe = _recipe(tmp_path)
    rows = load_prompt_rows("builtin:reviews", 16)
    sampler = build_sampler(policy, recipe.sampler, dtype="float32")
    cands = sampler.generate([r.prompt for r in rows], n=3, seed=0)
    rows = [merge_candidates(r, PromptSamples(r.prompt, tuple(cs)), keep_human=True,
                             evolve_step=1) for r, cs in zip(rows, cands)]
    scored = RewardActor([RewardModelConfig(
        name="vader", kind="python", path="lire_ray.demo.reviews:vader_reward")]).score_rows(rows)
    out = tmp_path / "scored"
    write_pool(scored, out)
    return out


def test_resident_trainer_worker_killed_mid_step_loses_and_repeats_no_prompt(cluster, policy,
                                                                              tmp_path,
                                                                              monkeypatch):
    """Algorithm 1 with the resident trainer group: a trainer worker is killed right after the
    first epoch of Evolve step 2; Ray Train restarts the group from that epoch's checkpoint,
    the run completes, every pool holds each prompt once and every epoch of every step trained
    on each prompt once."""
    import json

    from lire_ray import algorithm
    from lire_ray.inputs import load_prompt_rows
    from lire_ray.rundir import RunDir
    from lire_ray.runtime import RoleGroup, make_trainer

    recipe = _recipe(tmp_path, "data.max_prompts=16", "evolve.steps=2", "train.epochs=3",
                     "train.micro_batch_prompts=2", "resources.trainer.max_failures=2",
                     "train.resident=true", "train.logger=none")
    rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    rundir = RunDir(tmp_path / "run", resume=False)
    rundir.create(recipe.to_yaml())
    storage = rundir.root / "ray_train"
    fault = tmp_path / "fault.json"
    for key, value in fault_env("epoch_checkpoint:v2-epoch-0001", fault).items():
        monkeypatch.setenv(key, value)
    killed: list[int] = []
    thread = threading.Thread(target=_kill_after_registration,
                              args=(fault, storage / "policy", killed), daemon=True)
    thread.start()
    with RoleGroup(recipe, namespace="faults-resident", policy=policy, rewards=True,
                   state_dir=rundir.root) as roles:
        trainer = make_trainer(recipe, storage_path=str(storage), name="policy", roles=roles)
        algorithm.self_enhance(algorithm.Chain(recipe, rundir, roles, trainer, base=policy,
                                               norm={}), rows)
        served = ray.get(roles.samplers[0].ping.remote())["policy_version"]
    thread.join(timeout=5)
    assert killed, "no trainer worker was killed during Evolve step 2"
    assert served == 2, "the samplers must serve the last policy"
    assert rundir.load_state().completed == [1, 2]
    for step in (1, 2):
        pool = table_to_rows(read_pool(rundir.pool_dir(step)))
        assert sorted(r.prompt_id for r in pool) == sorted(r.prompt_id for r in rows)
        history = [json.loads(line) for line in (rundir.checkpoint_dir(step) /
                                                 "train_history.jsonl").read_text().splitlines()]
        for epoch in (1, 2, 3):
            trained = sum(h["prompts"] for h in history if h["epoch"] == epoch)
            assert trained == len(rows), (step, epoch, trained)
