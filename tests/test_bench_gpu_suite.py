"""The one GPU benchmark script (bench/gpu_suite.sh): its CPU path runs end to end on tiny shapes and writes
the JSON a GPU run writes, and asked for a CPU device it refuses loudly instead of measuring the CPU."""

import json
import subprocess

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
SCRIPT = REPO / "bench" / "gpu_suite.sh"


def test_gpu_suite_cpu_path_records_every_part(tmp_path):
    run = subprocess.run([str(SCRIPT), "--cpu-smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (written,) = tmp_path.glob("gpu-suite-cpu-smoke-*.json")
    out = json.loads(written.read_text())
    for mode in ("non-resident", "resident"):
        steps = out["steps"][mode]
        assert set(steps) == {f"{m} {p}" for m in ("wanda", "sparsegpt", "copal") for p in ("unstructured", "2:4")}
        assert all(row["sparsity"] == pytest.approx(0.5, abs=0.01) and row["step_s"] > 0 for row in steps.values())
        assert "statistics" in steps["copal unstructured"]["phases_s"]
    ev = out["evaluation"]
    assert all(ev[k]["tokens_per_s"] > 0 for k in ("bare_forward", "perplexity_kept_on_device",
                                                   "perplexity_moving_model", "perplexity_layerwise"))
    proj = out["projection_llama7b_copal_all_perms"]
    assert proj["prune_steps"] == 15 and proj["evaluations"] == 45
    for mode in ("resident", "non-resident"):
        part = proj[mode]
        assert part["total_s"] == pytest.approx(part["prune_s"] + part["evaluation_s"], abs=0.2)
        assert part["prune_s"] == pytest.approx(15 * out["steps"][mode]["copal unstructured"]["step_s_32_layers"], abs=0.2)
    assert out["semi_structured_2_4"]["status"].startswith("not measured")  # CUDA-only kernels
    assert out["host_peak_rss_gib"] > 0


def test_gpu_suite_refuses_to_measure_a_cpu_as_a_gpu(tmp_path):
    run = subprocess.run([str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    assert "does not fall back to the CPU" in run.stderr and "--cpu-smoke" in run.stderr
    assert list(tmp_path.iterdir()) == []
