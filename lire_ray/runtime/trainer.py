"""Trainer groups: Ray Train ``TorchTrainer`` runs of DeepSpeed workers on candidate pools.

The workers' logic lives in :mod:`lire_ray.training` (:class:`~lire_ray.training.worker.
TrainingRun`); this module maps a recipe onto Ray Train (scaling, storage, failure handling),
supplies the workers' data and checkpoint reporting, and turns Ray Train's errors into
:class:`~lire_ray.errors.ActorFailure`. Two groups share that plumbing:

- :class:`TrainerGroup` (``train.resident: false``, and single-stage jobs): each :meth:`fit` is
  one Ray Train run named ``{name}-v{policy_version}`` under ``storage_path`` (which every node
  must reach): the workers start, load the model, train, write the policy to disk and stop. Its
  epoch checkpoints make a worker failure resume in place (up to
  ``resources.trainer.max_failures`` times), and a later ``fit`` with the same name, storage
  path and policy version continues a stopped run from its last epoch.
- :class:`~lire_ray.runtime.resident.ResidentTrainerGroup` (``train.resident: true``, the
  default for self-enhancement): one Ray Train run for every Evolve step of a run, new
  policies sent to the samplers from memory.

:func:`lire_ray.runtime.resident.make_trainer` picks one from the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lire_ray.config import Recipe
from lire_ray.env_forward import forwarded_env
from lire_ray.errors import ActorFailure, ConfigError, DataError
from lire_ray.losses import build_loss
from lire_ray.metrics.grad_health import GradHealthWatch
from lire_ray.training.data import Prefetched
from lire_ray.training.engine import rows_per_worker
from lire_ray.training.loggers import check_logger
from lire_ray.training.result import PolicyInit, TrainResult, collect_result
from lire_ray.training.worker import TrainingRun, WorkerSpec

__all__ = ["TrainResult", "TrainerGroup"]

#: Key of the record a single worker returns instead of raising a recipe or data error.
DETERMINISTIC_ERROR = "deterministic_error"



def failure_message(exc: Exception) -> str:
    """The first failing worker's error in a Ray Train failure, in one line."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank, err = sorted(failures.items())[0]
        return f"worker {rank}: {type(err).__name__}: {err}"
    inner = getattr(exc, "controller_failure", None)
    return f"{type(inner or exc).__name__}: {inner or exc}"


def check_before_start(recipe: Recipe, num_prompts: int) -> None:
    """Fail before any worker starts on what the driver can see: the metric logger's package,
    the loss and its parameters, fewer prompts than workers.

    Raises:
        ConfigError, DependencyError, DataError: As the checks find.
    """
    check_logger(recipe.train.logger)
    build_loss(recipe.loss.name, recipe.loss.params)
    rows_per_worker(num_prompts, recipe.resources.trainer.num_workers)


def torch_trainer(recipe: Recipe, loop: Callable[[dict], Any], config: dict, *, run_name: str,
                  storage_path: str, datasets: dict | None = None):
    """A ``TorchTrainer`` with the recipe's scaling, backend, failure policy and worker env.

    Args:
        recipe: The recipe (``resources.trainer``).
        loop: The per-worker entry point.
        config: Its ``train_loop_config``.
        run_name: The Ray Train run's name (shown in the dashboard).
        storage_path: Where Ray Train keeps the run (checkpoints, state).
        datasets: Ray Data datasets split across the workers, if any.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    res = recipe.resources.trainer
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker, **res.resources_per_worker}
    if res.use_gpu:
        per_worker["GPU"] = res.gpus_per_worker
    env_vars = forwarded_env(recipe.ray.forward_env)
    if not res.use_gpu:
        env_vars["DS_ACCELERATOR"] = "cpu"
    kwargs: dict[str, Any] = {}
    # Ray Train v2's RunConfig takes worker_runtime_env; its type stubs do not declare it yet.
    run_kwargs: dict[str, Any] = {"worker_runtime_env": {"env_vars": env_vars} if env_vars
                                  else None}
    if datasets:
        kwargs.update(datasets=datasets,
                      dataset_config=ray.train.DataConfig(datasets_to_split=list(datasets)))
    return TorchTrainer(
        loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=res.num_workers, use_gpu=res.use_gpu,
                                               resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=res.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1), **run_kwargs),
        **kwargs)


def run_class(task: str) -> type[TrainingRun]:
    """The worker class of a ``WorkerSpec.task``: ``policy`` or ``reward_model``.

    Raises:
        ConfigError: Unknown task.
    """
    if task == "policy":
        return TrainingRun
    if task == "reward_model":
        from lire_ray.rm.worker import RewardModelRun

        return RewardModelRun
    raise ConfigError(f"unknown training task '{task}'; known: policy, reward_model")


def worker_context(spec: WorkerSpec) -> tuple[TrainingRun, Any]:
    """Build this worker's :class:`TrainingRun` (restored from Ray Train's latest checkpoint
    when the group restarted) and return it with that checkpoint (or None)."""
    import logging

    import ray.train

    log = logging.getLogger("lire_ray")
    if not log.handlers:
        # The project's own lines (progress, resumes) reach the driver through the worker's
        # stderr whatever level the Ray logging configuration gives the root logger.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    ctx = ray.train.get_context()
    use_gpu = spec.recipe["resources"]["trainer"]["use_gpu"]
    device: Any = "cpu"
    if use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    run = run_class(spec.task)(spec, rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                               use_gpu=use_gpu, device=device)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            run.restore(directory)
    return run, checkpoint


def report_to_ray(record: dict, directory: str | None, name: str) -> None:
    """Hand an epoch's record and its checkpoint directory (if any) to Ray Train."""
    import ray.train

    if directory is None:
        ray.train.report(record)
        return
    ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(directory),
                     checkpoint_dir_name=name)


def train_loop(config: dict[str, Any]) -> list[dict]:
    """Ray Train ``train_loop_per_worker`` of a per-step run: train, save, return the history.

    Reads the ``"train"`` dataset shard in micro-batches of ``train.micro_batch_prompts`` rows
    (Arrow), resumes from ``ray.train.get_checkpoint()`` when there is one, and reports each
    epoch's record and checkpoint through ``ray.train.report``.

    Args:
        config: ``WorkerSpec.to_config()``.

    Returns:
        The per-step metric history (Ray Train returns rank 0's as ``Result.return_value``).
    """
    import ray.train

    spec = WorkerSpec(**config)
    micro = spec.recipe["train"]["micro_batch_prompts"]

    def open_shard():
        return ray.train.get_dataset_shard("train").iter_batches(
            batch_size=micro, batch_format="pyarrow", drop_last=False)

    # A fresh run starts the (possibly upstream-sampling) data stream while the model loads; a
    # resumed one replays its cached rows and must not start it at all.
    shard = Prefetched(open_shard) if ray.train.get_checkpoint() is None else open_shard
    try:
        run, _ = worker_context(spec)
        return run.run(shard, report_to_ray)
    except (ConfigError, DataError) as exc:
        # A recipe or data error fails again on every retry: a single worker hands it back
        # instead of raising, so Ray Train does not restart the group max_failures times.
        # (With several workers the others would wait on it in a collective: they raise.)
        if ray.train.get_context().get_world_size() > 1:
            raise
        return [{DETERMINISTIC_ERROR: type(exc).__name__, "message": str(exc)}]


class TrainerGroup:
    """Distributed policy training on pool datasets, one Ray Train run per ``fit``.

    Args:
        recipe: The run's recipe (model, loss, train, resources.trainer sections are used).
        storage_path: Absolute directory for Ray Train runs (checkpoints, run state).
        name: Prefix of the Ray Train run names.
        alone: No other role of the job computes while it trains (``jobs/train.py``): CPU
            workers then use every core of the machine.
        task: ``policy`` (listwise policy training) or ``reward_model`` (a Bradley-Terry
            reward model on pools of preference pairs, :mod:`lire_ray.rm`).

    Raises:
        ConfigError: ``storage_path`` is not absolute.
    """

    #: Whether :meth:`fit` leaves the new policy served on the samplers (it does not).
    serves_weights = False

    def __init__(self, recipe: Recipe, *, storage_path: str, name: str, alone: bool = False,
                 task: str = "policy"):
        if not Path(storage_path).is_absolute():
            raise ConfigError(f"trainer storage_path must be absolute, got '{storage_path}'")
        run_class(task)
        self.recipe = recipe
        self.storage_path = str(storage_path)
        self.name = name
        self.alone = alone
        #: Warns once over every ``fit`` of this group when LIRE's Q turns one-hot.
        self.watch: GradHealthWatch | None = None
        self.task = task

    def fit(self, dataset, *, num_prompts: int, init: PolicyInit, output_dir: str,
            epochs: int | None = None, policy_version: int = 1, log_dir: str | None = None,
            stop_after_epoch: int | None = None) -> TrainResult:
        """Train on ``dataset`` for ``epochs`` epochs and write the policy to ``output_dir``.

        Args:
            dataset: A ``ray.data.Dataset`` of pool rows (one prompt with all its candidates
                per row), possibly still streaming from upstream sampling; consumed once.
            num_prompts: Rows in ``dataset`` (the schedule's length is fixed up front).
            init: The policy training starts from (a full model, or a LoRA adapter on it whose
                training continues).
            output_dir: Destination of the trained policy (Hugging Face format).
            epochs: I, epochs over the data; default ``train.epochs``.
            policy_version: Version of the policy produced (names the Ray Train run).
            log_dir: TensorBoard / W&B directory; default ``<storage_path>/tensorboard/<run>``.
            stop_after_epoch: Stop after this epoch (checkpointed); a later call resumes.

        Returns:
            A :class:`TrainResult` with the output paths and the per-step metric history.

        Raises:
            ConfigError: The recipe's loss or its parameters are invalid.
            DataError: Fewer prompts than trainer workers.
            DependencyError: The configured metric logger's package is missing.
            ActorFailure: Training failed (after ``max_failures`` restarts); the message
                names the failing worker's error and ``__cause__`` holds Ray Train's error.
        """
        import ray.exceptions
        import ray.train

        check_before_start(self.recipe, num_prompts)
        run_name = f"{self.name}-v{policy_version}"
        if log_dir is None:
            log_dir = str(Path(self.storage_path) / "tensorboard" / run_name)
        spec = WorkerSpec(recipe=self.recipe.model_dump(mode="json"), init_model=str(init.model),
                          output_dir=str(Path(output_dir).absolute()), num_prompts=num_prompts,
                          epochs=epochs or self.recipe.train.epochs,
                          policy_version=policy_version, run_name=run_name, log_dir=log_dir,
                          stop_after_epoch=stop_after_epoch, init_adapter=init.adapter,
                          trainer_alone=self.alone, task=self.task)
        trainer = torch_trainer(self.recipe, train_loop, spec.to_config(), run_name=run_name,
                                storage_path=self.storage_path, datasets={"train": dataset})
        try:
            result = trainer.fit()
        except (ray.train.TrainingFailedError, ray.exceptions.RayError) as exc:
            raise ActorFailure("trainer", failure_message(exc)) from exc
        history = result.return_value or []
        if history and DETERMINISTIC_ERROR in history[-1]:
            kind = DataError if history[-1][DETERMINISTIC_ERROR] == "DataError" else ConfigError
            raise kind(history[-1]["message"])
        if self.watch is None:
            self.watch = GradHealthWatch(build_loss(self.recipe.loss.name,
                                                    self.recipe.loss.params).params,
                                         run=self.name)
        self.watch.observe_all(history)
        done = max((int(h["epoch"]) for h in history
                    if h.get("policy_version") == policy_version), default=0)
        return collect_result(spec.output_dir, history, done)

    def start(self, init: PolicyInit, num_prompts: int, version: int) -> None:
        """Nothing to start ahead: every :meth:`fit` starts its own run."""

    def close(self) -> None:
        """Nothing to stop: every :meth:`fit` ends its own run."""
