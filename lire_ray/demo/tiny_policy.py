"""The embedded default policy: a tiny Llama, SFT-ed on locally generated product reviews.

``ensure_tiny_policy(cache_dir)`` builds it once and caches it: a byte-level BPE tokenizer and a
random-init Llama (:func:`lire_ray.demo.tiny_models.build_tiny_policy`), then a short supervised
fine-tuning on :func:`lire_ray.demo.reviews.sft_corpus` so that it writes review-like text whose
sentiment follows the prompt's attribute (greedy: "the finish is great." for a premium product,
"it is disappointing." for a used one; sampled: the whole grammar, negations and emoticons
included). The cache key covers every build setting and the generated text itself, so a change
to either rebuilds; the directory appears atomically (built under a temporary name, then
renamed). The build takes about 20 s on 2 idle cores (600 SFT steps of 32 reviews).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from lire_ray.atomic import atomic_dir
from lire_ray.demo import reviews

log = logging.getLogger(__name__)

# vocab_size 1280: the tokenizer saturates at ~1180 entries on the review text, so every word (and
# every capitalised sentiment word) is one or two tokens and no review exceeds 24 tokens.
#: Every setting of the build (the cache key hashes them). Integers, but for the learning rate.
BUILD: dict[str, int] = {"vocab_size": 1280, "hidden_size": 128, "num_layers": 2, "num_heads": 2, "seed": 0,
                         "sft_examples": 9600, "sft_epochs": 2, "sft_batch": 32, "version": 2}
SFT_LR = 4e-3


def _key() -> str:
    """Hash of the build settings and of the generated text itself, so that editing the review
    grammar (not only ``BUILD``) rebuilds the policy instead of reusing a stale one."""
    h = hashlib.sha1(json.dumps({**BUILD, "sft_lr": SFT_LR}, sort_keys=True).encode())
    for line in reviews.tokenizer_corpus():
        h.update(line.encode())
    for prompt, response in reviews.sft_corpus(BUILD["sft_examples"], seed=BUILD["seed"]):
        h.update(f"{prompt}\x00{response}\x00".encode())
    return h.hexdigest()[:10]


def ensure_tiny_policy(cache_dir: str | Path) -> Path:
    """Return the cached tiny policy directory, building it first if needed.

    Args:
        cache_dir: Where built models are cached (the recipe's ``run.cache_dir``).

    Returns:
        A HF model directory (tokenizer + safetensors weights).
    """
    cache_dir = Path(cache_dir).resolve()
    final = cache_dir / f"tiny-policy-{_key()}"
    if (final / "config.json").is_file():
        return final
    # Two processes building at once: the first rename wins, the other's build is dropped.
    atomic_dir(final, _build, replace=False)
    return final


def _build(out: Path) -> None:
    import torch

    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_causal_lm, load_tokenizer

    started = time.time()
    log.info("building the tiny default policy (once; cached) ...")
    base = out / "base"
    build_tiny_policy(base, corpus=reviews.tokenizer_corpus(), vocab_size=BUILD["vocab_size"],
                      hidden_size=BUILD["hidden_size"], num_layers=BUILD["num_layers"],
                      num_heads=BUILD["num_heads"], seed=BUILD["seed"])
    tok = load_tokenizer(base)
    model = load_causal_lm(base, dtype="float32")
    torch.manual_seed(BUILD["seed"])
    pairs = reviews.sft_corpus(BUILD["sft_examples"], seed=BUILD["seed"])
    examples = []
    for prompt, response in pairs:
        p = tok(prompt)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append((p, r))
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR)
    steps = BUILD["sft_epochs"] * (len(examples) // BUILD["sft_batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=SFT_LR, total_steps=steps)
    model.train()
    gen = torch.Generator().manual_seed(BUILD["seed"])
    step = 0
    for _ in range(BUILD["sft_epochs"]):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for i in range(0, len(order) - BUILD["sft_batch"] + 1, BUILD["sft_batch"]):
            batch = [examples[j] for j in order[i:i + BUILD["sft_batch"]]]
            width = max(len(p) + len(r) for p, r in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for b, (p, r) in enumerate(batch):
                n = len(p) + len(r)
                ids[b, :n] = torch.tensor(p + r)
                labels[b, len(p):n] = torch.tensor(r)
                attn[b, :n] = 1
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 50 == 0:
                log.info("tiny policy SFT step %d/%d loss %.3f", step, steps, loss.item())
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    shutil.rmtree(base)
    (out / "tiny_build.json").write_text(json.dumps({**BUILD, "sft_lr": SFT_LR}, indent=2))
    log.info("tiny policy built in %.0f s", time.time() - started)
