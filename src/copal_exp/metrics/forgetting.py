"""Forgetting along the stream (docs/design.md, "Metrics"): pure functions on plain lists.

For an order π with perplexity matrix ``R`` (rows: steps; columns: the run's datasets; ``order`` the
column indices of π), the *forgetting table* is lower-triangular: ``F[t][j] = R[t][π_j] − R[j][π_j]`` for
``j < t`` — how far the domain calibrated at step j has moved since right after it was calibrated, in
perplexity points (positive: forgotten) — and ``None`` on and above the diagonal. The *forgetting curve*
is each row's mean over the domains seen before (``None`` at the first step); its last value is the
paper's BWT. Over several orders, the curve's mean, spread and worst value per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]]


def forgetting_table(matrix: Matrix, order: Sequence[int]) -> list[list[float | None]]:
    """``F[t][j]`` for the rows of ``matrix`` computed so far (``len(matrix)`` ≤ T rows, T columns)."""
    steps = len(order)
    return [[float(matrix[t][order[j]] - matrix[j][order[j]]) if j < t else None for j in range(steps)]
            for t in range(len(matrix))]


def forgetting_curve(table: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Each step's mean forgetting over the domains seen before it (``None`` at step 1)."""
    return [float(np.mean(row[:t])) if t > 0 else None for t, row in enumerate(table)]


def forgetting_summary(curves: Sequence[Sequence[float | None]]) -> dict[str, object]:
    """Per step over orders (all of one length T): mean, population std, min and max (the worst) of the
    forgetting curves; ``worst_order`` is the index of the order whose curve ends highest (its BWT)."""
    if not curves:
        return {}
    steps = len(curves[0])
    if any(len(c) != steps for c in curves):
        raise ValueError("forgetting curves of different lengths: orders of different lengths")

    def per_step(fn):
        return [None if t == 0 else float(fn([c[t] for c in curves])) for t in range(steps)]

    last = [c[-1] for c in curves]
    return {"steps": steps, "orders": len(curves), "mean": per_step(np.mean), "std": per_step(np.std),
            "min": per_step(np.min), "worst": per_step(np.max),
            "worst_order": int(np.argmax(last)) if steps > 1 else None}
