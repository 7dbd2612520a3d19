"""Progress of long phases (sampling, scoring, training, evaluation) with rate and ETA.

On a terminal one line is rewritten in place; otherwise (a log file, ``ray job submit``) a plain
log line is written at most every ``every_s`` seconds, and always at the end.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("lire_ray.progress")


class Progress:
    """Counts work done out of a known total.

    Args:
        what: What is counted, e.g. ``"Evolve step 1: sampled and scored"``.
        total: The total, in ``unit``.
        unit: The unit, e.g. ``"prompts"``.
        every_s: Seconds between plain log lines (not on a terminal).
        stream: Where the terminal line goes (default stderr).
    """

    def __init__(self, what: str, total: int, unit: str, *, every_s: float = 10.0,
                 stream=None):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.done = 0
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.time()
        self._last = 0.0

    def line(self) -> str:
        """``what: done/total unit (rate/s, ETA s)``."""
        elapsed = max(time.time() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = f"ETA {eta:.0f} s" if eta == eta else "ETA ?"
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({rate:.1f}/s, "
                f"{eta_s if self.done < self.total else f'{elapsed:.0f} s'})")

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done and show the progress when due."""
        self.done += n
        now = time.time()
        finished = self.done >= self.total
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if finished else ""))
            self.stream.flush()
        elif finished or now - self._last >= self.every_s:
            self._last = now
            log.info("%s", self.line())
