"""Zero-shot accuracy over a job's orders: pure functions of the per-step task scores.

Each task reports the metric the pruning papers put in their tables (``REPORTED``: ``acc_norm`` for
HellaSwag, ARC-challenge, OpenBookQA and PIQA, ``acc`` elsewhere); the mean over tasks is of those.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from copal_exp.evaluation.zeroshot.tasks import REPORTED


def reported_metric(task: str, scores: dict[str, Any]) -> str:
    """The metric a table shows for ``task``: its ``REPORTED`` one where the harness gave it, else ``acc``."""
    wanted = REPORTED.get(task, "acc")
    return wanted if scores.get(wanted) is not None else "acc"


def task_values(scores: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per task the reported value, and ``mean`` over the tasks."""
    values = {task: float(s[reported_metric(task, s)]) for task, s in scores.items()}
    return {**values, "mean": statistics.fmean(values.values())} if values else {}


def zeroshot_summary(rows_per_order: Sequence[Sequence[dict | None]], dense: dict[str, dict[str, Any]] | None,
                     tasks: Sequence[str]) -> dict[str, Any]:
    """Over the orders whose last step was scored: the final model's value per task and mean (``final``: one
    entry per order), their mean, std and worst order (``over_orders``), and where the first step was scored
    too, the change from the first step's model to the last (negative = forgetting) per order, with its mean and
    worst case (``change``)."""
    metric = {task: REPORTED.get(task, "acc") for task in tasks}
    finals = [task_values(rows[-1]) if rows and rows[-1] else None for rows in rows_per_order]
    out: dict[str, Any] = {"tasks": list(tasks), "metric": metric, "final": finals,
                           "dense": task_values(dense) if dense else None}
    scored = [(k, f) for k, f in enumerate(finals) if f]
    if scored:
        over = {}
        for column in [*tasks, "mean"]:
            values = [f[column] for _, f in scored]
            worst = min(scored, key=lambda kf: kf[1][column])[0]
            over[column] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                            "worst": min(values), "worst_order": worst}
        out["over_orders"] = over
    changes = []
    for rows, final in zip(rows_per_order, finals):
        first = task_values(rows[0]) if rows and rows[0] and len(rows) > 1 else None
        changes.append({c: final[c] - first[c] for c in first} if first and final else None)
    if any(changes):
        given = [c for c in changes if c]
        out["change"] = {"per_order": changes,
                         "mean": {c: statistics.fmean(ch[c] for ch in given) for c in given[0]},
                         "worst": {c: min(ch[c] for ch in given) for c in given[0]}}
    return out
