"""Shared pieces of the training tests that run DeepSpeed in the pytest process.

An in-process one-rank process group, and the plain PyTorch LIRE reference the training code is
checked against, written independently of ``lire_ray.training``: naive full-logit sequence
log-probs (one padded row per candidate) and the loss from its definition (paper eq. 5-6).

Shape notation: K candidates per prompt.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import torch


def forget_deepspeed_groups() -> None:
    """Drop DeepSpeed's module-wide cache of process groups.

    DeepSpeed keeps the groups it saw at its first ``initialize``; after a test destroys its
    process group, a later test's new group must not be mixed with the destroyed one.
    """
    import torch.distributed as dist
    from deepspeed.utils import groups

    for name, value in list(vars(groups).items()):
        if isinstance(value, dist.ProcessGroup):
            setattr(groups, name, None)
        elif isinstance(value, dict) and name.startswith("_") and name.endswith(("GROUP",
                                                                                   "GROUPS")):
            value.clear()


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """Run the body inside a one-rank gloo process group in this process.

    Sets the rank and rendezvous environment DeepSpeed reads (``DS_ACCELERATOR=cpu``, rank 0 of
    1, a free local port), forgets DeepSpeed's cached groups before and after, destroys the
    group on exit and restores the environment as it was.

    Yields:
        Nothing; the default process group exists while the body runs.
    """
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"DS_ACCELERATOR": "cpu", "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        forget_deepspeed_groups()
        dist.init_process_group("gloo", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
            forget_deepspeed_groups()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def naive_logps(model, group) -> torch.Tensor:
    """[K] summed response log-probs of one prompt group: one padded row per candidate.

    Args:
        model: A causal LM.
        group: A ``TokenizedGroup``.

    Returns:
        The K candidates' summed float32 log-probs from full logits.
    """
    seqs = [list(group.prompt_ids) + list(r) for r in group.response_ids]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logp = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
    p = len(group.prompt_ids)
    return torch.stack([sum(logp[k, p + t - 1, tok] for t, tok in enumerate(r))
                        for k, r in enumerate(group.response_ids)])


def naive_lire(model, group, temperature: float) -> torch.Tensor:
    """The LIRE loss of one prompt group, ``-sum_j softmax(s/T)_j softmax(R)_j``.

    Args:
        model: A causal LM.
        group: A ``TokenizedGroup`` with rewards.
        temperature: T.

    Returns:
        The scalar loss.
    """
    q = torch.softmax(naive_logps(model, group) / temperature, dim=0)
    return -(q * torch.softmax(torch.tensor(group.rewards), dim=0)).sum()
