"""``python -m copal_exp.report SWEEP_DIR``: the paper-style comparison table from local result files.

Reads every ``results.json`` under the directory (a multirun sweep, or any folder of jobs), prints a
Markdown table of a-bwt, m-bwt, a-ppl, m-ppl per method (``WS`` where the masks never changed after
step 1, as in the paper's Table 1), writes it as Markdown, CSV and LaTeX, and draws the perplexity
matrices as a heatmap PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from copal_exp.results import RESULTS_FILE


def run_label(results: dict[str, Any]) -> str:
    method = results["config"]["method"]
    name = method["name"]
    if name == "copal":
        return f"copal ({method.get('granularity')}, {method.get('group')})"
    if name in ("magnitude", "wanda", "sparsegpt"):
        return f"{name} ({method.get('init', 'global')})"
    return name


def collect(sweep: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(sweep.rglob(RESULTS_FILE)):
        results = json.loads(path.read_text())
        if results.get("status") == "complete":
            results["_path"] = str(path.parent)
            runs.append(results)
    return runs


def comparison_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    dense_seen = False
    for r in runs:
        s = r["summary"]
        dense = r["config"]["method"]["name"] == "dense"
        dense_seen = dense_seen or dense
        ws = r.get("weight_stasis") and not dense
        a_bwt, m_bwt = ("WS", "WS") if ws else (None, None) if dense else (s["a_bwt"], s["m_bwt"])
        rows.append({"method": run_label(r), "pattern": "-" if dense else r["sparsity"]["pattern"],
                     "a_bwt": a_bwt, "m_bwt": m_bwt,
                     "a_ppl": s["a_ppl"], "m_ppl": s["m_ppl"], "orders": len(r["permutations"])})
    if runs and not dense_seen:  # every job measured the dense model too
        dense = runs[0]["dense_ppl"]
        rows.insert(0, {"method": "dense", "pattern": "-", "a_bwt": None, "m_bwt": None,
                        "a_ppl": sum(dense.values()) / len(dense), "m_ppl": max(dense.values()), "orders": 0})
    return pd.DataFrame(rows)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def to_markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def to_latex(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    body = [" & ".join(_fmt(v).replace("–", "--") for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{tabular}{" + "l" * 2 + "r" * (len(cols) - 2) + "}", r"\toprule",
                      " & ".join(c.replace("_", "-") for c in cols) + r" \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"])


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
            title = f"{run_label(r)} {r['sparsity']['pattern']}" if j == 0 else ""
            matrix_figure(perm["ppl_matrix"], r["datasets"], perm["order"], title, ax=axes[i][j])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a directory holding results.json files (searched recursively)")
    parser.add_argument("--no-figures", action="store_true", help="skip the heatmap PNG")
    args = parser.parse_args(argv)
    runs = collect(args.sweep)
    if not runs:
        raise SystemExit(f"no complete {RESULTS_FILE} under {args.sweep}")
    frame = comparison_table(runs)
    md = to_markdown(frame)
    (args.sweep / "report.md").write_text(md + "\n")
    (args.sweep / "report.tex").write_text(to_latex(frame) + "\n")
    frame.to_csv(args.sweep / "report.csv", index=False)
    print(md)
    if not args.no_figures:
        print(f"heatmap: {heatmaps(runs, args.sweep / 'ppl_matrices.png')}")


if __name__ == "__main__":
    main()
