"""What a trainer worker settles before its first step: its torch threads, and the reference
log-probs a pool lacks.

Threads. Ray sets ``OMP_NUM_THREADS`` of a worker to its ``cpus_per_worker`` (1 by default), so a CPU
trainer computed on one core even where the machine has more and nothing else runs: with
``colocate`` placement the samplers wait while the trainer trains, and ``jobs/train.py`` runs
no other role at all. On SmolLM2-135M on 2 cores that one thread made a step take 2.2-2.8x
TRL's, which used both.

Reference log-probs. DPO, IPO and Plackett-Luce need ``log pi_ref`` of every candidate. A pool
scored by ``jobs/score.py reference=true`` or built by self-enhancement has them; a prepared
dataset does not. Where the reference is the initial policy, the worker computes them itself
before its first update, in one pass without gradients over its rows (as TRL's
``precompute_ref_log_probs``), instead of a separate scoring job that loads the model again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator

import pyarrow as pa

from lire_ray.config import Recipe
from lire_ray.pool import rows_to_table, table_to_rows

log = logging.getLogger(__name__)


def worker_threads(recipe: Recipe, workers_here: int, *, alone: bool = False,
                   cores: int | None = None) -> int:
    """Torch threads of one CPU trainer worker.

    Args:
        recipe: The run's recipe (``resources.trainer.torch_threads``, ``cpus_per_worker``,
            ``resources.placement``).
        workers_here: Trainer workers sharing this machine's cores.
        alone: The trainer is the only role of the job (``jobs/train.py``), whatever the
            placement says.
        cores: The machine's cores (default ``os.cpu_count()``, read where the worker runs).

    Returns:
        ``torch_threads`` when the recipe sets it; alone or with colocate placement the cores divided
        among the workers (at least ``cpus_per_worker``); otherwise ``cpus_per_worker``
        (the samplers compute beside the trainer with split placement). At least 1.
    """
    res = recipe.resources.trainer
    if res.torch_threads is not None:
        return res.torch_threads
    own = max(1, int(res.cpus_per_worker))
    if not alone and recipe.resources.placement != "colocate":
        return own
    cores = cores or os.cpu_count() or 1
    return max(own, cores // max(1, workers_here))


def fill_reference(model, tokenizer, tables: Iterable[pa.Table], recipe: Recipe, *,
                   rank: int = 0, timing: dict | None = None) -> Iterator[pa.Table]:
    """The same tables with every row's missing ``ref_logps`` filled from ``model``.

    Reads every table first (the model must still hold the initial weights for all of them),
    then computes the reference log-probs of the rows that lack them with training's
    tokenisation, packing and chunking (:func:`lire_ray.reference.reference_logps`).

    Args:
        model: The policy before any update (transformers or peft; DeepSpeed's module).
        tokenizer: Its tokenizer.
        tables: Arrow tables of pool rows (one micro-batch each).
        recipe: The run's recipe (``model`` limits, ``train.packing``, chunk size,
            ``data.chat_template``, ``train.micro_batch_prompts``).
        rank: The worker's rank (for the log line).
        timing: Receives ``reference_s``, the seconds the pass took, when given.

    Yields:
        The tables in their order; those whose rows all had reference log-probs unchanged.
    """
    from dataclasses import replace

    from lire_ray.reference import reference_logps

    tables = list(tables)
    missing = sum(1 for t in tables for r in table_to_rows(t) if r.ref_logps is None)
    if not missing:
        yield from tables
        return
    started = time.perf_counter()
    model_cfg, train = recipe.model, recipe.train
    out = []
    for table in tables:
        rows = table_to_rows(table)
        todo = [r for r in rows if r.ref_logps is None]
        if not todo:
            out.append(table)
            continue
        logps = iter(reference_logps(
            model, tokenizer, todo, max_prompt_tokens=model_cfg.max_prompt_tokens,
            max_response_tokens=model_cfg.max_response_tokens,
            batch_prompts=train.micro_batch_prompts, packing=train.packing,
            chunk_size=train.logprob_chunk_size, chat_template=recipe.data.chat_template))
        filled = [r if r.ref_logps is not None else replace(r, ref_logps=tuple(next(logps)))
                  for r in rows]
        out.append(rows_to_table(filled))
    if timing is not None:
        timing["reference_s"] = time.perf_counter() - started
    if rank == 0:
        log.info("reference log-probs of %d prompts computed with the initial policy in %.1f s "
                 "(the pool had none)", missing, time.perf_counter() - started)
    yield from out
