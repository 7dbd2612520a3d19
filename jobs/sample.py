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

import shutil

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.errors import ConfigError

DEFAULT_OUTPUT = "pools/sampled"
#: Sampling with policy version 0 produces D_1, the first pool of Algorithm 1.
EVOLVE_STEP = 1


def main(args) -> int:
    from lire_ray.inputs import load_prompt_rows, resolve_policy, source_metadata
    from lire_ray.models import check_tokenizers
    from lire_ray.rewards import NORM_METADATA_KEY
    from lire_ray.rundir import pool_output_dir
    from lire_ray.runtime import PoolBuilder, RoleGroup, connect, disconnect, namespace_for

    args.overrides, opts = take_job_options(args.overrides, ("input", "output"),
                                            required=("input",))
    source, output = opts["input"], opts.get("output", DEFAULT_OUTPUT)
    recipe = parse_recipe(args)
    rso = recipe.sampler.rso
    if rso.enabled and recipe.train_reward_name is None:
        raise ConfigError("sampler.rso.enabled needs a reward model to select with "
                          "(rewards: [...], evolve.train_reward)")
    rows = load_prompt_rows(source, recipe.data.max_prompts)
    meta_in = source_metadata(source)
    out = pool_output_dir(recipe.run.dir, output, overwrite=args.overwrite)
    policy = resolve_policy(recipe)
    check_tokenizers(policy, trust_remote_code=recipe.model.trust_remote_code)
    k = recipe.sampler.num_candidates
    work = out.parent / f".{out.name}.sample"
    shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted run
    handle = connect(recipe.ray)
    try:
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "sample", out),
                       policy=policy, rewards=rso.enabled, state_dir=work) as roles:
            norm = roles.normalisation(rows, frozen=meta_in.get(NORM_METADATA_KEY)) \
                if rso.enabled else {}
            how = (f"RSO keeps them from {rso.num_samples} samples by "
                   f"{recipe.train_reward_name}, beta {rso.beta}" if rso.enabled else "no RSO")
            print(f"sampling K={k} candidates for {len(rows)} prompts from {source} with policy "
                  f"{recipe.model.policy} ({how}); Ray dashboard: "
                  f"{handle.dashboard_url or 'n/a'}", flush=True)
            metadata = {"sample": {
                "input": source, "policy": recipe.model.policy, "policy_version": 0,
                "evolve_step": EVOLVE_STEP, "num_candidates": k,
                "keep_human": recipe.evolve.keep_human, "sampler_seed": recipe.sampler.seed,
                "temperature": recipe.sampler.temperature,
                "chat_template": recipe.data.chat_template,
                "rso": ({"num_samples": rso.num_samples, "beta": rso.beta,
                         "reward": recipe.train_reward_name} if rso.enabled else None)}}
            # Frozen statistics travel with the prompts, so scoring this pool reuses them.
            if norm or NORM_METADATA_KEY in meta_in:
                metadata[NORM_METADATA_KEY] = {**meta_in.get(NORM_METADATA_KEY, {}), **norm}
            manifest = PoolBuilder(recipe, roles, sample=True, score=False).build(
                rows, out_dir=out, parts_dir=work / "parts", evolve_step=EVOLVE_STEP,
                metadata=metadata, overwrite=args.overwrite, what="sampled")
    finally:
        disconnect(handle)
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
