"""The layer-by-layer engine against a reference that recomputes every layer's inputs with a full forward."""

import copy

import pytest
import torch

from copal_exp.models.anatomy import decoder_layers, find_linears, prunable_linears
from copal_exp.models.loading import build_tiny_llama
from copal_exp.pruning.capture import capture_layer_inputs
from copal_exp.pruning.engine import prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
        "context": 128, "init_seed": 1}


@torch.no_grad()
def reference_prune(model, segments, method):
    """Prune layer by layer, but obtain each layer's inputs from a full-model forward every time."""
    masks = {}
    for index, layer in enumerate(decoder_layers(model)):
        linears = find_linears(layer)
        stats = {sub: method.new_statistics(lin.weight) for sub, lin in linears.items()}

        def hook_for(sub):
            def hook(module, args, output):
                stats[sub] = method.accumulate(stats[sub], args[0], output, module.bias)  # noqa: B023
            return hook

        handles = [lin.register_forward_hook(hook_for(sub)) for sub, lin in linears.items()]
        for row in segments:
            model(row.unsqueeze(0), use_cache=False)
        for h in handles:
            h.remove()
        for sub, lin in linears.items():
            new, keep, _ = method.prune(f"model.layers.{index}.{sub}", lin.weight.data, stats[sub], None)
            lin.weight.data.copy_(new)
            masks[f"model.layers.{index}.{sub}"] = keep
    return masks


@pytest.mark.parametrize("name,options,pattern", [
    ("wanda", {}, Pattern.parse("unstructured", ratio=0.5)),
    ("sparsegpt", {"blocksize": 32}, Pattern.parse("nm", n=2, m=4)),
    ("copal", {"granularity": "segment", "group": "layer"}, Pattern.parse("unstructured", ratio=0.6)),
    ("copal", {"granularity": "token", "group": "row"}, Pattern.parse("nm", n=4, m=8)),
    ("ria", {}, Pattern.parse("unstructured", ratio=0.5)),
    ("dsnot", {"update_threshold": 0.0}, Pattern.parse("unstructured", ratio=0.6)),
    ("dsnot", {"base": "sparsegpt", "skip_layer": "no_skip"}, Pattern.parse("nm", n=2, m=4)),
])
def test_layerwise_engine_matches_full_forward_reference(name, options, pattern):
    model, _ = build_tiny_llama(TINY)
    reference_model = copy.deepcopy(model)
    segments = torch.randint(0, 256, (4, 32))
    masks, _ = prune_model(model, segments, build_method(name, pattern, **options), progress=False)
    ref_masks = reference_prune(reference_model, segments, build_method(name, pattern, **options))
    assert masks.keys() == ref_masks.keys() and len(masks) == 3 * 7
    for key in masks:
        assert torch.equal(masks[key], ref_masks[key]), key
    for (_n1, l1), (_n2, l2) in zip(prunable_linears(model).items(), prunable_linears(reference_model).items()):
        torch.testing.assert_close(l1.weight, l2.weight, rtol=1e-4, atol=1e-5)


def test_capture_records_layer_kwargs_and_never_prunes_embeddings():
    model, _ = build_tiny_llama(TINY)
    embed_before = model.model.embed_tokens.weight.clone()
    inputs = capture_layer_inputs(model, torch.randint(0, 256, (2, 16)))
    assert len(inputs) == 2 and inputs.hidden[0].shape == (1, 16, 64)
    assert "position_embeddings" in inputs.kwargs[0][0]  # captured, not rebuilt
    masks, _ = prune_model(model, torch.randint(0, 256, (2, 16)),
                        build_method("magnitude", Pattern.parse("unstructured", ratio=0.5)), progress=False)
    assert all(".layers." in name for name in masks)
    assert torch.equal(model.model.embed_tokens.weight, embed_before)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_layerwise_evaluation_equals_full_forward():
    from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise

    model, _ = build_tiny_llama(TINY)
    windows = torch.randint(0, 256, (3, 40))
    assert perplexity_layerwise(model, windows) == pytest.approx(perplexity(model, windows), rel=1e-5)


def test_evaluation_is_exact_and_syncs_once_per_dataset(monkeypatch):
    """Perplexity equals exp(mean NLL) computed by hand from the logits, for any batch size, and reads
    one number back from the device per dataset (``.item()`` once), not one per window."""
    import math

    import torch.nn.functional as F

    from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise

    model, _ = build_tiny_llama(TINY)
    windows = torch.randint(0, 256, (5, 24))
    with torch.no_grad():
        logp = F.log_softmax(model(windows).logits.double(), dim=-1)
    nll = -logp[:, :-1].gather(-1, windows[:, 1:, None]).sum()
    by_hand = math.exp(nll.item() / (5 * 23))
    reads = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or real_item(self))
    for batch_size in (1, 2, 5):
        reads.clear()
        assert perplexity(model, windows, batch_size=batch_size) == pytest.approx(by_hand, rel=1e-5)
        assert len(reads) == 1
    reads.clear()
    assert perplexity_layerwise(model, windows) == pytest.approx(by_hand, rel=1e-5) and len(reads) == 1


def test_evaluation_round_moves_the_model_once(monkeypatch):
    """``resident`` moves the model for the whole round; inside it ``perplexity`` moves nothing."""
    from torch import nn

    from copal_exp.evaluation.perplexity import perplexity
    from copal_exp.io.offload import resident

    model, _ = build_tiny_llama(TINY)
    windows = torch.randint(0, 256, (2, 24))
    alone = perplexity(model, windows)
    moves = []
    real_to = nn.Module.to
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: moves.append(a) or real_to(self, *a, **k))
    with resident(model, "cpu"):  # already there: no move at all
        inside = [perplexity(model, windows) for _ in range(3)]
    assert moves == [] and inside == [alone] * 3


def test_a_model_already_on_the_compute_device_is_never_moved(monkeypatch):
    """What a model kept on the GPU for the whole job (``run.resident``) relies on: pruning, capture and
    both evaluations leave a model that is already on the device where it is. The host-held case (one
    layer at a time) is the default everywhere else in these tests."""
    from torch import nn

    from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise

    model, _ = build_tiny_llama(TINY)
    segments, windows = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    moves = []
    real_to = nn.Module.to
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: moves.append(type(self).__name__) or real_to(self, *a, **k))
    for method in ("wanda", "sparsegpt", "copal"):
        prune_model(model, segments, build_method(method, Pattern("unstructured", 0.5)), "cpu", progress=False)
    perplexity(model, windows, "cpu")
    perplexity_layerwise(model, windows, "cpu")
    assert moves == []
