"""The self-enhancement run (paper Algorithm 1) from recipe to report.

:func:`run` reads top to bottom: prepare the run directory and the initial policy, connect to
Ray, start the role actors and the trainer group, evaluate the starting policy on held-out
prompts, run the remaining Evolve steps (each recorded only once its pool and checkpoint are
complete, so ``resume=true`` continues after the last completed one), evaluate again, and write
the report. The per-step logic is in :mod:`lire_ray.pipeline`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from lire_ray import evaluation as ev
from lire_ray import pipeline, telemetry
from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.models import check_tokenizers
from lire_ray.report import markdown_table, plot_curves, plot_reward_distribution, write_report
from lire_ray.rundir import RunDir

log = logging.getLogger(__name__)


def _eval_summary(result: dict) -> dict:
    """Per reward model: mean of the first sample per prompt, and the win rate vs human."""
    first = {rm: [s[0] for s in per] for rm, per in result["scores"].items()}
    return {"per_prompt": first, "summary": ev.summarize(first, result["human"] or None)}


def _cached_eval(rundir: RunDir, name: str, compute) -> dict:
    path = rundir.root / f"eval_{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    out = compute()
    atomic_write_text(path, json.dumps(out))
    return out


def run(recipe: Recipe) -> Path:
    """Run Algorithm 1 as configured and return the path of ``report.md``.

    Raises:
        RunDirError: The run directory is non-empty without ``run.resume``.
        ConfigError, ModelLoadError, DataError, ActorFailure: As raised by the stages.
    """
    from actors.trainer import TrainerGroup
    from lire_ray import cluster
    from lire_ray.losses import build_loss

    t0 = time.time()
    # Everything that can be checked without Ray is checked before anything is written.
    rundir = RunDir(recipe.run.dir, resume=recipe.run.resume)
    # One namespace per run directory: two runs on one cluster never share actor names.
    ns = f"{recipe.ray.namespace}-{hashlib.sha1(str(rundir.root).encode()).hexdigest()[:8]}"
    recipe = recipe.model_copy(update={"ray": recipe.ray.model_copy(update={"namespace": ns})})
    loss = build_loss(recipe.loss.name, recipe.loss.params)
    if recipe.train_reward_name is None:
        raise ConfigError("the recipe has no reward models (rewards: [...])")
    train_rows = pipeline.load_prompt_rows(recipe.data.train, recipe.data.max_prompts)
    eval_rows = (pipeline.load_prompt_rows(recipe.data.eval, recipe.data.eval_prompts)
                 if recipe.data.eval else [])
    policy = pipeline.resolve_policy(recipe)
    check_tokenizers(policy, recipe.model.reference,
                     trust_remote_code=recipe.model.trust_remote_code)
    handle = cluster.connect(recipe.ray)
    try:
        cluster.check_feasible(recipe.resources, ("sampler", "reward", "reference")
                               if loss.needs_reference else ("sampler", "reward"))
    except BaseException:
        cluster.disconnect(handle)
        raise
    rundir.create(recipe.to_yaml())
    log.info("run directory %s; Ray at %s; dashboard %s", rundir.root, handle.address,
             handle.dashboard_url or "n/a")
    roles = pipeline.Roles(recipe, policy, needs_reference=loss.needs_reference,
                           state_file=rundir.root / "served_policy.json")
    ahead = None  # the next step's pool, when it is being sampled ahead of training
    try:
        trainer = TrainerGroup(recipe, storage_path=str(rundir.root / "ray_train"), name="policy")
        state = rundir.load_state()
        # Fitted (once per run) before anything is scored, so every score uses the same scale.
        norm = roles.fit_normalisation(recipe, train_rows)
        before = (_cached_eval(rundir, "before", lambda: pipeline.evaluate_policy(
            recipe, roles, eval_rows, temperature=0.0)) if eval_rows else None)
        current = pipeline.PolicyInit(policy)
        if state.completed:
            last = state.completed[-1]
            current = _push(roles, rundir.checkpoint_dir(last), last, base=policy)
            log.info("resuming after Evolve step %d", last)
        for step in range(len(state.completed) + 1, recipe.evolve.steps + 1):
            log.info("Evolve step %d/%d: %s", step, recipe.evolve.steps,
                     "training on the pool sampled ahead" if ahead else
                     f"sampling with policy v{step - 1}")
            out, ahead = pipeline.run_evolve_step(recipe, rundir, roles, trainer, train_rows,
                                                  step=step, init=current, ahead=ahead,
                                                  norm=norm)
            out.pop("pool_rows")
            rundir.mark_complete(state, step)
            rundir.append_metrics({"event": "evolve_step", **_jsonable(out)})
            telemetry.export_step({**out, "pool_candidates": out["candidates"],
                                   "tokens_per_s": out["final_train_metrics"].get("tokens_per_s")},
                                  run=rundir.root.name)
            current = _push(roles, rundir.checkpoint_dir(step), step, base=policy)
            log.info("Evolve step %d done: policy reward %.4f, overlap %.1f s", step,
                     out["policy_reward_mean"], out["overlap_s"])
        after = (_cached_eval(rundir, "after", lambda: pipeline.evaluate_policy(
            recipe, roles, eval_rows, temperature=0.0)) if eval_rows else None)
        report = _write(recipe, rundir, before, after, time.time() - t0)
    finally:
        if ahead is not None:
            ahead.cancel()
        roles.stop()
        cluster.disconnect(handle)
    return report


def _push(roles: pipeline.Roles, ckpt: Path, version: int, *, base: str) -> pipeline.PolicyInit:
    """Serve checkpoint ``version`` on the samplers; return where the next training starts.

    A full checkpoint (no LoRA, or LoRA merged on save) is served and trained from as is. An
    adapter-only checkpoint is served as a LoRA request on the initial policy ``base``, and the
    next step keeps training that adapter on ``base``, so every adapter applies to the same
    base model the samplers hold.
    """
    from lire_ray.training.checkpoint import INFO_FILE

    info = json.loads((ckpt / INFO_FILE).read_text(encoding="utf-8"))
    adapter = info.get("adapter_dir")
    if adapter and not info.get("full_model"):
        roles.push_weights(str(ckpt / adapter), version, adapter=True)
        return pipeline.PolicyInit(base, str(ckpt / adapter))
    roles.push_weights(str(ckpt), version, adapter=False)
    return pipeline.PolicyInit(str(ckpt))


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _write(recipe: Recipe, rundir: RunDir, before, after, wall_s: float) -> Path:
    history = [json.loads(line) for line in rundir.metrics_path.read_text().splitlines()] \
        if rundir.metrics_path.is_file() else []
    stages = [h for h in history if h.get("event") == "evolve_step"]
    judges = recipe.eval.judges or [rm.name for rm in recipe.rewards]
    trained = recipe.train_reward_name
    metrics = {"wall_s": wall_s, "train_reward": trained, "judges": judges, "stages": stages}
    sections, plots = [], []
    if before and after:
        b, a = _eval_summary(before), _eval_summary(after)
        rows = []
        for rm in judges:
            bs, as_ = b["summary"][rm], a["summary"][rm]
            flips = ev.negative_flip_rate(a["per_prompt"][rm], b["per_prompt"][rm])
            rows.append([rm + (" (trained on)" if rm == trained else " (held-out judge)"),
                         bs["mean"], as_["mean"], bs.get("win_rate", float("nan")),
                         as_.get("win_rate", float("nan")), flips])
            metrics[f"heldout/{rm}"] = {"before": bs, "after": as_, "negative_flip_rate": flips}
            plots.append((f"{rm} reward on held-out prompts before and after",
                          plot_reward_distribution(b["per_prompt"][rm], a["per_prompt"][rm],
                                                   rundir.root / "plots" / f"reward_{rm}.png",
                                                   title=f"held-out reward ({rm})")))
        sections.append(("Held-out prompts (greedy decoding)", markdown_table(
            ["reward model", "mean before", "mean after", "win rate vs human before",
             "win rate vs human after", "negative flips"], rows)
            + "\n\nWin rate: share of prompts whose response outscores the human-written "
              "answer; ties count half."))
    if stages:
        sections.append(("Evolve steps", markdown_table(
            ["step", "prompts", "candidates", "policy reward (train RM)", "sample s", "train s",
             "overlap s"],
            [[s["step"], s["prompts"], s["candidates"], s["policy_reward_mean"], s["sample_s"],
              s["train_s"], s["overlap_s"]] for s in stages])))
        plots.append(("policy reward of sampled candidates per Evolve step", plot_curves(
            stages, ["policy_reward_mean", "overlap_s"], rundir.root / "plots" / "evolve.png",
            title="Evolve steps")))
    summary = [f"{r[0]}: held-out mean reward {r[1]:.4f} -> {r[2]:.4f}"
               for r in (rows if before and after else [])]
    atomic_write_text(rundir.root / "summary.txt", "\n".join(summary) + "\n")
    sections.append(("Run", f"Wall time {wall_s:.0f} s. Recipe snapshot: `config.yaml`; pools: "
                            f"`pools/`; checkpoints: `checkpoints/`; per-step metrics: "
                            f"`metrics.jsonl`."))
    return write_report(rundir.root, title="lire-ray self-enhancement report", sections=sections,
                        metrics=metrics, plots=plots)
