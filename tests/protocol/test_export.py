"""Take the pruned model away: any state of a finished job as a Hugging Face folder that
``from_pretrained`` reloads to the recorded perplexities — masked methods from the dense weights and
the masks, SparseGPT (which updates the kept weights) recomputed and checked against its masks."""

import json

import pytest
from conftest import TINY, compose

from copal_exp.protocol.export import export, verify
from copal_exp.protocol.job import run_job
from copal_exp.pruning.masks import unpack_mask


@pytest.mark.parametrize("method,step", [("wanda", None), ("copal", 1), ("sparsegpt", None)])
def test_an_exported_state_reloads_to_the_recorded_perplexities(tmp_path, data_root, method, step):
    extra = ["method.init=sequential"] if method == "sparsegpt" else []
    results = run_job(compose([*TINY, f"data.root={data_root}", f"method={method}", "order=given", *extra]),
                      tmp_path / "job")
    info = export(tmp_path / "job", tmp_path / "out", order=0, step=step)
    t = 2 if step is None else step
    assert info["record"]["ppl"] == dict(zip(results["datasets"], results["permutations"][0]["ppl_matrix"][t]))
    got = verify(tmp_path / "out", info)
    assert got == pytest.approx(info["record"]["ppl"], rel=1e-5)
    assert (tmp_path / "out" / "model.safetensors").is_file() and "perplexity" in (tmp_path / "out" / "README.md").read_text()
    # the exported linears are exactly as sparse as the recorded masks
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, packed in info["record"]["masks"].items():
        weight = dict(model.named_parameters())[f"{name}.weight"]
        keep = unpack_mask(packed, weight.shape)
        assert (weight[~keep] == 0).all()
    assert json.loads((tmp_path / "out" / "copal_exp.json").read_text())["ppl"] == info["record"]["ppl"]


def test_export_of_a_state_the_job_does_not_have(tmp_path, data_root):
    from copal_exp.errors import UserError

    run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given"]), tmp_path / "job")
    with pytest.raises(UserError, match="--order 3 --step 1: this job has 1 order"):
        export(tmp_path / "job", tmp_path / "out", order=3, step=0)
    assert not (tmp_path / "out").exists()
