"""Tests of the listwise baselines (SFT, RRHF, PRO, PL-DPO) against naive per-pair and
per-position loops written here, and hand computation.

Shape notation: B prompts, K candidates.
"""

from __future__ import annotations

import math

import pytest
import torch
from _loss_batches import list_batch

from lire_ray.losses import dpo_loss, pl_loss, pro_loss, rrhf_loss, sft_loss

F64 = torch.float64


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# RRHF / PRO / PL vs naive loops
# ---------------------------------------------------------------------------------------------

def _rows(mask, b):
    return [j for j in range(mask.shape[1]) if mask[b, j]]


def naive_rrhf(s, r, mask, lengths, rank_weight, sft_weight):
    out = []
    for b in range(s.shape[0]):
        idx = _rows(mask, b)
        total = torch.zeros((), dtype=s.dtype)
        for i in idx:
            for j in idx:
                if r[b, i] < r[b, j]:
                    p_i, p_j = s[b, i] / lengths[b, i], s[b, j] / lengths[b, j]
                    total = total + torch.clamp(p_i - p_j, min=0.0)
        if idx:
            best = max(idx, key=lambda j: (r[b, j].item(), -j))
            total = rank_weight * total - sft_weight * s[b, best] / lengths[b, best]
        out.append(total)
    return torch.stack(out)


def naive_pro(s, r, mask, lengths, sft_weight):
    out = []
    for b in range(s.shape[0]):
        idx = sorted(_rows(mask, b), key=lambda j: -r[b, j].item())  # stable on ties
        n = len(idx)
        total = torch.zeros((), dtype=s.dtype)
        for k in range(n - 1):
            rk = r[b, idx[k]].item()
            temps = [1.0 / (rk - r[b, idx[i]].item()) if rk > r[b, idx[i]].item() else math.inf
                     for i in range(k + 1, n)]
            t_kk = min(temps)
            p = [s[b, idx[i]] / lengths[b, idx[i]] for i in range(n)]
            num = p[k] / t_kk if t_kk != math.inf else p[k] * 0.0
            terms = [num] + [p[i] / temps[i - k - 1] if temps[i - k - 1] != math.inf
                             else p[i] * 0.0 for i in range(k + 1, n)]
            total = total - (num - torch.logsumexp(torch.stack(terms), 0))
        if n:
            best = max(idx, key=lambda j: (r[b, j].item(), -j))
            total = total + sft_weight * (n - 1) ** 2 * (-s[b, best])
        out.append(total)
    return torch.stack(out)


def naive_pl(s, ref, r, mask, beta):
    out = []
    for b in range(s.shape[0]):
        idx = sorted(_rows(mask, b), key=lambda j: -r[b, j].item())
        u = [beta * (s[b, j] - ref[b, j]) for j in idx]
        total = torch.zeros((), dtype=s.dtype)
        for k in range(len(idx)):
            total = total - (u[k] - torch.logsumexp(torch.stack(u[k:]), 0))
        out.append(total)
    return torch.stack(out)


def _compare(fn, naive, seed, **params):
    s0, ref, r, mask, lengths = list_batch(seed)
    r = r + torch.randn(r.shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * (
        torch.arange(r.shape[0]) % 2 == 0).unsqueeze(1)  # even rows: distinct rewards
    s = _leaf(s0)
    loss, metrics = fn(s, r, mask=mask, ref_logps=ref, lengths=lengths, **params)
    loss.sum().backward()
    t = _leaf(s0)
    want = naive(t, r, mask, lengths.to(F64), ref)
    want.sum().backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-12)
    return loss, metrics


@pytest.mark.parametrize("seed", [6, 7])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (100.0, 1.0), (1.0, 0.0)])
def test_rrhf_matches_naive_loop(seed, weights):
    rw, sw = weights
    _compare(rrhf_loss, lambda s, r, m, n, ref: naive_rrhf(s, r, m, n, rw, sw), seed,
             rank_weight=rw, sft_weight=sw)


@pytest.mark.parametrize("seed", [8, 9])
@pytest.mark.parametrize("sft_weight", [0.0, 0.05])
def test_pro_matches_naive_loop(seed, sft_weight):
    loss, _ = _compare(pro_loss, lambda s, r, m, n, ref: naive_pro(s, r, m, n, sft_weight), seed,
                       sft_weight=sft_weight)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("seed", [10, 11])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_pl_matches_naive_loop(seed, beta):
    _compare(pl_loss, lambda s, r, m, n, ref: naive_pl(s, ref, r, m, beta), seed, beta=beta)


def test_pl_with_two_candidates_is_dpo():
    gen = torch.Generator().manual_seed(12)
    s0 = -torch.rand(6, 2, generator=gen, dtype=F64) * 40
    ref = s0 + torch.randn(6, 2, generator=gen, dtype=F64) * 3
    r = torch.randn(6, 2, generator=gen, dtype=F64)
    pl, _ = pl_loss(s0, r, ref_logps=ref, beta=0.4)
    dpo, _ = dpo_loss(s0, r, ref_logps=ref, beta=0.4)
    torch.testing.assert_close(pl, dpo, rtol=1e-12, atol=1e-14)


def test_sft_loss_by_hand():
    s = torch.tensor([[-6.0, -2.0, -9.0], [-4.0, -1.0, 0.0]], dtype=F64)
    r = torch.tensor([[0.0, 1.0, 3.0], [2.0, 1.0, 9.0]], dtype=F64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    lengths = torch.tensor([[3, 4, 6], [8, 2, 1]])
    loss, m = sft_loss(s, r, mask=mask, lengths=lengths)
    assert loss.tolist() == pytest.approx([9.0 / 6.0, 4.0 / 8.0], rel=1e-12)
    assert m["nll"].item() == pytest.approx((1.5 + 0.5) / 2, rel=1e-12)
    human = torch.tensor([[False, True, False], [False, True, False]])
    loss_h, _ = sft_loss(s, r, mask=mask, lengths=lengths, human_mask=human, target="human")
    assert loss_h.tolist() == pytest.approx([2.0 / 4.0, 1.0 / 2.0], rel=1e-12)
