"""Resume after SIGKILL, determinism, faults, continual state across processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, compose

from copal_exp.errors import ConfigError, NonFiniteError
from copal_exp.models.loading import build_tiny_llama
from copal_exp.protocol.job import run_job
from copal_exp.pruning.engine import prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method

# ------------------------------------------------------------------ validation, one test per case


# ------------------------------------------------------------------ resume after SIGKILL
def cli(args, cwd, data_root, **kw):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "copal_exp", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


SLOW_TINY = ["model=tiny_llama", "model.hidden_size=256", "model.intermediate_size=512", "model.num_layers=4",
             "data.nsamples=4", "data.seqlen=128", "eval.max_windows=4", "run.progress=false", "logger=none",
             "method=sparsegpt", "method.init=sequential"]


@pytest.mark.subprocess
def test_sigkill_mid_step_then_resume_gives_identical_results(tmp_path, data_root):
    reference = cli([*SLOW_TINY, f"hydra.run.dir={tmp_path / 'reference'}"], tmp_path, data_root)
    assert reference.wait(timeout=600) == 0, reference.stdout.read()[-2000:]
    job = tmp_path / "killed"
    proc = cli([*SLOW_TINY, f"hydra.run.dir={job}"], tmp_path, data_root)
    deadline = time.time() + 600
    while len([p for p in (job / "states").glob("*.pt") if not p.name.endswith("carry.pt") and p.name != "dense.pt"]) < 4:
        assert proc.poll() is None and time.time() < deadline, "job ended before it could be killed"
        time.sleep(0.02)
    time.sleep(0.3)  # into the middle of the next step
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert json.loads((job / "results.json").read_text())["status"] == "running"
    resumed = cli([*SLOW_TINY, f"hydra.run.dir={job}"], tmp_path, data_root)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-2000:]
    assert "resuming:" in output
    a = json.loads((tmp_path / "reference" / "results.json").read_text())
    b = json.loads((job / "results.json").read_text())
    assert b["status"] == "complete"
    for key in ("dense_ppl", "summary", "per_dataset"):
        assert a[key] == b[key]
    assert [p["ppl_matrix"] for p in a["permutations"]] == [p["ppl_matrix"] for p in b["permutations"]]
    assert [p["mask_change"] for p in a["permutations"]] == [p["mask_change"] for p in b["permutations"]]
    # timings cover the resuming process only; step_seconds_total adds the restored states' own seconds
    assert a["resumed_states"] == 0 and b["resumed_states"] >= 4
    assert b["step_seconds_total"]["evaluation"] > b["timings"]["evaluation"]
    # a fresh job computed every state itself: its states' seconds are part of its own timings
    assert a["step_seconds_total"]["evaluation"] <= a["timings"]["evaluation"] + 0.01


def test_resume_refuses_a_different_configuration(tmp_path, data_root):
    run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given"]), tmp_path)
    with pytest.raises(ValueError, match="holds the states of a different configuration"):
        run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given", "data.seed=1"]), tmp_path)


# ------------------------------------------------------------------ determinism and faults
def test_same_config_and_seed_give_identical_results(tmp_path, data_root):
    args = [*TINY, f"data.root={data_root}", "method=copal", "method.granularity=token"]
    a = run_job(compose(args), tmp_path / "a")
    b = run_job(compose(args), tmp_path / "b")
    assert [p["ppl_matrix"] for p in a["permutations"]] == [p["ppl_matrix"] for p in b["permutations"]]
    masks_a = sorted((tmp_path / "a" / "states").glob("*.pt"))
    for path in masks_a:
        if path.name.endswith("carry.pt") or path.name == "dense.pt":
            continue
        ra, rb = torch.load(path, weights_only=False), torch.load(tmp_path / "b" / "states" / path.name, weights_only=False)
        assert all((ra["masks"][n] == rb["masks"][n]).all() for n in ra["masks"])
    assert a["seed"] == 0 and "torch" in json.loads((tmp_path / "a" / "results.json").read_text())["versions"]


def test_non_finite_activations_name_layer_and_step():
    model, _ = build_tiny_llama({"num_layers": 3})
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="order 2/6 step 1/3.*decoder layer 1"):
        prune_model(model, torch.randint(0, 256, (2, 16)), build_method("wanda", Pattern.parse("unstructured", 0.5)),
                    progress=False, desc="order 2/6 step 1/3 [ptb] prune")


# ------------------------------------------------------------------ continual state across processes
def test_copal_state_export_and_continue_equals_one_run(tmp_path, data_root):
    base = [*TINY, f"data.root={data_root}", "method=copal", "order=given"]
    whole = run_job(compose([*base, "datasets=[wikitext2,ptb,c4]", f"state.export={tmp_path / 'whole'}"]),
                    tmp_path / "job-whole")
    first = run_job(compose([*base, "datasets=[wikitext2]", f"state.export={tmp_path / 's1'}"]), tmp_path / "job1")
    second = run_job(compose([*base, "datasets=[ptb,c4]", f"state.load={tmp_path / 's1'}",
                              f"state.export={tmp_path / 's2'}"]), tmp_path / "job2")
    assert first["continual"]["datasets_seen"] == ["wikitext2"]
    assert second["continual"]["datasets_seen"] == ["wikitext2", "ptb", "c4"]
    # the last two steps of the uninterrupted run, on ptb and c4, are exactly what the second process gives
    assert [row[1:] for row in whole["permutations"][0]["ppl_matrix"][1:]] == second["permutations"][0]["ppl_matrix"]
    from safetensors.torch import load_file

    g_whole, g_split = load_file(str(tmp_path / "whole" / "sensitivity.safetensors")), load_file(
        str(tmp_path / "s2" / "sensitivity.safetensors"))
    assert g_whole.keys() == g_split.keys() and all(torch.equal(g_whole[k], g_split[k]) for k in g_whole)
    assert json.loads((tmp_path / "s2" / "state.json").read_text())["steps_seen"] == 3


def test_copal_state_refuses_another_model(tmp_path, data_root):
    base = [*TINY, f"data.root={data_root}", "method=copal", "order=given", "datasets=[ptb]"]
    run_job(compose([*base, f"state.export={tmp_path / 's'}"]), tmp_path / "job1")
    with pytest.raises(ValueError, match="saved for different dense weights"):
        run_job(compose([*base, "model.init_seed=5", f"state.load={tmp_path / 's'}"]), tmp_path / "job2")
    with pytest.raises(ValueError, match="layer shapes differ"):
        run_job(compose([*base, "model.intermediate_size=256", f"state.load={tmp_path / 's'}"]), tmp_path / "job3")
    with pytest.raises(ConfigError, match=re.escape("only a method that carries memory between steps (copal)")):
        run_job(compose([*base, "method=wanda", f"state.load={tmp_path / 's'}"]), tmp_path / "x")
