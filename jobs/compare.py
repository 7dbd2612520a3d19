"""Compare every loss on the same candidate pool and budget over seeds (paper Table 2, sec. 4.3).

Launch from the repository root, for example::

    python jobs/compare.py --config configs/tiny-compare.yaml --seeds 0 1
    python jobs/compare.py --config configs/tiny-compare.yaml --losses lire dpo --seeds 0 1 2
    python jobs/compare.py --config configs/tiny-compare.yaml --grid --evolve 1 2 --iterate 1 2
    ray job submit --working-dir . -- python jobs/compare.py --config configs/hh-lire.yaml \\
        --seeds 0 1 2 run.dir=/shared/runs/hh-lire output=compare-3seeds

The base policy samples K candidates for every training prompt once; every reward model scores
them and the reference policy annotates them; the pool is written to ``<output>/pool``. Each
loss (``--losses``, default: all in the registry) is then trained on that pool once per seed
(``--seeds``, default: ``train.seed``) with the recipe's ``train`` budget, and evaluated on the
held-out prompts (``data.eval``). ``report.md`` shows the paper's Table 2 (mean reward per
reward model, average win rate against the human-written answers) as mean ± 95% Student-t
confidence interval over seeds, with KL to the reference, negative flips, Best-of-n of the base
policy and plots; ``metrics.json`` holds every number.

``--grid`` instead runs LIRE self-enhancement for every Iterate count in ``--iterate`` up to
``max(--evolve)`` Evolve steps and reports the held-out reward for each (E, I) (paper Table 6).

``output=DIR`` sets the output directory, under ``run.dir`` (default ``<run.dir>/compare``, or
``<run.dir>/grid``): a relative path is taken relative to ``run.dir``, an absolute one must lie
inside it, and one that leaves it (``..``, another absolute path) or is ``run.dir`` itself is
refused before anything is written; to write elsewhere, set ``run.dir``. Everything the job
writes (pool, checkpoints, Ray Train storage, report) goes into that directory. A non-empty
one is refused unless ``--overwrite`` is given. The policy's tokenizer (and the reference's) is
checked in this process before Ray starts.
"""

from __future__ import annotations

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.errors import ConfigError
from lire_ray.rundir import confine_output

LIST_OPTIONS = {"losses": str, "seeds": int, "evolve": int, "iterate": int}


def reclaim_overrides(args) -> None:
    """Move ``key=value`` words that a list option swallowed back to the overrides.

    ``--seeds 0 1 run.dir=x`` would otherwise read ``run.dir=x`` as a seed.

    Raises:
        ConfigError: A list option's value has the wrong type.
    """
    for name, kind in LIST_OPTIONS.items():
        words = getattr(args, name)
        if words is None:
            continue
        values = []
        for word in words:
            if "=" in word:
                args.overrides.append(word)
                continue
            try:
                values.append(kind(word))
            except ValueError:
                raise ConfigError(f"--{name}: '{word}' is not an integer") from None
        setattr(args, name, values or None)


def main(args) -> int:
    from lire_ray.inputs import resolve_policy
    from lire_ray.models import check_tokenizers
    from lire_ray.studies.evaluate import check_eval_recipe

    reclaim_overrides(args)
    args.overrides, opts = take_job_options(args.overrides, ("output",))
    recipe = parse_recipe(args)
    output = confine_output(recipe.run.dir,
                            opts.get("output") or ("grid" if args.grid else "compare"))
    check_eval_recipe(recipe)
    check_tokenizers(resolve_policy(recipe), recipe.model.reference,
                     trust_remote_code=recipe.model.trust_remote_code)
    if args.grid:
        from lire_ray.studies.grid import run_grid

        evolve = args.evolve or list(range(1, recipe.evolve.steps + 1))
        iterate = args.iterate or [recipe.train.epochs]
        report = run_grid(recipe, evolve=evolve, iterate=iterate, out_dir=output,
                          overwrite=args.overwrite)
    else:
        from lire_ray.losses import list_losses
        from lire_ray.studies.compare import run_compare

        report = run_compare(recipe, losses=args.losses or list_losses(),
                             seeds=args.seeds if args.seeds is not None else [recipe.train.seed],
                             out_dir=output, overwrite=args.overwrite)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job option: output=DIR (under run.dir; "
                        "default <run.dir>/compare, or <run.dir>/grid with --grid)")
    parser.add_argument("--losses", nargs="+", metavar="LOSS",
                        help="losses to compare (default: every registered loss)")
    parser.add_argument("--seeds", nargs="+", metavar="SEED",
                        help="training seeds per loss (default: train.seed)")
    parser.add_argument("--grid", action="store_true",
                        help="run the LIRE Evolve x Iterate grid instead of the comparison")
    parser.add_argument("--evolve", nargs="+", metavar="E",
                        help="--grid: Evolve step counts (default: 1..evolve.steps)")
    parser.add_argument("--iterate", nargs="+", metavar="I",
                        help="--grid: epochs per Evolve step (default: train.epochs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in a non-empty output directory")
    run_job(main, parser)
