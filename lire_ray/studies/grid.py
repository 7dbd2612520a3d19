"""The Evolve x Iterate grid of LIRE self-enhancement over seeds (paper Table 6, Fig. 6).

For each seed and each Iterate count I (epochs per Evolve step), one chain of Algorithm 1
(:func:`lire_ray.algorithm.self_enhance`, through :func:`run_chain`) runs ``max(evolve)`` Evolve
steps from the base policy with the LIRE loss and ``train.seed = seed``; after every step e in
``evolve`` the served policy is evaluated on the held-out prompts at the first evaluation
temperature. Cell (E = e, I) is the held-out mean training reward after e Evolve steps of I
epochs: a chain reuses its own earlier steps, which is exactly what Algorithm 1 with E = e would
have computed. The report gives every cell as mean ± 95% CI over seeds with the worst and best
seed, and draws Fig. 6 (mean over seeds, band from worst to best). Everything is rendered from
``metrics.json`` (:func:`rerender`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lire_ray import algorithm, plots
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.evaluator import Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.losses import build_loss
from lire_ray.metrics.summary import (
    CI_NOTE,
    WIN_RATE_NOTE,
    aggregate_seeds,
    first_samples,
    format_ci,
)
from lire_ray.pool import PoolRow
from lire_ray.report import markdown_table, write_report
from lire_ray.rundir import RunDir, prepare_output
from lire_ray.runtime import RoleGroup, connect, disconnect, make_trainer, namespace_for
from lire_ray.studies.compare import chain_seed, check_seeds, loss_recipe
from lire_ray.studies.evaluate import check_eval_recipe, judges_of
from lire_ray.training.result import PolicyInit

log = logging.getLogger(__name__)

OWNED = ("report.md", "metrics.json", "plots", "chains", ".state")


def grid_recipe(recipe: Recipe, *, epochs: int, steps: int, seed: int) -> Recipe:
    """The LIRE recipe of one chain: I = ``epochs`` per step, E = ``steps``, the seed of
    training and of the Evolve steps' sampling (:func:`~lire_ray.studies.compare.chain_seed`)."""
    lire = chain_seed(loss_recipe(recipe, "lire"), seed)
    return lire.model_copy(update={
        "train": lire.train.model_copy(update={"epochs": epochs}),
        "evolve": lire.evolve.model_copy(update={"steps": steps})})


def check_chain_recipe(recipe: Recipe) -> None:
    """Refuse what Algorithm 1 cannot train on before anything starts.

    Raises:
        ConfigError: The training reward is of kind label (it scores only a dataset's own
            candidates, not the samples of each Evolve step).
    """
    name = recipe.train_reward_name
    if any(rm.name == name and rm.kind == "label" for rm in recipe.rewards):
        raise ConfigError(f"the training reward '{name}' is of kind label, which cannot score "
                          "the new samples of each Evolve step; self-enhancement (the grid, a "
                          "--self-enhance sweep) needs a reward model that scores new text")


def run_chain(recipe: Recipe, roles: RoleGroup, rows: Sequence[PoolRow], root: Path, *,
              base: str, norm: dict, on_step: Callable | None = None) -> PolicyInit:
    """One run of Algorithm 1 from the base policy in its own run directory ``root``.

    Args:
        recipe: The chain's recipe (loss, E, I, seed).
        roles: The role group (samplers, reward actors, reference actors if the loss needs
            them); the samplers are reset to the base policy first.
        rows: The prompt rows of every Evolve step.
        root: The chain's run directory (pools, checkpoints, metrics).
        base: The base policy.
        norm: The frozen reward normalisation.
        on_step: Called after every Evolve step (see :data:`lire_ray.algorithm.OnStep`).

    Returns:
        The final policy (served on the samplers).
    """
    rundir = RunDir(root, resume=False)
    rundir.create(recipe.to_yaml())
    roles.serve(PolicyInit(base), 0)
    trainer = make_trainer(recipe, storage_path=str(rundir.root / "ray_train"), name="policy",
                           roles=roles)
    return algorithm.self_enhance(algorithm.Chain(recipe, rundir, roles, trainer, base=base,
                                                  norm=norm), rows, on_step=on_step)


def run_grid(recipe: Recipe, *, evolve: Sequence[int], iterate: Sequence[int],
             seeds: Sequence[int], out_dir: str | Path | None, overwrite: bool = False) -> Path:
    """Run the E x I grid of LIRE over seeds and write its report.

    Args:
        recipe: The recipe (LIRE parameters from ``loss.params`` when it names lire, else
            ``loss.params_by_name.lire``).
        evolve: Evolve step counts E to report (each >= 1).
        iterate: Epochs per Evolve step I to run (each >= 1).
        seeds: ``train.seed`` values; every (I, seed) is one chain.
        out_dir: Output directory; default ``<run.dir>/grid``.
        overwrite: Replace the results of an earlier grid in ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Empty or non-positive E or I lists, no seeds, or an unusable recipe.
    """
    from lire_ray.models import load_tokenizer

    t0 = time.time()
    check_eval_recipe(recipe)
    check_chain_recipe(recipe)
    evolve, iterate, seeds = sorted(set(evolve)), sorted(set(iterate)), check_seeds(seeds)
    if not evolve or not iterate or min(evolve + iterate) < 1:
        raise ConfigError(f"--evolve and --iterate need positive counts, got {evolve} and "
                          f"{iterate}")
    lire = grid_recipe(recipe, epochs=iterate[0], steps=max(evolve), seed=seeds[0])
    needs_ref = build_loss("lire", lire.loss.params).needs_reference
    out = prepare_output(Path(out_dir or Path(recipe.run.dir) / "grid"), overwrite=overwrite,
                         owned=OWNED)
    base = resolve_policy(recipe)
    train_rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    eval_rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges, picker = judges_of(recipe), recipe.train_reward_name
    t = min(recipe.eval.temperatures)
    kw: dict[str, Any] = {"temperatures": [t], "judges": judges, "with_kl": False}
    records: list[dict] = []
    chains: list[dict] = []
    tokenizer = load_tokenizer(base, trust_remote_code=recipe.model.trust_remote_code)
    norm = None
    base_res = None
    handle = connect(recipe.ray)
    try:
        for seed in seeds:
            # Samplers start with the seed's sampler.seed: the chains of a seed draw their own
            # Evolve samples; the evaluator keeps the recipe's seed for every chain.
            with RoleGroup(chain_seed(recipe, seed), namespace=namespace_for(
                    recipe.ray.namespace, "grid", out, f"s{seed}"), policy=base, rewards=True,
                    reference=resolve_reference(recipe) if needs_ref else None,
                    state_dir=out / ".state" / f"s{seed}") as roles:
                norm = roles.normalisation(train_rows, frozen=norm)
                ev = Evaluator(recipe, roles, eval_rows, tokenizer=tokenizer)
                if base_res is None:
                    base_res = ev.evaluate(**kw)
                for i in iterate:
                    def on_step(e: int, _policy, step: dict, i: int = i, seed: int = seed,
                                ev: Evaluator = ev) -> None:
                        chains.append({"I": i, "E": e, "seed": seed,
                                       "pool_reward_mean": step["policy_reward_mean"],
                                       "train_s": step["train_s"], "sample_s": step["sample_s"]})
                        if e in evolve:
                            res = ev.evaluate(**kw)
                            rec = res.record(t)
                            records.append({
                                "E": e, "I": i, "seed": seed, "reward": rec["mean"][picker],
                                "mean": rec["mean"], "win_rate": rec["win_rate"],
                                "avg_win_rate": rec["avg_win_rate"],
                                "distinct_2": rec["distinct"]["2"],
                                "first_scores": first_samples(res.generation(t).scores)})

                    log.info("grid: seed %d, I=%d, %d Evolve steps", seed, i, max(evolve))
                    run_chain(grid_recipe(recipe, epochs=i, steps=max(evolve), seed=seed), roles,
                              train_rows, out / "chains" / f"I{i}-s{seed}", base=base,
                              norm=norm, on_step=on_step)
    finally:
        disconnect(handle)
    assert base_res is not None  # the first seed evaluated the base policy
    base_rec = base_res.record(t)
    metrics = json.loads(json.dumps({
        "records": records, "chains": chains, "evolve": evolve, "iterate": iterate,
        "seeds": seeds, "train_reward": picker, "judges": judges, "eval_temperature": t,
        "base": {**base_rec, "first_scores": first_samples(base_res.generation(t).scores)},
        "held_out_prompts": base_res.prompts,
        "setup": {"base_policy": base, "num_candidates": recipe.sampler.num_candidates,
                  "train_data": recipe.data.train, "prompts": len(train_rows),
                  "eval_data": recipe.data.eval, "eval_prompts": len(eval_rows),
                  "lr": recipe.train.lr, "loss_params": build_loss("lire", lire.loss.params)
                  .params},
        "wall_s": time.time() - t0}, default=float))
    return write_grid_report(out, metrics)


def cell_stats(records: Sequence[dict], key: str) -> dict[tuple[int, int], dict]:
    """Per (E, I): ``aggregate_seeds`` of ``key`` with the worst and best seed's value."""
    out = {}
    for e, i in sorted({(r["E"], r["I"]) for r in records}):
        vals = [float(r[key]) for r in records if (r["E"], r["I"]) == (e, i)]
        out[(e, i)] = {**aggregate_seeds([{key: v} for v in vals])[key], "worst": min(vals),
                       "best": max(vals)}
    return out


def grid_table(records: Sequence[dict], key: str = "reward") -> str:
    """The grid as markdown: one row per I, one column per E; mean ± CI [worst, best]."""
    stats = cell_stats(records, key)
    es = sorted({e for e, _ in stats})
    is_ = sorted({i for _, i in stats})

    def cell(e: int, i: int) -> str:
        c = stats.get((e, i))
        if c is None:
            return ""
        return format_ci(c) + (f" [{c['worst']:.4f}, {c['best']:.4f}]" if c["n"] > 1 else "")
    return markdown_table(["Iterate"] + [f"E={e}" for e in es],
                          [[f"I={i}"] + [cell(e, i) for e in es] for i in is_])


def write_grid_report(out: Path, m: dict) -> Path:
    """Write the grid's ``report.md``, plots and ``metrics.json`` from its metrics."""
    picker, judges, t = m["train_reward"], m["judges"], m["eval_temperature"]
    records, s = m["records"], m["setup"]
    means = [{"E": e, "I": i, "reward": c["mean"]}
             for (e, i), c in cell_stats(records, "reward").items()]
    pdir = out / "plots"
    made = [(f"held-out mean {picker} reward by Evolve steps E and Iterate epochs I, mean over "
             "seeds (paper Table 6)", plots.plot_grid(means, pdir / "grid.png",
                                                      title=f"held-out {picker} reward, LIRE"))]
    for key, what in (("reward", f"mean {picker} reward"), ("avg_win_rate", "avg win rate")):
        stats = cell_stats(records, key)
        series = {f"I={i}": [(e, c["mean"], c["worst"], c["best"])
                             for (e, i2), c in stats.items() if i2 == i] for i in m["iterate"]}
        made.append((f"held-out {what} over Evolve steps, one line per I: mean over seeds, "
                     "shaded from the worst to the best seed (paper Fig. 6)",
                     plots.plot_seed_bands(series, pdir / f"fig6_{key}.png", xlabel="Evolve steps E",
                                           ylabel=f"held-out {what}",
                                           title=f"{what} over seeds {m['seeds']}")))
    last = [r for r in records if r["E"] == max(m["evolve"]) and r["I"] == max(m["iterate"])]
    if last:
        r = last[0]
        for j in judges:
            made.append((f"{j} score per held-out prompt, base vs E={r['E']}, I={r['I']} (seed "
                         f"{r['seed']}); red: negative flips (paper Fig. 8)",
                         plots.plot_before_after(m["base"]["first_scores"][j],
                                                 r["first_scores"][j],
                                                 pdir / f"before_after_{j}.png",
                                                 title=f"{j}: base vs E={r['E']}, I={r['I']}")))
    detail = markdown_table(
        ["E", "I", "seed"] + [f"{j} mean" for j in judges] + [f"{j} win rate" for j in judges]
        + ["avg win rate", "distinct-2"],
        [[r["E"], r["I"], r["seed"]] + [r["mean"][j] for j in judges]
         + [r["win_rate"].get(j, float("nan")) for j in judges]
         + [r["avg_win_rate"], r["distinct_2"]] for r in records])
    base = m["base"]
    sections = [
        ("Setup", f"LIRE self-enhancement (Algorithm 1, `algorithm.self_enhance`) from "
                  f"`{s['base_policy']}`, K = {s['num_candidates']} candidates per prompt, "
                  f"{s['prompts']} training prompts from `{s['train_data']}`, lr {s['lr']:g}, "
                  f"LIRE parameters {s['loss_params']}. One chain per (I, seed) runs "
                  f"E = {max(m['evolve'])} Evolve steps; seeds (`train.seed`): {m['seeds']}. "
                  f"Evaluated after each reported E on {s['eval_prompts']} held-out prompts "
                  f"from `{s['eval_data']}` at T={t:g}. Base policy: mean {picker} reward "
                  f"{base['mean'][picker]:.4f}, avg win rate {base['avg_win_rate']:.4f}."),
        (f"Held-out mean {picker} reward (paper Table 6)", grid_table(records) + f"\n\n"
         f"{CI_NOTE} In brackets: the worst and the best seed (Fig. 6's band)."),
        ("Held-out average win rate", grid_table(records, "avg_win_rate")
         + f"\n\n{WIN_RATE_NOTE}"),
        ("Every judge, every seed", detail),
        ("Run", f"Wall time {m['wall_s']:.0f} s. Chains: `chains/I<i>-s<seed>/` (pools, "
                "checkpoints); every number and every figure's data: `metrics.json` "
                "(`python jobs/compare.py --grid --report-only output=DIR` redraws them)."),
    ]
    metrics = {**m, "plots": [str(p.relative_to(out)) for _, p in made]}
    return write_report(out, title="lire-ray Evolve x Iterate grid", sections=sections,
                        metrics=metrics, plots=made)


def rerender(out: Path) -> Path:
    """Redraw the grid's report and plots from ``out/metrics.json``."""
    m = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
    m.pop("plots", None)
    return write_grid_report(Path(out), m)
