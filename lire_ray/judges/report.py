"""The judge job's outputs: ``judgments.jsonl``, ``report.md`` (tables, radar plot) and
``metrics.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lire_ray import plots
from lire_ray.atomic import atomic_write_text
from lire_ray.judges.grading import summarise_pairwise, summarise_single
from lire_ray.report import markdown_table, write_report

JUDGMENTS_FILE = "judgments.jsonl"
VALIDITY_NOTE = ("valid: the judge's answer followed the verdict format; invalid: it answered "
                 "off format (counted, never turned into a grade or a verdict); failed: no "
                 "answer after the retries (HTTP errors, timeouts, broken answers). Means and "
                 "shares of win/tie/loss are over the valid items only.")
PAIR_NOTE = ("Each pair is judged twice, the policy's answer shown first (A) and then second "
             "(B); a win counts only when both orders prefer the policy's answer, a loss only "
             "when both prefer the human-written one, everything else is a tie. "
             "Order-inconsistent: the two orders named different answers (share of valid "
             "pairs). A pair with an invalid or failed verdict in either order is invalid.")


def _cell(block: Mapping) -> str:
    mean = block["mean"]
    shown = f"{mean:.2f}" if math.isfinite(mean) else "-"
    return f"{shown} ({block['valid']}/{block['n']})"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "-"


def pairwise_table(summaries: Mapping[str, dict]) -> str:
    """The win / tie / loss table of pairwise summaries, one row per policy."""
    rows = [[p, s["pairs"], s["valid"], _pct(s["win"]), _pct(s["tie"]), _pct(s["loss"]),
             _pct(s["order_inconsistent"]), _pct(s["invalid"]), _pct(s["failed"])]
            for p, s in summaries.items()]
    return markdown_table(["policy", "pairs", "valid", "win", "tie", "loss",
                           "order-inconsistent", "invalid", "failed"], rows)


def judge_section(result: dict) -> tuple[str, str]:
    """The report section of a study's judge columns (see
    :func:`lire_ray.studies.judge.judge_columns`)."""
    heading = "LLM judge: win rate against the human-written answer (paper Fig. 2)"
    if "error" in result:
        return heading, f"No verdicts: {result['error']}"
    return heading, (f"Judge: {result['judge']}; each policy's first response at the first "
                     "evaluation temperature. " + pairwise_table(result["summary"]).join(
                         ["\n\n", "\n\n"]) + PAIR_NOTE + " " + VALIDITY_NOTE
                     + " Every judgment: `llm_judge.jsonl`.")


def write_judge_report(out: Path, *, mode: str, meta: dict,
                       records: Mapping[str, Sequence[dict]], stats: dict,
                       wall_s: float) -> Path:
    """Write the judge job's outputs under ``out``.

    Args:
        out: Output directory.
        mode: ``"single"`` or ``"pairwise"``.
        meta: ``judge`` (its label), ``questions`` or ``data``, and what else the setup
            section should show (JSON-ready; never an API key).
        records: ``{policy: judgment records}`` (see :mod:`lire_ray.judges.grading`).
        stats: The client's counters.
        wall_s: Wall time of the job.

    Returns:
        The path of ``report.md``.
    """
    lines = [json.dumps(r, ensure_ascii=False) for rs in records.values() for r in rs]
    atomic_write_text(out / JUDGMENTS_FILE, "\n".join(lines) + ("\n" if lines else ""))
    setup = (f"Judge: {meta['judge']}. Mode: {mode}. Policies: "
             + ", ".join(f"`{p}`" for p in records) + ". "
             + (f"Questions: `{meta['questions']}`." if mode == "single"
                else f"Prompts with human-written answers: `{meta['data']}`."))
    requests = (f"Judge requests: {stats['requests']} HTTP attempts ({stats['retries']} "
                f"retries), {stats['answered']} answered, {stats['failed']} failed, "
                f"{stats['cached']} taken from the cache.")
    plot_list: list[tuple[str, Path]] = []
    if mode == "single":
        summaries = {p: summarise_single(rs) for p, rs in records.items()}
        cats = list(dict.fromkeys(c for s in summaries.values() for c in s["categories"]))
        empty = {"mean": math.nan, "valid": 0, "n": 0}
        table = [[c] + [_cell(s["categories"].get(c, empty)) for s in summaries.values()]
                 for c in cats]
        turns = sorted({t for s in summaries.values() for t in s["turns"]}, key=int)
        table += [[f"turn {t}"] + [_cell(s["turns"].get(t, empty)) for s in summaries.values()]
                  for t in turns]
        table.append(["**overall**"] + [_cell(s["overall"]) for s in summaries.values()])
        counts = [[p, s["overall"]["n"], s["overall"]["valid"], s["overall"]["invalid"],
                   s["overall"]["failed"]] for p, s in summaries.items()]
        body = (markdown_table(["category"] + list(summaries), table)
                + "\n\nCells: mean grade 1-10 over the valid verdicts (valid / graded turns).")
        sections = [("Setup", setup + " " + requests),
                    ("Grades per category (paper Fig. 3)", body),
                    ("Verdicts", markdown_table(["policy", "turns", "valid", "invalid",
                                                 "failed"], counts) + "\n\n" + VALIDITY_NOTE)]
        radar = {p: {c: s["categories"].get(c, empty)["mean"] for c in cats}
                 for p, s in summaries.items()}
        plot_list.append(("mean judge grade per category, one polygon per policy (paper "
                          "Fig. 3)", plots.plot_radar(radar, out / "plots" / "radar.png")))
        metrics: dict = {"summary": summaries}
    else:
        summaries = {p: summarise_pairwise(rs) for p, rs in records.items()}
        sections = [("Setup", setup + " " + requests),
                    ("Win rate against the human-written answer (paper Fig. 2)",
                     pairwise_table(summaries) + "\n\n" + PAIR_NOTE + " " + VALIDITY_NOTE)]
        metrics = {"summary": summaries}
    sections.append(("Run", f"Wall time {wall_s:.0f} s. One line per judged item in "
                            f"`{JUDGMENTS_FILE}` (with the judge's raw text); every number "
                            "above is in `metrics.json`."))
    metrics.update({"mode": mode, "meta": meta, "requests": stats, "wall_s": wall_s,
                    "plots": [str(p.relative_to(out)) for _, p in plot_list]})
    return write_report(out, title=f"lire-ray judge report ({mode})", sections=sections,
                        metrics=metrics, plots=plot_list)
