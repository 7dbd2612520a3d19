"""The layers import only downwards, nothing imports in a cycle, and the folders show the layers.

Layers, bottom to top, each a set of folders: the core (``lire_ray`` outside the folders below),
``actors/``, the runtime layer (``lire_ray/runtime/``), the orchestration (``lire_ray/loop/``:
Algorithm 1, the pool sources, the evaluator, the main job's driver; and ``lire_ray/studies/``)
and ``jobs/``. A module's layer is its folder's. Every import counts, including those inside
functions. Read from the source files (no import is executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The folders of each layer above the core (everything else in ``lire_ray/`` is the core).
FOLDERS = {"jobs": ("jobs",), "actors": ("actors",), "runtime": ("lire_ray/runtime",),
           "orchestration": ("lire_ray/loop", "lire_ray/studies")}
RANK = {"core": 0, "actors": 1, "runtime": 2, "orchestration": 3, "jobs": 4}
#: Modules directly in ``lire_ray/`` (``__init__.py`` aside): only cross-cutting helpers.
MAX_TOP_MODULES = 8


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for top in ("lire_ray", "actors", "jobs")
           for p in (ROOT / top).rglob("*.py")}


def layer(module: str) -> str:
    """The layer of a module: the layer whose folder holds its file."""
    path = MODULES[module].relative_to(ROOT).as_posix()
    for name, folders in FOLDERS.items():
        if any(path.startswith(folder + "/") for folder in folders):
            return name
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
    assert all((ROOT / f).is_dir() for folders in FOLDERS.values() for f in folders)
    assert layer("lire_ray.losses.lire") == "core"
    assert layer("lire_ray.model.collate") == "core"
    assert layer("lire_ray.runtime") == layer("lire_ray.runtime.roles") == "runtime"
    assert layer("lire_ray.loop.algorithm") == layer("lire_ray.loop.self_enhance") \
        == "orchestration"
    assert layer("lire_ray.studies.grid") == "orchestration"
    assert layer("actors.sampler") == "actors" and layer("jobs.self_enhance") == "jobs"


def test_few_modules_sit_directly_in_the_package():
    top = sorted(p.name for p in (ROOT / "lire_ray").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in lire_ray/: {top}"


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
