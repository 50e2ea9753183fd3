"""The paper's figures (BWT against a swept setting) and heatmaps of perplexity matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from copal_exp.runs import pattern_label, prunes, run_label


def bwt_curve(runs: list[dict[str, Any]], x_key: str, x_label: str, path: Path) -> tuple[pd.DataFrame, Path]:
    """Mean and max BWT per method against a swept setting (paper Figures 1 and 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for r in runs:
        if not prunes(r):
            continue
        x = r["config"]["sparsity"].get("ratio") if x_key == "ratio" else r["config"]["data"]["nsamples"]
        rows.append({"method": run_label(r), x_key: x, "a_bwt": r["summary"]["a_bwt"], "m_bwt": r["summary"]["m_bwt"]})
    frame = pd.DataFrame(rows).sort_values(["method", x_key]).reset_index(drop=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method, part in frame.groupby("method"):
        axes[0].plot(part[x_key], part["a_bwt"], marker="o", label=method)
        axes[1].plot(part[x_key], part["m_bwt"], marker="o", label=method)
    for ax, title in zip(axes, ("mean BWT (a-bwt)", "max BWT (m-bwt)")):
        ax.set_xlabel(x_label)
        ax.set_ylabel("perplexity points")
        ax.set_title(title)
        ax.axhline(0, color="grey", lw=0.5)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return frame, path


FIGURES = {"fig1": ("ratio", "sparsity ratio"), "fig3": ("nsamples", "calibration segments")}


def matrix_figure(matrix, datasets, order, title: str = "", ax=None):
    """One perplexity matrix as an annotated heatmap (rows: steps, columns: datasets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.2, 2.8))
    ax.imshow(matrix, cmap="viridis")
    for t, row in enumerate(matrix):
        for d, v in enumerate(row):
            ax.text(d, t, f"{v:.1f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xticks(range(len(datasets)), datasets, fontsize=6)
    ax.set_yticks(range(len(order)), [f"{t + 1}:{d}" for t, d in enumerate(order)], fontsize=6)
    if title:
        ax.set_title(title, fontsize=7, loc="left")
    return fig or ax.figure


def heatmaps(runs: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_orders = max(len(r["permutations"]) for r in runs)
    fig, axes = plt.subplots(len(runs), n_orders, figsize=(2.6 * n_orders, 2.4 * len(runs)), squeeze=False)
    for i, r in enumerate(runs):
        for j in range(n_orders):
            if j >= len(r["permutations"]):
                axes[i][j].axis("off")
                continue
            perm = r["permutations"][j]
            title = f"{run_label(r)} {pattern_label(r)}" if j == 0 else ""
            matrix_figure(perm["ppl_matrix"], r["datasets"], perm["order"], title, ax=axes[i][j])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
