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

from copal_exp.methods import method_class, reference_method
from copal_exp.results import RESULTS_FILE


def prunes(results: dict[str, Any]) -> bool:
    return method_class(results["config"]["method"]["name"]).prunes


def run_label(results: dict[str, Any]) -> str:
    """The method's own table label for its options and init (e.g. ``wanda (global)``, ``copal (token, row)``)."""
    method = results["config"]["method"]
    return method_class(method["name"]).label(method, method.get("init", "global"))


def pattern_label(results: dict[str, Any]) -> str:
    if not prunes(results):
        return "-"
    sp = results["config"]["sparsity"]
    return f"{sp['n']}:{sp['m']}" if sp["pattern"] == "nm" else f"unstructured {sp['ratio']:.0%}"


def collect(sweep: Path, merge: bool = True, skipped: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every complete job under ``sweep``; per-permutation jobs (``order.index``) merged into one run.

    Jobs that cannot be reported (damaged file, failed, interrupted or still running) are left out and,
    when ``skipped`` is a list, appended to it as ``(job directory, reason)``.
    """
    skipped = [] if skipped is None else skipped
    runs = []
    for path in sorted(Path(sweep).rglob(RESULTS_FILE)):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append((str(path.parent), f"{RESULTS_FILE} cannot be read ({type(exc).__name__}: {exc})"))
            continue
        status = results.get("status") if isinstance(results, dict) else None
        if status != "complete":
            reasons = {"failed": f"failed: {results.get('error', 'no error recorded')}" if status == "failed" else "",
                       "interrupted": "interrupted (re-run the same command to resume it)",
                       "running": "still running (or killed: re-run the same command to resume it)"}
            skipped.append((str(path.parent), reasons.get(status) or f"status {status!r}, not complete"))
            continue
        missing = [k for k in ("config", "datasets", "dense_ppl", "permutations", "summary") if k not in results]
        if missing:
            skipped.append((str(path.parent), f"complete but lacks {missing} (written by another program?)"))
            continue
        results["_path"] = str(path.parent)
        runs.append(results)
    return merge_permutation_jobs(runs) if merge else runs


def model_name(results: dict[str, Any]) -> str:
    return str(results["config"]["model"].get("name"))


def datasets_label(results: dict[str, Any]) -> str:
    return ",".join(results["datasets"])


def _signature(results: dict[str, Any]) -> str:
    from copal_exp.config import result_config

    cfg = result_config(results["config"])
    cfg["order"]["index"] = None
    return json.dumps(cfg, sort_keys=True)


def merge_permutation_jobs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that differ only in ``order.index`` become one run whose metrics are recomputed over all
    their permutations — the same summary a single ``order=all_perms`` job gives."""
    from copal_exp.assemble import metrics

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_signature(r) if r["config"]["order"].get("index") is not None else id(r), []).append(r)
    merged = []
    for members in groups.values():
        if len(members) == 1 and members[0]["config"]["order"].get("index") is None:
            merged.append(members[0])
            continue
        members = sorted(members, key=lambda r: r["config"]["order"]["index"])
        first = members[0]
        perms = [p for r in members for p in r["permutations"]]
        merged.append({
            **first,
            "config": {**first["config"], "order": {**first["config"]["order"], "index": None}},
            "permutations": perms,
            **metrics(perms, first["datasets"]),
            "merged_from": [r["_path"] for r in members],
            "order_indices": [r["config"]["order"]["index"] for r in members],
        })
    return merged


def comparison_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per job; ``model`` and ``datasets`` columns when the jobs differ in them; a dense row per
    model and dataset list, from that model's own dense perplexities, unless a dense job is there."""
    rows = []
    dense_jobs = set()
    for r in runs:
        s = r["summary"]
        dense = not prunes(r)
        if dense:
            dense_jobs.add((model_name(r), datasets_label(r)))
        ws = r.get("weight_stasis") and not dense
        a_bwt, m_bwt = ("WS", "WS") if ws else (None, None) if dense else (s["a_bwt"], s["m_bwt"])
        rows.append({"model": model_name(r), "datasets": datasets_label(r), "method": run_label(r),
                     "pattern": pattern_label(r), "a_bwt": a_bwt, "m_bwt": m_bwt,
                     "a_ppl": s["a_ppl"], "m_ppl": s["m_ppl"], "orders": len(r["permutations"])})
    dense_rows = []
    for r in runs:  # every job measured its dense model too
        group = (model_name(r), datasets_label(r))
        if group in dense_jobs:
            continue
        dense_jobs.add(group)
        dense = r["dense_ppl"]
        dense_rows.append({"model": group[0], "datasets": group[1], "method": reference_method().name, "pattern": "-",
                           "a_bwt": None,
                           "m_bwt": None, "a_ppl": sum(dense.values()) / len(dense), "m_ppl": max(dense.values()),
                           "orders": 0})
    frame = pd.DataFrame(dense_rows + rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["model", "datasets"], kind="stable").reset_index(drop=True)
    for column in ("model", "datasets"):
        if frame[column].nunique() <= 1:
            frame = frame.drop(columns=column)
    return frame


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def table1(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 1: BWT per method and init, ``WS`` where the masks never moved after step 1."""
    frame = comparison_table(runs)
    columns = [c for c in ("model", "datasets", "method", "pattern", "a_bwt", "m_bwt") if c in frame.columns]
    return frame[frame["method"] != reference_method().name][columns].reset_index(drop=True)


def table2(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 2: a-/m-bwt, a-/m-ppl per method, one column block per sparsity pattern, paper beside."""
    from copal_exp.paper import TABLE2_LLAMA7B

    frame = comparison_table(runs)
    rows = []
    for r in frame.itertuples(index=False):
        base = r.method.split(" (")[0]
        paper_pattern = "unstructured 50%" if r.pattern == "-" else r.pattern
        # the paper's Table 2 starts every step from the dense model: no reference for sequential init
        ref = None if r.method.endswith("(sequential)") else TABLE2_LLAMA7B.get(paper_pattern, {}).get(base)
        rows.append({"method": r.method, "pattern": r.pattern, "a_bwt": r.a_bwt, "m_bwt": r.m_bwt, "a_ppl": r.a_ppl,
                     "m_ppl": r.m_ppl, "paper_a_bwt": ref[0] if ref else None, "paper_m_bwt": ref[1] if ref else None,
                     "paper_a_ppl": ref[2] if ref else None, "paper_m_ppl": ref[3] if ref else None})
    return pd.DataFrame(rows)


def table3(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 3: per dataset, BWT (orders where it is not last) and final PPL, mean ± std."""
    rows = []
    for r in runs:
        if not prunes(r):
            continue
        row = {"method": run_label(r), "pattern": pattern_label(r)}
        for d, v in r["per_dataset"].items():
            row[f"{d} BWT"] = _pm(v["bwt_mean"], v["bwt_std"])
            row[f"{d} PPL"] = _pm(v["ppl_mean"], v["ppl_std"])
        rows.append(row)
    return pd.DataFrame(rows)


def appendix_e(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Appendix E: overall BWT (over orders) and final PPL (over orders × datasets), mean ± std."""
    import numpy as np

    rows = []
    for r in runs:
        bwts = [p["bwt"] for p in r["permutations"] if p["bwt"] is not None]
        finals = [v for p in r["permutations"] for v in p["ppl_matrix"][-1]]
        rows.append({"method": run_label(r), "pattern": pattern_label(r),
                     "BWT": _pm(float(np.mean(bwts)), float(np.std(bwts))) if bwts else "–",
                     "PPL": _pm(float(np.mean(finals)), float(np.std(finals)))})
    return pd.DataFrame(rows)


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


TABLES = {"comparison": comparison_table, "table1": table1, "table2": table2, "table3": table3,
          "appendix_e": appendix_e}
FIGURES = {"fig1": ("ratio", "sparsity ratio"), "fig3": ("nsamples", "calibration segments")}


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
            title = f"{run_label(r)} {pattern_label(r)}" if j == 0 else ""
            matrix_figure(perm["ppl_matrix"], r["datasets"], perm["order"], title, ax=axes[i][j])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_table(frame: pd.DataFrame, sweep: Path, name: str, skipped: list[tuple[str, str]] = ()) -> str:
    md = to_markdown(frame)
    note = "".join(f"\n- skipped {where}: {why}" for where, why in skipped)
    (sweep / f"{name}.md").write_text(md + ("\n\nJobs not in this table:" + note if note else "") + "\n")
    (sweep / f"{name}.tex").write_text(to_latex(frame) + "\n")
    frame.to_csv(sweep / f"{name}.csv", index=False)
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a directory holding results.json files (searched recursively)")
    parser.add_argument("--kind", default="comparison", choices=[*TABLES, *FIGURES],
                        help="which table or figure of the paper to build (default: the comparison table + heatmap)")
    parser.add_argument("--no-figures", action="store_true", help="skip the heatmap PNG")
    args = parser.parse_args(argv)
    if not args.sweep.exists():
        raise SystemExit(f"{args.sweep}: no such directory (give a sweep or job directory holding {RESULTS_FILE} files)")
    if not args.sweep.is_dir():
        raise SystemExit(f"{args.sweep} is a file: give the directory that holds it (e.g. {args.sweep.parent})")
    skipped: list[tuple[str, str]] = []
    runs = collect(args.sweep, skipped=skipped)
    if skipped:
        print(f"skipped {len(skipped)} job(s):")
        for where, why in skipped:
            print(f"  {where}: {why}")
    if not runs:
        raise SystemExit(f"no complete {RESULTS_FILE} under {args.sweep}")
    if args.kind in FIGURES:
        x_key, x_label = FIGURES[args.kind]
        frame, png = bwt_curve(runs, x_key, x_label, args.sweep / f"{args.kind}.png")
        print(write_table(frame, args.sweep, args.kind, skipped))
        print(f"figure: {png}")
        return
    name = "report" if args.kind == "comparison" else args.kind
    print(write_table(TABLES[args.kind](runs), args.sweep, name, skipped))
    if args.kind == "table2":
        print("paper_*: LLaMA-7B, COPAL paper Table 2 (global-init baselines)")
    if args.kind == "comparison" and not args.no_figures:
        print(f"heatmap: {heatmaps(runs, args.sweep / 'ppl_matrices.png')}")


if __name__ == "__main__":
    main()
