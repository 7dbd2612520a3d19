"""LIRE gradient health without Ray: the step records carry the one-hot share and eq. 7
weights, the run warns once when most prompts have a one-hot Q (and not on a healthy batch),
and the run and comparison reports state them.

Shape notation: B prompts, K candidates per prompt.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from lire_ray.batch import TokenizedGroup
from lire_ray.losses import build_loss
from lire_ray.metrics import grad_health
from lire_ray.metrics.grad_health import GradHealthWatch, merge, summarize
from lire_ray.training.step import StepStats, micro_batch_loss
from lire_ray.training.worker import reduce_step

WARN_LOGGER = "lire_ray.metrics.grad_health"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_causal_lm

    path = build_tiny_policy(tmp_path_factory.mktemp("models") / "policy", seed=0)
    return load_causal_lm(path, dtype="float32").eval()


def _group(pid: str, responses, rewards) -> TokenizedGroup:
    return TokenizedGroup(prompt_id=pid, prompt_ids=(11, 12, 13),
                          response_ids=tuple(tuple(r) for r in responses),
                          rewards=tuple(rewards))


def _one_hot_batch() -> list[TokenizedGroup]:
    """Each prompt: a 1-token answer against a 60-token one. Their summed log-probs differ by
    about 60 x log(vocab) nats, so Q = softmax(s / 2) puts all its mass on the short one."""
    return [_group(f"h{i}", [(20 + i,), tuple(30 + (7 * t + i) % 400 for t in range(60))],
                   (0.0, 1.0)) for i in range(4)]


def _healthy_batch() -> list[TokenizedGroup]:
    """Each prompt: two answers that share every token: Q = (1/2, 1/2) exactly."""
    return [_group(f"g{i}", [(40 + i, 41, 42), (40 + i, 41, 42)], (1.0, 0.0)) for i in range(4)]


def _step_records(model, batch, params, steps=3) -> list[dict]:
    """The records of ``steps`` optimizer steps on ``batch`` as a worker reduces them: the
    micro-batch's loss metrics through StepStats and reduce_step (the model is not updated)."""
    loss = build_loss("lire", params)
    out = []
    for step in range(1, steps + 1):
        with torch.no_grad():
            mb = micro_batch_loss(model, batch, loss, packing="shared_prefix", chunk_size=64)
        stats = StepStats(loss=float(mb.loss_sum) / mb.num_prompts, num_prompts=mb.num_prompts,
                          metrics=mb.metrics, seconds=1.0)
        out.append({"step": step, **reduce_step(stats, world_size=1)})
    return out


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == WARN_LOGGER and r.levelno == logging.WARNING]


def test_one_hot_batch_warns_once_naming_temperature_and_score(policy, caplog):
    params = build_loss("lire", {}).params
    records = _step_records(policy, _one_hot_batch(), {})
    assert all(r["onehot_share"] == 1.0 for r in records)
    assert all(0.0 <= r["grad_weight"] < 1e-6 for r in records)
    watch = GradHealthWatch(params, run="policy")
    with caplog.at_level(logging.WARNING, logger=WARN_LOGGER):
        fired = [watch.observe(r) for r in records]
        assert not watch.observe_all(records)   # a second look at the run stays quiet
    assert fired == [True, False, False] and watch.warned_at == 1
    (message,) = _warnings(caplog)
    assert "loss.params.temperature (now 2.0)" in message
    assert "loss.params.score=mean" in message and "(policy)" in message
    assert "100% of prompts" in message


def test_healthy_batch_does_not_warn(policy, caplog):
    records = _step_records(policy, _healthy_batch(), {})
    # Q = (1/2, 1/2), R~ = softmax(1, 0): w = +-(1/2)(R~_j - E_Q R~) / 2, |w| equal per prompt.
    rt = [math.e / (math.e + 1), 1 / (math.e + 1)]
    want = 0.5 * abs(rt[0] - sum(rt) / 2) / 2.0
    for r in records:
        assert r["onehot_share"] == 0.0
        assert r["grad_weight"] == pytest.approx(want, rel=1e-6)
    watch = GradHealthWatch(build_loss("lire", {}).params)
    with caplog.at_level(logging.WARNING, logger=WARN_LOGGER):
        assert not watch.observe_all(records)
    assert _warnings(caplog) == [] and watch.warned_at is None


def test_score_mean_or_a_higher_temperature_unfreezes_the_one_hot_batch(policy):
    summed = _step_records(policy, _one_hot_batch(), {}, steps=1)[0]
    mean = _step_records(policy, _one_hot_batch(), {"score": "mean"}, steps=1)[0]
    hot = _step_records(policy, _one_hot_batch(), {"temperature": 1000.0}, steps=1)[0]
    assert summed["onehot_share"] == 1.0
    assert mean["onehot_share"] < 1.0 and mean["grad_weight"] > 1e3 * summed["grad_weight"]
    assert hot["onehot_share"] == 0.0 and hot["grad_weight"] > summed["grad_weight"]


def test_other_losses_never_warn(policy, caplog):
    records = _step_records(policy, _one_hot_batch(), {}, steps=1)
    for r in records:
        r.pop("onehot_share"), r.pop("grad_weight")
    with caplog.at_level(logging.WARNING, logger=WARN_LOGGER):
        assert not GradHealthWatch({}).observe_all(records)
    assert summarize(records) is None and _warnings(caplog) == []


def test_step_records_reach_the_experiment_log(tmp_path):
    from test_training_unit import _read_events

    from lire_ray.training.loggers import MetricSink

    stats = StepStats(loss=0.1, num_prompts=2, metrics={"onehot_share": 0.5,
                                                        "grad_weight": 0.25})
    sink = MetricSink("tensorboard", log_dir=tmp_path, run_name="t")
    sink.log({"step": 3, **reduce_step(stats, world_size=1)}, step=3)
    sink.close()
    got = {tag: v for tag, _, v in _read_events(tmp_path)}
    assert got["train/onehot_share"] == 0.5 and got["train/grad_weight"] == 0.25


def test_summarize_and_merge_by_hand():
    history = [{"step": 1, "onehot_share": 0.25, "grad_weight": 0.4},
               {"step": 2, "loss": 1.0},                    # no LIRE metrics: skipped
               {"step": 3, "onehot_share": 0.75, "grad_weight": 0.1},
               {"step": 4, "onehot_share": 1.0, "grad_weight": 0.0}]
    s = summarize(history)
    assert s == {"steps": 3, "onehot_share": pytest.approx(2.0 / 3),
                 "onehot_share_first": 0.25, "onehot_share_last": 1.0,
                 "grad_weight": pytest.approx(0.5 / 3), "grad_weight_first": 0.4,
                 "grad_weight_last": 0.0, "onehot_steps": 2}
    t = summarize([{"onehot_share": 0.0, "grad_weight": 0.9}])
    both = merge([s, None, t])
    assert both["steps"] == 4 and both["onehot_steps"] == 2
    assert both["onehot_share"] == pytest.approx(2.0 / 4)
    assert both["grad_weight"] == pytest.approx((0.5 + 0.9) / 4)
    assert (both["onehot_share_first"], both["grad_weight_last"]) == (0.25, 0.9)
    assert merge([None]) is None


def test_run_report_states_gradient_health(tmp_path):
    from lire_ray.config import load_recipe
    from lire_ray.run_report import write_run_report
    from lire_ray.rundir import RunDir

    rundir = RunDir(tmp_path / "run", resume=False)
    rundir.create("{}\n")
    for step, health in ((1, {"steps": 2, "onehot_share": 0.5, "onehot_share_first": 0.0,
                              "onehot_share_last": 1.0, "grad_weight": 2e-3,
                              "grad_weight_first": 4e-3, "grad_weight_last": 1e-9,
                              "onehot_steps": 1}),
                         (2, {"steps": 2, "onehot_share": 1.0, "onehot_share_first": 1.0,
                              "onehot_share_last": 1.0, "grad_weight": 3e-9,
                              "grad_weight_first": 5e-9, "grad_weight_last": 1e-9,
                              "onehot_steps": 2})):
        rundir.append_metrics({"event": "evolve_step", "step": step, "prompts": 4,
                               "candidates": 8, "policy_reward_mean": 0.1, "sample_s": 1.0,
                               "train_s": 1.0, "overlap_s": 0.0, "grad_health": health})
    report = write_run_report(load_recipe(None), rundir, before=None, after=None, wall_s=1.0)
    text = report.read_text()
    assert "## LIRE gradient health" in text
    assert "| 2 | 2 | 1.0000 | 1.0000 | 1.0000 | 3.00e-09 | 5.00e-09 | 1.00e-09 | 2 |" in text
    metrics = json.loads((rundir.root / "metrics.json").read_text())
    assert metrics["grad_health"]["steps"] == 4 and metrics["grad_health"]["onehot_steps"] == 3
    assert metrics["grad_health"]["onehot_share"] == pytest.approx(0.75)
    assert "one-hot share 0.750" in (rundir.root / "summary.txt").read_text()


def test_compare_report_table_aggregates_runs_over_seeds():
    from lire_ray.studies.compare_report import grad_health_table

    def run(label, seed, shares):
        return {"label": label, "seed": seed, "history": [
            {"step": i + 1, "onehot_share": s, "grad_weight": 1e-3 * (1 - s)}
            for i, s in enumerate(shares)]}

    m = {"arms": [{"label": "lire"}, {"label": "dpo"}],
         "runs": [run("lire", 0, [0.2, 0.8]), run("lire", 1, [0.4, 0.4]),
                  {"label": "dpo", "seed": 0, "history": [{"step": 1, "loss": 0.6}]}]}
    text = grad_health_table(m)
    (row,) = [line for line in text.splitlines() if line.startswith("| lire")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # One-hot share: per-run means 0.5 and 0.4: sample std 0.1 / sqrt(2), standard error 0.05,
    # 95% Student-t interval with 1 degree of freedom.
    half = 12.706204736174707 * 0.05
    assert cells[:3] == ["lire", "2", "2"]
    assert cells[3] == f"0.450 ± {half:.3f}"
    assert cells[9] == "1/2"                 # only seed 0 had a step above one half
    assert "| dpo" not in text and grad_health.HEALTH_NOTE in text
    assert grad_health_table({"arms": [{"label": "dpo"}], "runs": m["runs"][2:]}) == ""
