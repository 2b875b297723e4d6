# Every target the README quotes. `make` alone lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The releases this project is tested with; any torch>=2.4 / torchvision>=0.19 works (override to change).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Where pip finds torch. Empty: PyPI, whose Linux x86_64 build bundles CUDA (about 6 GB installed).
# A machine without an NVIDIA GPU needs only the CPU build (under 1 GB):
#   make train TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_INDEX_FLAG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.installed

.PHONY: help install train models test test-fast lint format clean

help:
	@echo "make train      install into $(VENV) and train resnet20 on the bundled digits (about 15 s)"
	@echo "make models     list every model (parameters, FLOPs, depth, skip, paper)"
	@echo "make test       install, lint (ruff) and run the whole test suite, slow tests included"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make format     format the code with ruff"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX_FLAG) $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test,export]"
	@touch $@

install: $(STAMP)

train: $(STAMP)
	$(BIN)/resnets train

models: $(STAMP)
	$(BIN)/resnets models

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts hubconf.py
	$(BIN)/ruff format --check src tests benchmarks scripts hubconf.py
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts hubconf.py
	$(BIN)/ruff check --fix src tests benchmarks scripts hubconf.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
