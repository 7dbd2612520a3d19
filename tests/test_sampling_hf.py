"""The transformers sampling backend, diverse beam search and the sampler actor (no Ray, no vLLM).

References are computed independently: a fresh ``transformers`` model (or peft-wrapped model)
decoding greedily, ``transformers``' own beam search for the single-group case, and the
Hamming-diversity rule applied by hand to one forward pass.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
import torch

from actors.sampler import SamplerActor
from lire_ray.config import SamplerConfig
from lire_ray.demo.tiny_models import build_tiny_policy
from lire_ray.errors import ConfigError, DependencyError, ModelLoadError
from lire_ray.models import load_causal_lm, load_tokenizer
from lire_ray.pool import PoolRow
from lire_ray.sampling import Candidate, build_sampler, call_seed, merge_candidates
from lire_ray.sampling.beam import diverse_beam_search
from lire_ray.sampling.hf_backend import left_pad

PROMPTS = ["The movie was", "How was your day? The food", "Tell me about the hotel."]
NEW = 10


def hf_cfg(**kw) -> SamplerConfig:
    base = dict(backend="hf", max_new_tokens=NEW, temperature=1.0, seed=0)
    base.update(kw)
    return SamplerConfig(**base)


def save_lora_adapter(policy_dir, out_dir, seed: int) -> str:
    """A peft LoRA adapter with non-zero lora_B (peft initialises B to zero: a no-op)."""
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(policy_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
    peft_model.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = build_tiny_policy(root / "base", seed=0)
    return {"base": str(base), "other": str(build_tiny_policy(root / "other", seed=1)),
            "lora_a": save_lora_adapter(base, root / "lora_a", seed=1),
            "lora_b": save_lora_adapter(base, root / "lora_b", seed=2)}


def greedy_reference(model, tokenizer, prompts, max_new_tokens=NEW) -> list[str]:
    """Greedy decoding one prompt at a time (no padding), decoded like the sampler."""
    texts = []
    for p in prompts:
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             top_k=None, top_p=None, temperature=None)
        new = out[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id) + 1]
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return texts


def texts(groups: list[list[Candidate]]) -> list[list[str]]:
    return [[c.text for c in g] for g in groups]


def test_k_candidates_per_prompt_with_versions(models):
    sampler = build_sampler(models["base"], hf_cfg())
    groups = sampler.generate(PROMPTS, n=3, seed=11)
    assert [len(g) for g in groups] == [3, 3, 3]
    for g in groups:
        for c in g:
            assert c.policy_version == 0
            assert 1 <= c.num_tokens <= NEW
            assert c.finish_reason in ("stop", "length")
    assert len({c.text for g in groups for c in g}) > 3  # sampled, not one text repeated


def test_same_seed_same_candidates_and_new_seed_new_ones(models):
    sampler = build_sampler(models["base"], hf_cfg())
    first = sampler.generate(PROMPTS, n=2, seed=5)
    assert sampler.generate(PROMPTS, n=2, seed=5) == first
    assert sampler.generate(PROMPTS, n=2, seed=6) != first


def first_token_distribution(policy_dir, prompt):
    tokenizer, model = load_tokenizer(policy_dir), load_causal_lm(policy_dir)
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        return torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)


def test_sampling_uses_full_distribution_and_top_p_nucleus(models):
    probs = first_token_distribution(models["base"], PROMPTS[0])
    order = torch.argsort(probs, descending=True).tolist()
    rank = {tok: r for r, tok in enumerate(order)}
    full = build_sampler(models["base"], hf_cfg(max_new_tokens=1)).generate(
        PROMPTS[:1], n=200, seed=1)[0]
    # No hidden top-k filter: tokens ranked below the 50 most likely ones are drawn too.
    assert max(rank[c.token_ids[0]] for c in full) >= 50

    nucleus, mass = set(), 0.0
    for tok in order:  # smallest set of most likely tokens with mass >= top_p
        nucleus.add(tok)
        mass += float(probs[tok])
        if mass >= 0.05:
            break
    narrow = build_sampler(models["base"], hf_cfg(max_new_tokens=1, top_p=0.05)).generate(
        PROMPTS[:1], n=200, seed=1)[0]
    assert {c.token_ids[0] for c in narrow} <= nucleus
    assert len(nucleus) > 1


def test_left_padded_batch_equals_one_prompt_at_a_time(models):
    batched = build_sampler(models["base"], hf_cfg(temperature=0.0, batch_size=8))
    tokenizer, model = load_tokenizer(models["base"]), load_causal_lm(models["base"])
    expected = greedy_reference(model, tokenizer, PROMPTS)
    assert [g[0].text for g in batched.generate(PROMPTS, n=1)] == expected


def teacher_forced_logp(model, tokenizer, prompt: str, tokens: list[int]) -> float:
    """Summed log-prob of ``tokens`` after ``prompt``: one forward, no padding, no sampling
    settings (temperature and top-p do not change the policy's own probabilities)."""
    ids = tokenizer(prompt)["input_ids"]
    full = torch.tensor([ids + tokens])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=full).logits[0].float(), -1)
    return sum(float(logps[len(ids) - 1 + j, tok]) for j, tok in enumerate(tokens))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_candidates_carry_their_log_prob_under_the_policy(models, temperature, top_p):
    """The KL estimate of the evaluation needs log pi(y|x) of every sample: left-padded batched
    sampling reports what a plain forward on each prompt and its tokens gives."""
    tokenizer, model = load_tokenizer(models["base"]), load_causal_lm(models["base"])
    sampler = build_sampler(models["base"], hf_cfg(temperature=temperature, top_p=top_p,
                                                   batch_size=8))
    groups = sampler.generate(PROMPTS, n=3, seed=2)
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for c in group:
            assert c.cumulative_logprob == pytest.approx(
                teacher_forced_logp(model, tokenizer, prompt, list(c.token_ids)), abs=1e-3)
            assert c.cumulative_logprob < 0


def test_stop_string_cuts_and_ends_generation(models):
    free = build_sampler(models["base"], hf_cfg(max_new_tokens=16)).generate(PROMPTS, n=4,
                                                                             seed=3)
    # A stop string the random model really emits: its most frequent two-character piece.
    pieces = Counter(t[i:i + 2] for g in free for c in g for t in [c.text]
                     for i in range(len(t) - 1) if t[i:i + 2].strip())
    stop = pieces.most_common(1)[0][0]
    assert any(stop in c.text for g in free for c in g)

    stopped = build_sampler(models["base"], hf_cfg(max_new_tokens=16, stop=[stop]))
    cut = stopped.generate(PROMPTS, n=4, seed=3)
    for g_free, g_cut in zip(free, cut, strict=True):
        for c_free, c_cut in zip(g_free, g_cut, strict=True):
            assert stop not in c_cut.text
            at = c_free.text.find(stop)
            # Same seed, same draws: the stopped text is the free text before the stop string.
            assert c_cut.text == (c_free.text[:at] if at >= 0 else c_free.text)
            if at >= 0:
                assert c_cut.finish_reason == "stop"
                assert c_cut.num_tokens <= c_free.num_tokens


def test_load_weights_serves_the_new_checkpoint(models):
    sampler = build_sampler(models["base"], hf_cfg(temperature=0.0))
    before = sampler.generate(PROMPTS, n=1)
    tokenizer = load_tokenizer(models["base"])
    sampler.load_weights(models["other"], version=1)
    after = sampler.generate(PROMPTS, n=1)
    assert [g[0].text for g in after] == greedy_reference(load_causal_lm(models["other"]),
                                                          tokenizer, PROMPTS)
    assert texts(after) != texts(before)
    assert sampler.policy_version == 1 and all(g[0].policy_version == 1 for g in after)
    sampler.load_weights(models["base"], version=2)
    assert texts(sampler.generate(PROMPTS, n=1)) == texts(before)


def test_load_adapter_serves_base_plus_adapter(models):
    from peft import PeftModel

    sampler = build_sampler(models["base"], hf_cfg(temperature=0.0))
    base = texts(sampler.generate(PROMPTS, n=1))
    tokenizer = load_tokenizer(models["base"])
    for version, key in ((1, "lora_a"), (2, "lora_b")):
        sampler.load_adapter(models[key], version=version)
        got = sampler.generate(PROMPTS, n=1)
        ref_model = PeftModel.from_pretrained(load_causal_lm(models["base"]), models[key]).eval()
        assert [g[0].text for g in got] == greedy_reference(ref_model, tokenizer, PROMPTS)
        assert texts(got) != base
        assert all(g[0].policy_version == version for g in got)


def test_bad_checkpoint_and_adapter_paths_raise_model_load_error(models, tmp_path):
    sampler = build_sampler(models["base"], hf_cfg())
    with pytest.raises(ModelLoadError, match="does not exist"):
        sampler.load_weights(str(tmp_path / "missing"), 1)
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        sampler.load_adapter(models["base"], 1)
    assert sampler.policy_version == 0


def test_diverse_beam_search_gives_k_distinct_deterministic_candidates(models):
    sampler = build_sampler(models["base"], hf_cfg(diverse_beam_groups=2))
    groups = sampler.generate(PROMPTS, n=4)
    assert [len(g) for g in groups] == [4, 4, 4]
    for g in groups:
        assert len({c.text for c in g}) == 4
    assert sampler.generate(PROMPTS, n=4) == groups
    with pytest.raises(ConfigError, match="multiple"):
        sampler.generate(PROMPTS, n=3)


def test_diverse_beam_search_honours_stop_strings(models):
    free = build_sampler(models["base"], hf_cfg(diverse_beam_groups=2)).generate(PROMPTS, n=4)
    pieces = Counter(t[i:i + 2] for g in free for c in g for t in [c.text]
                     for i in range(len(t) - 1) if t[i:i + 2].strip())
    stop = pieces.most_common(1)[0][0]
    assert any(stop in c.text for g in free for c in g)
    cut = build_sampler(models["base"], hf_cfg(diverse_beam_groups=2, stop=[stop])).generate(
        PROMPTS, n=4)
    assert all(stop not in c.text for g in cut for c in g)
    assert any(c.finish_reason == "stop" for g in cut for c in g)


@pytest.fixture(scope="module")
def batch(models):
    tokenizer = load_tokenizer(models["base"])
    ids, mask = left_pad([tokenizer(p)["input_ids"] for p in PROMPTS], tokenizer.pad_token_id,
                         "cpu")
    return load_causal_lm(models["base"]), tokenizer, ids, mask


@pytest.mark.parametrize("k", [2, 4])
def test_one_group_equals_transformers_beam_search(batch, k):
    model, tokenizer, ids, mask = batch
    greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                            max_new_tokens=NEW, pad_token_id=tokenizer.pad_token_id,
                            top_k=None, top_p=None, temperature=None)
    # Use a token the model emits often as EOS, so hypotheses also finish early.
    eos = Counter(greedy[:, ids.shape[1]:].reshape(-1).tolist()).most_common(1)[0][0]
    ref = model.generate(input_ids=ids, attention_mask=mask, num_beams=k, num_return_sequences=k,
                         early_stopping=True, length_penalty=1.0, do_sample=False,
                         max_new_tokens=NEW, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=eos, top_k=None, top_p=None, temperature=None,
                         return_dict_in_generate=True, output_scores=True)
    ref_new = ref.sequences[:, ids.shape[1]:].tolist()
    got = diverse_beam_search(model, ids, mask, num_beams=k, num_groups=1, diversity_penalty=0.0,
                              max_new_tokens=NEW, eos_token_ids=[eos])
    lengths = []
    for i in range(len(PROMPTS)):
        for j in range(k):
            hyp, row = got[i][j], ref_new[i * k + j]
            n = len(hyp.token_ids)
            lengths.append(n)
            assert list(hyp.token_ids) == row[:n]
            assert all(t == tokenizer.pad_token_id for t in row[n:])
            assert hyp.score == pytest.approx(float(ref.sequences_scores[i * k + j]), abs=1e-4)
    assert min(lengths) < NEW  # the EOS path was exercised


def test_hamming_penalty_first_step_by_hand(batch):
    model, _, ids, mask = batch
    penalty, groups = 0.7, 4
    with torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    got = diverse_beam_search(model, ids, mask, num_beams=groups, num_groups=groups,
                              diversity_penalty=penalty, max_new_tokens=1, eos_token_ids=[])
    for i in range(len(PROMPTS)):
        chosen: list[int] = []
        for g in range(groups):
            scores = logprobs[i].clone()
            for tok in chosen:
                scores[tok] -= penalty
            chosen.append(int(scores.argmax()))
            assert got[i][g].token_ids == (chosen[-1],)
            assert got[i][g].score == pytest.approx(float(scores.max()), abs=1e-5)


def test_large_penalty_makes_groups_start_differently(batch):
    model, _, ids, mask = batch
    got = diverse_beam_search(model, ids, mask, num_beams=4, num_groups=4, diversity_penalty=1e3,
                              max_new_tokens=4, eos_token_ids=[])
    for hyps in got:
        assert len({h.token_ids[0] for h in hyps}) == 4


def test_actor_as_plain_object_samples_rows_from_their_rendered_prompts(models):
    actor = SamplerActor(models["base"], hf_cfg(num_candidates=3).model_dump(),
                         {"max_prompt_tokens": 32})
    assert actor.ping()["policy_version"] == 0
    turns = json.dumps([{"role": "user", "content": "How was the movie?"}])
    rows = [PoolRow(prompt_id="a", prompt=PROMPTS[0], responses=[], sources=[],
                    policy_version=[]),
            PoolRow(prompt_id="b", prompt=PROMPTS[1], responses=["human b"], sources=["human"],
                    policy_version=[-1], prompt_messages=turns)]
    out = actor.sample_rows(rows, n=3)
    assert [len(s.candidates) for s in out] == [3, 3]
    assert {c.policy_version for s in out for c in s.candidates} == {0}
    assert actor.sample_rows(rows, n=3) == out  # seeded by (sampler.seed, version, prompt ids)
    # Row "b" was sampled from its chat turns formatted by the policy's chat template, and the
    # rendered text comes back with its candidates.
    chat_text = load_tokenizer(models["base"]).apply_chat_template(
        json.loads(turns), tokenize=False, add_generation_prompt=True)
    assert [s.prompt_text for s in out] == [PROMPTS[0], chat_text]
    direct = actor.sampler.generate([PROMPTS[0], chat_text], n=3, seed=call_seed(0, 0, ["a", "b"]))
    assert texts(direct) == [[c.text for c in s.candidates] for s in out]
    never = SamplerActor(models["base"], hf_cfg(num_candidates=3).model_dump(),
                         {"max_prompt_tokens": 32}, chat_template="never")
    assert [s.prompt_text for s in never.sample_rows(rows, n=1)] == [PROMPTS[0], PROMPTS[1]]

    assert actor.load_weights(models["other"], 1) == 1
    merged = merge_candidates(rows[1], actor.sample_rows(rows[1:], n=3)[0], keep_human=True,
                              evolve_step=2)
    assert merged.responses[0] == "human b" and merged.num_candidates == 4
    assert merged.sources == ("human",) + ("policy@e1",) * 3
    assert merged.policy_version == (-1, 1, 1, 1) and merged.prompt_text == chat_text


def test_missing_vllm_raises_dependency_error(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(DependencyError, match=r"\.\[cpu\]"):
        build_sampler(models["base"], SamplerConfig(backend="vllm"))
