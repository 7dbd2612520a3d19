"""Trainer group: a Ray Train ``TorchTrainer`` running DeepSpeed workers on candidate pools.

The workers' logic lives in :mod:`lire_ray.training`; this class only maps a recipe onto Ray
Train (scaling, storage, failure handling) and Ray Train's errors onto
:class:`~lire_ray.errors.ActorFailure`.

Each :meth:`TrainerGroup.fit` call is one Ray Train run named ``{name}-v{policy_version}``
under ``storage_path`` (which every node must reach). Its epoch checkpoints make a worker
failure resume in place (up to ``resources.trainer.max_failures`` times), and a later ``fit``
with the same name, storage path and policy version continues a stopped run from its last
epoch: starting over is the caller's decision (remove the run directory or change the name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lire_ray.config import Recipe
from lire_ray.errors import ActorFailure, ConfigError
from lire_ray.losses import build_loss
from lire_ray.training.engine import rows_per_worker
from lire_ray.training.loggers import check_logger
from lire_ray.training.result import PolicyInit, TrainResult, collect_result
from lire_ray.training.worker import WorkerSpec, train_loop

__all__ = ["TrainerGroup", "TrainResult"]


def _failure_message(exc: Exception) -> str:
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank, err = sorted(failures.items())[0]
        return f"worker {rank}: {type(err).__name__}: {err}"
    inner = getattr(exc, "controller_failure", None)
    return f"{type(inner or exc).__name__}: {inner or exc}"


class TrainerGroup:
    """Distributed policy training on pool datasets, one Ray Train run per ``fit``.

    Args:
        recipe: The run's recipe (model, loss, train, resources.trainer sections are used).
        storage_path: Absolute directory for Ray Train runs (checkpoints, run state).
        name: Prefix of the Ray Train run names.

    Raises:
        ConfigError: ``storage_path`` is not absolute.
    """

    def __init__(self, recipe: Recipe, *, storage_path: str, name: str):
        if not Path(storage_path).is_absolute():
            raise ConfigError(f"trainer storage_path must be absolute, got '{storage_path}'")
        self.recipe = recipe
        self.storage_path = str(storage_path)
        self.name = name

    def _trainer(self, dataset, spec: WorkerSpec):
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        res = self.recipe.resources.trainer
        per_worker: dict[str, float] = {"CPU": res.cpus_per_worker, **res.resources_per_worker}
        if res.use_gpu:
            per_worker["GPU"] = res.gpus_per_worker
        env: dict[str, Any] = {} if res.use_gpu else {"env_vars": {"DS_ACCELERATOR": "cpu"}}
        return TorchTrainer(
            train_loop,
            train_loop_config=spec.to_config(),
            scaling_config=ray.train.ScalingConfig(num_workers=res.num_workers,
                                                   use_gpu=res.use_gpu,
                                                   resources_per_worker=per_worker),
            torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
            datasets={"train": dataset},
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
            run_config=ray.train.RunConfig(
                name=spec.run_name, storage_path=self.storage_path,
                failure_config=ray.train.FailureConfig(max_failures=res.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                worker_runtime_env=env or None),
        )

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

        # Problems visible here fail before any worker starts.
        check_logger(self.recipe.train.logger)
        build_loss(self.recipe.loss.name, self.recipe.loss.params)
        rows_per_worker(num_prompts, self.recipe.resources.trainer.num_workers)
        run_name = f"{self.name}-v{policy_version}"
        if log_dir is None:
            log_dir = str(Path(self.storage_path) / "tensorboard" / run_name)
        spec = WorkerSpec(recipe=self.recipe.model_dump(mode="json"), init_model=str(init.model),
                          output_dir=str(Path(output_dir).absolute()), num_prompts=num_prompts,
                          epochs=epochs or self.recipe.train.epochs,
                          policy_version=policy_version, run_name=run_name, log_dir=log_dir,
                          stop_after_epoch=stop_after_epoch,
                          init_adapter=init.adapter)
        try:
            result = self._trainer(dataset, spec).fit()
        except (ray.train.TrainingFailedError, ray.exceptions.RayError) as exc:
            raise ActorFailure("trainer", _failure_message(exc)) from exc
        history = result.return_value or []
        done = max((int(h["epoch"]) for h in history), default=0)
        return collect_result(spec.output_dir, history, done)
