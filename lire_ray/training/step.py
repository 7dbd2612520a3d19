"""One listwise optimizer step: micro-batches of whole prompt groups through any registry loss.

Shape notation: B prompts in a micro-batch, K candidates per prompt (padded to K_max with a
boolean mask; never with fake candidates).

A micro-batch holds every candidate of each of its prompts, so listwise losses such as LIRE
(paper eq. 6) see the complete list. The step objective is the mean per-prompt loss over all
prompts of the step on this worker (``sum_b loss_b / N``, N summed over the step's
micro-batches), so a short last micro-batch weighs by its prompts, not as a whole batch.
DeepSpeed then averages gradients over workers, which all hold the same number of prompts per
step; the result is the mean over every prompt of the global step (eq. 6's 1/P).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lire_ray.batch import TokenizedGroup
from lire_ray.errors import DataError
from lire_ray.logprobs import SeqLogps, sequence_logprobs


@dataclass
class MicroBatchLoss:
    """Loss of one micro-batch.

    Attributes:
        loss_sum: 0-dim sum of the per-prompt losses (differentiable).
        num_prompts: B.
        metrics: The loss's metrics as floats (means over this micro-batch's prompts).
        tokens_computed: Tokens the model actually ran (prompt once per group when packed).
        tokens_naive: Tokens a one-row-per-candidate batch would run (prompt once per
            candidate).
    """

    loss_sum: torch.Tensor
    num_prompts: int
    metrics: dict[str, float]
    tokens_computed: int
    tokens_naive: int


@dataclass
class StepStats:
    """Outcome of one optimizer step on one worker.

    Attributes:
        loss: Mean per-prompt loss over the step's prompts (before the update).
        num_prompts: Prompts in the step.
        metrics: Prompt-weighted means of the loss metrics (accuracy, entropy, ...).
        tokens_computed: Tokens run through the model.
        tokens_naive: Candidate tokens counted as a pairwise trainer would (prompt repeated).
        lr: Learning rate the update used.
        grad_norm: Global gradient norm before clipping (None if DeepSpeed gave none).
        seconds: Wall time of the step.
    """

    loss: float
    num_prompts: int
    metrics: dict[str, float] = field(default_factory=dict)
    tokens_computed: int = 0
    tokens_naive: int = 0
    lr: float = 0.0
    grad_norm: float | None = None
    seconds: float = 0.0


def _pad(rows: Sequence[Sequence[float]], k_max: int, device) -> torch.Tensor:
    out = torch.zeros(len(rows), k_max, dtype=torch.float32)
    for b, row in enumerate(rows):
        out[b, :len(row)] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)


def loss_inputs(groups: Sequence[TokenizedGroup], seq: SeqLogps, *,
                needs_reference: bool) -> dict[str, torch.Tensor | None]:
    """Keyword tensors of the uniform loss convention for one micro-batch.

    Args:
        groups: The B tokenised groups, in the order of ``seq``.
        seq: Their sequence log-probs (``[B, K_max]`` logps, lengths, mask).
        needs_reference: Whether the loss needs reference log-probs.

    Returns:
        ``rewards`` [B, K_max] float, ``mask`` [B, K_max] bool, ``lengths`` [B, K_max] long,
        ``human_mask`` [B, K_max] bool marking each prompt's human reference answer (all its
        human-written candidates where a group names no reference; None when a group has no
        source information), and
        ``ref_logps`` [B, K_max] float (or None when the loss does not need it).

    Raises:
        DataError: A group has no rewards, or the loss needs reference log-probs and a group
            has none (the message names the prompt_id).
    """
    k_max = seq.logps.shape[1]
    device = seq.logps.device
    rewards: list[Sequence[float]] = []
    for g in groups:
        if g.rewards is None:
            raise DataError("the group has no training rewards", source=f"prompt_id {g.prompt_id}",
                            field="rewards")
        rewards.append(g.rewards)
    ref = None
    if needs_reference:
        missing = [g.prompt_id for g in groups if g.ref_logps is None]
        if missing:
            raise DataError(
                f"the loss needs reference log-probs but the pool has none for prompt_id(s) "
                f"{missing[:5]}; compute them with the reference model when building the pool",
                field="ref_logps")
        ref = _pad([g.ref_logps for g in groups if g.ref_logps is not None], k_max, device)
    human = None
    is_human = [g.is_human for g in groups if g.is_human is not None]
    if len(is_human) == len(groups):
        # The SFT target "human" is the human reference answer (the labelled preferred one),
        # not any human-written candidate: HH rows hold two human answers, one rejected.
        flags = [[float(h and (g.human_reference is None or j == g.human_reference))
                  for j, h in enumerate(g.is_human or ())] for g in groups]
        human = _pad(flags, k_max, device).bool() & seq.mask
    return {"rewards": _pad(rewards, k_max, device), "mask": seq.mask,
            "lengths": seq.lengths, "human_mask": human, "ref_logps": ref}


def micro_batch_loss(model, groups: Sequence[TokenizedGroup], loss, *, packing: str,
                     chunk_size: int, recompute_logits: bool = True) -> MicroBatchLoss:
    """Forward one micro-batch and evaluate a registry loss on it.

    Args:
        model: The policy (transformers, peft or DeepSpeed-wrapped).
        groups: B prompt groups, each with all of its candidates.
        loss: A :class:`~lire_ray.losses.BuiltLoss` (uniform convention, per-prompt output).
        packing: ``shared_prefix`` or ``padded`` (see :mod:`lire_ray.logprobs`).
        chunk_size: ``lm_head`` positions per chunk.
        recompute_logits: Recompute each chunk's logits in backward instead of keeping the
            float32 log-probs (see :func:`~lire_ray.logprobs.sequence_logprobs`).

    Returns:
        The micro-batch's :class:`MicroBatchLoss`.

    Raises:
        DataError: Missing rewards or reference log-probs (see :func:`loss_inputs`).
    """
    seq = sequence_logprobs(model, groups, packing=packing, chunk_size=chunk_size,
                            recompute_logits=recompute_logits)
    inputs = loss_inputs(groups, seq, needs_reference=loss.needs_reference)
    per_prompt, metrics = loss(seq.logps, inputs["rewards"], mask=inputs["mask"],
                               ref_logps=inputs["ref_logps"], lengths=inputs["lengths"],
                               human_mask=inputs["human_mask"])
    return MicroBatchLoss(
        loss_sum=per_prompt.sum(), num_prompts=len(groups),
        metrics={k: float(v) for k, v in metrics.items()},
        tokens_computed=seq.tokens_computed,
        tokens_naive=sum(g.num_tokens_naive for g in groups))


def _begin_forward(engine) -> None:
    """Do what ``DeepSpeedEngine.forward`` does before running its module.

    The log-prob computation calls the decoder and ``lm_head`` itself, so it bypasses
    ``engine.forward``; ZeRO optimizers use this call to count micro-steps (ZeRO-3 would
    otherwise overwrite instead of accumulate gradients) and to release the previous
    micro-step's accumulation buffers.
    """
    if not getattr(engine, "is_deepspeed", True):
        return
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    if isinstance(engine.optimizer, ZeROOptimizer):
        engine.optimizer.clear_backward_seen_flag()


def _grad_norm(engine) -> float:
    """Global L2 norm of the (already averaged) gradients; for engines that keep them in
    ``param.grad`` (no ZeRO partitioning), where DeepSpeed records no norm itself."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for p in engine.module.parameters():
        if p.grad is not None:
            total += p.grad.detach().double().pow(2).sum().cpu()
    return float(total.sqrt())


def train_step(engine, micro_batches: Sequence[Sequence[TokenizedGroup]], loss, *,
               packing: str = "shared_prefix", chunk_size: int = 1024,
               recompute_logits: bool = True) -> StepStats:
    """One optimizer step over ``micro_batches`` with a DeepSpeed engine.

    The accumulation boundary is set explicitly (the last micro-batch of the step), so a step
    may hold fewer micro-batches than ``grad_accum`` (the end of an epoch) and still update.
    Each micro-batch contributes ``loss_sum / N`` with N the step's prompts, and DeepSpeed's
    own 1/grad_accum scaling is turned off, so the gradient is exactly the mean over prompts.

    Args:
        engine: A ``DeepSpeedEngine`` or ``TorchEngine`` from
            :func:`~lire_ray.training.engine.build_engine`.
        micro_batches: One or more micro-batches, each a non-empty list of groups.
        loss: A :class:`~lire_ray.losses.BuiltLoss`.
        packing: ``shared_prefix`` or ``padded``.
        chunk_size: ``lm_head`` positions per chunk.
        recompute_logits: See :func:`micro_batch_loss`; must be False under ZeRO-3 with
            frozen parameters (LoRA), whose partitioned weights are not gathered again when
            a checkpointed chunk recomputes in backward.

    Returns:
        The step's :class:`StepStats` for this worker.

    Raises:
        ValueError: No micro-batch, or an empty one.
        DataError: Missing rewards or reference log-probs.
    """
    if not micro_batches or any(len(mb) == 0 for mb in micro_batches):
        raise ValueError("train_step needs one or more non-empty micro-batches")
    started = time.perf_counter()
    n = sum(len(mb) for mb in micro_batches)
    lr = float(engine.get_lr()[0])
    loss_total = 0.0
    weighted: dict[str, float] = {}
    computed = naive = 0
    for i, groups in enumerate(micro_batches):
        engine.set_gradient_accumulation_boundary(i == len(micro_batches) - 1)
        _begin_forward(engine)
        out = micro_batch_loss(engine.module, groups, loss, packing=packing,
                               chunk_size=chunk_size, recompute_logits=recompute_logits)
        engine.backward(out.loss_sum / n, scale_wrt_gas=False)
        loss_total += float(out.loss_sum.detach())
        for k, v in out.metrics.items():
            weighted[k] = weighted.get(k, 0.0) + v * out.num_prompts
        computed += out.tokens_computed
        naive += out.tokens_naive
    # Without ZeRO, DeepSpeed clips param.grad in step() and records no norm: measure first.
    # The torch engine records the norm its clipping measures.
    own_norm = _grad_norm(engine) if engine.zero_optimization_stage() == 0 \
        and getattr(engine, "is_deepspeed", True) else None
    engine.step()
    norm = own_norm if own_norm is not None else engine.get_global_grad_norm()
    return StepStats(
        loss=loss_total / n, num_prompts=n, metrics={k: v / n for k, v in weighted.items()},
        tokens_computed=computed, tokens_naive=naive, lr=lr,
        grad_norm=None if norm is None else float(norm),
        seconds=time.perf_counter() - started)
