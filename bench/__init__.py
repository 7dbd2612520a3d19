"""Benchmarks of lire-ray against the usual way of doing the same work.

``python jobs/bench.py {step,sampler,loss,overlap,all}`` runs them; ``bench/gpu_check.py`` is the
self-contained GPU check (correctness and timing on a Qwen2-0.5B-shaped model). Every bench
writes JSON, and the Markdown tables in ``BENCHMARKS.md`` are rendered from that JSON.

Shape notation used throughout: B prompts, K candidates per prompt, L tokens per row, V
vocabulary size.
"""
