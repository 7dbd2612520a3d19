"""Experiment tracking without Ray: one experiment per run directory, continued on resume."""

from __future__ import annotations

import json
import struct

import pytest

from lire_ray.training.loggers import TRACKING_FILE, ForwardingSink, MetricSink, scalars


def _tensorboard(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    # TensorBoard orders each tag's points by step, whichever event file holds them.
    return {tag: sorted(points) for tag, points in out.items()}


def test_tensorboard_logs_prefixed_scalars_on_one_step_axis(tmp_path):
    sink = MetricSink("tensorboard", log_dir=tmp_path / "tb", run_name="r", state_dir=tmp_path)
    sink.log({"loss": 0.5, "note": "text", "flag": True, "nan": float("nan")}, 1)
    sink.log({"policy_reward_mean": 0.25}, 8, "evolve")
    sink.close()
    again = MetricSink("tensorboard", log_dir=tmp_path / "tb", run_name="r", state_dir=tmp_path)
    again.log({"loss": 0.25}, 9)
    again.close()
    got = _tensorboard(tmp_path / "tb")
    assert got == {"train/loss": [(1, 0.5), (9, 0.25)], "evolve/policy_reward_mean": [(8, 0.25)]}
    assert json.loads((tmp_path / TRACKING_FILE).read_text())["kind"] == "tensorboard"


def test_wandb_offline_resume_continues_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = MetricSink("wandb", log_dir=tmp_path / "w", run_name="demo", project="p",
                       tags=["t1"], state_dir=tmp_path, config={"a": 1})
    first.log({"loss": 1.0}, 1)
    first.close()
    run_id = json.loads((tmp_path / TRACKING_FILE).read_text())["id"]
    second = MetricSink("wandb", log_dir=tmp_path / "w", run_name="demo", project="p",
                        state_dir=tmp_path)
    second.log({"loss": 0.5}, 2)
    second.close()
    assert json.loads((tmp_path / TRACKING_FILE).read_text())["id"] == run_id
    runs = sorted((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(run_id) for r in runs), runs


def test_forwarding_sink_sends_finite_scalars():
    got = []
    ForwardingSink(lambda *a: got.append(a)).log({"loss": 1.0, "x": "s", "n": float("inf")}, 3)
    assert got == [({"loss": 1.0}, 3, "train")]
    assert scalars({"a": 1, "b": False}) == {"a": 1.0}
