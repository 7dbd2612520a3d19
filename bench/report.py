"""Markdown rendering of a bench result file, so published tables are never typed by hand.

A result file is ``{"command", "machine", "results": {section: result}}``; each section is
rendered by its bench's own table function under a heading, with the exact command and the
machine and date it ran on.
"""

from __future__ import annotations

from bench.common import machine_line, table
from bench.loss_vs_k import loss_markdown
from bench.overlap import overlap_markdown
from bench.peer import peer_markdown
from bench.resident import resident_markdown
from bench.sampler import sampler_markdown
from bench.step import step_markdown
from bench.weight_sync import weight_sync_markdown

SECTIONS = {
    "step_fp32_check": ("Training step, float32 agreement check", step_markdown),
    "step": ("Training step: lire-ray vs naive full-logits step", step_markdown),
    "step_ckpt": ("Training step with gradient checkpointing", step_markdown),
    "sampler": ("Sampler: vLLM vs Hugging Face generate", sampler_markdown),
    "loss": ("Loss cost vs K: LIRE vs Plackett-Luce", loss_markdown),
    "overlap": ("Overlap: streamed (split) vs sequential (colocate) self-enhancement",
                overlap_markdown),
    "resident": ("Resident trainer group vs one Ray Train run per Evolve step",
                 resident_markdown),
    "peer": ("Peer: TRL's DPOTrainer vs lire-ray's jobs/train.py on the same work",
             peer_markdown),
    "weight_sync": ("Weight sync: trainer snapshot to a sampler's model, from memory",
                    weight_sync_markdown),
}


def render(doc: dict, *, level: int = 3) -> str:
    """Every section of a result document as Markdown.

    Args:
        doc: A bench result document.
        level: Heading level of the section titles.

    Returns:
        The Markdown text.
    """
    out = []
    for key, (title, fn) in SECTIONS.items():
        result = doc.get("results", {}).get(key)
        if result is None:
            continue
        if "error" in result and len(result) == 1:
            body = f"Not measured: {result['error']}"
        else:
            body = fn(result)
        out.append(f"{'#' * level} {title}\n\nCommand: `{doc.get('command', '?')}`\n\n"
                   f"{machine_line(doc.get('machine', {}))}\n\n{body}\n")
    tg = doc.get("targets") or {}
    rows = [[name, t["speedup_vs_naive"], "yes" if t["speedup_met"] else "no", t["peak_gib"],
             "yes" if t["peak_met"] else "no"]
            for name, t in tg.items() if isinstance(t, dict)]
    if rows:
        out.append(f"{'#' * level} Targets\n\nShared-prefix steps against the plain naive step "
                   f"of the same run: cand tokens/s at least {tg['speedup_target']:g}x, peak "
                   f"memory at most {tg['peak_target_gib']:g} GiB.\n\n"
                   + table(["variant", "x naive", "met", "peak GiB", "met"], rows) + "\n")
    return "\n".join(out)
