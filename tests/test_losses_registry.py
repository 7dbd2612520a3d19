"""Tests of the loss registry and of numerical safety for every registered loss.

Shape notation: B prompts, K candidates.
"""

from __future__ import annotations

import pytest
import torch

from lire_ray.errors import ConfigError
from lire_ray.losses import LOSSES, build_loss, list_losses

F64 = torch.float64
NAMES = ("lire", "sft", "dpo", "ipo", "slic", "rrhf", "pro", "pl")


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# Numerical safety, for every registered loss
# ---------------------------------------------------------------------------------------------

EXTREME_PARAMS = {
    "lire": [{}, {"reward_transform": "raw", "sft_weight": 0.1}, {"reward_transform": "zscore"},
             {"reward_transform": "rank", "temperature": 0.05}],
    "sft": [{}], "dpo": [{}, {"beta": 5.0, "pairs": "all_ranked"}],
    "ipo": [{}, {"length_normalize": False, "beta": 0.01}], "slic": [{}],
    "rrhf": [{"rank_weight": 100.0}], "pro": [{}], "pl": [{}, {"beta": 10.0}],
}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", NAMES)
def test_extreme_values_stay_finite(name, dtype):
    gen = torch.Generator().manual_seed(13)
    b, k = 5, 4
    s0 = (-1e4 + torch.randn(b, k, generator=gen, dtype=F64) * 50).to(dtype)
    ref = (-1e4 + torch.randn(b, k, generator=gen, dtype=F64) * 50).to(dtype)
    r = (torch.randn(b, k, generator=gen, dtype=F64).sign() * 1e3
         + torch.randn(b, k, generator=gen, dtype=F64)).to(dtype)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[1] = False                                   # fully padded prompt
    mask[2, 1:] = False                               # single candidate
    lengths = torch.randint(1, 500, (b, k), generator=gen)
    human = torch.zeros(b, k, dtype=torch.bool)
    human[:, 0] = True
    for params in EXTREME_PARAMS[name]:
        s = _leaf(s0)
        loss, metrics = build_loss(name, params)(s, r, mask=mask, ref_logps=ref,
                                                 lengths=lengths, human_mask=human)
        loss.sum().backward()
        assert loss.shape == (b,) and loss.dtype == dtype
        assert torch.isfinite(loss).all(), (name, params, loss)
        assert torch.isfinite(s.grad).all(), (name, params, s.grad)
        assert torch.equal(s.grad[1], torch.zeros(k, dtype=dtype))
        assert loss[1].item() == 0.0
        assert all(torch.isfinite(v) and v.dim() == 0 for v in metrics.values())


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

def test_every_registered_loss_builds_and_runs():
    assert list_losses() == sorted(NAMES)
    s = torch.tensor([[-3.0, -5.0, -4.0]], dtype=F64)
    r = torch.tensor([[1.0, 0.0, 2.0]], dtype=F64)
    ref = torch.tensor([[-3.5, -4.0, -4.5]], dtype=F64)
    lengths = torch.tensor([[3, 4, 5]])
    for name in NAMES:
        built = build_loss(name, {})
        assert built.name == name and built.params == LOSSES[name].defaults
        got, _ = built(s, r, ref_logps=ref, lengths=lengths)
        direct, _ = LOSSES[name].fn(s, r, ref_logps=ref, lengths=lengths)
        torch.testing.assert_close(got, direct, rtol=0, atol=0)
    assert {n for n in NAMES if LOSSES[n].needs_reference} == {"dpo", "ipo", "pl"}


def test_registry_resolves_params_and_needs():
    built = build_loss("lire", {"temperature": 1, "sft_weight": 0.02})
    assert built.params["temperature"] == 1 and built.params["reward_transform"] == "softmax"
    assert built.needs_lengths and not build_loss("lire", {}).needs_lengths
    assert not build_loss("ipo", {"length_normalize": False}).needs_lengths
    assert build_loss("ipo", {}).needs_lengths and build_loss("ipo", {}).needs_reference
    s = torch.tensor([[-3.0, -5.0]], dtype=F64)
    r = torch.tensor([[1.0, 0.0]], dtype=F64)
    a, _ = build_loss("lire", {"temperature": 0.5, "reward_transform": "raw"})(s, r)
    b, _ = build_loss("lire", {})(s, r)
    assert a.item() != pytest.approx(b.item())


def test_registry_rejects_unknown_names_params_and_values():
    with pytest.raises(ConfigError, match="unknown loss 'ppo'.*dpo.*lire"):
        build_loss("ppo", {})
    with pytest.raises(ConfigError, match="unknown parameter.*temprature.*allowed: "
                                          "reward_transform, score, sft_target, sft_weight, temperature"):
        build_loss("lire", {"temprature": 2.0})
    with pytest.raises(ConfigError, match="beta"):
        build_loss("dpo", {"beta": -1})
    with pytest.raises(ConfigError, match="pairs"):
        build_loss("ipo", {"pairs": "random"})
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_loss("dpo", {"label_smoothing": 0.5})
    with pytest.raises(ConfigError, match="length_normalize"):
        build_loss("ipo", {"length_normalize": "yes"})
    with pytest.raises(ConfigError, match="mask|ref_logps|unknown parameter"):
        build_loss("dpo", {"ref_logps": None})


def test_reference_losses_require_ref_logps():
    s = torch.tensor([[-3.0, -5.0]], dtype=F64)
    r = torch.tensor([[1.0, 0.0]], dtype=F64)
    for name in ("dpo", "ipo", "pl"):
        with pytest.raises(ConfigError, match="ref_logps"):
            build_loss(name, {})(s, r, lengths=torch.ones(1, 2, dtype=torch.long))
