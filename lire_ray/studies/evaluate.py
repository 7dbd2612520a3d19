"""Evaluation of one policy checkpoint against its base policy (``jobs/evaluate.py``).

:func:`run_evaluation` starts a sampler and the reward actors on the recipe's initial policy
(the base) and a reference actor on ``model.reference`` (default: the base), then:

1. evaluates the base policy at every ``eval.temperatures`` (and at 1, for the KL);
2. draws ``max(eval.best_of_n)`` base samples at ``sampler.temperature`` for Best-of-n;
3. serves the checkpoint (when one is given) and evaluates it the same way, with the same
   sampling seed (common random numbers);
4. writes ``report.md``, ``metrics.json`` and the plots into the output directory.

The estimators are stated in :mod:`lire_ray.metrics.summary` and in every report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from lire_ray import plots
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.evaluator import KL_TEMPERATURE, EvalResult, Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.metrics.summary import KL_NOTE, WIN_RATE_NOTE, first_samples, flip_rates
from lire_ray.report import markdown_table, write_report
from lire_ray.rundir import prepare_output
from lire_ray.runtime import RoleGroup, connect, disconnect, namespace_for
from lire_ray.training.result import policy_in

log = logging.getLogger(__name__)

#: What an evaluation writes into its output directory (cleared by ``--overwrite``).
OWNED = ("report.md", "metrics.json", "plots", ".state")
DIVERGENCE_NOTE = ("D_T = mean of log pi(y|x) - log pi_ref(y|x) over samples y drawn at "
                   "temperature T, with log pi the policy's temperature-1 log-probability; "
                   "D_1 is the KL estimate, other temperatures trace the reward-KL frontier "
                   "(paper Fig. 5).")


def judges_of(recipe: Recipe) -> list[str]:
    """The judges (RM*): ``eval.judges`` or every reward model that can score new text."""
    return recipe.judge_names


def check_eval_recipe(recipe: Recipe) -> None:
    """Fail before starting anything when the recipe cannot be evaluated.

    Raises:
        ConfigError: No held-out prompts, no reward models, or Best-of-n sizes below 1.
    """
    if not recipe.data.eval:
        raise ConfigError("data.eval names no held-out prompts (a pool directory or "
                          "builtin:reviews-heldout)")
    if recipe.train_reward_name is None:
        raise ConfigError("the recipe has no reward models (rewards: [...])")
    if not recipe.judge_names:
        raise ConfigError("no reward model can judge held-out responses: kind label scores only "
                          "a dataset's own candidates; add a reward model of another kind")
    if any(n < 1 for n in recipe.eval.best_of_n) or not recipe.eval.best_of_n:
        raise ConfigError(f"eval.best_of_n must list sizes >= 1, got {recipe.eval.best_of_n}")


def run_evaluation(recipe: Recipe, *, policy: str | None, out_dir: str | Path | None,
                   overwrite: bool = False) -> Path:
    """Evaluate ``policy`` (or the base policy alone) and write the report.

    Args:
        recipe: The recipe (model, data.eval, sampler, rewards, eval, resources, ray).
        policy: A checkpoint directory of the recipe's policy, or None for the base policy.
        out_dir: Output directory; default ``<run.dir>/eval``.
        overwrite: Replace the results of an earlier evaluation in ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Unusable recipe or missing checkpoint.
        RunDirError: ``out_dir`` is not empty and ``overwrite`` is False.
        ActorFailure, ModelLoadError, DataError: From the actors.
    """
    from lire_ray.models import load_tokenizer

    t0 = time.time()
    check_eval_recipe(recipe)
    base = resolve_policy(recipe)
    target = policy_in(policy, base=base) if policy is not None else None
    out = prepare_output(Path(out_dir or Path(recipe.run.dir) / "eval"), overwrite=overwrite,
                         owned=OWNED)
    ref_path = resolve_reference(recipe)
    rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges, picker = judges_of(recipe), recipe.train_reward_name or ""
    handle = connect(recipe.ray)
    try:
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "evaluate", out),
                       policy=base, rewards=True, reference=ref_path,
                       state_dir=out / ".state") as roles:
            roles.normalisation(rows)
            ev = Evaluator(recipe, roles, rows, tokenizer=load_tokenizer(
                base, trust_remote_code=recipe.model.trust_remote_code))
            log.info("evaluating the base policy on %d held-out prompts", len(rows))
            base_res = ev.evaluate(judges=judges)
            bon = ev.best_of_n(recipe.eval.best_of_n, temperature=recipe.sampler.temperature,
                               picker=picker, judges=judges)
            pol_res = base_res
            if target is not None:
                log.info("evaluating %s", policy)
                roles.serve(target, 1)
                pol_res = ev.evaluate(judges=judges)
            human = ev.human
    finally:
        disconnect(handle)
    meta = {"policy_path": policy, "base_policy": base, "reference": ref_path,
            "eval_data": recipe.data.eval, "prompts": len(rows), "train_reward": picker,
            "judges": judges}
    return write_eval_report(out, meta=meta, base=base_res, policy=pol_res, best_of_n=bon,
                             human=human, wall_s=time.time() - t0)


def _mean_present(values: list) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


def _record_row(label: str, r: dict, rms: list[str], judges: list[str]) -> list:
    d = r["divergence"]
    return ([label, f"{r['temperature']:g}", r["samples_per_prompt"]]
            + [r["mean"].get(rm, float("nan")) for rm in rms]
            + [r["win_rate"].get(j, float("nan")) for j in judges]
            + [r["avg_win_rate"], f"{d['value']:.4f} ± {d['stderr']:.4f}",
               f"{d['n']} / {d['excluded']}"])


def _load_history(policy: str | None) -> list[dict]:
    from lire_ray.training.checkpoint import HISTORY_FILE

    path = Path(policy) / HISTORY_FILE if policy else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_eval_report(out: Path, *, meta: dict, base: EvalResult, policy: EvalResult,
                      best_of_n: dict, human: dict | None, wall_s: float) -> Path:
    """Write ``report.md``, ``metrics.json`` and the plots of one evaluation.

    Args:
        out: Output directory.
        meta: ``policy_path``, ``base_policy``, ``reference``, ``eval_data``, ``prompts``,
            ``train_reward``, ``judges``.
        base: The base policy's evaluation.
        policy: The evaluated policy's (``base`` itself when no checkpoint was given).
        best_of_n: :meth:`Evaluator.best_of_n` of the base policy.
        human: ``{rm: [P]}`` human-answer scores, or None.
        wall_s: Wall time of the evaluation.

    Returns:
        The path of ``report.md``.
    """
    judges, picker = meta["judges"], meta["train_reward"]
    rms = judges + sorted(set(base.records[0]["mean"]) - set(judges))
    t_first = min(r["temperature"] for r in base.records)
    flips = flip_rates(policy.generation(t_first).scores, base.generation(t_first).scores,
                       judges)
    label = "policy" if meta["policy_path"] else "base (no checkpoint given)"
    metrics = {**meta, "kl_temperature": KL_TEMPERATURE, "wall_s": wall_s,
               "human": ({"mean": {rm: _mean_present(v) for rm, v in human.items()}}
                         if human else None),
               "base": {"temperatures": base.records, "kl": base.kl},
               "policy": {"temperatures": policy.records, "kl": policy.kl},
               "negative_flip_rate": flips, "flip_temperature": t_first,
               "best_of_n": best_of_n,
               "held_out_prompts": policy.prompts or base.prompts,
               "estimators": {"win_rate": WIN_RATE_NOTE, "kl": KL_NOTE,
                              "divergence": DIVERGENCE_NOTE}}
    header = (["policy", "T", "samples/prompt"] + [f"mean {rm}" for rm in rms]
              + [f"win rate {j}" for j in judges]
              + ["avg win rate", "D_T ± s.e.", "samples used / excluded"])
    table = [_record_row("base", r, rms, judges) for r in base.records]
    if meta["policy_path"]:
        table += [_record_row("policy", r, rms, judges) for r in policy.records]
    if human:
        table.append(["human-written answer", "-", 1]
                     + [metrics["human"]["mean"].get(rm, float("nan")) for rm in rms]
                     + ["-"] * (len(judges) + 3))
    kl = policy.kl
    sections = [
        ("Setup", f"Policy: `{meta['policy_path'] or meta['base_policy']}`; base policy: "
                  f"`{meta['base_policy']}`; reference: `{meta['reference']}`; "
                  f"{meta['prompts']} held-out prompts from `{meta['eval_data']}`. Training "
                  f"reward (RM): `{picker}`; judges (RM*): {', '.join(judges)}. Sampling "
                  f"with top_p 1."),
        ("Rewards, win rates and divergence", markdown_table(header, table)
         + f"\n\n{WIN_RATE_NOTE} Average win rate: mean over the judges.\n\n"
           f"{DIVERGENCE_NOTE}"),
        ("KL to the reference policy", "\n".join(
            f"- KL({name} || pi_ref) = {d['value']:.4f} ± {d['stderr']:.4f} (standard error) "
            f"from {d['n']} samples ({d['excluded']} excluded)"
            for name, d in ([(label, kl)] + ([("base", base.kl)] if meta["policy_path"]
                                             else [])))
         + f"\n\n{KL_NOTE}"),
        ("Negative flips against the base policy (paper A.8)", markdown_table(
            ["judge", "negative-flip rate"], [[j, flips[j]] for j in judges])
         + f"\n\nShare of prompts whose reward at T={t_first:g} (first sample) is strictly "
           f"lower than the base policy's."),
        ("Best-of-n of the base policy (paper sec. 4.4)", markdown_table(
            ["n"] + [f"mean {j}" for j in judges] + [f"win rate {j}" for j in judges]
            + ["avg win rate"],
            [[b["n"]] + [b["mean"][j] for j in judges]
             + [b["win_rate"].get(j, float("nan")) for j in judges] + [b["avg_win_rate"]]
             for b in best_of_n["results"]])
         + f"\n\nn samples per prompt at T={best_of_n['temperature']:g}; the one `{picker}` "
           f"scores highest is judged by each judge."),
    ]
    plot_list = _plots(out, meta, base, policy, best_of_n, t_first, label)
    metrics["plots"] = [str(p.relative_to(out)) for _, p in plot_list]
    sections.append(("Run", f"Wall time {wall_s:.0f} s. Every number above is in "
                            f"`metrics.json`."))
    return write_report(out, title="lire-ray evaluation report", sections=sections,
                        metrics=metrics, plots=plot_list)


def _frontier_points(res: EvalResult, picker: str) -> list[dict]:
    key = "win_rate" if res.records[0]["win_rate"] else "mean"
    return [{"x": r["divergence"]["value"], "xerr": r["divergence"]["stderr"],
             "y": r[key].get(picker, float("nan")), "temperature": r["temperature"]}
            for r in res.records]


def _plots(out: Path, meta: dict, base: EvalResult, policy: EvalResult, best_of_n: dict,
           t_first: float, label: str) -> list[tuple[str, Path]]:
    judges, picker = meta["judges"], meta["train_reward"]
    pdir = out / "plots"
    made = []
    before, after = first_samples(base.generation(t_first).scores), \
        first_samples(policy.generation(t_first).scores)
    for j in judges:
        made.append((f"{j} reward per held-out prompt, base vs {label} (T={t_first:g}; "
                     "paper Fig. 7)", plots.plot_reward_distribution(
                         before[j], after[j], pdir / f"reward_{j}.png",
                         title=f"held-out reward ({j})")))
        if meta["policy_path"]:
            made.append((f"{j} score per held-out prompt before (base) and after ({label}), "
                         f"T={t_first:g}; red: negative flips (paper Fig. 8)",
                         plots.plot_before_after(before[j], after[j],
                                                 pdir / f"before_after_{j}.png",
                                                 title=f"{j}: base vs {label}")))
    has_wr = bool(base.records[0]["win_rate"])
    series = {"base": _frontier_points(base, picker)}
    if meta["policy_path"]:
        series["policy"] = _frontier_points(policy, picker)
    made.append(("reward-KL frontier over sampling temperatures (paper Fig. 5)",
                 plots.plot_frontier(series, pdir / "frontier.png",
                                     ylabel=(f"win rate vs human ({picker})" if has_wr
                                             else f"mean reward ({picker})"))))
    if has_wr:
        curves = {f"Best-of-n, judged by {j}": [(b["n"], b["win_rate"][j])
                                                for b in best_of_n["results"]] for j in judges}
        rec = policy.record(t_first)
        levels = {f"{label} ({j}, T={t_first:g})": rec["win_rate"][j] for j in judges}
        made.append(("win rate vs n: Best-of-n of the base policy picked by "
                     f"{picker} (paper Fig. 4)", plots.plot_win_rate_vs_k(
                         curves, pdir / "best_of_n.png", levels=levels)))
    history = _load_history(meta["policy_path"])
    if history:
        made.append(("training curves of the evaluated checkpoint", plots.plot_training_curves(
            {"policy": history}, pdir / "training.png", keys=("loss", "grad_norm", "lr"))))
    return made
