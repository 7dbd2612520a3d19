"""What a recipe names as inputs: the initial policy and the prompt rows.

Both are resolved in the driver before Ray starts, so a missing path or an empty prompt set
fails in a few lines with nothing written.
"""

from __future__ import annotations

from pathlib import Path

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.pool import HUMAN, PoolRow, read_pool, table_to_rows

#: Builtin prompt sets of the embedded task, by name.
BUILTIN_SPLITS = {"builtin:reviews": "train", "builtin:reviews-heldout": "heldout"}


def resolve_policy(recipe: Recipe, name: str | None = None) -> str:
    """A policy the recipe names: 'tiny' builds (once) the embedded default; a local path must
    exist; anything else is a hub id passed on.

    Args:
        recipe: The recipe (``model.policy``, ``run.cache_dir``).
        name: Resolve this name instead of ``model.policy`` (e.g. ``model.reference``).

    Raises:
        ModelLoadError: A local path that does not exist.
    """
    policy = recipe.model.policy if name is None else name
    if policy == "tiny":
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        return str(ensure_tiny_policy(recipe.run.cache_dir))
    if (policy.startswith((".", "/", "~")) or policy.count("/") > 1) and \
            not Path(policy).expanduser().exists():
        raise ModelLoadError(f"local model path '{policy}' does not exist")
    return policy


def resolve_reference(recipe: Recipe) -> str:
    """The reference policy: ``model.reference``, default the initial policy."""
    return resolve_policy(recipe, recipe.model.reference or recipe.model.policy)


def load_prompt_rows(spec: str, limit: int | None = None) -> list[PoolRow]:
    """Prompt rows (with their human-written candidates) from a builtin set or a pool directory.

    Args:
        spec: ``builtin:reviews``, ``builtin:reviews-heldout`` or a pool directory.
        limit: Keep the first ``limit`` rows.

    Returns:
        The rows, in order.

    Raises:
        ConfigError: Unknown builtin name.
        DataError: The set holds no prompt.
        PoolIntegrityError: The pool directory does not match its manifest.
    """
    if spec.startswith("builtin:"):
        from lire_ray.demo import reviews

        if spec not in BUILTIN_SPLITS:
            raise ConfigError(f"unknown builtin dataset '{spec}'; known: {sorted(BUILTIN_SPLITS)}")
        rows = [PoolRow(prompt_id=r["prompt_id"], prompt=r["prompt"], responses=r["responses"],
                        sources=(HUMAN,) * len(r["responses"]),
                        policy_version=(-1,) * len(r["responses"]), preferred=-1)
                for r in reviews.prompt_rows(BUILTIN_SPLITS[spec], limit)]
    else:
        rows = table_to_rows(read_pool(spec))
        rows = rows[:limit] if limit else rows
    if not rows:
        raise DataError("holds no prompts", source=spec)
    return rows


def source_metadata(spec: str) -> dict:
    """The manifest metadata of an input pool directory; empty for a ``builtin:`` prompt set.

    Raises:
        PoolIntegrityError: The directory holds no readable manifest.
    """
    from lire_ray.pool import read_manifest

    if spec.startswith("builtin:"):
        return {}
    return dict(read_manifest(spec).get("metadata") or {})
