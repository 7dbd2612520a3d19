"""The reference log-prob computation that pairwise/listwise trainers commonly use.

This is what the ``step`` bench compares lire-ray against, written the way TRL-style trainers
write it: one right-padded row ``[prompt | response]`` per candidate (every candidate recomputes
its prompt), full-vocabulary logits upcast to float32 with ``model(...).logits.float()``,
``log_softmax`` over the vocabulary, ``gather`` of the next tokens, and a masked sum over the
response positions.

Shape notation: B prompts, K_max the largest candidate count, R = total candidates (rows),
L tokens per row, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lire_ray.batch import TokenizedGroup


def naive_inputs(groups: Sequence[TokenizedGroup], pad_id: int = 0):
    """Right-padded rows, one per candidate.

    Args:
        groups: B groups.
        pad_id: Token id at padding positions.

    Returns:
        ``(input_ids [R, L], attention_mask [R, L], response_mask [R, L-1], slot [R],
        k_max)``: ``response_mask[r, t]`` is True where token ``t + 1`` of row r is a response
        token, and ``slot[r] = b * K_max + k`` names the candidate of row r.
    """
    k_max = max(g.num_candidates for g in groups)
    rows, prompt_lens, slot = [], [], []
    for b, group in enumerate(groups):
        for k, resp in enumerate(group.response_ids):
            rows.append(list(group.prompt_ids) + list(resp))
            prompt_lens.append(len(group.prompt_ids))
            slot.append(b * k_max + k)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    response_mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for r, (row, p) in enumerate(zip(rows, prompt_lens)):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[r, : len(row)] = 1
        response_mask[r, p - 1: len(row) - 1] = True
    return input_ids, attention_mask, response_mask, torch.tensor(slot), k_max


def naive_sequence_logprobs(model: nn.Module, groups: Sequence[TokenizedGroup]) -> torch.Tensor:
    """Summed response log-probs with full float32 logits (the baseline of the step bench).

    Args:
        model: A transformers causal LM.
        groups: B groups (every prompt non-empty).

    Returns:
        ``[B, K_max]`` float32 summed response-token log-probs, 0 at missing candidates;
        differentiable w.r.t. the model.
    """
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None)
    input_ids, attention_mask, response_mask, slot, k_max = naive_inputs(
        groups, pad if isinstance(pad, int) else 0)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    response_mask = response_mask.to(device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   use_cache=False).logits.float()  # [R, L, V]
    logps = logits[:, :-1].log_softmax(dim=-1)
    token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [R, L-1]
    per_row = (token_logps * response_mask).sum(dim=-1)  # [R]
    out = torch.zeros(len(groups) * k_max, dtype=torch.float32, device=device)
    return out.index_add(0, slot.to(device), per_row).view(len(groups), k_max)
