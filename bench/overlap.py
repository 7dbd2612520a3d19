"""Overlap bench: self-enhancement (paper Algorithm 1) with sampling streamed into training
(``resources.placement=split``) against strictly sequential phases (``colocate``).

Runs ``jobs/self_enhance.py`` twice, as a user would, on fresh run directories and the same
recipe, with held-out evaluation off (``data.eval=null``), and reads each Evolve step's
``sample_s``, ``train_s`` and ``overlap_s`` from the run's ``metrics.jsonl``. The compared time
is the Evolve-stage busy time, ``sample_s + train_s - overlap_s`` summed over steps (the union
of the sampling and training intervals): it leaves out Ray start-up and engine loading, which
do not depend on the placement. The whole-process wall time is reported too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import table
from lire_ray.errors import LireError

ROOT = Path(__file__).resolve().parents[1]
PLACEMENTS = ("colocate", "split")


def stage_records(run_dir: Path) -> list[dict]:
    """The ``evolve_step`` records of a run (``metrics.jsonl``, else ``metrics.json``)."""
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        return [r for r in rows if r.get("event") == "evolve_step"]
    whole = run_dir / "metrics.json"
    if whole.is_file():
        return json.loads(whole.read_text(encoding="utf-8")).get("stages", [])
    return []


def summarize_stages(stages: Sequence[dict]) -> dict:
    """Summed sampling, training, overlap and busy seconds over the Evolve steps."""
    keys = ("sample_s", "train_s", "overlap_s")
    total = {k: sum(float(s[k]) for s in stages) for k in keys}
    total["busy_s"] = total["sample_s"] + total["train_s"] - total["overlap_s"]
    total["steps"] = len(stages)
    return total


def running_ray_clusters() -> list[int]:
    """Process ids of Ray GCS servers running on this machine (one per Ray cluster)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") == "gcs_server":
            pids.append(proc.pid)
    return pids


def wait_for_idle_ray(wait_s: float) -> None:
    """Wait up to ``wait_s`` seconds until no other Ray cluster runs on this machine.

    A job joins a Ray cluster it finds running, so with another one up the two timed runs
    would share someone else's resources and measure nothing useful.

    Raises:
        LireError: Another Ray cluster is still running after ``wait_s`` seconds.
    """
    deadline = time.monotonic() + wait_s
    while True:
        pids = running_ray_clusters()
        if not pids:
            return
        if time.monotonic() >= deadline:
            raise LireError(
                f"another Ray cluster is running on this machine (gcs_server pid "
                f"{', '.join(map(str, pids))}); the self-enhancement job would join it and share "
                "its resources. Stop it (`ray stop`) or wait (--overlap-wait SECONDS)")
        time.sleep(10)


def run_self_enhance(label: str, overrides: Sequence[str], *, timeout_s: float,
                     keep: bool) -> dict:
    """Run ``jobs/self_enhance.py`` once, as a user would, on a fresh run directory.

    Args:
        label: Names the run directory and the Ray namespace.
        overrides: Recipe overrides.
        timeout_s: Kill the job after this many seconds.
        keep: Keep the run directory (its path is reported).

    Returns:
        ``{"stages": [evolve_step records], "wall_s", "run_dir"}``, or
        ``{"error": ..., "wall_s"}``.
    """
    run_dir = Path(tempfile.mkdtemp(prefix=f"lire-bench-{label}-")) / "run"
    # A job joins any Ray cluster already running here; its own namespace keeps its named
    # actors from clashing with another job's.
    namespace = f"lire-bench-{label}-{os.getpid()}"
    cmd = [sys.executable, str(ROOT / "jobs" / "self_enhance.py"), f"run.dir={run_dir}",
           f"ray.namespace={namespace}", *overrides]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - start
        stages = stage_records(run_dir)
        if proc.returncode != 0 or not stages:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall}
        return {"stages": stages, "wall_s": wall, "run_dir": str(run_dir) if keep else None}
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": timeout_s}
    finally:
        if not keep:
            shutil.rmtree(run_dir.parent, ignore_errors=True)


def run_placement(placement: str, overrides: Sequence[str], *, timeout_s: float,
                  keep: bool) -> dict:
    """Run the self-enhancement job once under ``placement`` and summarize its stages.

    Returns:
        ``summarize_stages(...)`` plus ``wall_s`` and ``run_dir``, or ``{"error": ...}``.
    """
    out = run_self_enhance(f"overlap-{placement}", [f"resources.placement={placement}",
                                                     "data.eval=null", *overrides],
                           timeout_s=timeout_s, keep=keep)
    if "error" in out:
        return out
    return {**summarize_stages(out["stages"]), "wall_s": out["wall_s"],
            "run_dir": out["run_dir"]}


def run_overlap_bench(*, prompts: int = 32, steps: int = 1, epochs: int = 1,
                      batch: int = 8, backend: str = "vllm", extra: Sequence[str] = (),
                      timeout_s: float = 900, wait_s: float = 0, keep: bool = False) -> dict:
    """Run the job under both placements on the same work and compare.

    Args:
        prompts: ``data.max_prompts``.
        steps: ``evolve.steps``.
        epochs: ``train.epochs`` (Iterate epochs per Evolve step).
        batch: ``sampler.batch_size``; the stream has ``prompts / batch`` blocks, and only
            with several blocks can training start before sampling ends.
        backend: ``sampler.backend``.
        extra: More recipe overrides.
        timeout_s: Per-run time limit.
        wait_s: How long to wait for another Ray cluster on this machine to go away.
        keep: Keep the run directories.

    Returns:
        ``{"config", "runs": {placement: ...}, "busy_ratio", "wall_ratio", "ideal_ratio",
        "sample_over_train"}`` where the ratios are split over colocate (below 1: overlap saves
        time).

    Raises:
        LireError: Another Ray cluster kept running on this machine (see
            :func:`wait_for_idle_ray`).
    """
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    # Build the cached default policy first so that neither timed run pays for it.
    ensure_tiny_policy(ROOT / ".cache" / "lire-ray")
    overrides = [f"data.max_prompts={prompts}", f"evolve.steps={steps}",
                 f"train.epochs={epochs}", f"sampler.batch_size={batch}",
                 f"sampler.backend={backend}", *extra]
    runs = {}
    for placement in PLACEMENTS:
        wait_for_idle_ray(wait_s)
        runs[placement] = run_placement(placement, overrides, timeout_s=timeout_s, keep=keep)
    seq, ovl = runs["colocate"], runs["split"]
    ok = "error" not in seq and "error" not in ovl
    return {"config": {"recipe": "configs/tiny.yaml", "overrides": ["data.eval=null", *overrides],
                       "prompts": prompts, "steps": steps, "epochs": epochs, "batch": batch,
                       "backend": backend},
            "runs": runs,
            "busy_ratio": ovl["busy_s"] / seq["busy_s"] if ok else None,
            # Overlap can at best hide the shorter phase entirely: max(s, t) / (s + t).
            "ideal_ratio": (max(seq["sample_s"], seq["train_s"])
                            / (seq["sample_s"] + seq["train_s"])) if ok else None,
            "wall_ratio": ovl["wall_s"] / seq["wall_s"] if ok else None,
            "sample_over_train": seq["sample_s"] / seq["train_s"] if ok else None}


def overlap_markdown(result: dict) -> str:
    """The overlap bench's Markdown table (one row per placement) and the ratios."""
    cfg = result["config"]
    rows = []
    for name, r in result["runs"].items():
        label = {"colocate": "sequential (colocate)", "split": "overlapped (split)"}[name]
        if "error" in r:
            rows.append([label, "-", "-", "-", "-", r.get("wall_s"), r["error"]])
        else:
            rows.append([label, r["sample_s"], r["train_s"], r["overlap_s"], r["busy_s"],
                         r["wall_s"], ""])
    text = (f"`jobs/self_enhance.py` on {cfg['recipe']} with "
            f"`{' '.join(cfg['overrides'])}`.\n\n"
            + table(["placement", "sample s", "train s", "overlap s", "Evolve busy s",
                     "process wall s", "error"], rows))
    if result.get("busy_ratio") is not None:
        text += (f"\n\nSplit / sequential: Evolve busy time {result['busy_ratio']:.2f}x, process "
                 f"wall time {result['wall_ratio']:.2f}x; in the sequential run sampling took "
                 f"{result['sample_over_train']:.2f}x as long as training, so perfect overlap "
                 f"would give {result['ideal_ratio']:.2f}x (target <= 0.7x busy time when the "
                 "two are similar).")
        if result["busy_ratio"] < result["ideal_ratio"] - 0.05:
            text += (" The measured ratio is below that bound, which overlap alone cannot "
                     "produce: the difference is run-to-run variation of the phases (compare "
                     "the two runs' train s), not a saving from overlap.")
    return text
