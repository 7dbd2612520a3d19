"""Tiny local models and the hub-id-or-path loaders."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file

from lire_ray.demo.tiny_models import build_tiny_policy, build_tiny_reward_model
from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.models import check_tokenizers, ensure_pad_token, load_causal_lm, load_tokenizer


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


def _strip_special(tokenizer, out_dir, *names):
    """Save ``tokenizer`` to ``out_dir`` without the special tokens ``names`` (e.g. pad)."""
    for name in names:
        setattr(tokenizer, name, None)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def test_tokenizer_without_pad_or_eos_names_the_file_to_fix(tmp_path):
    from _tiny_tokenizer import tiny_tokenizer

    bare = _strip_special(tiny_tokenizer(), tmp_path / "bare", "pad_token", "eos_token")
    before = sorted((p.name, p.read_bytes()) for p in bare.iterdir())
    with pytest.raises(ModelLoadError) as err:
        load_tokenizer(bare)
    message = str(err.value)
    assert f"'{bare}'" in message and "neither a pad token nor an eos token" in message
    assert str(bare / "tokenizer_config.json") in message and '"pad_token"' in message
    assert sorted((p.name, p.read_bytes()) for p in bare.iterdir()) == before  # nothing fixed


def test_hub_tokenizer_without_pad_or_eos_points_to_a_local_copy():
    from _tiny_tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token = None
    with pytest.raises(ModelLoadError, match="local copy of 'some-org/chat-model'"):
        ensure_pad_token(tok, "some-org/chat-model")


def test_eos_only_tokenizer_pads_with_eos_and_keeps_real_eos(tmp_path):
    from _tiny_tokenizer import tiny_tokenizer

    from lire_ray.collate import tokenize_group
    from lire_ray.pool import PoolRow

    ref = tiny_tokenizer()
    eos_only = _strip_special(tiny_tokenizer(), tmp_path / "eos-only", "pad_token")
    tok = load_tokenizer(eos_only)
    eos = ref.convert_tokens_to_ids("<eos>")
    assert tok.pad_token == "<eos>" and tok.pad_token_id == tok.eos_token_id == eos
    texts = ["the cat", "the quick brown fox jumps over the lazy dog"]
    alone = [ref(t)["input_ids"] for t in texts]
    batch = tok(texts, padding=True)
    width = max(len(ids) for ids in alone)
    for ids, mask, own in zip(batch["input_ids"], batch["attention_mask"], alone):
        assert ids == own + [eos] * (width - len(own))
        assert mask == [1] * len(own) + [0] * (width - len(own))
    # A response's closing eos is the pad id now, and must still count as a response token.
    row = PoolRow(prompt_id="p", prompt="Human: What is a cat?", responses=["A cat.", "Fur."],
                  sources=["human", "human"], policy_version=[-1, -1])
    group = tokenize_group(row, tok, max_prompt_tokens=64, max_response_tokens=64)
    for text, ids in zip(row.responses, group.response_ids):
        assert list(ids) == ref(text, add_special_tokens=False)["input_ids"] + [eos]


def test_sampler_on_a_policy_without_pad_token_matches_unpadded_decoding(policy_dir, tmp_path):
    from lire_ray.config import SamplerConfig
    from lire_ray.sampling import build_sampler

    llama_like = tmp_path / "llama-like"
    shutil.copytree(policy_dir, llama_like)
    _strip_special(load_tokenizer(policy_dir), llama_like, "pad_token")
    config = json.loads((llama_like / "config.json").read_text())
    config["pad_token_id"] = None  # as in Llama checkpoints
    (llama_like / "config.json").write_text(json.dumps(config))

    prompts = ["The movie was", "How was your day? The food was great and", "Tell me."]
    sampler = build_sampler(str(llama_like), SamplerConfig(
        backend="hf", max_new_tokens=8, temperature=0.0, batch_size=8, seed=0))
    got = [g[0].token_ids for g in sampler.generate(prompts, n=1)]
    # Reference: each prompt alone, so no padding at all, with the original (padded) files.
    tok, model = load_tokenizer(policy_dir), load_causal_lm(policy_dir)
    for prompt, ids in zip(prompts, got):
        inp = torch.tensor([tok(prompt)["input_ids"]])
        out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp),
                             do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id,
                             top_k=None, top_p=None, temperature=None)[0, inp.shape[1]:].tolist()
        if tok.eos_token_id in out:
            out = out[:out.index(tok.eos_token_id) + 1]
        assert list(ids) == out, prompt


def test_check_tokenizers_loads_local_ones_only(policy_dir, tmp_path, monkeypatch):
    import transformers

    bare = _strip_special(load_tokenizer(policy_dir), tmp_path / "bare", "pad_token",
                          "eos_token")
    check_tokenizers(policy_dir, None)  # a usable tokenizer and an unset reference pass
    with pytest.raises(ModelLoadError, match=f"'{bare}' has neither a pad token"):
        check_tokenizers(policy_dir, str(bare))
    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: calls.append(a))
    check_tokenizers("some-org/unreachable-model")
    assert calls == []  # a hub id is left to the actors, which may reach the hub
