"""Weight-sync bench: how long a resident trainer takes to hand a new policy to a sampler.

The path measured is the one :mod:`lire_ray.runtime.resident` uses without a shared disk: the
trainer's weights copied to CPU memory (the policy snapshot), cut into buckets of whole layers
and serialised as safetensors bytes (:mod:`lire_ray.sampling.weights`), then read back and
loaded into a second copy of the model on the device, bucket by bucket (what a sampler does).
Where vLLM is installed, the buckets are also loaded into a real vLLM engine through the
sampler's in-place reload. Each phase is timed on its own; ``total_s`` is their sum for one
sampler (the object store's transfer between processes on one node is a shared-memory copy,
not counted here).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import table


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_weight_sync_bench(model, *, device: str, bucket_mb: int = 256, repeats: int = 3,
                          vllm_path: str | None = None) -> dict[str, Any]:
    """Time snapshot, bucketing + serialisation and loading of ``model``'s weights.

    Args:
        model: The trainer's model (on ``device``).
        device: Where the model lives.
        bucket_mb: Bucket size bound.
        repeats: Timed rounds (the best is reported).
        vllm_path: A saved copy of the model to start a vLLM engine on; None skips vLLM.

    Returns:
        Seconds per phase, bytes moved, buckets, and whether the loaded copy equals the source.
    """
    import copy

    import torch

    from lire_ray.sampling.weights import from_bytes, layer_buckets, to_bytes

    target = copy.deepcopy(model).to(device)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    best: dict[str, float] = {}
    blobs: list[bytes] = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        snap = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        t1 = time.perf_counter()
        blobs = [to_bytes(b) for b in layer_buckets(snap.items(), bucket_mb << 20)]
        t2 = time.perf_counter()
        for blob in blobs:
            target.load_state_dict({k: v.to(device) for k, v in from_bytes(blob).items()},
                                   strict=False)
        _sync(device)
        t3 = time.perf_counter()
        for key, value in (("snapshot_s", t1 - t0), ("serialise_s", t2 - t1),
                           ("load_s", t3 - t2)):
            best[key] = min(best.get(key, float("inf")), value)
    equal = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                    target.state_dict().values()))
    out: dict[str, Any] = {**best, "total_s": sum(best.values()),
                           "bytes": sum(len(b) for b in blobs), "buckets": len(blobs),
                           "bucket_mb": bucket_mb, "loaded_equal": bool(equal)}
    if vllm_path is not None:
        out["vllm"] = _vllm_load(vllm_path, blobs)
    return out


def _vllm_load(path: str, blobs: list[bytes]) -> dict[str, Any]:
    """Seconds to load the buckets into a vLLM engine on ``path`` (in-place reload)."""
    try:
        from vllm import LLM
    except ImportError as err:
        return {"error": f"vLLM not installed: {err}"}
    llm = LLM(model=path, dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=1024,
              worker_extension_cls="lire_ray.sampling.vllm_worker.SamplerWorkerExtension")
    t0 = time.perf_counter()
    for blob in blobs:
        llm.collective_rpc("lire_load_weights", args=(blob,))
    llm.reset_prefix_cache()
    return {"load_s": time.perf_counter() - t0}


def weight_sync_markdown(result: dict) -> str:
    """The weight-sync bench as a Markdown table."""
    rows = [["snapshot to CPU", result["snapshot_s"]],
            ["buckets + safetensors", result["serialise_s"]],
            ["load into a model copy", result["load_s"]], ["total", result["total_s"]]]
    if isinstance(result.get("vllm"), dict) and "load_s" in result["vllm"]:
        rows.append(["load into a vLLM engine", result["vllm"]["load_s"]])
    return (table(["phase", "seconds"], rows)
            + f"\n\n{result['bytes'] / 2**30:.2f} GiB in {result['buckets']} buckets of at most "
              f"{result['bucket_mb']} MiB; the loaded copy equals the source: "
              f"{result['loaded_equal']}.")
