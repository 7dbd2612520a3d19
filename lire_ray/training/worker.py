"""One trainer worker's share of training: model, DeepSpeed engine, loss, epochs, checkpoints.

:class:`TrainingRun` holds the logic and talks to Ray only through callables (its data shard and
a reporter), so it also runs in a plain process group; the Ray Train entry points that supply
them are in :mod:`lire_ray.runtime.trainer` (one run per Evolve step) and
:mod:`lire_ray.runtime.resident` (one resident run for every Evolve step).

Every optimizer step produces one record, reduced over all workers: ``loss``, the loss's own
metrics (for LIRE ``accuracy``, ``entropy`` of Q, ``q_best``, ``listwise`` and the gradient
health ``onehot_share`` / ``grad_weight`` of :mod:`lire_ray.metrics.grad_health`), ``grad_norm``
(before clipping), ``lr``, ``prompts``, ``tokens`` (tokens the model ran, a prompt once per
group under shared-prefix packing), ``naive_tokens`` (a prompt once per candidate), their rates
``tokens_per_s`` / ``naive_tokens_per_s``, and ``step_seconds``. Records go to the metric sink
(TensorBoard by default) and the run's history every step; ``ray.train.report`` receives one
record per epoch (the epoch's mean metrics) together with the epoch checkpoint. Reporting to
Ray Train every step would stall training: a worker's report waits until the controller,
which polls every few seconds, has taken the previous one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from lire_ray.collate import render_prompt, tokenize_group
from lire_ray.config import Recipe
from lire_ray.errors import DataError
from lire_ray.faults import fault_point
from lire_ray.losses import build_loss
from lire_ray.pool import table_to_rows
from lire_ray.training.checkpoint import (
    PolicySnapshot,
    TrainState,
    load_train_state,
    save_train_state,
    snapshot_policy,
    write_policy,
)
from lire_ray.training.data import ShardCache, group_steps
from lire_ray.training.engine import (
    apply_lora,
    build_engine,
    engine_kind,
    import_deepspeed,
    load_lora,
    make_scheduler,
    resolve_precision,
    rows_per_worker,
    steps_per_epoch,
    warmup_steps,
)
from lire_ray.training.loggers import ForwardingSink, MetricSink
from lire_ray.training.prep import fill_reference, worker_threads
from lire_ray.training.step import StepStats, train_step

log = logging.getLogger(__name__)

#: ``report(epoch_record, checkpoint_dir or None, checkpoint_name)``, called once per epoch.
Reporter = Callable[[dict[str, Any], str | None, str], None]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, as plain data (sent to every Ray Train worker).

    Attributes:
        recipe: The recipe as a JSON-compatible dict (``Recipe.model_dump(mode="json")``).
        init_model: Directory or hub id of the policy training starts from.
        init_adapter: With LoRA, a saved adapter (on ``init_model``) that training continues;
            None starts a fresh adapter.
        output_dir: Where rank 0 writes the trained policy (Hugging Face format).
        num_prompts: Rows in the dataset (fixes the schedule's length up front).
        epochs: I, epochs over the dataset (epoch 1 streams, the rest replay a cache).
        policy_version: Version of the policy this run produces (recorded in metrics).
        run_name: Name shown by the metric loggers.
        log_dir: TensorBoard / W&B directory, or None.
        stop_after_epoch: Train only up to this epoch in this call (a later call with the
            same run continues from its checkpoint); None trains all epochs.
        schedule_spans_steps: A resident run whose learning-rate schedule continues over its
            Evolve steps: how many (the schedule spans them all); None sizes it for one.
        trainer_alone: No other role of the job computes while this run trains (CPU workers
            then take every core, see :func:`~lire_ray.training.threads.worker_threads`).
        task: What the workers train: ``policy`` (:class:`TrainingRun`) or ``reward_model``
            (:class:`lire_ray.rm.worker.RewardModelRun`, a Bradley-Terry scalar head).
    """

    recipe: dict[str, Any]
    init_model: str
    output_dir: str
    num_prompts: int
    epochs: int
    policy_version: int = 1
    run_name: str = "train"
    log_dir: str | None = None
    stop_after_epoch: int | None = None
    init_adapter: str | None = None
    schedule_spans_steps: int | None = None
    trainer_alone: bool = False
    task: str = "policy"

    def to_config(self) -> dict[str, Any]:
        """The spec as a ``train_loop_config`` dict."""
        return asdict(self)


def reward_name_for(row, configured: str | None) -> str:
    """The reward model whose scores train the policy on ``row``.

    Args:
        row: A :class:`~lire_ray.pool.PoolRow`.
        configured: The recipe's training reward (``Recipe.train_reward_name``), or None.

    Returns:
        ``configured``, or the row's only reward model when none is configured.

    Raises:
        DataError: No reward model configured and the row has zero or several.
    """
    if configured is not None:
        return configured
    if len(row.rewards) == 1:
        return next(iter(row.rewards))
    raise DataError(f"the pool has reward models {sorted(row.rewards)} and the recipe names none "
                    "to train on; set evolve.train_reward", source=f"prompt_id {row.prompt_id}",
                    field="rewards")


def reduce_step(stats: StepStats, world_size: int) -> dict[str, float]:
    """Combine one step's statistics over all workers (prompt-weighted means, summed tokens).

    Args:
        stats: This worker's step statistics.
        world_size: Number of workers; above 1 ``torch.distributed`` must be initialised.

    Returns:
        The step's global metrics (see the module docstring).
    """
    import torch

    keys = sorted(stats.metrics)
    n = float(stats.num_prompts)
    sums = torch.tensor([stats.loss * n, n, float(stats.tokens_computed),
                         float(stats.tokens_naive)] + [stats.metrics[k] * n for k in keys],
                        dtype=torch.float64)
    seconds = torch.tensor([stats.seconds], dtype=torch.float64)
    if world_size > 1:
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        sums, seconds = sums.to(device), seconds.to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        sums, seconds = sums.cpu(), seconds.cpu()
    total = sums.tolist()
    secs = max(float(seconds[0]), 1e-9)
    record = {"loss": total[0] / total[1], "prompts": int(total[1]),
              "tokens": int(total[2]), "naive_tokens": int(total[3]),
              "tokens_per_s": total[2] / secs, "naive_tokens_per_s": total[3] / secs,
              "step_seconds": secs, "lr": stats.lr}
    if stats.grad_norm is not None:
        record["grad_norm"] = stats.grad_norm
    record.update({k: v / total[1] for k, v in zip(keys, total[4:], strict=True)})
    return record


def epoch_record(state: TrainState) -> dict[str, Any]:
    """What ``ray.train.report`` gets after an epoch: the mean of each numeric metric over the
    epoch's steps, plus ``epoch`` (completed), ``step`` and ``steps_in_epoch``.

    Args:
        state: The run's progress right after the epoch.

    Returns:
        The epoch's record.
    """
    steps = [h for h in state.history if h.get("epoch") == state.epoch]
    keys = sorted({k for h in steps for k, v in h.items()
                   if isinstance(v, (int, float)) and k not in ("epoch", "step")})
    record: dict[str, Any] = {k: sum(float(h[k]) for h in steps if k in h)
                              / max(1, sum(k in h for h in steps)) for k in keys}
    record.update(epoch=state.epoch, step=state.step, steps_in_epoch=len(steps))
    return record


class TrainingRun:
    """One worker's share of a training run (model, engine, data, checkpoints).

    Args:
        spec: The run's arguments.
        rank: This worker's rank.
        world_size: Number of workers (``torch.distributed`` must be initialised).
        use_gpu: Whether this worker trains on a GPU.
        device: Torch device for the model (``"cpu"`` or this worker's CUDA device).
    """

    def __init__(self, spec: WorkerSpec, *, rank: int, world_size: int, use_gpu: bool,
                 device: Any = "cpu"):
        import torch

        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.recipe = Recipe.model_validate(spec.recipe)
        train = self.recipe.train
        self.engine_kind = engine_kind(train, use_gpu=use_gpu, world_size=world_size)
        if self.engine_kind == "deepspeed":
            import_deepspeed(use_gpu)
        if not use_gpu:
            torch.set_num_threads(worker_threads(self.recipe, world_size,
                                                 alone=spec.trainer_alone))
        self.loss = build_loss(self.recipe.loss.name, self.recipe.loss.params)
        self.rows = rows_per_worker(spec.num_prompts, world_size)
        self.total_steps = spec.epochs * steps_per_epoch(
            spec.num_prompts, world_size, train.micro_batch_prompts, train.grad_accum)
        # A resident run that continues one schedule over every Evolve step sizes it for all.
        schedule_steps = self.total_steps * (spec.schedule_spans_steps or 1)
        dtype = "bfloat16" if resolve_precision(train.precision, use_gpu) == "bf16" else "float32"
        torch.manual_seed(train.seed)
        self.tokenizer, model = self.load_model(dtype=dtype, device=device)
        if train.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        model.train()
        self.engine = build_engine(model, train, use_gpu=use_gpu, total_steps=schedule_steps,
                                   world_size=world_size)
        # Distinct dropout streams per worker; the data already differs per worker.
        torch.manual_seed(train.seed * 1000 + rank)
        self.state = TrainState(version=spec.policy_version)
        self.cache: ShardCache | None = None
        self._prompt_warned = False
        #: Seconds spent before the first step (``reference_s``), recorded with that step.
        self._timing: dict[str, float] = {}

    def load_model(self, *, dtype: str, device: Any):
        """The tokenizer and the model to train (a causal LM, with its LoRA adapter when
        enabled); a subclass that trains another kind of model overrides it.

        Args:
            dtype: ``float32`` or ``bfloat16``.
            device: Torch device.

        Returns:
            ``(tokenizer, model)``.
        """
        from lire_ray.models import load_causal_lm, load_tokenizer

        model_cfg, spec = self.recipe.model, self.spec
        tokenizer = load_tokenizer(spec.init_model, trust_remote_code=model_cfg.trust_remote_code)
        model = load_causal_lm(spec.init_model, dtype=dtype, device=device,
                               trust_remote_code=model_cfg.trust_remote_code)
        if model_cfg.lora.enabled and spec.init_adapter:
            model = load_lora(model, spec.init_adapter)
        elif model_cfg.lora.enabled:
            model = apply_lora(model, model_cfg.lora, seed=self.recipe.train.seed)
        return tokenizer, model

    def train_step(self, tables: list[pa.Table]) -> StepStats:
        """One optimizer step over micro-batches of pool rows (the listwise policy step); a
        subclass that trains another objective overrides it."""
        train = self.recipe.train
        return train_step(self.engine, [self._groups(t) for t in tables], self.loss,
                          packing=train.packing, chunk_size=train.logprob_chunk_size,
                          recompute_logits=self.engine.zero_optimization_stage() != 3)

    @property
    def lora(self) -> bool:
        return self.recipe.model.lora.enabled

    def begin_step(self, version: int, *, restart_schedule: bool) -> None:
        """Start training policy ``version`` on a new pool (a resident run's next Evolve step).

        The model and optimizer carry on from the previous step; the epoch count and the row
        cache start over, and with ``restart_schedule`` so does the learning-rate schedule
        (warmup then cosine decay over this step's optimizer steps).
        """
        self.state.version, self.state.epoch, self.cache = version, 0, None
        if restart_schedule:
            self.engine.lr_scheduler = make_scheduler(
                self.engine.basic_optimizer, total_steps=self.total_steps,
                warmup=warmup_steps(self.total_steps, self.recipe.train.warmup_ratio))

    def _reference_from_policy(self) -> bool:
        """Whether missing reference log-probs may come from the model as it is now: the loss
        needs them, nothing has trained yet, and the reference is the initial policy."""
        ref = self.recipe.model.reference
        return (self.loss.needs_reference and self.state.step == 0
                and self.spec.init_adapter is None and ref in (None, self.spec.init_model))

    def step_history(self, version: int | None = None) -> list[dict]:
        """The per-step records of one Evolve step (default: the current one)."""
        v = self.state.version if version is None else version
        return [h for h in self.state.history if h.get("policy_version") == v]

    def restore(self, directory: str | Path) -> None:
        """Continue from a checkpoint written by an earlier attempt of the same run."""
        self.state, self.cache = load_train_state(self.engine, directory, rank=self.rank,
                                                  exclude_frozen=self.lora)
        if self.rank == 0:
            log.info("resumed after epoch %d, step %d", self.state.epoch, self.state.step)

    def _groups(self, table: pa.Table):
        model_cfg = self.recipe.model
        configured = self.recipe.train_reward_name
        rows = table_to_rows(table)
        self._check_prompt_texts(rows)
        return [tokenize_group(row, self.tokenizer, max_prompt_tokens=model_cfg.max_prompt_tokens,
                               max_response_tokens=model_cfg.max_response_tokens,
                               reward_name=reward_name_for(row, configured),
                               chat_template=self.recipe.data.chat_template)
                for row in rows]

    def _check_prompt_texts(self, rows) -> None:
        """Warn (once) when the sampler conditioned on another prompt text than training does
        (a pool sampled with another tokenizer or ``data.chat_template``)."""
        if self._prompt_warned:
            return
        for row in rows:
            if row.prompt_text is None or row.num_candidates == 0:
                continue
            text = render_prompt(row.prompt, row.prompt_messages, self.tokenizer,
                                 chat_template=self.recipe.data.chat_template)
            if text != row.prompt_text:
                self._prompt_warned = True
                log.warning("prompt %s was sampled from a differently rendered prompt than "
                            "training uses (recorded %r, training renders %r); check "
                            "data.chat_template and the policy's tokenizer", row.prompt_id,
                            row.prompt_text[:80], text[:80])
                return

    def _epoch_batches(self, epoch: int, shard: Callable[[], Iterable[pa.Table]]):
        train = self.recipe.train
        if epoch == 0:
            self.cache = ShardCache(self.rows)
            tables: Iterable[pa.Table] = shard()
            if self._reference_from_policy():
                tables = fill_reference(self.engine.module, self.tokenizer, tables, self.recipe,
                                        rank=self.rank, timing=self._timing)
            return self.cache.stream(tables)
        if self.cache is None:
            raise DataError("no cached rows to replay epoch "
                            f"{epoch + 1}: the checkpoint lacks this worker's rows")
        return self.cache.micro_batches(train.micro_batch_prompts, seed=train.seed, epoch=epoch,
                                        rank=self.rank)

    def _train_epoch(self, epoch: int, batches: Iterable[pa.Table],
                     sink: MetricSink | ForwardingSink | None) -> None:
        train = self.recipe.train
        for tables in group_steps(batches, train.grad_accum):
            stats = self.train_step(tables)
            self.state.step += 1
            record = {"step": self.state.step, "epoch": epoch + 1,
                      "policy_version": self.state.version,
                      **reduce_step(stats, self.world_size), **self._timing}
            self._timing = {}
            self.state.history.append(record)
            if sink is not None:
                sink.log(record, self.state.step)
            if self.rank == 0:
                onehot = (f" one-hot Q {100 * record['onehot_share']:.0f}%"
                          if "onehot_share" in record else "")
                # The global step counts over the whole run, the total per Evolve step.
                in_step = sum(h["policy_version"] == self.state.version
                              for h in self.state.history)
                log.info("global step %d (Evolve step %d: %d/%d) epoch %d loss %.4f lr %.2e "
                         "%.0f tok/s%s", self.state.step, self.state.version, in_step,
                         self.total_steps, epoch + 1, record["loss"], record["lr"],
                         record["tokens_per_s"], onehot)

    def open_sink(self) -> MetricSink | None:
        """The metric sink of this run (rank 0 only; None with ``train.logger=none``)."""
        if self.rank != 0 or self.recipe.train.logger == "none":
            return None
        t = self.recipe.train.tracking
        return MetricSink(self.recipe.train.logger, log_dir=self.spec.log_dir,
                          run_name=self.spec.run_name, config=self.spec.recipe,
                          project=t.project, entity=t.entity, tags=t.tags)

    def train_epochs(self, shard: Callable[[], Iterable[pa.Table]], report: Reporter, *,
                     epochs: int, sink: MetricSink | ForwardingSink | None,
                     stop_after_epoch: int | None = None, checkpoint_last: bool = True
                     ) -> None:
        """Train the remaining epochs of the current Evolve step, checkpointing after each.

        Args:
            shard: Returns this worker's epoch-1 micro-batches (Arrow tables of pool rows);
                called at most once.
            report: Receives, after each epoch, the epoch's record (see :func:`epoch_record`)
                and a local checkpoint directory to persist (deleted once it returns).
            epochs: I, epochs of this step.
            sink: Where per-step metrics go, or None.
            stop_after_epoch: Stop after this epoch (a later call continues).
            checkpoint_last: Also write the resumable checkpoint after the step's last epoch
                (False where the policy written next is all that a resume needs: the report
                then carries no checkpoint directory).

        Raises:
            DataError: Bad rows, missing rewards / reference log-probs, or a row count that
                disagrees with ``num_prompts``.
        """
        last = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
        for epoch in range(self.state.epoch, last):
            self._train_epoch(epoch, self._epoch_batches(epoch, shard), sink)
            if epoch == 0:
                self._check_epoch_rows()
            self.state.epoch = epoch + 1
            if checkpoint_last or self.state.epoch < epochs:
                self._checkpoint(report)
            else:
                report(epoch_record(self.state), None,
                       f"v{self.state.version}-epoch-{self.state.epoch:04d}")

    def policy_info(self) -> dict[str, Any]:
        """What ``train_info.json`` records of the current step's policy."""
        return {"policy_version": self.state.version, "steps": self.state.step,
                "epochs": self.state.epoch, "loss": self.recipe.loss.name,
                "num_prompts": self.spec.num_prompts, "world_size": self.world_size,
                "init_adapter": self.spec.init_adapter}

    def snapshot(self) -> PolicySnapshot | None:
        """The current weights in CPU memory on rank 0 (None elsewhere; every rank calls)."""
        return snapshot_policy(self.engine, rank=self.rank, lora_enabled=self.lora,
                               zero_stage=self.engine.zero_optimization_stage())

    def write(self, snapshot: PolicySnapshot, output_dir: str | Path, *,
              history: list[dict] | None = None, info: dict[str, Any] | None = None) -> Path:
        """Write a snapshot of this run's policy in Hugging Face format (rank 0; may run in a
        background thread while training goes on, given the step's ``history`` and ``info``
        taken when the snapshot was)."""
        module = self.engine.module.get_base_model() if self.lora else self.engine.module
        return write_policy(snapshot, module=module, output_dir=output_dir,
                            tokenizer=self.tokenizer, init_model=self.spec.init_model,
                            merge_on_save=self.recipe.model.lora.merge_on_save,
                            history=self.step_history() if history is None else history,
                            info=self.policy_info() if info is None else info)

    def run(self, shard: Callable[[], Iterable[pa.Table]], report: Reporter) -> list[dict]:
        """Train the remaining epochs and save the policy at the end (one Evolve step per run).

        Args:
            shard: As for :meth:`train_epochs`.
            report: As for :meth:`train_epochs`.

        Returns:
            The per-step metric history of the whole run (earlier attempts included).

        Raises:
            DataError: As for :meth:`train_epochs`.
        """
        spec = self.spec
        sink = self.open_sink()
        try:
            # The last epoch's resumable checkpoint (the whole optimizer state: 2.1 GB for a
            # 135M model under DeepSpeed) is skipped: the policy written below replaces it,
            # and a failure before that retrains the last epoch only.
            self.train_epochs(shard, report, epochs=spec.epochs, sink=sink,
                              stop_after_epoch=spec.stop_after_epoch, checkpoint_last=False)
        finally:
            if sink is not None:
                sink.close()
        if self.state.epoch >= spec.epochs:
            snap = self.snapshot()
            if snap is not None:
                self.write(snap, spec.output_dir)
        return self.state.history

    def _check_epoch_rows(self) -> None:
        got = self.cache.num_rows if self.cache else 0
        if got == 0:
            raise DataError(f"training worker {self.rank} received no rows")
        if got < self.rows and self.rank == 0:
            log.warning("the dataset gave %d rows per worker, num_prompts implied %d: the "
                        "learning-rate schedule will not reach its end", got, self.rows)

    def _checkpoint(self, report: Reporter) -> None:
        directory = tempfile.mkdtemp(prefix="lire-train-ckpt-")
        try:
            save_train_state(self.engine, directory, rank=self.rank, state=self.state,
                             cache=self.cache, exclude_frozen=self.lora)
            name = f"v{self.state.version}-epoch-{self.state.epoch:04d}"
            report(epoch_record(self.state), directory, name)
            fault_point("epoch_checkpoint", name)  # fault tests stop the worker here
        finally:
            shutil.rmtree(directory, ignore_errors=True)
