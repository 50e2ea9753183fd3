"""Any causal LM: for tiny random models of eight families (LLaMA, Mistral with a sliding window,
Qwen3 and Gemma 3 with mixed layer types, OPT, GPT-NeoX, Phi, GPT-2), every decoder layer gets
exactly the inputs a full forward pass gives it, layer-wise evaluation equals full evaluation, and a
50 % prune step reaches 50 %. Sequences are longer than the sliding windows."""

import pytest
import torch
from tiny_families import FAMILIES, LAYER_TYPES, SEQLEN, WINDOW, build  # noqa: F401

from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise
from copal_exp.io.offload import Offloader
from copal_exp.metrics.transfer import sparsity_report
from copal_exp.models.anatomy import decoder_layers, prunable_linears
from copal_exp.pruning.capture import capture_layer_inputs, run_layer
from copal_exp.pruning.engine import prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method


def hooked_forward_inputs(model, segments):
    """What each decoder layer receives and returns in a plain full forward pass, per segment."""
    seen = {i: [] for i in range(len(decoder_layers(model)))}
    handles = []
    for i, layer in enumerate(decoder_layers(model)):
        def hook(module, args, kwargs, output, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            seen[i].append((x.detach().clone(), (output[0] if isinstance(output, tuple) else output).detach().clone()))
        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    with torch.no_grad():
        for row in segments:
            model(row.unsqueeze(0), use_cache=False)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_gets_what_a_full_forward_gives_it(family):
    model = build(family)
    segments = torch.randint(0, 256, (2, SEQLEN))
    reference = hooked_forward_inputs(model, segments)
    inputs = capture_layer_inputs(model, segments)
    for i, layer in enumerate(decoder_layers(model)):
        for j, h in enumerate(inputs.hidden):
            torch.testing.assert_close(h, reference[i][j][0], rtol=1e-5, atol=1e-5)
        inputs.hidden = run_layer(layer, inputs, "cpu", i, keep=Offloader("cpu"))
        for j, h in enumerate(inputs.hidden):
            torch.testing.assert_close(h, reference[i][j][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_layerwise_perplexity_equals_full_perplexity(family):
    model = build(family)
    windows = torch.randint(0, 256, (2, SEQLEN))
    assert perplexity_layerwise(model, windows) == pytest.approx(perplexity(model, windows), rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_50_percent_step_reaches_50_percent(family):
    model = build(family)
    linears = prunable_linears(model)
    assert len(linears) >= 4 * 4  # attention and MLP projections of every layer
    masks, _ = prune_model(model, torch.randint(0, 256, (2, SEQLEN)), build_method("wanda", Pattern.parse(
        "unstructured", 0.5)), progress=False)
    assert set(masks) == set(linears)
    assert sparsity_report(masks)["overall"] == pytest.approx(0.5, abs=1e-3)


def test_what_is_pruned_can_be_restricted_and_is_recorded(tmp_path, data_root):
    from conftest import TINY, compose

    from copal_exp.models.loading import build_tiny_llama
    from copal_exp.protocol.job import run_job

    results = run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given",
                               "prune.targets=[mlp]", "prune.ignore=[down_proj]", "prune.min_layer=1"]), tmp_path)
    names = sorted(results["sparsity"]["layers"])
    assert names == ["model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]
    assert results["pruned_modules"] == {"count": 2, "types": {"Linear": 2}, "targets": ["mlp"],
                                         "ignore": ["down_proj"], "min_layer": 1, "max_layer": None}
    assert results["sparsity"]["overall"] == pytest.approx(0.5)
    # the engine leaves every other linear as it was
    model, _ = build_tiny_llama({"num_layers": 2})
    before = {n: lin.weight.clone() for n, lin in prunable_linears(model).items()}
    from copal_exp.models.anatomy import Selection

    selection = Selection(targets=("mlp",), ignore=("down_proj",), min_layer=1)
    masks, _ = prune_model(model, torch.randint(0, 256, (2, 16)), build_method("wanda", Pattern.parse(
        "unstructured", 0.5)), progress=False, selection=selection)
    assert sorted(masks) == names
    for name, lin in prunable_linears(model).items():
        assert torch.equal(lin.weight, before[name]) == (name not in masks)


def test_a_model_with_nothing_to_prune_is_refused(tmp_path, data_root, monkeypatch):
    from conftest import TINY, compose

    import copal_exp.models.anatomy
    from copal_exp.errors import ConfigError
    from copal_exp.protocol.job import run_job

    monkeypatch.setattr(copal_exp.models.anatomy, "find_linears", lambda module: {})
    with pytest.raises(ConfigError, match="no nn.Linear or Conv1D inside its decoder layers"):
        run_job(compose([*TINY, f"data.root={data_root}", "method=wanda"]), tmp_path)
    assert not (tmp_path / "results.json").exists() or "complete" not in (tmp_path / "results.json").read_text()
