"""The layers import only downwards, and nothing imports in a cycle.

Layers, bottom to top: the core (``lire_ray`` outside the orchestration), ``actors/``, the
runtime layer (``lire_ray/runtime``), the orchestration (Algorithm 1, the pool sources, the
evaluator, the studies, the main job's driver) and ``jobs/``. Every import counts, including
those inside functions. Read from the source files (no import is executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("lire_ray.algorithm", "lire_ray.pool_sources", "lire_ray.evaluator",
                 "lire_ray.self_enhance", "lire_ray.studies")
RANK = {"core": 0, "actors": 1, "runtime": 2, "orchestration": 3, "jobs": 4}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for top in ("lire_ray", "actors", "jobs")
           for p in (ROOT / top).rglob("*.py")}


def layer(module: str) -> str:
    if module.startswith("jobs"):
        return "jobs"
    if module.startswith("actors"):
        return "actors"
    if module == "lire_ray.runtime" or module.startswith("lire_ray.runtime."):
        return "runtime"
    if any(module == m or module.startswith(m + ".") for m in ORCHESTRATION):
        return "orchestration"
    return "core"


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports anywhere in its file."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(_resolve(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                # ``from pkg import submodule`` depends on the submodule, not on the package.
                out.add(sub if sub in MODULES else _resolve(node.module))
    return {m for m in out if m and m != module}


def test_the_layers_are_what_this_test_assumes():
    assert layer("lire_ray.losses.lire") == "core"
    assert layer("lire_ray.runtime.roles") == "runtime"
    assert layer("lire_ray.studies.grid") == "orchestration"
    assert {"lire_ray.algorithm", "lire_ray.runtime.roles", "actors.sampler",
            "jobs.self_enhance"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    mine = layer(module)
    upward = sorted(m for m in imports(module) if RANK[layer(m)] > RANK[mine])
    assert not upward, f"{module} ({mine}) imports a higher layer: {upward}"
    if mine != "runtime":
        assert not [m for m in imports(module) if layer(m) == "actors"
                    and mine != "actors"], f"{module} imports actors/ (only the runtime may)"


def test_no_import_cycles():
    graph = {m: imports(m) for m in MODULES}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in seen:
                visit(n, path + [n])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])


def test_no_ray_at_module_level_in_the_core():
    for module, path in MODULES.items():
        if layer(module) != "core":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n == "ray" or n.startswith("ray.")], \
                f"{module} imports ray at module level"
