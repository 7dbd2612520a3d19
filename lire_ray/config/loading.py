"""Reading a recipe: the YAML file, dotted ``key=value`` overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lire_ray.config.recipe import Recipe
from lire_ray.errors import ConfigError

#: The recipe used when a job is started with no ``--config``.
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-typed value.

    Args:
        text: One override, e.g. ``train.lr=1e-5`` or ``sampler.stop=['\\n\\nHuman:']``.

    Returns:
        The dotted key split into parts, and the value parsed as YAML (so ``1e-5`` is a float,
        ``true`` a bool and ``[1, 2]`` a list; anything else stays a string).

    Raises:
        ConfigError: The text has no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads "1e-5" as a string (it wants a dot); numbers are what users mean.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") and value[:1] in "+-.0123456789" \
                else value
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value`` in place, creating dicts on the way.

    List elements are addressed by index (``rewards.0.path``). Unknown keys are not rejected
    here: validation afterwards names them with the allowed alternatives.

    Raises:
        ConfigError: A path step indexes a list out of range or descends into a scalar.
    """
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override key '{'.'.join(path)}': '{where}' needs an index "
                                  f"below {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override key '{'.'.join(path)}': '{where}' is not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override key '{'.'.join(path)}': index out of range")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override key '{'.'.join(path)}' descends into a value")


def _allowed_keys(path: tuple[Any, ...]) -> list[str]:
    model: Any = Recipe
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        model = args[0] if args and isinstance(args[0], type) else ann
    return sorted(getattr(model, "model_fields", {}).keys())


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn a pydantic error into one line per problem: ``source: key: what is wrong``."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(recipe)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(tuple(e["loc"]))
            lines.append(f"{source}: unknown key '{key}'; allowed here: {', '.join(allowed)}")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict) and got is not None else ""
            if key.startswith("ray.forward_env"):
                got_s = ""  # a mistaken NAME=value would print the value
            lines.append(f"{source}: {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                aliases: dict[str, str] | None = None) -> Recipe:
    """Load, override and validate a recipe.

    Args:
        path: A YAML recipe; ``None`` loads :data:`DEFAULT_RECIPE`.
        overrides: ``key.path=value`` strings applied in order after the file.
        aliases: Job-specific short keys, e.g. ``{"data": "data.train"}`` so that
            ``data=POOL`` means ``data.train=POOL``.

    An override that names another loss than the file's (``loss.name=dpo``) drops the file's
    ``loss.params`` unless ``loss.params...`` is overridden too: the new loss starts from its
    own defaults merged with ``loss.params_by_name.<name>``.

    Returns:
        The validated, frozen recipe.

    Raises:
        ConfigError: The file is missing or not a YAML mapping, or validation fails; the message
            names every offending key and what is allowed.
    """
    path = Path(path) if path is not None else DEFAULT_RECIPE
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    aliases = aliases or {}
    file_loss = data.get("loss") if isinstance(data.get("loss"), dict) else None
    file_name = (file_loss or {}).get("name", "lire")
    params_given = False
    for text in overrides or []:
        keys, value = parse_override(text)
        if len(keys) == 1 and keys[0] in aliases:
            keys = aliases[keys[0]].split(".")
        params_given |= keys[:2] == ["loss", "params"]
        apply_override(data, keys, value)
    new_loss = data.get("loss")
    if (isinstance(new_loss, dict) and file_loss and new_loss.get("name", "lire") != file_name
            and not params_given and "params" in new_loss):
        # The file's loss.params belong to the file's loss: another loss chosen on the command
        # line starts from its own defaults (and its loss.params_by_name entry, if any).
        new_loss.pop("params")
    source = str(path) + (" + overrides" if overrides else "")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
