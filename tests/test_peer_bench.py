"""The peer bench's agreement part: TRL's DPOTrainer is the oracle for lire-ray's DPO run.

Both trainers run as their users run them (``bench/peer_trl.py``, ``jobs/train.py``) on the
tiny policy, the same 8 chit-chat pairs in the same order and the same hyperparameters; the
per-step DPO losses must agree and both curves start at ln 2 (policy = reference before the
first update). Not a timing test: the times and memory it records are not checked.
"""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    from bench.peer import run_peer_bench

    work = tmp_path_factory.mktemp("peer")
    return run_peer_bench(policy="tiny", k=2, prompts=8, work_dir=str(work)), work


def test_trl_and_lire_ray_dpo_agree_step_by_step(peer):
    result, _ = peer
    trl, lire = result["trl"]["losses"], result["lire"]["dpo"]["losses"]
    assert len(trl) == len(lire) == 2  # 8 pairs, 4 a step
    assert trl[0] == pytest.approx(math.log(2), abs=1e-6)
    assert lire[0] == pytest.approx(math.log(2), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(trl, lire, strict=True)) < 1e-5
    assert result["agreement"]["max_loss_diff"] < 1e-5
    # The second step's loss moved: the first update was a real one (lr > 0 at step 1).
    assert abs(trl[1] - math.log(2)) > 1e-4
    w = result["lire"]["dpo"]["weights_vs_trl"]
    assert w["max_update"] > 0 and w["max_abs_diff"] < 0.05 * w["max_update"]


def test_render_names_both_trainers(peer):
    from bench.report import render

    result, _ = peer
    text = render({"command": "python jobs/bench.py peer --quick", "machine": {},
                   "results": {"peer": json.loads(json.dumps(result))}})
    assert "TRL DPOTrainer (8 pairs)" in text and "lire-ray dpo" in text
