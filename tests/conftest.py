"""Fixtures shared by the test modules, and the CI rule on missing dependencies.

With the ``CI`` environment variable set, a test or a whole module skipped because an import
failed (``pytest.importorskip``) fails instead: on CI a missing integration dependency must not
quietly drop the tests that need it.
"""

from __future__ import annotations

import os

import pytest

#: The reason pytest.importorskip gives.
IMPORT_SKIP = "could not import"


def _fail_import_skips(report) -> None:
    if os.environ.get("CI") and report.skipped and IMPORT_SKIP in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"CI is set and a dependency is missing: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_import_skips(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_import_skips(outcome.get_result())


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One ``run.cache_dir`` for the whole session, holding the embedded task's tiny policy
    (built once, about 25 s on two cores, instead of once per module)."""
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    path = tmp_path_factory.getbasetemp() / "tiny-cache"
    ensure_tiny_policy(path)
    return path
