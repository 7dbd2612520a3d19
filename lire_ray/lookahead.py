"""Sampling ahead: the next Evolve step's pool is sampled while the current step trains.

With ``evolve.max_staleness >= 1`` and ``resources.placement=split``, the samplers would sit
idle between the moment the last prompt of D_e is sampled and the moment training on D_e
ends. :class:`Lookahead` fills that gap: it waits until the current stream has persisted a
part for every prompt, then runs the stream of D_{e+1} to completion in a background thread,
while the samplers still serve policy e-1. Its candidates therefore lag by one policy version
(the driver pushes policy e as soon as training ends, and batches sampled after that lag by
none); every candidate records its version, and the driver checks the bound when it finalizes
the pool. At most one step is sampled ahead, so the lag never exceeds 1 whatever
``max_staleness`` allows.

Nothing here is trusted after a crash: the parts of a look-ahead live in a hidden directory
that the next attempt of that step removes, and the step is sampled again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def persisted_ids(parts_dir: str | Path, cache: dict[str, list[str]] | None = None) -> set[str]:
    """Prompt ids of every part file already written to ``parts_dir``.

    Args:
        parts_dir: A :class:`~lire_ray.stream.PartWriter` directory.
        cache: File name -> ids of parts read before (parts are written once, atomically;
            a retried batch rewrites the same ids), so polling reads each file once.

    Returns:
        The union of their ``prompt_id`` columns.
    """
    cache = {} if cache is None else cache
    ids: set[str] = set()
    for path in Path(parts_dir).glob("part-*.parquet"):
        if path.name not in cache:
            cache[path.name] = pq.read_table(path, columns=["prompt_id"]).column(
                "prompt_id").to_pylist()
        ids.update(cache[path.name])
    return ids


class Lookahead:
    """Materialises one stream into ``parts_dir`` in a background thread.

    Args:
        make_stream: Builds the (lazy) stream; called in the thread once sampling may start.
            Iterating it must persist every batch (the stream ends in a ``PartWriter``).
        parts_dir: Where the stream's parts go; removed first.
        step: The Evolve step the parts belong to (for log lines).
        wait_for: Start only when this directory holds a part for every id of ``expected``
            (the current step's stream has sampled everything); None starts at once.
        expected: The prompt ids ``wait_for`` must cover.
        poll_s: Seconds between checks of ``wait_for``.
    """

    def __init__(self, make_stream: Callable[[], Iterable], parts_dir: str | Path, *, step: int,
                 wait_for: str | Path | None = None, expected: Sequence[str] = (),
                 poll_s: float = 0.5):
        self.parts_dir = Path(parts_dir)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.step = step
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._make_stream = make_stream
        self._wait_for = Path(wait_for) if wait_for is not None else None
        self._expected = set(expected)
        self._poll_s = poll_s
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"lookahead-e{step}",
                                        daemon=True)
        self._thread.start()

    def _ready(self, cache: dict) -> bool:
        if self._wait_for is None:
            return True
        return self._expected <= persisted_ids(self._wait_for, cache)

    def _run(self) -> None:
        try:
            cache: dict[str, list[str]] = {}
            while not self._ready(cache):
                if self._cancel.wait(self._poll_s):
                    return
            self.started_at = time.time()
            log.info("sampling ahead: Evolve step %d's pool starts while training continues",
                     self.step)
            for _ in self._make_stream():
                if self._cancel.is_set():
                    return
            self.finished_at = time.time()
        except BaseException as exc:  # re-raised in the driver's thread by result()
            self._error = exc

    def result(self, timeout: float | None = None) -> Path:
        """Wait for the stream to finish and return ``parts_dir``.

        Raises:
            TimeoutError: Still running after ``timeout`` seconds.
            RuntimeError: It was cancelled before finishing.
            Exception: Whatever the stream raised (e.g. ``ActorFailure``).
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"sampling ahead for Evolve step {self.step} still running")
        if self._error is not None:
            raise self._error
        if self.finished_at is None:
            raise RuntimeError(f"sampling ahead for Evolve step {self.step} was cancelled")
        return self.parts_dir

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop waiting or iterating (a batch in flight still completes) and drop the parts."""
        self._cancel.set()
        self._thread.join(timeout)
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def ahead_dir(run_root: Path, step: int) -> Path:
    """The hidden directory of the parts of Evolve step ``step`` sampled ahead."""
    return Path(run_root) / "pools" / f".e{step}.ahead"


def start(recipe, run_root: Path, roles, rows, *, step: int,
          wait_for: Path | None) -> Lookahead | None:
    """Sample D_step in the background once ``wait_for`` covers every prompt.

    Args:
        recipe: The run's recipe.
        run_root: The run directory.
        roles: The :class:`~lire_ray.pipeline.Roles` the stream calls.
        rows: The prompt rows of D_step.
        step: The Evolve step to sample for.
        wait_for: The parts directory of the stream now feeding the trainer.

    Returns:
        The running :class:`Lookahead`, or None when ``evolve.max_staleness`` is 0 or ``step``
        is past the last Evolve step.
    """
    from lire_ray.pipeline import build_stream

    if recipe.evolve.max_staleness < 1 or step > recipe.evolve.steps:
        return None
    parts = ahead_dir(run_root, step)

    def consume():
        stream = build_stream(recipe, roles, rows, evolve_step=step, parts_dir=parts)
        return stream.iter_batches(batch_size=None, batch_format="pyarrow")

    return Lookahead(consume, parts, step=step, wait_for=wait_for,
                     expected=[r.prompt_id for r in rows])
