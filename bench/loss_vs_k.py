"""Cost of the loss alone as K grows: LIRE (paper eq. 5-6) against Plackett-Luce listwise DPO.

LIRE is one softmax over the K candidates (O(K) per prompt); the PL objective sums K nested
log-sum-exps over the reward ranking (O(K^2) as implemented, after a sort). Both run forward +
backward on ``[B, K]`` tensors of summed log-probs; the model is not involved.

Shape notation: B prompts, K candidates per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.common import median, table, time_call
from lire_ray.errors import ConfigError
from lire_ray.losses import build_loss

DEFAULT_KS = (2, 4, 8, 16, 32, 64)
DEFAULT_LOSSES = ("lire", "pl")


def _inputs(b: int, k: int, device: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    logps = (-50.0 * torch.rand(b, k, generator=gen) - 10.0).to(device)
    ref = (logps.cpu() + torch.randn(b, k, generator=gen)).to(device)
    rewards = torch.randn(b, k, generator=gen).to(device)
    return logps, ref, rewards


def loss_call(name: str, b: int, k: int, *, device: str, reps: int, seed: int = 0):
    """A closure running ``reps`` forward + backward passes of loss ``name`` on ``[B, K]`` inputs.

    Args:
        name: Registry name of the loss.
        b: B prompts.
        k: K candidates.
        device: Torch device.
        reps: Calls per closure call (a single call is too short to time alone).
        seed: Input seed.

    Returns:
        The closure (already called once, as warm-up).
    """
    loss_fn = build_loss(name)
    logps, ref, rewards = _inputs(b, k, device, seed)
    leaf = logps.clone().requires_grad_(True)
    kwargs = {"ref_logps": ref} if loss_fn.needs_reference else {}

    def call():
        for _ in range(reps):
            loss, _ = loss_fn(leaf, rewards, **kwargs)
            loss.mean().backward()
            leaf.grad = None

    call()
    return call


def run_loss_bench(*, ks: Sequence[int] = DEFAULT_KS, losses: Sequence[str] = DEFAULT_LOSSES,
                   batch: int = 64, device: str = "cpu", iters: int = 15, reps: int = 10,
                   seed: int = 0) -> dict:
    """Time every loss at every K.

    Args:
        ks: Candidate counts (each >= 2).
        losses: Registry names; the first is the reference of the ratio column.
        batch: B prompts.
        device: Torch device.
        iters: Timed samples per cell (the median is reported).
        reps: Calls per sample.
        seed: Input seed.

    Returns:
        ``{"config", "rows": [{"k", "<loss>_ms", ..., "ratio"}]}``; ``ratio`` is each other
        loss's time over the first one's.

    Raises:
        ConfigError: A K below 2 or no loss named.
    """
    if not losses or any(k < 2 for k in ks):
        raise ConfigError(f"loss bench needs at least one loss and every K >= 2, got "
                          f"losses={list(losses)} ks={list(ks)}")
    # [B, K] ops are far too small to gain from intra-op threads; one thread also keeps the
    # timings stable when other processes compete for the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for k in ks:
            row: dict[str, float] = {"k": k}
            calls = {n: loss_call(n, batch, k, device=device, reps=reps, seed=seed)
                     for n in losses}
            samples: dict[str, list[float]] = {n: [] for n in losses}
            for _ in range(iters):  # interleaved, so load bursts hit every loss alike
                for n in losses:
                    samples[n].append(time_call(calls[n], device) / reps)
            for name in losses:
                row[f"{name}_ms"] = 1e3 * median(samples[name])
            for name in losses[1:]:
                row[f"{name}_over_{losses[0]}"] = row[f"{name}_ms"] / row[f"{losses[0]}_ms"]
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return {"config": {"batch": batch, "losses": list(losses), "ks": list(ks), "iters": iters,
                       "reps": reps, "device": device, "cpu_threads": 1}, "rows": rows}


def loss_markdown(result: dict) -> str:
    """The loss bench's Markdown table (one row per K)."""
    cfg = result["config"]
    names = cfg["losses"]
    header = ["K"] + [f"{n} fwd+bwd ms" for n in names] + [f"{n} / {names[0]}" for n in names[1:]]
    rows = [[r["k"]] + [r[f"{n}_ms"] for n in names] + [r[f"{n}_over_{names[0]}"]
                                                         for n in names[1:]]
            for r in result["rows"]]
    return (f"Loss alone on [B={cfg['batch']}, K] tensors, forward + backward, median of "
            f"{cfg['iters']} samples of {cfg['reps']} calls, {cfg['device']} "
            f"({cfg.get('cpu_threads', '?')} CPU thread).\n\n"
            + table(header, rows))
