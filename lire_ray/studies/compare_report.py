"""The comparison report: the paper's Table 2 with confidence intervals, details and plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lire_ray import plots
from lire_ray.evaluator import EvalResult
from lire_ray.metrics.summary import (
    CI_NOTE,
    KL_NOTE,
    WIN_RATE_NOTE,
    aggregate_seeds,
    first_samples,
    format_ci,
)
from lire_ray.report import markdown_table, write_report


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def method_tables(meta: Mapping, runs: Sequence[Mapping], base_flat: Mapping[str, float]
                  ) -> tuple[dict[str, dict], str, str]:
    """Aggregate runs per loss and render the main and the detail table.

    Args:
        meta: ``losses``, ``judges``, ``train_reward``.
        runs: Per (loss, seed): ``{"loss", "seed", "flat": {metric: value}}``.
        base_flat: The base policy's flat metrics (one value each, no interval).

    Returns:
        ``(aggregated, main_table, detail_table)`` where ``aggregated`` maps each method
        (``"base"`` and every loss) to :func:`~lire_ray.metrics.summary.aggregate_seeds`.
    """
    judges, picker = list(meta["judges"]), meta["train_reward"]
    ordered = [picker] + [j for j in judges if j != picker] if picker in judges else judges
    agg = {"base": aggregate_seeds([base_flat])}
    seeds = {"base": 0}
    for loss in meta["losses"]:
        mine = [r["flat"] for r in runs if r["loss"] == loss]
        if mine:
            agg[loss] = aggregate_seeds(mine)
            seeds[loss] = len(mine)
    main_header = (["method", "seeds"]
                   + [f"{j} mean ({'RM' if j == picker else 'RM*'})" for j in ordered]
                   + ["avg win rate"])
    detail_header = (["method"] + [f"win rate {j}" for j in ordered] + ["KL(pi || pi_ref)"]
                     + [f"negative flips {j}" for j in ordered] + ["final train loss"])
    main, detail = [], []
    nan_cell = {"mean": float("nan"), "half_width": float("nan")}
    for method, cells in agg.items():
        label = "base policy (no training)" if method == "base" else method
        main.append([label, seeds[method] or "-"]
                    + [format_ci(cells.get(f"reward/{j}", nan_cell)) for j in ordered]
                    + [format_ci(cells.get("avg_win_rate", nan_cell))])
        detail.append([label] + [format_ci(cells.get(f"win_rate/{j}", nan_cell)) for j in ordered]
                      + [format_ci(cells.get("kl", nan_cell))]
                      + [format_ci(cells.get(f"negative_flip/{j}", nan_cell)) for j in ordered]
                      + [format_ci(cells.get("final_loss", nan_cell))])
    return agg, markdown_table(main_header, main), markdown_table(detail_header, detail)


def _frontier(records_by_method: Mapping[str, Sequence[Sequence[Mapping]]], picker: str
              ) -> dict[str, list[dict]]:
    series = {}
    for method, per_seed in records_by_method.items():
        temps = sorted({r["temperature"] for recs in per_seed for r in recs})
        pts = []
        for t in temps:
            rs = [r for recs in per_seed for r in recs if r["temperature"] == t]
            key = "win_rate" if rs[0]["win_rate"] else "mean"
            pts.append({"temperature": t, "x": _mean([r["divergence"]["value"] for r in rs]),
                        "y": _mean([r[key].get(picker, float("nan")) for r in rs])})
        series[method] = pts
    return series


def write_compare_report(out: Path, *, meta: dict, runs: Sequence[dict], base: EvalResult,
                         base_flat: dict, best_of_n: dict, first_scores: Mapping[str, Mapping],
                         wall_s: float) -> Path:
    """Write ``report.md``, ``metrics.json`` and the plots of a comparison.

    Args:
        out: Output directory.
        meta: Run description (losses, seeds, judges, train_reward, pool manifest, ...).
        runs: One dict per (loss, seed) from :func:`lire_ray.studies.compare.run_compare`.
        base: The base policy's evaluation.
        base_flat: Its flat metrics.
        best_of_n: Best-of-n of the base policy on the held-out prompts.
        first_scores: Per loss, the first seed's held-out scores ``{rm: [P][n]}`` at the
            first evaluation temperature.
        wall_s: Wall time.

    Returns:
        The path of ``report.md``.
    """
    judges, picker, k = meta["judges"], meta["train_reward"], meta["num_candidates"]
    agg, main, detail = method_tables(meta, runs, base_flat)
    t = meta["eval_temperature"]
    pool = meta["pool"]
    sections = [
        ("Setup", f"Base policy `{meta['base_policy']}`. One pool for every method: "
                  f"{pool['num_rows']} prompts from `{meta['train_data']}`, "
                  f"{pool['num_candidates']} candidates (K = {k} per prompt, human-written "
                  f"ones kept) sampled by the base policy, scored by every reward model, with "
                  f"reference log-probs. Same budget for every loss: {meta['epochs']} epoch(s) "
                  f"at lr {meta['lr']:g}. Seeds: {', '.join(map(str, meta['seeds']))}. "
                  f"Evaluation: {meta['prompts']} held-out prompts from `{meta['eval_data']}` "
                  f"at T={t:g}; RM = `{picker}` (trained on), RM* = the other judges."),
        ("Methods (paper Table 2)", main + f"\n\n{CI_NOTE} {WIN_RATE_NOTE} Average win rate: "
                                           "mean over the judges."),
        ("Details", detail + "\n\n" + (KL_NOTE if meta["kl_estimated"] else
                                       "KL not estimated: sampler.top_p < 1.")
         + " Negative flips: share of held-out prompts whose reward is strictly lower than "
           "the base policy's (paper A.8)."),
        ("Best-of-n of the base policy (paper sec. 4.4)", markdown_table(
            ["n"] + [f"win rate {j}" for j in judges] + ["avg win rate"],
            [[b["n"]] + [b["win_rate"].get(j, float("nan")) for j in judges]
             + [b["avg_win_rate"]] for b in best_of_n["results"]])
         + f"\n\nPicked by `{picker}` among n samples at T={best_of_n['temperature']:g}."),
    ]
    made = _plots(out, meta, runs, base, best_of_n, first_scores, agg)
    metrics = {**meta, "wall_s": wall_s, "table": agg,
               "base": {"flat": base_flat, "temperatures": base.records, "kl": base.kl},
               "runs": [{k2: v for k2, v in r.items() if k2 != "history"} for r in runs],
               "best_of_n": best_of_n,
               "estimators": {"ci": CI_NOTE, "win_rate": WIN_RATE_NOTE, "kl": KL_NOTE},
               "plots": [str(p.relative_to(out)) for _, p in made]}
    sections.append(("Run", f"Wall time {wall_s:.0f} s. Pool: `pool/`; checkpoints: "
                            f"`checkpoints/<loss>-s<seed>/`; per-run results: `runs.jsonl`; "
                            f"every number above: `metrics.json`."))
    return write_report(out, title="lire-ray method comparison", sections=sections,
                        metrics=metrics, plots=made)


def _plots(out: Path, meta: dict, runs: Sequence[dict], base: EvalResult, best_of_n: dict,
           first_scores: Mapping[str, Mapping], agg: Mapping[str, Mapping]
           ) -> list[tuple[str, Path]]:
    judges, picker, k = meta["judges"], meta["train_reward"], meta["num_candidates"]
    pdir, made = out / "plots", []
    t = meta["eval_temperature"]
    by_method = {"base": [base.records]}
    for r in runs:
        by_method.setdefault(r["loss"], []).append(r["records"])
    has_wr = bool(base.records[0]["win_rate"])
    made.append(("reward-KL frontier over sampling temperatures, mean over seeds "
                 "(paper Fig. 5)", plots.plot_frontier(
                     _frontier(by_method, picker), pdir / "frontier.png",
                     ylabel=f"win rate vs human ({picker})" if has_wr
                     else f"mean reward ({picker})")))
    if has_wr:
        for j in judges:
            made.append((f"win rate judged by {j}: Best-of-n of the base policy vs n, and each "
                         f"method trained on K={k} candidates (paper Fig. 4)",
                         plots.plot_win_rate_vs_k(
                             {"Best-of-n (base policy)": [(b["n"], b["win_rate"][j])
                                                          for b in best_of_n["results"]]},
                             pdir / f"win_rate_vs_k_{j}.png",
                             points={m: (k, cells[f"win_rate/{j}"]["mean"])
                                     for m, cells in agg.items() if m != "base"},
                             ylabel=f"win rate vs human ({j})")))
    if runs:
        made.append(("training loss per step of every run", plots.plot_training_curves(
            {f"{r['loss']}/s{r['seed']}": r["history"] for r in runs}, pdir / "training.png",
            keys=("loss", "grad_norm"))))
    before = first_samples(base.generation(t).scores)[picker]
    for loss, scores in first_scores.items():
        made.append((f"{picker} reward per held-out prompt, base vs {loss} (first seed, T={t:g}; "
                     "paper Fig. 7)", plots.plot_reward_distribution(
                         before, first_samples(scores)[picker], pdir / f"reward_{loss}.png",
                         title=f"held-out reward ({picker}): base vs {loss}")))
    return made
