"""``jobs/compare.py --grid`` and ``--sweep`` end to end on CPU with tiny settings (real Ray,
the transformers sampler, DeepSpeed; each a few minutes on 2 busy cores): every table cell is finite, seeds
give intervals and Fig. 6's band, every report has its Fig. 8 plots, and ``--report-only``
redraws a report from its ``metrics.json``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env
from _studies import label_recipe, write_hh_pairs

from lire_ray.adapters.prepare import prepare_pool

pytestmark = pytest.mark.integration

TINY = ["data.max_prompts=8", "data.eval_prompts=4", "train.micro_batch_prompts=4",
        "eval.kl_samples=2", "eval.best_of_n=[1, 2]", "ray.address=local",
        # The studies do not depend on the sampling engine; vLLM's start is most of a
        # tiny run's time on two cores (vLLM-served studies: tests/test_compare_offline.py).
        "sampler.backend=hf"]


def _compare(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "compare.py"), *args],
                          env=job_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _section(text: str, heading: str) -> list[list[str]]:
    body = text.split(f"## {heading}")[1].split("\n## ")[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _finite_cell(cell: str) -> bool:
    numbers = re.findall(r"-?\d+\.\d+", cell)
    return bool(numbers) and all(math.isfinite(float(x)) for x in numbers)


@pytest.fixture(scope="module")
def cache(tiny_cache):
    return tiny_cache


def test_grid_over_seeds(cache, tmp_path):
    _compare("--config", "configs/tiny-compare.yaml", "--grid", "--evolve", "1", "2",
             "--iterate", "1", "--seeds", "0", "1", *TINY, "eval.temperatures=[0.0]",
             f"run.cache_dir={cache}", f"run.dir={tmp_path}")
    out = tmp_path / "grid"
    text = (out / "report.md").read_text()
    rows = _section(text, "Held-out mean vader reward (paper Table 6)")
    assert [r[0] for r in rows] == ["I=1"] and len(rows[0]) == 3
    assert all(_finite_cell(c) and "±" in c and "[" in c for c in rows[0][1:]), rows
    assert all(_finite_cell(c) for r in _section(text, "Held-out average win rate")
               for c in r[1:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted((r["E"], r["seed"]) for r in metrics["records"]) == [(1, 0), (1, 1), (2, 0),
                                                                       (2, 1)]
    # Each seed's chain sampled its own Evolve pools.
    pools = {s: json.loads((out / "chains" / f"I1-s{s}" / "pools" / "e1" / "manifest.json")
                           .read_text()) for s in (0, 1)}
    assert pools[0]["files"] != pools[1]["files"]
    assert {"plots/fig6_reward.png", "plots/grid.png", "plots/before_after_afinn.png"} \
        <= set(metrics["plots"])
    assert all((out / p).is_file() for p in metrics["plots"])


def test_offline_sweep_over_seeds_and_report_only(cache, tmp_path):
    prepare_pool("hh", str(write_hh_pairs(tmp_path / "hh.jsonl", 8)), tmp_path / "pool")
    recipe = label_recipe(tmp_path / "recipe.yaml")
    args = ["--config", str(recipe), "--sweep", "loss.params.temperature=1,4", "--seeds", "0",
            "1", *TINY, f"data.train={tmp_path / 'pool'}", "eval.temperatures=[0.0, 1.0]",
            f"run.cache_dir={cache}", f"run.dir={tmp_path}"]
    _compare(*args)
    out = tmp_path / "sweep"
    text = (out / "report.md").read_text()
    rows = _section(text, "Methods (paper Tables 4 and 7)")
    assert [r[0] for r in rows] == ["base policy (no training)", "loss.params.temperature=1",
                                    "loss.params.temperature=4"]
    for r in rows[1:]:
        assert r[1] == "2" and all(_finite_cell(c) and "±" in c for c in r[2:]), r
    assert len(_section(text, "Per seed")) == 4
    assert "run as the comparison above (one shared pool" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert [a["params"]["temperature"] for a in metrics["arms"]] == [1, 4]
    assert all(h["candidates"] == 2.0 for r in metrics["runs"] for h in r["history"])
    links = set(metrics["plots"])
    # Trained on labels, so both VADER and AFINN are held-out judges: 2 values x 2 judges.
    assert len([p for p in links if p.startswith("plots/before_after_")]) == 4
    for p in links:
        (out / p).unlink()
    _compare(*args, "--report-only", timeout=300)
    assert (out / "report.md").read_text() == text
    assert all((out / p).is_file() for p in links)


def test_self_enhance_sweep(cache, tmp_path):
    _compare("--config", "configs/tiny-compare.yaml", "--sweep",
             "loss.params.temperature=1,4", "--self-enhance", "--seeds", "0", *TINY,
             "evolve.steps=1", "eval.temperatures=[0.0, 1.0]", f"run.cache_dir={cache}",
             f"run.dir={tmp_path}")
    out = tmp_path / "sweep"
    text = (out / "report.md").read_text()
    assert "Algorithm 1 (self-enhancement, `algorithm.self_enhance`) per value" in text
    rows = _section(text, "Methods (paper Tables 4 and 7)")
    assert len(rows) == 3 and all(_finite_cell(c) for r in rows for c in r[2:])
    for label in ("temperature=1", "temperature=4"):
        assert (out / "chains" / f"{label}-s0" / "checkpoints" / "e1" / "COMPLETE").is_file()
