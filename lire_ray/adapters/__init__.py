"""Dataset adapters: HH-RLHF, TL;DR comparisons, listwise JSONL and chat data → candidate pools.

``prepare_pool`` is what ``jobs/prepare.py`` runs; the per-format record layouts are documented
in :mod:`lire_ray.adapters.formats`, input reading and row numbering in
:mod:`lire_ray.adapters.records`.
"""

from lire_ray.adapters.formats import PARSERS, hh_messages, render_messages
from lire_ray.adapters.prepare import (
    FORMATS,
    ON_BAD_ROW,
    PrepareReport,
    SkippedRow,
    convert_records,
    prepare_pool,
)
from lire_ray.adapters.records import BadRow, iter_records

__all__ = ["FORMATS", "ON_BAD_ROW", "PARSERS", "BadRow", "PrepareReport", "SkippedRow",
           "convert_records", "hh_messages", "iter_records", "prepare_pool", "render_messages"]
