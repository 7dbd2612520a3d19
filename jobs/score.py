"""Score a candidate pool with every reward model of the recipe (and reference log-probs).

Launch from the repository root, for example::

    python jobs/score.py input=runs/tiny/pools/sampled output=pools/scored
    python jobs/score.py --config configs/tiny.yaml input=runs/tiny/pools/sampled \\
        output=pools/scored-z rewards.0.normalize=zscore reference=true
    ray job submit --working-dir . -- python jobs/score.py --config configs/hh-lire.yaml \\
        input=/shared/runs/hh/pools/hh-sampled output=pools/hh-scored run.dir=/shared/runs/hh

``input=`` is a pool directory (or a builtin prompt set, whose human-written answers are then
scored), cut to its first ``data.max_prompts`` rows when that is set. ``output=DIR`` names the
scored pool relative to ``run.dir`` (default ``pools/scored``); a path that leaves ``run.dir``
is refused, and so is an existing pool there unless ``--overwrite`` is given. Every candidate
gets a score from every reward model in ``rewards``; earlier scores are replaced.
``reference=true`` also fills ``ref_logps`` with the reference model's log-probs
(``model.reference``, default the policy); ``reference=false`` never does; by default they are
added exactly when ``loss.name`` needs them (DPO, IPO, ...).

Reward models with ``normalize: zscore`` are z-scored with statistics frozen before scoring:
those in the input pool's manifest (``metadata.reward_normalisation``) when it has them,
otherwise the mean and standard deviation of that model's raw scores over every candidate of
the input pool. The statistics used are recorded in the output manifest under the same key, so
every later pool scored from it is normalised the same way.

The job joins the Ray cluster it finds (``RAY_ADDRESS``, set by ``ray job submit``, or one
started with ``ray start``) or starts a local one (``ray.num_cpus`` CPUs, dashboard on
127.0.0.1). It prints a line per scored batch and, at the end, where the pool is. Bad input is
refused before anything is written.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Workers of a Ray cluster started by this job inherit its environment: let them import the
# project from any working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options  # noqa: E402
from lire_ray.errors import ConfigError, DataError  # noqa: E402

DEFAULT_OUTPUT = "pools/scored"
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def main(args) -> int:
    from lire_ray import cluster
    from lire_ray.jobkit import (
        fit_reward_normalisation,
        job_namespace,
        pool_output_dir,
        source_metadata,
        start_stage_actors,
    )
    from lire_ray.losses import build_loss
    from lire_ray.pipeline import build_stream, load_prompt_rows, resolve_policy
    from lire_ray.rewards import (
        NORM_METADATA_KEY,
        save_norm_stats,
        stats_from_dict,
        stats_to_dict,
    )
    from lire_ray.stream import finalize_parts

    args.overrides, opts = take_job_options(args.overrides, ("input", "output", "reference"),
                                            required=("input",))
    source, output = opts["input"], opts.get("output", DEFAULT_OUTPUT)
    reference = None
    if "reference" in opts:
        word = opts["reference"].strip().lower()
        if word not in _BOOLS:
            raise ConfigError(f"reference= takes true or false, got {opts['reference']!r}")
        reference = _BOOLS[word]
    recipe = parse_recipe(args)
    if not recipe.rewards:
        raise ConfigError("the recipe has no reward models (rewards: [...])")
    if reference is None:
        reference = build_loss(recipe.loss.name, recipe.loss.params).needs_reference
    rows = load_prompt_rows(source, recipe.data.max_prompts)
    if not rows:
        raise DataError("has no prompts", source=source)
    meta_in = source_metadata(source)
    stored = (stats_from_dict(meta_in[NORM_METADATA_KEY], source=f"{source}/manifest.json")
              if NORM_METADATA_KEY in meta_in else {})
    zscore = [rm.name for rm in recipe.rewards if rm.normalize == "zscore"]
    frozen = {n: stored[n] for n in zscore if n in stored}
    to_fit = [n for n in zscore if n not in stored]
    out = pool_output_dir(recipe.run.dir, output, overwrite=args.overwrite)
    ref_path = None
    if reference:
        ref = recipe.model.reference or recipe.model.policy
        ref_path = resolve_policy(recipe.model_copy(
            update={"model": recipe.model.model_copy(update={"policy": ref})}))
    recipe = job_namespace(recipe, "score", out)
    work = out.parent / f".{out.name}.score"
    norm_file = work / "reward_normalisation.json"
    handle = cluster.connect(recipe.ray)
    actors = None
    try:
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
        if frozen:
            save_norm_stats(norm_file, frozen)
        actors = start_stage_actors(recipe, rewards=True, reference_path=ref_path,
                                    norm_file=norm_file)
        print(f"scoring {len(rows)} prompts from {source} with {[rm.name for rm in recipe.rewards]}"
              f"{' and reference log-probs' if reference else ''}; Ray dashboard: "
              f"{handle.dashboard_url or 'n/a'}", flush=True)
        if frozen:
            print(f"z-score statistics from {source}: {stats_to_dict(frozen)}", flush=True)
        if to_fit:
            # Fitted once on the whole input pool, then frozen for every batch (and written
            # first to the file, so that a reward actor restarted mid-stream keeps them).
            frozen = fit_reward_normalisation(
                actors.rewards, [r.prompt for r in rows for _ in r.responses],
                [c for r in rows for c in r.responses], names=to_fit, norm_file=norm_file,
                frozen=frozen,
                batch_size=recipe.sampler.batch_size * recipe.sampler.num_candidates)
            fitted = {n: frozen[n] for n in to_fit}
            print(f"fitted z-score statistics on {sum(r.num_candidates for r in rows)} candidates: "
                  f"{stats_to_dict(fitted)}", flush=True)
        stream = build_stream(recipe, actors, rows, parts_dir=work / "parts", sample=False)
        done = 0
        for batch in stream.iter_batches(batch_size=None, batch_format="pyarrow"):
            done += batch.num_rows
            print(f"scored {done}/{len(rows)} prompts", flush=True)
        metadata = {key: value for key, value in meta_in.items() if key != NORM_METADATA_KEY}
        metadata["score"] = {"input": source, "reward_models": [rm.name for rm in recipe.rewards],
                             "reference": bool(reference)}
        if frozen:
            metadata[NORM_METADATA_KEY] = stats_to_dict(frozen)
        manifest = finalize_parts(work / "parts", out, expected_ids=[r.prompt_id for r in rows],
                                  metadata=metadata, overwrite=args.overwrite)
    finally:
        if actors is not None:
            actors.stop()
        cluster.disconnect(handle)
        shutil.rmtree(work, ignore_errors=True)
    print(f"pool: {out} ({manifest['num_rows']} prompts, {manifest['num_candidates']} "
          f"candidates, reward models {manifest['reward_models']})")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job options: input=POOL (required), "
                        "output=DIR is the pool directory under run.dir (default "
                        f"{DEFAULT_OUTPUT}), reference=true|false (default: when loss.name "
                        "needs it), --overwrite replaces an existing pool there")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing pool at output=")
    run_job(main, parser)
