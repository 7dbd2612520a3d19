"""Evaluate a policy checkpoint on held-out prompts against its base policy (paper sec. 4.3-4.5).

Launch from the repository root, for example::

    python jobs/evaluate.py --config configs/tiny.yaml policy=runs/tiny/checkpoints/e2
    python jobs/evaluate.py --config configs/tiny.yaml            (the base policy alone)
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/hh-lire.yaml \\
        policy=/shared/runs/hh-lire/checkpoints/e2 output=/shared/runs/hh-lire/eval-e2

``policy=CKPT`` is the checkpoint to evaluate (a run's ``checkpoints/e{k}``, a ``jobs/train.py``
output, or any Hugging Face directory of the recipe's architecture); the base policy is the
recipe's ``model.policy`` and the reference ``model.reference`` (default: the base).
``output=DIR`` is the output directory (default ``<run.dir>/eval``); a non-empty one is refused
unless ``--overwrite`` is given. The held-out prompts are ``data.eval`` (``data.eval_prompts``
of them), sampled greedily and at every ``eval.temperatures``, scored by every reward model.

Written there: ``report.md`` (mean reward per reward model, win rate against the human-written
answer per judge and averaged, KL(pi || pi_ref) with its standard error, negative-flip rate
against the base policy, Best-of-n of the base policy), ``metrics.json`` with every number, and
the plots under ``plots/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Workers of a Ray cluster started by this job inherit its environment: let them import the
# project from any working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from lire_ray.cli import job_parser, parse_recipe, run_job  # noqa: E402
from lire_ray.errors import ConfigError  # noqa: E402

JOB_OPTIONS = ("policy", "output")


def split_job_options(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """Take ``policy=`` and ``output=`` out of the overrides (job options, not recipe keys).

    Raises:
        ConfigError: One of them is given without a value.
    """
    rest, opts = [], {}
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and key in JOB_OPTIONS:
            if not value:
                raise ConfigError(f"{key}= needs a path")
            opts[key] = value
        else:
            rest.append(text)
    return rest, opts


def main(args) -> int:
    from lire_ray.evaluate.policy_eval import run_evaluation

    args.overrides, opts = split_job_options(args.overrides)
    recipe = parse_recipe(args)
    report = run_evaluation(recipe, policy=opts.get("policy"), out_dir=opts.get("output"),
                            overwrite=args.overwrite)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="job options: policy=CKPT (checkpoint "
                        "to evaluate; default: the base policy), output=DIR (default "
                        "<run.dir>/eval)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in a non-empty output directory")
    run_job(main, parser)
