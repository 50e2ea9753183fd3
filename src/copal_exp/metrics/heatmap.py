"""A perplexity matrix as a heatmap relative to the dense model: the figure a job logs to W&B and the
report's sweep figures compose (:mod:`copal_exp.reporting.figures`)."""

from __future__ import annotations


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def ratio_norm(low: float, high: float):
    """Colours for log₂(perplexity / dense): white at the dense value, blue below, red above."""
    import math

    from matplotlib.colors import TwoSlopeNorm

    return TwoSlopeNorm(vmin=min(math.log2(low), -0.01), vcenter=0.0, vmax=max(math.log2(high), 0.01))


def ratio_bar(fig, image, axes) -> None:
    import math

    from matplotlib.ticker import FuncFormatter

    bar = fig.colorbar(image, ax=axes, shrink=0.85)
    bar.set_label("perplexity / dense (log scale)")
    low, high = image.norm.vmin, image.norm.vmax
    nice = [r for r in (0.25, 0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 1000)
            if low <= math.log2(r) <= high]
    bar.set_ticks([math.log2(r) for r in nice])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"×{2 ** x:.3g}"))


def panel_size(n_datasets: int, n_rows: int) -> tuple[float, float]:
    """Inches of one matrix panel: room for every cell's number whatever the stream's length (3 datasets and
    4 rows give the 3.4 × 2.9 of the paper-sized panels)."""
    return 1.55 + 0.62 * n_datasets, 1.6 + 0.33 * n_rows


def cell_text(value: float) -> str:
    """A cell's perplexity, in at most five characters below 1000 (one decimal below 100)."""
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def matrix_figure(matrix, datasets, order, title: str = "", ax=None, dense: dict[str, float] | None = None,
                  norm=None):
    """One perplexity matrix as an annotated heatmap: rows are the steps (the dense model first when
    ``dense`` is given), columns the datasets. Colours show each cell relative to the dense model's
    perplexity on that dataset (log scale, shared through ``norm``), so columns of very different
    perplexity stay comparable; the numbers are the perplexities themselves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=panel_size(len(datasets), len(matrix) + bool(dense)))
    rows = [list(r) for r in matrix]
    labels = [f"{t + 1}: {d}" for t, d in enumerate(order)]
    if dense:
        rows = [[dense[d] for d in datasets], *rows]
        labels = ["dense", *labels]
    values = np.array(rows, dtype=float)
    reference = np.array([dense[d] for d in datasets]) if dense else values.min(axis=0)
    ratio = np.log2(values / reference)
    norm = norm or ratio_norm(float(2 ** ratio.min()), float(2 ** ratio.max()))
    cmap = plt.get_cmap("RdBu_r")
    image = ax.imshow(ratio, cmap=cmap, norm=norm, aspect="auto")
    for t, row in enumerate(rows):
        for d, v in enumerate(row):
            ax.text(d, t, cell_text(v), ha="center", va="center", fontsize=7 if len(datasets) <= 4 else 6,
                    color=_text_colour(cmap(norm(ratio[t, d]))))
    ax.set_xticks(range(len(datasets)), datasets, fontsize=7, rotation=25, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if dense:
        ax.axhline(0.5, color="black", lw=0.8)
    if title:
        ax.set_title(title, fontsize=8, loc="left")
    if fig is not None:
        ratio_bar(fig, image, ax)
    return fig or ax.figure
