"""The mailbox between the driver and a resident trainer group's workers.

One named actor per self-enhancement run. The driver submits each Evolve step's command and
deals the step's pool rows to the workers' lists as they stream in (object references to Arrow
batches); the workers take their rows by position, so a worker group that Ray Train restarted
in the middle of a step reads its rows again from the start, and report when a step is trained
and served and when its checkpoint is on disk. Undecorated: the runtime layer starts it with
``ray.remote``.
"""

from __future__ import annotations

from typing import Any

#: The value a worker's row list ends with.
END = "end"


class TrainerCoordinator:
    """State shared by the driver and the workers of one resident trainer group."""

    def __init__(self):
        self._commands: dict[int, dict[str, Any]] = {}
        self._stopped = False
        self._rows: dict[int, dict[int, list]] = {}
        self._finished: dict[int, dict[int, dict]] = {}
        self._checkpoints: dict[int, str] = {}
        self._logs: list[tuple[dict, int, str]] = []

    def submit(self, command: dict[str, Any], world_size: int) -> None:
        """Ask the workers to train Evolve step ``command["version"]``."""
        v = int(command["version"])
        self._commands[v] = command
        self._rows[v] = {r: [] for r in range(world_size)}
        self._finished[v] = {}

    def stop(self) -> None:
        """No more steps: workers leave their loop once the submitted ones are finished."""
        self._stopped = True

    def next_command(self, rank: int) -> dict[str, Any] | str | None:
        """The lowest submitted step ``rank`` has not finished, ``"stop"`` when there is none
        and no more will come, or None (wait)."""
        for v in sorted(self._commands):
            if rank not in self._finished.get(v, {}):
                return self._commands[v]
        return "stop" if self._stopped else None

    def put(self, version: int, rank: int, items: list) -> None:
        """Append row batches (object references, or :data:`END`) to ``rank``'s list."""
        self._rows[version][rank].extend(items)

    def take(self, version: int, rank: int, start: int) -> list:
        """``rank``'s items of step ``version`` from position ``start`` on (maybe none yet)."""
        return self._rows[version][rank][start:]

    def finished(self, version: int, rank: int, info: dict[str, Any]) -> None:
        """Worker ``rank`` trained step ``version`` (and rank 0 served it)."""
        self._finished[version][rank] = info

    def status(self, version: int) -> dict[int, dict]:
        """The ranks that finished step ``version``, with what they reported."""
        return dict(self._finished.get(version, {}))

    def release(self, version: int) -> None:
        """Drop the row references of a finished step."""
        self._rows.pop(version, None)

    def checkpointed(self, version: int, path: str) -> None:
        """The policy checkpoint of step ``version`` is complete on disk."""
        self._checkpoints[version] = path

    def checkpoints(self) -> dict[int, str]:
        """The complete policy checkpoints, by step."""
        return dict(self._checkpoints)

    def log(self, record: dict, step: int, prefix: str) -> None:
        """Queue a metric record (rank 0's per-optimizer-step metrics) for the driver."""
        self._logs.append((record, step, prefix))

    def drain(self) -> list[tuple[dict, int, str]]:
        """The queued metric records, oldest first; the queue is emptied."""
        out, self._logs = self._logs, []
        return out

    def ping(self) -> str:
        return "coordinator"
