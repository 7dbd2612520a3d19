"""The resident trainer group: one Ray Train run for every Evolve step of a self-enhancement run.

The DeepSpeed workers start once and keep the model, the optimizer and the metric logger (one
global step across Evolve steps). For each step the driver submits a command to the run's
:class:`~actors.coordinator.TrainerCoordinator` and deals the step's pool rows to the workers as
they stream out of sampling and scoring (:func:`~lire_ray.training.data.deal`, object
references to Arrow micro-batches), so training overlaps sampling as before. After the step's
last epoch:

- rank 0 sends the new weights to every sampler from memory, in buckets of whole layers of at
  most ``train.weight_sync_bucket_mb`` (:mod:`lire_ray.sampling.weights`): each sampler takes a
  bucket from its own one-slot queue, loads it and takes the next, all within one actor call,
  so no sampling request runs on half-loaded weights. With LoRA only the adapter moves.
- rank 0 writes the Hugging Face checkpoint (every ``train.checkpoint_every`` steps and the
  last) in a background thread, from a CPU snapshot, while the next step trains; the
  ``COMPLETE`` marker comes last and the coordinator records it.

Faults: every epoch ends with a Ray Train checkpoint (model, optimizer, schedule, the epoch's
rows). When a worker dies, Ray Train restarts the group from the latest one
(``resources.trainer.max_failures``): a step interrupted after its first epoch continues from
the cached rows; one interrupted during its first epoch starts that step again from the end of
the previous one and reads its rows again from the coordinator, from the first. Either way each
prompt is trained once per epoch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lire_ray.config import Recipe
from lire_ray.errors import ActorFailure, ConfigError
from lire_ray.losses import build_loss
from lire_ray.metrics.grad_health import GradHealthWatch
from lire_ray.progress import Progress
from lire_ray.training.data import deal
from lire_ray.training.engine import rows_per_worker, steps_per_epoch
from lire_ray.training.loggers import ForwardingSink
from lire_ray.training.result import PolicyInit, TrainResult
from lire_ray.training.worker import TrainingRun, WorkerSpec

log = logging.getLogger(__name__)

POLL_S = 0.05


def _shard(coord, version: int, rank: int) -> Iterator:
    """This worker's micro-batches of step ``version``, read from the coordinator from the
    first (a restarted worker reads them all again)."""
    import ray

    from actors.coordinator import END

    at = 0
    while True:
        items = ray.get(coord.take.remote(version, rank, at))
        if not items:
            time.sleep(POLL_S)
            continue
        for item in items:
            if item == END:
                return
            yield ray.get(item[0])
        at += len(items)


def publish_weights(snapshot, version: int, *, samplers: list[str], namespace: str,
                    bucket_bytes: int, queues: dict) -> float:
    """Send a policy snapshot to every sampler from memory; return the seconds it took.

    Args:
        snapshot: A :class:`~lire_ray.training.checkpoint.PolicySnapshot`.
        version: The policy version it is.
        samplers: The sampler actors' names.
        namespace: Their namespace.
        bucket_bytes: Bucket size bound.
        queues: Sampler name -> its one-slot queue (created here on first use).
    """
    import ray
    from ray.util.queue import Queue

    from lire_ray.sampling.weights import layer_buckets, to_bytes

    t0 = time.time()
    handles = [ray.get_actor(n, namespace=namespace) for n in samplers]
    if snapshot.adapter_config is not None:
        blob = ray.put(to_bytes(snapshot.tensors))
        ray.get([h.load_adapter_bytes.remote([blob], snapshot.adapter_config, version)
                 for h in handles])
        return time.time() - t0
    for n in samplers:
        if n not in queues:
            queues[n] = Queue(maxsize=1, actor_options={"num_cpus": 0})
    calls = [h.receive_weights.remote(queues[n], version) for h, n in zip(handles, samplers)]
    for bucket in layer_buckets(snapshot.tensors.items(), bucket_bytes):
        ref = ray.put(to_bytes(bucket))
        for n in samplers:  # blocks while a sampler has not taken the previous bucket
            queues[n].put([ref])
        del ref
    for n in samplers:
        queues[n].put(None)
    ray.get(calls)
    return time.time() - t0


class _Writer:
    """Writes policy checkpoints in a background thread, one at a time, and tells the
    coordinator when each is complete."""

    def __init__(self, run: TrainingRun, coord):
        self.run, self.coord = run, coord
        self._thread: threading.Thread | None = None

    def submit(self, snapshot, output_dir: str, version: int, history: list, info: dict):
        self.wait()

        def write():
            path = self.run.write(snapshot, output_dir, history=history, info=info)
            self.coord.checkpointed.remote(version, str(path))

        self._thread = threading.Thread(target=write, name=f"checkpoint-v{version}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def resident_loop(config: dict[str, Any]) -> None:
    """Ray Train ``train_loop_per_worker`` of a resident group: train every submitted step.

    Args:
        config: ``{"spec": WorkerSpec.to_config(), "coordinator": name, "namespace": ns}``.
    """
    import ray

    from lire_ray.runtime.trainer import report_to_ray, worker_context

    spec = WorkerSpec(**config["spec"])
    coord = ray.get_actor(config["coordinator"], namespace=config["namespace"])
    run, _ = worker_context(spec)
    train = run.recipe.train
    # Per-step metrics go to the driver (its progress line and the run's experiment), live.
    sink = (ForwardingSink(lambda record, step, prefix: coord.log.remote(record, step, prefix))
            if run.rank == 0 else None)
    writer = _Writer(run, coord) if run.rank == 0 else None
    queues: dict = {}
    try:
        while True:
            cmd: Any = ray.get(coord.next_command.remote(run.rank))
            if cmd is None:
                time.sleep(POLL_S)
                continue
            if cmd == "stop":
                break
            v = int(cmd["version"])
            if run.state.version != v:
                run.begin_step(v, restart_schedule=train.schedule == "restart")
            t0 = time.time()
            run.train_epochs(lambda v=v: _shard(coord, v, run.rank), report_to_ray,
                             epochs=int(cmd["epochs"]), sink=sink)
            trained_s = time.time() - t0
            snap = run.snapshot()
            info: dict[str, Any] = {"train_s": trained_s}
            if snap is not None:
                info["weight_sync_s"] = publish_weights(
                    snap, v, samplers=cmd["samplers"], namespace=config["namespace"],
                    bucket_bytes=train.weight_sync_bucket_mb << 20, queues=queues)
                if cmd["checkpoint"]:
                    writer.submit(snap, cmd["output_dir"], v, run.step_history(v),
                                  run.policy_info())
                info["history"] = run.step_history(v)
            ray.get(coord.finished.remote(v, run.rank, info))
    finally:
        if writer is not None:
            writer.wait()


class ResidentTrainerGroup:
    """One resident Ray Train run that trains every Evolve step of a run (see the module
    docstring). Same ``fit`` as :class:`~lire_ray.runtime.trainer.TrainerGroup`; the new policy
    is served on the samplers when ``fit`` returns.

    Args:
        recipe: The run's recipe.
        storage_path: Absolute directory of the Ray Train run (checkpoints, state).
        name: The Ray Train run's name.
        roles: The role group whose samplers receive the weights.
        sink: The run's experiment (:class:`~lire_ray.training.loggers.MetricSink`): the
            workers' per-step metrics are logged there as they arrive; None drops them.

    Raises:
        ConfigError: ``storage_path`` is not absolute.
    """

    serves_weights = True

    def __init__(self, recipe: Recipe, *, storage_path: str, name: str, roles, sink=None):
        if not Path(storage_path).is_absolute():
            raise ConfigError(f"trainer storage_path must be absolute, got '{storage_path}'")
        self.recipe, self.storage_path, self.name, self.roles = recipe, storage_path, name, roles
        self.world = recipe.resources.trainer.num_workers
        self._coord: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.sink = sink
        #: Warns once per run, as the step records arrive, when LIRE's Q turns one-hot.
        self.watch = GradHealthWatch(build_loss(recipe.loss.name, recipe.loss.params).params,
                                     run=name)

    def start(self, init: PolicyInit, num_prompts: int, version: int) -> None:
        """Start the worker group now (it loads the model and DeepSpeed while the first pool
        is sampled); a no-op once started. :meth:`fit` starts it otherwise."""
        if self._coord is None:
            self._start(init, num_prompts, version)

    def _start(self, init: PolicyInit, num_prompts: int, version: int) -> None:
        import ray

        from actors.coordinator import TrainerCoordinator
        from lire_ray.runtime.trainer import check_before_start, torch_trainer

        check_before_start(self.recipe, num_prompts)
        self._forget_later_steps(version)
        ns = self.roles.namespace
        coord_name = f"{self.name}-coordinator"
        self._coord = ray.remote(TrainerCoordinator).options(
            name=coord_name, namespace=ns, num_cpus=0, max_restarts=0).remote()
        spec = WorkerSpec(recipe=self.recipe.model_dump(mode="json"), init_model=str(init.model),
                          init_adapter=init.adapter, output_dir="", num_prompts=num_prompts,
                          epochs=self.recipe.train.epochs, policy_version=version,
                          run_name=self.name,
                          log_dir=str(Path(self.storage_path) / "tensorboard" / self.name),
                          schedule_spans_steps=(self.recipe.evolve.steps
                                                if self.recipe.train.schedule == "continue"
                                                else None))
        trainer = torch_trainer(self.recipe, resident_loop, {
            "spec": spec.to_config(), "coordinator": coord_name, "namespace": ns},
            run_name=self.name, storage_path=self.storage_path)

        def fit():
            try:
                trainer.fit()
            except BaseException as exc:  # re-raised in the driver's thread by fit()
                self._error = exc

        self._thread = threading.Thread(target=fit, name="resident-trainer", daemon=True)
        self._thread.start()

    def _drain_metrics(self, progress: Progress) -> None:
        import ray

        for record, step, prefix in ray.get(self._coord.drain.remote()):
            progress.update()
            if prefix == "train":
                self.watch.observe({**record, "step": step})
            if self.sink is not None:
                self.sink.log(record, step, prefix)

    def _forget_later_steps(self, version: int) -> None:
        """A run resumed at step ``version`` continues the Ray Train run left by the crash (its
        latest epoch checkpoint), unless that run had already moved past ``version`` (a crash
        while step ``version - 1``'s policy checkpoint was still being written): then it starts
        over from the policy checkpoint the run resumes from."""
        import re
        import shutil

        run = Path(self.storage_path) / self.name
        reached = [int(m.group(1)) for d in run.glob("v*-epoch-*")
                   if (m := re.match(r"v(\d+)-epoch-", d.name))]
        if reached and max(reached) > version:
            log.warning("the interrupted training run had reached Evolve step %d, past step %d "
                        "whose checkpoint is the last complete one: training starts again from "
                        "that checkpoint", max(reached), version - 1)
            shutil.rmtree(run, ignore_errors=True)

    def _check_alive(self) -> None:
        if self._error is not None:
            from lire_ray.runtime.trainer import failure_message

            error = self._error
            message = failure_message(error) if isinstance(error, Exception) else repr(error)
            raise ActorFailure("trainer", message) from error
        if self._thread is not None and not self._thread.is_alive():
            raise ActorFailure("trainer", "the resident training run ended unexpectedly")

    def fit(self, dataset, *, num_prompts: int, init: PolicyInit, output_dir: str,
            epochs: int | None = None, policy_version: int = 1) -> TrainResult:
        """Train policy ``policy_version`` on ``dataset`` and serve it on the samplers.

        ``init`` is used only by the first call (it loads the model); later calls continue
        from the weights in memory.

        Returns:
            A :class:`TrainResult`: ``checkpoint_dir`` is where the policy checkpoint is being
            written (see :meth:`checkpoints`), ``metrics`` the last optimizer step's, with
            ``weight_sync_s`` and ``train_s`` (the workers' training time of this step).

        Raises:
            ActorFailure: The run failed (after ``max_failures`` restarts).
            DataError: Fewer prompts than workers.
        """
        import ray

        from actors.coordinator import END

        if self._coord is None:
            self._start(init, num_prompts, policy_version)
        last = policy_version == self.recipe.evolve.steps
        write = last or policy_version % self.recipe.train.checkpoint_every == 0
        ray.get(self._coord.submit.remote({
            "version": policy_version, "epochs": epochs or self.recipe.train.epochs,
            "output_dir": str(Path(output_dir).absolute()), "checkpoint": write,
            "samplers": self.roles.names("sampler")}, self.world))
        rows = rows_per_worker(num_prompts, self.world)
        t = self.recipe.train
        progress = Progress(f"Evolve step {policy_version}: training", (epochs or t.epochs)
                            * steps_per_epoch(num_prompts, self.world, t.micro_batch_prompts,
                                              t.grad_accum), "optimizer steps")
        for rank, table in deal(dataset.iter_batches(batch_size=None, batch_format="pyarrow"),
                                world_size=self.world, rows_per_worker=rows,
                                micro_batch_prompts=self.recipe.train.micro_batch_prompts):
            self._check_alive()
            self._coord.put.remote(policy_version, rank, [[ray.put(table)]])
        for rank in range(self.world):
            self._coord.put.remote(policy_version, rank, [END])
        while len(done := ray.get(self._coord.status.remote(policy_version))) < self.world:
            self._check_alive()
            self._drain_metrics(progress)
            time.sleep(POLL_S * 4)
        self._drain_metrics(progress)
        self._coord.release.remote(policy_version)
        info = done[0]
        history = info.get("history", [])
        metrics = {**(history[-1] if history else {}),
                   "weight_sync_s": info.get("weight_sync_s", 0.0), "train_s": info["train_s"]}
        out = Path(output_dir).absolute()
        lora = self.recipe.model.lora.enabled
        return TrainResult(out if write else None, out / "adapter" if lora and write else None,
                           not lora or self.recipe.model.lora.merge_on_save, metrics, history,
                           epochs or self.recipe.train.epochs)

    def checkpoints(self) -> dict[int, str]:
        """The policy checkpoints complete so far, by Evolve step."""
        import ray

        return ray.get(self._coord.checkpoints.remote()) if self._coord is not None else {}

    def close(self, timeout: float = 600.0) -> None:
        """Let the workers finish (pending checkpoints included) and end the run."""
        import ray

        if self._coord is None:
            return
        try:
            ray.get(self._coord.stop.remote())
            if self._thread is not None:
                self._thread.join(timeout)
        finally:
            ray.kill(self._coord)
            self._coord = None


def make_trainer(recipe: Recipe, *, storage_path: str, name: str, roles=None, sink=None):
    """The trainer group the recipe asks for: resident (``train.resident``, with ``roles`` whose
    samplers receive new weights from memory, logging to the run's experiment ``sink``) or one
    Ray Train run per Evolve step (whose rank 0 keeps its own logger)."""
    from lire_ray.runtime.trainer import TrainerGroup

    if recipe.train.resident and roles is not None:
        return ResidentTrainerGroup(recipe, storage_path=storage_path, name=name, roles=roles,
                                    sink=sink)
    return TrainerGroup(recipe, storage_path=storage_path, name=name)
