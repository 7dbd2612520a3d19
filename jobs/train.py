"""Train a policy on a prepared candidate pool: one stage, the paper's main (offline) setting.

Launch from the repository root, for example::

    python jobs/train.py data=pools/hh-train loss=lire
    python jobs/train.py --config configs/tiny.yaml data=runs/tiny/pools/e1 loss=dpo \\
        train.epochs=2 output=checkpoints/dpo
    ray job submit --working-dir . -- python jobs/train.py --config configs/hh-lire.yaml \\
        data=/shared/pools/hh-train resources.trainer.num_workers=8 resources.trainer.use_gpu=true \\
        resources.trainer.gpus_per_worker=1

Short keys: ``data=`` means ``data.train=`` (a pool directory written by ``jobs/prepare.py``
or a self-enhancement run), ``loss=`` means ``loss.name=``, and ``output=DIR`` names the
checkpoint directory relative to ``run.dir`` (default ``checkpoints/train``). The pool is
shuffled once with ``train.seed`` and cut to ``data.max_prompts`` rows when that is set; the
training reward is ``evolve.train_reward`` (or the pool's only reward model), whose scores the
pool must have, unless it is of ``kind: label``: then the data's own preferences are the
reward (``configs/tiny-labels.yaml``), so preference pairs train with no reward model.

The job joins the Ray cluster it finds (``RAY_ADDRESS``, set by ``ray job submit``, or one
started with ``ray start``) or starts a local one (``ray.num_cpus`` CPUs, dashboard on
127.0.0.1). It prints one line per optimizer step and, at the end, where the policy went.
A complete checkpoint already at the output is refused unless ``run.resume=true``; with it, an
interrupted run continues from its last epoch checkpoint under ``run.dir/ray_train``.
"""

from __future__ import annotations

from pathlib import Path

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.rundir import check_fresh_training, confine_output

ALIASES = {"data": "data.train", "loss": "loss.name"}
DEFAULT_OUTPUT = "checkpoints/train"
RUN_NAME = "train"


def main(args) -> int:
    import json
    import time

    import ray.data

    from lire_ray.atomic import atomic_write_text
    from lire_ray.inputs import load_training_pool, resolve_policy
    from lire_ray.models import check_tokenizers
    from lire_ray.runtime import TrainerGroup, connect, disconnect
    from lire_ray.training.result import PolicyInit

    started = time.perf_counter()
    args.overrides, opts = take_job_options(args.overrides, ("output",))
    output = opts.get("output", DEFAULT_OUTPUT)
    recipe = parse_recipe(args, aliases=ALIASES)
    pool = recipe.data.train
    table = load_training_pool(recipe, pool)  # checked before Ray starts
    num_prompts = table.num_rows
    run_dir = Path(recipe.run.dir).resolve()
    out = confine_output(run_dir, output)
    storage = run_dir / "ray_train"
    check_fresh_training(out, storage, RUN_NAME, resume=recipe.run.resume)
    init_model = resolve_policy(recipe)
    check_tokenizers(init_model, recipe.model.reference,
                     trust_remote_code=recipe.model.trust_remote_code)
    handle = connect(recipe.ray)
    try:
        print(f"training {recipe.loss.name} on {num_prompts} prompts from {pool}; "
              f"Ray dashboard: {handle.dashboard_url or 'n/a'}", flush=True)
        dataset = ray.data.from_arrow(table)
        trainer = TrainerGroup(recipe, storage_path=str(storage), name=RUN_NAME, alone=True)
        result = trainer.fit(dataset, num_prompts=num_prompts, init=PolicyInit(init_model),
                             output_dir=str(out), epochs=recipe.train.epochs)
    finally:
        disconnect(handle)
    last = result.metrics
    runtime = time.perf_counter() - started
    step_s = sum(float(h.get("step_seconds", 0.0)) for h in result.history)
    prompts = sum(int(h.get("prompts", 0)) for h in result.history)
    summary = {"event": "train", "loss": recipe.loss.name, "num_prompts": num_prompts,
               "steps": len(result.history), "train_runtime_s": runtime,
               "train_steps_s": step_s, "train_samples_per_s": prompts / max(runtime, 1e-9),
               "step_samples_per_s": prompts / max(step_s, 1e-9),
               "checkpoint": str(result.checkpoint_dir)}
    # One line per optimizer step, then the run's summary (as the other jobs record).
    lines = [json.dumps({"event": "train_step", **h}, sort_keys=True) for h in result.history]
    atomic_write_text(run_dir / "metrics.jsonl",
                      "\n".join([*lines, json.dumps(summary, sort_keys=True)]) + "\n")
    print(f"done: {len(result.history)} steps, last loss {last.get('loss', float('nan')):.4f}, "
          f"{runtime:.1f} s ({summary['train_samples_per_s']:.2f} prompts/s; optimizer steps "
          f"{step_s:.1f} s); metrics: {run_dir / 'metrics.jsonl'}")
    print(f"policy: {result.checkpoint_dir}" + (f" (LoRA adapter: {result.adapter_dir})"
                                                if result.adapter_dir else ""))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="short keys: data= means data.train=, "
                        "loss= means loss.name=, output=DIR is the checkpoint directory under "
                        f"run.dir (default {DEFAULT_OUTPUT})")
    run_job(main, parser)
