"""The main job: LIRE self-enhancement (paper Algorithm 1) on a Ray cluster.

Launch (no arguments runs the embedded default, ``configs/tiny.yaml``, on CPU):

    python jobs/self_enhance.py
    python jobs/self_enhance.py --config configs/hh-lire.yaml evolve.steps=3 run.dir=runs/hh
    ray job submit --working-dir . -- python jobs/self_enhance.py --config configs/tiny.yaml

It joins the Ray cluster it finds (``RAY_ADDRESS``, set by ``ray job submit``, or one started
with ``ray start``) or starts a local one, and writes everything under ``run.dir``: the recipe
snapshot, ``pools/e{k}/``, ``checkpoints/e{k}/``, ``metrics.jsonl`` and ``report.md``. A run
directory that is not empty is refused unless ``resume=true`` is given, which continues after
the last completed Evolve step (a run with nothing left to do prints its report again without
starting anything). Only the project's own lines reach the terminal; the output of Ray, vLLM,
DeepSpeed and the actors goes to ``run.dir/job.log`` (``--debug`` or ``run.verbose=true`` shows
it instead).
"""

from __future__ import annotations

from lire_ray import output
from lire_ray.cli import job_parser, parse_recipe, quiet_output, run_job
from lire_ray.run_report import finished_run

ALIASES = {"resume": "run.resume", "run_dir": "run.dir", "steps": "evolve.steps",
           "loss": "loss.name", "policy": "model.policy"}


def main(args) -> int:
    recipe = parse_recipe(args, aliases=ALIASES)
    # A finished run re-reports at once: the run's heavy modules are not even imported.
    report = finished_run(recipe)
    if report is None:
        from lire_ray import self_enhance

        with quiet_output():  # other libraries' lines go to run.dir/job.log
            report = self_enhance.run(recipe)
    output.echo(f"report: {report}")
    output.echo((report.parent / "summary.txt").read_text(encoding="utf-8")
                if (report.parent / "summary.txt").is_file() else "")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="short keys: " + ", ".join(
        f"{k}= means {v}=" for k, v in ALIASES.items()))
    run_job(main, parser)
