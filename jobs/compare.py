"""Compare losses on the same candidates and budget over seeds (paper Table 2), sweep a recipe
key (Tables 4 and 7), or run the Evolve x Iterate grid (Table 6, Fig. 6).

Launch from the repository root, for example::

    python jobs/compare.py --config configs/tiny-compare.yaml data.train=pools/hh --seeds 0 1 2
    python jobs/compare.py --config configs/tiny-compare.yaml --candidates sample --seeds 0 1
    python jobs/compare.py --config configs/tiny-compare.yaml --sweep loss.params.temperature=0.5,1,2,5,10
    python jobs/compare.py --config configs/tiny-compare.yaml --grid --evolve 1 2 --iterate 1 2 --seeds 0 1
    ray job submit --working-dir . -- python jobs/compare.py --config configs/hh-lire.yaml \\
        --seeds 0 1 2 run.dir=/shared/runs/hh-lire output=table2

``--candidates pool`` (the default when ``data.train`` is a pool directory; the paper's offline
setting): every loss trains on exactly the pool's own candidates (HH pairs: K = 2), with the
scores it carries for the training reward (``evolve.train_reward``) or, for a reward of
``kind: label``, the scores its labels give. No sampler runs until every loss is trained;
samplers start afterwards for the held-out evaluation only. A pool with rows without
candidates, or without the training reward's scores, is refused before Ray starts.
``--candidates sample`` (the default for a builtin prompt set): the base policy samples
K = ``sampler.num_candidates`` candidates per prompt once (human-written ones kept), every
reward model scores them, and every loss trains on that pool.

Each loss (``--losses``, default: every registered loss) trains once per seed (``--seeds``,
default ``train.seed``) with the recipe's ``train`` budget and its own parameters:
``loss.params`` for the recipe's ``loss.name``, ``loss.params_by_name.<loss>`` for any loss.
``report.md`` shows Table 2 (mean reward and win rate against the human answer per judge,
average win rate, 95% Student-t intervals over seeds), the per-seed values, every loss's
parameters and K > 2 pairing, KL, distinct-n, negative flips, Best-of-n and plots (Fig. 8:
per-prompt judge score before vs after); ``metrics.json`` holds every number.

``--sweep KEY=V1,V2,...`` trains the recipe's loss once per value (and seed): keys under
``loss.`` and ``train.`` on the shared pool as above, keys under ``evolve.`` (and
``sampler.num_candidates``, ``sampler.rso.*``, or any key with ``--self-enhance``) by running
Algorithm 1 per value. ``--grid`` runs LIRE self-enhancement for every Iterate count in
``--iterate`` and seed up to ``max(--evolve)`` Evolve steps.

``output=DIR`` sets the output directory, under ``run.dir`` (default ``<run.dir>/compare``,
``<run.dir>/sweep`` or ``<run.dir>/grid``); a path leaving ``run.dir`` is refused before
anything is written. A non-empty one is refused unless ``--overwrite`` is given.
``--report-only`` redraws the report and figures of DIR from its ``metrics.json``. The policy's
tokenizer (and the reference's) is checked in this process before Ray starts.
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


def study_of(args) -> str:
    """``grid``, ``sweep`` or ``compare``.

    Raises:
        ConfigError: Options of different studies mixed.
    """
    if args.grid and args.sweep:
        raise ConfigError("--grid and --sweep are different studies; give one")
    if (args.grid or args.sweep) and args.losses:
        raise ConfigError("--losses compares losses; --grid and --sweep train the recipe's "
                          "loss (LIRE for the grid)")
    if not args.grid and (args.evolve or args.iterate):
        raise ConfigError("--evolve and --iterate belong to --grid")
    if args.self_enhance and not args.sweep:
        raise ConfigError("--self-enhance belongs to --sweep")
    return "grid" if args.grid else "sweep" if args.sweep else "compare"


def main(args) -> int:
    from lire_ray.inputs import resolve_policy
    from lire_ray.models import check_tokenizers
    from lire_ray.studies.evaluate import check_eval_recipe

    reclaim_overrides(args)
    study = study_of(args)
    args.overrides, opts = take_job_options(args.overrides, ("output",))
    recipe = parse_recipe(args)
    output = confine_output(recipe.run.dir, opts.get("output") or study)
    if args.report_only:
        from lire_ray.studies import compare_report, grid

        if not (output / "metrics.json").is_file():
            raise ConfigError(f"--report-only: {output} holds no metrics.json")
        report = (grid.rerender if study == "grid" else compare_report.rerender)(output)
        print(f"report: {report}")
        return 0
    check_eval_recipe(recipe)
    if recipe.judge is not None:
        from lire_ray.studies.judge import preflight

        preflight(recipe)  # a judge that is down stops the study before anything starts
    if study != "grid":
        from lire_ray.studies import candidates, sweep

        # A pool that cannot be trained on fails here, before any model is built or loaded.
        if study == "compare" or sweep.runner_for(sweep.parse_sweep(args.sweep)[0],
                                                  self_enhance=args.self_enhance) == "compare":
            candidates.training_rows(recipe, args.candidates or candidates.default_mode(recipe))
    check_tokenizers(resolve_policy(recipe), recipe.model.reference,
                     trust_remote_code=recipe.model.trust_remote_code)
    seeds = args.seeds if args.seeds is not None else [recipe.train.seed]
    if study == "grid":
        from lire_ray.studies.grid import run_grid

        report = run_grid(recipe, evolve=args.evolve or list(range(1, recipe.evolve.steps + 1)),
                          iterate=args.iterate or [recipe.train.epochs], seeds=seeds,
                          out_dir=output, overwrite=args.overwrite)
    elif study == "sweep":
        from lire_ray.studies.sweep import parse_sweep, run_sweep

        key, values = parse_sweep(args.sweep)
        report = run_sweep(recipe, key=key, values=values, seeds=seeds,
                           candidates=args.candidates, out_dir=output, overwrite=args.overwrite,
                           self_enhance=args.self_enhance)
    else:
        from lire_ray.losses import list_losses
        from lire_ray.studies.compare import loss_arms, run_compare

        report = run_compare(recipe, arms=loss_arms(recipe, args.losses or list_losses()),
                             seeds=seeds, candidates=args.candidates, out_dir=output,
                             overwrite=args.overwrite)
    print(f"report: {report}")
    return 0


def build_parser():
    """The job's argument parser."""
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job option: output=DIR (under run.dir; "
                        "default <run.dir>/compare, /sweep or /grid)")
    parser.add_argument("--losses", nargs="+", metavar="LOSS",
                        help="losses to compare (default: every registered loss)")
    parser.add_argument("--seeds", nargs="+", metavar="SEED",
                        help="training seeds per method (default: train.seed)")
    parser.add_argument("--candidates", choices=("pool", "sample"), default=None,
                        help="train on data.train's own candidates (pool; default for a pool "
                        "directory) or on K base-policy samples per prompt (sample; default "
                        "for a builtin prompt set)")
    parser.add_argument("--sweep", metavar="KEY=V1,V2,...",
                        help="train the recipe's loss once per value of a recipe key")
    parser.add_argument("--self-enhance", action="store_true",
                        help="--sweep: run Algorithm 1 per value, also for loss. and train. keys")
    parser.add_argument("--grid", action="store_true",
                        help="run the LIRE Evolve x Iterate grid instead of the comparison")
    parser.add_argument("--evolve", nargs="+", metavar="E",
                        help="--grid: Evolve step counts (default: 1..evolve.steps)")
    parser.add_argument("--iterate", nargs="+", metavar="I",
                        help="--grid: epochs per Evolve step (default: train.epochs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in a non-empty output directory")
    parser.add_argument("--report-only", action="store_true",
                        help="redraw report.md and the plots of output=DIR from its metrics.json")
    return parser


if __name__ == "__main__":
    run_job(main, build_parser())
