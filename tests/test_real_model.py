"""The real pretrained model end to end: SmolLM2-135M-Instruct on real chit-chat conversations.

The main job runs on ``configs/smollm2-chitchat.yaml`` (the packaged GGUF converted once into
an HF folder, prompts rendered with its chat template, vLLM-CPU samplers, the resident trainer
pushing each new policy to the samplers in memory), shrunk to one optimizer step, once with a
LoRA adapter and once with full weights. The check is served == trained: every token of the
samplers' greedy responses on the held-out prompts, as the evaluation file records them, is the
saved checkpoint's argmax under teacher forcing (a plain transformers forward on the recorded
prompt text), and the starting policy disagrees somewhere, so the check can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env
from _served import served_mismatches

pytestmark = pytest.mark.integration

#: Eight held-out prompts answered greedily; one optimizer step on four prompts x K = 2; a
#: learning rate high enough that one step visibly moves the greedy answers; one sample per
#: prompt for the KL estimate the evaluation always makes (this test does not read it).
SMALL = ["evolve.steps=1", "data.max_prompts=4", "data.eval_prompts=8",
         "sampler.num_candidates=2", "sampler.max_new_tokens=16", "model.max_response_tokens=16",
         "train.micro_batch_prompts=4", "train.lr=5e-3", "eval.temperatures=[0.0]",
         "eval.best_of_n=[1]", "eval.kl_samples=1", "train.logger=none"]


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    """One ``run.cache_dir`` for both runs: the GGUF is converted once."""
    return tmp_path_factory.mktemp("smollm2-cache")


def _run_job(run, cache, *extra) -> None:
    proc = subprocess.run(
        [sys.executable, "jobs/self_enhance.py", "--config", "configs/smollm2-chitchat.yaml",
         f"run.dir={run}", f"run.cache_dir={cache}", *SMALL, *extra],
        cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _greedy(run, name: str) -> tuple[list[str], list[list[int]]]:
    """The rendered prompt texts and greedy response token ids of one evaluation file."""
    ev = json.loads((run / f"eval_{name}.json").read_text())
    greedy = ev["generations"]["0.0"]
    assert len(ev["held_out_prompts"]) == len(greedy["token_ids"]) == 8
    prompts = [p["prompt_text"] for p in ev["held_out_prompts"]]
    # The chat template was applied: the prompt ends where the assistant's turn begins.
    assert all(p.rstrip().endswith("assistant") for p in prompts), prompts[0][-200:]
    return prompts, [ids[0] for ids in greedy["token_ids"]]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full-weights"])
def test_served_policy_is_the_trained_checkpoint(tmp_path, gguf_cache, lora):
    run = tmp_path / "run"
    _run_job(run, gguf_cache, f"model.lora.enabled={str(lora).lower()}")
    served = json.loads((run / "served_policy.json").read_text())
    assert served["version"] == 1 and served["adapter"] is lora
    checkpoint = run / "checkpoints" / "e1"
    assert (checkpoint / "COMPLETE").is_file()
    base = next(gguf_cache.rglob("gguf_source.json")).parent
    max_prompt = 256

    prompts, before = _greedy(run, "before")
    assert served_mismatches(str(base), prompts, before, max_prompt_tokens=max_prompt) == []

    prompts_after, after = _greedy(run, "after_e1")
    assert prompts_after == prompts
    if lora:
        # The adapter applied on the converted base, as the samplers serve it.
        assert served_mismatches(str(base), prompts, after, max_prompt_tokens=max_prompt,
                                 adapter=served["path"]) == []
    assert served_mismatches(str(checkpoint), prompts, after, max_prompt_tokens=max_prompt) == []
    # The starting policy is not what was served after the step.
    assert served_mismatches(str(base), prompts, after, max_prompt_tokens=max_prompt)
