"""Markdown rendering of a bench result file, so published tables are never typed by hand.

A result file is ``{"command", "machine", "results": {section: result}}``; each section is
rendered by its bench's own table function under a heading, with the exact command and the
machine and date it ran on.
"""

from __future__ import annotations

from bench.common import machine_line
from bench.loss_vs_k import loss_markdown
from bench.overlap import overlap_markdown
from bench.sampler import sampler_markdown
from bench.step import step_markdown

SECTIONS = {
    "step_fp32_check": ("Training step, float32 agreement check", step_markdown),
    "step": ("Training step: lire-ray vs naive full-logits step", step_markdown),
    "step_ckpt": ("Training step with gradient checkpointing", step_markdown),
    "sampler": ("Sampler: vLLM vs Hugging Face generate", sampler_markdown),
    "loss": ("Loss cost vs K: LIRE vs Plackett-Luce", loss_markdown),
    "overlap": ("Overlap: streamed (split) vs sequential (colocate) self-enhancement",
                overlap_markdown),
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
    return "\n".join(out)
