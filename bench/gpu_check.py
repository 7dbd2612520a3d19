"""GPU check: correctness and speed of lire-ray's training step on a Qwen2-0.5B-shaped model.

One script, a few minutes on one H100/H200, importing only torch, transformers and the pure
``lire_ray`` modules (logprobs, packing, batch, losses, errors), so it runs on a GPU machine
without ray, vLLM, deepspeed or pydantic:

    python bench/gpu_check.py                  # CUDA; JSON + Markdown to $OUT (or --out)
    python bench/gpu_check.py --device cpu     # dry run on small shapes

It runs, in order:

1. float32 agreement on a smaller Qwen2 (few layers, full vocabulary): naive vs every lire-ray
   variant, loss / log-probs / gradients at float32 tolerances;
2. the bf16 step bench at B=16 x K=4, prompt 256, responses 64..128 tokens: naive, padded and
   shared-prefix (then the same with gradient checkpointing), with agreement at bf16
   tolerances, and every variant's loss / log-prob / gradient error against a float32 step on
   a copy of the same weights (lire-ray must be as accurate as the naive bf16 step);
3. the loss-vs-K bench on the GPU; the Hugging Face sampler bench only where pydantic (the
   recipe schema) can be imported;
4. the weight-sync bench (:mod:`bench.weight_sync`): a Qwen2-0.5B-shaped bf16 policy snapshot,
   cut into layer buckets and loaded into a second copy on the GPU (and into a vLLM engine
   where vLLM is installed), the resident trainer's path to the samplers. Target: <= 1 s.

Exit status 1 if an agreement check fails. Targets (shared-prefix vs naive): >= 2.5x
candidate-tokens/s and <= 9 GiB peak memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import shapes  # noqa: E402
from bench.common import machine_info, write_json  # noqa: E402
from bench.loss_vs_k import run_loss_bench  # noqa: E402
from bench.report import render  # noqa: E402
from bench.step import (  # noqa: E402
    BENCH_TEMPERATURE,
    VARIANTS,
    agreement,
    compared_params,
    grad_of,
    one_step,
    parse_variants,
    run_step_bench,
)

TARGET_SPEEDUP = 2.5
TARGET_SYNC_S = 1.0
TARGET_PEAK_GIB = 9.0
#: A bf16 lire-ray step may be at most this many times further from the float32 step than the
#: naive bf16 step is.
ACCURACY_SLACK = 2.0


def _sizes(small: bool) -> dict:
    if small:
        return {"fp32": (shapes.QWEN2_SMALL, None, shapes.BatchShape(3, 3, 24, 4, 12)),
                "bf16": (shapes.QWEN2_SMALL, shapes.BatchShape(4, 4, 32, 8, 16)), "iters": 2}
    return {"fp32": (shapes.QWEN2_05B, 4, shapes.BatchShape(4, 4, 64, 16, 32)),
            "bf16": (shapes.QWEN2_05B, shapes.BatchShape(16, 4, 256, 64, 128)), "iters": 10}


def fp32_reference_check(model, groups, rewards, variants, *, chunk_size: int) -> dict:
    """How far each variant's bf16 step lands from a float32 step on the same weights.

    The float32 reference is lire-ray's shared-prefix step with gradient checkpointing on a
    float32 copy of the model (the float32 naive step of a whole batch would not fit; the
    shared-prefix step is checked against the float32 naive one in ``step_fp32_check``).
    Every variant, naive included, is compared with it using :func:`bench.step.agreement`;
    a lire-ray variant passes when none of its errors exceeds ``ACCURACY_SLACK`` times the
    naive bf16 step's own error (plus 1e-6), i.e. it is as accurate as the usual bf16 step.

    Returns:
        ``{"errors": {variant: agreement dict}, "no_worse_than_naive": {variant: bool},
        "ok": bool}``.
    """
    ref_model = copy.deepcopy(model).float()
    kw: dict[str, Any] = {"chunk_size": chunk_size, "temperature": BENCH_TEMPERATURE}
    params = compared_params(ref_model)
    loss, logps, _ = one_step(ref_model, groups, rewards, VARIANTS["shared_prefix_ckpt"], **kw)
    ref = {"loss": loss, "logps": logps,
           "grads": {n: grad_of(p).clone() for n, p in params.items()}}
    del ref_model, params
    bf16_params = compared_params(model)
    errors = {}
    for v in variants:
        loss, logps, _ = one_step(model, groups, rewards, v, **kw)
        got = {"loss": loss, "logps": logps,
               "grads": {n: grad_of(p) for n, p in bf16_params.items()}}
        errors[v.name] = agreement(ref, got)
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_disable()
    base = errors[variants[0].name]
    ok = {}
    for name, err in errors.items():
        if name == variants[0].name:
            continue
        ok[name] = all(err[f] <= ACCURACY_SLACK * base[f] + 1e-6
                       for f in ("loss", "logps", "grad_max"))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"errors": errors, "no_worse_than_naive": ok, "slack": ACCURACY_SLACK,
            "ok": all(ok.values())}


def step_section(model, desc, shape, names, *, device, iters, warmup, chunk_size,
                 fp32_ref: bool) -> dict:
    variants = parse_variants(names)
    groups = shapes.make_groups(shape, desc["vocab_size"])
    rewards = shapes.make_rewards(shape, device)
    result = run_step_bench(model, groups, rewards, variants=variants, device=device,
                            iters=iters, warmup=warmup, chunk_size=chunk_size)
    result.update(model=desc, shape=shape.as_dict())
    if fp32_ref:
        check = fp32_reference_check(model, groups, rewards, variants, chunk_size=chunk_size)
        result["fp32_reference"] = check
        result["agreement_ok"] = result["agreement_ok"] and check["ok"]
    return result


def _guard(name: str, fn, results: dict, skip: set[str]) -> None:
    """Run one section; an exception (OOM included) is recorded and the next section runs."""
    if name in skip:
        return
    start = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        results[name] = fn()
    except Exception as err:  # a failed section must not lose the others' numbers
        results[name] = {"error": f"{type(err).__name__}: {err}"}
        traceback.print_exc()
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"[gpu_check] {name} done in {time.perf_counter() - start:.1f} s", flush=True)


def _hf_sampler(device: str) -> dict:
    try:
        import pydantic  # noqa: F401
    except ImportError:
        return {"error": "skipped: the Hugging Face sampler takes the recipe's SamplerConfig, "
                         "which needs pydantic (not installed here)"}
    import tempfile

    from bench.sampler import checkpoint_params, run_sampler_bench
    from lire_ray.demo.tiny_models import build_tiny_policy

    with tempfile.TemporaryDirectory(prefix="lire-gpu-check-") as tmp:
        path = build_tiny_policy(f"{tmp}/policy", vocab_size=8192, hidden_size=256,
                                 num_layers=4, num_heads=4)
        result = run_sampler_bench(str(path), backends=["vllm", "hf"], prompts=16, k=4,
                                   max_new_tokens=64, iters=3)
        result["model"] = {"name": "tiny-llama", "vocab_size": 8192, "hidden_size": 256,
                           "num_layers": 4, "params_m": round(checkpoint_params(path) / 1e6, 2)}
    return result


def targets(results: dict) -> dict:
    """Shared-prefix steps (without and with gradient checkpointing) against the targets.

    Both are compared with the plain naive step of the ``step`` section (same process, model
    and batch): candidate-tokens/s ratio and absolute peak memory.

    Returns:
        ``{variant: {"speedup_vs_naive", "speedup_met", "peak_gib", "peak_met"}}`` for the
        variants that were measured, plus the two targets.
    """
    naive = results.get("step", {}).get("variants", {}).get("naive")
    out: dict[str, Any] = {"speedup_target": TARGET_SPEEDUP, "peak_target_gib": TARGET_PEAK_GIB}
    if not naive:
        return out
    for section, name in (("step", "shared_prefix"), ("step_ckpt", "shared_prefix_ckpt")):
        entry = results.get(section, {}).get("variants", {}).get(name)
        if not entry:
            continue
        speedup = entry["cand_tokens_per_s"] / naive["cand_tokens_per_s"]
        peak = entry.get("memory", {}).get("peak_gib")
        out[name] = {"speedup_vs_naive": speedup, "speedup_met": speedup >= TARGET_SPEEDUP,
                     "peak_gib": peak, "peak_met": peak is not None and peak <= TARGET_PEAK_GIB}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="small shapes (default on cpu)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default $OUT)")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--skip", default="", help="comma list of sections to skip: "
                   "step_fp32_check,step,step_ckpt,loss,sampler,weight_sync")
    args = p.parse_args(argv)
    small = args.small or args.device == "cpu"
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    sizes, dev = _sizes(small), args.device
    res: dict[str, Any] = {}
    command = "python bench/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {"command": command.strip(), "machine": machine_info(dev), "results": res}
    all_names = list(VARIANTS)
    layout, layers, shape = sizes["fp32"]

    def fp32():
        model, desc = shapes.qwen2(layout, dtype=torch.float32, device=dev, num_layers=layers)
        return step_section(model, desc, shape, all_names, device=dev, iters=1, warmup=0,
                            chunk_size=args.chunk_size, fp32_ref=False)

    def save():
        # After every section, so a run cut short still leaves what it measured.
        doc["targets"] = targets(res)
        doc["agreement_failed"] = [k for k, v in res.items()
                                   if k.startswith("step") and not v.get("agreement_ok")]
        if args.out:
            out = Path(args.out)
            write_json(out / "gpu_check.json", doc)
            (out / "gpu_check.md").write_text(render(doc), encoding="utf-8")

    _guard("step_fp32_check", fp32, res, skip)
    save()
    layout, shape = sizes["bf16"]
    holder = {}

    def bf16(names, fp32_ref):
        if "model" not in holder:
            holder["model"] = shapes.qwen2(layout, dtype=torch.bfloat16, device=dev)
        model, desc = holder["model"]
        return step_section(model, desc, shape, names, device=dev, iters=sizes["iters"],
                            warmup=2 if not small else 1, chunk_size=args.chunk_size,
                            fp32_ref=fp32_ref)

    _guard("step", lambda: bf16(["naive", "padded", "shared_prefix"], True), res, skip)
    save()
    _guard("step_ckpt", lambda: bf16(["naive_ckpt", "shared_prefix_ckpt"], False), res, skip)
    holder.clear()
    save()
    _guard("loss", lambda: run_loss_bench(device=dev), res, skip)

    def weight_sync():
        from bench.weight_sync import run_weight_sync_bench

        model, _ = shapes.qwen2(layout, dtype=torch.bfloat16, device=dev)
        out = run_weight_sync_bench(model, device=dev, repeats=1 if small else 3)
        out["target_s"], out["target_met"] = TARGET_SYNC_S, out["total_s"] <= TARGET_SYNC_S
        return out

    _guard("weight_sync", weight_sync, res, skip)
    _guard("sampler", lambda: _hf_sampler(dev), res, skip)
    save()
    failed = doc["agreement_failed"]
    print(render(doc))
    print(json.dumps({"targets": doc["targets"], "agreement_failed": failed,
                      "fp32_reference": res.get("step", {}).get("fp32_reference")},
                     indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
