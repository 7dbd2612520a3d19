"""Training pieces without Ray: DeepSpeed config and schedule, step function, data, records.

Shape notation: B prompts, K candidates per prompt.

The step test runs a real DeepSpeed ZeRO-2 engine in this process (a one-process gloo group)
and compares it with a plain PyTorch loop written here (``torch.optim.AdamW``,
``clip_grad_norm_``) on the naive full-logit log-probs and the LIRE loss from its definition
(paper eq. 5-6) of ``_dist``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from _dist import naive_lire, one_rank_group

from lire_ray.batch import TokenizedGroup
from lire_ray.config import TrainConfig, load_recipe
from lire_ray.errors import ActorFailure, ConfigError, DataError, DependencyError
from lire_ray.losses import build_loss, list_losses
from lire_ray.pool import PoolRow, rows_to_table
from lire_ray.training.checkpoint import TrainState
from lire_ray.training.data import Prefetched, ShardCache, epoch_order, group_steps
from lire_ray.training.engine import (
    build_ds_config,
    build_engine,
    make_scheduler,
    rows_per_worker,
    steps_per_epoch,
    warmup_steps,
)
from lire_ray.training.loggers import MetricSink, check_logger
from lire_ray.training.result import PolicyInit
from lire_ray.training.step import StepStats, loss_inputs, micro_batch_loss, train_step
from lire_ray.training.worker import epoch_record, reduce_step, reward_name_for

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Engine configuration and schedule.
# ---------------------------------------------------------------------------------------------

def test_ds_config_follows_the_recipe():
    train = TrainConfig(lr=3e-4, micro_batch_prompts=3, grad_accum=5, max_grad_norm=0.7,
                        weight_decay=0.01, zero_stage=2)
    cpu = build_ds_config(train, use_gpu=False)
    assert cpu["train_micro_batch_size_per_gpu"] == 3
    assert cpu["gradient_accumulation_steps"] == 5
    assert cpu["gradient_clipping"] == 0.7
    assert cpu["zero_optimization"]["stage"] == 2
    params = cpu["optimizer"]["params"]
    assert cpu["optimizer"]["type"] == "AdamW" and params["torch_adam"] is True
    assert (params["lr"], params["weight_decay"]) == (3e-4, 0.01)
    assert cpu["bf16"]["enabled"] is False  # auto: fp32 on CPU
    assert build_ds_config(train, use_gpu=True)["bf16"]["enabled"] is True  # auto: bf16 on GPU
    fp32_gpu = train.model_copy(update={"precision": "fp32", "zero_stage": 3})
    gpu = build_ds_config(fp32_gpu, use_gpu=True)
    assert gpu["bf16"]["enabled"] is False and gpu["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("total,ratio", [(10, 0.0), (10, 0.3), (7, 0.03), (1, 0.0), (50, 0.1)])
def test_schedule_is_linear_warmup_then_cosine_decay(total, ratio):
    """Paper sec. 4.2: lr(step) = base * (step + 1) / (W + 1) during warmup (the first step
    never has lr 0), then base * (1 + cos(pi * (step - W) / (total - W))) / 2, by hand."""
    warm = warmup_steps(total, ratio)
    assert warm == math.ceil(ratio * total)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, total_steps=total, warmup=warm)
    for step in range(total):
        expected = 2.0 * ((step + 1) / (warm + 1) if step < warm else
                          0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        assert opt.param_groups[0]["lr"] > 0, step
        opt.step(), sched.step()


@pytest.mark.parametrize("prompts", [1, 2, 7, 8, 9, 33])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("micro,accum", [(1, 1), (2, 2), (3, 2), (4, 3)])
def test_steps_per_epoch_matches_a_simulated_epoch(prompts, world, micro, accum):
    if prompts < world:
        with pytest.raises(DataError, match="fewer than"):
            steps_per_epoch(prompts, world, micro, accum)
        return
    rows = prompts // world  # streaming_split(equal=True) drops the remainder
    assert rows_per_worker(prompts, world) == rows
    batches = [list(range(i, min(i + micro, rows))) for i in range(0, rows, micro)]
    steps = 0
    while batches:
        batches = batches[accum:]
        steps += 1
    assert steps_per_epoch(prompts, world, micro, accum) == steps


# ---------------------------------------------------------------------------------------------
# Data: step grouping, cached epochs, prefetching.
# ---------------------------------------------------------------------------------------------

def test_group_steps_keeps_a_short_last_step():
    assert list(group_steps(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(group_steps(range(4), 2)) == [[0, 1], [2, 3]]
    assert list(group_steps([], 2)) == []


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(50, seed=1, epoch=1, rank=0)
    assert sorted(a.tolist()) == list(range(50))
    assert a.tolist() == epoch_order(50, seed=1, epoch=1, rank=0).tolist()
    assert a.tolist() != epoch_order(50, seed=1, epoch=2, rank=0).tolist()
    assert a.tolist() != epoch_order(50, seed=2, epoch=1, rank=0).tolist()


def _rows(n, ref=False):
    return [PoolRow(prompt_id=f"p{i}", prompt=f"prompt {i}", responses=("a", "b c"),
                    sources=("human", "policy@e0"), policy_version=(-1, 0),
                    rewards={"r": (float(i), -1.0)}, ref_logps=(-1.0, -2.0) if ref else None)
            for i in range(n)]


def test_shard_cache_streams_caches_and_replays(tmp_path):
    table = rows_to_table(_rows(7))
    cache = ShardCache(expected_rows=7)
    seen = [t.column("prompt_id").to_pylist() for t in cache.stream(
        table.slice(i, 3) for i in range(0, 7, 3))]
    assert seen == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]
    replay = list(cache.micro_batches(2, seed=0, epoch=1, rank=0))
    assert [t.num_rows for t in replay] == [2, 2, 2, 1]
    ids = [i for t in replay for i in t.column("prompt_id").to_pylist()]
    order = epoch_order(7, seed=0, epoch=1, rank=0)
    assert ids == [f"p{i}" for i in order]
    cache.save(tmp_path / "rows.parquet")
    loaded = ShardCache.load(tmp_path / "rows.parquet")
    assert loaded.table().equals(cache.table())


def test_shard_cache_rejects_more_rows_than_announced():
    cache = ShardCache(expected_rows=3)
    table = rows_to_table(_rows(4))
    with pytest.raises(DataError, match="num_prompts"):
        list(cache.stream([table.slice(0, 2), table.slice(2, 2)]))


def test_shard_cache_rejects_foreign_columns():
    with pytest.raises(DataError, match="lacks pool column"):
        list(ShardCache(3).stream([pa.table({"prompt": ["x"]})]))


def test_prefetched_yields_everything_once_and_reraises():
    calls = []

    def items():
        calls.append(1)
        return iter([1, 2, 3])

    pre = Prefetched(items)
    assert list(pre()) == [1, 2, 3] and calls == [1]
    assert list(Prefetched(lambda: iter([]))()) == []

    def broken():
        raise DataError("no shard")

    with pytest.raises(DataError, match="no shard"):
        list(Prefetched(broken)())


# ---------------------------------------------------------------------------------------------
# Loss inputs and records.
# ---------------------------------------------------------------------------------------------

def _group(pid, k, *, ref=True, human=True, rewards=True):
    return TokenizedGroup(
        prompt_id=pid, prompt_ids=(1, 2), response_ids=tuple((3,) * (j + 1) for j in range(k)),
        rewards=tuple(float(j) for j in range(k)) if rewards else None,
        ref_logps=tuple(-float(j) for j in range(k)) if ref else None,
        is_human=tuple(j == 0 for j in range(k)) if human else None)


class _Seq:
    def __init__(self, ks):
        k_max = max(ks)
        self.logps = torch.zeros(len(ks), k_max)
        self.mask = torch.tensor([[j < k for j in range(k_max)] for k in ks])
        self.lengths = self.mask.long()


def test_loss_inputs_pad_per_prompt_values():
    groups = [_group("a", 3), _group("b", 1)]
    got = loss_inputs(groups, _Seq([3, 1]), needs_reference=True)
    assert got["rewards"].tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]
    assert got["ref_logps"].tolist() == [[0.0, -1.0, -2.0], [0.0, 0.0, 0.0]]
    assert got["human_mask"].tolist() == [[True, False, False], [True, False, False]]
    assert loss_inputs(groups, _Seq([3, 1]), needs_reference=False)["ref_logps"] is None
    no_src = [_group("a", 2, human=False)]
    assert loss_inputs(no_src, _Seq([2]), needs_reference=False)["human_mask"] is None


def test_loss_inputs_name_the_prompt_without_reference_or_rewards():
    with pytest.raises(DataError, match=r"reference log-probs.*'b'"):
        loss_inputs([_group("a", 2), _group("b", 2, ref=False)], _Seq([2, 2]),
                    needs_reference=True)
    with pytest.raises(DataError, match="prompt_id c.*rewards"):
        loss_inputs([_group("c", 2, rewards=False)], _Seq([2]), needs_reference=False)


def test_reward_name_resolution():
    row = _rows(1)[0]
    assert reward_name_for(row, None) == "r"
    assert reward_name_for(row, "other") == "other"
    two = PoolRow(prompt_id="x", prompt="p", responses=("a",), sources=("human",),
                  policy_version=(-1,), rewards={"r": (1.0,), "s": (2.0,)})
    with pytest.raises(DataError, match="evolve.train_reward"):
        reward_name_for(two, None)


def test_reduce_step_single_worker_rates():
    stats = StepStats(loss=0.5, num_prompts=4, metrics={"accuracy": 0.25}, tokens_computed=30,
                      tokens_naive=60, lr=1e-3, grad_norm=2.0, seconds=2.0)
    rec = reduce_step(stats, world_size=1)
    assert rec["loss"] == pytest.approx(0.5) and rec["accuracy"] == pytest.approx(0.25)
    assert (rec["tokens"], rec["naive_tokens"], rec["prompts"]) == (30, 60, 4)
    assert rec["tokens_per_s"] == pytest.approx(15.0)
    assert rec["naive_tokens_per_s"] == pytest.approx(30.0)
    assert (rec["lr"], rec["grad_norm"]) == (1e-3, 2.0)


def test_epoch_record_averages_the_epoch_steps():
    state = TrainState(epoch=2, step=4, history=[
        {"step": 1, "epoch": 1, "loss": 9.0}, {"step": 2, "epoch": 1, "loss": 9.0},
        {"step": 3, "epoch": 2, "loss": 1.0, "lr": 0.2},
        {"step": 4, "epoch": 2, "loss": 3.0, "lr": 0.1}])
    rec = epoch_record(state)
    assert rec["loss"] == pytest.approx(2.0) and rec["lr"] == pytest.approx(0.15)
    assert (rec["epoch"], rec["step"], rec["steps_in_epoch"]) == (2, 4, 2)


# ---------------------------------------------------------------------------------------------
# Metric sinks.
# ---------------------------------------------------------------------------------------------

def _read_events(directory):
    """(tag, step, value) of every scalar in the TFRecord event files under ``directory``."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return out


def test_tensorboard_sink_writes_numeric_scalars(tmp_path):
    sink = MetricSink("tensorboard", log_dir=tmp_path, run_name="t")
    sink.log({"loss": 0.5, "note": "text", "ok": True}, step=1)
    sink.log({"loss": 0.25}, step=2)
    sink.close()
    assert _read_events(tmp_path) == [("train/loss", 1, 0.5), ("train/loss", 2, 0.25)]


def test_logger_checks():
    with pytest.raises(ConfigError, match="train.logger"):
        check_logger("csv")
    check_logger("none")
    for kind, package in (("wandb", "wandb"), ("mlflow", "mlflow")):
        import importlib.util

        if importlib.util.find_spec(package) is None:
            with pytest.raises(DependencyError, match=f"pip install {package}"):
                check_logger(kind)


# ---------------------------------------------------------------------------------------------
# One optimizer step with a real DeepSpeed engine in this process.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def process_group():
    with one_rank_group():
        yield


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from lire_ray.demo.tiny_models import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy", seed=0)


def _random_groups(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice([1, 2, 3, 4])
        out.append(TokenizedGroup(
            prompt_id=f"g{i}",
            prompt_ids=tuple(rng.randrange(500) for _ in range(rng.randint(2, 7))),
            response_ids=tuple(tuple(rng.randrange(500) for _ in range(rng.randint(1, 6)))
                               for _ in range(k)),
            rewards=tuple(rng.uniform(-1, 1) for _ in range(k))))
    return out


@pytest.mark.parametrize("zero_stage,engine", [(0, "deepspeed"), (2, "deepspeed"),
                                               (3, "deepspeed"), (2, "auto")])
def test_train_step_matches_plain_pytorch(process_group, policy_dir, zero_stage, engine):
    from lire_ray.models import load_causal_lm

    lr, clip, temperature = 1e-2, 0.05, 2.0
    groups = _random_groups(4, seed=1)
    # Step 1: two micro-batches of unequal size; step 2: one micro-batch although grad_accum
    # is 2 (the short last step of an epoch).
    steps = [[groups[0:2], groups[2:3]], [groups[3:4]]]
    train = TrainConfig(lr=lr, micro_batch_prompts=2, grad_accum=2, max_grad_norm=clip,
                        warmup_ratio=0.0, zero_stage=zero_stage, engine=engine)
    engine = build_engine(load_causal_lm(policy_dir, dtype="float32").train(), train,
                          use_gpu=False, total_steps=3)
    # auto on one CPU worker is the plain torch engine (fused AdamW, no ZeRO).
    assert getattr(engine, "is_deepspeed", True) == (train.engine == "deepspeed")
    loss = build_loss("lire", {"temperature": temperature})
    got = [train_step(engine, mbs, loss, packing="shared_prefix", chunk_size=5) for mbs in steps]

    ref = load_causal_lm(policy_dir, dtype="float32").train()
    opt = torch.optim.AdamW(ref.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    for i, (mbs, stats) in enumerate(zip(steps, got, strict=True)):
        lr_i = lr * 0.5 * (1 + math.cos(math.pi * i / 3))
        for group in opt.param_groups:
            group["lr"] = lr_i
        flat = [g for mb in mbs for g in mb]
        value = torch.stack([naive_lire(ref, g, temperature) for g in flat]).mean()
        value.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), clip))
        opt.step()
        opt.zero_grad()
        assert stats.num_prompts == len(flat)
        assert stats.loss == pytest.approx(float(value.detach()), rel=1e-6)
        assert stats.lr == pytest.approx(lr_i, rel=1e-12)
        assert stats.grad_norm == pytest.approx(norm, rel=1e-5)
        assert stats.tokens_computed == sum(g.num_tokens_shared for g in flat)
        assert stats.tokens_naive == sum(g.num_tokens_naive for g in flat)
    assert got[0].grad_norm > clip  # clipping was exercised
    # Adam normalises each entry by sqrt(v) + 1e-8, so rounding noise in near-zero gradient
    # entries moves a few entries by a small fraction of lr; the update as a whole must agree.
    init = load_causal_lm(policy_dir, dtype="float32").state_dict()
    want, have = ref.state_dict(), engine.module.state_dict()
    err = sum(float((have[k] - v).pow(2).sum()) for k, v in want.items()) ** 0.5
    update = sum(float((v - init[k]).pow(2).sum()) for k, v in want.items()) ** 0.5
    assert update > lr and err / update < 1e-3
    for k, v in want.items():
        assert torch.allclose(have[k], v, rtol=0, atol=0.1 * lr), k


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_takes_a_deepspeed_step_on_two_human_answers(process_group, policy_dir,
                                                                  name):
    """Each registered loss trains through the engine on K = 2 offline pairs (HH's shape:
    both candidates human-written, rewards the preference labels), the shape the offline
    Table 2 trains on: a finite loss and gradient norm, and the policy moves."""
    from lire_ray.models import load_causal_lm

    rng = random.Random(7)
    groups = [TokenizedGroup(
        prompt_id=f"p{i}", prompt_ids=tuple(rng.randrange(500) for _ in range(5)),
        response_ids=tuple(tuple(rng.randrange(500) for _ in range(4)) for _ in range(2)),
        rewards=(1.0, 0.0), ref_logps=(-20.0 - i, -21.0), is_human=(True, True),
        human_reference=0) for i in range(4)]
    loss = build_loss(name)
    if not loss.spec.needs_reference:
        groups = [dataclasses.replace(g, ref_logps=None) for g in groups]
    train = TrainConfig(lr=1e-2, micro_batch_prompts=4, warmup_ratio=0.0, zero_stage=2,
                        engine="deepspeed")
    model = load_causal_lm(policy_dir, dtype="float32").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = build_engine(model, train, use_gpu=False, total_steps=1)
    stats = train_step(engine, [groups], loss, packing="shared_prefix", chunk_size=64)
    assert math.isfinite(stats.loss) and math.isfinite(stats.grad_norm) and stats.grad_norm > 0
    assert stats.num_prompts == 4
    after = engine.module.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())


def test_micro_batch_loss_refuses_missing_reference(policy_dir):
    from lire_ray.models import load_causal_lm

    model = load_causal_lm(policy_dir, dtype="float32")
    with pytest.raises(DataError, match="reference log-probs"):
        micro_batch_loss(model, _random_groups(2, seed=3), build_loss("dpo"),
                         packing="padded", chunk_size=64)


def test_train_step_refuses_empty_micro_batches():
    with pytest.raises(ValueError, match="non-empty"):
        train_step(object(), [[]], build_loss("lire"))


# ---------------------------------------------------------------------------------------------
# The trainer group's error boundary and the train job's argument checks.
# ---------------------------------------------------------------------------------------------

def test_trainer_group_turns_ray_train_failures_into_actor_failure(monkeypatch):
    ray_train = pytest.importorskip("ray.train")
    from lire_ray.runtime import trainer as trainer_module
    from lire_ray.runtime.trainer import TrainerGroup

    recipe = load_recipe(None, [])
    group = TrainerGroup(recipe, storage_path="/tmp/unused-storage", name="t")
    worker_error = DataError("the pool has no ref_logps", field="ref_logps")
    failure = ray_train.WorkerGroupError("worker 0 failed", {0: worker_error})

    class FailingTrainer:
        def fit(self):
            raise failure

    monkeypatch.setattr(trainer_module, "torch_trainer", lambda *a, **k: FailingTrainer())
    with pytest.raises(ActorFailure, match="worker 0: DataError: field 'ref_logps'") as info:
        group.fit(None, num_prompts=4, init=PolicyInit("unused"), output_dir="/tmp/unused-out")
    assert info.value.role == "trainer" and info.value.__cause__ is failure
    with pytest.raises(ConfigError, match="absolute"):
        TrainerGroup(recipe, storage_path="relative/dir", name="t")


def test_train_job_refuses_builtin_prompts_and_splits_output():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_job", ROOT / "jobs" / "train.py")
    train_job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_job)
    rest, opts = train_job.take_job_options(["loss=dpo", "output=ckpt/x", "train.lr=1e-5"],
                                            ("output",))
    assert rest == ["loss=dpo", "train.lr=1e-5"] and opts == {"output": "ckpt/x"}
    args = train_job.job_parser("x").parse_args(["data=builtin:reviews", "loss=sft"])
    with pytest.raises(ConfigError, match="pool directory"):
        train_job.main(args)


def test_trainer_group_checks_arguments_before_starting_workers(monkeypatch):
    pytest.importorskip("ray.train")
    from lire_ray.runtime.trainer import TrainerGroup

    def never(dataset, spec):
        raise AssertionError("the trainer must not start")

    two = TrainerGroup(load_recipe(None, ["resources.trainer.num_workers=2"]),
                       storage_path="/tmp/unused-storage", name="t")

    with pytest.raises(DataError, match="fewer than the 2 training worker"):
        two.fit(None, num_prompts=1, init=PolicyInit("unused"), output_dir="/tmp/unused-out")
    bad = TrainerGroup(load_recipe(None, ["loss.params={nope: 1}"]),
                       storage_path="/tmp/unused-storage", name="t")

    with pytest.raises(ConfigError, match="unknown parameter"):
        bad.fit(None, num_prompts=8, init=PolicyInit("unused"), output_dir="/tmp/unused-out")


def test_load_lora_continues_a_saved_adapter(policy_dir, tmp_path):
    """A saved adapter comes back with the same weights and only its LoRA matrices trainable."""
    from lire_ray.config import LoraConfig
    from lire_ray.errors import ModelLoadError
    from lire_ray.models import load_causal_lm
    from lire_ray.training.engine import apply_lora, load_lora

    trained = apply_lora(load_causal_lm(str(policy_dir), dtype="float32"),
                         LoraConfig(enabled=True, r=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)  # a freshly initialised B is zero; make the adapter non-trivial
    trained.save_pretrained(str(tmp_path / "adapter"))
    again = load_lora(load_causal_lm(str(policy_dir), dtype="float32"), str(tmp_path / "adapter"))
    saved = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in again.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys() and saved
    for name, p in loaded.items():
        assert p.requires_grad, name
        assert torch.equal(p, saved[name]), name
    assert not any(p.requires_grad for n, p in again.named_parameters() if "lora_" not in n)
    with pytest.raises(ModelLoadError, match="LoRA adapter"):
        load_lora(load_causal_lm(str(policy_dir), dtype="float32"), str(tmp_path / "none"))


def test_stale_torch_extension_locks_are_removed_and_fresh_ones_kept(tmp_path, monkeypatch):
    import os
    import time

    from lire_ray.training.engine import clear_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stale, fresh = tmp_path / "old_op" / "lock", tmp_path / "new_op" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir()
        lock.write_text("")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    assert clear_stale_build_locks(max_age_s=600) == [str(stale)]
    assert not stale.exists() and fresh.exists()
