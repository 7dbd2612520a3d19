"""``train.deepspeed``: merged over the generated DeepSpeed config, recipe-owned keys refused,
and a real engine built from the merged config (DeepSpeed in this process, CPU)."""

from __future__ import annotations

import pytest
from _dist import one_rank_group

from lire_ray.config import TrainConfig, load_recipe
from lire_ray.errors import ConfigError
from lire_ray.training.ds_config import RECIPE_OWNED, apply_overrides, deep_merge
from lire_ray.training.engine import build_ds_config, build_engine


def test_fused_adam_on_gpu_torch_adam_on_cpu():
    train = TrainConfig()
    assert build_ds_config(train, use_gpu=True)["optimizer"]["params"]["torch_adam"] is False
    assert build_ds_config(train, use_gpu=False)["optimizer"]["params"]["torch_adam"] is True


def test_overrides_are_deep_merged_and_unknown_keys_pass():
    r = load_recipe(None, ["train.deepspeed.zero_optimization.offload_optimizer.device=cpu",
                           "train.deepspeed.optimizer.params.eps=1e-6",
                           "train.deepspeed.some_future_key={a: 1}"])
    cfg = build_ds_config(r.train, use_gpu=True)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"] == {"device": "cpu"}
    assert zero["contiguous_gradients"] is True, "generated keys beside the merged ones stay"
    params = cfg["optimizer"]["params"]
    assert params["eps"] == 1e-6 and params["lr"] == r.train.lr and params["betas"]
    assert cfg["some_future_key"] == {"a": 1}
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}, "d": 4}) == \
        {"a": {"b": 3, "c": 2}, "d": 4}


def test_another_optimizer_keeps_only_lr_and_weight_decay():
    got = apply_overrides({"optimizer": {"type": "AdamW", "params": {
        "lr": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.99], "torch_adam": True}}},
        {"optimizer": {"type": "Lion", "params": {"betas": [0.95, 0.98]}}})
    assert got["optimizer"] == {"type": "Lion", "params": {"lr": 0.1, "weight_decay": 0.01,
                                                           "betas": [0.95, 0.98]}}


@pytest.mark.parametrize("path", sorted(RECIPE_OWNED))
def test_recipe_owned_keys_are_refused_naming_the_recipe_key(path):
    with pytest.raises(ConfigError, match="train.deepspeed") as err:
        load_recipe(None, [f"train.deepspeed.{path}=1"])
    first_key = RECIPE_OWNED[path].split()[0]
    assert f"'{path}'" in str(err.value) and first_key in str(err.value)


def test_recipe_owned_keys_are_refused_on_the_command_line():
    with pytest.raises(ConfigError, match="use train.micro_batch_prompts"):
        load_recipe(None, ["train.deepspeed.train_micro_batch_size_per_gpu=8"])


def test_an_engine_takes_the_chosen_optimizer_and_offload(tmp_path):
    """DeepSpeed builds the optimizer the merged config names (here torch's Adagrad: DeepSpeed's
    fused kernels need a GPU) with the recipe's learning rate, and honours ZeRO offload."""
    import torch

    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_causal_lm

    policy = build_tiny_policy(tmp_path / "policy", seed=0)
    adagrad = TrainConfig(lr=3e-3, zero_stage=1, deepspeed={"optimizer": {"type": "Adagrad"}})
    # torch_adam (the CPU default) keeps DeepSpeed from compiling its CPU Adam op for offload.
    offload = TrainConfig(lr=2e-3, zero_stage=2, deepspeed={
        "zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    with one_rank_group():
        engine = build_engine(load_causal_lm(policy, dtype="float32").train(), adagrad,
                              use_gpu=False, total_steps=2)
        assert isinstance(engine.basic_optimizer, torch.optim.Adagrad)
        assert engine.basic_optimizer.defaults["lr"] == 3e-3
        assert not engine.zero_cpu_offload()
        engine = build_engine(load_causal_lm(policy, dtype="float32").train(), offload,
                              use_gpu=False, total_steps=2)
        assert isinstance(engine.basic_optimizer, torch.optim.AdamW)
        assert engine.zero_cpu_offload() and engine.zero_optimization_stage() == 2
