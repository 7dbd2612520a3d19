"""The Bradley-Terry loss of reward-model training (not a policy loss: it is not in the registry).

A scalar reward model r scores the chosen and the rejected response of a preference pair; the
Bradley-Terry model says P(chosen preferred) = sigmoid(r_chosen - r_rejected), so the negative
log-likelihood of the observed preference is ``-log sigmoid(r_chosen - r_rejected - m)``. The
optional margin m (Llama 2's reward-model loss) asks the reward gap of a pair to exceed m
before the loss stops pushing; m = 0 is the plain Bradley-Terry loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, *,
                       margin: torch.Tensor | float = 0.0
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair Bradley-Terry negative log-likelihood.

    Args:
        chosen: [N] rewards of the preferred responses.
        rejected: [N] rewards of the rejected responses (same pairs, same order).
        margin: A float, or [N] per-pair margins, subtracted from the reward gap.

    Returns:
        ``(loss [N], metrics)``: ``loss_i = -log sigmoid(chosen_i - rejected_i - margin_i)``
        (computed with ``logsigmoid``, finite for any gap); metrics, 0-dim detached means over
        the N pairs: ``accuracy`` (share with ``chosen > rejected``; a tie counts as wrong),
        ``margin`` (mean ``chosen - rejected``), ``chosen_reward`` and ``rejected_reward``.

    Raises:
        ValueError: ``chosen`` and ``rejected`` are not 1-D tensors of the same length.
    """
    if chosen.dim() != 1 or chosen.shape != rejected.shape:
        raise ValueError(f"chosen and rejected must be [N] tensors of one shape, got "
                         f"{tuple(chosen.shape)} and {tuple(rejected.shape)}")
    gap = chosen - rejected
    loss = -F.logsigmoid(gap - margin)
    with torch.no_grad():
        metrics = {"accuracy": (gap > 0).to(chosen.dtype).mean(), "margin": gap.mean(),
                   "chosen_reward": chosen.mean(), "rejected_reward": rejected.mean()}
    return loss, {k: v.detach() for k, v in metrics.items()}
