"""Every config value is checked before anything loads: composition, the typed schema, each section's and
each registry's own checks, and the checks that need the data or the model's shapes. One place for every
case; a message names the key, the value and what is allowed."""

import dataclasses
import re

import pytest
import torch
from conftest import REPO, TINY, compose

from copal_exp.config import schema
from copal_exp.errors import ConfigError
from copal_exp.models.loading import MODEL_SOURCES
from copal_exp.protocol.job import run_job
from copal_exp.protocol.settings import validate
from copal_exp.protocol.tracking import LOGGERS
from copal_exp.pruning.methods import METHODS


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


# ------------------------------------------------------------------ composition
def test_unknown_method_model_order_are_rejected_by_composition():
    from hydra.errors import MissingConfigException

    for group, value in (("method", "obs"), ("model", "llama_3b"), ("order", "random"), ("sparsity", "1:4")):
        with pytest.raises(MissingConfigException, match=f"Could not find '{group}/{value}'"):
            compose([f"{group}={value}"])


def test_unknown_key_is_rejected():
    from hydra.errors import ConfigCompositionException as HydraComposition

    with pytest.raises(HydraComposition, match="Could not override 'data.nsample'"):
        compose(["data.nsample=4"])


# ------------------------------------------------------------------ typed values, before the model or data loads
@pytest.mark.parametrize("overrides,message", [
    (["sparsity.ratio=1.5"], "sparsity.ratio=1.5"),
    (["method=wanda", "method.init=warm"], "method.init='warm'"),
    (["method=copal", "method.init=sequential"], "method.init='sequential'"),
    (["method.granularity=word"], "method.granularity='word'"),
    (["datasets=[wikitext2,imdb]"], "unknown ['imdb']"),
    (["order.index=6"], "order.index=6"),
    (["data.nsamples=0"], "data.nsamples=0"),
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
    (["data.nsamples=2.7"], "data.nsamples=2.7: must be an integer at least 1, not a fraction"),
    (["data.nsamples=many"], "data.nsamples='many': not a number"),
    (["data.seqlen=3.5"], "data.seqlen=3.5"),
    (["data.seed=x"], "data.seed='x'"),
    (["eval.max_windows=0.5"], "eval.max_windows=0.5"),
    (["eval.batch_size=two"], "eval.batch_size='two'"),
    (["order.index=1.5"], "order.index=1.5"),
    (["sparsity.ratio=half"], "sparsity.ratio='half': not a number"),
    (["sparsity=2:4", "sparsity.n=1.5"], "sparsity.n=1.5"),
    (["method.epsilon=0"], "method.epsilon=0"),
    (["method.epsilon=-1"], "method.epsilon=-1"),
    (["method.epsilon=nan"], "method.epsilon=nan"),
    (["method.epsilon=inf"], "method.epsilon=inf"),
    (["method=sparsegpt", "method.blocksize=0"], "method.blocksize=0"),
    (["method=sparsegpt", "method.blocksize=12.5"], "method.blocksize=12.5"),
    (["method=sparsegpt", "method.percdamp=0"], "method.percdamp=0"),
    (["method=sparsegpt", "method.percdamp=-0.1"], "method.percdamp=-0.1"),
    (["run.device=cuda:7"], "run.device='cuda:7'"),
    (["run.device=tpu0"], "run.device='tpu0': not a device name; allowed values here are"),
    (["run.planner=maybe"], "run.planner='maybe': allowed values are true, false"),
    (["model.dtype=half"], "model.dtype='half': allowed values are ('auto', 'float32', 'float16', 'bfloat16')"),
    (["model=hf"], "model.name_or_path='???': model=hf needs"),
    (["model=hf", "model.name_or_path=/no/such/model"], "model.name_or_path=/no/such/model: no such local folder"),
    (["model=hf", "model.name_or_path=./ckpt/llama"], "model.name_or_path=./ckpt/llama: no such local folder"),
    (["model=hf", "model.name_or_path=/tmp"], "model.name_or_path=/tmp: the folder holds no config.json"),
    (["data.root=/no/such/dir"], "data.root=/no/such/dir: no such directory"),
])
def test_bad_values_fail_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(overrides))


def test_data_root_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        validate(compose([f"data.root={tmp_path / 'file'}"]))


def test_run_device_here_lists_what_this_machine_has():
    with pytest.raises(ConfigError) as err:
        validate(compose(["run.device=cuda"] if not torch.cuda.is_available() else ["run.device=cuda:99"]))
    assert "'cpu'" in str(err.value) and "'auto'" in str(err.value)


# ------------------------------------------------------------------ checks that need the data or the model's shapes
@pytest.fixture
def no_calibration(monkeypatch):
    """These checks must fail before any calibration: the protocol itself is never reached."""
    import copal_exp.protocol.job as job

    monkeypatch.setattr(job, "Experiment", lambda *a, **k: pytest.fail("the protocol started"))


def fails(tmp_path, data_root, overrides, exc=ConfigError):
    with pytest.raises(exc) as err:
        run_job(compose([*TINY, f"data.root={data_root}", *overrides]), tmp_path)
    return str(err.value)


def test_unknown_dataset(tmp_path, data_root, no_calibration):
    assert "unknown ['wiki103']" in fails(tmp_path, data_root, ["datasets=[wiki103]"])


def test_ratio_out_of_range(tmp_path, data_root, no_calibration):
    assert "sparsity.ratio=0" in fails(tmp_path, data_root, ["sparsity.ratio=0"])


def test_n_not_below_m(tmp_path, data_root, no_calibration):
    msg = fails(tmp_path, data_root, ["sparsity=2:4", "sparsity.n=4"])
    assert "sparsity.n=4" in msg and "1 <= N < M" in msg


def test_pattern_must_divide_input_size(tmp_path, data_root, no_calibration):
    msg = fails(tmp_path, data_root, ["sparsity=2:4", "sparsity.m=5"])  # tiny_llama in_features 64, 128
    assert "not divisible by M=5" in msg and "model.layers.0" in msg


def test_nsamples_at_least_one(tmp_path, data_root, no_calibration):
    assert "data.nsamples=0" in fails(tmp_path, data_root, ["data.nsamples=0"])


def test_seqlen_above_context(tmp_path, data_root, no_calibration):
    assert "data.seqlen=1024: above the model's context of 512" in fails(tmp_path, data_root, ["data.seqlen=1024"])


def test_dataset_too_short(tmp_path, data_root, no_calibration):
    msg = fails(tmp_path, data_root, ["datasets=[ptb]", "data.nsamples=2000", "data.seqlen=500"], ValueError)
    assert "data.nsamples=2000" in msg and "data.seqlen=500" in msg


# ------------------------------------------------------------------ documentation
def test_every_config_key_is_documented():
    """Each key of the typed schema, of every model source and logger, and every method option appears in
    docs/configuration.md."""
    readme = (REPO / "docs" / "configuration.md").read_text()
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
