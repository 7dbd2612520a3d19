"""Evaluate a policy checkpoint on held-out prompts against its base policy (paper sec. 4.3-4.5).

Launch from the repository root, for example::

    python jobs/evaluate.py --config configs/tiny.yaml policy=runs/tiny/checkpoints/e2
    python jobs/evaluate.py --config configs/tiny.yaml            (the base policy alone)
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/hh-lire.yaml \\
        run.dir=/shared/runs/hh-lire policy=/shared/runs/hh-lire/checkpoints/e2 output=eval-e2

``policy=CKPT`` is the checkpoint to evaluate (a run's ``checkpoints/e{k}``, a ``jobs/train.py``
output, or any Hugging Face directory of the recipe's architecture); the base policy is the
recipe's ``model.policy`` and the reference ``model.reference`` (default: the base).
``output=DIR`` is the output directory, under ``run.dir`` (default ``<run.dir>/eval``): a
relative path is taken relative to ``run.dir``, an absolute one must lie inside it, and one
that leaves it (``..``, another absolute path) or is ``run.dir`` itself is refused before
anything is written; to write elsewhere, set ``run.dir``. A non-empty output directory is
refused unless ``--overwrite`` is given. The policy's tokenizer (and the reference's) is
checked in this process before Ray starts. The held-out prompts are ``data.eval``
(``data.eval_prompts`` of them), sampled greedily and at every ``eval.temperatures``, scored by
every reward model.

Written there: ``report.md`` (mean reward per reward model, win rate against the human-written
answer per judge and averaged, KL(pi || pi_ref) with its standard error, negative-flip rate
against the base policy, Best-of-n of the base policy), ``metrics.json`` with every number, and
the plots under ``plots/``.
"""

from __future__ import annotations

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.rundir import confine_output

JOB_OPTIONS = ("policy", "output")
DEFAULT_OUTPUT = "eval"


def main(args) -> int:
    from lire_ray.inputs import resolve_policy
    from lire_ray.models import check_tokenizers
    from lire_ray.studies.evaluate import check_eval_recipe, run_evaluation

    args.overrides, opts = take_job_options(args.overrides, JOB_OPTIONS)
    recipe = parse_recipe(args)
    out = confine_output(recipe.run.dir, opts.get("output", DEFAULT_OUTPUT))
    check_eval_recipe(recipe)
    check_tokenizers(resolve_policy(recipe), recipe.model.reference,
                     trust_remote_code=recipe.model.trust_remote_code)
    report = run_evaluation(recipe, policy=opts.get("policy"), out_dir=out,
                            overwrite=args.overwrite)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job options: policy=CKPT (checkpoint "
                        "to evaluate; default: the base policy), output=DIR (under run.dir; "
                        f"default <run.dir>/{DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in a non-empty output directory")
    run_job(main, parser)
