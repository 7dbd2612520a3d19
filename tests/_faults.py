"""Helpers of the fault tests: arm a fault point (:mod:`lire_ray.faults`) and wait for it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lire_ray.faults import ACTION_ENV, FILE_ENV, POINT_ENV


def fault_env(point: str, file: Path, action: str = "wait") -> dict[str, str]:
    """The environment that stops the first process reaching ``point``."""
    return {POINT_ENV: point, FILE_ENV: str(file), ACTION_ENV: action}


def wait_for(condition, what: str, timeout: float = 900, alive=lambda: True):
    """Wait until ``condition()`` is truthy (a state that, once reached, stays: the process at
    the fault point cannot move on) and return it."""
    deadline = time.time() + timeout
    while not (value := condition()):
        if not alive():
            raise AssertionError(f"the job ended before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def reached(file: Path) -> dict | None:
    """The record of the process that reached the fault point (pid, point), or None yet."""
    return json.loads(file.read_text()) if file.is_file() else None


def registered_checkpoint(storage: Path) -> str | None:
    """The epoch checkpoint Ray Train would restore from: the latest one its snapshot names (a
    checkpoint directory exists before it is registered, and a kill in between loses it)."""
    try:
        snapshot = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
