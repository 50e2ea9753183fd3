"""From per-state evaluations to per-permutation matrices and every metric; pure functions, shared by
the runner (after every step) and the report (merging one-permutation jobs into one run)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

from copal_exp.io.results import Permutation
from copal_exp.metrics.forgetting import forgetting_curve, forgetting_summary, forgetting_table
from copal_exp.metrics.transfer import backward_transfer, per_dataset, summary, weight_stasis


def permutation(order: Sequence[str], datasets: Sequence[str], ppl_rows: Sequence[dict[str, float]],
                mask_changes: list[float | None], sparsities: list[float], seconds: list[dict[str, float]],
                prunes: bool, complete: bool = True, zeroshot: list[dict | None] | None = None,
                layer_sparsity: list[dict | None] | None = None) -> dict[str, Any]:
    """The record of one dataset order: its perplexity matrix (rows: steps, columns: ``datasets``), BWT,
    weight stasis, mask changes, sparsity and seconds per step, (``eval.tasks``) the zero-shot scores of the
    steps that were scored, and (a non-uniform allocation) each step's sparsity per decoder layer."""
    matrix = [[row[d] for d in datasets] for row in ppl_rows]
    columns = [list(datasets).index(d) for d in order]
    bwt = backward_transfer(matrix, columns) if complete else None
    table = forgetting_table(matrix, columns) if matrix else None
    return asdict(Permutation(list(order), matrix, bwt, weight_stasis(mask_changes) if prunes and complete else False,
                              mask_changes, sparsities, seconds, complete,
                              zeroshot if zeroshot and any(zeroshot) else None, layer_sparsity,
                              table, forgetting_curve(table) if table else None))


def metrics(permutations: list[dict[str, Any]], datasets: Sequence[str]) -> dict[str, Any]:
    """Summary (a-/m-bwt, a-/m-ppl), per-dataset table and weight stasis over the permutations given."""
    if not permutations:
        return {}
    matrices = [p["ppl_matrix"] for p in permutations]
    orders = [[list(datasets).index(d) for d in p["order"]] for p in permutations]
    lengths = {len(o) for o in orders}
    curves = [forgetting_curve(forgetting_table(m, o)) for m, o in zip(matrices, orders)]
    return {"summary": summary(matrices, orders), "per_dataset": per_dataset(matrices, orders, list(datasets)),
            "weight_stasis": all(p["weight_stasis"] for p in permutations),
            "forgetting": forgetting_summary(curves) if len(lengths) == 1 else {}}
