"""Quiet jobs: the project's own lines on the terminal, every other line in the run's log file.

A job on Ray prints far more than its own progress: vLLM, Ray, Ray Train, DeepSpeed and
PyTorch warn from Python and from C++, in the driver and in every actor (Ray forwards the
actors' output to the driver's stdout and stderr). :class:`Diversion` points this process's
file descriptors 1 and 2 at a file, so all of that lands there whatever wrote it, and keeps a
duplicate of the terminal for the project: the log records of the project's own loggers
(``lire_ray``, ``jobs``, ``actors``, ``bench``, ``__main__``), :func:`echo` and
:func:`terminal`. Until the run directory exists the file is a temporary one;
:meth:`Diversion.keep_in` moves what it holds into the run directory's log and continues there.

``--debug`` and ``run.verbose=true`` leave the output alone (no diversion).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

#: Top-level logger names whose records stay on the terminal.
PROJECT_LOGGERS = ("lire_ray", "jobs", "actors", "bench", "__main__")
#: The run directory's log of everything else (third-party output, the actors' output).
LOG_NAME = "job.log"

_current: Diversion | None = None


def is_project(record: logging.LogRecord) -> bool:
    """Whether a log record comes from one of the project's own loggers."""
    return record.name.split(".", 1)[0] in PROJECT_LOGGERS


class _Project(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return is_project(record)


class _ThirdParty(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_project(record)


class Diversion:
    """Sends file descriptors 1 and 2 to a log file and keeps the terminal for the project.

    Use as a context manager; :func:`current` returns the active one.
    """

    def __init__(self) -> None:
        self._saved: tuple[int, int] | None = None
        self._file: IO[bytes] | None = None
        self.path: Path | None = None
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self._handlers: list[tuple[logging.StreamHandler, IO[str]]] = []
        self._added: list[logging.Handler] = []

    def __enter__(self) -> Diversion:
        global _current
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8")
        self.err = os.fdopen(os.dup(self._saved[1]), "w", buffering=1, encoding="utf-8")
        self._file = tempfile.TemporaryFile()
        self._point_fds_at(self._file)
        root = logging.getLogger()
        for handler in list(root.handlers):
            # The job's own log handler (``logging.basicConfig`` on stderr) keeps the terminal
            # and shows only the project's records; a second one sends the rest to the file.
            if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr,
                                                                              sys.__stderr__):
                self._handlers.append((handler, handler.stream))
                handler.setStream(self.err)
                handler.addFilter(_Project())
                extra = logging.StreamHandler(sys.stderr)
                extra.setFormatter(handler.formatter)
                extra.addFilter(_ThirdParty())
                root.addHandler(extra)
                self._added.append(extra)
        _current = self
        return self

    def _point_fds_at(self, file: IO[bytes]) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)

    def keep_in(self, directory: str | os.PathLike) -> Path:
        """Continue the log in ``directory/job.log`` (appended to), with what was written so
        far; returns its path."""
        assert self._file is not None, "not active"
        path = Path(directory) / LOG_NAME
        if self.path == path:
            return path
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        new = open(path, "ab")  # noqa: SIM115 - kept open while the job runs
        self._file.flush()
        self._file.seek(0)
        new.write(self._file.read())
        new.flush()
        self._point_fds_at(new)
        self._file.close()
        self._file, self.path = new, path
        return path

    def __exit__(self, *exc) -> None:
        global _current
        _current = None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        assert self._saved is not None
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        root = logging.getLogger()
        for handler, stream in self._handlers:
            handler.setStream(stream)
            handler.filters = [f for f in handler.filters if not isinstance(f, _Project)]
        for added in self._added:
            root.removeHandler(added)
        if self._file is not None:
            self._file.close()
        self.out.close()
        self.err.close()


def current() -> Diversion | None:
    """The active diversion, or None when the output is not diverted."""
    return _current


def keep_in(directory: str | os.PathLike) -> Path | None:
    """Continue the diverted output's log in ``directory/job.log`` (see
    :meth:`Diversion.keep_in`); None when nothing is diverted."""
    return _current.keep_in(directory) if _current is not None else None


def terminal() -> IO[str]:
    """The project's stream for the terminal: the real stderr, diverted or not."""
    return _current.err if _current is not None else sys.stderr


def echo(text: str) -> None:
    """Print a line of the project's own output on the real stdout, diverted or not."""
    print(text, file=_current.out if _current is not None else sys.stdout, flush=True)
