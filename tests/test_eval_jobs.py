"""``jobs/compare.py`` and ``jobs/evaluate.py`` end to end (real Ray, vLLM-CPU, DeepSpeed).

Each job runs as a subprocess that starts its own local Ray cluster. The comparison trains two
losses on one small pool; the evaluation then scores one of the trained checkpoints against the
base policy, whose KL to itself (the reference is the base policy) must vanish.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.demo.tiny_policy import ensure_tiny_policy
from lire_ray.pool import verify_pool

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(job: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / job), *args], env=job_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _check_pngs(out, report_text: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_text)
    assert links, "the report links no plot"
    for link in links:
        data = (out / link).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 0, link
        assert mpimg.imread(out / link).ndim == 3, link
    return links


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def cache(tiny_cache):
    path = tiny_cache
    ensure_tiny_policy(path)
    return path


@pytest.fixture(scope="module")
def compare_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    proc = _run("compare.py", "--config", "configs/tiny-compare.yaml", "--losses", "lire", "dpo",
                "--seeds", "0", f"run.cache_dir={cache}", f"run.dir={out.parent}",
                f"output={out}",
                "data.max_prompts=16", "data.eval_prompts=8", "eval.temperatures=[0.0, 1.0]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_compare_two_losses_one_seed(compare_run):
    out = compare_run
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    table = report.split("## Methods (paper Table 2)")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"base policy (no training)", "lire", "dpo"}, rows
    assert set(metrics["table"]) == {"base", "lire", "dpo"}
    for method in ("lire", "dpo"):
        cells = metrics["table"][method]
        assert cells["avg_win_rate"]["n"] == 1 and 0.0 <= cells["avg_win_rate"]["mean"] <= 1.0
        # One seed: the table shows the value, without an interval.
        assert f"{cells['reward/vader']['mean']:.4f}" in rows[method]
        assert "±" not in rows[method]
    # One pool of 16 prompts, each with K = 4 candidates and reference log-probs, for both.
    manifest = verify_pool(out / "pool")
    assert manifest["num_rows"] == 16 and manifest["num_candidates"] == 64
    # The report describes that pool, not the prompt rows it was sampled from.
    assert metrics["setup"]["pool"]["k_rows"] == {"4": 16}
    assert sorted(r["loss"] for r in metrics["runs"]) == ["dpo", "lire"]
    for run in metrics["runs"]:
        assert (out / "checkpoints" / f"{run['loss']}-s0" / "COMPLETE").is_file()
        assert _finite(run["final_loss"]) and _finite(run["kl"]["value"])
        assert all(0.0 <= v <= 1.0 for v in run["table"]["win_rate"].values())
    links = _check_pngs(out, report)
    assert {"plots/frontier.png", "plots/training.png", "plots/win_rate_vs_k_afinn.png"} \
        <= set(links)


def test_evaluate_checkpoint_against_base(compare_run, cache, tmp_path):
    out = tmp_path / "eval"
    ckpt = compare_run / "checkpoints" / "lire-s0"
    args = ["--config", "configs/tiny.yaml", f"run.cache_dir={cache}", f"policy={ckpt}",
            f"run.dir={tmp_path}", f"output={out}", "data.eval_prompts=8", "eval.kl_samples=6", "eval.best_of_n=[1,3]"]
    proc = _run("evaluate.py", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judges"] == ["vader", "afinn"] and metrics["prompts"] == 8
    # The rendered prompt of every held-out prompt is recorded (tiny: no chat template, so the
    # prompt text itself), in the order of the held-out set.
    from lire_ray.inputs import load_prompt_rows

    rows = load_prompt_rows("builtin:reviews-heldout", 8)
    assert metrics["held_out_prompts"] == [{"prompt_id": r.prompt_id, "prompt_text": r.prompt}
                                           for r in rows]
    for key in ("base", "policy"):
        temps = {r["temperature"]: r for r in metrics[key]["temperatures"]}
        assert set(temps) == {0.0, 1.0}
        assert temps[0.0]["samples_per_prompt"] == 1 and temps[1.0]["samples_per_prompt"] == 6
        for rec in temps.values():
            assert set(rec["mean"]) == {"vader", "afinn"}
            assert all(_finite(v) for v in rec["mean"].values())
            assert all(0.0 <= v <= 1.0 for v in rec["win_rate"].values())
            assert rec["avg_win_rate"] == pytest.approx(sum(rec["win_rate"].values()) / 2)
        kl = metrics[key]["kl"]
        assert kl["n"] + kl["excluded"] == 8 * 6 and kl["n"] >= 24
        assert _finite(kl["value"]) and _finite(kl["stderr"])
    # The reference is the base policy: KL(base || base) vanishes. The slack beyond 4 standard
    # errors covers two float32 implementations (vLLM and transformers) of the same forward.
    base_kl = metrics["base"]["kl"]
    assert abs(base_kl["value"]) <= 4 * base_kl["stderr"] + 1e-4, base_kl
    # The served checkpoint is not the reference: its per-sample log-ratios spread out (the
    # KL estimate itself is too noisy on 8 prompts to order the two policies).
    assert metrics["policy"]["kl"]["stderr"] > 1e3 * max(base_kl["stderr"], 1e-6)
    assert set(metrics["negative_flip_rate"]) == {"vader", "afinn"}
    assert all(0.0 <= v <= 1.0 for v in metrics["negative_flip_rate"].values())
    bon = {b["n"]: b for b in metrics["best_of_n"]["results"]}
    assert set(bon) == {1, 3} and metrics["best_of_n"]["picker"] == "vader"
    # Picking by vader among more samples cannot lower the mean vader score of the pick.
    assert bon[3]["mean"]["vader"] >= bon[1]["mean"]["vader"]
    assert metrics["human"]["mean"].keys() == {"vader", "afinn"}
    report = (out / "report.md").read_text()
    assert "ties count half" in report and "KL(policy || pi_ref)" in report
    links = _check_pngs(out, report)
    assert {"plots/frontier.png", "plots/best_of_n.png", "plots/reward_afinn.png",
            "plots/training.png", "plots/before_after_afinn.png"} <= set(links)

    again = _run("evaluate.py", *args, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
