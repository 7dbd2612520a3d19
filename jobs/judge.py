"""Grade policies with an LLM judge: MT-Bench-style grades per category, or win rates against
the human-written answers (paper Fig. 2 and 3).

Launch from the repository root, for example::

    python jobs/judge.py --config configs/tiny-judge.yaml mode=single \\
        questions=configs/questions/mt-sample.jsonl judge.base_url=http://127.0.0.1:8000/v1 \\
        judge.model=judge output=judge-single
    python jobs/judge.py --config configs/tiny-judge.yaml mode=pairwise \\
        data=builtin:reviews-heldout policy=base,runs/tiny/checkpoints/e2 output=judge-pairs
    ray job submit --working-dir . -- python jobs/judge.py --config configs/hh-lire.yaml \\
        mode=single questions=/shared/question.jsonl policy=/shared/runs/hh/checkpoints/e2 \\
        judge.base_url=https://api.openai.com/v1 judge.model=gpt-4o \\
        judge.api_key_env=OPENAI_API_KEY output=mt-bench

``mode=single`` (default): ``questions=FILE`` in FastChat's ``question.jsonl`` shape
(``question_id``, ``category``, ``turns`` [, ``reference``]); the policy answers every turn in
one conversation and the judge grades each turn 1-10. ``mode=pairwise``: ``data=POOL`` (a pool
directory or builtin set with human-written answers, ``data.eval_prompts`` of them); each pair
is judged in both orders. ``policy=A,B,...`` compares several policies (``base`` is the
recipe's ``model.policy``, the default). The judge is the recipe's ``judge:`` section, any key
settable as ``judge.key=value``; the API key is read from the environment variable
``judge.api_key_env`` and written nowhere.

Written under ``run.dir/DIR`` (``output=DIR``, default ``judge``): ``judgments.jsonl`` (one line
per question turn or pair: question_id, turn, category, score or verdict, valid, the judge's raw
text), ``report.md`` and ``metrics.json``. Judgments are cached in ``judge.cache_dir`` (default
``<run.dir>/judge-cache``): a rerun asks the judge nothing it already answered. A non-empty
output directory is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.rundir import confine_output

JOB_OPTIONS = ("policy", "questions", "data", "mode", "output")
DEFAULT_OUTPUT = "judge"


def main(args) -> int:
    from lire_ray.studies.judge import BASE, check_judge, run_judging

    args.overrides, opts = take_job_options(args.overrides, JOB_OPTIONS)
    recipe = parse_recipe(args)
    check_judge(recipe)
    out = confine_output(recipe.run.dir, opts.get("output", DEFAULT_OUTPUT))
    policies = [p.strip() for p in opts.get("policy", BASE).split(",") if p.strip()]
    report = run_judging(recipe, mode=opts.get("mode", "single"), policies=policies or [BASE],
                         out_dir=out, questions=opts.get("questions"), data=opts.get("data"),
                         overwrite=args.overwrite)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job options: mode=single|pairwise, "
                        "questions=FILE (single), data=POOL (pairwise), policy=A[,B...] "
                        f"(default base), output=DIR (under run.dir; default {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in a non-empty output directory")
    run_job(main, parser)
