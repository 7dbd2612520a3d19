"""Smoke tests of the benches (tiny shapes, one iteration): result structure, agreement fields
and the bookkeeping the tables rely on. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import shapes
from bench.loss_vs_k import run_loss_bench
from bench.naive import naive_sequence_logprobs
from bench.overlap import stage_records, summarize_stages
from bench.report import render
from bench.step import (
    TOLERANCES,
    agreement,
    parse_variants,
    run_step_bench,
    within,
)
from lire_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

SHAPE = shapes.BatchShape(prompts=2, candidates=3, prompt_len=6, resp_min=2, resp_max=5, seed=3)
MICRO_QWEN2 = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, desc = shapes.tiny_llama(vocab_size=512, hidden_size=64, num_layers=1, device="cpu")
    return model, desc


def test_naive_logprobs_match_a_per_token_loop(tiny):
    """The baseline itself is right: each candidate alone, unpadded, one position at a time."""
    model, desc = tiny
    groups = shapes.make_groups(SHAPE, desc["vocab_size"])
    with torch.no_grad():
        got = naive_sequence_logprobs(model, groups)
        for b, g in enumerate(groups):
            for k, resp in enumerate(g.response_ids):
                ids = torch.tensor([list(g.prompt_ids) + list(resp)])
                logits = model(input_ids=ids).logits[0].double()
                want = sum(torch.log_softmax(logits[len(g.prompt_ids) - 1 + t], -1)[tok]
                           for t, tok in enumerate(resp))
                assert got[b, k].item() == pytest.approx(want.item(), rel=1e-5)


def test_step_bench_smoke(tiny):
    model, desc = tiny
    groups = shapes.make_groups(SHAPE, desc["vocab_size"])
    result = run_step_bench(model, groups, shapes.make_rewards(SHAPE, "cpu"),
                            variants=parse_variants(["shared_prefix", "padded", "naive"]),
                            device="cpu", iters=1, warmup=0)
    assert list(result["variants"])[0] == "naive"  # the reference runs first
    assert set(result["variants"]) == {"naive", "padded", "shared_prefix"}
    lengths = [len(r) for g in groups for r in g.response_ids]
    cand_tokens = SHAPE.prompts * SHAPE.candidates * SHAPE.prompt_len + sum(lengths)
    assert result["config"]["cand_tokens"] == cand_tokens
    variants = result["variants"]
    assert variants["naive"]["tokens_computed"] == cand_tokens
    assert variants["padded"]["tokens_computed"] == cand_tokens
    assert variants["shared_prefix"]["tokens_computed"] == \
        SHAPE.prompts * SHAPE.prompt_len + sum(lengths)
    tol = TOLERANCES["float32"]
    for name in ("padded", "shared_prefix"):
        agree = variants[name]["agreement"]
        assert agree["loss"] <= tol["loss"] and agree["logps"] <= tol["logps"]
        assert set(agree["grad"]) == set(result["config"]["compared_grads"])
        assert agree["grad_max"] <= tol["grad"]
        assert variants[name]["agreement_ok"]
    for entry in variants.values():
        assert {"median_s", "times_s", "cand_tokens_per_s", "speedup_vs_naive", "memory",
                "loss"} <= set(entry)
        assert len(entry["times_s"]) == 1
        assert entry["cand_tokens_per_s"] == pytest.approx(cand_tokens / entry["median_s"])
        assert {"peak_gib", "delta_gib", "method"} <= set(entry["memory"])
    assert variants["naive"]["speedup_vs_naive"] == pytest.approx(1.0)
    assert result["agreement_ok"]
    json.dumps(result)  # JSON-ready
    doc = {"command": "python jobs/bench.py step", "machine": {"cpu": "x", "cpu_cores": 2},
           "results": {"step": {**result, "model": desc, "shape": SHAPE.as_dict()}}}
    text = render(doc)
    assert "`python jobs/bench.py step`" in text and "naive (TRL-style)" in text
    assert "lire-ray shared_prefix+chunked" in text


def test_agreement_reports_relative_differences():
    f64 = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    ref = {"loss": f64(-0.5), "logps": f64([[-10.0, -20.0]]), "grads": {"w": f64([1.0, -4.0])}}
    got = {"loss": f64(-0.505), "logps": f64([[-10.0, -20.2]]), "grads": {"w": f64([1.2, -4.0])}}
    agree = agreement(ref, got)
    assert agree["loss"] == pytest.approx(0.005 / 0.5)
    assert agree["logps"] == pytest.approx(0.2 / 20.0)
    assert agree["grad"]["w"] == pytest.approx(0.2 / 4.0)
    assert not within(agree, TOLERANCES["float32"])
    assert within(agreement(ref, ref), TOLERANCES["float32"])


def test_naive_variant_must_come_first(tiny):
    model, desc = tiny
    groups = shapes.make_groups(SHAPE, desc["vocab_size"])
    with pytest.raises(ConfigError, match="naive"):
        run_step_bench(model, groups, shapes.make_rewards(SHAPE, "cpu"),
                       variants=parse_variants(["padded"]), device="cpu", iters=1)
    with pytest.raises(ConfigError, match="unknown step variant"):
        parse_variants(["naive", "fused"])


def test_bf16_check_against_float32_step():
    from bench.gpu_check import fp32_reference_check

    model, desc = shapes.qwen2(MICRO_QWEN2, dtype=torch.bfloat16, device="cpu")
    groups = shapes.make_groups(SHAPE, desc["vocab_size"])
    out = fp32_reference_check(model, groups, shapes.make_rewards(SHAPE, "cpu"),
                               parse_variants(["naive", "shared_prefix"]), chunk_size=4)
    assert set(out["errors"]) == {"naive", "shared_prefix"}
    assert out["no_worse_than_naive"] == {"shared_prefix": True} and out["ok"]
    # bf16 really differs from float32: a zero error would mean the copy was not upcast.
    assert 0 < out["errors"]["naive"]["logps"] < 1e-2


def test_gpu_check_imports_no_cluster_stack():
    """The GPU machine has torch and transformers but no ray, vLLM, deepspeed or pydantic."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench.gpu_check; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'vllm', 'deepspeed', 'pydantic'}); print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_loss_bench_smoke():
    result = run_loss_bench(ks=[2, 5], losses=["lire", "pl"], batch=3, iters=1, reps=1)
    assert [r["k"] for r in result["rows"]] == [2, 5]
    for row in result["rows"]:
        assert row["lire_ms"] > 0 and row["pl_ms"] > 0
        assert row["pl_over_lire"] == pytest.approx(row["pl_ms"] / row["lire_ms"])
    with pytest.raises(ConfigError):
        run_loss_bench(ks=[1], iters=1, reps=1)


def test_sampler_bench_skips_missing_vllm(tmp_path, monkeypatch):
    from bench.sampler import run_sampler_bench
    from lire_ray.demo.tiny_models import build_tiny_policy

    path = build_tiny_policy(tmp_path / "policy", hidden_size=64, num_layers=1, num_heads=1)
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    result = run_sampler_bench(str(path), backends=["vllm", "hf"], prompts=2, k=2,
                               max_new_tokens=4, iters=1)
    assert "cannot be imported" in result["backends"]["vllm"]["skipped"]
    hf = result["backends"]["hf"]
    assert 0 < hf["tokens"][0] <= 2 * 2 * 4
    assert hf["tokens_per_s"] == pytest.approx(hf["tokens"][0] / hf["times_s"][0])


def test_overlap_reads_stage_metrics(tmp_path):
    records = [{"event": "evolve_step", "step": 1, "sample_s": 10.0, "train_s": 8.0,
                "overlap_s": 6.0},
               {"event": "train_step", "loss": 0.1},
               {"event": "evolve_step", "step": 2, "sample_s": 4.0, "train_s": 5.0,
                "overlap_s": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    stages = stage_records(tmp_path)
    assert [s["step"] for s in stages] == [1, 2]
    total = summarize_stages(stages)
    assert total["busy_s"] == pytest.approx((10 + 8 - 6) + (4 + 5 - 0))
    assert total["steps"] == 2


def _bench_job():
    spec = importlib.util.spec_from_file_location("bench_job", ROOT / "jobs" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_step_writes_json(tmp_path, capsys):
    job = _bench_job()
    out = tmp_path / "bench.json"
    status = job.main(["step", "--tiny-vocab", "512", "--tiny-hidden", "64", "--tiny-layers",
                       "1", "--prompts", "2", "--candidates", "2", "--prompt-len", "5",
                       "--resp-min", "2", "--resp-max", "3", "--iters", "1", "--warmup", "0",
                       "--out", str(out), "--markdown"])
    assert status == 0
    doc = json.loads(out.read_text())
    assert {"command", "machine", "results"} <= set(doc)
    assert doc["machine"]["cpu_cores"] >= 1 and doc["command"].startswith("python jobs/bench.py")
    step = doc["results"]["step"]
    assert step["agreement_ok"] and step["model"]["name"] == "tiny-llama"
    assert "| variant | cand tokens/s |" in capsys.readouterr().out
    assert job.main(["render", str(out)]) == 0
    assert "lire-ray padded+chunked" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown step variant"):
        job.main(["step", "--variants", "naive,fused"])
