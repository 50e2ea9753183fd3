"""RIA and DSnoT against independent, direct computations on small random tensors: RIA's score by loops over
rows and columns; DSnoT's prune-and-grow cycles by a per-row Python walk of the official algorithm."""

import math

import pytest
import torch

from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method
from copal_exp.pruning.methods.dsnot import accumulate_dsnot, block_of, dsnot_nm, dsnot_unstructured, sign_order
from copal_exp.pruning.methods.ria import ria_score

UNSTRUCTURED = Pattern.parse("unstructured", ratio=0.5)


# ---------------------------------------------------------------- RIA
def test_ria_score_by_loops():
    weight, x = torch.randn(5, 7), torch.randn(3, 4, 7)
    sq = x.reshape(-1, 7).pow(2).sum(0)
    ref = torch.zeros(5, 7, dtype=torch.float64)
    w = weight.double().abs()
    for i in range(5):
        for j in range(7):
            column, row = sum(w[k, j] for k in range(5)), sum(w[i, k] for k in range(7))
            ref[i, j] = (w[i, j] / column + w[i, j] / row) * math.sqrt(sq[j].item()) ** 0.5
    torch.testing.assert_close(ria_score(weight, sq, 0.5).double(), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("group", ["layer", "row"])
def test_ria_prunes_the_lowest_scores_of_its_group(group):
    weight, x = torch.randn(8, 16), torch.randn(2, 5, 16)
    method = build_method("ria", UNSTRUCTURED, group=group)
    stats = method.accumulate(method.new_statistics(weight), x, x @ weight.t(), None)
    new, keep, _ = method.prune("model.layers.0.mlp.up_proj", weight, stats, None)
    score = ria_score(weight, x.reshape(-1, 16).pow(2).sum(0), 0.5)
    if group == "layer":
        assert int((~keep).sum()) == 64 and score[~keep].max() <= score[keep].min()
    else:
        assert ((~keep).sum(1) == 8).all()
        assert all(score[i][~keep[i]].max() <= score[i][keep[i]].min() for i in range(8))
    assert torch.equal(new, weight * keep)


def test_ria_all_zero_column_scores_zero_not_nan():
    weight = torch.randn(4, 4)
    weight[:, 1] = 0
    assert torch.isfinite(ria_score(weight, torch.ones(4))).all()


def test_ria_options_are_checked():
    with pytest.raises(ValueError, match="method.group"):
        build_method("ria", UNSTRUCTURED, group="column")
    with pytest.raises(ValueError, match="method.a"):
        build_method("ria", UNSTRUCTURED, a=-1)


# ---------------------------------------------------------------- DSnoT
def reference_unstructured(c, base, wanda, var, ratio, cycles, threshold, power):
    """In plain Python, as the official ``prune_DSnoT`` walks it (unstructured, no sign rule): every row takes
    one step per cycle, until no row is active any more."""
    rows, d = len(c), len(c[0])
    k = int(d * ratio)
    pruned, error, grow_order, prune_order, ptr, active = [], [], [], [], [], []
    for i in range(rows):
        order = sorted(range(d), key=lambda j: (base[i][j], j))
        mask = [j in set(order[:k]) for j in range(d)]
        pruned.append(mask)
        error.append(sum(c[i][j] for j in range(d) if mask[j]))
        grow = [(c[i][j] / var[j] ** power if power else c[i][j]) if mask[j] else 0.0 for j in range(d)]
        grow_order.append(sorted(range(d), key=lambda j: (grow[j], j)))
        kept = sorted(order[k:], key=lambda j: (wanda[i][j], j))
        prune_order.append([j for j in kept if c[i][j] < 0] + [j for j in kept if c[i][j] > 0][::-1])
        ptr.append([0, d - 1, 0, len(kept) - 1])
        active.append(True)
    for _ in range(cycles):
        if not any(active):
            break
        for i in range(rows):
            front, back, pfront, pback = ptr[i]
            if error[i] > 0:
                g, back = grow_order[i][back], back - 1
            else:
                g, front = grow_order[i][front], front + 1
            if error[i] < 0:
                p, pback = prune_order[i][pback], pback - 1
            else:
                p, pfront = prune_order[i][pfront], pfront + 1
            ptr[i] = [front, back, pfront, pback]
            active[i] = active[i] and abs(error[i]) > threshold
            pruned[i][p], pruned[i][g] = active[i], not active[i]
            if active[i]:
                error[i] += c[i][p] - c[i][g]
    return torch.tensor(pruned)


def reference_nm(c, base, var, n_pruned, m, cycles, threshold, power):
    """The same walk for N:M: a grown weight is paid for by the lowest-scored kept weight of its group."""
    rows, d = len(c), len(c[0])
    pruned, error, first, grow_order, score, ptr, active = [], [], [], [], [], [], []
    for i in range(rows):
        mask = [False] * d
        for start in range(0, d, m):
            for j in sorted(range(start, start + m), key=lambda j: (base[i][j], j))[:n_pruned]:
                mask[j] = True
        pruned.append(mask)
        e = sum(c[i][j] for j in range(d) if mask[j])
        error.append(e)
        first.append(math.copysign(1, e) if e else 0)
        grow = [(c[i][j] / var[j] ** power) if mask[j] else 0.0 for j in range(d)]
        grow_order.append(sorted(range(d), key=lambda j: (grow[j], j)))
        score.append([math.inf if mask[j] else base[i][j] for j in range(d)])
        ptr.append([0, d - 1])
        active.append(True)
    for _ in range(cycles):
        if not any(active):
            break
        for i in range(rows):
            front, back = ptr[i]
            if error[i] > 0:
                g, back = grow_order[i][back], back - 1
            else:
                g, front = grow_order[i][front], front + 1
            ptr[i] = [front, back]
            start = g - g % m
            p = min(range(start, start + m), key=lambda j: (score[i][j], j))
            after = error[i] + c[i][p] - c[i][g]
            sign = math.copysign(1, after) if after else 0
            active[i] = active[i] and sign == first[i] and abs(error[i]) > threshold
            score[i][p] = math.inf
            pruned[i][p], pruned[i][g] = active[i], not active[i]
            if active[i]:
                error[i] = after
    return torch.tensor(pruned)


def dsnot_inputs(rows=6, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, d, generator=g, dtype=torch.float64)
    x = torch.randn(3, 20, d, generator=g, dtype=torch.float64) + 0.3
    mean_sum = x.sum(1).mean(0)
    var = x.var(1, unbiased=False).mean(0)
    wanda = weight.abs() * x.pow(2).sum((0, 1)).div(3).sqrt()
    return weight, weight * mean_sum, wanda, var


@pytest.mark.parametrize("ratio,threshold", [(0.5, 0.1), (0.7, 0.0), (0.3, 1.0)])
def test_dsnot_unstructured_is_the_official_walk(ratio, threshold):
    weight, contribution, wanda, var = dsnot_inputs()
    ours = dsnot_unstructured(contribution, wanda, wanda, var, ratio, cycles=12, threshold=threshold, power=1.0)
    ref = reference_unstructured(contribution.tolist(), wanda.tolist(), wanda.tolist(), var.tolist(), ratio, 12,
                                 threshold, 1.0)
    assert torch.equal(ours, ref)
    assert (ours.sum(1) == int(64 * ratio)).all()  # every swap is one weight out for one in
    base = dsnot_unstructured(contribution, wanda, wanda, var, ratio, cycles=0)
    assert not torch.equal(ours, base) or threshold >= 1.0  # the cycles did change the mask


def test_dsnot_cycles_shrink_the_reconstruction_error():
    """On a layer wide enough for its 50 cycles (each swap small against the row's error), as in an LLM."""
    weight, contribution, wanda, var = dsnot_inputs(rows=32, d=256)
    base = dsnot_unstructured(contribution, wanda, wanda, var, 0.5, cycles=0)
    refined = dsnot_unstructured(contribution, wanda, wanda, var, 0.5, cycles=50, threshold=0.1)
    before, after = (contribution * base).sum(1).abs(), (contribution * refined).sum(1).abs()
    assert after.mean() < before.mean() / 3 and (after <= before).float().mean() > 0.9
    nm_before = (contribution * dsnot_nm(contribution, wanda, var, 2, 4, cycles=0)).sum(1).abs()
    nm_after = (contribution * dsnot_nm(contribution, wanda, var, 2, 4, cycles=50)).sum(1).abs()
    assert nm_after.mean() < nm_before.mean() / 2
    # a layer too narrow for its cycles: the walk stops at the end of its candidates instead of indexing past it
    _, c, w, v = dsnot_inputs(rows=4, d=16)
    assert (dsnot_unstructured(c, w, w, v, 0.5, cycles=50, threshold=0.0).sum(1) == 8).all()


@pytest.mark.parametrize("n_pruned,m", [(2, 4), (4, 8)])
def test_dsnot_nm_is_the_official_walk_and_keeps_n_of_m(n_pruned, m):
    weight, contribution, wanda, var = dsnot_inputs()
    ours = dsnot_nm(contribution, wanda, var, n_pruned, m, cycles=12, threshold=0.05, power=1.0)
    ref = reference_nm(contribution.tolist(), wanda.tolist(), var.tolist(), n_pruned, m, 12, 0.05, 1.0)
    assert torch.equal(ours, ref)
    assert (ours.reshape(6, -1, m).sum(-1) == n_pruned).all()


def test_sign_order_puts_negatives_first_then_positives_reversed():
    values = torch.tensor([[1.0, -2.0, 3.0], [-2.0, 2.0, -4.0], [5.0, 6.0, -7.0], [-6.0, -7.0, -4.0]])
    assert sign_order(values).tolist() == [[1, 2, 0], [0, 2, 1], [2, 1, 0], [0, 1, 2]]


def test_dsnot_statistics_are_the_official_wrappers():
    x = torch.randn(3, 10, 5)
    stats = accumulate_dsnot(build_method("dsnot", UNSTRUCTURED).new_statistics(torch.zeros(2, 5)), x[:2])
    stats = accumulate_dsnot(stats, x[2:])
    torch.testing.assert_close(stats["sum"] / stats["segments"], x.sum(1).mean(0))
    torch.testing.assert_close(stats["sq"] / stats["segments"], x.pow(2).sum(1).mean(0))
    torch.testing.assert_close(stats["var_tokens"] / stats["tokens"], x.var(1, unbiased=False).mean(0))


def test_dsnot_method_refines_attention_and_skips_mlp_by_default():
    assert block_of("model.layers.3.mlp.up_proj") == ("mlp", "up_proj")
    method = build_method("dsnot", UNSTRUCTURED, update_threshold=0.0)
    weight, x = torch.randn(8, 32), torch.randn(4, 16, 32) + 0.5
    stats = method.accumulate(method.new_statistics(weight), x, None, None)
    _, attn, _ = method.prune("model.layers.0.self_attn.q_proj", weight, stats, None)
    _, mlp, _ = method.prune("model.layers.0.mlp.up_proj", weight, stats, None)
    wanda = build_method("wanda", UNSTRUCTURED)
    _, base, _ = wanda.prune("x", weight, wanda.accumulate(wanda.new_statistics(weight), x, None, None), None)
    assert torch.equal(mlp, base) and not torch.equal(attn, base)
    assert (attn.sum(1) == 16).all()
    with pytest.raises(ValueError, match="method.base"):
        build_method("dsnot", UNSTRUCTURED, base="ria")
