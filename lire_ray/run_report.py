"""The self-enhancement run's report: held-out rewards before and after, and the Evolve steps.

What it shows, for greedy decoding and for sampling (every ``eval.temperatures``): per reward
model the mean held-out reward and the win rate against the human-written answers before and
after training, the negative-flip rate (paper A.8), KL to the reference policy and distinct-n
(so reward hacking and collapse are visible next to the rewards), the reward distributions
(Fig. 7), per-prompt scores before against after (Fig. 8), a few example responses, and one row
per Evolve step, with LIRE's gradient health (how often Q was one-hot, eq. 7's weights).
``metrics.json`` holds every number; ``summary.txt`` the headline lines.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from lire_ray import plots
from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe
from lire_ray.metrics import grad_health
from lire_ray.metrics.stats import negative_flip_rate
from lire_ray.metrics.summary import KL_NOTE, WIN_RATE_NOTE, first_samples
from lire_ray.report import markdown_table, write_report
from lire_ray.rundir import RunDir

EXAMPLES = 4

log = logging.getLogger(__name__)


def _kl(d: dict) -> str:
    return "n/a" if not math.isfinite(d.get("value", math.nan)) else \
        f"{d['value']:.3f} ± {d['stderr']:.3f}" if math.isfinite(d.get("stderr", math.nan)) \
        else f"{d['value']:.3f}"


def _heldout(recipe: Recipe, before: dict, after: dict, plot_dir: Path):
    judges = recipe.judge_names
    trained = recipe.train_reward_name
    rows, div_rows, made, summary, metrics = [], [], [], [], {}
    for rec_b in before["records"]:
        t = rec_b["temperature"]
        rec_a = next(r for r in after["records"] if r["temperature"] == t)
        gen_b, gen_a = before["generations"][str(t)], after["generations"][str(t)]
        first_b, first_a = first_samples(gen_b["scores"]), first_samples(gen_a["scores"])
        how = "greedy" if t == 0 else f"T={t:g}, {rec_b['samples_per_prompt']}/prompt"
        for rm in judges:
            flips = negative_flip_rate(first_a[rm], first_b[rm])
            label = rm + (" (trained on)" if rm == trained else " (held-out judge)")
            rows.append([label, how, rec_b["mean"][rm], rec_a["mean"][rm],
                         rec_b["win_rate"].get(rm, math.nan), rec_a["win_rate"].get(rm, math.nan),
                         flips])
            metrics[f"heldout/{rm}/T{t:g}"] = {
                "before": rec_b["mean"][rm], "after": rec_a["mean"][rm],
                "win_rate_before": rec_b["win_rate"].get(rm), "win_rate_after":
                rec_a["win_rate"].get(rm), "negative_flip_rate": flips}
            summary.append(f"{label}: held-out mean reward ({how}) "
                           f"{rec_b['mean'][rm]:.4f} -> {rec_a['mean'][rm]:.4f}")
            if t == min(r["temperature"] for r in before["records"]):
                made.append((f"{rm}: held-out reward distribution before and after ({how})",
                             plots.plot_reward_distribution(
                                 first_b[rm], first_a[rm], plot_dir / f"reward_{rm}.png",
                                 title=f"held-out reward ({rm}, {how})")))
                made.append((f"{rm}: per-prompt score before vs after ({how}); red: negative "
                             "flips (paper Fig. 8)", plots.plot_before_after(
                                 first_b[rm], first_a[rm], plot_dir / f"flips_{rm}.png",
                                 title=f"{rm}, {how}")))
        div_rows.append([how, _kl(rec_b["divergence"]), _kl(rec_a["divergence"]),
                         rec_b["distinct"]["1"], rec_a["distinct"]["1"],
                         rec_b["distinct"]["2"], rec_a["distinct"]["2"]])
    prompts = rec_b.get("win_rate_prompts", 0)
    table = markdown_table(["reward model", "decoding", "mean before", "mean after",
                            "win rate vs human before", "win rate vs human after",
                            "negative flips"], rows)
    note = (f"\n\n{WIN_RATE_NOTE} Win rates count the {prompts} held-out prompts that have a "
            "human-written answer. Negative flips: share of prompts whose (first) response "
            "scores strictly lower after training than before.")
    div = markdown_table(["decoding", "KL before", "KL after", "distinct-1 before",
                          "distinct-1 after", "distinct-2 before", "distinct-2 after"], div_rows)
    div += (f"\n\n{KL_NOTE} The KL row of greedy decoding is D_0, the divergence of the greedy "
            "responses. distinct-n: distinct word n-grams / all n-grams of the responses.")
    return table + note, div, made, summary, metrics


def _examples(before: dict, after: dict, n: int = EXAMPLES) -> str:
    t = str(min(r["temperature"] for r in before["records"]))
    b, a = before["generations"][t]["responses"], after["generations"][t]["responses"]
    lines = []
    for i in range(min(n, len(b))):
        lines.append(f"- prompt {i}: before `{b[i][0]!s:.120}` / after `{a[i][0]!s:.120}`")
    return "\n".join(lines)


def grad_health_section(stages: list[dict]) -> tuple[str, dict | None]:
    """The "LIRE gradient health" table (one row per Evolve step) and the whole run's summary.

    Args:
        stages: The run's ``evolve_step`` records (``grad_health`` as
            :func:`~lire_ray.metrics.grad_health.summarize` gives it; None for other losses).

    Returns:
        ``(markdown, summary)``; ``("", None)`` when no step carries the LIRE metrics.
    """
    rows = [[s["step"], h["steps"], h["onehot_share"], h["onehot_share_first"],
             h["onehot_share_last"], f"{h['grad_weight']:.2e}", f"{h['grad_weight_first']:.2e}",
             f"{h['grad_weight_last']:.2e}", h["onehot_steps"]]
            for s in stages if (h := s.get("grad_health"))]
    if not rows:
        return "", None
    table = markdown_table(
        ["Evolve step", "optimizer steps", "one-hot share (mean)", "first step", "last step",
         "gradient weight (mean)", "first step", "last step", "one-hot steps"], rows)
    return (table + "\n\n" + grad_health.HEALTH_NOTE,
            grad_health.merge([s.get("grad_health") for s in stages]))


def write_run_report(recipe: Recipe, rundir: RunDir, *, before: dict | None,
                     after: dict | None, wall_s: float, llm_judge: dict | None = None) -> Path:
    """Write ``report.md``, ``metrics.json``, ``summary.txt`` and the plots of a run.

    Args:
        recipe: The run's recipe.
        rundir: The run directory (its ``metrics.jsonl`` holds the Evolve steps).
        before: The starting policy's held-out evaluation (``EvalResult.to_json()``), or None
            without held-out prompts.
        after: The final policy's held-out evaluation, or None.
        wall_s: The run's wall time.
        llm_judge: The recipe's LLM judge on the starting and final policy
            (:func:`lire_ray.studies.judge.judge_columns`), or None.

    Returns:
        The path of ``report.md``.
    """
    history = [json.loads(line) for line in rundir.metrics_path.read_text().splitlines()] \
        if rundir.metrics_path.is_file() else []
    stages = [h for h in history if h.get("event") == "evolve_step"]
    metrics: dict = {"wall_s": wall_s, "train_reward": recipe.train_reward_name,
                     "stages": stages}
    sections, made, summary = [], [], []
    if before and after:
        table, div, made, summary, held = _heldout(recipe, before, after, rundir.root / "plots")
        metrics.update(held)
        sections += [("Held-out prompts", table), ("KL to the reference and diversity", div),
                     ("Example held-out responses (first prompts, lowest temperature)",
                      _examples(before, after))]
    if llm_judge:
        from lire_ray.judges.report import judge_section

        sections.append(judge_section(llm_judge))
        metrics["llm_judge"] = llm_judge
    if stages:
        sections.append(("Evolve steps", markdown_table(
            ["step", "prompts", "candidates", "policy reward (train RM)", "sample s", "train s",
             "overlap s"],
            [[s["step"], s["prompts"], s["candidates"], s["policy_reward_mean"], s["sample_s"],
              s["train_s"], s["overlap_s"]] for s in stages])))
        made.append(("policy reward of sampled candidates per Evolve step", plots.plot_curves(
            stages, ["policy_reward_mean", "overlap_s"], rundir.root / "plots" / "evolve.png",
            title="Evolve steps")))
    health, overall = grad_health_section(stages)
    if overall is not None:
        metrics["grad_health"] = overall
        sections.append(("LIRE gradient health", health))
        summary.append(f"LIRE gradient health: one-hot share {overall['onehot_share']:.3f} "
                       f"(mean over {overall['steps']} optimizer steps; last "
                       f"{overall['onehot_share_last']:.3f}), gradient weight "
                       f"{overall['grad_weight']:.2e}")
    atomic_write_text(rundir.root / "summary.txt", "\n".join(summary) + "\n")
    sections.append(("Run", f"Wall time {wall_s:.0f} s. Recipe snapshot: `config.yaml`; pools: "
                            "`pools/`; checkpoints: `checkpoints/`; per-step metrics: "
                            "`metrics.jsonl`; held-out samples and scores: `eval_*.json`."))
    return write_report(rundir.root, title="lire-ray self-enhancement report", sections=sections,
                        metrics=metrics, plots=made)


def finished_report(rundir: RunDir, recipe: Recipe) -> Path | None:
    """The report of a run directory whose every Evolve step, final evaluation and report are
    complete on disk (so re-running it has nothing to do, and Ray, the engines and the trainer
    are not started); None otherwise."""
    report = rundir.root / "report.md"
    if not (rundir.config_path.is_file() and report.is_file()
            and (rundir.root / "summary.txt").is_file()):
        return None
    if rundir.load_state().completed != list(range(1, recipe.evolve.steps + 1)):
        return None
    if recipe.data.eval and not (rundir.root / f"eval_after_e{recipe.evolve.steps}.json"
                                 ).is_file():
        return None
    log.info("run %s has completed all %d Evolve steps; its report is %s", rundir.root,
             recipe.evolve.steps, report)
    return report


def finished_run(recipe: Recipe) -> Path | None:
    """:func:`finished_report` of the recipe's run directory, after the same checks a resumed
    run makes (a recipe it cannot continue with is refused); cheap: no model, engine or Ray
    is loaded, so a finished run re-reports in a moment.

    Raises:
        RunDirError: As for :func:`lire_ray.self_enhance.run`.
    """
    from lire_ray import drift

    rundir = RunDir(recipe.run.dir, resume=recipe.run.resume)
    drift.check_resume(rundir, recipe)
    return finished_report(rundir, recipe)
