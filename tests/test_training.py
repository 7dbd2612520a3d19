"""Training on Ray Train with DeepSpeed on CPU, checked against a plain PyTorch loop.

Shape notation: B prompts, K candidates per prompt.

The reference loop below is written independently of ``lire_ray.training``: ``torch.optim.AdamW``,
``clip_grad_norm_`` and transformers' cosine schedule on the naive full-logit sequence log-probs
(one padded row per candidate) and the LIRE loss from its definition (paper eq. 5-6:
``-sum_j softmax(s/T)_j softmax(R)_j``) of ``_dist``.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from _dist import naive_lire, naive_logps, one_rank_group

from lire_ray.collate import tokenize_group
from lire_ray.config import load_recipe
from lire_ray.demo.tiny_models import build_tiny_policy
from lire_ray.models import load_causal_lm, load_tokenizer
from lire_ray.pool import PoolRow, read_pool_dataset, write_pool
from lire_ray.rundir import COMPLETE_MARKER
from lire_ray.training.result import PolicyInit

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration

NUM_PROMPTS = 8
TEMPERATURE = 2.0
MAX_PROMPT, MAX_RESPONSE = 16, 8
WORDS = ("good bad great awful fine nice sad happy the movie was food really not very "
         "so and I it").split()


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy", seed=0)


@pytest.fixture(scope="module")
def pool_rows():
    rng = random.Random(7)
    rows = []
    for i in range(NUM_PROMPTS):
        k = [2, 3, 4][i % 3]
        responses = []
        while len(responses) < k:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
            if text not in responses:
                responses.append(text)
        rewards = [rng.uniform(-2.0, 2.0) for _ in range(k)]
        rows.append(PoolRow(prompt_id=f"p{i}", prompt=f"Review number {i}: the movie",
                            responses=tuple(responses), sources=("policy@e0",) * k,
                            policy_version=(0,) * k, rewards={"r": tuple(rewards)}))
    return rows


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, pool_rows):
    out = tmp_path_factory.mktemp("pools") / "pool"
    write_pool(pool_rows, out)
    return out


def make_recipe(*overrides):
    base = ["rewards=[]", "eval.judges=[]", "evolve.train_reward=null",
            f"model.max_prompt_tokens={MAX_PROMPT}", f"model.max_response_tokens={MAX_RESPONSE}",
            "loss.name=lire", f"loss.params={{temperature: {TEMPERATURE}}}",
            "train.warmup_ratio=0.0", "train.seed=3", "resources.trainer.max_failures=0"]
    return load_recipe(None, base + list(overrides))


def fit(recipe, *, pool_dir, policy_dir, tmp, name, **kwargs):
    from lire_ray.runtime.trainer import TrainerGroup

    group = TrainerGroup(recipe, storage_path=str(tmp / "ray_train"), name=name)
    return group.fit(read_pool_dataset(pool_dir), num_prompts=NUM_PROMPTS,
                     init=PolicyInit(str(policy_dir)), output_dir=str(tmp / f"out-{name}"),
                     **kwargs)


def groups_of(rows, policy_dir):
    tok = load_tokenizer(policy_dir)
    return [tokenize_group(r, tok, max_prompt_tokens=MAX_PROMPT, max_response_tokens=MAX_RESPONSE,
                           reward_name="r") for r in rows]


def q_best(model, groups):
    with torch.no_grad():
        out = []
        for g in groups:
            q = torch.softmax(naive_logps(model, g) / TEMPERATURE, dim=0)
            out.append(float(q[max(range(len(g.rewards)), key=g.rewards.__getitem__)]))
    return out


# ---------------------------------------------------------------------------------------------
# Two workers, ZeRO-2, full fine-tuning: each step covers all 8 prompts (2 workers x 2
# micro-batches x 2 prompts), so the data split between workers cannot change the gradient.
# ---------------------------------------------------------------------------------------------

LR, CLIP, EPOCHS = 3e-3, 0.1, 4


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, policy_dir, pool_dir, tmp_path_factory):
    recipe = make_recipe("resources.trainer.num_workers=2", "resources.trainer.cpus_per_worker=0.5",
                         "train.zero_stage=2", f"train.lr={LR}", f"train.max_grad_norm={CLIP}",
                         "train.micro_batch_prompts=2", "train.grad_accum=2",
                         f"train.epochs={EPOCHS}")
    tmp = tmp_path_factory.mktemp("two")
    result = fit(recipe, pool_dir=pool_dir, policy_dir=policy_dir, tmp=tmp, name="two")
    return result, tmp


@pytest.fixture(scope="module")
def reference_run(policy_dir, pool_rows):
    """Full-batch AdamW + clipping + cosine schedule in plain PyTorch, one process."""
    from transformers import get_cosine_schedule_with_warmup

    groups = groups_of(pool_rows, policy_dir)
    model = load_causal_lm(policy_dir, dtype="float32")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 0, EPOCHS)
    losses, norms, lrs = [], [], []
    for _ in range(EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        loss = torch.stack([naive_lire(model, g, TEMPERATURE) for g in groups]).mean()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)))
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return model, losses, norms, lrs


def test_two_workers_match_single_process_reference(two_worker_run, reference_run, policy_dir):
    result, _ = two_worker_run
    ref_model, ref_losses, ref_norms, ref_lrs = reference_run
    assert [h["step"] for h in result.history] == list(range(1, EPOCHS + 1))
    assert [h["prompts"] for h in result.history] == [NUM_PROMPTS] * EPOCHS
    got = [h["loss"] for h in result.history]
    assert got == pytest.approx(ref_losses, rel=1e-6, abs=1e-9)
    assert [h["grad_norm"] for h in result.history] == pytest.approx(ref_norms, rel=1e-4)
    assert ref_norms[0] > CLIP  # the first step really was clipped
    assert [h["lr"] for h in result.history] == pytest.approx(ref_lrs, rel=1e-9)
    trained = load_causal_lm(result.checkpoint_dir, dtype="float32")
    init = load_causal_lm(policy_dir, dtype="float32").state_dict()
    ref_state, got_state = ref_model.state_dict(), trained.state_dict()
    moved = max(float((ref_state[k] - init[k]).abs().max()) for k in ref_state)
    assert moved > LR  # training moved the weights by several steps' worth
    # Adam divides by sqrt(v) + 1e-8, so float32 rounding differences in gradient entries near
    # 1e-8 (the reduction order differs between 2 workers and one process) can change a few
    # entries' updates by a fraction of lr (measured: 25 of 459k entries above 1e-5). The
    # update as a whole must agree to 1e-3 relative (measured 6e-5), no entry by more than
    # a tenth of one step.
    err = sum(float((got_state[k] - v).pow(2).sum()) for k, v in ref_state.items()) ** 0.5
    update = sum(float((v - init[k]).pow(2).sum()) for k, v in ref_state.items()) ** 0.5
    assert err / update < 1e-3
    for k, v in ref_state.items():
        assert torch.allclose(got_state[k], v, rtol=0, atol=0.1 * LR), k


def test_step_metrics_count_shared_and_naive_tokens(two_worker_run, pool_rows, policy_dir):
    result, _ = two_worker_run
    groups = groups_of(pool_rows, policy_dir)
    shared = sum(len(g.prompt_ids) + sum(len(r) for r in g.response_ids) for g in groups)
    naive = sum(len(g.prompt_ids) + len(r) for g in groups for r in g.response_ids)
    for h in result.history:
        assert (h["tokens"], h["naive_tokens"]) == (shared, naive)
        assert h["tokens_per_s"] > 0 and h["naive_tokens_per_s"] > h["tokens_per_s"]
        assert 0.0 <= h["accuracy"] <= 1.0 and h["entropy"] > 0.0
    out = result.checkpoint_dir
    assert (out / COMPLETE_MARKER).is_file()
    lines = (out / "train_history.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == result.history
    assert result.adapter_dir is None and result.full_model and result.epochs_done == EPOCHS


def test_first_step_gradient_health_matches_a_hand_computation(two_worker_run, pool_rows,
                                                               policy_dir):
    """Step 1 runs on the initial policy: its one-hot share and mean |eq. 7 weight| over the
    8 prompts, computed here from naive log-probs, must be what the two workers reported."""
    result, _ = two_worker_run
    model = load_causal_lm(policy_dir, dtype="float32")
    shares, weights = [], []
    with torch.no_grad():
        for g in groups_of(pool_rows, policy_dir):
            q = torch.softmax(naive_logps(model, g).double() / TEMPERATURE, dim=0).tolist()
            e = [math.exp(r) for r in g.rewards]
            rt = [x / sum(e) for x in e]
            ex = sum(a * b for a, b in zip(q, rt, strict=True))
            shares.append(float(max(q) > 0.99))
            weights.append(sum(abs(a * (b - ex) / TEMPERATURE)
                               for a, b in zip(q, rt, strict=True)) / len(q))
    first = result.history[0]
    assert first["onehot_share"] == pytest.approx(sum(shares) / len(shares), abs=1e-12)
    assert first["grad_weight"] == pytest.approx(sum(weights) / len(weights), rel=1e-4)
    assert all(0.0 <= h["onehot_share"] <= 1.0 and h["grad_weight"] > 0 for h in result.history)


def test_tensorboard_events_written(two_worker_run):
    _, tmp = two_worker_run
    events = list((tmp / "ray_train" / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_lire_raises_best_candidate_probability(two_worker_run, pool_rows, policy_dir):
    result, _ = two_worker_run
    groups = groups_of(pool_rows, policy_dir)
    before = q_best(load_causal_lm(policy_dir, dtype="float32"), groups)
    after = q_best(load_causal_lm(result.checkpoint_dir, dtype="float32"), groups)
    improved = sum(a > b for a, b in zip(after, before, strict=True))
    assert improved > len(groups) / 2
    assert sum(after) / len(after) > sum(before) / len(before)


# ---------------------------------------------------------------------------------------------
# LoRA, one worker: only the adapters train; a stopped run resumes on the same trajectory.
# ---------------------------------------------------------------------------------------------

LORA = ("model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8",
        "model.lora.dropout=0.1", "model.lora.target_modules=[q_proj,v_proj]",
        "model.lora.merge_on_save=true", "train.lr=2e-2", "train.micro_batch_prompts=2",
        "train.grad_accum=1", "train.epochs=2", "train.zero_stage=2",
        "resources.trainer.num_workers=1")


@pytest.fixture(scope="module")
def lora_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def lora_uninterrupted(policy_dir, pool_dir, lora_tmp):
    """The same LoRA run without Ray and without a stop: one process, a one-rank gloo group,
    the pool's rows in file order (what a single Ray Train worker streams)."""
    from lire_ray.pool import read_pool
    from lire_ray.training.worker import TrainingRun, WorkerSpec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker with one CPU: same float reduction order
    try:
        with one_rank_group():
            recipe = make_recipe(*LORA, "train.logger=none")
            spec = WorkerSpec(recipe=recipe.model_dump(mode="json"), init_model=str(policy_dir),
                              output_dir=str(lora_tmp / "out-uninterrupted"),
                              num_prompts=NUM_PROMPTS, epochs=2)
            run = TrainingRun(spec, rank=0, world_size=1, use_gpu=False)
            table = read_pool(pool_dir)
            history = run.run(lambda: (table.slice(i, 2) for i in range(0, NUM_PROMPTS, 2)),
                              lambda record, directory, name: None)
    finally:
        torch.set_num_threads(threads)
    return history, lora_tmp / "out-uninterrupted"


@pytest.fixture(scope="module")
def lora_resumed(ray_cluster, policy_dir, pool_dir, lora_tmp):
    """A Ray Train LoRA run stopped after epoch 1, then continued by a second ``fit``."""
    recipe = make_recipe(*LORA)
    first = fit(recipe, pool_dir=pool_dir, policy_dir=policy_dir, tmp=lora_tmp, name="resumed",
                stop_after_epoch=1)
    second = fit(recipe, pool_dir=pool_dir, policy_dir=policy_dir, tmp=lora_tmp, name="resumed")
    return first, second


def _safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_lora_trains_only_the_adapters(lora_resumed, policy_dir):
    _, run = lora_resumed
    assert run.adapter_dir is not None and run.full_model
    base = _safetensors(policy_dir / "model.safetensors")
    merged = _safetensors(run.checkpoint_dir / "model.safetensors")
    adapter = _safetensors(run.adapter_dir / "adapter_model.safetensors")
    assert set(merged) == set(base)
    scale = 8 / 4
    changed = 0
    for key, weight in base.items():
        target = key.endswith(("q_proj.weight", "v_proj.weight"))
        if not target:
            assert torch.equal(merged[key], weight), key  # byte-identical
            continue
        stem = "base_model.model." + key[: -len(".weight")]
        a, b = adapter[stem + ".lora_A.weight"], adapter[stem + ".lora_B.weight"]
        assert torch.allclose(merged[key], weight + scale * (b @ a), atol=1e-6), key
        changed += int(not torch.equal(merged[key], weight))
    assert changed == 4  # q and v in both layers


def test_stopped_run_resumes_on_the_same_loss_trajectory(lora_resumed, lora_uninterrupted):
    first, second = lora_resumed
    full, full_dir = lora_uninterrupted
    steps_per_epoch = math.ceil(NUM_PROMPTS / 2)
    assert first.checkpoint_dir is None and first.epochs_done == 1
    assert len(first.history) == steps_per_epoch
    assert second.epochs_done == 2 and len(second.history) == 2 * steps_per_epoch
    assert [h["epoch"] for h in second.history] == [h["epoch"] for h in full]
    for key in ("loss", "lr", "grad_norm"):
        assert [h[key] for h in second.history] == pytest.approx([h[key] for h in full],
                                                                 rel=1e-6, abs=1e-9), key
    got = _safetensors(second.adapter_dir / "adapter_model.safetensors")
    want = _safetensors(full_dir / "adapter" / "adapter_model.safetensors")
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.allclose(got[key], value, rtol=0, atol=1e-7), key
