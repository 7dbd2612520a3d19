"""The self-enhancement run (paper Algorithm 1) from recipe to report.

:func:`run` reads top to bottom: check everything that can be checked without Ray, connect,
start the role actors and the trainer group, fix the reward normalisation, evaluate the starting
policy on held-out prompts, run the Evolve steps not yet complete (:func:`lire_ray.algorithm.
self_enhance`), evaluate the final policy, and write the report (:mod:`lire_ray.run_report`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from lire_ray import algorithm, drift, output
from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.evaluator import Evaluator
from lire_ray.inputs import load_prompt_rows, resolve_policy, resolve_reference
from lire_ray.losses import build_loss
from lire_ray.models import check_tokenizers, load_tokenizer
from lire_ray.run_report import finished_report, write_run_report
from lire_ray.rundir import RunDir
from lire_ray.runtime import RoleGroup, check_feasible, connect, disconnect, make_trainer
from lire_ray.runtime.cluster import namespace_for
from lire_ray.training.loggers import MetricSink

log = logging.getLogger(__name__)


def run(recipe: Recipe) -> Path:
    """Run Algorithm 1 as configured and return the path of ``report.md``.

    Raises:
        RunDirError: The run directory is non-empty without ``run.resume``, or a resumed run's
            recipe differs from its ``config.yaml`` in a key it cannot continue with.
        ConfigError, ModelLoadError, DataError, ActorFailure: As raised by the stages.
    """
    t0 = time.time()
    # Everything that can be checked without Ray is checked before anything is written.
    rundir = RunDir(recipe.run.dir, resume=recipe.run.resume)
    changes = drift.check_resume(rundir, recipe)
    finished = finished_report(rundir, recipe)
    if finished is not None:  # nothing left to run: nothing is started
        return finished
    loss = build_loss(recipe.loss.name, recipe.loss.params)
    if recipe.train_reward_name is None:
        raise ConfigError("the recipe has no reward models (rewards: [...])")
    labels = [rm.name for rm in recipe.rewards if rm.kind == "label"]
    if labels:
        raise ConfigError(f"reward model(s) {labels} are of kind label, which scores only a "
                          "dataset's own candidates, while self-enhancement scores new samples; "
                          "train on labels with jobs/train.py or jobs/compare.py on a prepared "
                          "pool")
    train_rows = load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    eval_rows = (load_prompt_rows(recipe.data.eval, recipe.data.eval_prompts)
                 if recipe.data.eval else [])
    policy = resolve_policy(recipe)
    reference = resolve_reference(recipe) if loss.needs_reference or eval_rows else None
    check_tokenizers(policy, reference, trust_remote_code=recipe.model.trust_remote_code)
    roles_needed = ("sampler", "reward") + (("reference",) if reference else ())
    if recipe.judge is not None and eval_rows:
        from lire_ray.studies.judge import preflight

        preflight(recipe)  # a judge that is down stops the run before it trains

    handle = connect(recipe.ray)
    roles, sink = None, None
    try:
        check_feasible(recipe.resources, roles_needed)
        rundir.create(recipe.to_yaml())
        joblog = output.keep_in(rundir.root)
        drift.record_changes(rundir, recipe, changes)
        if joblog is not None:
            log.info("output of Ray, vLLM, DeepSpeed and the actors: %s (run.verbose=true or "
                     "--debug shows it here)", joblog)
        log.info("run directory %s; Ray at %s; dashboard %s", rundir.root, handle.address,
                 handle.dashboard_url or "n/a")
        # One namespace per run directory: two runs on one cluster never share actor names.
        roles = RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, rundir.root),
                          policy=policy, rewards=True, reference=reference,
                          state_dir=rundir.root)
        sink = open_experiment(recipe, rundir)
        trainer = make_trainer(recipe, storage_path=str(rundir.root / "ray_train"),
                               name="policy", roles=roles, sink=sink)
        # Fitted once per run, before anything is scored, so every score uses the same scale.
        norm = roles.normalisation(train_rows)
        evaluator = (Evaluator(recipe, roles, eval_rows,
                               tokenizer=load_tokenizer(policy, trust_remote_code=recipe.model
                                                        .trust_remote_code))
                     if eval_rows else None)
        before = _cached(rundir, "before", evaluator)
        log_evaluation(sink, before, step=0)
        chain = algorithm.Chain(recipe, rundir, roles, trainer, base=policy, norm=norm, sink=sink)
        algorithm.self_enhance(chain, train_rows)
        after = _cached(rundir, f"after_e{recipe.evolve.steps}", evaluator)
        log_evaluation(sink, after, step=_last_global_step(rundir))
        llm_judge = _llm_judge(recipe, rundir, eval_rows, before, after)
    finally:
        if sink is not None:
            sink.close()
        if roles is not None:
            roles.stop()
        disconnect(handle)
    return write_run_report(recipe, rundir, before=before, after=after,
                            wall_s=time.time() - t0, llm_judge=llm_judge)


def _llm_judge(recipe: Recipe, rundir: RunDir, rows: list, before: dict | None,
               after: dict | None) -> dict | None:
    """The recipe's LLM judge on the first held-out response (lowest temperature) of the
    starting and the final policy against the human answers; None without a judge."""
    if recipe.judge is None or not before or not after:
        return None
    from lire_ray.studies.judge import judge_columns

    t = str(min(float(k) for k in before["generations"]))
    answers = {label: [s[0] for s in ev["generations"][t]["responses"]]
               for label, ev in (("before", before), ("after", after))}
    return judge_columns(recipe, rows, answers, out=rundir.root,
                         namespace=namespace_for(recipe.ray.namespace, rundir.root, "judge"))


def open_experiment(recipe: Recipe, rundir: RunDir) -> MetricSink | None:
    """The run's experiment in ``train.logger`` (``run.dir/tracking``; a resumed run continues
    the one recorded in ``run.dir/tracking.json``); None with ``train.logger=none``."""
    if recipe.train.logger == "none":
        return None
    t = recipe.train.tracking
    return MetricSink(recipe.train.logger, log_dir=rundir.root / "tracking",
                      run_name=t.name or rundir.root.name, config=recipe.model_dump(mode="json"),
                      project=t.project, entity=t.entity, tags=t.tags, state_dir=rundir.root)


def log_evaluation(sink: MetricSink | None, result: dict | None, *, step: int) -> None:
    """Log a held-out evaluation per judge and temperature (``eval/T<t>/...``)."""
    if sink is None or result is None:
        return
    for rec in result["records"]:
        flat = {f"{k}/{rm}": v for k in ("mean", "win_rate") for rm, v in rec[k].items()}
        flat.update({"avg_win_rate": rec["avg_win_rate"], "kl": rec["divergence"]["value"],
                     **{f"distinct_{n}": v for n, v in rec["distinct"].items()}})
        sink.log(flat, step, f"eval/T{rec['temperature']:g}")


def _last_global_step(rundir: RunDir) -> int:
    steps = [json.loads(line) for line in rundir.metrics_path.read_text().splitlines()] \
        if rundir.metrics_path.is_file() else []
    hist = [s["final_train_metrics"].get("step", 0) for s in steps
            if s.get("event") == "evolve_step"]
    return int(max(hist, default=0))


def _cached(rundir: RunDir, name: str, evaluator: Evaluator | None) -> dict | None:
    """The evaluation ``name`` of the served policy, computed once per run directory."""
    if evaluator is None:
        return None
    path = rundir.root / f"eval_{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    log.info("evaluating the served policy on %d held-out prompts (%s)", len(evaluator.rows),
             name)
    out = _jsonable(evaluator.evaluate().to_json)
    atomic_write_text(path, json.dumps(out))
    return out


def _jsonable(make: Callable[[], dict]) -> dict:
    return json.loads(json.dumps(make(), default=float))
