"""Continual-pruning metrics (docs/design.md, "Metrics"; paper eqs. 12–14). Pure functions on plain lists.

A perplexity matrix ``R`` for an order ``π`` has one row per step (row t = after step t) and one
column per dataset in the run's ``datasets`` order; ``order`` holds the column indices of ``π``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Matrix = Sequence[Sequence[float]]


def backward_transfer(matrix: Matrix, order: Sequence[int]) -> float | None:
    """``(1/(T−1)) Σ_{i<T} (R[T][π_i] − R[i][π_i])`` in perplexity points; ``None`` when T = 1."""
    steps = len(order)
    if steps < 2:
        return None
    last = matrix[steps - 1]
    return sum(last[order[i]] - matrix[i][order[i]] for i in range(steps - 1)) / (steps - 1)


def summary(matrices: Sequence[Matrix], orders: Sequence[Sequence[int]]) -> dict[str, float | None]:
    """a-/m-bwt (mean/max of BWT over permutations) and a-/m-ppl (mean/max of the final rows)."""
    bwts = [b for b in (backward_transfer(m, o) for m, o in zip(matrices, orders)) if b is not None]
    finals = [v for m, o in zip(matrices, orders) for v in m[len(o) - 1]]
    return {
        "a_bwt": float(np.mean(bwts)) if bwts else None,
        "m_bwt": float(np.max(bwts)) if bwts else None,
        "a_ppl": float(np.mean(finals)),
        "m_ppl": float(np.max(finals)),
    }


def per_dataset(matrices: Sequence[Matrix], orders: Sequence[Sequence[int]], datasets: Sequence[str]) -> dict[str, dict]:
    """Paper Table 3: per dataset, BWT_d over orders where d is not last, and final PPL_d (mean ± std).

    Standard deviations are population (ddof = 0) over the permutations run.
    """
    result = {}
    for col, name in enumerate(datasets):
        bwt, ppl = [], []
        for matrix, order in zip(matrices, orders):
            steps = len(order)
            if col not in order:
                continue
            ppl.append(matrix[steps - 1][col])
            pos = list(order).index(col)
            if pos < steps - 1:
                bwt.append(matrix[steps - 1][col] - matrix[pos][col])
        result[name] = {
            "bwt_mean": float(np.mean(bwt)) if bwt else None,
            "bwt_std": float(np.std(bwt)) if bwt else None,
            "ppl_mean": float(np.mean(ppl)) if ppl else None,
            "ppl_std": float(np.std(ppl)) if ppl else None,
            "n_bwt": len(bwt),
            "n_ppl": len(ppl),
        }
    return result


def mask_change(previous: dict[str, np.ndarray], current: dict[str, np.ndarray], sizes: dict[str, int]) -> float:
    """Fraction of all mask entries (over every pruned layer) that differ between two steps.

    Masks are bit-packed (:func:`copal_exp.pruning.masks.pack_mask`); ``sizes`` gives each layer's weight count.
    """
    changed = sum(int(np.bitwise_count(np.bitwise_xor(previous[n], current[n])).sum(dtype=np.int64)) for n in current)
    total = sum(sizes[n] for n in current)
    return changed / total if total else 0.0


def weight_stasis(changes: Sequence[float | None]) -> bool:
    """True when every step t ≥ 2 left every mask as it was after step t−1."""
    later = [c for c in changes[1:] if c is not None]
    return bool(later) and all(c == 0 for c in later)


def sparsity_report(masks) -> dict[str, object]:
    """Achieved sparsity of every pruned layer and of all pruned layers together, from boolean keep masks
    by name or from :class:`~copal_exp.pruning.masks.PackedMasks` (their kept counts: nothing is unpacked)."""
    if hasattr(masks, "kept"):
        kept, sizes = masks.kept, {n: math.prod(shape) for n, shape in masks.shapes.items()}
    else:
        kept = {n: int(torch.count_nonzero(m)) for n, m in masks.items()}
        sizes = {n: m.numel() for n, m in masks.items()}
    layers = {name: 1.0 - kept[name] / sizes[name] for name in kept}
    total = sum(sizes.values())
    pruned = total - sum(kept.values())
    blocks: dict[int, list[int]] = {}  # decoder layer -> [kept, size] over its pruned linears
    for name in kept:
        block = blocks.setdefault(decoder_index(name), [0, 0])
        block[0] += kept[name]
        block[1] += sizes[name]
    return {"overall": pruned / total if total else 0.0, "layers": layers,
            "decoder_layers": {str(i): 1.0 - k / n for i, (k, n) in sorted(blocks.items())}}


def decoder_index(name: str) -> int:
    """The decoder layer a linear's name lies in: its first numeric component (``model.layers.12.mlp.up_proj``)."""
    return next((int(part) for part in name.split(".") if part.isdigit()), -1)
