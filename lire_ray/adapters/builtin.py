"""Built-in prompt sets, named ``builtin:NAME`` wherever a recipe or job takes a pool directory.

- ``builtin:reviews`` / ``builtin:reviews-heldout``: the embedded task's generated product-review
  prompts (:mod:`lire_ray.demo.reviews`), one human review each.
- ``builtin:chitchat`` / ``builtin:chitchat-heldout``: real human conversations
  (:mod:`lire_ray.adapters.chitchat`), the context as chat turns and the next human turn as the
  reference answer; split by conversation.
"""

from __future__ import annotations

from lire_ray.errors import ConfigError
from lire_ray.pool import HUMAN, PoolRow

#: Built-in prompt sets: name -> (family, split).
BUILTIN_SETS = {"builtin:reviews": ("reviews", "train"),
                "builtin:reviews-heldout": ("reviews", "heldout"),
                "builtin:chitchat": ("chitchat", "train"),
                "builtin:chitchat-heldout": ("chitchat", "heldout")}


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names a built-in set (``builtin:...``), known or not."""
    return spec.startswith("builtin:")


def builtin_rows(spec: str, limit: int | None = None) -> list[PoolRow]:
    """The rows of a built-in prompt set.

    Args:
        spec: One of :data:`BUILTIN_SETS`.
        limit: Keep the first ``limit`` rows.

    Returns:
        Pool rows, each with its human-written candidate(s).

    Raises:
        ConfigError: Unknown name (lists the known ones).
        DependencyError: The package holding the data is not installed.
    """
    if spec not in BUILTIN_SETS:
        raise ConfigError(f"unknown builtin dataset '{spec}'; known: {sorted(BUILTIN_SETS)}")
    family, split = BUILTIN_SETS[spec]
    if family == "chitchat":
        from lire_ray.adapters import chitchat

        return chitchat.prompt_rows(split, limit)
    from lire_ray.demo import reviews

    return [PoolRow(prompt_id=r["prompt_id"], prompt=r["prompt"], responses=r["responses"],
                    sources=(HUMAN,) * len(r["responses"]),
                    policy_version=(-1,) * len(r["responses"]), preferred=-1)
            for r in reviews.prompt_rows(split, limit)]
