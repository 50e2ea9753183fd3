"""The command line: argv normalisation, the design card's command verbatim, --help/--cfg, and one-line user
errors before anything loads (the validation cases themselves: tests/config/test_validation.py)."""

import json
import os
import re
import subprocess
import sys

import pytest

from copal_exp.protocol.launchers import normalise_argv


def test_multirun_flag_anywhere():
    assert normalise_argv(["method=copal", "sparsity=2:4", "-m", "order=all_perms"]) == [
        "-m", "method=copal", "sparsity=2:4", "order=all_perms"]
    assert normalise_argv(["a=1", "--multirun"]) == ["--multirun", "a=1"]


def cli(args, cwd, data_root, timeout=600):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root)}
    return subprocess.run([sys.executable, "-m", "copal_exp", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.subprocess
def test_design_card_command_verbatim(tmp_path, data_root):
    small = ["model=tiny_llama", "data.nsamples=2", "data.seqlen=32", "eval.max_windows=1", "run.progress=false"]
    proc = cli("method=copal sparsity=2:4 -m order=all_perms".split() + small, tmp_path, data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = list(tmp_path.glob("multirun/*/*/0/results.json"))
    results = json.loads(result.read_text())
    assert results["status"] == "complete" and len(results["permutations"]) == 6
    assert results["config"]["method"]["name"] == "copal" and results["sparsity"]["pattern"] == "2:4"
    assert (result.parent / "ppl_matrices.csv").is_file()


@pytest.mark.subprocess
def test_help_and_cfg_job(tmp_path, data_root):
    proc = cli(["--help"], tmp_path, data_root)
    assert proc.returncode == 0 and "method: copal, dense, dsnot, magnitude, ria, sparsegpt, wanda" in proc.stdout
    for args in (["method=wanda", "sparsity=4:8", "--cfg", "job"], ["method=wanda", "--cfg", "job", "sparsity=4:8"],
                 ["--cfg", "job", "method=wanda", "sparsity=4:8"]):  # anywhere on the line, as the README says
        proc = cli(args, tmp_path, data_root)
        assert proc.returncode == 0 and "name: wanda" in proc.stdout and "m: 8" in proc.stdout, args
    proc = cli(["method=wanda", "--help", "sparsity=4:8"], tmp_path, data_root)
    assert proc.returncode == 0 and "method: copal, dense, dsnot, magnitude, ria, sparsegpt, wanda" in proc.stdout


@pytest.mark.subprocess
def test_bad_input_fails_before_model_loads(tmp_path, data_root):
    env_cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "sparsity.ratio=0"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "COPAL_CACHE_DIR": str(env_cache),
                                          "COPAL_DATA_DIR": str(data_root)}, timeout=120)
    assert proc.returncode != 0 and "sparsity.ratio=0" in proc.stderr
    assert not env_cache.exists()  # nothing was downloaded or converted




@pytest.mark.subprocess
def test_a_dataset_that_is_nowhere_is_one_line_naming_it(tmp_path):
    """Neither under data.root nor on the Hub: a user error (exit 2) naming the dataset, where it looked and
    how to provide it, before any model loads — not a traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "model=tiny_llama", "datasets=[ptb]", f"data.root={empty}",
                           "data.use_hub=false", "logger=none", f"hydra.run.dir={tmp_path / 'job'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COPAL_CACHE_DIR": str(tmp_path / "cache")})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1
    assert re.match(r"Error: dataset 'ptb' \((evaluation|calibration) split\) is not available: no local file among ",
                    errors[0])
    assert str(empty / "ptb" / "ptb.") in errors[0] and "data.use_hub=false" in errors[0] and "COPAL_DATA_DIR" in errors[0]
    assert not (tmp_path / "cache" / "models").exists()  # no model was loaded
