"""The paper's tables (and the comparison table) as pandas frames, written as Markdown, CSV and LaTeX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from copal_exp.pruning.methods import reference_method
from copal_exp.reporting.runs import datasets_label, model_name, pattern_label, prunes, run_label

#: config keys already shown by the method, pattern, model and datasets columns
SHOWN = ("method.", "sparsity.", "model.name", "datasets", "order.index")


def swept_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Every result-affecting config key whose value differs between the jobs (and is not in another column)."""
    from copal_exp.io.identity import result_config
    from copal_exp.protocol.jobdir import flatten

    flat = [flatten(result_config(r["config"])) for r in runs if prunes(r)]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if not k.startswith(SHOWN) and len({json.dumps(f.get(k), default=str) for f in flat}) > 1]


def comparison_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per job; ``model`` and ``datasets`` columns when the jobs differ in them, and a column for
    every other swept key (``data.nsamples``, …) so that no two rows look alike; a dense row per model
    and dataset list, from that model's own dense perplexities, unless a dense job is there."""
    from copal_exp.io.identity import result_config
    from copal_exp.protocol.jobdir import flatten

    swept = swept_keys(runs)
    rows = []
    dense_jobs = set()
    for r in runs:
        s = r["summary"]
        dense = not prunes(r)
        if dense:
            dense_jobs.add((model_name(r), datasets_label(r)))
        ws = r.get("weight_stasis") and not dense
        a_bwt, m_bwt = ("WS", "WS") if ws else (None, None) if dense else (s["a_bwt"], s["m_bwt"])
        flat = flatten(result_config(r["config"]))
        rows.append({"model": model_name(r), "datasets": datasets_label(r), "method": run_label(r),
                     "pattern": pattern_label(r), **{k: None if dense else json.dumps(flat.get(k)).strip('"')
                                                     for k in swept},
                     "a_bwt": a_bwt, "m_bwt": m_bwt, "a_ppl": s["a_ppl"], "m_ppl": s["m_ppl"],
                     "orders": len(r["permutations"])})
    dense_rows = []
    for r in runs:  # every job measured its dense model too
        group = (model_name(r), datasets_label(r))
        if group in dense_jobs:
            continue
        dense_jobs.add(group)
        dense = r["dense_ppl"]
        dense_rows.append({"model": group[0], "datasets": group[1], "method": reference_method().name, "pattern": "-",
                           **{k: None for k in swept}, "a_bwt": None,
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


PAPER = "paper LLaMA-7B"  # the paper's numbers are LLaMA-7B's, whatever model the sweep used


def table2(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 2: a-/m-bwt, a-/m-ppl per method, one column block per sparsity pattern, paper beside."""

    frame = comparison_table(runs)
    rows = []
    for r in frame.itertuples(index=False):
        base = r.method.split(" (")[0]
        paper_pattern = "unstructured 50%" if r.pattern == "-" else r.pattern
        # the paper's Table 2 starts every step from the dense model: no reference for sequential init
        ref = None if r.method.endswith("(sequential)") else TABLE2_LLAMA7B.get(paper_pattern, {}).get(base)
        rows.append({"method": r.method, "pattern": r.pattern, "a_bwt": r.a_bwt, "m_bwt": r.m_bwt, "a_ppl": r.a_ppl,
                     "m_ppl": r.m_ppl, **{f"{PAPER} {k}": ref[i] if ref else None
                                          for i, k in enumerate(("a_bwt", "m_bwt", "a_ppl", "m_ppl"))}})
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


TABLES = {"comparison": comparison_table, "table1": table1, "table2": table2, "table3": table3,
          "appendix_e": appendix_e}
def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).map(_fmt)


def to_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas + tabulate), numbers to three decimals, missing values as –."""
    return _text(frame).to_markdown(index=False, disable_numparse=True)


def to_latex(frame: pd.DataFrame) -> str:
    """A booktabs LaTeX table through pandas' Styler, every cell and header escaped (``%``, ``_``, ``&``)."""
    styler = _text(frame).style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, column_format="l" * 2 + "r" * (len(frame.columns) - 2))


def write_table(frame: pd.DataFrame, sweep: Path, name: str, skipped: list[tuple[str, str]] = ()) -> str:
    md = to_markdown(frame)
    note = "".join(f"\n- skipped {where}: {why}" for where, why in skipped)
    (sweep / f"{name}.md").write_text(md + ("\n\nJobs not in this table:" + note if note else "") + "\n")
    (sweep / f"{name}.tex").write_text(to_latex(frame) + "\n")
    frame.to_csv(sweep / f"{name}.csv", index=False)
    return md


# The COPAL paper's reference figures (LLaMA-7B, Table 2), printed beside our tables.
# pattern -> method -> (a_bwt, m_bwt, a_ppl, m_ppl); None where the paper prints WS or "–"
TABLE2_LLAMA7B: dict[str, dict[str, tuple]] = {
    "unstructured 50%": {
        "dense": (None, None, 7.714, 10.120),
        "magnitude": ("WS", "WS", 30.246, 49.670),
        "sparsegpt": (0.591, 0.690, 10.166, 13.253),
        "wanda": (0.569, 1.072, 9.991, 13.626),
        "copal": (0.016, 0.032, 9.728, 12.585),
    },
    "2:4": {
        "sparsegpt": (4.365, 6.391, 15.744, 21.771),
        "wanda": (1.667, 3.192, 16.154, 23.266),
        "copal": (0.009, 0.075, 15.335, 21.159),
    },
    "4:8": {
        "sparsegpt": (1.929, 3.045, 11.924, 15.884),
        "wanda": (0.771, 1.645, 11.929, 16.631),
        "copal": (0.038, 0.075, 11.734, 15.532),
    },
}
