"""Progress of long phases (sampling, scoring, training, evaluation) with rate and ETA.

On a terminal one line is rewritten in place; otherwise (a log file, ``ray job submit``) a plain
log line is written at most every ``every_s`` seconds, and always at the end.

The rate and the ETA count from the first unit done, not from the start: what comes before it
(a worker group starting, a model loading) says nothing about how fast the rest goes, and
counting it promised minutes for steps that took seconds. Until a second unit is done there is
no rate, and no ETA is shown.
"""

from __future__ import annotations

import logging
import time

from lire_ray.output import terminal

log = logging.getLogger("lire_ray.progress")


class Progress:
    """Counts work done out of a known total.

    Args:
        what: What is counted, e.g. ``"Evolve step 1: sampled and scored"``.
        total: The total, in ``unit``.
        unit: The unit, e.g. ``"prompts"``.
        every_s: Seconds between plain log lines (not on a terminal).
        stream: Where the terminal line goes (default the terminal's stderr, also while the
            job's other output is diverted to its log file).
    """

    def __init__(self, what: str, total: int, unit: str, *, every_s: float = 10.0,
                 stream=None):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.done = 0
        self.every_s = every_s
        self.stream = stream or terminal()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.time()
        self._first: tuple[float, int] | None = None  # (time, count) of the first update
        self._last = 0.0

    def rate(self, now: float | None = None) -> float | None:
        """Units per second since the first update; None before a second one."""
        if self._first is None:
            return None
        t0, n0 = self._first
        now = time.time() if now is None else now
        return (self.done - n0) / (now - t0) if self.done > n0 and now > t0 else None

    def line(self, now: float | None = None) -> str:
        """``what: done/total unit (rate/s, ETA s)``; the elapsed time once done; neither rate
        nor ETA before a rate exists."""
        now = time.time() if now is None else now
        head = f"{self.what}: {self.done}/{self.total} {self.unit}"
        if self.done >= self.total:
            return f"{head} ({now - self.started:.0f} s)"
        rate = self.rate(now)
        if rate is None:
            return head
        return f"{head} ({rate:.1f}/s, ETA {(self.total - self.done) / rate:.0f} s)"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done and show the progress when due."""
        now = time.time()
        if self._first is None:
            self._first = (now, self.done + n)
        self.done += n
        finished = self.done >= self.total
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if finished else ""))
            self.stream.flush()
        elif finished or now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line())
