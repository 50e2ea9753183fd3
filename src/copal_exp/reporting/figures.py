"""The paper's figures (BWT against a swept setting) and a sweep's perplexity-matrix heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from copal_exp.metrics.heatmap import matrix_figure, panel_size, ratio_bar, ratio_norm
from copal_exp.reporting.runs import job_label, prunes, run_label
from copal_exp.reporting.tables import swept_keys


def bwt_curve(runs: list[dict[str, Any]], x_key: str, x_label: str,
              path: Path | None) -> tuple[pd.DataFrame, Path | None]:
    """Mean and max BWT per method against a swept setting (paper Figures 1 and 3); the figure is drawn to
    ``path`` (not at all when ``path`` is ``None``: the table alone)."""
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
    if path is None:
        return frame, None
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


def _job_grid(runs: list[dict[str, Any]], path: Path, norm, swept: list[str]) -> Path:
    import matplotlib.pyplot as plt

    n_orders = max(len(r["permutations"]) for r in runs)
    width, height = panel_size(max(len(r["datasets"]) for r in runs), max(len(r["datasets"]) for r in runs) + 1)
    fig, axes = plt.subplots(len(runs), n_orders, figsize=(width * n_orders + 1.2, (height - 0.1) * len(runs) + 0.4),
                             squeeze=False, gridspec_kw={"wspace": 0.75, "hspace": 0.45})
    image = None
    for i, r in enumerate(runs):
        for j in range(n_orders):
            if j >= len(r["permutations"]):
                axes[i][j].axis("off")
                continue
            perm = r["permutations"][j]
            title = job_label(r, swept) if j == 0 else ""
            matrix_figure(perm["ppl_matrix"], r["datasets"], perm["order"], title, ax=axes[i][j],
                          dense=r.get("dense_ppl"), norm=norm)
            image = axes[i][j].images[0]
    ratio_bar(fig, image, axes)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmaps(runs: list[dict[str, Any]], path: Path, per_job_above: int = 4) -> Path:
    """Every job's perplexity matrices, with the dense row and one shared colour scale (relative to
    dense). Up to ``per_job_above`` jobs go into ``path``; larger sweeps get one figure per job in a
    folder named after ``path`` (``ppl_matrices/<job>.png``), and ``path`` shows the first jobs."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    ratios = [np.array(p["ppl_matrix"]) / np.array([r["dense_ppl"][d] for d in r["datasets"]])
              for r in runs for p in r["permutations"] if r.get("dense_ppl")]
    norm = ratio_norm(float(min(x.min() for x in ratios)) if ratios else 0.5,
                      float(max(x.max() for x in ratios)) if ratios else 2.0)
    swept = swept_keys(runs)  # titles name what tells the jobs apart
    if len(runs) > per_job_above:
        folder = path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        for k, r in enumerate(runs):
            name = f"{k:02d}-{job_label(r, swept)}".replace(" ", "_").replace("/", "_")
            name = "".join(c for c in name if c.isalnum() or c in "-_.:,()%")
            _job_grid([r], folder / f"{name}.png", norm, swept)
    return _job_grid(runs[:per_job_above], path, norm, swept)


def zeroshot_curves(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean zero-shot accuracy (over the tasks, each its reported metric) after every scored step, one line per
    order, one panel per job, the dense model dashed; ``None`` when no job scored tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from copal_exp.metrics.zeroshot import task_values

    scored = [r for r in runs if prunes(r) and any(p.get("zeroshot") for p in r["permutations"])]
    if not scored:
        return None
    fig, axes = plt.subplots(1, len(scored), figsize=(3.6 * len(scored), 3.2), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], scored):
        for perm in r["permutations"]:
            points = [(t + 1, task_values(z)["mean"]) for t, z in enumerate(perm.get("zeroshot") or []) if z]
            if points:
                ax.plot(*zip(*points), marker="o", lw=1, label=">".join(perm["order"]))
        if r.get("zeroshot_dense"):
            ax.axhline(task_values(r["zeroshot_dense"])["mean"], color="grey", ls="--", lw=1, label="dense")
        ax.set_title(run_label(r), fontsize=9)
        ax.set_xlabel("step")
        ax.set_xticks(range(1, max(len(p["order"]) for p in r["permutations"]) + 1))
    axes[0][0].set_ylabel(f"mean accuracy over {len(scored[0]['zeroshot']['tasks'])} tasks")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forgetting_curves(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Forgetting against step: one line per job (the mean over its orders of each step's mean perplexity
    change of the domains seen before), the band from the best to the worst order; ``None`` when no job has
    two steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from copal_exp.reporting.tables import job_forgetting

    swept = swept_keys(runs)
    curves = [(job_label(r, swept), job_forgetting(r)) for r in runs if prunes(r)]
    curves = [(label, f) for label, f in curves if f and f["steps"] > 1]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8 + 0.22 * len(curves)))
    for label, f in curves:
        steps = list(range(2, f["steps"] + 1))
        line = ax.plot(steps, f["mean"][1:], marker="o", lw=1.5, label=f"{label} ({f['orders']} orders)")[0]
        ax.fill_between(steps, f["min"][1:], f["worst"][1:], color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(range(2, max(f["steps"] for _, f in curves) + 1))
    ax.set_xlabel("step (domains seen so far)")
    ax.set_ylabel("mean ppl change of earlier domains")
    ax.set_title("forgetting along the stream (band: best to worst order)", fontsize=10)
    # below the axes, so no line or band is hidden behind it
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
