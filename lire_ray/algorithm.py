"""Algorithm 1 of the LIRE paper (sec. 3.2): self-enhancement, Evolve x Iterate.

    policy_0 = the initial policy
    for e in 1..E:
        D_e = K candidates per prompt sampled from policy_{e-1}     (Evolve; human answers kept,
              scored by every reward model                           earlier samples replaced,
              (+ reference log-probs when the loss needs them)       sec. 4.7)
        policy_e = train policy_{e-1} on D_e for I epochs            (Iterate)
        serve policy_e on the samplers

:func:`self_enhance` is that loop, read top to bottom. How D_e is built (streamed into training,
built completely first, or sampled ahead while the previous step trains) is the pool source's
business (:mod:`lire_ray.pool_sources`); the loop only opens D_e, trains on it and finishes it.
Each step is recorded as complete only once its pool and its checkpoint are complete on disk,
so ``resume=true`` continues after the last complete step (and a step interrupted mid-way
reuses the parts of D_e already built). The main job (:mod:`lire_ray.self_enhance`) and the
Evolve x Iterate grid (:mod:`lire_ray.studies.grid`) both run this loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lire_ray.config import Recipe
from lire_ray.metrics import grad_health
from lire_ray.pool import PoolRow
from lire_ray.pool_sources import pool_source
from lire_ray.rundir import RunDir
from lire_ray.runtime import PoolBuilder, ResidentTrainerGroup, RoleGroup, TrainerGroup, telemetry
from lire_ray.timing import overlap_seconds
from lire_ray.training.checkpoint import ADAPTER_DIR
from lire_ray.training.loggers import MetricSink
from lire_ray.training.result import PolicyInit, policy_in

log = logging.getLogger(__name__)

#: Called after every completed Evolve step with (step, the new policy, the step's record).
OnStep = Callable[[int, PolicyInit, dict], None]


@dataclass(frozen=True)
class Chain:
    """What one run of Algorithm 1 runs on.

    Attributes:
        recipe: The recipe (E = ``evolve.steps``, I = ``train.epochs``, K, the loss).
        rundir: Where pools, checkpoints, state and metrics go.
        roles: The role group (samplers serving the current policy, reward actors, and
            reference actors when the loss needs reference log-probs).
        trainer: The trainer group (one Ray Train run per step, or a resident one that sends
            each new policy to the samplers from memory); :func:`self_enhance` closes it.
        base: The initial policy (the base of LoRA adapters).
        norm: The frozen reward normalisation in use (recorded in every pool's manifest).
        sink: The run's experiment: every Evolve step's metrics are logged there (``evolve/``)
            at the step's last global optimizer step; None logs nothing.
    """

    recipe: Recipe
    rundir: RunDir
    roles: RoleGroup
    trainer: TrainerGroup | ResidentTrainerGroup
    base: str
    norm: dict
    sink: MetricSink | None = None


def self_enhance(chain: Chain, rows: Sequence[PoolRow], *, on_step: OnStep | None = None
                 ) -> PolicyInit:
    """Run the Evolve steps the run directory has not completed yet; return the final policy.

    On return the samplers serve the final policy.

    Args:
        chain: The run's recipe, directory, roles, trainer and initial policy.
        rows: The prompt rows (with their human-written answers) of every Evolve step.
        on_step: Called after each completed step.

    Raises:
        DataError: A pool lost or duplicated a prompt, or a candidate lags more policy
            versions than ``evolve.max_staleness`` allows.
        ActorFailure: A role actor or the trainer failed.
    """
    recipe, rundir, roles = chain.recipe, chain.rundir, chain.roles
    state = rundir.load_state()
    policy = PolicyInit(chain.base)
    if state.completed:
        last = state.completed[-1]
        policy = policy_in(rundir.checkpoint_dir(last), base=chain.base)
        roles.serve(policy, last)
        log.info("resuming after Evolve step %d", last)
    builder = PoolBuilder(recipe, roles, sample=True, score=True,
                          reference=bool(roles.references) and _needs_reference(recipe))
    pools = pool_source(recipe, rundir, builder, rows, norm=chain.norm)
    first = len(state.completed) + 1
    if first <= recipe.evolve.steps:  # workers load while D_first is sampled
        chain.trainer.start(policy, len(rows), first)
    try:
        for step in range(len(state.completed) + 1, recipe.evolve.steps + 1):
            log.info("Evolve step %d/%d: pool D_%d from policy v%d", step, recipe.evolve.steps,
                     step, step - 1)
            feed = pools.open(step)                       # Evolve: sample and score D_e
            roles.set_phase("train")
            t0 = time.time()
            result = chain.trainer.fit(                   # Iterate: I epochs on D_e
                feed.dataset, num_prompts=len(rows), init=policy,
                output_dir=str(rundir.checkpoint_dir(step)), epochs=recipe.train.epochs,
                policy_version=step)
            train_span = (t0, time.time())
            roles.set_phase("sample")
            pool = feed.finish()                          # D_e complete: every prompt once
            t_serve = time.time()
            policy = _serve(chain, result, step)          # the samplers now serve policy e
            # A resident trainer timed its own sending; otherwise the samplers read the disk.
            sync_s = (result.metrics.get("weight_sync_s", 0.0) if chain.trainer.serves_weights
                      else time.time() - t_serve)
            record = _record(step, pool, feed.presampled, train_span, result, sync_s)
            _mark_checkpointed(chain, state)
            rundir.append_metrics({"event": "evolve_step", **record})
            if chain.sink is not None:
                chain.sink.log(record, global_step(result.history, step), "evolve")
            telemetry.export_step({**record, "pool_candidates": record["candidates"],
                                   "tokens_per_s": result.metrics.get("tokens_per_s")},
                                  run=rundir.root.name)
            log.info("Evolve step %d done: policy reward %.4f, train %.1f s (%.1f s optimizer "
                     "steps), weights to samplers %.2f s, overlap %.1f s", step,
                     record["policy_reward_mean"], record["train_s"], record["train_compute_s"],
                     record["weight_sync_s"], record["overlap_s"])
            if on_step is not None:
                on_step(step, policy, record)
    finally:
        pools.close()
        chain.trainer.close()  # a resident run finishes its pending checkpoints first
    _mark_checkpointed(chain, state)
    return policy


def global_step(history: list[dict], default: int) -> int:
    """The global optimizer step reached at the end of a training history."""
    return int(history[-1].get("step", default)) if history else default


def _serve(chain: Chain, result, step: int) -> PolicyInit:
    """Serve policy ``step`` on the samplers (or record it, when a resident trainer already
    sent it from memory) and return where the next step's training starts."""
    if not chain.trainer.serves_weights:
        policy = policy_in(chain.rundir.checkpoint_dir(step), base=chain.base)
        chain.roles.serve(policy, step)
        return policy
    ckpt = chain.rundir.checkpoint_dir(step)
    policy = (PolicyInit(chain.base, str(ckpt / ADAPTER_DIR)) if chain.recipe.model.lora.enabled
              else PolicyInit(str(ckpt)))
    if result.checkpoint_dir is not None:  # a step without a checkpoint leaves the record
        chain.roles.record_served(policy, step)
    return policy


def _record(step: int, pool: dict, presampled: bool, train_span: tuple[float, float],
            result, weight_sync_s: float) -> dict:
    """One Evolve step as ``metrics.jsonl`` records it (JSON-ready)."""
    history = result.history
    compute = sum(h.get("step_seconds", 0.0) for h in history)
    record = {"step": step, **pool["stats"], "presampled": presampled,
              "sample_s": sum(b - a for a, b in pool["busy"]),
              "train_s": train_span[1] - train_span[0], "train_compute_s": compute,
              "weight_sync_s": weight_sync_s,
              "overlap_s": overlap_seconds(pool["busy"], train_span),
              "final_train_metrics": result.metrics,
              # LIRE only (None for other losses): one-hot share and eq. 7 weights of the steps.
              "grad_health": grad_health.summarize(history),
              "checkpoint": str(result.checkpoint_dir) if result.checkpoint_dir else None,
              "adapter": str(result.adapter_dir) if result.adapter_dir else None}
    return json.loads(json.dumps(record, default=str))


def _mark_checkpointed(chain: Chain, state) -> None:
    """Record as complete every step whose checkpoint is now complete on disk."""
    for step in sorted(range(len(state.completed) + 1, chain.recipe.evolve.steps + 1),
                       reverse=True):
        if chain.rundir.is_checkpoint_complete(step) and \
                (chain.rundir.pool_dir(step) / "manifest.json").is_file():
            chain.rundir.mark_complete(state, step)
            return


def _needs_reference(recipe: Recipe) -> bool:
    from lire_ray.losses import build_loss

    return build_loss(recipe.loss.name, recipe.loss.params).needs_reference
