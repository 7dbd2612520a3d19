"""Reference-policy scoring: summed log-probs of every candidate under pi_ref.

DPO, IPO and Plackett-Luce need ``log pi_ref(y|x)`` per candidate, and the KL metric of the
evaluation needs it for policy samples. :class:`ReferenceScorer` computes them with the same
memory-lean path as training (:func:`lire_ray.logprobs.sequence_logprobs`), without gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lire_ray.collate import tokenize_group
from lire_ray.pool import PoolRow


def reference_logps(model, tokenizer, rows: Sequence[PoolRow], *, max_prompt_tokens: int,
                    max_response_tokens: int, batch_prompts: int = 8,
                    packing: str = "shared_prefix", chunk_size: int = 1024,
                    chat_template: str = "auto") -> list[list[float]]:
    """Summed log-probs of every candidate under ``model``, without gradients, in eval mode
    (dropout off; the model's mode is restored afterwards).

    Args:
        model: A causal LM (transformers or peft).
        tokenizer: Its tokenizer.
        rows: Pool rows.
        max_prompt_tokens: Prompt truncation (as training's).
        max_response_tokens: Response truncation (as training's).
        batch_prompts: Groups per forward pass.
        packing: ``train.packing``.
        chunk_size: ``lm_head`` positions per chunk.
        chat_template: ``data.chat_template``.

    Returns:
        One list of K floats per row.
    """
    import torch

    from lire_ray.logprobs import sequence_logprobs

    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    try:
        for start in range(0, len(rows), batch_prompts):
            chunk = rows[start:start + batch_prompts]
            groups = [tokenize_group(r, tokenizer, max_prompt_tokens=max_prompt_tokens,
                                     max_response_tokens=max_response_tokens,
                                     chat_template=chat_template)
                      for r in chunk]
            with torch.no_grad():
                seq = sequence_logprobs(model, groups, packing=packing, chunk_size=chunk_size)
            for b, row in enumerate(chunk):
                out.append([float(x) for x in seq.logps[b, :row.num_candidates].cpu()])
    finally:
        model.train(was_training)
    return out


class ReferenceScorer:
    """Computes reference log-probs for pool rows.

    Args:
        model_path: Hub id or local directory of the reference policy.
        max_prompt_tokens: Prompt truncation (must match training's).
        max_response_tokens: Response truncation (must match training's).
        batch_prompts: Groups per forward pass.
        dtype: Model dtype name (see :func:`lire_ray.models.resolve_dtype`).
        trust_remote_code: Passed to the loaders.
        device: Torch device.
        packing: ``train.packing`` of the log-prob computation.
        chunk_size: ``lm_head`` positions per chunk.
        chat_template: ``data.chat_template`` (prompts are rendered as for training).
    """

    def __init__(self, model_path: str, *, max_prompt_tokens: int, max_response_tokens: int,
                 batch_prompts: int = 8, dtype: str = "auto", trust_remote_code: bool = False,
                 device: str = "cpu", packing: str = "shared_prefix", chunk_size: int = 1024,
                 chat_template: str = "auto"):
        from lire_ray.models import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=trust_remote_code,
                                    device=device)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_response_tokens = max_response_tokens
        self.batch_prompts = batch_prompts
        self.packing = packing
        self.chunk_size = chunk_size
        self.chat_template = chat_template

    def logps(self, rows: Sequence[PoolRow], *,
              max_response_tokens: int | None = None) -> list[list[float]]:
        """Summed log-probs ``log pi_ref(y_j|x)``, one list of K floats per row.

        Args:
            rows: Pool rows.
            max_response_tokens: Overrides the response limit for this call (evaluation uses
                ``sampler.max_new_tokens``, so a sample cut at that length is scored without
                an EOS it never generated).
        """
        return reference_logps(self.model, self.tokenizer, rows,
                               max_prompt_tokens=self.max_prompt_tokens,
                               max_response_tokens=max_response_tokens
                               or self.max_response_tokens,
                               batch_prompts=self.batch_prompts, packing=self.packing,
                               chunk_size=self.chunk_size, chat_template=self.chat_template)

    def annotate(self, rows: Sequence[PoolRow]) -> list[PoolRow]:
        """The rows with ``ref_logps`` filled in."""
        return [replace(r, ref_logps=tuple(lp)) for r, lp in zip(rows, self.logps(rows))]
