"""The Evolve x Iterate grid of LIRE self-enhancement (paper Table 6, sec. 4.7).

For each Iterate count I (epochs per Evolve step), one chain of Algorithm 1 runs
``max(evolve)`` Evolve steps from the base policy with the LIRE loss; after every step e that is
in ``evolve``, the policy is evaluated on the held-out prompts at the first evaluation
temperature. Cell (E = e, I) of the grid is then the held-out mean reward after e Evolve steps
with I epochs each: a chain reuses its own earlier steps instead of rerunning them, which is
exactly what Algorithm 1 with E = e would have computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lire_ray import algorithm, plots
from lire_ray.config import LossConfig, Recipe
from lire_ray.errors import ConfigError
from lire_ray.evaluator import Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.metrics.summary import WIN_RATE_NOTE
from lire_ray.report import markdown_table, write_report
from lire_ray.rundir import RunDir, prepare_output
from lire_ray.runtime import RoleGroup, connect, disconnect, make_trainer, namespace_for
from lire_ray.studies.evaluate import check_eval_recipe, judges_of
from lire_ray.training.result import PolicyInit

log = logging.getLogger(__name__)

OWNED = ("report.md", "metrics.json", "plots", "chains", ".state")


def grid_recipe(recipe: Recipe, *, epochs: int, steps: int) -> Recipe:
    """The LIRE recipe of one chain: I = ``epochs`` per step, E = ``steps``."""
    params = dict(recipe.loss.params) if recipe.loss.name == "lire" else {}
    return recipe.model_copy(update={
        "loss": LossConfig(name="lire", params=params),
        "train": recipe.train.model_copy(update={"epochs": epochs}),
        "evolve": recipe.evolve.model_copy(update={"steps": steps})})


def grid_table(records: Sequence[dict], value: str = "reward") -> str:
    """The grid as a markdown table: one row per I, one column per E (blank if not run)."""
    es = sorted({r["E"] for r in records})
    is_ = sorted({r["I"] for r in records})
    cell = {(r["E"], r["I"]): r[value] for r in records}
    return markdown_table(["Iterate"] + [f"E={e}" for e in es],
                          [[f"I={i}"] + [cell.get((e, i), "") for e in es] for i in is_])


def run_grid(recipe: Recipe, *, evolve: Sequence[int], iterate: Sequence[int],
             out_dir: str | Path | None, overwrite: bool = False) -> Path:
    """Run the E x I grid of LIRE and write its report.

    Args:
        recipe: The recipe (LIRE parameters from ``loss.params`` when it names lire).
        evolve: Evolve step counts E to report (each >= 1).
        iterate: Epochs per Evolve step I to run (each >= 1).
        out_dir: Output directory; default ``<run.dir>/grid``.
        overwrite: Replace the results of an earlier grid in ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Empty or non-positive E or I lists, or an unusable recipe.
    """
    from lire_ray.models import load_tokenizer

    t0 = time.time()
    check_eval_recipe(recipe)
    evolve, iterate = sorted(set(evolve)), sorted(set(iterate))
    if not evolve or not iterate or min(evolve + iterate) < 1:
        raise ConfigError(f"--evolve and --iterate need positive counts, got {evolve} and "
                          f"{iterate}")
    out = prepare_output(Path(out_dir or Path(recipe.run.dir) / "grid"), overwrite=overwrite,
                         owned=OWNED)
    base = resolve_policy(recipe)
    train_rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    eval_rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges, picker = judges_of(recipe), recipe.train_reward_name or ""
    t = min(recipe.eval.temperatures)
    kw: dict[str, Any] = {"temperatures": [t], "judges": judges, "with_kl": False}
    reference = resolve_reference(recipe) if _needs_reference(recipe) else None
    records: list[dict] = []
    chains: list[dict] = []
    handle = connect(recipe.ray)
    try:
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "grid", out),
                       policy=base, rewards=True, reference=reference,
                       state_dir=out / ".state") as roles:
            norm = roles.normalisation(train_rows)
            ev = Evaluator(recipe, roles, eval_rows, tokenizer=load_tokenizer(
                base, trust_remote_code=recipe.model.trust_remote_code))
            base_rec = ev.evaluate(**kw).record(t)
            for i in iterate:
                chain_recipe = grid_recipe(recipe, epochs=i, steps=max(evolve))
                rundir = RunDir(out / "chains" / f"I{i}", resume=False)
                rundir.create(chain_recipe.to_yaml())
                roles.serve(PolicyInit(base), 0)

                def on_step(e: int, _policy, step: dict, i: int = i) -> None:
                    chains.append({"I": i, "E": e, "pool_reward_mean": step["policy_reward_mean"],
                                   "train_s": step["train_s"], "sample_s": step["sample_s"]})
                    if e in evolve:
                        rec = ev.evaluate(**kw).record(t)
                        records.append({"E": e, "I": i, "reward": rec["mean"][picker],
                                        "mean": rec["mean"], "win_rate": rec["win_rate"],
                                        "avg_win_rate": rec["avg_win_rate"]})

                log.info("grid: I=%d, %d Evolve steps", i, max(evolve))
                algorithm.self_enhance(algorithm.Chain(
                    chain_recipe, rundir, roles,
                    make_trainer(chain_recipe, storage_path=str(rundir.root / "ray_train"),
                                 name="policy", roles=roles), base=base, norm=norm),
                    train_rows, on_step=on_step)
    finally:
        disconnect(handle)
    return _write(out, recipe=recipe, base_rec=base_rec, records=records, chains=chains,
                  judges=judges, t=t, wall_s=time.time() - t0)


def _needs_reference(recipe: Recipe) -> bool:
    from lire_ray.losses import build_loss

    return build_loss("lire", recipe.loss.params if recipe.loss.name == "lire" else {}) \
        .needs_reference


def _write(out: Path, *, recipe: Recipe, base_rec: dict, records: list[dict], chains: list,
           judges: list[str], t: float, wall_s: float) -> Path:
    picker = recipe.train_reward_name
    made = [(f"held-out mean reward ({picker}) by Evolve steps E and Iterate epochs I "
             "(paper Table 6)", plots.plot_grid(records, out / "plots" / "grid.png",
                                                title=f"held-out {picker} reward, LIRE"))]
    made.append(("mean policy-candidate reward of each Evolve step's pool", plots.
                 plot_training_curves({f"I={i}": [c for c in chains if c["I"] == i]
                                       for i in sorted({c["I"] for c in chains})},
                                      out / "plots" / "chains.png", keys=("pool_reward_mean",),
                                      x="E", title="Evolve steps")))
    detail = markdown_table(["E", "I"] + [f"mean {j}" for j in judges]
                            + [f"win rate {j}" for j in judges] + ["avg win rate"],
                            [[r["E"], r["I"]] + [r["mean"][j] for j in judges]
                             + [r["win_rate"].get(j, float("nan")) for j in judges]
                             + [r["avg_win_rate"]] for r in records])
    sections = [
        ("Setup", f"LIRE self-enhancement (Algorithm 1) from `{recipe.model.policy}`, K = "
                  f"{recipe.sampler.num_candidates} candidates per prompt, "
                  f"{recipe.data.max_prompts or 'all'} training prompts from "
                  f"`{recipe.data.train}`; evaluated on held-out prompts from "
                  f"`{recipe.data.eval}` at T={t:g}. Base policy: mean {picker} reward "
                  f"{base_rec['mean'][picker]:.4f}."),
        (f"Held-out mean {picker} reward (paper Table 6)", grid_table(records)),
        ("Every judge", detail + f"\n\n{WIN_RATE_NOTE}"),
        ("Run", f"Wall time {wall_s:.0f} s. Chains: `chains/I<i>/` (pools, checkpoints); "
                f"every number above: `metrics.json`."),
    ]
    metrics = {"records": records, "chains": chains, "base": base_rec, "train_reward": picker,
               "judges": judges, "eval_temperature": t, "wall_s": wall_s,
               "plots": [str(p.relative_to(out)) for _, p in made]}
    return write_report(out, title="lire-ray Evolve x Iterate grid", sections=sections,
                        metrics=metrics, plots=made)
