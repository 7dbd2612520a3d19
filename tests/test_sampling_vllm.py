"""The vLLM sampling backend through the sampler actor (run as a plain object, no Ray).

One engine serves the whole module (starting one takes 35-100 s on 2 CPU cores); it is built
with LoRA enabled, so it serves full-weight reloads and adapters alike. Tests that change the
served weights put the initial policy back before they end.

Served weights are checked against an independent reference: the log-probability vLLM reports
for its own greedy tokens must equal the one a float32 ``transformers`` (or peft) model
computes for the same tokens from the checkpoint on disk. A prompt longer than vLLM's CPU block
(128 tokens) makes the prefix cache hold KV blocks across a weight reload.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("vllm")

from _served import served_mismatches  # noqa: E402

from actors.sampler import SamplerActor  # noqa: E402
from lire_ray.config import LoraConfig, ModelConfig, SamplerConfig  # noqa: E402
from lire_ray.demo.tiny_models import build_tiny_policy  # noqa: E402
from lire_ray.errors import ConfigError, ModelLoadError  # noqa: E402
from lire_ray.pool import PoolRow  # noqa: E402

pytestmark = pytest.mark.integration

SHORT = ["The movie was", "How was your day? The food", "Tell me about the hotel."]
LONG = " ".join(["The hotel was lovely and the staff were kind, so I told my friends."] * 14)
PROMPTS = SHORT + [LONG]
NEW = 12
MAX_PROMPT = 200
LONG_TOKENS = 129  # more than one 128-token KV block


def save_lora_adapter(policy_dir, out_dir, *, seed: int, r: int = 4) -> str:
    """A peft LoRA adapter with non-zero lora_B (peft initialises B to zero: a no-op)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from lire_ray.models import load_causal_lm

    model = get_peft_model(load_causal_lm(policy_dir), PeftLoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
    model.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_models")
    base = build_tiny_policy(root / "base", seed=0)
    paths = {"base": str(base), "other": str(build_tiny_policy(root / "other", seed=1)),
             "lora_a": save_lora_adapter(base, root / "lora_a", seed=1),
             "lora_b": save_lora_adapter(base, root / "lora_b", seed=2),
             "lora_r16": save_lora_adapter(base, root / "lora_r16", seed=3, r=16)}
    sampler_cfg = SamplerConfig(backend="vllm", num_candidates=4, temperature=1.0,
                                max_new_tokens=NEW, seed=0, gpu_memory_utilization=0.25,
                                max_model_len=256)
    actor = SamplerActor(paths["base"], sampler_cfg,
                         ModelConfig(lora=LoraConfig(enabled=True, r=4), dtype="float32",
                                     max_prompt_tokens=MAX_PROMPT))
    yield actor, paths
    actor.close()


def greedy(actor) -> list[str]:
    return [g[0].text for g in actor.sampler.generate(PROMPTS, n=1, temperature=0.0)]


def assert_served_weights_are(candidates, model_dir, adapter_dir=None):
    """vLLM's log-prob of each greedy response equals transformers' on the checkpoint."""
    import torch
    from peft import PeftModel

    from lire_ray.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype="float32")
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    assert LONG_TOKENS <= len(tokenizer(LONG)["input_ids"])
    for prompt, group in zip(PROMPTS, candidates, strict=True):
        cand = group[0]
        prompt_ids = tokenizer(prompt)["input_ids"][-MAX_PROMPT:]
        ids = torch.tensor([prompt_ids + list(cand.token_ids)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        ref = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt_ids):, None]).sum()
        assert cand.cumulative_logprob == pytest.approx(float(ref), abs=2e-3), prompt[:20]


def _rows(prompts, ids=None, messages=None):
    return [PoolRow(prompt_id=(ids or [f"p{i}" for i in range(len(prompts))])[i], prompt=p,
                    responses=[], sources=[], policy_version=[],
                    prompt_messages=(messages or [None] * len(prompts))[i])
            for i, p in enumerate(prompts)]


def test_k_candidates_per_prompt_with_versions(env):
    actor, _ = env
    out = actor.sample_rows(_rows(PROMPTS), n=4)
    assert [len(s.candidates) for s in out] == [4] * 4
    assert {c.policy_version for s in out for c in s.candidates} == {0}
    assert [s.prompt_text for s in out] == PROMPTS  # plain prompts are used as they are
    assert len({c.text for s in out for c in s.candidates}) > 4
    assert actor.sample_rows(_rows(PROMPTS), n=4) == out  # seeded by the prompt ids only
    groups = actor.sampler.generate(PROMPTS, n=4)
    for g in groups:
        assert all(1 <= c.num_tokens <= NEW and c.finish_reason in ("stop", "length")
                   and c.cumulative_logprob is not None and c.cumulative_logprob < 0 for c in g)


def test_engine_seed_reproducible(env):
    sampler = env[0].sampler
    first = sampler.generate(PROMPTS, n=4, seed=7)
    assert sampler.generate(PROMPTS, n=4, seed=7) == first
    assert sampler.generate(PROMPTS, n=4, seed=8) != first
    # Unseeded calls continue the engine's stream instead of repeating a batch.
    assert sampler.generate(PROMPTS, n=4) != sampler.generate(PROMPTS, n=4)


def test_stop_strings_are_honoured(env):
    sampler = env[0].sampler
    free = sampler.generate(PROMPTS, n=4, seed=3, max_new_tokens=24)
    # A stop string the random model really emits: its most frequent two-character piece.
    pieces = Counter(t[i:i + 2] for g in free for c in g for t in [c.text]
                     for i in range(len(t) - 1) if t[i:i + 2].strip())
    stop = pieces.most_common(1)[0][0]
    assert any(stop in c.text for g in free for c in g)
    cut = sampler.generate(PROMPTS, n=4, seed=3, max_new_tokens=24, stop=[stop])
    assert all(stop not in c.text for g in cut for c in g)
    assert any(c.finish_reason == "stop" for g in cut for c in g)

    # One request alone sees the same noise with and without the stop string, so its stopped
    # text is its free text before the first occurrence.
    for seed in range(30):
        alone = sampler.generate(PROMPTS[:1], n=1, seed=seed, max_new_tokens=24)[0][0]
        if stop in alone.text:
            stopped = sampler.generate(PROMPTS[:1], n=1, seed=seed, max_new_tokens=24,
                                       stop=[stop])[0][0]
            assert stopped.text == alone.text[:alone.text.find(stop)]
            assert stopped.finish_reason == "stop"
            break
    else:
        pytest.fail(f"no single sample contained {stop!r}")


def test_weight_reload_changes_greedy_outputs(env):
    actor, paths = env
    base_groups = actor.sampler.generate(PROMPTS, n=1, temperature=0.0)
    assert_served_weights_are(base_groups, paths["base"])
    base = [g[0].text for g in base_groups]
    assert actor.load_weights(paths["other"], 1) == 1
    other = actor.sampler.generate(PROMPTS, n=1, temperature=0.0)
    assert [g[0].text for g in other] != base
    assert all(g[0].policy_version == 1 for g in other)
    assert_served_weights_are(other, paths["other"])
    # Served == trained: every greedy token is the reloaded checkpoint's argmax under teacher
    # forcing; the previous checkpoint's argmax differs somewhere.
    tokens = [g[0].token_ids for g in other]
    assert served_mismatches(paths["other"], PROMPTS, tokens, max_prompt_tokens=MAX_PROMPT) == []
    assert served_mismatches(paths["base"], PROMPTS, tokens, max_prompt_tokens=MAX_PROMPT)
    actor.load_weights(paths["base"], 2)
    assert greedy(actor) == base  # in-place reload, prefix cache reset: exactly the old policy


def test_lora_adapter_is_served(env):
    actor, paths = env
    base = greedy(actor)
    assert actor.load_adapter(paths["lora_a"], 3) == 3
    with_a = actor.sampler.generate(PROMPTS, n=1, temperature=0.0)
    assert [g[0].text for g in with_a] != base
    assert all(g[0].policy_version == 3 for g in with_a)
    assert_served_weights_are(with_a, paths["base"], paths["lora_a"])
    tokens = [g[0].token_ids for g in with_a]
    assert served_mismatches(paths["base"], PROMPTS, tokens, max_prompt_tokens=MAX_PROMPT,
                             adapter=paths["lora_a"]) == []
    out = actor.sample_rows(_rows(PROMPTS[:1]), n=4)
    assert {c.policy_version for c in out[0].candidates} == {3}

    actor.load_adapter(paths["lora_b"], 4)
    with_b = greedy(actor)
    assert with_b != [g[0].text for g in with_a] and with_b != base
    actor.load_adapter(paths["lora_a"], 5)  # a new version id for the same files
    assert greedy(actor) == [g[0].text for g in with_a]

    with pytest.raises(ModelLoadError, match="rank 16"):
        actor.load_adapter(paths["lora_r16"], 6)
    actor.load_weights(paths["base"], 7)  # full weights drop the adapter
    assert greedy(actor) == base
    assert actor.ping()["policy_version"] == 7


def test_bad_inputs_fail_fast(env, tmp_path):
    actor, paths = env
    before = actor.sampler.policy_version
    with pytest.raises(ModelLoadError, match="does not exist"):
        actor.load_weights(str(tmp_path / "nope"), 9)
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        actor.load_adapter(paths["base"], 9)
    with pytest.raises(ConfigError, match="temperature"):
        actor.sampler.generate(PROMPTS, n=1, temperature=-1.0)
    assert actor.sampler.policy_version == before


def test_sleep_is_refused_where_vllm_cannot_sleep(env):
    """vLLM sleeps only on CUDA/ROCm: on this CPU build the setting fails before an engine
    starts, and an engine built without it refuses to sleep instead of pretending to."""
    actor, paths = env
    cfg = SamplerConfig(backend="vllm", sleep_level=1, gpu_memory_utilization=0.25,
                        max_model_len=256)
    with pytest.raises(ConfigError, match="CUDA or ROCm GPU"):
        SamplerActor(paths["base"], cfg, ModelConfig(dtype="float32"))
    with pytest.raises(ConfigError, match="built without sleep mode"):
        actor.sampler.sleep(1)
    actor.wake_up()  # awake already: nothing to undo
    assert actor.sampler.generate(PROMPTS[:1], n=1, temperature=0.0)[0][0].text is not None


def test_chat_rows_are_sampled_from_exactly_the_prompt_ids_training_uses(env):
    """An HH row with chat turns: the sampler renders the policy's chat template, records the
    text, and conditions on the very token ids training computes log-probs on."""
    import json

    import torch

    from lire_ray.collate import tokenize_group
    from lire_ray.models import load_causal_lm, load_tokenizer
    from lire_ray.sampling import merge_candidates

    actor, paths = env
    actor.load_weights(paths["base"], 9)
    turns = [{"role": "user", "content": "How was the movie?"},
             {"role": "assistant", "content": "Great."},
             {"role": "user", "content": "Tell me about the food."}]
    hh = "\n\nHuman: How was the movie?\n\nAssistant: Great.\n\nHuman: Tell me about " \
        "the food.\n\nAssistant:"
    row = _rows([hh], ["hh"], [json.dumps(turns)])[0]
    tok = load_tokenizer(paths["base"])
    rendered = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert rendered != hh and rendered.startswith(tok.bos_token)
    samples = actor.sample_rows([row], n=2, temperature=0.0)[0]
    assert samples.prompt_text == rendered
    pooled = merge_candidates(row, samples, keep_human=True, evolve_step=1)
    assert pooled.prompt_text == rendered
    group = tokenize_group(pooled, tok, max_prompt_tokens=MAX_PROMPT, max_response_tokens=NEW)
    assert group.prompt_ids.count(tok.bos_token_id) == 1  # the template's BOS, not two
    # vLLM's log-prob of its greedy response equals transformers' conditioned on training's
    # prompt ids: the sampler saw exactly those ids.
    cand = samples.candidates[0]
    model = load_causal_lm(paths["base"], dtype="float32")
    ids = torch.tensor([list(group.prompt_ids) + list(cand.token_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(group.prompt_ids) - 1:-1].float()
    ref = torch.log_softmax(logits, -1).gather(1, ids[0, len(group.prompt_ids):, None]).sum()
    assert cand.cumulative_logprob == pytest.approx(float(ref), abs=2e-3)
