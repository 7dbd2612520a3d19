"""Sequence log-probs: both packings against a naive full-logits reference written here."""

from __future__ import annotations

import random

import pytest
import torch

from lire_ray.batch import TokenizedGroup
from lire_ray.demo.tiny_models import build_tiny_policy
from lire_ray.errors import ConfigError, DataError
from lire_ray.logprobs import sequence_logprobs
from lire_ray.models import load_causal_lm
from lire_ray.packing import pack_shared_prefix

PACKINGS = ["padded", "shared_prefix"]


def _sharpen(model, seed=0):
    """Re-draw weights with a larger scale: a freshly initialised model is almost insensitive to
    context, which would let a wrong attention mask pass unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy", seed=0)


@pytest.fixture()
def model(model_dir):
    torch.manual_seed(0)
    return _sharpen(load_causal_lm(model_dir, dtype="float32"))


def random_groups(seed, vocab=500, n_groups=5):
    rng = random.Random(seed)
    groups = []
    for b in range(n_groups):
        prompt_len = 1 if b == 0 else rng.randint(2, 14)
        k = [1, 2, 4][b % 3]
        responses = []
        for j in range(k):
            length = 1 if j == 0 and b == 1 else rng.randint(1, 9)
            responses.append(tuple(rng.randrange(vocab) for _ in range(length)))
        prompt = tuple(rng.randrange(vocab) for _ in range(prompt_len))
        groups.append(TokenizedGroup(prompt_id=f"p{b}", prompt_ids=prompt,
                                     response_ids=tuple(responses)))
    return groups


def naive_logps(model, groups):
    """Padded batch of [prompt | response], full logits, float32 log_softmax, per-token loop."""
    rows = [(b, k, list(g.prompt_ids), list(r))
            for b, g in enumerate(groups) for k, r in enumerate(g.response_ids)]
    width = max(len(p) + len(r) for _, _, p, r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    att = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (_, _, p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        att[i, : len(p) + len(r)] = 1
    logp = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
    k_max = max(g.num_candidates for g in groups)
    out = [[torch.zeros(()) for _ in range(k_max)] for _ in groups]
    for i, (b, k, p, r) in enumerate(rows):
        total = torch.zeros(())
        for t, tok in enumerate(r):
            total = total + logp[i, len(p) + t - 1, tok]
        out[b][k] = total
    return torch.stack([torch.stack(row) for row in out])


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_logps_match_naive(model, packing, seed):
    groups = random_groups(seed)
    with torch.no_grad():
        got = sequence_logprobs(model, groups, packing=packing)
        ref = naive_logps(model, groups)
    torch.testing.assert_close(got.logps, ref, rtol=1e-5, atol=1e-5)
    for b, g in enumerate(groups):
        k = g.num_candidates
        assert got.mask[b].tolist() == [True] * k + [False] * (got.mask.shape[1] - k)
        assert got.lengths[b, :k].tolist() == [len(r) for r in g.response_ids]
        assert got.logps[b, k:].abs().sum() == 0
    shared = sum(len(g.prompt_ids) + sum(map(len, g.response_ids)) for g in groups)
    naive = sum(len(g.prompt_ids) + len(r) for g in groups for r in g.response_ids)
    assert got.tokens_computed == (shared if packing == "shared_prefix" else naive)


def _grads(model, logps, weights, names):
    model.zero_grad(set_to_none=True)
    (logps * weights).sum().backward()
    params = dict(model.named_parameters())
    return {n: params[n].grad.clone() for n in names}


GRAD_PARAMS = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
               "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("grad_ckpt", [False, True])
def test_gradients_match_naive(model, packing, grad_ckpt):
    groups = random_groups(2)
    weights = torch.randn(len(groups), 4, generator=torch.Generator().manual_seed(3))
    ref = _grads(model, naive_logps(model, groups), weights, GRAD_PARAMS)
    if grad_ckpt:
        model.gradient_checkpointing_enable()
        model.train()
    got_logps = sequence_logprobs(model, groups, packing=packing, chunk_size=7)
    got = _grads(model, got_logps.logps, weights, GRAD_PARAMS)
    for name in GRAD_PARAMS:
        # Relative to the tensor's scale: entries near zero sum many fp32 terms in a different
        # order than the reference, so an element-wise relative bound would test round-off.
        scale = ref[name].abs().max()
        assert scale > 0, name
        assert (got[name] - ref[name]).abs().max() <= 1e-5 * scale, name


@pytest.mark.parametrize("packing", PACKINGS)
def test_chunk_size_does_not_change_results(model, packing):
    groups = random_groups(4)
    with torch.no_grad():
        full = sequence_logprobs(model, groups, packing=packing, chunk_size=100_000)
        for chunk in (1, 5, 16):
            part = sequence_logprobs(model, groups, packing=packing, chunk_size=chunk)
            torch.testing.assert_close(part.logps, full.logps)


@pytest.mark.parametrize("packing", PACKINGS)
def test_lm_head_sees_at_most_chunk_size_positions(model, packing):
    groups = random_groups(5)
    total = sum(len(r) for g in groups for r in g.response_ids)
    chunk = 6
    seen = []
    hook = model.lm_head.register_forward_hook(
        lambda mod, inp, out: seen.append((inp[0].shape[:-1].numel(), out.shape)))
    try:
        logps = sequence_logprobs(model, groups, packing=packing, chunk_size=chunk).logps
        forward_calls = len(seen)
        logps.sum().backward()
    finally:
        hook.remove()
    vocab = model.config.vocab_size
    assert total > 3 * chunk
    assert forward_calls == -(-total // chunk)
    assert sum(n for n, _ in seen[:forward_calls]) == total
    # Backward recomputes each chunk's logits instead of keeping [T, V] alive.
    assert len(seen) == 2 * forward_calls
    assert max(n for n, _ in seen) <= chunk
    assert all(shape[-1] == vocab and shape[:-1].numel() <= chunk for _, shape in seen)


def test_peft_wrapped_model(model):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                             init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config)
    groups = random_groups(6)
    with torch.no_grad():
        ref = naive_logps(wrapped, groups)
        with wrapped.disable_adapter():
            no_lora = naive_logps(wrapped, groups)
    assert (ref - no_lora).abs().max() > 1e-3  # the adapter really changes the outputs
    for packing in PACKINGS:
        got = sequence_logprobs(wrapped, groups, packing=packing)
        torch.testing.assert_close(got.logps.detach(), ref, rtol=1e-5, atol=1e-5)
        got.logps.sum().backward()
        lora = [p for n, p in wrapped.named_parameters() if "lora_" in n]
        assert lora and all(p.grad is not None and p.grad.abs().max() > 0 for p in lora)
        wrapped.zero_grad(set_to_none=True)


def test_eager_attention_gets_additive_mask(model_dir):
    eager = _sharpen(load_causal_lm(model_dir, dtype="float32", attn_implementation="eager"))
    groups = random_groups(7)
    with torch.no_grad():
        got = sequence_logprobs(eager, groups, packing="shared_prefix")
        torch.testing.assert_close(got.logps, naive_logps(eager, groups), rtol=1e-5, atol=1e-5)


def test_plain_causal_mask_would_be_detected(model):
    """The shared-prefix mask matters: a plain causal mask over the packed row (responses seeing
    earlier responses) gives clearly different log-probs, so the equality tests have power."""
    groups = random_groups(8)
    packed = pack_shared_prefix(groups)
    width = packed.input_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril().expand_as(packed.attention_mask)
    with torch.no_grad():
        hidden = model.model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                             attention_mask=causal.contiguous())[0]
        logp = model.lm_head(hidden[packed.src_row, packed.src_pos]).float().log_softmax(-1)
        token = logp.gather(-1, packed.targets[:, None]).squeeze(-1)
        wrong = torch.zeros(packed.mask.numel()).index_add(0, packed.slot, token)
        ref = naive_logps(model, groups).flatten()
    assert (wrong - ref).abs().max() > 1e-2


def test_empty_response_has_zero_logp(model):
    groups = [TokenizedGroup("a", (3, 4, 5), ((6, 7), ())), TokenizedGroup("b", (9,), ((),))]
    got = sequence_logprobs(model, groups, packing="shared_prefix")
    ref = naive_logps(model, groups)
    torch.testing.assert_close(got.logps.detach(), ref.detach(), rtol=1e-5, atol=1e-5)
    assert got.lengths.tolist() == [[2, 0], [0, 0]]
    assert got.mask.tolist() == [[True, True], [True, False]]
    only_empty = sequence_logprobs(model, [groups[1]])
    assert only_empty.logps.tolist() == [[0.0]] and only_empty.tokens_computed == 0


def test_bad_inputs_raise(model):
    ok = TokenizedGroup("ok", (1, 2), ((3,),))
    with pytest.raises(DataError, match="prompt_id 'e'.*empty prompt"):
        sequence_logprobs(model, [ok, TokenizedGroup("e", (), ((3,),))])
    with pytest.raises(DataError, match="'response_ids'.*prompt_id 'v'.*token id 100000"):
        sequence_logprobs(model, [TokenizedGroup("v", (1,), ((100_000,),))])
    with pytest.raises(DataError, match="no candidates"):
        sequence_logprobs(model, [TokenizedGroup("n", (1,), ())])
    with pytest.raises(DataError, match="empty micro-batch"):
        sequence_logprobs(model, [])
    with pytest.raises(ConfigError, match="packing must be one of"):
        sequence_logprobs(model, [ok], packing="flat")
    with pytest.raises(ConfigError, match="chunk_size"):
        sequence_logprobs(model, [ok], chunk_size=0)
