"""The CI rule of tests/conftest.py: with ``CI`` set, a module that ``pytest.importorskip``
drops for a missing dependency fails instead of being skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")
MISSING = """
import pytest

pytest.importorskip("lire_ray_no_such_dependency")


def test_never_runs():
    assert False
"""


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_needs_missing.py").write_text(MISSING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_missing_dependency_skips_outside_ci(tmp_path):
    proc = _run(tmp_path, ci=False)
    assert proc.returncode == 5 or "1 skipped" in proc.stdout, proc.stdout
    assert "failed" not in proc.stdout


def test_a_missing_dependency_fails_on_ci(tmp_path):
    proc = _run(tmp_path, ci=True)
    assert proc.returncode in (1, 2), proc.stdout  # a failed module is a collection error
    assert "CI is set and a dependency is missing" in proc.stdout
    assert "lire_ray_no_such_dependency" in proc.stdout
