"""Atomic writes: a reader sees the old file or directory, or the complete new one, never a mix.

Every file or directory the project writes for someone else to trust (pools, checkpoints, run
state, reports, timing records, built models) goes through one of these helpers:

- :func:`atomic_file` / :func:`atomic_write_text`: a file written under a temporary name in the
  same directory, flushed to disk, then renamed over the target (``os.replace``).
- :func:`atomic_dir`: a directory built under a temporary sibling name, then swapped into place
  with :func:`replace_dir`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is renamed onto ``path``.

    The caller writes the temporary file (with any library: ``pq.write_table``, ``open``, ...).
    If the block raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: The final file.

    Yields:
        The temporary file's path (not yet created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename directory ``tmp`` onto ``out`` atomically, moving an existing ``out`` aside first.

    If the rename fails the old ``out`` is put back, so a reader sees the old or the new
    directory, never a mix.
    """
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_dir(out: str | os.PathLike, build: Callable[[Path], object], *,
               replace: bool = True) -> Path:
    """Build a directory under a temporary sibling name, then swap it into place.

    Args:
        out: The final directory.
        build: Called with the (existing, empty) temporary directory to fill.
        replace: Whether an existing ``out`` is replaced; when False and ``out`` appears while
            building (another process won a race), the new build is discarded and ``out`` kept.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        if replace:
            replace_dir(tmp, out)
        else:
            try:
                os.rename(tmp, out)
            except OSError:
                if not out.is_dir():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
