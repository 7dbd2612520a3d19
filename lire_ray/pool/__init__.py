"""Candidate pools: one Arrow/Parquet schema, its Python row type, and atomic, verified storage.

A pool row is one prompt with all K of its candidates (K may differ between rows), so a
micro-batch never splits a candidate list. Schema (``POOL_SCHEMA``, version ``SCHEMA_VERSION``):

    prompt_id        string, not null     Unique within the pool; given or sha1 of the prompt text.
    prompt           string, not null     Plain-text prompt, non-blank.
    prompt_messages  string, nullable     Chat input only: JSON array of {"role", "content"}
                                          objects (the turns before the candidates).
    responses        list<string>         The K candidates, K >= 0 (K = 0: a prompt-only row,
                                          whose candidates self-enhancement samples).
    sources          list<string>         Per candidate: "human", "dataset" or "policy@e{k}".
    policy_version   list<int32>          Per candidate: k for "policy@e{k}", -1 otherwise.
    rewards          list<struct<name: string, scores: list<float64>>>
                                          One entry per reward model, each with K finite scores.
                                          A list of named structs (not a struct with one field
                                          per model) keeps one fixed Parquet/Ray Data schema
                                          while reward-model names vary between pools and runs.
    preferred        int32                Index of the human-preferred candidate, -1 for none.
    ref_logps        list<float64>, nullable  K reference summed log-probs, or null.
    evolve_step      int32                Self-enhancement step that produced the row (0: data).
    prompt_text      string, nullable     The exact prompt text the sampler was given (chat
                                          template applied), recorded by sampling; null for data.
    metadata         string, nullable     JSON object of per-row extras kept from the dataset
                                          (reference answers, labels, other columns), handed to
                                          Python reward functions that ask for it.

A pool on disk is a directory of ``part-*.parquet`` files plus ``manifest.json`` holding the
schema version, row and candidate counts, per-file row counts and sha256, reward-model names,
user metadata (e.g. reward normalisation statistics) and skipped-row reasons. The schema version
is also stored in every Parquet file's key-value metadata. Writers build the pool in a sibling
temporary directory and ``os.rename`` it into place, so a reader sees a complete pool or none;
readers refuse any directory whose files disagree with its manifest. Pools never use pickle.
"""

from lire_ray.pool.ray_io import read_pool_dataset, write_pool_dataset
from lire_ray.pool.schema import (
    DATASET,
    HUMAN,
    POOL_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    PoolRow,
    policy_source,
    rows_to_table,
    source_version,
    table_to_rows,
    validate_table,
)
from lire_ray.pool.store import (
    DEFAULT_ROWS_PER_FILE,
    MANIFEST_NAME,
    check_pool_target,
    read_manifest,
    read_pool,
    verify_pool,
    write_pool,
)

__all__ = ["DATASET", "DEFAULT_ROWS_PER_FILE", "HUMAN", "MANIFEST_NAME", "POOL_SCHEMA",
           "SCHEMA_VERSION", "SCHEMA_VERSION_KEY", "PoolRow", "check_pool_target", "policy_source", "read_manifest",
           "read_pool", "read_pool_dataset", "rows_to_table", "source_version", "table_to_rows",
           "validate_table", "verify_pool", "write_pool", "write_pool_dataset"]
