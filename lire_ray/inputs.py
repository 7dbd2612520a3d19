"""What a recipe names as inputs: the initial policy and the prompt rows.

Both are resolved in the driver before Ray starts, so a missing path or an empty prompt set
fails in a few lines with nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lire_ray.adapters.builtin import BUILTIN_SETS, builtin_rows
from lire_ray.config import Recipe, RewardModelConfig
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.gguf_models import ensure_hf_from_gguf, is_gguf_spec
from lire_ray.pool import PoolRow, read_pool, table_to_rows

#: Built-in prompt sets, by name (see :mod:`lire_ray.adapters.builtin`).
BUILTIN_SPLITS = BUILTIN_SETS


def resolve_policy(recipe: Recipe, name: str | None = None, *, key: str = "model.policy") -> str:
    """A policy the recipe names: 'tiny' builds (once) the embedded default; a GGUF model (a
    ``.gguf`` file or a built-in name such as ``smollm2-135m-instruct``) is converted (once)
    into an HF folder under ``run.cache_dir``; a local path must exist and is returned
    absolute; anything else is a hub id passed on.

    Args:
        recipe: The recipe (``model.policy``, ``model.dtype``, ``run.cache_dir``).
        name: Resolve this name instead of ``model.policy`` (e.g. ``model.reference``).
        key: The recipe key the name comes from, named in errors.

    Raises:
        ModelLoadError: A local path that does not exist, or a GGUF file that cannot be
            converted (truncated, corrupt, an architecture transformers cannot read).
        DependencyError: A built-in GGUF model whose package is not installed.
    """
    policy = recipe.model.policy if name is None else name
    if policy == "tiny":
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        return str(ensure_tiny_policy(recipe.run.cache_dir))
    if is_gguf_spec(policy):
        return str(ensure_hf_from_gguf(policy, recipe.run.cache_dir, dtype=recipe.model.dtype,
                                       key=key))
    local = Path(policy).expanduser()
    if (policy.startswith((".", "/", "~")) or policy.count("/") > 1) and not local.exists():
        raise ModelLoadError(f"{key}: local model path '{policy}' does not exist")
    # A local directory goes to the actors as an absolute path: they may run in another
    # working directory (a cluster joined with ray.address=auto or ray job submit).
    return str(local.resolve()) if local.is_dir() else policy


def absolute_reward_paths(rewards: Sequence[RewardModelConfig]) -> list[RewardModelConfig]:
    """``rewards`` with every local reward-model directory made absolute, for actors that may
    run in another working directory; hub ids, modules and URLs are left as they are."""
    out = []
    for rm in rewards:
        local = Path(rm.path).expanduser() if rm.kind == "hf" and rm.path else None
        out.append(rm.model_copy(update={"path": str(local.resolve())})
                   if local is not None and local.is_dir() else rm)
    return out


def resolve_reference(recipe: Recipe) -> str:
    """The reference policy: ``model.reference``, default the initial policy."""
    if recipe.model.reference:
        return resolve_policy(recipe, recipe.model.reference, key="model.reference")
    return resolve_policy(recipe)


def load_prompt_rows(spec: str, limit: int | None = None) -> list[PoolRow]:
    """Prompt rows (with their human-written candidates) from a builtin set or a pool directory.

    Args:
        spec: A built-in set (``builtin:reviews``, ``builtin:chitchat``, their ``-heldout``
            splits) or a pool directory.
        limit: Keep the first ``limit`` rows.

    Returns:
        The rows, in order.

    Raises:
        ConfigError: Unknown builtin name.
        DependencyError: The package holding a built-in set is not installed.
        DataError: The set holds no prompt.
        PoolIntegrityError: The pool directory does not match its manifest.
    """
    if spec.startswith("builtin:"):
        rows = builtin_rows(spec, limit)
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


def load_training_pool(recipe: Recipe, spec: str):
    """A prepared pool ready for single-stage training: checked, scored by the training reward,
    shuffled with ``train.seed`` and cut to ``data.max_prompts`` rows.

    Rows are trained on their own candidates, so a pool must have some for every prompt, and
    scores of the training reward (``evolve.train_reward``, or the pool's only one). A training
    reward of ``kind: label`` (the data's own preference) is computed here when the pool lacks
    it, so preference data trains with no reward model at all.

    Args:
        recipe: The recipe (rewards, ``evolve.train_reward``, ``train.seed``,
            ``data.max_prompts``).
        spec: The pool directory.

    Returns:
        An Arrow table of pool rows.

    Raises:
        ConfigError: A ``builtin:`` prompt set, or the training reward's scores are not in the
            pool (names the ones it has).
        DataError: Prompt-only rows (names how many and the first ids), or a label reward that
            a row cannot give (no preferred candidate nor labels).
        PoolIntegrityError: The pool does not match its manifest.
    """
    import numpy as np

    from lire_ray.pool import read_manifest, rows_to_table

    if spec.startswith("builtin:"):
        raise ConfigError(f"'{spec}' is a prompt set without candidates; training needs a pool "
                          "directory (data=PATH), e.g. from jobs/prepare.py")
    table = read_pool(spec)
    empty = [pid for pid, n in zip(table.column("prompt_id").to_pylist(),
                                   (len(r) for r in table.column("responses").to_pylist()))
             if n == 0]
    if empty:
        raise DataError(f"{len(empty)} prompt-only row(s) (no candidates), e.g. {empty[:3]}: "
                        "single-stage training needs candidates; sample them first "
                        "(jobs/sample.py) or run self-enhancement (jobs/self_enhance.py)",
                        source=spec, field="responses")
    have = read_manifest(spec)["reward_models"]
    name = recipe.train_reward_name
    if name is None and len(have) != 1:
        raise ConfigError(f"the pool {spec} has scores from {have or 'no reward model'}; name "
                          "the one to train on (evolve.train_reward) or add a reward model")
    if name is not None and name not in have:
        cfg = next((rm for rm in recipe.rewards if rm.name == name), None)
        if cfg is None or cfg.kind != "label":
            raise ConfigError(f"the recipe trains on reward '{name}', but the pool {spec} has "
                              f"scores from {have or 'no reward model'}: score it first "
                              "(jobs/score.py), set evolve.train_reward to one of those, or "
                              "train on the data's preferences with a reward of kind label")
        from lire_ray.rewards import RewardSet

        table = rows_to_table(RewardSet([cfg]).score_rows(table_to_rows(table)), source=spec)
    order = np.random.default_rng(recipe.train.seed).permutation(table.num_rows)
    if recipe.data.max_prompts is not None:
        order = order[:recipe.data.max_prompts]
    return table.take(order)
