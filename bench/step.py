"""Training-step bench: lire-ray's sequence log-probs + LIRE loss + backward against the naive
full-logits step (:mod:`bench.naive`), on the same model, batch, rewards and seed.

A step is forward, LIRE loss (paper eq. 5-6), and backward; no optimizer update, so every
variant sees the same weights and their gradients can be compared. Reported per variant:
candidate-tokens/s (prompt + response per candidate, counted the naive way, so all variants
share one numerator), peak memory, and agreement with the naive step (loss, log-probs, a few
parameter gradients).

Shape notation: B prompts, K candidates per prompt, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.common import fmt, median, peak_memory, table, time_call
from bench.naive import naive_sequence_logprobs
from lire_ray.batch import TokenizedGroup
from lire_ray.errors import ConfigError
from lire_ray.logprobs import sequence_logprobs
from lire_ray.losses import build_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Agreement tolerances (relative; see :func:`agreement`). bf16 ones allow for different kernel
#: shapes and summation orders between padded and packed rows at 8 mantissa bits.
TOLERANCES = {
    "float32": {"logps": 1e-4, "loss": 1e-4, "grad": 1e-3},
    "bfloat16": {"logps": 1e-2, "loss": 1e-2, "grad": 5e-2},
}
#: The bench's LIRE temperature. A random-init model gives candidates of different lengths
#: summed log-probs hundreds of nats apart; at the paper's T=2 the softmax Q would be one-hot
#: and every gradient would vanish, leaving nothing to compare. The loss's cost does not
#: depend on T.
BENCH_TEMPERATURE = 100.0


@dataclass(frozen=True)
class Variant:
    """One way of computing the step.

    Attributes:
        name: Short id used in JSON and on the command line.
        packing: ``None`` for the naive step, else the lire-ray packing.
        gradient_checkpointing: Recompute decoder activations in backward.
    """

    name: str
    packing: str | None
    gradient_checkpointing: bool = False

    @property
    def label(self) -> str:
        base = "naive (TRL-style)" if self.packing is None else f"lire-ray {self.packing}+chunked"
        return base + (" + grad ckpt" if self.gradient_checkpointing else "")


VARIANTS = {v.name: v for v in (
    Variant("naive", None), Variant("padded", "padded"), Variant("shared_prefix", "shared_prefix"),
    Variant("naive_ckpt", None, True), Variant("shared_prefix_ckpt", "shared_prefix", True),
)}
DEFAULT_VARIANTS = ("naive", "padded", "shared_prefix")


def parse_variants(names: Sequence[str]) -> list[Variant]:
    """Variants by name; the naive one is always first (it is the reference).

    Raises:
        ConfigError: An unknown name.
    """
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown step variant(s) {unknown}; known: {sorted(VARIANTS)}")
    chosen = [VARIANTS[n] for n in dict.fromkeys(names)]
    return sorted(chosen, key=lambda v: v.packing is not None)


def compared_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """A few parameters spread over the model whose gradients are compared across variants:
    the input embedding, the first attention projection, the last MLP and the final norm (and
    ``lm_head`` when it is not tied to the embedding)."""
    named = dict(model.named_parameters())
    wanted = [n for n in named if n.endswith("embed_tokens.weight")]
    wanted += [next(n for n in named if "layers.0." in n and "q_proj.weight" in n)]
    last = max(int(n.split("layers.")[1].split(".")[0]) for n in named if "layers." in n)
    wanted += [n for n in named if f"layers.{last}.mlp.down_proj.weight" in n]
    wanted += [n for n in named if n.endswith("norm.weight") and "layers." not in n]
    wanted += [n for n in named if n.endswith("lm_head.weight")]
    return {n: named[n] for n in wanted}


def grad_of(param: nn.Parameter) -> torch.Tensor:
    """``param.grad`` detached; every compared parameter has one after :func:`one_step`."""
    assert param.grad is not None, "no gradient: run one_step first"
    return param.grad.detach()


def one_step(model: PreTrainedModel, groups: Sequence[TokenizedGroup], rewards: torch.Tensor,
             variant: Variant, *, chunk_size: int, temperature: float):
    """Forward, LIRE loss and backward once; gradients land in ``model``'s ``.grad``.

    Args:
        model: A transformers causal LM in train mode.
        groups: B groups of K candidates.
        rewards: ``[B, K]`` rewards on the model's device.
        variant: How to compute the sequence log-probs.
        chunk_size: ``lm_head`` positions per chunk (lire-ray variants).
        temperature: LIRE temperature T.

    Returns:
        ``(loss, logps [B, K], tokens_computed)``, loss and logps detached.
    """
    model.zero_grad(set_to_none=True)
    if variant.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    loss_fn = build_loss("lire", {"temperature": temperature})
    if variant.packing is None:
        logps = naive_sequence_logprobs(model, groups)
        mask = torch.ones_like(logps, dtype=torch.bool)
        tokens = sum(g.num_tokens_naive for g in groups)
    else:
        out = sequence_logprobs(model, groups, packing=variant.packing, chunk_size=chunk_size)
        logps, mask, tokens = out.logps, out.mask, out.tokens_computed
    per_prompt, _ = loss_fn(logps, rewards, mask=mask)
    loss = per_prompt.mean()
    loss.backward()
    return loss.detach(), logps.detach(), tokens


def _rel(got: torch.Tensor, ref: torch.Tensor, floor: float) -> float:
    got, ref = got.double(), ref.double()
    return float((got - ref).abs().max() / ref.abs().max().clamp(min=floor))


def agreement(ref: dict, got: dict) -> dict:
    """Relative differences of one variant's step from the reference (naive) step.

    ``logps``: max |diff| / max |ref| over all candidates; ``loss``: |diff| / max(|ref|, 1e-6);
    ``grad[name]``: max |diff| / max |ref| over that parameter's gradient.

    Args:
        ref: ``{"loss", "logps", "grads"}`` of the reference step.
        got: The same for the variant.

    Returns:
        ``{"loss", "logps", "grad": {name: float}, "grad_max": float}``.
    """
    grads = {n: _rel(got["grads"][n], g, 1e-30) for n, g in ref["grads"].items()}
    return {"loss": _rel(got["loss"], ref["loss"], 1e-6),
            "logps": _rel(got["logps"], ref["logps"], 1e-6),
            "grad": grads, "grad_max": max(grads.values(), default=0.0)}


def within(agree: dict, tol: dict) -> bool:
    """Whether every agreement field is within its tolerance."""
    return (agree["loss"] <= tol["loss"] and agree["logps"] <= tol["logps"]
            and agree["grad_max"] <= tol["grad"])


def run_step_bench(model: PreTrainedModel, groups: Sequence[TokenizedGroup],
                   rewards: torch.Tensor, *, variants: Sequence[Variant], device: str,
                   iters: int = 5, warmup: int = 1,
                   chunk_size: int = 1024, temperature: float = BENCH_TEMPERATURE,
                   tolerance: dict | None = None, measure_memory: bool = True) -> dict:
    """Check agreement, measure peak memory, then time every variant in interleaved rounds.

    Order: one step per variant for agreement (the naive one is the reference), one step per
    variant under the memory probe (naive last), ``warmup`` untimed rounds, then ``iters``
    timed rounds visiting the variants in turn, so background load on a shared machine hits
    all of them alike. The median round time is reported.

    Args:
        model: A transformers causal LM in train mode on ``device``.
        groups: B groups of K candidates.
        rewards: ``[B, K]`` rewards on ``device``.
        variants: Variants to run; the first must be a naive one.
        device: ``cpu`` or ``cuda``.
        iters: Timed rounds (>= 1).
        warmup: Untimed rounds after the agreement and memory steps.
        chunk_size: ``lm_head`` positions per chunk.
        temperature: LIRE temperature T.
        tolerance: ``{"logps", "loss", "grad"}``; default by the model's dtype.
        measure_memory: Run the memory probe step.

    Returns:
        A JSON-ready dict: ``config`` and one entry per variant under ``variants``.

    Raises:
        ConfigError: No naive variant first, or ``iters < 1``.
    """
    if not variants or variants[0].packing is not None:
        raise ConfigError("the first step variant must be a naive one (the reference)")
    if iters < 1:
        raise ConfigError(f"iters must be >= 1, got {iters}")
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    tol = tolerance or TOLERANCES.get(dtype, TOLERANCES["bfloat16"])
    params = compared_params(model)
    cand_tokens = sum(g.num_tokens_naive for g in groups)
    run = {v.name: (lambda v=v: one_step(model, groups, rewards, v, chunk_size=chunk_size,
                                         temperature=temperature)) for v in variants}
    results, ref = {}, None
    for v in variants:
        loss, logps, tokens = run[v.name]()
        snap = {"loss": loss, "logps": logps,
                "grads": {n: grad_of(p).clone() for n, p in params.items()}}
        entry = {"label": v.label, "packing": v.packing,
                 "gradient_checkpointing": v.gradient_checkpointing, "tokens_computed": tokens,
                 "loss": float(loss)}
        if ref is None:
            ref = snap
        else:
            entry["agreement"] = agreement(ref, snap)
            entry["agreement_ok"] = within(entry["agreement"], tol)
        results[v.name] = entry
        del snap
    del ref
    model.zero_grad(set_to_none=True)
    if measure_memory:
        # Naive last: on CPU, heap a larger step leaves resident could hide a later step's
        # growth, and this order lets that bias count against lire-ray, not for it.
        for v in reversed(variants):
            results[v.name]["memory"] = peak_memory(run[v.name], device)
            model.zero_grad(set_to_none=True)
    for _ in range(warmup):
        for v in variants:
            run[v.name]()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(iters):
        for v in variants:
            times[v.name].append(time_call(run[v.name], device))
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_disable()
    base = variants[0].name
    for v in variants:
        entry = results[v.name]
        entry["times_s"] = times[v.name]
        entry["median_s"] = median(times[v.name])
        entry["cand_tokens_per_s"] = cand_tokens / entry["median_s"]
        entry["speedup_vs_naive"] = median(times[base]) / entry["median_s"]
        if measure_memory:
            # CPU RSS includes the interpreter and libraries: compare the growth there.
            key = "peak_gib" if device.startswith("cuda") else "delta_gib"
            naive_mem = results[base]["memory"][key]
            entry["memory_ratio_vs_naive"] = (entry["memory"][key] / naive_mem
                                              if naive_mem > 0 else None)
    return {"config": {"prompts": len(groups), "candidates": max(g.num_candidates for g in groups),
                       "cand_tokens": cand_tokens, "chunk_size": chunk_size,
                       "temperature": temperature, "iters": iters, "warmup": warmup,
                       "dtype": dtype, "device": device, "tolerance": tol,
                       "compared_grads": list(params)},
            "variants": results,
            "agreement_ok": all(e.get("agreement_ok", True) for e in results.values())}


def _gib(value: float | None) -> str:
    """Memory cell: below 1 MiB the RSS probe cannot resolve anything, so say so."""
    if value is None:
        return "-"
    return "< 0.001" if value < 1e-3 else f"{value:.3f}"


def step_markdown(result: dict) -> str:
    """The step bench's Markdown table (one row per variant) with a shape line above it."""
    cfg, model = result["config"], result.get("model", {})
    shape = result.get("shape", {})
    lines = [f"Model: {model.get('name', '?')} ({model.get('params_m', '?')} M params, "
             f"V={model.get('vocab_size', '?')}, {cfg['dtype']}); batch: B={cfg['prompts']} "
             f"prompts x K={cfg['candidates']}, prompt {shape.get('prompt_len', '?')} tokens, "
             f"responses {shape.get('resp_min', '?')}..{shape.get('resp_max', '?')} tokens "
             f"({cfg['cand_tokens']:,} candidate tokens); LIRE T={cfg['temperature']:g}; "
             f"chunk {cfg['chunk_size']}; median of {cfg['iters']} after {cfg['warmup']} "
             "warm-up.", ""]
    mem_col = "peak mem GiB" if cfg["device"].startswith("cuda") else "peak RSS delta GiB"
    rows = []
    for entry in result["variants"].values():
        mem = entry.get("memory", {})
        agree = entry.get("agreement")
        rows.append([
            entry["label"], f"{entry['cand_tokens_per_s']:,.0f}", entry["speedup_vs_naive"],
            entry["tokens_computed"], entry["median_s"],
            _gib(mem.get("peak_gib") if cfg["device"].startswith("cuda")
                 else mem.get("delta_gib")),
            "reference" if agree is None else fmt(agree["loss"], 2),
            "reference" if agree is None else fmt(agree["logps"], 2),
            "reference" if agree is None else fmt(agree["grad_max"], 2)])
    lines.append(table(["variant", "cand tokens/s", "x naive", "tokens computed", "step s",
                        mem_col, "loss rel diff", "logps rel diff", "grad rel diff (max)"], rows))
    tol = cfg["tolerance"]
    ref = result.get("fp32_reference")
    if ref:
        lines += ["", "Distance of each bf16 step from a float32 step on the same weights "
                  "(rel. diff of loss / logps / grads): " + "; ".join(
                      f"{name} {fmt(e['loss'], 2)} / {fmt(e['logps'], 2)} / "
                      f"{fmt(e['grad_max'], 2)}" for name, e in ref["errors"].items())
                  + f". lire-ray within {ref['slack']:g}x the naive step's distance: "
                  + ("yes" if ref["ok"] else "NO") + "."]
    lines.append("")
    lines.append(f"Agreement tolerances ({cfg['dtype']}): loss {tol['loss']:g}, logps "
                 f"{tol['logps']:g}, grads {tol['grad']:g}; all within: "
                 f"{'yes' if result['agreement_ok'] else 'NO'}. Memory: "
                 f"{next(iter(result['variants'].values())).get('memory', {}).get('method', '-')}"
                 + ("" if cfg["device"].startswith("cuda") else
                    " (growth over the resident set before the step)") + ".")
    return "\n".join(lines)

