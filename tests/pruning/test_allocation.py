"""OWL's layer-wise allocation: the maths against hand-computed values, the outlier ratios against a
full-model forward with hooks, the engine pruning each decoder layer at its allocated sparsity, and a job
recording them with their mean at the target."""

import copy

import pytest
import torch
from conftest import TINY, compose

from copal_exp.errors import ConfigError
from copal_exp.models.anatomy import decoder_layers, find_linears
from copal_exp.models.loading import build_tiny_llama
from copal_exp.protocol.job import run_job
from copal_exp.protocol.settings import validate
from copal_exp.pruning.allocation import OWL, Allocation, outlier_ratio, owl_pruned_per_group, owl_sparsities
from copal_exp.pruning.capture import capture_layer_inputs
from copal_exp.pruning.engine import prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method

SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
         "context": 128, "init_seed": 3}


def test_owl_maths_by_hand():
    # normalised to [0, 2λ] = [0, .08, .16], centred: [-.08, 0, .08]; density 0.5 + that
    assert owl_sparsities([1.0, 2.0, 3.0], 0.5, 0.08) == pytest.approx([0.58, 0.5, 0.42])
    assert sum(owl_sparsities([4.0, 0.5, 7.0, 1.0], 0.7, 0.08)) / 4 == pytest.approx(0.7)
    # N:M: normalised to [0, λ] = [0, 1, 2], centred [-1, 0, 1]: pruned per 4 = 2 - that
    assert owl_pruned_per_group([1.0, 2.0, 3.0], Pattern.parse("nm", n=2, m=4), 2.0) == [3, 2, 1]
    assert owl_pruned_per_group([1.0, 1.1, 1.2], Pattern.parse("nm", n=2, m=4), 0.5) == [2, 2, 2]
    scores = [torch.tensor([1.0, 1.0, 1.0, 9.0]), torch.tensor([1.0, 1.0])]  # mean 14/6; 9 > 2 × mean
    assert outlier_ratio(scores, 2.0) == pytest.approx(100 / 6)
    owl = OWL(m=5.0, lam=0.08)
    patterns = owl.patterns([1.0, float("nan"), 3.0], Pattern.parse("unstructured", ratio=0.5))
    assert [p.ratio for p in patterns] == pytest.approx([0.58, 0.5, 0.42])  # a layer with nothing pruned: target
    assert Allocation().patterns([1.0, 2.0], Pattern.parse("nm", n=2, m=4)) == [Pattern.parse("nm", n=2, m=4)] * 2


@torch.no_grad()
def reference_ratios(model, segments, m, new, add, score):
    """Each decoder layer's outlier ratio of ``score(index, sub, lin, stat)`` over its linears, ``stat`` =
    ``new(lin)`` folded by ``add(stat, x, y)`` over the inputs and outputs a full-model forward gives it."""
    stats, handles = {}, []
    for index, layer in enumerate(decoder_layers(model)):
        for sub, lin in find_linears(layer).items():
            stats[(index, sub)] = new(lin)

            def hook(module, args, output, key=(index, sub)):
                x, y = args[0].reshape(-1, args[0].shape[-1]), output.reshape(-1, output.shape[-1])
                stats[key] = add(stats[key], x, y)
            handles.append(lin.register_forward_hook(hook))
    for row in segments:
        model(row.unsqueeze(0), use_cache=False)
    for h in handles:
        h.remove()
    ratios = []
    for index, layer in enumerate(decoder_layers(model)):
        flat = torch.cat([score(index, sub, lin, stats[(index, sub)]).reshape(-1)
                          for sub, lin in find_linears(layer).items()])
        ratios.append(float((flat > flat.mean() * m).float().mean()) * 100)
    return ratios


def reference_outlier_ratios(model, segments, m):
    """Each decoder layer's outlier ratio of Wanda's |W| · ‖X‖₂ from the input norms of a full-model forward."""
    return reference_ratios(model, segments, m, lambda lin: torch.zeros(lin.in_features),
                            lambda norms, x, y: norms + x.pow(2).sum(0),
                            lambda index, sub, lin, norms: lin.weight.abs() * norms.sqrt())


@pytest.mark.parametrize("pattern", [Pattern.parse("unstructured", ratio=0.6), Pattern.parse("nm", n=2, m=4)])
def test_the_engine_prunes_each_layer_at_its_owl_sparsity(pattern):
    from copal_exp.io.offload import Offloader
    from copal_exp.pruning.allocation import layer_outlier_ratios

    model, _ = build_tiny_llama(SHAPE)
    segments = torch.randint(0, 256, (3, 24))
    m = 2.0
    layers = decoder_layers(model)
    inputs = capture_layer_inputs(model, segments)
    ours = layer_outlier_ratios(layers, [find_linears(layer) for layer in layers], inputs, "cpu", m, Offloader("cpu"))
    reference = reference_outlier_ratios(copy.deepcopy(model), segments, m)
    assert ours == pytest.approx(reference, rel=1e-5, abs=1e-9) and len(set(ours)) > 1
    lam = 0.08 if pattern.kind == "unstructured" else 2.0
    allocation = OWL(m=m, lam=lam)
    expected = allocation.patterns(reference, pattern)
    masks, _ = prune_model(model, segments, build_method("wanda", pattern), progress=False, allocation=allocation)
    for index, layer in enumerate(layers):
        for sub in find_linears(layer):
            keep = masks[f"model.layers.{index}.{sub}"]
            if pattern.kind == "nm":
                kept = keep.reshape(keep.shape[0], -1, pattern.m).sum(-1)
                assert (kept == expected[index].n).all()
            else:
                assert ((~keep).sum(1) == int(keep.shape[1] * expected[index].ratio + 1e-9)).all()
    if pattern.kind == "unstructured":
        assert sum(p.ratio for p in expected) / len(expected) == pytest.approx(0.6)
        assert max(p.ratio for p in expected) - min(p.ratio for p in expected) == pytest.approx(0.16)


def test_owl_magnitude_uses_the_calibration_data_for_its_allocation():
    model, _ = build_tiny_llama(SHAPE)
    segments = torch.randint(0, 256, (2, 16))
    masks, _ = prune_model(model, segments, build_method("magnitude", Pattern.parse("unstructured", ratio=0.5)),
                           progress=False, allocation=OWL(m=2.0, lam=0.08))
    per_layer = {i: 1 - sum(int(masks[n].sum()) for n in masks if f".{i}." in n) /
                 sum(masks[n].numel() for n in masks if f".{i}." in n) for i in range(4)}
    assert len({round(v, 3) for v in per_layer.values()}) > 1
    assert sum(per_layer.values()) / 4 == pytest.approx(0.5, abs=0.01)


def test_a_job_records_the_allocation_per_step_with_its_mean_at_the_target(tmp_path, data_root):
    args = [*TINY, f"data.root={data_root}", "method=wanda", "order=given", "sparsity.allocation=owl",
            "sparsity.owl_m=2"]
    results = run_job(compose(args), tmp_path)
    assert results["config"]["sparsity"]["owl_lambda"] == 0.08  # the default, recorded
    assert results["sparsity"]["allocation"] == {"kind": "owl", "m": 2.0, "lambda": 0.08, "statistic": "wanda"}
    steps = results["permutations"][0]["layer_sparsity"]
    assert len(steps) == 3
    for per_layer in steps:
        values = list(per_layer.values())
        assert len(values) == 2 and values[0] != values[1]
        assert sum(values) / len(values) == pytest.approx(0.5, abs=1 / 64)
    assert results["sparsity"]["overall"] == pytest.approx(0.5, abs=1 / 64)
    from copal_exp.reporting.runs import run_label
    from copal_exp.reporting.tables import table2

    assert run_label(results) == "wanda (global) + owl"
    uniform = run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given"]), tmp_path / "uniform")
    frame = table2([results, uniform]).set_index("method")
    import pandas as pd

    assert pd.isna(frame.loc["wanda (global) + owl", "paper LLaMA-7B a_ppl"])  # the paper never ran OWL
    assert not pd.isna(frame.loc["wanda (global)", "paper LLaMA-7B a_ppl"])


def test_owl_options_are_checked_before_anything_loads(data_root):
    def refused(extra):
        with pytest.raises(ConfigError) as info:
            validate(compose([*TINY, f"data.root={data_root}", "method=wanda", *extra]))
        return str(info.value)

    assert "sparsity.allocation=owl only" in refused(["sparsity.owl_m=3"])
    assert "sparsity.owl_lambda" in refused(["sparsity.allocation=owl", "sparsity.ratio=0.9"])
    assert "sparsity.owl_m" in refused(["sparsity.allocation=owl", "sparsity.owl_m=-1"])
    settings = validate(compose([*TINY, f"data.root={data_root}", "method=sparsegpt", "sparsity=2:4",
                                 "sparsity.allocation=owl"]))
    assert settings.allocation == OWL(m=6.0, lam=2.0)
    message = refused(["sparsity.allocation=owl", "sparsity.owl_statistic=accumulated"])
    assert "sparsity.owl_statistic=accumulated" in message and "method=copal" in message and "wanda" in message
    assert "allowed values" in refused(["sparsity.allocation=owl", "sparsity.owl_statistic=hessian"])
    assert "sparsity.allocation=owl only" in refused(["sparsity.owl_statistic=wanda"])
    settings = validate(compose([*TINY, f"data.root={data_root}", "method=copal", "sparsity.allocation=owl",
                                 "sparsity.owl_statistic=accumulated"]))
    assert settings.allocation == OWL(m=5.0, lam=0.08, statistic="accumulated")


@pytest.mark.parametrize("method,statistic", [("copal", "accumulated"), ("wanda", "wanda"), ("sparsegpt", "wanda"),
                                              ("dsnot", "wanda")])
def test_the_owl_statistic_defaults_to_the_methods_memory_when_it_carries_one(data_root, method, statistic):
    """Left null, OWL counts outliers in COPAL's accumulated score (measured better) and in the official Wanda
    scores for methods without memory; the resolved value is what the job records. Given, it is kept."""
    settings = validate(compose([*TINY, f"data.root={data_root}", f"method={method}", "sparsity.allocation=owl"]))
    assert settings.allocation.statistic == statistic
    assert settings.resolved["sparsity"]["owl_statistic"] == statistic
    if method == "copal":
        given = validate(compose([*TINY, f"data.root={data_root}", "method=copal", "sparsity.allocation=owl",
                                  "sparsity.owl_statistic=wanda"]))
        assert given.allocation.statistic == "wanda"


def reference_copal_outlier_ratios(model, segments, m, memory):
    """Each decoder layer's outlier ratio of COPAL's score |W ⊙ (G_before + G)| with G = Σ_tokens |2 ΔY Xᵀ|,
    ΔY = 2Y, taken directly from the inputs and outputs a full-model forward gives each linear."""
    return reference_ratios(model, segments, m, lambda lin: torch.zeros_like(lin.weight),
                            lambda g, x, y: g + 4 * torch.einsum("to,ti->oi", y.abs(), x.abs()),
                            lambda index, sub, lin, g: (lin.weight * (g + memory.get(f"model.layers.{index}.{sub}", 0))).abs())


def test_owl_accumulated_counts_outliers_in_copals_score_over_every_step_so_far():
    from copal_exp.pruning.methods.registry import Memory

    model, _ = build_tiny_llama(SHAPE)
    segments = torch.randint(0, 256, (3, 24))
    m, pattern = 2.0, Pattern.parse("unstructured", ratio=0.5)
    copal = build_method("copal", pattern)
    linears = {f"model.layers.{i}.{sub}": lin for i, layer in enumerate(decoder_layers(model))
               for sub, lin in find_linears(layer).items()}
    first = reference_copal_outlier_ratios(copy.deepcopy(model), segments, m, {})
    # memory from an earlier step: large on layer 3, so its scores follow that memory, not this step's data
    generator = torch.Generator().manual_seed(0)
    before = {name: torch.rand(lin.weight.shape, generator=generator) * (1e4 if ".3." in name else 1.0)
              for name, lin in linears.items()}
    later = reference_copal_outlier_ratios(copy.deepcopy(model), segments, m, before)
    wanda = reference_outlier_ratios(copy.deepcopy(model), segments, m)
    assert len({tuple(first), tuple(later), tuple(wanda)}) == 3
    for memory, expected in ((None, first), (Memory(tensors=before, steps=1), later)):
        allocation = OWL(m=m, lam=0.08, statistic="accumulated")
        pruned = copy.deepcopy(model)
        masks, carried = prune_model(pruned, segments, copal, progress=False, allocation=allocation, memory=memory)
        target = allocation.patterns(expected, pattern)
        for index in range(4):
            layer_masks = [masks[n] for n in masks if f".{index}." in n]
            sparsity = 1 - sum(int(k.sum()) for k in layer_masks) / sum(k.numel() for k in layer_masks)
            assert sparsity == pytest.approx(target[index].ratio, abs=1 / 64)
        assert carried.steps == (1 if memory is None else 2)
    with pytest.raises(ValueError, match="carries memory"):
        prune_model(copy.deepcopy(model), segments, build_method("wanda", pattern), progress=False,
                    allocation=OWL(m=m, lam=0.08, statistic="accumulated"))


@pytest.mark.parametrize("method", ["copal", "dsnot", "ria"])
def test_every_method_runs_the_continual_protocol_with_owl(tmp_path, data_root, method):
    """Each step's allocation comes from that step's calibration data (COPAL's by default from its accumulated
    score, which grows with every step), so it changes from step to step."""
    args = [*TINY, f"data.root={data_root}", f"method={method}", "order=given", "sparsity.allocation=owl",
            "sparsity.owl_m=2", "data.nsamples=3", "model.num_layers=4"]
    results = run_job(compose(args), tmp_path)
    steps = results["permutations"][0]["layer_sparsity"]
    assert len(steps) == 3 and all(len(set(step.values())) > 2 for step in steps)
    assert len({tuple(step.values()) for step in steps}) > 1  # one allocation per step's calibration data
    assert all(row == row for row in results["permutations"][0]["ppl_matrix"][-1])


def test_copal_with_the_accumulated_owl_statistic_runs_the_protocol(tmp_path, data_root):
    args = [*TINY, f"data.root={data_root}", "method=copal", "order=given", "sparsity.allocation=owl",
            "sparsity.owl_m=2", "data.nsamples=3", "model.num_layers=4"]
    data = run_job(compose([*args, "sparsity.owl_statistic=wanda"]), tmp_path / "data")
    accumulated = run_job(compose(args), tmp_path / "accumulated")  # COPAL's default
    assert accumulated["sparsity"]["allocation"]["statistic"] == "accumulated"
    assert accumulated["config"]["sparsity"]["owl_statistic"] == "accumulated"
    from copal_exp.reporting.runs import run_label

    assert run_label(accumulated) == "copal (token, row) + owl (accumulated)"
    assert run_label(data) == "copal (token, row) + owl"
    steps = accumulated["permutations"][0]["layer_sparsity"]
    assert len(steps) == 3 and all(len(set(step.values())) > 2 for step in steps)
    for step in steps:
        assert sum(step.values()) / len(step) == pytest.approx(0.5, abs=1 / 64)  # whole weights per row
    assert steps != data["permutations"][0]["layer_sparsity"]
