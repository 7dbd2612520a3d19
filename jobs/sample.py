"""Sample a candidate pool: K policy candidates per prompt, optionally chosen by RSO.

Launch from the repository root, for example::

    python jobs/sample.py input=builtin:reviews output=pools/sampled
    python jobs/sample.py --config configs/tiny.yaml input=pools/hh-train output=pools/hh-k8 \\
        sampler.num_candidates=8 sampler.rso.enabled=true sampler.rso.num_samples=16
    ray job submit --working-dir . -- python jobs/sample.py --config configs/hh-lire.yaml \\
        input=/shared/pools/hh-train output=pools/hh-sampled run.dir=/shared/runs/hh

``input=`` is a pool directory (e.g. from ``jobs/prepare.py``) or a builtin prompt set
(``builtin:reviews``, ``builtin:reviews-heldout``), cut to its first ``data.max_prompts`` rows
when that is set. ``output=DIR`` names the new pool relative to ``run.dir`` (default
``pools/sampled``); a path that leaves ``run.dir`` is refused, and so is an existing pool there
unless ``--overwrite`` is given. The policy (``model.policy``) is served as policy version 0;
every row keeps its human-written candidates when ``evolve.keep_human`` and gets new policy
candidates up to K = ``sampler.num_candidates`` (at least one), earlier policy candidates are
dropped, and ``evolve_step`` is 1 (the pool D_1 of Algorithm 1). With
``sampler.rso.enabled=true`` each prompt gets N = ``sampler.rso.num_samples`` samples, scored by
the training reward model (``evolve.train_reward``, z-scored with the input pool's frozen
statistics when its manifest records them), of which RSO (paper sec. 4.7) keeps K - h. The
pool has no rewards yet: ``jobs/score.py`` adds them.

The job joins the Ray cluster it finds (``RAY_ADDRESS``, set by ``ray job submit``, or one
started with ``ray start``) or starts a local one (``ray.num_cpus`` CPUs, dashboard on
127.0.0.1). It prints a line per sampled batch and, at the end, where the pool is. Bad input is
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

DEFAULT_OUTPUT = "pools/sampled"
#: Sampling with policy version 0 produces D_1, the first pool of Algorithm 1.
EVOLVE_STEP = 1


def main(args) -> int:
    from lire_ray import cluster
    from lire_ray.jobkit import (
        job_namespace,
        pool_output_dir,
        source_metadata,
        start_stage_actors,
    )
    from lire_ray.models import check_tokenizers
    from lire_ray.pipeline import build_stream, load_prompt_rows, resolve_policy
    from lire_ray.rewards import NORM_METADATA_KEY, save_norm_stats, stats_from_dict
    from lire_ray.stream import finalize_parts

    args.overrides, opts = take_job_options(args.overrides, ("input", "output"),
                                            required=("input",))
    source, output = opts["input"], opts.get("output", DEFAULT_OUTPUT)
    recipe = parse_recipe(args)
    rso = recipe.sampler.rso
    if rso.enabled and recipe.train_reward_name is None:
        raise ConfigError("sampler.rso.enabled needs a reward model to select with "
                          "(rewards: [...], evolve.train_reward)")
    rows = load_prompt_rows(source, recipe.data.max_prompts)
    if not rows:
        raise DataError("has no prompts", source=source)
    meta_in = source_metadata(source)
    frozen = {}
    if NORM_METADATA_KEY in meta_in:
        stored = stats_from_dict(meta_in[NORM_METADATA_KEY], source=f"{source}/manifest.json")
        frozen = {rm.name: stored[rm.name] for rm in recipe.rewards
                  if rm.normalize == "zscore" and rm.name in stored}
    out = pool_output_dir(recipe.run.dir, output, overwrite=args.overwrite)
    policy = resolve_policy(recipe)
    check_tokenizers(policy, trust_remote_code=recipe.model.trust_remote_code)
    recipe = job_namespace(recipe, "sample", out)
    k = recipe.sampler.num_candidates
    work = out.parent / f".{out.name}.sample"
    handle = cluster.connect(recipe.ray)
    actors = None
    try:
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
        norm_file = None
        if rso.enabled and frozen:
            norm_file = work / "reward_normalisation.json"
            save_norm_stats(norm_file, frozen)
        actors = start_stage_actors(recipe, policy_path=policy, rewards=rso.enabled,
                                    norm_file=norm_file)
        how = (f"RSO keeps them from {rso.num_samples} samples by {recipe.train_reward_name}, "
               f"beta {rso.beta}" if rso.enabled else "no RSO")
        print(f"sampling K={k} candidates for {len(rows)} prompts from {source} with policy "
              f"{recipe.model.policy} ({how}); Ray dashboard: {handle.dashboard_url or 'n/a'}",
              flush=True)
        stream = build_stream(recipe, actors, rows, evolve_step=EVOLVE_STEP,
                              parts_dir=work / "parts", score=False)
        done = 0
        for batch in stream.iter_batches(batch_size=None, batch_format="pyarrow"):
            done += batch.num_rows
            print(f"sampled {done}/{len(rows)} prompts", flush=True)
        metadata = {"sample": {
            "input": source, "policy": recipe.model.policy, "policy_version": 0,
            "evolve_step": EVOLVE_STEP, "num_candidates": k,
            "keep_human": recipe.evolve.keep_human, "sampler_seed": recipe.sampler.seed,
            "temperature": recipe.sampler.temperature,
            "rso": ({"num_samples": rso.num_samples, "beta": rso.beta,
                     "reward": recipe.train_reward_name} if rso.enabled else None)}}
        if NORM_METADATA_KEY in meta_in:
            # Frozen statistics travel with the prompts, so scoring this pool reuses them.
            metadata[NORM_METADATA_KEY] = meta_in[NORM_METADATA_KEY]
        manifest = finalize_parts(work / "parts", out, expected_ids=[r.prompt_id for r in rows],
                                  metadata=metadata, overwrite=args.overwrite)
    finally:
        if actors is not None:
            actors.stop()
        cluster.disconnect(handle)
        shutil.rmtree(work, ignore_errors=True)
    print(f"pool: {out} ({manifest['num_rows']} prompts, {manifest['num_candidates']} "
          "candidates)")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job options: input=POOL|builtin:NAME "
                        "(required), output=DIR is the pool directory under run.dir (default "
                        f"{DEFAULT_OUTPUT}), --overwrite replaces an existing pool there")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing pool at output=")
    run_job(main, parser)
