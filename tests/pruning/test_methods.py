"""Every method against an independent, direct computation on small random tensors."""

import logging
import math

import pytest
import torch

from copal_exp.pruning.masks import Pattern, prune_count, select_mask
from copal_exp.pruning.methods import build_method
from copal_exp.pruning.methods.copal import accumulate_sensitivity
from copal_exp.pruning.methods.sparsegpt import sparsify_weight
from copal_exp.pruning.methods.wanda import wanda_score

UNSTRUCTURED = Pattern.parse("unstructured", ratio=0.5)


# ---------------------------------------------------------------- COPAL
def autograd_sensitivity(weight, segments, epsilon, granularity):
    """Σ_j |∂‖ΔY_j‖²/∂ΔW| by autograd, one backward pass per segment (or per token)."""
    total = torch.zeros_like(weight, dtype=torch.float64)
    w = weight.double()
    for x in segments.double():
        units = [x] if granularity == "segment" else [x[t : t + 1] for t in range(x.shape[0])]
        for xj in units:
            delta_w = (epsilon * w).clone().requires_grad_(True)
            delta_y = xj @ delta_w.t() + (epsilon * xj) @ w.t()  # ΔY = ΔW X + W ΔX
            (grad,) = torch.autograd.grad(delta_y.pow(2).sum(), delta_w)
            total += grad.abs()
    return total


@pytest.mark.parametrize("granularity", ["segment", "token"])
def test_copal_sensitivity_matches_autograd(granularity):
    weight = torch.randn(6, 5)
    segments = torch.randn(3, 7, 5)
    outputs = segments @ weight.t()
    g = accumulate_sensitivity(torch.zeros(6, 5), segments, outputs, granularity, epsilon=0.3)
    ref = autograd_sensitivity(weight, segments, 0.3, granularity)
    torch.testing.assert_close(g.double(), ref, rtol=1e-5, atol=1e-6)


def test_copal_segment_and_token_differ():
    weight, segments = torch.randn(4, 3), torch.randn(2, 9, 3)
    outputs = segments @ weight.t()
    seg = accumulate_sensitivity(torch.zeros(4, 3), segments, outputs, "segment")
    tok = accumulate_sensitivity(torch.zeros(4, 3), segments, outputs, "token")
    assert (tok >= seg - 1e-5).all() and not torch.allclose(tok, seg)  # triangle inequality, strict here


def test_copal_accumulates_over_steps_and_scores_dense_weights():
    dense = torch.randn(8, 16)
    method = build_method("copal", UNSTRUCTURED, granularity="segment", group="row")
    steps = [torch.randn(2, 5, 16), torch.randn(2, 5, 16)]
    expected_g = torch.zeros(8, 16, dtype=torch.float64)
    memory = None
    for x in steps:
        stats = method.accumulate(method.new_statistics(dense), x, x @ dense.t(), None)
        new_weight, keep, memory = method.prune("layer", dense, stats, memory)
        expected_g += autograd_sensitivity(dense, x, 1.0, "segment")
        expected_keep = select_mask((dense.double() * expected_g).abs(), UNSTRUCTURED, "row")
        assert torch.equal(keep, expected_keep)
        torch.testing.assert_close(new_weight, dense * keep)
    torch.testing.assert_close(memory.double(), expected_g, rtol=1e-5, atol=1e-5)


def test_copal_ignores_bias():
    weight, bias = torch.randn(4, 3), torch.randn(4)
    x = torch.randn(1, 6, 3)
    method = build_method("copal", UNSTRUCTURED)
    with_bias = method.accumulate(method.new_statistics(weight), x, x @ weight.t() + bias, bias)
    without = accumulate_sensitivity(torch.zeros(4, 3), x, x @ weight.t())
    torch.testing.assert_close(with_bias, without)


def test_copal_rejects_unknown_choices():
    with pytest.raises(ValueError, match="method.granularity='batch'"):
        build_method("copal", UNSTRUCTURED, granularity="batch")
    with pytest.raises(ValueError, match="method.group='column'"):
        build_method("copal", UNSTRUCTURED, group="column")


# ---------------------------------------------------------------- Wanda
def test_wanda_score_by_hand():
    weight = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 1.0, 0.1, 2.0]])
    tokens = torch.tensor([[1.0, 0.0, 2.0, 1.0], [2.0, 1.0, 0.0, 1.0], [2.0, 0.0, 1.0, 1.0]])
    method = build_method("wanda", UNSTRUCTURED)
    stats = method.accumulate(method.new_statistics(weight), tokens.reshape(1, 3, 4), None, None)
    norms = [math.sqrt(1 + 4 + 4), math.sqrt(0 + 1 + 0), math.sqrt(4 + 0 + 1), math.sqrt(3)]
    by_hand = torch.tensor([[abs(weight[i, k].item()) * norms[k] for k in range(4)] for i in range(2)])
    torch.testing.assert_close(wanda_score(weight, stats), by_hand)
    _, keep, _ = method.prune("l", weight, stats, None)
    # row 0 scores 3, 2, 6.708, 0.866 → prune columns 3 and 1; row 1: 12, 1, 0.2236, 3.464 → prune 2 and 1
    assert keep.tolist() == [[True, False, True, False], [True, False, False, True]]


def test_magnitude_compares_whole_matrix():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    new, keep, _ = build_method("magnitude", UNSTRUCTURED).prune("l", weight, None, None)
    assert keep.tolist() == [[False, False], [True, True]]
    assert new.tolist() == [[0.0, 0.0], [3.0, 4.0]]


# ---------------------------------------------------------------- SparseGPT
def explicit_sparsegpt(weight, hessian, pattern, blocksize, percdamp):
    """SparseGPT by its definition: at column i, the OBS update over the remaining columns F = {i, …}
    uses an explicitly inverted H_FF (float64); no Cholesky, no lazy batching."""
    w, h = weight.double().clone(), hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += percdamp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    rows, cols = w.shape
    inv_diag = lambda k: torch.linalg.inv(h[k:, k:])[0, 0]  # noqa: E731  [H_F⁻¹]_kk for F = {k, …}
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for i in range(cols):
        if pattern.kind == "unstructured" and i % blocksize == 0:
            block = range(i, min(i + blocksize, cols))
            score = (w[:, block] ** 2 / torch.stack([inv_diag(k) for k in block])).reshape(-1)
            chosen = torch.sort(score, stable=True).indices[: prune_count(score.numel(), pattern.ratio)]
            flat = torch.zeros(score.numel(), dtype=torch.bool)
            flat[chosen] = True
            pruned[:, block] = flat.reshape(rows, -1)
        if pattern.kind == "nm" and i % pattern.m == 0:
            group = range(i, i + pattern.m)
            score = w[:, group] ** 2 / torch.stack([inv_diag(k) for k in group])
            keep = torch.sort(score, dim=1, stable=True, descending=True).indices[:, : pattern.n]
            g = torch.ones(rows, pattern.m, dtype=torch.bool).scatter_(1, keep, False)
            pruned[:, group] = g
        hinv = torch.linalg.inv(h[i:, i:])
        for r in range(rows):
            if pruned[r, i]:
                w[r, i:] -= w[r, i] * hinv[0, :] / hinv[0, 0]
    w[pruned] = 0.0
    return w, ~pruned


@pytest.mark.parametrize("pattern", [UNSTRUCTURED, Pattern.parse("nm", n=2, m=4), Pattern.parse("nm", n=4, m=8)],
                         ids=["unstructured", "2:4", "4:8"])
def test_sparsegpt_matches_explicit_solve(pattern):
    weight = torch.randn(6, 24)
    x = torch.randn(3, 40, 24)
    x[..., 5] = 0.0  # a dead input
    hessian = 2.0 / 3 * torch.einsum("bti,btj->ij", x, x)
    new, keep = sparsify_weight(weight, hessian, pattern, blocksize=8, percdamp=0.01)
    ref_w, ref_keep = explicit_sparsegpt(weight, hessian, pattern, 8, 0.01)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(new.double(), ref_w, rtol=1e-4, atol=1e-4)
    assert (new[:, 5] == 0).all()
    if pattern.kind == "nm":
        assert (keep.reshape(6, -1, pattern.m).sum(-1) == pattern.n).all()


@pytest.mark.parametrize("seed", range(5))
def test_sparsegpt_single_column_update_is_least_squares(seed):
    """Pruning the first column while every other column is still free is the exact least-squares
    compensation: the kept weights minimise ‖X w_rest − X w‖² (an explicit solve)."""
    torch.manual_seed(seed)
    weight = torch.randn(1, 6).abs() + 1.0
    weight[0, 0] = 1e-3  # the lowest w²/U_kk² by far: column 0 is the one pruned, before any other
    x = torch.randn(50, 6, dtype=torch.float64).float()
    hessian = 2 * x.t() @ x
    pattern = Pattern.parse("unstructured", ratio=1 / 6 + 1e-3)
    new, keep = sparsify_weight(weight, hessian, pattern, blocksize=6, percdamp=0.0)
    assert (~keep[0]).nonzero()[:, 0].tolist() == [0]
    rest = list(range(1, 6))
    target = (x @ weight[0]).double()
    solution = torch.linalg.lstsq(x[:, rest].double(), target.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(new[0, rest].double(), solution, rtol=1e-4, atol=1e-5)
    assert new[0, 0] == 0


def test_sparsegpt_accumulated_hessian():
    method = build_method("sparsegpt", UNSTRUCTURED)
    weight = torch.randn(4, 6)
    stats = method.new_statistics(weight)
    segments = torch.randn(5, 7, 6)
    for s in segments:
        stats = method.accumulate(stats, s.unsqueeze(0), None, None)
    expected = 2.0 / 5 * sum(s.t() @ s for s in segments)
    torch.testing.assert_close(stats["hessian"] * 2.0 / stats["segments"], expected, rtol=1e-5, atol=1e-5)


def test_sparsegpt_cholesky_fallback_logs_and_recovers(caplog):
    weight = torch.randn(3, 8)
    x = torch.randn(2, 8)
    hessian = x.t() @ x + 1e-3 * torch.diag(torch.arange(1.0, 9.0))  # nonzero diagonal, nearly singular
    hessian[0, 1] = hessian[1, 0] = 10.0  # make it indefinite
    with caplog.at_level(logging.WARNING):
        new, keep = sparsify_weight(weight, hessian, UNSTRUCTURED, blocksize=8, percdamp=0.0)
    assert "Cholesky failed" in caplog.text
    assert torch.isfinite(new).all() and (~keep).sum() == 12


def test_sparsegpt_runs_in_full_fp32_and_restores_the_precision_setting(monkeypatch):
    """TF32 off through torch's current ``fp32_precision`` API during the OBS update, restored after
    (also when the update fails); the legacy ``allow_tf32`` flags are left alone."""
    import copal_exp.pruning.methods.sparsegpt as sg

    matmul = torch.backends.cuda.matmul
    seen = []
    real = sg.inverse_cholesky_upper
    monkeypatch.setattr(sg, "inverse_cholesky_upper", lambda *a, **k: (seen.append(matmul.fp32_precision), real(*a, **k))[1])
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        x = torch.randn(32, 8)
        sparsify_weight(torch.randn(4, 8), 2 * x.t() @ x / 32, Pattern.parse("unstructured", 0.5))
        assert seen == ["ieee"] and matmul.fp32_precision == "tf32"
        monkeypatch.setattr(sg, "prepare_hessian", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            sparsify_weight(torch.randn(4, 8), torch.eye(8), Pattern.parse("unstructured", 0.5))
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = before
