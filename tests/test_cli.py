"""The command line: Hydra composition, the design card's command verbatim, and early validation."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import compose

from copal_exp.protocol.launchers import normalise_argv
from copal_exp.protocol.settings import ConfigError, validate


def test_config_groups_compose():
    cfg = compose([])
    assert cfg.model.name == "smollm2_135m" and cfg.method.name == "copal" and cfg.order.kind == "all_perms"
    assert list(cfg.datasets) == ["wikitext2", "ptb", "c4"] and cfg.data.nsamples == 16
    assert compose(["sparsity=2:4"]).sparsity.n == 2 and compose(["sparsity=4:8"]).sparsity.m == 8
    assert compose(["model=llama_7b"]).data.seqlen == 2048
    assert compose(["model=llama_65b"]).model.name_or_path == "huggyllama/llama-65b"
    s = validate(compose(["order=all_perms", "order.index=4"]))
    assert s.orders == [("c4", "wikitext2", "ptb")]
    assert validate(compose(["order=given", "datasets=[ptb,c4]"])).orders == [("ptb", "c4")]
    for method in ("dense", "magnitude", "wanda", "sparsegpt", "copal"):
        assert validate(compose([f"method={method}"])).method == method


@pytest.mark.parametrize("overrides,message", [
    (["sparsity.ratio=1.5"], "sparsity.ratio=1.5"),
    (["method=wanda", "method.init=warm"], "method.init='warm'"),
    (["method=copal", "method.init=sequential"], "method.init='sequential'"),
    (["method.granularity=word"], "method.granularity='word'"),
    (["datasets=[wikitext2,imdb]"], "unknown ['imdb']"),
    (["order.index=6"], "order.index=6"),
    (["data.nsamples=0"], "data.nsamples=0"),
    # the config groups' sections are typed too (schema.py): unknown keys, types, ranges, choices
    (["+model.name_or_pth=x"], "model: unknown key(s) ['name_or_pth']"),
    (["model=tiny_llama", "model.num_layers=0"], "model.num_layers=0"),
    (["model=tiny_llama", "model.hidden_size=big"], "model.hidden_size='big'"),
    (["model=llama_7b", "model.dtype=fp8"], "model.dtype='fp8'"),
    (["sparsity.pattern=blocky"], "sparsity.pattern='blocky'"),
    (["sparsity=2:4", "sparsity.n=two"], "sparsity.n='two'"),
    (["order.kind=random"], "order.kind='random'"),
    (["order.index=-1"], "order.index=-1"),
    (["logger.mode=cloud"], "logger.mode='cloud'"),
    (["+logger.projct=x"], "logger: unknown key(s) ['projct']"),
    (["logger.init_timeout=0"], "logger.init_timeout=0"),
])
def test_bad_values_fail_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(overrides))


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
    assert proc.returncode == 0 and "method: copal, dense, magnitude, sparsegpt, wanda" in proc.stdout
    for args in (["method=wanda", "sparsity=4:8", "--cfg", "job"], ["method=wanda", "--cfg", "job", "sparsity=4:8"],
                 ["--cfg", "job", "method=wanda", "sparsity=4:8"]):  # anywhere on the line, as the README says
        proc = cli(args, tmp_path, data_root)
        assert proc.returncode == 0 and "name: wanda" in proc.stdout and "m: 8" in proc.stdout, args
    proc = cli(["method=wanda", "--help", "sparsity=4:8"], tmp_path, data_root)
    assert proc.returncode == 0 and "method: copal, dense, magnitude, sparsegpt, wanda" in proc.stdout


@pytest.mark.subprocess
def test_bad_input_fails_before_model_loads(tmp_path, data_root):
    env_cache = tmp_path / "cache"
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "sparsity.ratio=0"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "COPAL_CACHE_DIR": str(env_cache),
                                          "COPAL_DATA_DIR": str(data_root)}, timeout=120)
    assert proc.returncode != 0 and "sparsity.ratio=0" in proc.stderr
    assert not env_cache.exists()  # nothing was downloaded or converted
    assert time.time() - start < 60


def test_every_config_key_is_documented_in_the_readme():
    """Each key of the typed schema and every method option appears in README's configuration reference."""
    import dataclasses

    from conftest import REPO

    from copal_exp.config import schema
    from copal_exp.models.loading import MODEL_SOURCES
    from copal_exp.protocol.tracking import LOGGERS
    from copal_exp.pruning.methods import METHODS

    readme = (REPO / "README.md").read_text()
    keys = [f"{name}.{f.name}" for name, cls in schema.SECTIONS.items() for f in dataclasses.fields(cls)
            if f.name != "offload"]
    keys += [f"run.offload.{f.name}" for f in dataclasses.fields(schema.OffloadConfig)]
    groups = {"model": [source.config for source in MODEL_SOURCES.values()], "sparsity": [schema.SparsityConfig],
              "order": [schema.OrderConfig], "logger": [cls.config for cls in LOGGERS.values()]}
    keys += [f"{group}.{f.name}" for group, classes in groups.items() for cls in classes
             for f in dataclasses.fields(cls)]
    keys += [f"method.{option}" for cls in METHODS.values() for option in cls.defaults()]
    missing = sorted({k for k in keys if f"`{k}`" not in readme})
    assert not missing, f"undocumented config keys: {missing}"
