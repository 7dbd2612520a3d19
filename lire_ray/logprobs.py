"""Summed sequence log-probs of candidate responses, without full-vocabulary logits.

LIRE (paper eq. 5) scores each candidate y_j by s_j = sum_t log pi(y_j,t | x, y_j,<t), summed
over response tokens, not length-normalised. This module computes s_j for a micro-batch of
groups (one prompt with its K candidates each).

Shape notation: B prompts (groups), K_max the largest candidate count, R model rows, L tokens per
row, H hidden size, V vocabulary, T response tokens in total, C <= ``chunk_size`` positions.

Memory: the float32 logits ``[R, L, V]`` that a plain ``model(...).logits`` produces are never
built. The decoder returns hidden states ``[R, L, H]``; only the T response-predicting positions
are gathered, and ``lm_head`` + float32 ``log_softmax`` run on at most ``chunk_size`` of them at a
time. Under autograd each chunk is checkpointed, so backward keeps only the ``[C, H]`` chunk
inputs and recomputes the ``[C, V]`` logits one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lire_ray.batch import TokenizedGroup
from lire_ray.errors import ConfigError
from lire_ray.packing import PackedBatch, pack, validate_groups


@dataclass
class SeqLogps:
    """Sequence log-probs of a micro-batch.

    Attributes:
        logps: ``[B, K_max]`` float32 summed response-token log-probs (paper eq. 5's s_j);
            differentiable w.r.t. the model; 0 where ``mask`` is False.
        lengths: ``[B, K_max]`` int64 response lengths in tokens; 0 where masked.
        mask: ``[B, K_max]`` bool, True where the candidate exists.
        tokens_computed: Non-padding tokens fed through the model (for tokens/s accounting).
    """

    logps: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    tokens_computed: int


def _unwrap(model: nn.Module):
    """Return the transformers ``PreTrainedModel`` inside peft / DeepSpeed / DDP wrappers.

    LoRA layers are injected in place, so calling the unwrapped model's decoder still applies
    the adapters.
    """
    from transformers import PreTrainedModel

    seen = 0
    while not isinstance(model, PreTrainedModel):
        get_base_model = getattr(model, "get_base_model", None)
        if get_base_model is not None:  # peft.PeftModel
            model = get_base_model()
        elif isinstance(inner := getattr(model, "module", None), nn.Module):  # DeepSpeed, DDP
            model = inner
        else:
            raise ConfigError(f"cannot find a transformers model inside {type(model).__name__}")
        seen += 1
        if seen > 8:
            raise ConfigError(f"too many wrappers around {type(model).__name__}")
    return model


def _token_logps(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor):
    """``[C, H]`` hidden states, ``[C]`` targets -> ``[C]`` float32 log-probs of the targets."""
    logits = lm_head(hidden).float()
    return logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _attention_mask(packed: PackedBatch, attn_impl: str, dtype: torch.dtype) -> torch.Tensor:
    mask = packed.attention_mask
    if mask.dim() == 2:
        return mask
    if attn_impl == "sdpa":
        return mask  # SDPA reads a bool mask as "True = may attend".
    if attn_impl == "eager":
        # Eager attention adds the mask to the scores, so it needs the additive form.
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    raise ConfigError(
        f"shared_prefix packing needs attn_implementation 'sdpa' or 'eager' (a dense 4D mask); "
        f"the model uses '{attn_impl}': load it with attn_implementation='sdpa' or use "
        "packing='padded'")


def sequence_logprobs(model: nn.Module, groups: Sequence[TokenizedGroup], *,
                      packing: str = "shared_prefix", chunk_size: int = 1024,
                      recompute_logits: bool = True) -> SeqLogps:
    """Summed response log-probs s_j (LIRE paper eq. 5) for every candidate of every group.

    Args:
        model: A transformers causal LM (``...ForCausalLM``), possibly wrapped by peft,
            DeepSpeed or DDP. Gradient checkpointing may be enabled on it.
        groups: B groups; group b has ``K_b <= K_max`` candidates.
        packing: ``shared_prefix`` (prompt computed once per group; needs SDPA or eager
            attention) or ``padded`` (one row per candidate).
        chunk_size: Most positions passed through ``lm_head`` at once.
        recompute_logits: Under autograd, checkpoint each chunk (recompute its logits in
            backward) instead of keeping ``[T, V]`` float32 log-probs alive until backward.

    Returns:
        :class:`SeqLogps` on the model's device; an empty response has log-prob 0.

    Raises:
        ConfigError: Unknown packing, ``chunk_size < 1``, or an attention implementation that
            cannot take a dense 4D mask under ``shared_prefix``.
        DataError: Empty micro-batch, a group without candidates, an empty prompt or an
            out-of-vocabulary token id.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    hf = _unwrap(model)
    lm_head = hf.get_output_embeddings()
    decoder = hf.base_model
    if lm_head is None or decoder is hf:
        raise ConfigError(f"{type(hf).__name__} has no separate decoder and lm_head; "
                          "sequence log-probs need a causal LM")
    k_max = validate_groups(groups, vocab_size=hf.get_input_embeddings().num_embeddings)
    pad_id = hf.config.pad_token_id
    packed = pack(groups, packing, pad_id=pad_id if isinstance(pad_id, int) else 0)
    device = lm_head.weight.device
    b = len(groups)
    lengths, mask = packed.lengths.to(device), packed.mask.to(device)
    total = packed.targets.numel()
    if total == 0:
        # Every response is empty: s_j = 0 exactly, with no path to the parameters.
        return SeqLogps(torch.zeros(b, k_max, device=device), lengths, mask, 0)

    attention_mask = _attention_mask(packed, hf.config._attn_implementation,
                                     lm_head.weight.dtype)
    out = decoder(input_ids=packed.input_ids.to(device),
                  attention_mask=attention_mask.to(device),
                  position_ids=packed.position_ids.to(device), use_cache=False)
    hidden = out[0]  # [R, L, H]
    # Advanced indexing copies the T predicting positions ([T, H]); the [R, L, H] states
    # themselves are left untouched (safe under gradient checkpointing).
    picked = hidden[packed.src_row.to(device), packed.src_pos.to(device)]
    targets = packed.targets.to(device)
    use_ckpt = recompute_logits and torch.is_grad_enabled() and picked.requires_grad
    pieces = []
    for start in range(0, total, chunk_size):
        h, t = picked[start:start + chunk_size], targets[start:start + chunk_size]
        if use_ckpt:
            pieces.append(checkpoint(_token_logps, lm_head, h, t, use_reentrant=False))
        else:
            pieces.append(_token_logps(lm_head, h, t))
    token_logps = torch.cat(pieces)  # [T]
    sums = torch.zeros(b * k_max, dtype=torch.float32, device=device).index_add(
        0, packed.slot.to(device), token_logps)
    return SeqLogps(sums.view(b, k_max), lengths, mask, packed.tokens_computed)
