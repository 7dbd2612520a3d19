"""The comparison report (paper Table 2; Tables 4 and 7 for sweeps), rendered from the
``metrics.json`` a comparison or sweep wrote, so ``jobs/compare.py --report-only`` redraws every
table and figure from that file alone."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from lire_ray import plots
from lire_ray.metrics import grad_health
from lire_ray.metrics.summary import CI_NOTE, KL_NOTE, WIN_RATE_NOTE, aggregate_seeds, format_ci
from lire_ray.report import markdown_table, write_report

NAN_CELL = {"mean": float("nan"), "half_width": float("nan")}
FLIP_NOTE = ("Negative flips: share of held-out prompts whose first-sample judge score is "
             "strictly lower than the base policy's (paper A.8).")


def _mean(values: Sequence) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _ordered_judges(m: Mapping) -> list[str]:
    judges, picker = list(m["setup"]["judges"]), m["setup"]["train_reward"]
    return [picker] + [j for j in judges if j != picker] if picker in judges else judges


def _picker(m: Mapping) -> str:
    """The judge plotted as "the" reward: the training reward, or the first judge when the
    training reward cannot judge new responses (``kind: label``)."""
    judges, name = list(m["setup"]["judges"]), m["setup"]["train_reward"]
    return name if name in judges else judges[0]


def _held_out(m: Mapping) -> list[str]:
    """The judges the policy was not trained on (all judges when there is none)."""
    rest = [j for j in m["setup"]["judges"] if j != m["setup"]["train_reward"]]
    return rest or list(m["setup"]["judges"])


def _fmt_params(params: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def aggregate(m: Mapping) -> dict[str, dict]:
    """Per method (``base`` and every arm label with runs): metrics aggregated over seeds."""
    agg = {"base": aggregate_seeds([m["base"]["flat"]])}
    for arm in m["arms"]:
        mine = [r["flat"] for r in m["runs"] if r["label"] == arm["label"]]
        if mine:
            agg[arm["label"]] = aggregate_seeds(mine)
    return agg


def tables(m: Mapping, agg: Mapping[str, Mapping]) -> dict[str, str]:
    """The report's markdown tables: ``main``, ``seeds``, ``params``, ``details``, ``temps``."""
    judges, picker = _ordered_judges(m), m["setup"]["train_reward"]
    n_seeds = {a["label"]: sum(r["label"] == a["label"] for r in m["runs"]) for a in m["arms"]}

    def cells(method: str, keys: Sequence[str]) -> list[str]:
        return [format_ci(agg[method].get(k, NAN_CELL)) for k in keys]

    rm = [f"reward/{j}" for j in judges]
    wr = [f"win_rate/{j}" for j in judges]
    label = {"base": "base policy (no training)"}
    main = [[label.get(k, k), n_seeds.get(k, "-")] + cells(k, rm + wr + ["avg_win_rate"])
            for k in agg]
    role = {j: "RM" if j == picker else "RM*" for j in judges}
    out = {"main": markdown_table(
        ["method", "seeds"] + [f"{j} mean ({role[j]})" for j in judges]
        + [f"{j} win rate" for j in judges] + ["avg win rate"], main)}
    per_seed = [[r["label"], r["seed"]] + [r["flat"].get(k, float("nan")) for k in rm + wr]
                + [r["flat"].get("avg_win_rate", float("nan"))] for r in m["runs"]]
    out["seeds"] = markdown_table(["method", "seed"] + [f"{j} mean" for j in judges]
                                  + [f"{j} win rate" for j in judges] + ["avg win rate"],
                                  per_seed)
    out["params"] = markdown_table(
        ["method", "loss", "parameters (defaults included)", "K > 2 candidates"],
        [[a["label"], a["loss"], _fmt_params(a["params"]), a["pairing"]] for a in m["arms"]])
    seen = {a["label"]: sorted({round(h["candidates"], 3) for r in m["runs"]
                                if r["label"] == a["label"] for h in r.get("history", [])
                                if "candidates" in h}) for a in m["arms"]}
    out["details"] = markdown_table(
        ["method", "KL(pi, pi_ref)", "distinct-2"] + [f"negative flips {j}" for j in judges]
        + ["final train loss", "candidates per prompt in training steps"],
        [[label.get(k, k)] + cells(k, ["kl", "distinct_2"])
         + cells(k, [f"negative_flip/{j}" for j in judges]) + cells(k, ["final_loss"])
         + [", ".join(f"{v:g}" for v in seen.get(k, [])) or "-"] for k in agg])
    temps = []
    for k in agg:
        recs = ([m["base"]["records"]] if k == "base" else
                [r["records"] for r in m["runs"] if r["label"] == k])
        for t in sorted({x["temperature"] for rs in recs for x in rs}):
            at = [x for rs in recs for x in rs if x["temperature"] == t]
            cell = aggregate_seeds([_record_flat(x, judges) for x in at])
            temps.append([label.get(k, k), f"{t:g}", at[0]["samples_per_prompt"]]
                         + [format_ci(cell.get(c, NAN_CELL)) for c in
                            rm + wr + ["avg_win_rate", "distinct_2"]])
    out["temps"] = markdown_table(["method", "T", "samples/prompt"]
                                  + [f"{j} mean" for j in judges]
                                  + [f"{j} win rate" for j in judges]
                                  + ["avg win rate", "distinct-2"], temps)
    return out


def _sci(cell: Mapping[str, float]) -> str:
    """An aggregated cell in scientific notation (gradient weights span decades)."""
    m, h = cell["mean"], cell["half_width"]
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.2e}" if not math.isfinite(h) else f"{m:.2e} ± {h:.1e}"


def grad_health_table(m: Mapping) -> str:
    """The "LIRE gradient health" table: per method whose runs carry the LIRE metrics, the
    one-hot share and gradient weight over each run's optimizer steps, aggregated over seeds;
    "" when no run does (no LIRE arm)."""
    rows = []
    for arm in m["arms"]:
        runs = [r for r in m["runs"] if r["label"] == arm["label"]]
        health = [h for r in runs if (h := r.get("grad_health")
                                      or grad_health.summarize(r.get("history", [])))]
        if not health:
            continue
        agg = aggregate_seeds([dict(h) for h in health])
        rows.append([arm["label"], len(health), f"{agg['steps']['mean']:g}",
                     format_ci(agg["onehot_share"], 3), format_ci(agg["onehot_share_first"], 3),
                     format_ci(agg["onehot_share_last"], 3), _sci(agg["grad_weight"]),
                     _sci(agg["grad_weight_first"]), _sci(agg["grad_weight_last"]),
                     f"{sum(h['onehot_steps'] > 0 for h in health)}/{len(health)}"])
    if not rows:
        return ""
    return markdown_table(
        ["method", "seeds", "optimizer steps", "one-hot share (mean over steps)", "first step",
         "last step", "gradient weight (mean over steps)", "first step", "last step",
         "runs warned"], rows) + (
        f"\n\n{grad_health.HEALTH_NOTE} Cells are mean ± 95% CI over seeds of each run's "
        "value; runs warned: runs with at least one one-hot step.")


def _record_flat(rec: Mapping, judges: Sequence[str]) -> dict[str, float]:
    """One evaluation record's table columns."""
    out = {f"reward/{j}": rec["mean"].get(j, float("nan")) for j in judges}
    out.update({f"win_rate/{j}": rec["win_rate"].get(j, float("nan")) for j in judges})
    out.update(avg_win_rate=rec["avg_win_rate"], distinct_2=rec["distinct"]["2"])
    return out


def _setup(m: Mapping) -> str:
    s, study = m["setup"], m["study"]
    pool = s["pool"]
    ks = ", ".join(f"K={k}: {n} rows" for k, n in pool["k_rows"].items())
    if s["candidates"] == "pool":
        data = (f"Offline setting (paper Table 2): every method trained on exactly the "
                f"candidates of the prepared pool `{s['train_data']}` ({pool['prompts']} "
                f"prompts, {pool['candidates']} candidates; {ks}; sources "
                f"{pool['sources']}), scored by `{s['train_reward']}` as the pool or its labels "
                f"give. No sampler ran while any method trained (samplers alive during "
                f"training: {_samplers_in_training(m)}); samplers were started after the last "
                f"training run, for the held-out evaluation only.")
    elif s["candidates"] == "self_enhance":
        data = (f"Training prompts: {pool['prompts']} from `{s['train_data']}`; every chain "
                f"samples its own pools with its current policy (K = {s['num_candidates']}, "
                "human-written candidates kept).")
    else:
        data = (f"One pool for every method: {pool['prompts']} prompts from "
                f"`{s['train_data']}`, K = {s['num_candidates']} candidates per prompt "
                f"(human-written ones kept; {ks}) sampled once by the base policy, scored by "
                f"every reward model.")
    what = "Methods: losses of the registry."
    if study.get("kind") == "sweep":
        what = (f"Sweep of `{study['key']}` over {study['values']} with loss "
                f"`{m['arms'][0]['loss']}`, run as "
                + ("the comparison above (one shared pool, one training run per value and "
                   "seed)." if study.get("runner") == "compare" else
                   f"Algorithm 1 (self-enhancement, `algorithm.self_enhance`) per value and "
                   f"seed: {study.get('evolve_steps')} Evolve steps of {study.get('epochs')} "
                   "epoch(s), each chain from the base policy."))
    return (f"Base policy `{s['base_policy']}`. {data} {what} Budget per run: {s['epochs']} "
            f"epoch(s) at lr {s['lr']:g} (unless a method's parameters say otherwise). Seeds "
            f"(`train.seed`): {', '.join(map(str, m['seeds']))}. Evaluation: {s['prompts']} "
            f"held-out prompts from `{s['eval_data']}`, the same sampling seed for every "
            f"policy; the tables use T={s['eval_temperature']:g}"
            f"{' (greedy)' if s['eval_temperature'] == 0 else ''}. RM = `{s['train_reward']}` "
            f"(trained on), RM* = the other judges.")


def _samplers_in_training(m: Mapping) -> int:
    spans = [e for e in m["timeline"] if e["event"] == "training"]
    return max((e["samplers_alive"] for e in spans), default=0)


def write_compare_report(out: Path, m: dict) -> Path:
    """Write ``report.md``, ``metrics.json`` and the plots of a comparison or sweep.

    Args:
        out: Output directory.
        m: The study's metrics (see :func:`lire_ray.studies.compare.run_compare`): ``study``,
            ``setup``, ``arms``, ``seeds``, ``base``, ``best_of_n``, ``runs``, ``timeline``,
            ``wall_s``.

    Returns:
        The path of ``report.md``.
    """
    agg = aggregate(m)
    tb = tables(m, agg)
    judges = _ordered_judges(m)
    bon = m["best_of_n"]
    title = "(paper Tables 4 and 7)" if m["study"].get("kind") == "sweep" else "(paper Table 2)"
    sections = [
        ("Setup", _setup(m)),
        (f"Methods {title}", tb["main"] + f"\n\n{CI_NOTE} {WIN_RATE_NOTE} Average win rate: "
                                          "mean over the judges."),
        ("Per seed", tb["seeds"]),
        ("Loss parameters and pairing", tb["params"] + "\n\nDPO, IPO and SLiC turn a list of "
         "K > 2 candidates into pairs by their `pairs` parameter (`best_vs_rest`: the "
         "highest-reward candidate against every other one; the plain pairwise loss at K = 2)."),
        ("Details", tb["details"] + f"\n\n{KL_NOTE} distinct-2: distinct word bigrams / all "
         f"bigrams of the responses. {FLIP_NOTE} The last column lists the mean number of "
         "candidates per prompt the loss saw in each training step."),
        *([("LIRE gradient health", health)] if (health := grad_health_table(m)) else []),
        ("Every evaluation temperature", tb["temps"] + "\n\nGreedy decoding (T=0) draws one "
         "response per prompt; T > 0 draws several, all of which enter each cell. Mean ± 95% "
         "CI over seeds, as above."),
        ("Best-of-n of the base policy (paper sec. 4.4)", markdown_table(
            ["n"] + [f"{j} win rate" for j in judges] + ["avg win rate"],
            [[b["n"]] + [b["win_rate"].get(j, float("nan")) for j in judges]
             + [b["avg_win_rate"]] for b in bon["results"]])
         + f"\n\nPicked by `{bon['picker']}` among n samples at T={bon['temperature']:g}."),
    ]
    if m.get("llm_judge"):
        from lire_ray.judges.report import judge_section

        sections.append(judge_section(m["llm_judge"]))
    made = _plots(out, m, agg)
    sections.append(("Run", f"Wall time {m['wall_s']:.0f} s. Pool: `pool/`; checkpoints: "
                            f"`checkpoints/<method>-s<seed>/`; every number above and every "
                            f"figure's data: `metrics.json` (`python jobs/compare.py "
                            f"--report-only output=DIR` redraws them)."))
    metrics = {**m, "table": agg, "plots": [str(p.relative_to(out)) for _, p in made],
               "estimators": {"ci": CI_NOTE, "win_rate": WIN_RATE_NOTE, "kl": KL_NOTE}}
    kind = "parameter sweep" if m["study"].get("kind") == "sweep" else "method comparison"
    return write_report(out, title=f"lire-ray {kind}", sections=sections, metrics=metrics,
                        plots=made)


def rerender(out: Path) -> Path:
    """Redraw ``report.md`` and the plots from ``out/metrics.json``.

    Raises:
        FileNotFoundError: ``out`` holds no ``metrics.json``.
    """
    m = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
    for key in ("table", "plots", "estimators"):
        m.pop(key, None)
    return write_compare_report(Path(out), m)


def _frontier(m: Mapping, picker: str) -> dict[str, list[dict]]:
    series = {"base": [m["base"]["records"]]}
    for r in m["runs"]:
        series.setdefault(r["label"], []).append(r["records"])
    out = {}
    for method, per_seed in series.items():
        pts = []
        for t in sorted({x["temperature"] for recs in per_seed for x in recs}):
            rs = [x for recs in per_seed for x in recs if x["temperature"] == t]
            key = "win_rate" if rs[0]["win_rate"] else "mean"
            pts.append({"temperature": t, "x": _mean([x["divergence"]["value"] for x in rs]),
                        "y": _mean([x[key].get(picker, float("nan")) for x in rs])})
        out[method] = pts
    return out


def _plots(out: Path, m: Mapping, agg: Mapping[str, Mapping]) -> list[tuple[str, Path]]:
    judges, picker = m["setup"]["judges"], _picker(m)
    k, t = m["setup"]["pool"]["k_max"], m["setup"]["eval_temperature"]
    pdir, made = out / "plots", []
    has_wr = bool(m["base"]["records"][0]["win_rate"])
    made.append(("reward-KL frontier over sampling temperatures, mean over seeds "
                 "(paper Fig. 5)", plots.plot_frontier(
                     _frontier(m, picker), pdir / "frontier.png",
                     ylabel=f"win rate vs human ({picker})" if has_wr
                     else f"mean reward ({picker})")))
    if has_wr:
        for j in judges:
            made.append((f"win rate judged by {j}: Best-of-n of the base policy vs n, and each "
                         f"method (paper Fig. 4)", plots.plot_win_rate_vs_k(
                             {"Best-of-n (base policy)": [(b["n"], b["win_rate"][j])
                                                          for b in m["best_of_n"]["results"]]},
                             pdir / f"win_rate_vs_k_{j}.png",
                             points={meth: (k, cells[f"win_rate/{j}"]["mean"])
                                     for meth, cells in agg.items() if meth != "base"},
                             ylabel=f"win rate vs human ({j})")))
    if any(r.get("history") for r in m["runs"]):
        made.append(("training loss per step of every run", plots.plot_training_curves(
            {f"{r['label']}/s{r['seed']}": r["history"] for r in m["runs"]},
            pdir / "training.png", keys=("loss", "grad_norm"))))
    first: dict[str, dict] = {}
    for r in m["runs"]:
        first.setdefault(r["label"], r)
    before = m["base"]["first_scores"]
    for label, r in first.items():
        slug = "".join(c if c.isalnum() or c in "._=-" else "_" for c in label)
        made.append((f"{picker} reward per held-out prompt, base vs {label} (seed {r['seed']}, "
                     f"T={t:g}; paper Fig. 7)", plots.plot_reward_distribution(
                         before[picker], r["first_scores"][picker],
                         pdir / f"reward_{slug}.png",
                         title=f"held-out reward ({picker}): base vs {label}")))
        for j in _held_out(m):
            made.append((f"{j} score per held-out prompt before (base) and after ({label}, "
                         f"seed {r['seed']}, T={t:g}); red: negative flips (paper Fig. 8)",
                         plots.plot_before_after(before[j], r["first_scores"][j],
                                                 pdir / f"before_after_{slug}_{j}.png",
                                                 title=f"{j}: base vs {label}")))
    return made
