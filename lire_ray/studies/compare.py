"""Every loss (or every value of a swept key) on the same candidates and budget, over seeds:
the paper's Table 2 (sec. 4.3), and Tables 4 and 7 when a sweep runs through it.

One comparison has *arms* (:class:`Arm`: a label and the recipe it trains with; one per loss,
or one per swept value) and seeds. In three phases:

1. **Pool**: the candidates every arm trains on are written once to ``<out>/pool``
   (:mod:`lire_ray.studies.candidates`): with ``--candidates pool`` the prepared pool's own
   candidates (reference log-probs added by reference actors when a loss needs them; no
   sampler is started), with ``--candidates sample`` the base policy's samples, scored by every
   reward model.
2. **Train**: for each (arm, seed), a :class:`~lire_ray.runtime.TrainerGroup` trains the base
   policy on that pool (``train.seed = seed``, the arm's loss, parameters and budget).
3. **Evaluate**: samplers serve the base policy and then each trained policy, and the
   :class:`~lire_ray.evaluator.Evaluator` evaluates each on the held-out prompts under every
   judge (rewards, win rates against the human answer, KL, distinct-n).

With ``--candidates pool`` the samplers are started in phase 3 only; ``timeline`` in
``metrics.json`` records when every role group started and stopped and when each training run
ran, with the samplers alive during it. The report is rendered from ``metrics.json`` alone
(:mod:`lire_ray.studies.compare_report`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lire_ray.config import LossConfig, Recipe
from lire_ray.errors import ActorFailure, ConfigError
from lire_ray.evaluator import EvalResult, Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference, source_metadata
from lire_ray.losses import build_loss
from lire_ray.metrics import grad_health
from lire_ray.metrics.summary import first_samples, flatten_run, flip_rates
from lire_ray.pool import PoolRow, read_pool, table_to_rows, write_pool
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
from lire_ray.studies import candidates as cands
from lire_ray.studies.evaluate import check_eval_recipe, judges_of
from lire_ray.training.result import PolicyInit, policy_in

log = logging.getLogger(__name__)

#: What a comparison writes into its output directory (cleared by ``--overwrite``).
OWNED = ("report.md", "metrics.json", "plots", "pool", "checkpoints", "ray_train", "runs.jsonl",
         "llm_judge.jsonl",
         ".state", ".pool.parts", "chains")
#: How each loss uses a list of K > 2 candidates (pairwise losses: their ``pairs`` parameter).
LIST_USE = {"lire": "listwise (softmax over all K)", "pl": "listwise (Plackett-Luce)",
            "pro": "listwise (Plackett-Luce prefixes)", "rrhf": "all ranked pairs",
            "sft": "one target per prompt"}


@dataclass(frozen=True)
class Arm:
    """One method of a comparison.

    Attributes:
        label: Its name in tables (``dpo``, ``loss.params.temperature=2``).
        recipe: The recipe it trains with (loss, parameters, budget).
        value: The swept value, for sweeps.
    """

    label: str
    recipe: Recipe
    value: Any = None

    @property
    def slug(self) -> str:
        """The label as a directory name."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label.removeprefix("loss.params."))

    def describe(self) -> dict:
        """Loss, full parameters (defaults included) and how it pairs K > 2 candidates.

        Raises:
            ConfigError: The loss or its parameters are invalid.
        """
        built = build_loss(self.recipe.loss.name, self.recipe.loss.params)
        pairing = (f"pairs: {built.params['pairs']}" if "pairs" in built.params
                   else LIST_USE.get(built.name, "-"))
        return {"label": self.label, "loss": built.name, "params": built.params,
                "pairing": pairing, "value": self.value,
                "needs_reference": built.needs_reference}


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


def loss_recipe(recipe: Recipe, loss: str) -> Recipe:
    """The recipe of one loss: ``loss.params`` when it is the recipe's own loss, and
    ``loss.params_by_name[loss]`` (merged in by the recipe schema); defaults otherwise."""
    params = dict(recipe.loss.params) if loss == recipe.loss.name else {}
    return recipe.model_copy(update={"loss": LossConfig.model_validate(
        {"name": loss, "params": params, "params_by_name": recipe.loss.params_by_name})})


def loss_arms(recipe: Recipe, losses: Sequence[str]) -> list[Arm]:
    """One arm per loss (see :func:`loss_recipe`)."""
    return [Arm(loss, loss_recipe(recipe, loss)) for loss in check_losses(losses)]


def with_seed(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with ``train.seed = seed``."""
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"seed": seed})})


def chain_seed(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` for one seed of a self-enhancement chain: ``train.seed`` and
    ``sampler.seed`` (the Evolve steps' samples) both ``seed``. Evaluation keeps the recipe's
    own sampling seed, so every chain is judged on the same draws (common random numbers)."""
    return with_seed(recipe, seed).model_copy(update={
        "sampler": recipe.sampler.model_copy(update={"seed": seed})})


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """Seeds in order without repeats.

    Raises:
        ConfigError: No seed.
    """
    out = list(dict.fromkeys(int(s) for s in seeds))
    if not out:
        raise ConfigError("--seeds needs at least one seed")
    return out


class Timeline:
    """When role groups start and stop and when training runs, with the samplers alive then."""

    def __init__(self):
        self.t0, self.events = time.time(), []
        self._alive: dict[int, dict[str, int]] = {}

    @property
    def samplers(self) -> int:
        """Sampler actors of the role groups started and not yet stopped."""
        return sum(c["sampler"] for c in self._alive.values())

    def roles(self, what: str, roles: RoleGroup) -> None:
        """Record that ``roles`` was ``started`` (counting its actors) or ``stopped``."""
        if what == "started":
            self._alive[id(roles)] = {r: len(h) for r, h in roles.handles.items()}
            counts = self._alive[id(roles)]
        else:
            counts = self._alive.pop(id(roles), {})
        self.events.append({"event": f"roles {what}", "t": time.time() - self.t0, **counts})

    def training(self, label: str, start: float, end: float) -> None:
        self.events.append({"event": "training", "label": label, "t": start - self.t0,
                            "end": end - self.t0, "samplers_alive": self.samplers})


def picker_of(recipe: Recipe) -> str:
    """The reward model Best-of-n picks with: the training reward, or the first judge when the
    training reward cannot score new samples (``kind: label``)."""
    name = recipe.train_reward_name
    return name if name in judges_of(recipe) else judges_of(recipe)[0]


def pool_dataset(pool_dir: Path, seed: int):
    """A written pool as a Ray dataset in a seeded random row order, shuffled here: one
    comparison pool is small, and a Ray Data shuffle would start tasks for every run."""
    import random

    import ray.data

    table = read_pool(pool_dir)
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    return ray.data.from_arrow(table.take(order))


def evaluate_run(ev: Evaluator, base: EvalResult, *, judges: list[str]) -> dict:
    """The served policy's evaluation as a JSON-ready run record (all temperatures, KL,
    first-sample scores per prompt at the first temperature, negative flips vs ``base``)."""
    t = min(ev.recipe.eval.temperatures)
    res = ev.evaluate(judges=judges)
    scores = res.generation(t).scores
    run = {"records": res.records, "kl": res.kl, "table": res.record(t),
           "held_out_prompts": res.prompts, "first_scores": first_samples(scores),
           "first_responses": [s[0] for s in res.generation(t).responses],
           "negative_flip_rate": flip_rates(scores, base.generation(t).scores, judges)}
    return json.loads(json.dumps(run, default=float))


def run_compare(recipe: Recipe, *, arms: Sequence[Arm], seeds: Sequence[int],
                candidates: str | None = None, out_dir: str | Path | None,
                overwrite: bool = False, study: dict | None = None) -> Path:
    """Train every (arm, seed) on one pool, evaluate each, write the report.

    Args:
        recipe: The recipe (model, data, sampler, rewards, eval, resources; each arm brings its
            own loss and training settings).
        arms: The methods compared (:func:`loss_arms`, or a sweep's values).
        seeds: ``train.seed`` values; each arm is trained once per seed.
        candidates: ``pool`` or ``sample`` (see :mod:`lire_ray.studies.candidates`); default
            from ``data.train``.
        out_dir: Output directory; default ``<run.dir>/compare``.
        overwrite: Replace the results of an earlier comparison in ``out_dir``.
        study: What is compared, for the report (``{"kind": "sweep", "key", ...}``).

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: Unusable recipe, loss or parameters, no seeds.
        DataError: A pool without candidates or training-reward scores (before Ray starts).
        RunDirError: ``out_dir`` is not empty and ``overwrite`` is False.
        ActorFailure, ModelLoadError: From the actors and the trainer.
    """
    from lire_ray.models import load_tokenizer
    from lire_ray.studies.compare_report import write_compare_report

    t0 = time.time()
    check_eval_recipe(recipe)
    seeds = check_seeds(seeds)
    mode = candidates or cands.default_mode(recipe)
    described = [a.describe() for a in arms]
    if len({a.slug for a in arms}) < len(arms):
        raise ConfigError(f"arm labels {[a.label for a in arms]} collide as directory names")
    rows = cands.training_rows(recipe, mode)
    if recipe.judge is not None:
        from lire_ray.studies.judge import preflight

        preflight(recipe)  # a judge that is down stops the study before it trains
    out = prepare_output(Path(out_dir or Path(recipe.run.dir) / "compare"),
                         overwrite=overwrite, owned=OWNED)
    base = resolve_policy(recipe)
    eval_rows = load_prompt_rows(recipe.data.eval or "", recipe.data.eval_prompts)
    judges = judges_of(recipe)
    needs_ref = any(d["needs_reference"] for d in described)
    reference = resolve_reference(recipe)
    ns = namespace_for(recipe.ray.namespace, "compare", out)
    timeline, trained = Timeline(), []
    handle = connect(recipe.ray)
    try:
        if mode == "pool":
            manifest = _write_pool(recipe, rows, out, ns, timeline,
                                   reference if needs_ref else None)
            trained = _train_all(arms, seeds, out, manifest, base, timeline)
            roles = RoleGroup(recipe, namespace=ns, policy=base, rewards=True,
                              reference=reference, state_dir=out / ".state")
            frozen = source_metadata(recipe.data.train).get(NORM_METADATA_KEY)
        else:
            roles = RoleGroup(recipe, namespace=ns, policy=base, rewards=True,
                              reference=reference, state_dir=out / ".state")
            frozen = None
        timeline.roles("started", roles)
        try:
            norm = roles.normalisation(rows, frozen=frozen)
            ev = Evaluator(recipe, roles, eval_rows, tokenizer=load_tokenizer(
                base, trust_remote_code=recipe.model.trust_remote_code))
            log.info("evaluating the base policy on %d held-out prompts", len(eval_rows))
            base_res = ev.evaluate(judges=judges)
            bon = ev.best_of_n(recipe.eval.best_of_n, temperature=recipe.sampler.temperature,
                               picker=picker_of(recipe), judges=judges)
            if mode == "sample":
                manifest = _sample_pool(recipe, roles, rows, out, base, norm)
                roles.set_phase("train")
                trained = _train_all(arms, seeds, out, manifest, base, timeline)
                roles.set_phase("sample")
            runs = []
            for version, run in enumerate(trained, start=1):
                log.info("evaluating %s seed %d", run["label"], run["seed"])
                roles.serve(policy_in(run["checkpoint"], base=base), version)
                run.update(evaluate_run(ev, base_res, judges=judges))
                run["flat"] = flat_of(run, judges)
                runs.append(run)
                with open(out / "runs.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({k: v for k, v in run.items() if k != "history"},
                                        default=float) + "\n")
        finally:
            roles.stop()
            timeline.roles("stopped", roles)
        t = min(recipe.eval.temperatures)
        llm_judge = None
        if recipe.judge is not None:
            from lire_ray.studies.judge import judge_columns

            answers = {"base policy (no training)": [s[0] for s in
                                                     base_res.generation(t).responses]}
            answers.update({f"{r['label']} s{r['seed']}": r["first_responses"] for r in runs})
            llm_judge = judge_columns(recipe, eval_rows, answers, namespace=ns + "-judge",
                                      out=out)
    finally:
        disconnect(handle)
    base_run = evaluate_json(base_res, t)
    metrics = {
        "study": study or {"kind": "compare"},
        "setup": {"candidates": mode, "base_policy": base, "train_reward":
                  recipe.train_reward_name, "judges": judges, "train_data": recipe.data.train,
                  "eval_data": recipe.data.eval, "prompts": len(eval_rows),
                  # What the losses trained on: the prepared rows, or the pool sampled here.
                  "pool": {**cands.pool_summary(rows if mode == "pool" else table_to_rows(
                      read_pool(out / "pool"))), "manifest": manifest},
                  "num_candidates": recipe.sampler.num_candidates,
                  "epochs": recipe.train.epochs, "lr": recipe.train.lr,
                  "eval_temperature": t,
                  "sampler_seed": recipe.sampler.seed},
        "arms": described, "seeds": seeds, "base": base_run, "best_of_n": bon,
        "runs": runs, "timeline": timeline.events, "wall_s": time.time() - t0}
    if llm_judge is not None:
        metrics["llm_judge"] = llm_judge
    metrics["base"]["flat"] = flat_of({**base_run, "negative_flip_rate":
                                       {j: 0.0 for j in judges}}, judges)
    return write_compare_report(out, metrics)


def flat_of(run: dict, judges: list[str]) -> dict[str, float]:
    """A run's table columns (:func:`~lire_ray.metrics.summary.flatten_run` and distinct-2)."""
    return {**flatten_run(run, judges), "distinct_2": run["table"]["distinct"]["2"]}


def evaluate_json(res: EvalResult, t: float) -> dict:
    """An evaluation as the report reads it (records, KL, first-sample scores at ``t``)."""
    return json.loads(json.dumps({"records": res.records, "kl": res.kl, "table": res.record(t),
                                  "held_out_prompts": res.prompts,
                                  "first_scores": first_samples(res.generation(t).scores)},
                                 default=float))


def _write_pool(recipe: Recipe, rows: Sequence[PoolRow], out: Path, namespace: str,
                timeline: Timeline, reference: str | None) -> dict:
    """The pool's own candidates written to ``out/pool``; reference actors (no sampler) add
    reference log-probs when a loss needs them."""
    meta = {"candidates": "pool", "source": recipe.data.train}
    if reference is None:
        return write_pool(rows, out / "pool", metadata=meta)
    with RoleGroup(recipe, namespace=namespace, reference=reference,
                   state_dir=out / ".state") as roles:
        timeline.roles("started", roles)
        log.info("reference log-probs of %d prompts' own candidates", len(rows))
        manifest = PoolBuilder(recipe, roles, sample=False, score=False, reference=True).build(
            rows, out_dir=out / "pool", parts_dir=out / ".pool.parts", metadata=meta,
            what="reference log-probs")
    timeline.roles("stopped", roles)
    return manifest


def _sample_pool(recipe: Recipe, roles: RoleGroup, rows: Sequence[PoolRow], out: Path,
                 base: str, norm: dict) -> dict:
    """K candidates per prompt from the base policy, scored, with reference log-probs."""
    log.info("building the pool: %d prompts x K=%d with the base policy", len(rows),
             recipe.sampler.num_candidates)
    return PoolBuilder(recipe, roles, reference=bool(roles.references)).build(
        rows, out_dir=out / "pool", parts_dir=out / ".pool.parts",
        metadata={"candidates": "sample", "sampled_by": base,
                  "num_candidates": recipe.sampler.num_candidates,
                  "sampler_seed": recipe.sampler.seed,
                  **({NORM_METADATA_KEY: norm} if norm else {})})


def _train_all(arms: Sequence[Arm], seeds: Sequence[int], out: Path, manifest: dict, base: str,
               timeline: Timeline) -> list[dict]:
    """Train every (arm, seed) on ``out/pool``; one record per run, in order."""
    trained = []
    for arm in arms:
        for seed in seeds:
            name = f"{arm.slug}-s{seed}"
            recipe = with_seed(arm.recipe, seed)
            log.info("training %s (seed %d) on the pool (%d prompts)", arm.label, seed,
                     manifest["num_rows"])
            start = time.time()
            result = TrainerGroup(recipe, storage_path=str(out / "ray_train"), name=name).fit(
                pool_dataset(out / "pool", seed),
                num_prompts=manifest["num_rows"], init=PolicyInit(base),
                output_dir=str(out / "checkpoints" / name), epochs=recipe.train.epochs,
                policy_version=1)
            timeline.training(name, start, time.time())
            if result.checkpoint_dir is None:
                raise ActorFailure("trainer", f"{name} finished without a complete checkpoint")
            trained.append(json.loads(json.dumps({
                "label": arm.label, "loss": recipe.loss.name, "seed": seed,
                "value": arm.value, "checkpoint": str(result.checkpoint_dir),
                "final_loss": result.metrics.get("loss", float("nan")),
                "train_s": time.time() - start, "history": result.history,
                "grad_health": grad_health.summarize(result.history)}, default=float)))
    return trained
