"""Linears that read the same input share their statistics and SparseGPT's solve: the groups found in the
model's own forward, and the same masks (weights to float rounding) as each linear solved alone."""

import copy

import pytest
import torch
from tiny_families import FAMILIES, build

from copal_exp.models.anatomy import decoder_layers, find_linears
from copal_exp.pruning.engine import prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method
from copal_exp.pruning.methods.sparsegpt import sparsify_stacked, sparsify_weight
from copal_exp.pruning.sharing import InputGroups

EXPECTED = {  # by hand, from each architecture's forward
    "llama": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
              ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]],
    "gpt2": [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]],
    "phi": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.fc1"], ["self_attn.dense"],
            ["mlp.fc2"]],  # attention and MLP in parallel on one normed input
}


@torch.no_grad()
def reference_groups(model, segments):
    """Per decoder layer, its linears grouped by equal input values in a full forward."""
    seen, handles = {}, []
    for index, layer in enumerate(decoder_layers(model)):
        for sub, lin in find_linears(layer).items():
            def hook(module, args, output, key=(index, sub)):
                seen[key] = args[0].detach().clone()
            handles.append(lin.register_forward_hook(hook))
    model(segments, use_cache=False)
    for h in handles:
        h.remove()
    out = []
    for index, layer in enumerate(decoder_layers(model)):
        groups: list[list[str]] = []
        for sub in find_linears(layer):
            x = seen[(index, sub)]
            for group in groups:
                first = seen[(index, group[0])]
                if first.shape == x.shape and torch.equal(first, x):
                    group.append(sub)
                    break
            else:
                groups.append([sub])
        out.append(groups)
    return out


class Recording(InputGroups):
    found: list = []

    def groups(self, subs):
        groups = super().groups(subs)
        Recording.found.append(groups)
        return groups


@pytest.mark.parametrize("family", FAMILIES)
def test_the_groups_are_the_linears_a_forward_calls_on_one_input(family, monkeypatch):
    import copal_exp.pruning.engine as engine

    model = build(family)
    with torch.no_grad():  # norms start equal (weight 1, bias 0): make distinct norms give distinct values
        generator = torch.Generator().manual_seed(2)
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    segments = torch.randint(0, 256, (2, 24))
    expected = reference_groups(copy.deepcopy(model), segments)
    Recording.found = []
    monkeypatch.setattr(engine, "InputGroups", Recording)
    prune_model(model, segments, build_method("wanda", Pattern.parse("unstructured", ratio=0.5)), progress=False)
    def canonical(layers):
        return [sorted(sorted(g) for g in groups) for groups in layers]

    assert canonical(Recording.found) == canonical(expected)
    if family in EXPECTED:
        assert canonical(Recording.found) == canonical([EXPECTED[family]] * len(expected))
    if family in ("llama", "mistral", "qwen3", "gemma3", "opt", "phi"):
        assert any(len(g) >= 3 for g in Recording.found[0])


class Unshared:
    """A method's own statistics per linear and its per-linear solve: the path before sharing."""

    def __new__(cls, name, pattern):
        method = build_method(name, pattern)
        method.input_statistics = False
        return method


def counting(method):
    calls = []
    accumulate = method.accumulate

    def counted(stats, inputs, outputs, bias):
        calls.append(1)
        return accumulate(stats, inputs, outputs, bias)

    method.accumulate = counted
    return calls


@pytest.mark.parametrize("family", ["llama", "phi", "opt"])
@pytest.mark.parametrize("pattern", [Pattern.parse("unstructured", ratio=0.5), Pattern.parse("nm", n=2, m=4)],
                         ids=["50%", "2:4"])
@pytest.mark.parametrize("name", ["sparsegpt", "wanda", "ria", "dsnot"])
def test_shared_statistics_and_solve_give_each_linears_own_result(family, pattern, name):
    model = build(family)
    segments = torch.randint(0, 256, (3, 24))
    alone, together = copy.deepcopy(model), copy.deepcopy(model)
    own = Unshared(name, pattern)
    shared = build_method(name, pattern)
    own_calls, shared_calls = counting(own), counting(shared)
    masks_alone, _ = prune_model(alone, segments, own, progress=False)
    masks_together, _ = prune_model(together, segments, shared, progress=False)
    assert sorted(masks_alone) == sorted(masks_together)
    for key in masks_alone:
        assert torch.equal(masks_alone[key], masks_together[key]), key
    for a, b in zip(alone.state_dict().values(), together.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(shared_calls) < len(own_calls)  # one accumulation per group, not per linear


def test_stacked_solve_against_each_linears_own_by_hand():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 32, generator=generator)
    hessian = 2 * x.t() @ x / 200
    weights = [torch.randn(rows, 32, generator=generator) for rows in (16, 8, 24)]
    for pattern in (Pattern.parse("unstructured", ratio=0.6), Pattern.parse("nm", n=2, m=4)):
        together = sparsify_stacked(weights, hessian, pattern, blocksize=8)
        for weight, (new_weight, keep) in zip(weights, together):
            own_weight, own_keep = sparsify_weight(weight, hessian, pattern, blocksize=8)
            assert torch.equal(keep, own_keep)
            torch.testing.assert_close(new_weight, own_weight, rtol=1e-5, atol=1e-6)
            if pattern.kind == "unstructured":  # each linear's own count per block, not the stack's
                assert int((~keep).sum()) == 4 * int(weight.shape[0] * 8 * 0.6)


def test_a_sharing_that_changes_between_batches_is_refused():
    groups = InputGroups()
    a, b = torch.zeros(2), torch.zeros(2)
    assert groups.observe("q", a) == "q" and groups.observe("k", a) == "q"
    groups.observe("q", b)
    with pytest.raises(RuntimeError, match="k was called on the same input as q"):
        groups.observe("k", a)
