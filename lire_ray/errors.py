"""The project's exception types.

Every error a user can cause (bad recipe, bad input file, missing model) is a subclass of
:class:`LireError`; job scripts print its message in a few lines and exit non-zero, with a
traceback only under ``--debug``. Ray actor failures are translated into
:class:`ActorFailure` at the boundary so callers never handle raw ``RayActorError``.
"""

from __future__ import annotations


class LireError(Exception):
    """Base class of every error lire-ray raises on purpose."""


class ConfigError(LireError):
    """A recipe or command-line override is invalid (unknown key, wrong type, bad value)."""


class DataError(LireError):
    """An input file or pool is malformed.

    Attributes:
        source: The file (or pool directory) the bad data came from.
        row: The 1-based line (JSONL) or 0-based row index (Parquet), when known.
        field: The offending field, when known.
        message: What is wrong, without the location prefix.
    """

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.message = message
        self.source = source
        self.row = row
        self.field = field
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)


class PoolIntegrityError(DataError):
    """A pool on disk does not match its manifest (partial write, corruption, tampering)."""


class ModelLoadError(LireError):
    """A model, tokenizer or reward function could not be loaded from the given id or path."""


class DependencyError(LireError):
    """An optional dependency (vLLM, DeepSpeed, ...) is missing; the message says what to install."""


class ActorFailure(LireError):
    """A Ray actor (sampler, reward, reference, trainer) failed; ``__cause__`` holds the Ray error.

    Attributes:
        role: Which role failed ("sampler", "reward", "reference", "trainer").
    """

    def __init__(self, role: str, message: str):
        self.role = role
        super().__init__(f"{role} actor failed: {message}")


class RunDirError(LireError):
    """The run directory is in a state the requested action cannot use (non-empty without resume,
    nothing to resume, a path escaping the run directory)."""
