"""Resident bench: self-enhancement with one resident trainer group (``train.resident=true``,
new policies sent to the samplers from memory) against one Ray Train run per Evolve step
(``train.resident=false``, the policy served from its checkpoint on disk).

Runs ``jobs/self_enhance.py`` twice, as a user would, on the same recipe and seed with held-out
evaluation off, and reads each Evolve step's ``train_s`` (the driver's wall time of the step's
training call), ``train_compute_s`` (the optimizer steps' own seconds) and ``weight_sync_s``
from ``metrics.jsonl``. The per-step overhead is ``train_s - train_compute_s``: starting a
worker group, loading the model, initialising DeepSpeed, checkpointing and moving the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.common import table
from bench.overlap import ROOT, run_self_enhance, wait_for_idle_ray

MODES = {"per-step runs": "false", "resident group": "true"}


def summarize(stages: Sequence[dict]) -> list[dict]:
    """Per Evolve step: train s, optimizer-step s, overhead s and weight-sync s."""
    return [{"step": s["step"], "train_s": s["train_s"],
             "compute_s": s.get("train_compute_s", float("nan")),
             "overhead_s": s["train_s"] - s.get("train_compute_s", float("nan")),
             "weight_sync_s": s.get("weight_sync_s", float("nan"))} for s in stages]


def run_resident_bench(*, prompts: int = 64, steps: int = 3, epochs: int = 2,
                       extra: Sequence[str] = (), timeout_s: float = 1200, wait_s: float = 0,
                       keep: bool = False) -> dict:
    """Run the job in both modes on the same work and compare.

    Returns:
        ``{"config", "runs": {mode: {"steps": [...], "wall_s"} or {"error"}},
        "overhead_after_first": {mode: mean overhead of steps >= 2}, "wall_ratio"}``.

    Raises:
        LireError: Another Ray cluster kept running on this machine.
    """
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    ensure_tiny_policy(ROOT / ".cache" / "lire-ray")  # neither timed run pays for building it
    overrides = ["data.eval=null", f"data.max_prompts={prompts}", f"evolve.steps={steps}",
                 f"train.epochs={epochs}", *extra]
    runs: dict = {}
    for mode, flag in MODES.items():
        wait_for_idle_ray(wait_s)
        out = run_self_enhance(f"resident-{flag}", [f"train.resident={flag}", *overrides],
                               timeout_s=timeout_s, keep=keep)
        runs[mode] = out if "error" in out else {"steps": summarize(out["stages"]),
                                                 "wall_s": out["wall_s"]}
    later = {m: _mean([s["overhead_s"] for s in r["steps"] if s["step"] >= 2])
             for m, r in runs.items() if "error" not in r}
    ok = len(later) == len(MODES)
    return {"config": {"recipe": "configs/tiny.yaml", "overrides": overrides},
            "runs": runs, "overhead_after_first": later,
            "wall_ratio": (runs["resident group"]["wall_s"] / runs["per-step runs"]["wall_s"]
                           if ok else None)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def resident_markdown(result: dict) -> str:
    """The resident bench's Markdown table (one row per mode and Evolve step) and ratios."""
    rows = []
    for mode, r in result["runs"].items():
        if "error" in r:
            rows.append([mode, "-", "-", "-", "-", "-", r["error"]])
            continue
        for s in r["steps"]:
            rows.append([mode, s["step"], s["train_s"], s["compute_s"], s["overhead_s"],
                         s["weight_sync_s"], f"run wall {r['wall_s']:.1f} s"])
    text = (f"`jobs/self_enhance.py` on {result['config']['recipe']} with "
            f"`{' '.join(result['config']['overrides'])}`, once per mode.\n\n"
            + table(["mode", "Evolve step", "train s", "optimizer steps s", "overhead s",
                     "weight sync s", ""], rows))
    if result.get("wall_ratio") is not None:
        o = result["overhead_after_first"]
        text += (f"\n\nOverhead per Evolve step after the first: {o['per-step runs']:.1f} s "
                 f"with per-step runs, {o['resident group']:.1f} s with the resident group; "
                 f"whole-run wall time resident / per-step = {result['wall_ratio']:.2f}x.")
    return text
