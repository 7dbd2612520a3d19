"""Served == trained: every token a sampler chose greedily is the checkpoint's own argmax.

:func:`served_mismatches` runs a plain ``transformers`` forward (float32, teacher forcing) of a
checkpoint on the recorded prompt text plus the sampler's greedy response tokens and lists every
response position whose token is not that model's argmax. An empty list means the policy the
sampler serves is the checkpoint, token for token; any other checkpoint gives mismatches on all
but trivial prompts.
"""

from __future__ import annotations

from collections.abc import Sequence


def served_mismatches(checkpoint: str, prompt_texts: Sequence[str],
                      responses: Sequence[Sequence[int]], *, max_prompt_tokens: int | None = None,
                      adapter: str | None = None) -> list[tuple[int, int, int, int]]:
    """Response positions where the served greedy token is not the checkpoint's argmax.

    Args:
        checkpoint: An HF model folder (full weights, or the base of ``adapter``).
        prompt_texts: P rendered prompts, as the sampler recorded them (``prompt_text``).
        responses: P greedy responses as token ids (EOS included when the sampler stopped on it).
        max_prompt_tokens: The left truncation the sampler applied to prompts.
        adapter: A peft LoRA adapter folder applied on ``checkpoint``.

    Returns:
        ``(prompt index, response position, served token, argmax token)`` per mismatch.
    """
    import torch

    from lire_ray.models import load_causal_lm, load_tokenizer
    from lire_ray.sampling import encode_prompts

    tokenizer = load_tokenizer(checkpoint)
    model = load_causal_lm(checkpoint, dtype="float32")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    out = []
    prompts = encode_prompts(tokenizer, list(prompt_texts), max_prompt_tokens)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        ids = torch.tensor([list(prompt) + list(response)])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1]
        best = logits.argmax(-1).tolist()
        out += [(i, j, tok, b) for j, (tok, b) in enumerate(zip(response, best)) if tok != b]
    return out
