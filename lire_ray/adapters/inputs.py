"""Opening an input: one file, a folder of shards, a saved ``datasets`` folder, or a hub id.

What ``--input`` may name, tried in this order:

- a file: JSONL, JSON (one array of objects) or Parquet, optionally gzipped;
- a ``datasets`` ``save_to_disk`` folder: a Dataset (``state.json`` + ``dataset_info.json``) or
  a DatasetDict (``dataset_dict.json``, one sub-folder per split; ``split`` picks one, default
  "train", or the only split there is);
- a folder of Parquet or JSONL shards (``*.parquet``, ``*.jsonl``, ``*.ndjson``, each optionally
  ``.gz``), read in sorted name order. ``split`` selects the files whose name is the split
  followed by ``-`` or ``.``; without it, a folder whose names say their split, as hub folders
  do (``train-00000-of-00002.parquet``, ``test-00000-of-00001.parquet``, ``train.jsonl``),
  is read for split "train", and any other folder (``part-0.jsonl``, ...) whole;
- anything else that does not look like a path: a Hugging Face hub dataset id, read from the
  local ``datasets`` cache (``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``) in offline mode.
  Nothing is ever downloaded: an id that is not cached is an error saying so.

Records keep the file they came from, so an error in a shard names the shard and its row.
A single file or a single saved Dataset has no splits: giving ``split`` for one is an error
rather than silently ignored.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lire_ray.adapters.records import BadRow, Record, iter_file
from lire_ray.errors import ConfigError, DataError, DependencyError

DEFAULT_SPLIT = "train"
_PATH_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".gz")
_SHARD_SUFFIXES = (".parquet", ".jsonl", ".ndjson")
_BATCH = 1024
_HUB_SHARD = re.compile(r"^[^-.]+-\d+-of-\d+\.")
_SPLIT_NAMES = {"train", "training", "validation", "valid", "val", "dev", "test", "testing",
                "eval", "evaluation"}


@dataclass
class InputSource:
    """An opened input.

    Attributes:
        source: Name used in messages about the input as a whole (path, or ``id[split]``).
        records: The records, each naming its own file and row.
        kind: "file", "shards", "saved_dataset", "saved_dataset_dict" or "hub_cache".
        split: The split read (None where the input has no splits).
        files: Shard file names read, in order ("shards" only).
    """

    source: str
    records: Iterator[Record]
    kind: str
    split: str | None = None
    files: list[str] = field(default_factory=list)


def open_input(spec: str, *, split: str | None = None, hf_config: str | None = None
               ) -> InputSource:
    """Open ``spec`` (see the module docstring for what it may name).

    Args:
        spec: File, folder, or hub dataset id.
        split: Split to read (folders of several splits, DatasetDicts, hub ids).
        hf_config: Configuration name of a hub dataset.

    Returns:
        The opened input; its records are read lazily.

    Raises:
        DataError: No such path; unreadable input; a split that is not there, or one given for
            an input without splits; a hub id that is not in the local cache.
        DependencyError: A saved-dataset folder or hub id but ``datasets`` is not installed.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        _no_split(spec, split, "a single file")
        return InputSource(str(path), iter_file(path), "file")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            return _open_saved(path, split, dict_=True)
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            _no_split(spec, split, "a single saved datasets.Dataset")
            return _open_saved(path, None, dict_=False)
        return _open_shards(path, split)
    if spec.startswith(("/", "./", "../", "~")) or spec.lower().endswith(_PATH_SUFFIXES):
        raise DataError("no such file or folder", source=spec)
    return _open_hub(spec, split or DEFAULT_SPLIT, hf_config)


def iter_records(spec: str, *, split: str | None = None, hf_config: str | None = None
                 ) -> tuple[str, Iterator[Record]]:
    """Open an input and iterate over its records (:func:`open_input` without the details).

    Returns:
        (source name for messages, iterator of :class:`Record`).
    """
    opened = open_input(spec, split=split, hf_config=hf_config)
    return opened.source, opened.records


def _no_split(spec: str, split: str | None, what: str) -> None:
    if split is not None:
        raise DataError(f"is {what}, which has no splits; drop --split {split}", source=spec)


def split_prefix(name: str) -> str:
    """The split a shard file name starts with: the text before the first ``-`` or ``.``, as
    in the hub's ``{split}-00000-of-00002.parquet`` and ``{split}.jsonl`` (``train_prefs-...``
    is split ``train_prefs``)."""
    return re.split(r"[-.]", name, maxsplit=1)[0]


def _names_split(name: str) -> bool:
    """Whether a shard name says which split it holds: the hub's ``{split}-00000-of-00002``
    naming, or a usual split name before the first ``-`` / ``.`` (``train.jsonl``)."""
    return bool(_HUB_SHARD.match(name)) or split_prefix(name).lower() in _SPLIT_NAMES


def _open_shards(folder: Path, split: str | None) -> InputSource:
    src = str(folder)
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().removesuffix(".gz").endswith(_SHARD_SUFFIXES))
    if not names:
        raise DataError("folder holds no .parquet or .jsonl shards and is not a datasets "
                        "save_to_disk folder", source=src)
    kinds = {n.lower().removesuffix(".gz").endswith(".parquet") for n in names}
    if len(kinds) > 1:
        raise DataError("folder mixes Parquet and JSONL shards; keep one kind per folder",
                        source=src)
    prefixes = sorted({split_prefix(n) for n in names})
    if split is None and any(_names_split(n) for n in names):
        split = DEFAULT_SPLIT
        if split not in prefixes:
            raise DataError(f"folder holds several splits ({', '.join(prefixes)}); pick one "
                            "with --split", source=src)
    if split is not None:
        names = [n for n in names if split_prefix(n) == split]
        if not names:
            raise DataError(f"no shard of split {split!r} (files start with: "
                            f"{', '.join(prefixes)})", source=src)

    def records() -> Iterator[Record]:
        for name in names:
            yield from iter_file(folder / name)

    return InputSource(src, records(), "shards", split, names)


def _import_datasets(what: str):
    try:
        import datasets
    except ImportError as exc:
        raise DependencyError(f"reading {what} needs `pip install datasets`") from exc
    return datasets


def _open_saved(folder: Path, split: str | None, *, dict_: bool) -> InputSource:
    datasets = _import_datasets("a datasets save_to_disk folder")
    src = str(folder)
    try:
        with _quiet(datasets):
            ds = datasets.load_from_disk(src)
    except Exception as exc:  # noqa: BLE001 - any loader failure is one clear message
        raise DataError(f"cannot load the saved dataset ({type(exc).__name__}: "
                        f"{str(exc)[:300]})", source=src) from exc
    if not dict_:
        return InputSource(src, _dataset_records(ds, src), "saved_dataset")
    splits = list(ds)
    if split is None:
        split = DEFAULT_SPLIT if DEFAULT_SPLIT in splits or len(splits) != 1 else splits[0]
    if split not in splits:
        raise DataError(f"saved DatasetDict has no split {split!r} (splits: "
                        f"{', '.join(splits)})", source=src)
    name = f"{src}[{split}]"
    return InputSource(name, _dataset_records(ds[split], name), "saved_dataset_dict", split)


def _dataset_records(ds, src: str) -> Iterator[Record]:
    # Arrow batches (not Python rows one by one): much faster, and they honour an indices
    # mapping the same way row iteration does.
    i = 0
    for table in ds.with_format("arrow").iter(batch_size=_BATCH):
        for record in table.to_pylist():
            yield Record(src, i, record)
            i += 1


def hub_cache_dir() -> Path:
    """The ``datasets`` cache read for hub ids, resolved from the environment at call time."""
    env = os.environ.get("HF_DATASETS_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "datasets"


def _cached_dirs(name: str, cache: Path, datasets) -> list[str]:
    """Prepared copies of hub dataset ``name`` in ``cache`` (the layout ``datasets`` writes:
    ``{namespace}___{snake_name}/{config}/{version}/{hash}``)."""
    parts = name.split("/")
    parts[-1] = datasets.naming.camelcase_to_snakecase(parts[-1])
    root = cache / "___".join(parts)
    return [p for p in glob.glob(str(root / "*" / "*" / "*")) if os.path.isdir(p)]


def _open_hub(name: str, split: str, config: str | None) -> InputSource:
    src = f"{name}[{split}]"
    datasets = _import_datasets(f"hub dataset {name!r}")
    cache = hub_cache_dir()
    if not _cached_dirs(name, cache, datasets):
        raise DataError(f"is not a local file or folder, and Hugging Face hub dataset {name!r} "
                        f"is not in the local cache ({cache}); hub datasets are read "
                        "offline and never downloaded: load it once with datasets.load_dataset "
                        "where the hub is reachable (same HF_HOME / HF_DATASETS_CACHE), or pass "
                        "a local file or folder", source=src)
    try:
        with _offline(datasets), _quiet(datasets):
            ds = datasets.load_dataset(name, config, split=split, cache_dir=str(cache))
    except Exception as exc:  # noqa: BLE001 - any loader failure is one clear message
        raise DataError(f"found in the local Hugging Face cache ({cache}) but loading it "
                        f"failed ({type(exc).__name__}: {str(exc)[:300]})",
                        source=src) from exc
    return InputSource(src, _dataset_records(ds, src), "hub_cache", split)


@contextmanager
def _offline(datasets):
    """Force offline mode for one load, even when ``datasets`` was imported online: it and
    ``huggingface_hub`` read their flags at import time, so the module globals are set too."""
    import huggingface_hub.constants as hub_constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             hub_constants.HF_HUB_OFFLINE)
    os.environ.update({k: "1" for k in saved_env})
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
         hub_constants.HF_HUB_OFFLINE) = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet(datasets):
    """No progress bars or cache warnings from ``datasets``: the job prints its own summary."""
    verbosity = datasets.logging.get_verbosity()
    bars = datasets.utils.is_progress_bar_enabled()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


# ---- column renaming (--columns) -------------------------------------------------------------

def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``--columns``: ``"prompt=question,chosen=answer_good"`` (format name = source
    column).

    Args:
        spec: The option text, an already parsed mapping, or None.

    Returns:
        {name the format expects: source column name}; empty for None.

    Raises:
        ConfigError: An item without ``=``, an empty name, or a name used twice.
    """
    if spec is None:
        return {}
    items = list(spec.items()) if isinstance(spec, Mapping) else [
        tuple(part.split("=", 1)) if "=" in part else (part, "")
        for part in (p.strip() for p in spec.split(",")) if part]
    out: dict[str, str] = {}
    for target, source in items:
        target, source = str(target).strip(), str(source).strip()
        if not target or not source:
            raise ConfigError(f"--columns items are NAME=SOURCE_COLUMN, got {target}={source}")
        if target in out or source in out.values():
            raise ConfigError(f"--columns names {target!r} or {source!r} twice")
        out[target] = source
    return out


def rename_columns(records: Iterator[Record], columns: Mapping[str, str]) -> Iterator[Record]:
    """Rename source columns to the names a format expects (all at once, so swaps work).

    The first record of every file is checked: a source column it lacks is unknown (for
    Parquet and saved datasets every record has every column; in JSONL an optional column
    may be absent from later lines, which are then read as lacking it), and a column already
    named like a target that is not itself renamed away would be shadowed.

    Args:
        records: Input records.
        columns: {format name: source column}, from :func:`parse_columns`.

    Yields:
        The records with renamed keys (bad rows pass through).

    Raises:
        DataError: Unknown source column, or a target clashing with an existing column; the
            error names the file, row and column.
    """
    back = {s: t for t, s in columns.items()}
    checked: set[str] = set()
    for rec in records:
        value = rec.value
        if isinstance(value, BadRow) or not columns:
            yield rec
            continue
        if rec.source not in checked:
            checked.add(rec.source)
            for target, source in columns.items():
                if source not in value:
                    raise DataError(f"--columns {target}={source}: no column {source!r} in the "
                                    f"input (columns: {', '.join(map(str, value))})",
                                    source=rec.source, row=rec.row, field=source)
                if target in value and target not in back:
                    raise DataError(f"--columns {target}={source}: the input already has a "
                                    f"column {target!r}", source=rec.source, row=rec.row,
                                    field=target)
        yield Record(rec.source, rec.row, {back.get(k, k): v for k, v in value.items()})

