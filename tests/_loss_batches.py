"""Random listwise loss inputs shared by the loss tests (shapes [B, K])."""

from __future__ import annotations

import torch

F64 = torch.float64


def list_batch(seed):
    """Scores, reference scores, rewards with ties, a candidate mask and lengths, all ``[6, 5]``:
    row 0 has a tied best, row 1 all-equal rewards, row 2 one candidate, row 3 none."""
    gen = torch.Generator().manual_seed(seed)
    b, k = 6, 5
    s = -torch.rand(b, k, generator=gen, dtype=F64) * 30
    ref = s + torch.randn(b, k, generator=gen, dtype=F64) * 2
    r = torch.randint(0, 4, (b, k), generator=gen).to(F64)  # many ties
    r[0] = torch.tensor([1.0, 3.0, 3.0, 0.0, 2.0])          # tied best
    r[1] = 2.0                                              # all equal: no pairs
    mask = torch.rand(b, k, generator=gen) > 0.2
    mask[0] = True
    mask[1] = True
    mask[2] = torch.tensor([False, True, False, False, False])
    mask[3] = False
    lengths = torch.randint(1, 20, (b, k), generator=gen)
    return s, ref, r, mask, lengths
