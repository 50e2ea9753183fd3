"""Planner-adjacent scale features: the dense cache, and per-permutation jobs on a real launcher."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY, compose

from copal_exp.__main__ import run_job
from copal_exp.report import collect


def test_dense_cache_hit_on_second_job(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path / "cache"))
    first = run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given"]), tmp_path / "1")
    second = run_job(compose([*TINY, f"data.root={data_root}", "method=copal", "order=given"]), tmp_path / "2")
    assert first["dense_cache"] == "computed" and second["dense_cache"].startswith("hit:")
    assert first["dense_ppl"] == second["dense_ppl"]
    third = run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given", "eval.max_windows=2"]),
                    tmp_path / "3")
    assert third["dense_cache"] == "computed"  # other evaluation tokens, other key


@pytest.mark.parametrize("method", ["copal", "sparsegpt"])
@pytest.mark.subprocess
def test_joblib_per_permutation_jobs_merge_to_the_single_job_summary(tmp_path, data_root, method):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    extra = ["method.init=sequential"] if method == "sparsegpt" else []
    sweep = tmp_path / "perms"
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           f"method={method}", *extra, "order.index=0,1,2,3,4,5", *TINY, f"hydra.sweep.dir={sweep}"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel" in proc.stdout + proc.stderr
    single = run_job(compose([*TINY, f"data.root={data_root}", f"method={method}", *extra]), tmp_path / "single")
    (merged,) = collect(sweep)
    assert merged["order_indices"] == [0, 1, 2, 3, 4, 5]
    # joblib's workers run with fewer BLAS threads than this process: equal up to float reduction order (SparseGPT amplifies it to ~1e-6)
    assert merged["summary"] == pytest.approx(single["summary"], rel=1e-4)
    for d in single["datasets"]:
        assert merged["per_dataset"][d] == pytest.approx(single["per_dataset"][d], rel=1e-4, abs=1e-3)
    for a, b in zip(merged["permutations"], single["permutations"]):
        assert a["order"] == b["order"]
        assert [v for row in a["ppl_matrix"] for v in row] == pytest.approx([v for row in b["ppl_matrix"] for v in row], rel=1e-4)


@pytest.mark.parametrize("place", ["disk", pytest.param("device", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="offload to the device equals offload to host memory without CUDA"))])
def test_offloaded_state_and_activations_give_identical_results(tmp_path, data_root, place):
    base = [*TINY, f"data.root={data_root}", "method=copal", "method.group=row"]
    reference = run_job(compose(base), tmp_path / "ref")
    offloaded = run_job(compose([*base, f"run.offload.memory={place}", f"run.offload.activations={place}"]),
                        tmp_path / "off")
    assert [p["ppl_matrix"] for p in offloaded["permutations"]] == [p["ppl_matrix"] for p in reference["permutations"]]
    if place == "disk":  # nothing is left behind once no step needs it
        assert not list((tmp_path / "off" / "offload").rglob("*.safetensors"))
