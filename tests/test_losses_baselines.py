"""Tests of the pairwise baselines (DPO, IPO, SLiC-HF) against TRL.

Oracles: TRL's own loss code, called directly: ``DPOTrainer._compute_loss`` for the sigmoid,
IPO and hinge losses, ``CPOTrainer.cpo_loss`` for the label-smoothed sigmoid and the
reference-free hinge; a naive pair enumeration for the K > 2 pair schemes.

Shape notation: B prompts, K candidates, N pairs.
"""

from __future__ import annotations

import collections
import types

import pytest
import torch
from _loss_batches import list_batch

from lire_ray.losses import dpo_loss, ipo_loss, slic_loss

trl = pytest.importorskip("trl")
from trl import DPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# TRL oracles
# ---------------------------------------------------------------------------------------------

def trl_dpo_trainer_loss(loss_type, beta, chosen, rejected, ref_chosen, ref_rejected,
                         len_chosen, len_rejected):
    """Mean loss of TRL's ``DPOTrainer._compute_loss`` over N pairs.

    ``self`` is a namespace with the attributes that method reads, and the "model" hands it
    per-token log-probs built from the summed log-probs under test (spread evenly over each
    response's tokens, zero elsewhere), which is what a real forward pass would return.

    Args:
        chosen, rejected: [N] summed policy log-probs (may require grad).
        ref_chosen, ref_rejected: [N] summed reference log-probs.
        len_chosen, len_rejected: [N] int response token counts.
    """
    n = chosen.shape[0]
    s = torch.cat([chosen, rejected])
    lens = torch.cat([len_chosen, len_rejected])
    width = int(lens.max()) + 1
    pos = torch.arange(width - 1)
    shift_mask = (pos.unsqueeze(0) >= (width - 1 - lens).unsqueeze(1)).to(s.dtype)
    completion_mask = torch.cat([torch.zeros(2 * n, 1, dtype=torch.long), shift_mask.long()], 1)
    per_token = (s / lens.to(s.dtype)).unsqueeze(1) * shift_mask

    def model(**_):
        z = torch.zeros_like(per_token)
        return types.SimpleNamespace(log_probs=per_token, entropy=z, mean_logits=z,
                                     is_top1=torch.zeros_like(per_token, dtype=torch.bool))

    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                                        gather_for_metrics=lambda x: x)
    trainer = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=accelerator,
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=0.0, use_weighting=False, _total_train_tokens=0, _tp_size=1,
        _metrics=collections.defaultdict(lambda: collections.defaultdict(list)))
    inputs = {"input_ids": torch.zeros(2 * n, width, dtype=torch.long),
              "attention_mask": torch.ones(2 * n, width, dtype=torch.long),
              "completion_mask": completion_mask,
              "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    return DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def trl_cpo_losses(loss_type, beta, chosen, rejected, label_smoothing=0.0):
    """Per-pair losses [N] of TRL's ``CPOTrainer.cpo_loss`` (its logits are chosen - rejected)."""
    trainer = types.SimpleNamespace(alpha=0.0, beta=beta, label_smoothing=label_smoothing,
                                    loss_type=loss_type, simpo_gamma=0.0,
                                    accelerator=types.SimpleNamespace(device=chosen.device))
    return CPOTrainer.cpo_loss(trainer, chosen, rejected)[0]


def _random_pairs(seed, n=6):
    gen = torch.Generator().manual_seed(seed)
    s = -torch.rand(n, 2, generator=gen, dtype=F64) * 40
    ref = s.detach() + torch.randn(n, 2, generator=gen, dtype=F64) * 3
    r = torch.randn(n, 2, generator=gen, dtype=F64)
    lengths = torch.randint(1, 30, (n, 2), generator=gen)
    w = r.argmax(1, keepdim=True)
    lo = 1 - w
    return s, ref, r, lengths, w, lo


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# DPO / IPO / SLiC vs TRL (K = 2)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_matches_trl_dpo_trainer(beta):
    s0, ref, r, lengths, w, lo = _random_pairs(1)
    s = _leaf(s0)
    loss, metrics = dpo_loss(s, r, ref_logps=ref, beta=beta)
    loss.mean().backward()
    t = _leaf(s0)
    want = trl_dpo_trainer_loss("sigmoid", beta, t.gather(1, w)[:, 0], t.gather(1, lo)[:, 0],
                                ref.gather(1, w)[:, 0], ref.gather(1, lo)[:, 0],
                                lengths.gather(1, w)[:, 0], lengths.gather(1, lo)[:, 0])
    want.backward()
    torch.testing.assert_close(loss.mean(), want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-14)
    for i in range(s0.shape[0]):  # per-prompt values, one TRL call per pair
        one = trl_dpo_trainer_loss("sigmoid", beta, s0[i, w[i]], s0[i, lo[i]], ref[i, w[i]],
                                   ref[i, lo[i]], lengths[i, w[i]], lengths[i, lo[i]])
        assert loss[i].item() == pytest.approx(one.item(), rel=1e-12)
    h = (s0 - ref).gather(1, w) - (s0 - ref).gather(1, lo)
    assert metrics["accuracy"].item() == pytest.approx((h > 0).double().mean().item())
    assert metrics["margin"].item() == pytest.approx(beta * h.mean().item(), rel=1e-12)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_dpo_label_smoothing_matches_trl_conservative_sigmoid(label_smoothing):
    s0, ref, r, _, w, lo = _random_pairs(2)
    s = _leaf(s0)
    loss, _ = dpo_loss(s, r, ref_logps=ref, beta=0.3, label_smoothing=label_smoothing)
    loss.sum().backward()
    t = _leaf(s0)
    z = t - ref  # cpo_loss takes summed log-probs; feeding log-ratios gives DPO's logits
    want = trl_cpo_losses("sigmoid", 0.3, z.gather(1, w)[:, 0], z.gather(1, lo)[:, 0],
                          label_smoothing)
    want.sum().backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("length_normalize", [True, False])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_matches_trl_dpo_trainer(length_normalize, beta):
    s0, ref, r, lengths, w, lo = _random_pairs(3)
    s = _leaf(s0)
    loss, _ = ipo_loss(s, r, ref_logps=ref, lengths=lengths, beta=beta,
                       length_normalize=length_normalize)
    loss.mean().backward()
    # TRL's ipo always divides by completion length; one-token completions switch that off.
    trl_lens = lengths if length_normalize else torch.ones_like(lengths)
    t = _leaf(s0)
    want = trl_dpo_trainer_loss("ipo", beta, t.gather(1, w)[:, 0], t.gather(1, lo)[:, 0],
                                ref.gather(1, w)[:, 0], ref.gather(1, lo)[:, 0],
                                trl_lens.gather(1, w)[:, 0], trl_lens.gather(1, lo)[:, 0])
    want.backward()
    torch.testing.assert_close(loss.mean(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("delta", [0.5, 1.0, 4.0])
def test_slic_hinge_matches_trl_hinge(delta):
    s0, _, r, lengths, w, lo = _random_pairs(4, n=8)
    s0[:4] = s0[:4] * 0.02  # small gaps so some pairs sit inside the margin
    s = _leaf(s0)
    loss, _ = slic_loss(s, r, delta=delta, reg_weight=0.0)
    loss.mean().backward()
    # max(0, delta - h) = delta * relu(1 - h / delta): TRL's hinge with beta = 1/delta, no ref.
    t = _leaf(s0)
    zeros = torch.zeros(s0.shape[0], dtype=F64)
    want = delta * trl_dpo_trainer_loss("hinge", 1.0 / delta, t.gather(1, w)[:, 0],
                                        t.gather(1, lo)[:, 0], zeros, zeros,
                                        lengths.gather(1, w)[:, 0], lengths.gather(1, lo)[:, 0])
    want.backward()
    torch.testing.assert_close(loss.mean(), want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-14)
    cpo = delta * trl_cpo_losses("hinge", 1.0 / delta, s0.gather(1, w)[:, 0],
                                 s0.gather(1, lo)[:, 0])
    torch.testing.assert_close(loss.detach(), cpo, rtol=1e-12, atol=1e-14)
    assert (loss > 0).any() and (loss == 0).any()


def test_slic_regulariser_is_token_mean_nll_of_best_or_human():
    s = torch.tensor([[-6.0, -2.0, -9.0]], dtype=F64)
    r = torch.tensor([[0.0, 1.0, 3.0]], dtype=F64)
    lengths = torch.tensor([[3, 4, 6]])
    human = torch.tensor([[True, False, False]])
    hinge = sum(max(0.0, 1.0 - (s[0, 2].item() - s[0, j].item())) for j in (0, 1)) / 2
    loss, _ = slic_loss(s, r, lengths=lengths, delta=1.0, reg_weight=0.5)
    assert loss.item() == pytest.approx(hinge + 0.5 * 9.0 / 6.0, rel=1e-12)
    loss_h, _ = slic_loss(s, r, lengths=lengths, human_mask=human, reg_weight=0.5,
                          sft_target="human")
    assert loss_h.item() == pytest.approx(hinge + 0.5 * 6.0 / 3.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Pair construction on K > 2, against a naive enumeration with TRL's per-pair losses
# ---------------------------------------------------------------------------------------------

def _naive_pairs(r: list[float], scheme: str) -> list[tuple[int, int]]:
    n = len(r)
    if n == 0:
        return []
    best = max(range(n), key=lambda j: (r[j], -j))
    worst = min(range(n), key=lambda j: (r[j], j))
    if scheme == "all_ranked":
        cand = [(i, j) for i in range(n) for j in range(n)]
    elif scheme == "best_vs_rest":
        cand = [(best, j) for j in range(n)]
    else:
        cand = [(best, worst)]
    return [(i, j) for i, j in cand if r[i] > r[j]]


@pytest.mark.parametrize("scheme", ["best_vs_rest", "best_vs_worst", "all_ranked"])
@pytest.mark.parametrize("name", ["dpo", "ipo", "slic"])
def test_pair_schemes_match_naive_enumeration(scheme, name):
    s0, ref, r, mask, lengths = list_batch(5)
    fns = {"dpo": (dpo_loss, {"beta": 0.2}), "ipo": (ipo_loss, {"beta": 0.2}),
           "slic": (slic_loss, {"delta": 1.0, "reg_weight": 0.0})}
    fn, params = fns[name]
    s = _leaf(s0)
    loss, _ = fn(s, r, mask=mask, ref_logps=ref, lengths=lengths, pairs=scheme, **params)
    loss.sum().backward()
    t = _leaf(s0)
    want = []
    for b in range(s0.shape[0]):
        idx = [j for j in range(s0.shape[1]) if mask[b, j]]
        pairs = _naive_pairs([r[b, j].item() for j in idx], scheme)
        if not pairs:
            want.append(torch.zeros((), dtype=F64))
            continue
        ci = torch.tensor([idx[i] for i, _ in pairs])
        li = torch.tensor([idx[j] for _, j in pairs])
        if name == "dpo":
            z = t[b] - ref[b]
            per = trl_cpo_losses("sigmoid", 0.2, z[ci], z[li])
        elif name == "ipo":
            z = (t[b] - ref[b]) / lengths[b].to(F64)
            per = trl_cpo_losses("ipo", 0.2, z[ci], z[li])
        else:
            per = trl_cpo_losses("hinge", 1.0, t[b, ci], t[b, li])
        want.append(per.mean())
    want = torch.stack(want)
    want.sum().backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.grad, t.grad, rtol=1e-10, atol=1e-12)
    assert loss[1].item() == 0.0 and loss[3].item() == 0.0
