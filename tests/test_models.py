"""Tiny local models and the hub-id-or-path loaders."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch
from safetensors.torch import load_file

from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.models import (
    build_tiny_policy,
    build_tiny_reward_model,
    load_causal_lm,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("m") / "policy", seed=0)


def test_policy_layout_and_config(policy_dir):
    names = {p.name for p in policy_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    assert not [p for p in policy_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs
    config = json.loads((policy_dir / "config.json").read_text())
    assert config["head_dim"] == 64
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["tie_word_embeddings"] is False
    assert config["max_position_embeddings"] == 512


def test_build_is_deterministic_per_seed(policy_dir, tmp_path):
    again = build_tiny_policy(tmp_path / "again", seed=0)
    other = build_tiny_policy(tmp_path / "other", seed=1)
    a, b = load_file(policy_dir / "model.safetensors"), load_file(again / "model.safetensors")
    c = load_file(other / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])
    assert (policy_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_tokenizer_special_tokens_and_chat_template(policy_dir):
    tok = load_tokenizer(policy_dir)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tok, name) is not None, name
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    text = "The movie was great and I liked it."
    assert tok.decode(tok(text).input_ids) == text
    messages = [{"role": "user", "content": "How was your day?"},
                {"role": "assistant", "content": "It was lovely."}]
    rendered = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(tok.bos_token) and rendered.endswith("<|assistant|>\n")
    assert "How was your day?" + tok.eos_token in rendered
    full = tok.apply_chat_template(messages, tokenize=False)
    assert full.index("How was your day?") < full.index("It was lovely.")


def test_existing_dir_needs_overwrite(policy_dir, tmp_path):
    target = tmp_path / "p"
    build_tiny_policy(target, seed=0)
    with pytest.raises(ConfigError, match=str(target)):
        build_tiny_policy(target, seed=1)
    build_tiny_policy(target, seed=1, overwrite=True)
    fresh = build_tiny_policy(tmp_path / "fresh", seed=1)
    assert torch.equal(load_file(target / "model.safetensors")["lm_head.weight"],
                       load_file(fresh / "model.safetensors")["lm_head.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "p"]


def test_crash_while_saving_leaves_no_model_dir(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    original = LlamaForCausalLM.save_pretrained

    def save_then_crash(self, path, **kwargs):
        original(self, path, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", save_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        build_tiny_policy(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_bad_head_dim_rejected(tmp_path):
    with pytest.raises(ConfigError, match="head_dim 64"):
        build_tiny_policy(tmp_path / "p", hidden_size=64, num_heads=4)
    assert not (tmp_path / "p").exists()


def test_reward_model_shares_tokenizer(policy_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    rm_dir = build_tiny_reward_model(tmp_path / "rm", tokenizer_dir=policy_dir, seed=0)
    assert (rm_dir / "tokenizer.json").read_bytes() == (policy_dir / "tokenizer.json").read_bytes()
    tok = load_tokenizer(rm_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, use_safetensors=True).eval()
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id
    batch = tok(["The food was bad.", "Our trip was wonderful and everyone smiled."],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = rm(**batch).logits
        alone = rm(**tok(["The food was bad."], return_tensors="pt")).logits
    assert scores.shape == (2, 1)
    # The score is read at the last real token, so right padding does not change it.
    torch.testing.assert_close(scores[0], alone[0])


def test_save_load_round_trip_gives_identical_outputs(policy_dir, tmp_path):
    model = load_causal_lm(policy_dir, dtype="float32")
    ids = load_tokenizer(policy_dir)("The song was nice.", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path / "copy", safe_serialization=True)
    reloaded = load_causal_lm(tmp_path / "copy", dtype="float32")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, before)
    assert reloaded.config._attn_implementation == "sdpa"
    assert not reloaded.training


def test_dtype_choice(policy_dir):
    assert load_causal_lm(policy_dir, dtype="bfloat16").lm_head.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype must be one of"):
        load_causal_lm(policy_dir, dtype="fp8")


@pytest.mark.parametrize("loader", [load_tokenizer, load_causal_lm])
def test_missing_local_path_names_it(loader, tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelLoadError, match=f"'{missing}' does not exist"):
        loader(missing)
    with pytest.raises(ModelLoadError, match="'./models/nope' does not exist"):
        loader("./models/nope")


def test_existing_dir_without_model_files(tmp_path):
    with pytest.raises(ModelLoadError, match=f"local path '{tmp_path}'"):
        load_causal_lm(tmp_path)


@pytest.mark.parametrize("loader", [load_tokenizer, load_causal_lm])
def test_hub_id_offline_fails_fast(loader, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub library reads the variable once at import; set its flag as the variable would.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="'lire-test-org/no-such-model'.*unreachable"):
        loader("lire-test-org/no-such-model")
    assert time.monotonic() - start < 10


def test_missing_pad_token_falls_back_to_eos(policy_dir, tmp_path, caplog):
    tok = load_tokenizer(policy_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    with caplog.at_level(logging.WARNING, logger="lire_ray.models"):
        reloaded = load_tokenizer(tmp_path / "nopad")
    assert reloaded.pad_token == reloaded.eos_token == tok.eos_token
    assert reloaded.pad_token_id == tok.eos_token_id
    assert any("no pad token" in r.getMessage() for r in caplog.records)
