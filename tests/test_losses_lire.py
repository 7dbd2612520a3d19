"""Tests of the LIRE loss (paper eq. 5-7, 9, sec. 4.6, appendix A.4) against independent
references: hand computation with ``math``, the closed-form gradients, and the paper's code.

Shape notation: B prompts, K candidates, L tokens.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lire_ray.errors import ConfigError, DataError
from lire_ray.losses import lire_loss, transform_rewards

F64 = torch.float64
TRANSFORMS = ("softmax", "raw", "zscore", "rank")


def _t(rows, dtype=F64):
    return torch.tensor(rows, dtype=dtype)


def _ref_transform(r: list[float], kind: str) -> list[float]:
    """Reward transform for one prompt's real candidates, written with Python floats."""
    n = len(r)
    if kind == "raw":
        return list(r)
    if kind == "softmax":
        m = max(r)
        e = [math.exp(x - m) for x in r]
        return [x / sum(e) for x in e]
    if kind == "zscore":
        if n < 2 or max(r) == min(r):
            return [0.0] * n
        mu, sd = statistics.fmean(r), statistics.pstdev(r)
        return [(x - mu) / sd for x in r]
    if kind == "rank":
        if n < 2:
            return [0.0] * n
        out = []
        for x in r:
            below = sum(1 for y in r if y < x)
            ties = sum(1 for y in r if y == x)
            out.append((below + (ties - 1) / 2) / (n - 1))
        return out
    raise AssertionError(kind)


def _ref_q(s: list[float], temperature: float) -> list[float]:
    m = max(s)
    e = [math.exp((x - m) / temperature) for x in s]
    return [x / sum(e) for x in e]


def _grad(loss_fn, s: torch.Tensor, **kw):
    s = s.detach().clone().requires_grad_(True)
    loss, metrics = loss_fn(s, **kw)
    loss.sum().backward()
    return loss.detach(), s.grad, metrics


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

def test_small_case_matches_hand_computation():
    s = [[-3.0, -5.0, -4.0], [-1.0, -2.0, 0.0]]
    r = [[1.0, 0.0, 2.0], [0.5, 1.5, 0.0]]
    mask = torch.tensor([[True, True, True], [True, True, False]])
    lengths = torch.tensor([[4, 6, 5], [2, 3, 1]])

    # Row 0, T = 2: Q = softmax(s / 2), R~ = softmax(R).
    e = [math.exp(-1.5), math.exp(-2.5), math.exp(-2.0)]
    q0 = [x / sum(e) for x in e]
    w = [math.exp(1.0), math.exp(0.0), math.exp(2.0)]
    rt0 = [x / sum(w) for x in w]
    want0 = -sum(a * b for a, b in zip(q0, rt0, strict=True))
    # Row 1 has two real candidates only.
    e1 = [math.exp(-0.5), math.exp(-1.0)]
    q1 = [x / sum(e1) for x in e1]
    w1 = [math.exp(0.5), math.exp(1.5)]
    rt1 = [x / sum(w1) for x in w1]
    want1 = -sum(a * b for a, b in zip(q1, rt1, strict=True))

    loss, _ = lire_loss(_t(s), _t(r), mask=mask, temperature=2.0)
    assert loss.tolist() == pytest.approx([want0, want1], rel=1e-12)

    raw, _ = lire_loss(_t(s), _t(r), mask=mask, temperature=2.0, reward_transform="raw")
    want_raw = [-(q0[0] * 1.0 + q0[1] * 0.0 + q0[2] * 2.0), -(q1[0] * 0.5 + q1[1] * 1.5)]
    assert raw.tolist() == pytest.approx(want_raw, rel=1e-12)

    # SFT term (sec. 4.6): best of row 0 is candidate 2 (s=-4, 5 tokens), of row 1 candidate 1.
    sft, metrics = lire_loss(_t(s), _t(r), mask=mask, temperature=2.0, sft_weight=0.1,
                             lengths=lengths)
    assert sft.tolist() == pytest.approx([want0 + 0.1 * 4.0 / 5.0, want1 + 0.1 * 2.0 / 3.0],
                                         rel=1e-12)
    assert metrics["sft"].item() == pytest.approx((4.0 / 5.0 + 2.0 / 3.0) / 2, rel=1e-12)


def test_sft_target_human_uses_the_human_candidate():
    s, r = _t([[-3.0, -5.0, -4.0]]), _t([[1.0, 0.0, 2.0]])
    human = torch.tensor([[False, True, False]])
    lengths = torch.tensor([[4, 10, 5]])
    base, _ = lire_loss(s, r)
    loss, _ = lire_loss(s, r, sft_weight=0.5, sft_target="human", lengths=lengths,
                        human_mask=human)
    assert loss.item() == pytest.approx(base.item() + 0.5 * 5.0 / 10.0, rel=1e-12)


def test_sft_target_human_without_human_candidate_is_an_error():
    s, r = _t([[-3.0, -5.0], [-1.0, -2.0]]), _t([[1.0, 0.0], [0.0, 1.0]])
    human = torch.tensor([[True, False], [False, False]])
    with pytest.raises(DataError, match=r"rows \[1\]"):
        lire_loss(s, r, sft_weight=0.1, sft_target="human", lengths=torch.ones(2, 2),
                  human_mask=human)
    with pytest.raises(ConfigError, match="human_mask"):
        lire_loss(s, r, sft_weight=0.1, sft_target="human", lengths=torch.ones(2, 2))


def test_reward_transforms_by_hand():
    r = _t([[1.0, 2.0, 3.0, 9.0], [3.0, 1.0, 3.0, 2.0], [0.1, 0.1, 0.1, 5.0]])
    mask = torch.tensor([[True, True, True, False], [True] * 4, [True, True, True, False]])
    z = transform_rewards(r, mask, "zscore")
    sd = math.sqrt(2.0 / 3.0)
    assert z[0].tolist() == pytest.approx([-1 / sd, 0.0, 1 / sd, 0.0], rel=1e-12)
    # Equal rewards give exactly zero (no one-ulp noise blown up to +-1).
    assert z[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    rank = transform_rewards(r, mask, "rank")
    assert rank[1].tolist() == pytest.approx([2.5 / 3, 0.0, 2.5 / 3, 1.0 / 3], rel=1e-12)
    assert rank[0].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0], rel=1e-12)
    sm = transform_rewards(r, mask, "softmax")
    assert sm[0, :3].tolist() == pytest.approx(_ref_transform([1.0, 2.0, 3.0], "softmax"))
    assert sm[0, 3].item() == 0.0


def test_metrics_accuracy_entropy_q_best():
    s = _t([[-1.0, -3.0], [-4.0, -2.0], [-1.0, 0.0]])
    r = _t([[2.0, 1.0], [2.0, 1.0], [5.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    _, m = lire_loss(s, r, mask=mask, temperature=1.0)
    # Row 0 agrees, row 1 disagrees, row 2 has a single candidate and is not counted.
    assert m["accuracy"].item() == pytest.approx(0.5)
    q0, q1 = _ref_q([-1.0, -3.0], 1.0), _ref_q([-4.0, -2.0], 1.0)
    ent = [-sum(x * math.log(x) for x in q) for q in (q0, q1)]
    assert m["entropy"].item() == pytest.approx(sum(ent) / 2, rel=1e-12)
    assert m["q_best"].item() == pytest.approx((q0[0] + q1[0]) / 2, rel=1e-12)
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())


# ---------------------------------------------------------------------------------------------
# Gradients (eq. 7 and eq. 9)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.7])
def test_gradient_equals_eq7(transform, temperature):
    gen = torch.Generator().manual_seed(100 * TRANSFORMS.index(transform) + int(10 * temperature))
    b, k = 6, 5
    s = -torch.rand(b, k, generator=gen, dtype=F64) * 30
    r = torch.randn(b, k, generator=gen, dtype=F64) * 2
    r[0, 1] = r[0, 3]  # a tie, for the rank transform
    mask = torch.rand(b, k, generator=gen) > 0.25
    mask[:, 0] = True
    mask[1] = torch.tensor([True, True, False, False, False])
    loss, grad, _ = _grad(lire_loss, s, rewards=r, mask=mask, temperature=temperature,
                          reward_transform=transform)
    for i in range(b):
        idx = [j for j in range(k) if mask[i, j]]
        si, ri = [s[i, j].item() for j in idx], [r[i, j].item() for j in idx]
        q, rt = _ref_q(si, temperature), _ref_transform(ri, transform)
        expected_value = sum(a * c for a, c in zip(q, rt, strict=True))
        assert loss[i].item() == pytest.approx(-expected_value, rel=1e-10, abs=1e-12)
        want = [-(1 / temperature) * q[n] * (rt[n] - expected_value) for n in range(len(idx))]
        got = [grad[i, j].item() for j in idx]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-14)
        assert all(grad[i, j].item() == 0.0 for j in range(k) if not mask[i, j])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_pairwise_gradient_equals_eq9(temperature):
    gen = torch.Generator().manual_seed(7)
    s = -torch.rand(8, 2, generator=gen, dtype=F64) * 10
    r = torch.randn(8, 2, generator=gen, dtype=F64)
    _, grad, _ = _grad(lire_loss, s, rewards=r, temperature=temperature, reward_transform="raw")
    for i in range(8):
        p1 = math.exp(s[i, 0].item()) ** (1 / temperature)
        p2 = math.exp(s[i, 1].item()) ** (1 / temperature)
        p_tilde = p1 * p2 / (p1 + p2) ** 2 * (r[i, 0].item() - r[i, 1].item())
        # eq. 9: grad J = -(1/T) [P~ grad log pi(y1) - P~ grad log pi(y2)]
        assert grad[i, 0].item() == pytest.approx(-p_tilde / temperature, rel=1e-9, abs=1e-15)
        assert grad[i, 1].item() == pytest.approx(p_tilde / temperature, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_single_candidate_gives_exactly_zero_gradient(transform):
    s = _t([[-12.3], [-0.7], [-400.0]])
    r = _t([[1.5], [-2.0], [30.0]])
    _, grad, _ = _grad(lire_loss, s, rewards=r, reward_transform=transform)
    assert torch.equal(grad, torch.zeros_like(grad))
    # One real candidate among padded slots.
    s2 = _t([[-3.0, -1.0, -2.0]])
    mask = torch.tensor([[False, True, False]])
    _, grad2, _ = _grad(lire_loss, s2, rewards=_t([[9.0, 1.0, -9.0]]), mask=mask,
                        reward_transform=transform)
    assert torch.equal(grad2, torch.zeros_like(grad2))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("k", [2, 3, 5, 7, 8])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_identical_candidates_give_exactly_zero_gradient(transform, k, dtype):
    s = torch.full((3, k), -17.31, dtype=dtype)
    s[1] = -0.1
    r = torch.full((3, k), 0.1, dtype=dtype)
    r[2] = -3.3
    _, grad, _ = _grad(lire_loss, s, rewards=r, reward_transform=transform, temperature=1.3)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_masked_candidates_equal_physically_removed(transform):
    gen = torch.Generator().manual_seed(11)
    b, k = 7, 6
    s = -torch.rand(b, k, generator=gen, dtype=F64) * 20
    r = torch.randn(b, k, generator=gen, dtype=F64)
    mask = torch.rand(b, k, generator=gen) > 0.4
    mask[0] = False                      # no real candidate at all
    mask[1] = False
    mask[1, 3] = True                    # a single one
    mask[2] = True                       # all real
    # Padded slots hold garbage that must not leak into anything.
    s_bad = torch.where(mask, s, torch.tensor(float("nan"), dtype=F64))
    r_bad = torch.where(mask, r, torch.tensor(float("inf"), dtype=F64))
    loss, grad, _ = _grad(lire_loss, s_bad, rewards=r_bad, mask=mask, reward_transform=transform)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[0].item() == 0.0
    for i in range(b):
        keep = mask[i]
        assert torch.equal(grad[i, ~keep], torch.zeros_like(grad[i, ~keep]))
        if not keep.any():
            continue
        li, gi, _ = _grad(lire_loss, s[i, keep].unsqueeze(0), rewards=r[i, keep].unsqueeze(0),
                          reward_transform=transform)
        torch.testing.assert_close(loss[i], li[0], rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(grad[i, keep], gi[0], rtol=1e-12, atol=1e-15)


def test_larger_temperature_flattens_q():
    s = _t([[-3.0, -9.0, -4.5, -20.0]])
    r = _t([[1.0, 0.0, 2.0, 0.5]])
    entropies = []
    for temperature in (0.25, 0.5, 1.0, 2.0, 4.0, 16.0, 256.0):
        _, m = lire_loss(s, r, temperature=temperature)
        q = _ref_q(s[0].tolist(), temperature)
        want = -sum(x * math.log(x) for x in q if x > 0)
        assert m["entropy"].item() == pytest.approx(want, rel=1e-9, abs=1e-12)
        entropies.append(m["entropy"].item())
    assert all(a < b for a, b in zip(entropies[:-1], entropies[1:], strict=True))
    assert entropies[-1] == pytest.approx(math.log(4), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# The paper's own code (appendix A.4)
# ---------------------------------------------------------------------------------------------

def _paper_a4_lire_loss(masked_logits, rw_scores):
    """Appendix A.4 of the paper, re-typed (``self`` dropped); T is fixed to 2 there."""
    t = 2
    cand = rw_scores.shape[1]
    bz = rw_scores.shape[0]
    logit_batch = torch.reshape(masked_logits, (-1, cand, masked_logits.shape[-1]))
    summed_logit = logit_batch.sum(-1)
    Q = (summed_logit / t).softmax(dim=-1)
    J = torch.mul(Q, rw_scores)
    loss = -J.sum() / bz
    return loss


@pytest.mark.parametrize("transform", ["raw", "softmax"])
def test_matches_paper_appendix_code(transform):
    gen = torch.Generator().manual_seed(3)
    b, k, length = 4, 3, 9
    token_logps = -torch.rand(b * k, length, generator=gen, dtype=F64) * 2
    pad = torch.rand(b * k, length, generator=gen) > 0.7          # padding tokens are zeroed
    token_logps = torch.where(pad, torch.zeros((), dtype=F64), token_logps)
    rewards = torch.randn(b, k, generator=gen, dtype=F64) * 3

    a = token_logps.clone().requires_grad_(True)
    paper_rewards = rewards if transform == "raw" else torch.softmax(rewards, dim=-1)
    want = _paper_a4_lire_loss(a, paper_rewards)
    want.backward()

    c = token_logps.clone().requires_grad_(True)
    loss, _ = lire_loss(c.reshape(b, k, length).sum(-1), rewards, temperature=2.0,
                        reward_transform=transform)
    loss.mean().backward()
    torch.testing.assert_close(loss.mean(), want, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(c.grad, a.grad, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {"temperature": 0.0}, {"temperature": -1.0}, {"temperature": float("nan")},
    {"temperature": float("inf")}, {"temperature": "2"}, {"temperature": True},
    {"reward_transform": "exp"}, {"sft_weight": -0.1}, {"sft_target": "gold"},
])
def test_invalid_parameters_raise_config_error(params):
    with pytest.raises(ConfigError, match="lire"):
        lire_loss(_t([[-1.0, -2.0]]), _t([[0.0, 1.0]]), **params)


def test_invalid_inputs_raise():
    s, r = _t([[-1.0, -2.0]]), _t([[0.0, 1.0]])
    with pytest.raises(ConfigError, match="lengths"):
        lire_loss(s, r, sft_weight=0.1)
    with pytest.raises(DataError, match="rewards"):
        lire_loss(s, _t([[0.0, 1.0, 2.0]]))
    with pytest.raises(DataError, match="mask"):
        lire_loss(s, r, mask=torch.ones(1, 2))
    with pytest.raises(DataError, match="rewards"):
        lire_loss(s, _t([[0.0, float("nan")]]))
    with pytest.raises(DataError, match="policy_logps"):
        lire_loss(torch.tensor([[1, 2]]), r)


# ---------------------------------------------------------------------------------------------
# score: sum | mean, and the gradient-health metrics (one-hot share, eq. 7 weights)
# ---------------------------------------------------------------------------------------------

def test_score_mean_matches_hand_computation_with_eq7_gradients():
    # Row 0: three real candidates of 4, 10 and 2 tokens. Row 1: a zero-length real candidate
    # (summed log-prob 0, scored 0 / max(0, 1) = 0) and a padded slot holding garbage.
    s = [[-8.0, -30.0, -3.0], [0.0, -6.0, 123.0]]
    r = [[1.0, 3.0, 0.0], [0.5, 2.0, -7.0]]
    lengths = torch.tensor([[4, 10, 2], [0, 3, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    temperature = 0.5
    rows = [([-8.0 / 4, -30.0 / 10, -3.0 / 2], [1.0, 3.0, 0.0]), ([0.0, -6.0 / 3], [0.5, 2.0])]
    want_loss, want_grad, want_weight = [], [], []
    for scores, rewards in rows:
        e = [math.exp(x / temperature) for x in scores]
        q = [x / sum(e) for x in e]
        er = [math.exp(x) for x in rewards]
        rt = [x / sum(er) for x in er]
        ex = sum(a * b for a, b in zip(q, rt, strict=True))
        want_loss.append(-ex)
        w = [qj * (rj - ex) / temperature for qj, rj in zip(q, rt, strict=True)]
        want_weight.append(sum(abs(x) for x in w) / len(w))
        # eq. 7 on the score s_j / len_j: d loss / d logp_j = -w_j / max(len_j, 1).
        want_grad.append(w)
    loss, grad, m = _grad(lire_loss, _t(s), rewards=_t(r), mask=mask, lengths=lengths,
                          temperature=temperature, score="mean")
    assert loss.tolist() == pytest.approx(want_loss, rel=1e-12)
    lens = [[4, 10, 2], [1, 3]]
    for i in range(2):
        got = [grad[i, j].item() for j in range(len(lens[i]))]
        assert got == pytest.approx([-w / n for w, n in zip(want_grad[i], lens[i], strict=True)],
                                    rel=1e-10)
    assert grad[1, 2].item() == 0.0 and torch.isfinite(grad).all()
    assert m["grad_weight"].item() == pytest.approx(sum(want_weight) / 2, rel=1e-12)
    # score=sum is the paper's arithmetic: the same call without "mean" ignores the lengths.
    summed, _ = lire_loss(_t(s), _t(r), mask=mask, lengths=lengths, temperature=temperature)
    plain, _ = lire_loss(_t(s), _t(r), mask=mask, temperature=temperature)
    assert torch.equal(summed, plain)
    assert not torch.allclose(summed, loss)


def test_score_mean_needs_lengths_and_the_registry_asks_for_them():
    from lire_ray.losses import build_loss

    with pytest.raises(ConfigError, match="lengths"):
        lire_loss(_t([[-1.0, -2.0]]), _t([[0.0, 1.0]]), score="mean")
    with pytest.raises(ConfigError, match="score"):
        lire_loss(_t([[-1.0, -2.0]]), _t([[0.0, 1.0]]), score="max")
    assert build_loss("lire", {"score": "mean"}).needs_lengths
    assert not build_loss("lire", {"score": "sum"}).needs_lengths


def test_onehot_share_and_grad_weight_by_hand():
    # Row 0: summed log-probs 40 nats apart at T = 2 -> max Q = 1 / (1 + e^-20): one-hot.
    # Row 1: 1 nat apart -> max Q = 1 / (1 + e^-0.5) = 0.62: not one-hot.
    # Row 2: one real candidate: counted in neither metric.
    s = _t([[-10.0, -50.0], [-3.0, -4.0], [-5.0, -1.0]])
    r = _t([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    _, m = lire_loss(s, r, mask=mask, temperature=2.0, reward_transform="raw")
    assert m["onehot_share"].item() == pytest.approx(0.5, abs=0.0)
    weights = []
    for si, ri in (([-10.0, -50.0], [0.0, 1.0]), ([-3.0, -4.0], [2.0, 0.0])):
        q = _ref_q(si, 2.0)
        ex = sum(a * b for a, b in zip(q, ri, strict=True))
        weights.append(sum(abs(qj * (rj - ex) / 2.0) for qj, rj in zip(q, ri, strict=True)) / 2)
    assert weights[0] < 1e-8 < weights[1]
    assert m["grad_weight"].item() == pytest.approx(sum(weights) / 2, rel=1e-12)
    # The same weights are what autograd gives: |d loss / d s_j| averaged per prompt.
    _, grad, _ = _grad(lire_loss, s, rewards=r, mask=mask, temperature=2.0,
                       reward_transform="raw")
    assert ((grad[0].abs().sum() / 2 + grad[1].abs().sum() / 2) / 2).item() == \
        pytest.approx(m["grad_weight"].item(), rel=1e-12)
    # A higher temperature flattens Q: the 40-nat row is no longer one-hot at T = 20.
    _, flat = lire_loss(s, r, mask=mask, temperature=20.0, reward_transform="raw")
    assert flat["onehot_share"].item() == 0.0
