"""Dataset adapters: HH-RLHF, TL;DR comparisons, listwise JSONL, chat data and TRL datasets →
candidate pools.

``prepare_pool`` is what ``jobs/prepare.py`` runs; the per-format record layouts are documented
in :mod:`lire_ray.adapters.formats` and :mod:`lire_ray.adapters.trl`, what an input may be
(file, shard folder, saved dataset, cached hub id) in :mod:`lire_ray.adapters.inputs`, record
reading and row numbering in :mod:`lire_ray.adapters.records`.
"""

from lire_ray.adapters.formats import PARSERS, hh_messages, render_messages
from lire_ray.adapters.inputs import InputSource, iter_records, open_input, parse_columns
from lire_ray.adapters.prepare import (
    FORMATS,
    ON_BAD_ROW,
    PrepareReport,
    SkippedRow,
    convert_records,
    prepare_pool,
)
from lire_ray.adapters.records import BadRow, Record
from lire_ray.adapters.trl import TYPES as TRL_TYPES
from lire_ray.adapters.trl import TrlParser

__all__ = ["FORMATS", "ON_BAD_ROW", "PARSERS", "TRL_TYPES", "BadRow", "InputSource",
           "PrepareReport", "Record", "SkippedRow", "TrlParser", "convert_records",
           "hh_messages", "iter_records", "open_input", "parse_columns", "prepare_pool",
           "render_messages"]
