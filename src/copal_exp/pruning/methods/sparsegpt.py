"""SparseGPT (Frantar & Alistarh 2023): OBS-style mask selection with error compensation (docs/design.md, "Methods").

``accumulate_hessian`` and ``sparsify_weight`` are pure functions on plain tensors. All arithmetic
is fp32 with TF32 disabled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from copal_exp.config.fields import integer, number
from copal_exp.pruning.masks import Pattern, nm_keep_group, unstructured_mask
from copal_exp.pruning.methods.registry import PruningMethod, register

log = logging.getLogger(__name__)


def accumulate_hessian(hessian_sum: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Add ``Σ_j X_j X_jᵀ`` for a batch of segments ``inputs`` (``[B, L, d_in]``), in fp32."""
    x = inputs.reshape(-1, inputs.shape[-1]).float()
    return hessian_sum.addmm_(x.t(), x)


@contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """float32 matmuls in full IEEE precision for the block (TF32 off, as the official SparseGPT), set
    through torch's ``fp32_precision`` API and restored afterwards. The legacy ``allow_tf32`` flags are
    not touched: torch refuses them once the new API is in use."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def prepare_hessian(hessian: torch.Tensor, weight: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Dead inputs get ``H_kk = 1`` and a zero weight column; add ``percdamp · mean(diag H)``."""
    hessian = hessian.clone()
    weight = weight.clone()
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(hessian)).item()
    return hessian, weight, damp


def inverse_cholesky_upper(hessian: torch.Tensor, damp: float, retries: int = 10, name: str = "") -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp·I)⁻¹``; on failure raise the dampening ×10 and retry."""
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for _attempt in range(retries + 1):
        chol, info = torch.linalg.cholesky_ex(hessian + damp * eye)
        if info.item() == 0:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if info.item() == 0:
                return upper
        new_damp = damp * 10 if damp > 0 else 1e-6 * max(torch.diag(hessian).abs().mean().item(), 1.0)
        log.warning("sparsegpt %s: Cholesky failed with dampening %.3g; retrying with %.3g", name, damp, new_damp)
        damp = new_damp
    raise RuntimeError(f"sparsegpt {name}: Cholesky factorisation failed even with dampening {damp:.3g}")


def sparsify_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (``d_out × d_in``) given ``H = (2/n) Σ X Xᵀ``; returns ``(new_weight, keep_mask)``.

    Unstructured: each block of ``blocksize`` columns prunes ``floor(ratio · rows · blocksize)``
    weights of lowest ``w² / U_kk²`` (stable order). N:M: each group of M columns keeps its N highest
    ``w² / U_kk²``, chosen when its first column is reached, from the already-updated weights.
    """
    ((new_weight, keep),) = sparsify_stacked([weight], hessian, pattern, blocksize, percdamp, name)
    return new_weight, keep


def sparsify_stacked(
    weights: list[torch.Tensor],
    hessian: torch.Tensor,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str = "",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`sparsify_weight` of linears that read the same input (one ``H``), solved together: their rows
    stacked, one dampened Cholesky inverse and one column loop for all of them. Every row's OBS update
    depends only on that row and ``H``, and the masks are chosen exactly as for each linear alone (per
    block among each linear's own rows for unstructured, per row for N:M), so the result is each linear's
    own solve up to the rounding of the stacked products."""
    with full_fp32_matmul():
        dtypes = [w.dtype for w in weights]
        bounds = [0]
        for w in weights:
            bounds.append(bounds[-1] + w.shape[0])
        stacked = torch.cat([w.float() for w in weights]) if len(weights) > 1 else weights[0].float()
        hessian, w, damp = prepare_hessian(hessian.float(), stacked, percdamp)
        del stacked
        u = inverse_cholesky_upper(hessian, damp, name=name)
        del hessian
        rows, cols = w.shape
        # Work on Wᵀ so that column i of W is a contiguous row: the per-column rank-one updates
        # then touch contiguous memory (about 2× faster on CPU than the column-major original).
        wt = w.t().contiguous()
        del w
        pruned = torch.zeros(cols, rows, dtype=torch.bool, device=wt.device)
        for i1 in range(0, cols, blocksize):
            i2 = min(i1 + blocksize, cols)
            w1 = wt[i1:i2]  # a view: updated in place
            u1 = u[i1:i2, i1:i2]
            d = torch.diag(u1)
            err1 = torch.empty_like(w1)
            mask1 = pruned[i1:i2]
            if pattern.kind == "unstructured":
                score = w1**2 / d.reshape(-1, 1) ** 2
                for r0, r1 in zip(bounds, bounds[1:]):  # each linear's own rows × block group
                    # the lowest floor(ratio · n) scores in W's row-major order (ties: lowest index first,
                    # as a stable sort of the flattened block would choose), found without sorting
                    mask1[:, r0:r1] = ~unstructured_mask(score[:, r0:r1].t(), pattern.ratio).t()
            # Three kernels per column (the loop's cost on a CPU is their launch, not their arithmetic):
            # err = (w ⊙ pruned) / U_ii into its row of the block's errors, then the rank-one update of the
            # block's later columns. Column i itself is never read again (its pruned entries are zeroed
            # once at the end, its kept ones are unchanged by its own zero error), so it is not updated.
            pruned1 = mask1.to(w1.dtype) if pattern.kind == "unstructured" else torch.empty_like(w1)
            for i in range(i2 - i1):
                if pattern.kind == "nm" and i % pattern.m == 0:  # the group's N highest w² / U_kk² in each row
                    score = w1[i : i + pattern.m] ** 2 / d[i : i + pattern.m].reshape(-1, 1) ** 2
                    torch.logical_not(nm_keep_group(score, pattern.n), out=mask1[i : i + pattern.m])
                    pruned1[i : i + pattern.m] = mask1[i : i + pattern.m]
                torch.mul(w1[i], pruned1[i], out=err1[i]).div_(d[i])  # (w − q) / U_ii
                w1[i + 1 :].addr_(u1[i, i + 1 :], err1[i], alpha=-1.0)
            wt[i2:].addmm_(u[i1:i2, i2:].t(), err1, alpha=-1.0)  # lazy update of later blocks
        out = []
        for (r0, r1), dtype in zip(zip(bounds, bounds[1:]), dtypes):
            keep = ~pruned[:, r0:r1].t()
            out.append((wt[:, r0:r1].t().masked_fill(~keep, 0.0).to(dtype), keep.contiguous()))  # q: exact zeros
        return out


@register("sparsegpt")
class SparseGPT(PruningMethod):
    updates_weights = True  # the OBS update changes the kept weights: a pruned model is not W ⊙ M
    input_statistics = True  # H depends on the input only: q/k/v_proj share one, and one solve

    @dataclass
    class Options:
        blocksize: int = 128  # columns per lazy-update block
        percdamp: float = 0.01  # dampening, as a fraction of mean(diag H)

        def check(self) -> None:
            self.blocksize = integer(self.blocksize, "method.blocksize", minimum=1)
            self.percdamp = number(self.percdamp, "method.percdamp", positive=True)

    @classmethod
    def statistics_bytes(cls, d_out, d_in):
        return 4 * d_in * d_in  # the float32 Hessian

    @classmethod
    def working_bytes(cls, d_out, d_in):
        # measured: five float32 d_in² at once while H is damped, factorised, inverted and factorised again;
        # Wᵀ, W and the block errors in float32; the pruned mask
        return 5 * 4 * d_in * d_in + 3 * 4 * d_out * d_in + d_out * d_in

    def new_statistics(self, weight):
        d_in = weight.shape[1]
        return {"hessian": torch.zeros(d_in, d_in, dtype=torch.float32, device=weight.device), "segments": 0}

    def accumulate(self, stats, inputs, outputs, bias):
        accumulate_hessian(stats["hessian"], inputs)
        stats["segments"] += inputs.shape[0] if inputs.dim() == 3 else 1
        return stats

    def prune(self, name, weight, stats, memory, pattern=None):
        hessian = stats["hessian"] * (2.0 / max(stats["segments"], 1))
        new_weight, keep = sparsify_weight(weight, hessian, pattern or self.pattern, self.opts.blocksize, self.opts.percdamp, name)
        return new_weight, keep, None

    def prune_group(self, names, weights, stats, memories, pattern=None):
        hessian = stats["hessian"] * (2.0 / max(stats["segments"], 1))
        solved = sparsify_stacked(weights, hessian, pattern or self.pattern, self.opts.blocksize, self.opts.percdamp,
                                  "+".join(names))
        return [(new_weight, keep, None) for new_weight, keep in solved]
