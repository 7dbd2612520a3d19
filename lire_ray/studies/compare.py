"""Every loss on the same pool and budget, over seeds: the paper's Table 2 (sec. 4.3).

Single-stage training on one pool: the base policy samples K candidates per training prompt
(human-written ones kept, paper sec. 4.7), every reward model scores them and the reference
policy annotates their log-probs, and the pool is written once with :mod:`lire_ray.pool`. Then,
for each (loss, seed), a :class:`~lire_ray.runtime.trainer.TrainerGroup` trains the base policy on that
pool with ``loss.name = loss`` and ``train.seed = seed`` (same epochs, learning rate and batch
size for every loss), the samplers serve the result, and it is evaluated on the held-out
prompts like ``jobs/evaluate.py`` does. The table reports mean ± 95% Student-t confidence
interval over seeds. The Evolve x Iterate grid (Table 6) is :mod:`lire_ray.studies.grid`.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lire_ray.config import LossConfig, Recipe
from lire_ray.errors import ActorFailure, ConfigError
from lire_ray.evaluator import Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.metrics.summary import flatten_run, flip_rates
from lire_ray.pool import read_pool_dataset
from lire_ray.rewards import NORM_METADATA_KEY
from lire_ray.rundir import prepare_output
from lire_ray.runtime import (
    PoolBuilder,
    RoleGroup,
    TrainerGroup,
    connect,
    disconnect,
    namespace_for,
)
from lire_ray.studies.evaluate import check_eval_recipe, judges_of
from lire_ray.training.result import PolicyInit, policy_in

log = logging.getLogger(__name__)

#: What a comparison writes into its output directory (cleared by ``--overwrite``).
OWNED = ("report.md", "metrics.json", "plots", "pool", "checkpoints", "ray_train", "runs.jsonl",
         ".state", ".pool.parts")


def check_losses(losses: Sequence[str]) -> list[str]:
    """The requested losses, in order, without repeats.

    Raises:
        ConfigError: No loss, or a name the registry does not know.
    """
    from lire_ray.losses import list_losses

    known = list_losses()
    unknown = [x for x in losses if x not in known]
    if unknown or not losses:
        raise ConfigError(f"unknown or no losses {unknown or list(losses)}; available: "
                          f"{', '.join(known)}")
    return list(dict.fromkeys(losses))


def loss_recipe(recipe: Recipe, loss: str, seed: int) -> Recipe:
    """The recipe for one (loss, seed) run: only ``loss`` and ``train.seed`` change.

    ``loss.params`` of the recipe apply to the loss it names; other losses take their defaults.
    """
    params = dict(recipe.loss.params) if loss == recipe.loss.name else {}
    return recipe.model_copy(update={"loss": LossConfig.model_validate({"name": loss,
                                                                         "params": params}),
                                     "train": recipe.train.model_copy(update={"seed": seed})})


def run_compare(recipe: Recipe, *, losses: Sequence[str], seeds: Sequence[int],
                out_dir: str | Path | None, overwrite: bool = False) -> Path:
    """Train and evaluate every (loss, seed) on one pool; write the comparison report.

    Args:
        recipe: The recipe (its ``loss`` section only supplies that loss's parameters).
        losses: Registry names of the losses to compare.
        seeds: ``train.seed`` values; each loss is trained once per seed.
        out_dir: Output directory; default ``<run.dir>/compare``.
        overwrite: Replace the results of an earlier comparison in ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Unusable recipe, unknown loss, no seeds.
        RunDirError: ``out_dir`` is not empty and ``overwrite`` is False.
        ActorFailure, ModelLoadError, DataError: From the actors and the trainer.
    """
    from lire_ray.models import load_tokenizer
    from lire_ray.studies.compare_report import write_compare_report

    t0 = time.time()
    check_eval_recipe(recipe)
    losses = check_losses(losses)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    out = prepare_output(Path(out_dir or Path(recipe.run.dir) / "compare"),
                         overwrite=overwrite, owned=OWNED)
    base = resolve_policy(recipe)
    train_rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    eval_rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges, picker = judges_of(recipe), recipe.train_reward_name or ""
    kl_valid = recipe.sampler.top_p == 1.0
    if not kl_valid:
        log.warning("sampler.top_p=%s < 1: the KL to the reference is not estimated",
                    recipe.sampler.top_p)
    kw: dict[str, Any] = {"judges": judges, "with_kl": kl_valid}
    t_first = min(recipe.eval.temperatures)
    runs: list[dict] = []
    first_scores: dict[str, Any] = {}
    handle = connect(recipe.ray)
    try:
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "compare", out),
                       policy=base, rewards=True, reference=resolve_reference(recipe),
                       state_dir=out / ".state") as roles:
            norm = roles.normalisation(train_rows)
            ev = Evaluator(recipe, roles, eval_rows, tokenizer=load_tokenizer(
                base, trust_remote_code=recipe.model.trust_remote_code))
            base_res = ev.evaluate(**kw)
            bon = ev.best_of_n(recipe.eval.best_of_n, temperature=recipe.sampler.temperature,
                               picker=picker, judges=judges)
            log.info("building the pool: %d prompts x K=%d with the base policy",
                     len(train_rows), recipe.sampler.num_candidates)
            manifest = PoolBuilder(recipe, roles, reference=True).build(
                train_rows, out_dir=out / "pool", parts_dir=out / ".pool.parts",
                metadata={"sampled_by": base, "num_candidates": recipe.sampler.num_candidates,
                          "sampler_seed": recipe.sampler.seed,
                          **({NORM_METADATA_KEY: norm} if norm else {})})
            for version, (loss, seed) in enumerate(itertools.product(losses, seeds), start=1):
                label = f"{loss}-s{seed}"
                log.info("training %s on the pool (%d prompts)", label, manifest["num_rows"])
                trainer = TrainerGroup(loss_recipe(recipe, loss, seed),
                                       storage_path=str(out / "ray_train"), name=label)
                dataset = read_pool_dataset(out / "pool").random_shuffle(seed=seed)
                result = trainer.fit(dataset, num_prompts=manifest["num_rows"],
                                     init=PolicyInit(base),
                                     output_dir=str(out / "checkpoints" / label),
                                     epochs=recipe.train.epochs, policy_version=1)
                if result.checkpoint_dir is None:
                    raise ActorFailure("trainer", f"{label} finished without a complete "
                                       "checkpoint")
                roles.serve(policy_in(result.checkpoint_dir, base=base), version)
                res = ev.evaluate(**kw)
                run = {"loss": loss, "seed": seed, "checkpoint": str(result.checkpoint_dir),
                       "records": res.records, "kl": res.kl, "table": res.record(t_first),
                       "negative_flip_rate": flip_rates(res.generation(t_first).scores,
                                                        base_res.generation(t_first).scores,
                                                        judges),
                       "final_loss": result.metrics.get("loss", float("nan")),
                       "history": result.history}
                run["flat"] = flatten_run(run, judges)
                runs.append(run)
                first_scores.setdefault(loss, res.generation(t_first).scores)
                with open(out / "runs.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({k: v for k, v in run.items() if k != "history"},
                                        default=float) + "\n")
    finally:
        disconnect(handle)
    base_run = {"table": base_res.record(t_first), "kl": base_res.kl,
                "negative_flip_rate": {j: 0.0 for j in judges}}
    meta = {"losses": losses, "seeds": seeds, "base_policy": base, "train_reward": picker,
            "judges": judges, "eval_data": recipe.data.eval, "prompts": len(eval_rows),
            "train_data": recipe.data.train, "pool": manifest,
            "num_candidates": recipe.sampler.num_candidates, "epochs": recipe.train.epochs,
            "lr": recipe.train.lr, "eval_temperature": t_first, "kl_estimated": kl_valid}
    return write_compare_report(out, meta=meta, runs=runs, base=base_res,
                                base_flat=flatten_run(base_run, judges), best_of_n=bon,
                                first_scores=first_scores, wall_s=time.time() - t0)
