"""Deterministic fault injection: named points where a test stops a process, exactly there.

A fault test sets, in the environment of the job it starts (the driver forwards these to the
actors and trainer workers it starts):

- ``LIRE_FAULT_POINT``: the point, ``name`` or ``name:detail`` (e.g.
  ``epoch_checkpoint:v2-epoch-0001``);
- ``LIRE_FAULT_FILE``: a file the process creates when it reaches the point, holding its
  process id; only the first process to get there creates it, and only once, so a restarted
  process passes the point;
- ``LIRE_FAULT_ACTION``: ``wait`` (default): the process then blocks until it is killed (the
  test waits for the file and kills what it wants, the process cannot move on meanwhile), or
  ``kill``: the process kills itself with SIGKILL.

The points the code honours:

- ``epoch_checkpoint:v<version>-epoch-<epoch>``: a trainer worker right after it handed an
  epoch's checkpoint to Ray Train (:meth:`lire_ray.training.worker.TrainingRun` epochs);
- ``sample_rows``: a sampler actor that received a batch, before it samples it;
- ``pool_part:<n>``: the pool builder right after it persisted a part, ``n`` parts being
  persisted in that pool's parts directory (the pool cannot complete while it waits).

With ``LIRE_FAULT_POINT`` unset, :func:`fault_point` is one environment lookup.
"""

from __future__ import annotations

import json
import os
import signal
import time

POINT_ENV, FILE_ENV, ACTION_ENV = "LIRE_FAULT_POINT", "LIRE_FAULT_FILE", "LIRE_FAULT_ACTION"
#: The variables a driver forwards to the processes it starts.
FAULT_ENV = (POINT_ENV, FILE_ENV, ACTION_ENV)


def fault_point(name: str, detail: str | None = None) -> None:
    """Stop here when ``LIRE_FAULT_POINT`` names this point (see the module docstring)."""
    wanted = os.environ.get(POINT_ENV)
    if not wanted or wanted not in (name, f"{name}:{detail}"):
        return
    path = os.environ.get(FILE_ENV)
    if not path:
        raise RuntimeError(f"{POINT_ENV}={wanted} needs {FILE_ENV}")
    # Written beside it, then linked: the file appears whole, and only for the first comer.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "point": wanted}))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return  # reached before, by this or another process: carry on
    finally:
        os.unlink(tmp)
    if os.environ.get(ACTION_ENV, "wait") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # until the test kills this process
        time.sleep(60)


def fault_env() -> dict[str, str]:
    """The fault-injection variables set in this process (empty in a normal run)."""
    return {k: os.environ[k] for k in FAULT_ENV if k in os.environ}
