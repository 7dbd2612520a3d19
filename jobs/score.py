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

import shutil

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.errors import ConfigError

DEFAULT_OUTPUT = "pools/scored"
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def main(args) -> int:
    from lire_ray.inputs import load_prompt_rows, resolve_reference, source_metadata
    from lire_ray.losses import build_loss
    from lire_ray.rewards import NORM_METADATA_KEY
    from lire_ray.rundir import pool_output_dir
    from lire_ray.runtime import PoolBuilder, RoleGroup, connect, disconnect, namespace_for

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
    meta_in = source_metadata(source)
    out = pool_output_dir(recipe.run.dir, output, overwrite=args.overwrite)
    ref_path = resolve_reference(recipe) if reference else None
    work = out.parent / f".{out.name}.score"
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
    handle = connect(recipe.ray)
    try:
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "score", out),
                       rewards=True, reference=ref_path, state_dir=work) as roles:
            print(f"scoring {len(rows)} prompts from {source} with "
                  f"{[rm.name for rm in recipe.rewards]}"
                  f"{' and reference log-probs' if reference else ''}; Ray dashboard: "
                  f"{handle.dashboard_url or 'n/a'}", flush=True)
            # Fitted once on the whole input pool (unless its manifest records them), then
            # frozen for every batch and written first to a file that restarted actors reload.
            norm = roles.normalisation(rows, frozen=meta_in.get(NORM_METADATA_KEY),
                                       max_prompts=None)
            if norm:
                print(f"z-score statistics: {norm}", flush=True)
            metadata = {key: value for key, value in meta_in.items() if key != NORM_METADATA_KEY}
            metadata["score"] = {"input": source,
                                 "reward_models": [rm.name for rm in recipe.rewards],
                                 "reference": bool(reference)}
            if norm:
                metadata[NORM_METADATA_KEY] = norm
            manifest = PoolBuilder(recipe, roles, sample=False, score=True,
                                   reference=bool(reference)).build(
                rows, out_dir=out, parts_dir=work / "parts", metadata=metadata,
                overwrite=args.overwrite, what="scored")
    finally:
        disconnect(handle)
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
