"""Sampler bench: generated tokens/s of the vLLM backend against the Hugging Face backend, on
the same model, prompts, K and lengths.

The backends draw their noise differently, so they do not produce the same candidates (and a
random model may stop early on EOS at different places); tokens/s is computed from the tokens
each backend really generated. Engine start-up is timed separately and excluded from tokens/s.
vLLM is skipped (with the reason recorded) where it cannot be imported, as on a GPU machine
without it.

Shape notation: B prompts, K candidates per prompt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from bench.common import median, table
from lire_ray.errors import LireError

Backend = Literal["vllm", "hf"]
BACKENDS: tuple[Backend, ...] = ("vllm", "hf")


def bench_prompts(count: int) -> list[str]:
    """``count`` short English prompts from the tiny model's corpus (fixed text)."""
    from lire_ray.demo.tiny_models import default_corpus

    lines = [line for line in default_corpus(400) if "\n" not in line]
    return [lines[i % len(lines)] for i in range(count)]


def checkpoint_params(model_dir) -> int:
    """Number of parameters stored in a model directory's safetensors files."""
    from pathlib import Path

    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def _vllm_missing() -> str | None:
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        return f"vLLM cannot be imported ({type(err).__name__}: {err})"
    return None


def time_backend(backend: Backend, model_path: str, prompts: Sequence[str], *, k: int,
                 max_new_tokens: int, iters: int, seed: int, dtype: str,
                 vllm_memory: float = 0.1) -> dict:
    """Start one sampler, warm it up, and time ``iters`` generate calls.

    Args:
        backend: ``vllm`` or ``hf``.
        model_path: Local model directory.
        prompts: B prompt texts.
        k: K candidates per prompt.
        max_new_tokens: Tokens generated per candidate (at most).
        iters: Timed calls; the median rate is reported.
        seed: Seed of the first call (call i uses ``seed + i``).
        dtype: Model dtype name.
        vllm_memory: vLLM ``gpu_memory_utilization`` (on CPU: the share of host RAM reserved
            for the KV cache; a tiny model needs little).

    Returns:
        ``{"startup_s", "times_s", "tokens", "median_s", "tokens_per_s"}``.
    """
    from lire_ray.config import SamplerConfig
    from lire_ray.sampling import build_sampler

    cfg = SamplerConfig(backend=backend, num_candidates=k, temperature=1.0,
                        max_new_tokens=max_new_tokens, stop=[], seed=seed,
                        gpu_memory_utilization=vllm_memory, batch_size=max(1, len(prompts)),
                        max_model_len=512)
    start = time.perf_counter()
    sampler = build_sampler(model_path, cfg, dtype=dtype)
    startup = time.perf_counter() - start
    try:
        sampler.generate(list(prompts[:2]), n=k, seed=seed + iters)  # warm-up, unused seed
        times, tokens = [], []
        for i in range(iters):
            t0 = time.perf_counter()
            out = sampler.generate(list(prompts), n=k, seed=seed + i)
            times.append(time.perf_counter() - t0)
            tokens.append(sum(c.num_tokens for cands in out for c in cands))
    finally:
        sampler.close()
    rates = [n / t for n, t in zip(tokens, times)]
    return {"startup_s": startup, "times_s": times, "tokens": tokens,
            "median_s": median(times), "tokens_per_s": median(rates)}


def run_sampler_bench(model_path: str, *, backends: Sequence[Backend] = BACKENDS,
                      prompts: int = 8, k: int = 4, max_new_tokens: int = 32, iters: int = 3,
                      seed: int = 0, dtype: str = "float32", vllm_memory: float = 0.1) -> dict:
    """Time every backend on the same model and prompts.

    Args:
        model_path: Local model directory (with its tokenizer).
        backends: Backends to try, in order.
        prompts: B.
        k: K candidates per prompt.
        max_new_tokens: Tokens per candidate (at most).
        iters: Timed calls per backend.
        seed: Sampling seed.
        dtype: Model dtype name.
        vllm_memory: vLLM ``gpu_memory_utilization``.

    Returns:
        ``{"config", "backends": {name: result, {"skipped": reason} or {"error": message}}}``;
        a backend that fails to start is recorded and the next one still runs.
    """
    texts = bench_prompts(prompts)
    out = {}
    for backend in backends:
        missing = _vllm_missing() if backend == "vllm" else None
        if missing:
            out[backend] = {"skipped": missing}
            continue
        try:
            out[backend] = time_backend(backend, model_path, texts, k=k,
                                        max_new_tokens=max_new_tokens, iters=iters, seed=seed,
                                        dtype=dtype, vllm_memory=vllm_memory)
        except LireError as err:  # e.g. too little free host RAM for vLLM's KV cache
            out[backend] = {"error": str(err).splitlines()[0][:300]}
    return {"config": {"prompts": prompts, "candidates": k, "max_new_tokens": max_new_tokens,
                       "iters": iters, "dtype": dtype, "temperature": 1.0,
                       "vllm_gpu_memory_utilization": vllm_memory},
            "backends": out}


def sampler_markdown(result: dict) -> str:
    """The sampler bench's Markdown table (one row per backend)."""
    cfg, model = result["config"], result.get("model", {})
    rows = []
    hf = result["backends"].get("hf", {}).get("tokens_per_s")
    for name, r in result["backends"].items():
        if "skipped" in r or "error" in r:
            rows.append([name, "skipped" if "skipped" in r else "failed", "-", "-", "-",
                         r.get("skipped") or r["error"]])
            continue
        rows.append([name, f"{r['tokens_per_s']:,.0f}", r["tokens_per_s"] / hf if hf else None,
                     r["median_s"], r["startup_s"], f"{sum(r['tokens']):,} tokens generated"])
    return (f"Model: {model.get('name', '?')} ({model.get('params_m', '?')} M params, "
            f"{cfg['dtype']}); B={cfg['prompts']} prompts x K={cfg['candidates']}, up to "
            f"{cfg['max_new_tokens']} new tokens, temperature {cfg['temperature']:g}; median of "
            f"{cfg['iters']} calls after one warm-up call.\n\n"
            + table(["backend", "generated tokens/s", "x hf", "call s", "start-up s", "note"],
                    rows))
