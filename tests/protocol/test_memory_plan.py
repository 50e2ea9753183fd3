"""The memory plan: its arithmetic on LLaMA-7B…65B shapes (meta device, no weights), its schedule of
carried states, and a job refused before its model loads when the plan cannot fit."""

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose

from copal_exp.errors import ConfigError
from copal_exp.models.loading import meta_model
from copal_exp.protocol.memory import plan_memory
from copal_exp.protocol.plan import make_plan
from copal_exp.protocol.settings import validate

GIB = 1024**3
# hidden, MLP, layers, heads (LLaMA-1 paper table 2)
LLAMA = {"llama_7b": (4096, 11008, 32, 32), "llama_13b": (5120, 13824, 40, 40),
         "llama_30b": (6656, 17920, 60, 52), "llama_65b": (8192, 22016, 80, 64)}


def llama(name):
    from transformers import LlamaConfig

    h, i, layers, heads = LLAMA[name]
    return meta_model(LlamaConfig(vocab_size=32000, hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                                  num_attention_heads=heads, num_key_value_heads=heads, tie_word_embeddings=False))


def needs(plan, where):
    return {n.what: n.bytes for n in plan.needs if n.where == where}


@pytest.mark.parametrize("name", list(LLAMA))
def test_plan_arithmetic_on_llama_shapes(name):
    h, i, layers, _ = LLAMA[name]
    prunable = layers * (4 * h * h + 3 * h * i)  # q, k, v, o and gate, up, down of every layer
    params = prunable + layers * 2 * h + 2 * 32000 * h + h  # + norms, embeddings, LM head, final norm
    settings = validate(compose([f"model={name}", "method=copal"]))  # 3 datasets, all 6 orders, 16 × 2048
    plan = plan_memory(llama(name), settings, torch.float16, "cuda")
    host, gpu, disk = needs(plan, "host"), needs(plan, "gpu"), needs(plan, "disk")
    assert host["model weights"] == 2 * params
    assert host["dense copy of the pruned weights"] == 2 * prunable
    assert host["copal memory of 3 carried state(s)"] == 3 * 4 * prunable  # fp32 G: a step and its 2 ancestors
    assert host["calibration activations (in and out of a layer)"] == 2 * 16 * 2048 * h * 2
    assert host["bit-packed masks (this step, and two states for a mask change)"] == 3 * math.ceil(prunable / 8)
    assert disk["bit-packed masks of every state (states/)"] == 15 * math.ceil(prunable / 8)  # 3 + 6 + 6 prefixes
    assert gpu["the decoder layer being pruned"] == 2 * (4 * h * h + 3 * h * i + 2 * h)
    assert gpu["statistics of one decoder layer"] == 4 * (4 * h * h + 3 * h * i)  # this step's G, fp32
    assert gpu["evaluation logits (1 window(s) per pass)"] == 3 * 2048 * 32000 * 4
    if name == "llama_65b":  # its model config evaluates layer by layer: never the whole model on the GPU
        assert settings.eval.layerwise and "the whole model during evaluation" not in gpu
    else:
        assert gpu["the whole model during evaluation"] == 2 * params
    assert plan.total("host") == sum(host.values())
    if name == "llama_7b":  # the README's figures for 7B
        assert round(prunable / 1e9, 1) == 6.5 and round(2 * params / 1e9, 1) == 13.5


def test_a_plan_that_cannot_fit_names_the_setting():
    settings = validate(compose(["model=llama_65b", "method=wanda", "eval.layerwise=false"]))
    plan = plan_memory(llama("llama_65b"), settings, torch.float16, "cuda")
    with pytest.raises(ConfigError, match=r"GiB of gpu memory.*eval.layerwise=true"):
        plan.check(1024 * GIB, 80 * GIB, 10**15)
    layerwise = plan_memory(llama("llama_65b"), validate(compose(["model=llama_65b", "method=wanda"])),
                            torch.float16, "cuda")
    layerwise.check(1024 * GIB, 80 * GIB, 10**15)  # its model config makes it fit on one 80 GB GPU
    copal = plan_memory(llama("llama_13b"), validate(compose(["model=llama_13b", "method=copal"])), torch.float16,
                        "cuda")
    assert copal.total("host") > 128 * GIB  # G of 3 live states on the host
    with pytest.raises(ConfigError, match=r"GiB of host memory.*run.offload.memory=disk"):
        copal.check(128 * GIB, 80 * GIB, 10**15)
    on_disk = plan_memory(llama("llama_13b"), validate(compose(["model=llama_13b", "method=copal",
                                                                "run.offload.memory=disk"])), torch.float16, "cuda")
    on_disk.check(128 * GIB, 80 * GIB, 10**15)
    with pytest.raises(ConfigError, match=r"GiB of disk space under /scratch/job, this machine has 100.00 GiB"):
        on_disk.check(128 * GIB, 80 * GIB, 100 * GIB, Path("/scratch/job"))


def test_peak_carried_states_by_hand():
    orders = [("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"), ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]
    # with the planner, (a) has children (a,b) and (a,c): while (a,b,c) is built, (a) and (a,b) are alive
    assert make_plan(orders, carries_state=True).peak_carries() == 3
    # without it, every order is its own chain: a parent is released as soon as its only child is built
    assert make_plan(orders, carries_state=True, planner=False).peak_carries() == 2
    assert make_plan(orders, carries_state=False).peak_carries() == 1
    assert make_plan([("a", "b", "c", "d")], carries_state=True).peak_carries() == 2


def test_a_job_that_cannot_fit_is_refused_before_its_model_loads(tmp_path, data_root, monkeypatch):
    import copal_exp.models.loading as models
    import copal_exp.protocol.memory as memory_plan
    from copal_exp.protocol.job import run_job

    monkeypatch.setattr(memory_plan, "machine_limits", lambda device, folder: (64 * 1024**2, None, 10**12))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ConfigError, match=r"memory plan: this job needs [0-9.]+ [MG]iB of host memory, this machine has "
                                          r"64.0 MiB"):
        run_job(compose([*TINY, f"data.root={data_root}", "method=wanda"]), tmp_path / "job")


def test_the_model_stays_on_the_gpu_when_the_plan_fits_it():
    from copal_exp.protocol.memory import choose_resident

    seven = llama("llama_7b")
    h, i, layers, _ = LLAMA["llama_7b"]
    params = layers * (4 * h * h + 3 * h * i + 2 * h) + 2 * 32000 * h + h
    copal = validate(compose(["model=llama_7b", "method=copal"]))
    assert choose_resident(seven, copal, torch.float16, "cuda", 80 * GIB)  # 13.5 GB of weights on an 80 GB GPU
    assert not choose_resident(seven, copal, torch.float16, "cuda", 16 * GIB)  # it would, but the rest would not
    assert not choose_resident(seven, copal, torch.float16, "cpu", None)  # on a CPU it is always there
    assert not choose_resident(llama("llama_65b"), validate(compose(["model=llama_65b", "method=copal"])),
                               torch.float16, "cuda", 80 * GIB)  # 130 GB of weights
    off = validate(compose(["model=llama_7b", "method=copal", "run.resident=false"]))
    assert not choose_resident(seven, off, torch.float16, "cuda", 80 * GIB)
    forced = validate(compose(["model=llama_7b", "method=copal", "run.resident=true"]))
    assert choose_resident(seven, forced, torch.float16, "cuda", 16 * GIB)  # then the plan check decides

    plan = plan_memory(seven, copal, torch.float16, "cuda", resident=True)
    gpu, host = needs(plan, "gpu"), needs(plan, "host")
    assert plan.resident and plan.record()["resident"]
    assert gpu["the whole model, kept on the GPU for the job"] == 2 * params
    assert gpu["calibration activations (in and out of a layer)"] == 2 * 16 * 2048 * h * 2  # activations=auto
    assert "the decoder layer being pruned" not in gpu and "the whole model during evaluation" not in gpu
    assert host["dense copy of the pruned weights"] == 2 * layers * (4 * h * h + 3 * h * i)  # restored from the host
    with pytest.raises(ConfigError, match=r"GiB of gpu memory.*run.resident=false"):
        plan.check(1024 * GIB, 12 * GIB, 10**15)
    on_host = plan_memory(seven, validate(compose(["model=llama_7b", "method=copal", "run.offload.activations=cpu"])),
                          torch.float16, "cuda", resident=True)
    assert "calibration activations (in and out of a layer)" in needs(on_host, "host")
    layerwise = plan_memory(seven, copal, torch.float16, "cuda")  # not resident: a layer at a time
    assert not layerwise.resident and "the decoder layer being pruned" in needs(layerwise, "gpu")
    assert "calibration activations (in and out of a layer)" in needs(layerwise, "host")


def test_sizes_are_printed_in_the_unit_that_shows_them():
    from copal_exp.protocol.memory import size

    assert [size(n) for n in (0, 900, 5 * 1024, 3 * 1024**2 + 1, 2 * GIB)] == [
        "0 B", "900 B", "5.0 KiB", "3.0 MiB", "2.00 GiB"]


def test_copals_memory_stays_on_the_gpu_with_the_model_when_the_plan_fits_it():
    from copal_exp.protocol.memory import choose_memory_place

    seven = llama("llama_7b")
    copal = validate(compose(["model=llama_7b", "method=copal"]))  # 3 carried G of 26 GB, model 13.5 GB
    assert choose_memory_place(seven, copal, torch.float16, "cuda", 141 * GIB, resident=True) == "device"  # H200
    assert choose_memory_place(seven, copal, torch.float16, "cuda", 80 * GIB, resident=True) == "cpu"  # 78 GB of G
    assert choose_memory_place(seven, copal, torch.float16, "cuda", 141 * GIB, resident=False) == "cpu"
    one_order = validate(compose(["model=llama_7b", "method=copal", "order=given"]))  # 2 carried at once
    assert choose_memory_place(seven, one_order, torch.float16, "cuda", 80 * GIB, resident=True) == "device"
    pinned = validate(compose(["model=llama_7b", "method=copal", "run.offload.memory=cpu"]))
    assert choose_memory_place(seven, pinned, torch.float16, "cuda", 141 * GIB, resident=True) == "cpu"
    on = plan_memory(seven, copal, torch.float16, "cuda", resident=True, memory_on="device")
    assert needs(on, "gpu")["copal memory of 3 carried state(s)"] == 3 * 4 * 6_476_005_376
    assert needs(on, "gpu").get("statistics of one decoder layer", 0) == 0  # this step's G becomes a carried one
    assert on.record()["memory_place"] == "device" and plan_memory(seven, copal, torch.float16, "cuda").memory_place == "cpu"
