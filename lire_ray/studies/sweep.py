"""A sweep over any recipe key (paper Table 4: the SFT weight alpha; Table 7: the temperature T).

``--sweep loss.params.sft_weight=0,0.02,0.1`` makes one arm per value: the recipe with that
override, validated like any override. How the arms are run depends on what the key changes:

- keys under ``loss.`` and ``train.`` change training only, so by default every value trains on
  one shared pool through the comparison (:func:`lire_ray.studies.compare.run_compare`: the
  prepared pool's own candidates, or the base policy's samples), as the paper's Tables 4 and 7
  were single-stage runs on fixed data;
- keys under ``evolve.`` and ``sampler.num_candidates`` / ``sampler.rso.*`` change how
  candidates are made, so each value runs Algorithm 1 (``algorithm.self_enhance``, through
  :func:`lire_ray.studies.grid.run_chain`) from the base policy, and the final policy is
  evaluated; ``self_enhance=True`` runs loss and train keys this way too;
- other keys (model, rewards, sampler settings the actors start with, data, resources,
  evaluation) change the actors or the evaluation itself, which one role group cannot share:
  they are refused, naming the key.

Both paths write the same ``metrics.json`` layout and report as the comparison.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from lire_ray.config import Recipe, apply_override, format_validation_error, parse_override
from lire_ray.errors import ConfigError
from lire_ray.evaluator import Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.metrics import grad_health
from lire_ray.rundir import prepare_output
from lire_ray.runtime import RoleGroup, connect, disconnect, namespace_for
from lire_ray.studies import candidates as cands
from lire_ray.studies.compare import (
    OWNED,
    Arm,
    Timeline,
    chain_seed,
    check_seeds,
    evaluate_json,
    evaluate_run,
    flat_of,
    picker_of,
    run_compare,
)
from lire_ray.studies.evaluate import check_eval_recipe, judges_of

log = logging.getLogger(__name__)

#: Keys that change training only: one shared pool serves every value.
TRAINING_PREFIXES = ("loss.", "train.")
#: Keys that change how Algorithm 1 makes candidates, with the same actors.
CHAIN_PREFIXES = ("evolve.", "sampler.num_candidates", "sampler.rso.")


def parse_sweep(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` into the key and its values (each parsed like an override value).

    Raises:
        ConfigError: No ``=``, no key, fewer than two values, or repeated values.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError(f"--sweep '{text}' is not of the form key.path=V1,V2,...")
    values = [parse_override(f"{key}={word.strip()}")[1] for word in raw.split(",")]
    if len(values) < 2 or len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
        raise ConfigError(f"--sweep {key} needs at least two distinct values, got {values}")
    return key, values


def runner_for(key: str, *, self_enhance: bool = False) -> str:
    """``compare`` (one shared pool) or ``self_enhance`` (Algorithm 1 per value) for ``key``.

    Raises:
        ConfigError: A key the sweep cannot vary with one set of actors.
    """
    if key.startswith(TRAINING_PREFIXES):
        return "self_enhance" if self_enhance else "compare"
    if key == "sampler.num_candidates" or key.startswith(CHAIN_PREFIXES):
        return "self_enhance"
    raise ConfigError(f"--sweep {key}: a sweep varies keys under "
                      f"{', '.join(TRAINING_PREFIXES + CHAIN_PREFIXES)} (training, or how "
                      "Algorithm 1 makes candidates); this key changes the actors or the "
                      "evaluation, so run jobs/self_enhance.py or jobs/compare.py once per value")


def sweep_arms(recipe: Recipe, key: str, values: Sequence) -> list[Arm]:
    """One arm per value: ``recipe`` with ``key=value``, validated.

    Raises:
        ConfigError: A value the recipe schema or the loss refuses (names key and value).
    """
    from pydantic import ValidationError

    arms = []
    for value in values:
        data = recipe.model_dump(mode="json")
        apply_override(data, key.split("."), value)
        try:
            variant = Recipe.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, f"--sweep {key}={value}")) from None
        arm = Arm(f"{key}={value}", variant, value)
        arm.describe()
        arms.append(arm)
    return arms


def run_sweep(recipe: Recipe, *, key: str, values: Sequence, seeds: Sequence[int],
              candidates: str | None, out_dir: str | Path | None, overwrite: bool = False,
              self_enhance: bool = False) -> Path:
    """Run every value of ``key`` over ``seeds`` and write the report (see the module doc).

    Args:
        recipe: The recipe every value starts from.
        key: The swept recipe key.
        values: Its values.
        seeds: ``train.seed`` values.
        candidates: ``pool`` or ``sample`` for the shared-pool path (default from data.train).
        out_dir: Output directory; default ``<run.dir>/sweep``.
        overwrite: Replace an earlier sweep's results in ``out_dir``.
        self_enhance: Run loss and train keys through Algorithm 1 too.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: A key the sweep cannot vary, or a value the recipe refuses.
    """
    runner = runner_for(key, self_enhance=self_enhance)
    arms = sweep_arms(recipe, key, values)
    study = {"kind": "sweep", "key": key, "values": list(values), "runner": runner,
             "evolve_steps": recipe.evolve.steps, "epochs": recipe.train.epochs}
    out_dir = out_dir or Path(recipe.run.dir) / "sweep"
    if runner == "compare":
        return run_compare(recipe, arms=arms, seeds=seeds, candidates=candidates,
                           out_dir=out_dir, overwrite=overwrite, study=study)
    return _run_chains(recipe, arms, check_seeds(seeds), Path(out_dir), overwrite, study)


def _run_chains(recipe: Recipe, arms: Sequence[Arm], seeds: list[int], out_dir: Path,
                overwrite: bool, study: dict) -> Path:
    """Algorithm 1 per (value, seed) from the base policy; the final policies evaluated."""
    from lire_ray.models import load_tokenizer
    from lire_ray.studies.compare_report import write_compare_report
    from lire_ray.studies.grid import check_chain_recipe

    t0 = time.time()
    check_eval_recipe(recipe)
    check_chain_recipe(recipe)
    rows = cands.training_rows(recipe, "sample")
    out = prepare_output(out_dir, overwrite=overwrite, owned=OWNED)
    base = resolve_policy(recipe)
    eval_rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges = judges_of(recipe)
    described = [a.describe() for a in arms]
    tokenizer = load_tokenizer(base, trust_remote_code=recipe.model.trust_remote_code)
    timeline, runs, norm, base_res, bon = Timeline(), [], None, None, None
    handle = connect(recipe.ray)
    try:
        for seed in seeds:
            # As in the grid: a seed's samplers draw its Evolve samples; evaluation keeps the
            # recipe's sampling seed for every policy.
            with RoleGroup(chain_seed(recipe, seed), namespace=namespace_for(
                    recipe.ray.namespace, "sweep", out, f"s{seed}"), policy=base, rewards=True,
                    reference=resolve_reference(recipe), state_dir=out / ".state" / f"s{seed}"
                    ) as roles:
                timeline.roles("started", roles)
                norm = roles.normalisation(rows, frozen=norm)
                ev = Evaluator(recipe, roles, eval_rows, tokenizer=tokenizer)
                if base_res is None:
                    base_res = ev.evaluate(judges=judges)
                    bon = ev.best_of_n(recipe.eval.best_of_n,
                                       temperature=recipe.sampler.temperature,
                                       picker=picker_of(recipe), judges=judges)
                for arm in arms:
                    runs.append(_chain_run(arm, seed, roles, ev, base_res, rows, out, base,
                                           norm, judges, timeline))
            timeline.roles("stopped", roles)
    finally:
        disconnect(handle)
    assert base_res is not None  # the first seed evaluated the base policy
    t = min(recipe.eval.temperatures)
    base_run = evaluate_json(base_res, t)
    base_run["flat"] = flat_of({**base_run, "negative_flip_rate": {j: 0.0 for j in judges}},
                               judges)
    metrics = {
        "study": study, "arms": described, "seeds": seeds, "base": base_run,
        "best_of_n": bon, "runs": runs, "timeline": timeline.events,
        "setup": {"candidates": "self_enhance", "base_policy": base,
                  "train_reward": recipe.train_reward_name, "judges": judges,
                  "train_data": recipe.data.train, "eval_data": recipe.data.eval,
                  "prompts": len(eval_rows), "pool": cands.pool_summary(rows),
                  "num_candidates": recipe.sampler.num_candidates,
                  "epochs": recipe.train.epochs, "lr": recipe.train.lr,
                  "eval_temperature": t, "sampler_seed": recipe.sampler.seed},
        "wall_s": time.time() - t0}
    return write_compare_report(out, json.loads(json.dumps(metrics, default=float)))


def _chain_run(arm: Arm, seed: int, roles: RoleGroup, ev: Evaluator, base_res, rows, out: Path,
               base: str, norm: dict, judges: list[str], timeline: Timeline) -> dict:
    """Algorithm 1 for one (value, seed) from the base policy; its final policy evaluated."""
    from lire_ray.studies.grid import run_chain

    steps: list[dict] = []
    root = out / "chains" / f"{arm.slug}-s{seed}"
    start = time.time()
    run_chain(chain_seed(arm.recipe, seed), roles, rows, root, base=base, norm=norm,
              on_step=lambda e, _p, step: steps.append(step))
    timeline.training(root.name, start, time.time())
    run = {"label": arm.label, "loss": arm.recipe.loss.name, "seed": seed, "value": arm.value,
           "checkpoint": str(root / "checkpoints"),
           "final_loss": steps[-1]["final_train_metrics"].get("loss", float("nan")),
           "train_s": time.time() - start,
           "grad_health": grad_health.merge([st.get("grad_health") for st in steps]),
           "history": [{"step": st["step"],
                        "loss": st["final_train_metrics"].get("loss", float("nan")),
                        "pool_reward_mean": st["policy_reward_mean"]} for st in steps]}
    run.update(evaluate_run(ev, base_res, judges=judges))
    run["flat"] = flat_of(run, judges)
    return run
