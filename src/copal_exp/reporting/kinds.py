"""The report kinds of ``python -m copal_exp.report --kind``: one registry entry per kind, each saying which
table it builds, under which file name, which figure goes with it, and what to say when a sweep has nothing
for it. A new kind is one ``REPORT_KINDS.register`` call; the command line reads its choices from here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from copal_exp.registry import Registry
from copal_exp.reporting.figures import bwt_curve, forgetting_curves, heatmaps, zeroshot_curves
from copal_exp.reporting.tables import (
    appendix_e,
    comparison_table,
    forgetting_table_frame,
    table1,
    table2,
    table3,
    zeroshot_table,
)

Runs = list[dict[str, Any]]


@dataclass(frozen=True)
class ReportKind:
    """``table(runs)`` is written as ``<stem>.md/.csv/.tex``; ``figure(runs, path)`` (when given, unless
    ``--no-figures``) draws ``<figure_file>`` and is announced as ``figure_word: <path>``; ``empty`` is the
    error when the table has no row; ``note`` is printed under the table."""

    table: Callable[[Runs], pd.DataFrame]
    stem: str
    figure: Callable[[Runs, Path], Path | None] | None = None
    figure_file: str = ""
    figure_word: str = "figure"
    empty: str | None = None
    note: str | None = None


REPORT_KINDS = Registry("report kind")


def kind(name: str, entry: ReportKind) -> ReportKind:
    REPORT_KINDS.register(name)(entry)
    return entry


def _bwt_table(x_key: str, x_label: str, runs: Runs) -> pd.DataFrame:
    return bwt_curve(runs, x_key, x_label, None)[0]


def _bwt_figure(x_key: str, x_label: str, runs: Runs, path: Path) -> Path | None:
    return bwt_curve(runs, x_key, x_label, path)[1]


kind("comparison", ReportKind(comparison_table, "report", heatmaps, "ppl_matrices.png", "heatmap"))
kind("table1", ReportKind(table1, "table1"))
kind("table2", ReportKind(table2, "table2", note="'paper LLaMA-7B' columns: the COPAL paper's Table 2, LLaMA-7B "
                                                 "(global-init baselines), not this sweep's model"))
kind("table3", ReportKind(table3, "table3"))
kind("appendix_e", ReportKind(appendix_e, "appendix_e"))
kind("zeroshot", ReportKind(zeroshot_table, "zeroshot", zeroshot_curves, "zeroshot.png",
                            empty="no job under {sweep} scored zero-shot tasks: run the jobs with eval.tasks=wanda7 "
                                  "(or a list)"))
kind("forgetting", ReportKind(forgetting_table_frame, "forgetting", forgetting_curves, "forgetting.png",
                              empty="no pruning job under {sweep} has two steps or more: forgetting needs a stream "
                                    "of datasets"))
for _name, (_key, _label) in {"fig1": ("ratio", "sparsity ratio"),
                              "fig3": ("nsamples", "calibration segments")}.items():
    kind(_name, ReportKind(partial(_bwt_table, _key, _label), _name, partial(_bwt_figure, _key, _label),
                           f"{_name}.png"))
