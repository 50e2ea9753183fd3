"""Planner-adjacent scale features: the dense cache, and per-permutation jobs on a real launcher."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY, compose

from copal_exp.protocol.job import run_job
from copal_exp.reporting.runs import collect


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
    """Six one-permutation jobs on the joblib launcher (as many at once as cores, each with cores ÷ jobs
    threads) merge to exactly the summary of one ``order=all_perms`` job with the same thread count."""
    import json

    from copal_exp.protocol.launchers import usable_cores

    env = {**os.environ, "COPAL_DATA_DIR": str(data_root)}
    extra = ["method.init=sequential"] if method == "sparsegpt" else []
    sweep = tmp_path / "perms"
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "-m", "hydra/launcher=joblib",
                           f"method={method}", *extra, "order.index=0,1,2,3,4,5", *TINY, f"hydra.sweep.dir={sweep}"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cores = usable_cores()
    assert f"Joblib.Parallel(n_jobs={cores}," in proc.stdout + proc.stderr  # defaulted to the cores, not 10
    threads = {json.loads(p.read_text())["threads"] for p in sweep.glob("*/results.json")}
    assert threads == {max(1, cores // min(6, cores))}  # jobs × threads ≤ cores
    single = run_job(compose([*TINY, f"data.root={data_root}", f"method={method}", *extra,
                              f"run.threads={threads.pop()}"]), tmp_path / "single")
    (merged,) = collect(sweep)
    assert merged["order_indices"] == [0, 1, 2, 3, 4, 5]
    assert merged["summary"] == single["summary"] and merged["per_dataset"] == single["per_dataset"]
    assert [p["ppl_matrix"] for p in merged["permutations"]] == [p["ppl_matrix"] for p in single["permutations"]]


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
