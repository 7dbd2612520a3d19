"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One ``run.cache_dir`` for the whole session, holding the embedded task's tiny policy
    (built once, about 25 s on two cores, instead of once per module)."""
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    path = tmp_path_factory.getbasetemp() / "tiny-cache"
    ensure_tiny_policy(path)
    return path
