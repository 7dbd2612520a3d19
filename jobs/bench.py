"""Benchmarks: lire-ray's training step, samplers, losses and overlap, side by side with the
usual way of doing the same work, in one process on the same model, batch and seed.

    python jobs/bench.py step --out bench.json --markdown
    python jobs/bench.py all --device cpu --out bench.json
    python jobs/bench.py step --device cuda --shape qwen2-0.5b --iters 10
    python jobs/bench.py peer --policy tiny --quick --out peer.json
    python jobs/bench.py peer --policy /work/cache/smollm2-hf --k 4 --out peer-k4.json
    python jobs/bench.py render bench.json ...    # Markdown tables from earlier runs

Sections: ``step`` (sequence log-probs + LIRE loss + backward vs a naive full-logits step),
``sampler`` (vLLM vs Hugging Face generate, tokens/s), ``loss`` (LIRE vs Plackett-Luce cost as
K grows), ``overlap`` (self-enhancement with split vs colocate placement) and ``resident``
(a resident trainer group vs one Ray Train run per Evolve step): each runs the job twice,
several minutes on a small CPU, so ``all`` leaves them out unless ``--with-overlap`` /
``--with-resident``; ``peer`` (TRL's DPOTrainer vs ``jobs/train.py`` on the same model, pairs,
order and hyperparameters, see ``bench/peer.py``) likewise needs ``--with-peer``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# First, even when PYTHONPATH names the root already: Python puts this script's directory
# (jobs/) ahead of it, where 'bench' would be this very file instead of the bench/ package.
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))

from bench.common import fix_malloc_threshold, machine_info, write_json  # noqa: E402
from lire_ray.errors import ConfigError, LireError  # noqa: E402

SECTIONS = ("step", "sampler", "loss", "overlap", "resident", "peer")
#: Sections that run whole jobs (minutes each): 'all' includes them on request.
JOB_SECTIONS = {"overlap": "with_overlap", "resident": "with_resident", "peer": "with_peer"}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line: a section (or ``all`` / ``render``) and per-section options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("what", choices=[*SECTIONS, "all", "render"])
    p.add_argument("files", nargs="*", help="render: result JSON files to render, in order")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--markdown", action="store_true", help="print the Markdown tables")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("step")
    g.add_argument("--shape", default="tiny", choices=["tiny", "qwen2-0.5b", "qwen2-small"],
                   help="tiny: a small Llama from build_tiny_policy (float32); qwen2-0.5b: "
                        "Qwen2-0.5B layout, random weights, bf16 (GPU); qwen2-small: a small "
                        "Qwen2 (float32)")
    g.add_argument("--tiny-vocab", type=int, default=8192)
    g.add_argument("--tiny-hidden", type=int, default=256, help="multiple of 64")
    g.add_argument("--tiny-layers", type=int, default=4)
    g.add_argument("--prompts", type=int, default=None, help="B (tiny: 4; qwen2-0.5b: 16)")
    g.add_argument("--candidates", type=int, default=4, help="K")
    g.add_argument("--prompt-len", type=int, default=None, help="tiny: 64; qwen2-0.5b: 256")
    g.add_argument("--resp-min", type=int, default=None, help="tiny: 16; qwen2-0.5b: 64")
    g.add_argument("--resp-max", type=int, default=None, help="tiny: 32; qwen2-0.5b: 128")
    g.add_argument("--variants", type=_names, default=None,
                   help="comma list of naive,padded,shared_prefix,naive_ckpt,shared_prefix_ckpt")
    g.add_argument("--iters", type=int, default=None, help="timed rounds (cpu 3, cuda 10)")
    g.add_argument("--warmup", type=int, default=1)
    g.add_argument("--chunk-size", type=int, default=1024)
    g.add_argument("--temperature", type=float, default=None,
                   help="LIRE T of the bench loss (default 100; see bench/step.py)")
    g = p.add_argument_group("peer")
    g.add_argument("--policy", default="tiny", help="tiny, smollm2-135m-instruct or an HF "
                   "model folder")
    g.add_argument("--k", type=int, default=2, choices=[2, 4], help="candidates per prompt")
    g.add_argument("--peer-prompts", type=int, default=None, help="prompts (default 64; "
                   "--quick 16)")
    g.add_argument("--quick", action="store_true", help="the tiny policy on 16 prompts (a few "
                   "minutes on 2 cores)")
    g.add_argument("--lr", type=float, default=None, help="default: tiny 5e-4, else 1e-5")
    g.add_argument("--work-dir", default=None, help="keep the runs here (default: a "
                   "temporary directory, removed)")
    g.add_argument("--with-peer", action="store_true")
    g = p.add_argument_group("sampler")
    g.add_argument("--backends", type=_names, default=["vllm", "hf"])
    g.add_argument("--sampler-prompts", type=int, default=8)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--sampler-iters", type=int, default=3)
    g.add_argument("--vllm-memory", type=float, default=0.1,
                   help="vLLM gpu_memory_utilization (on CPU: share of host RAM for KV cache)")
    g = p.add_argument_group("loss")
    g.add_argument("--loss-k", type=_ints, default=[2, 4, 8, 16, 32, 64])
    g.add_argument("--losses", type=_names, default=["lire", "pl"])
    g.add_argument("--loss-batch", type=int, default=64)
    g = p.add_argument_group("overlap")
    g.add_argument("--with-overlap", action="store_true", help="include overlap in 'all'")
    g.add_argument("--overlap-prompts", type=int, default=32)
    g.add_argument("--overlap-steps", type=int, default=1)
    g.add_argument("--overlap-epochs", type=int, default=1)
    g.add_argument("--overlap-batch", type=int, default=8, help="sampler.batch_size")
    g.add_argument("--overlap-backend", default="vllm", choices=["vllm", "hf"])
    g.add_argument("--overlap-timeout", type=float, default=900)
    g.add_argument("--overlap-wait", type=float, default=0,
                   help="seconds to wait for another Ray cluster on this machine to stop")
    g.add_argument("--overlap-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe override for both runs (repeatable)")
    g.add_argument("--keep-runs", action="store_true")
    g = p.add_argument_group("resident")
    g.add_argument("--with-resident", action="store_true", help="include resident in 'all'")
    g.add_argument("--resident-prompts", type=int, default=64)
    g.add_argument("--resident-steps", type=int, default=3)
    g.add_argument("--resident-epochs", type=int, default=2)
    g.add_argument("--resident-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe override for both runs (repeatable)")
    return p


def _tiny_model(args, device):
    """The tiny Llama of the ``--tiny-*`` options."""
    from bench.shapes import tiny_llama

    return tiny_llama(vocab_size=args.tiny_vocab, hidden_size=args.tiny_hidden,
                      num_layers=args.tiny_layers, device=device, seed=args.seed)


def run_step(args) -> dict:
    """The ``step`` section for the chosen ``--shape``.

    Raises:
        ConfigError: An unknown variant or a bad batch shape.
    """
    import torch

    from bench import shapes
    from bench.step import BENCH_TEMPERATURE, DEFAULT_VARIANTS, parse_variants, run_step_bench

    variants = parse_variants(args.variants or DEFAULT_VARIANTS)  # fail before building
    big = args.shape == "qwen2-0.5b"
    if big:
        model, desc = shapes.qwen2(shapes.QWEN2_05B, dtype=torch.bfloat16, device=args.device,
                                   seed=args.seed)
    elif args.shape == "qwen2-small":
        model, desc = shapes.qwen2(shapes.QWEN2_SMALL, dtype=torch.float32, device=args.device,
                                   seed=args.seed)
    else:
        model, desc = _tiny_model(args, args.device)
    pick = lambda value, small, large: value if value is not None else (large if big else small)  # noqa: E731
    shape = shapes.BatchShape(prompts=pick(args.prompts, 4, 16), candidates=args.candidates,
                              prompt_len=pick(args.prompt_len, 64, 256),
                              resp_min=pick(args.resp_min, 16, 64),
                              resp_max=pick(args.resp_max, 32, 128), seed=args.seed)
    groups = shapes.make_groups(shape, desc["vocab_size"])
    result = run_step_bench(
        model, groups, shapes.make_rewards(shape, args.device),
        variants=variants, device=args.device,
        iters=args.iters or (10 if args.device.startswith("cuda") else 3), warmup=args.warmup,
        chunk_size=args.chunk_size, temperature=args.temperature or BENCH_TEMPERATURE)
    return {**result, "model": desc, "shape": shape.as_dict()}


def run_sampler(args) -> dict:
    """The ``sampler`` section on a tiny policy saved to a temporary directory."""
    import tempfile

    from bench.sampler import checkpoint_params, run_sampler_bench
    from lire_ray.demo.tiny_models import TINY_HEAD_DIM, build_tiny_policy

    with tempfile.TemporaryDirectory(prefix="lire-bench-sampler-") as tmp:
        path = build_tiny_policy(f"{tmp}/policy", vocab_size=args.tiny_vocab,
                                 hidden_size=args.tiny_hidden, num_layers=args.tiny_layers,
                                 num_heads=args.tiny_hidden // TINY_HEAD_DIM, seed=args.seed)
        result = run_sampler_bench(str(path), backends=args.backends, prompts=args.sampler_prompts,
                                   k=args.candidates, max_new_tokens=args.max_new_tokens,
                                   iters=args.sampler_iters, seed=args.seed, dtype="float32",
                                   vllm_memory=args.vllm_memory)
        result["model"] = {"name": "tiny-llama", "vocab_size": args.tiny_vocab,
                           "hidden_size": args.tiny_hidden, "num_layers": args.tiny_layers,
                           "params_m": round(checkpoint_params(path) / 1e6, 2)}
    return result


def run_loss(args) -> dict:
    """The ``loss`` section (LIRE vs the other named losses as K grows)."""
    from bench.loss_vs_k import run_loss_bench

    return run_loss_bench(ks=args.loss_k, losses=args.losses, batch=args.loss_batch,
                          device=args.device, seed=args.seed)


def run_overlap(args) -> dict:
    """The ``overlap`` section (two runs of ``jobs/self_enhance.py``)."""
    from bench.overlap import run_overlap_bench

    return run_overlap_bench(prompts=args.overlap_prompts, steps=args.overlap_steps,
                             epochs=args.overlap_epochs, batch=args.overlap_batch,
                             backend=args.overlap_backend, extra=args.overlap_set,
                             timeout_s=args.overlap_timeout, wait_s=args.overlap_wait,
                             keep=args.keep_runs)


def run_resident(args) -> dict:
    """The ``resident`` section (two runs of ``jobs/self_enhance.py``)."""
    from bench.resident import run_resident_bench

    return run_resident_bench(prompts=args.resident_prompts, steps=args.resident_steps,
                              epochs=args.resident_epochs, extra=args.resident_set,
                              timeout_s=args.overlap_timeout, wait_s=args.overlap_wait,
                              keep=args.keep_runs)


def run_peer(args) -> dict:
    """The ``peer`` section: TRL's DPOTrainer and ``jobs/train.py`` one after the other."""
    from bench.peer import run_peer_bench

    policy = "tiny" if args.quick else args.policy
    if policy != "tiny":
        from lire_ray.cli import DEFAULT_RECIPE
        from lire_ray.config import load_recipe
        from lire_ray.inputs import resolve_policy

        # A GGUF model (the packaged one by name) is converted once into the default recipe's
        # run cache; a local folder must exist.
        policy = resolve_policy(load_recipe(DEFAULT_RECIPE, []), policy, key="--policy")
    prompts = args.peer_prompts or (16 if args.quick else 64)
    try:
        return run_peer_bench(policy=policy, k=args.k, prompts=prompts, lr=args.lr,
                              seed=args.seed, work_dir=args.work_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


RUNNERS = {"step": run_step, "sampler": run_sampler, "loss": run_loss, "overlap": run_overlap,
           "resident": run_resident, "peer": run_peer}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benches, write JSON, print Markdown.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0, or 1 when the step bench's agreement check failed.

    Raises:
        ConfigError: Bad arguments (unknown variant, no CUDA device, missing result file).
        LireError: A bench could not run (e.g. another Ray cluster blocks the overlap bench).
    """
    args = build_parser().parse_args(argv)
    from bench.report import render

    if args.what == "render":
        if not args.files:
            raise ConfigError("render needs result JSON files: jobs/bench.py render FILE...")
        for name in args.files:
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"render: no such result file '{path}'")
            print(render(json.loads(path.read_text(encoding="utf-8"))))
        return 0
    if args.files:
        raise ConfigError(f"unexpected arguments {args.files}: only 'render' takes files")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda given but torch sees no CUDA device")
    elif args.device != "cpu":
        raise ConfigError(f"--device must be cpu or cuda, got '{args.device}'")
    else:
        fix_malloc_threshold()
    sections = [args.what] if args.what != "all" else \
        [s for s in SECTIONS if s not in JOB_SECTIONS or getattr(args, JOB_SECTIONS[s])]
    command = "python jobs/bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results: dict[str, Any] = {}
    doc = {"command": command, "machine": machine_info(args.device), "results": results}
    for section in sections:
        print(f"running {section} ...", file=sys.stderr, flush=True)
        results[section] = RUNNERS[section](args)
        if args.out:
            write_json(args.out, doc)  # after every section, so a late failure keeps the rest
    if args.markdown:
        print(render(doc))
    elif not args.out:
        print(json.dumps(doc, indent=2, default=str))
    step = results.get("step")
    return 1 if step is not None and not step["agreement_ok"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
