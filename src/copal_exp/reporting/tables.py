"""The paper's tables (and the comparison table) as pandas frames, written as Markdown, CSV and LaTeX."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from copal_exp.pruning.allocation import Allocation
from copal_exp.pruning.methods import reference_method
from copal_exp.registry import Registry
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


@dataclass(frozen=True)
class MetricColumn:
    """A metric column of the comparison table: its value for a job's run record, and for the dense row
    computed from a job's dense perplexities (``None``: the column is empty there)."""

    name: str
    doc: str
    value: Callable[[dict[str, Any]], Any]
    dense: Callable[[dict[str, float]], Any] | None = None


#: the comparison table's metric columns, in order; a new metric is one :func:`metric_column` registration
METRIC_COLUMNS: Registry = Registry("metric column")


def metric_column(name: str, doc: str, dense: Callable[[dict[str, float]], Any] | None = None):
    """Register ``fn(run) -> value`` as the metric column ``name`` (``None`` where it does not apply)."""

    def wrap(fn):
        METRIC_COLUMNS.register(name)(MetricColumn(name, doc, fn, dense))
        return fn

    return wrap


def _bwt(key: str):
    def value(r: dict[str, Any]):
        if not prunes(r):
            return None
        return "WS" if r.get("weight_stasis") else r["summary"][key]  # masks never moved after step 1: paper's WS

    return value


metric_column("a_bwt", "mean backward transfer over the orders (perplexity points; WS: weight stasis)")(_bwt("a_bwt"))
metric_column("m_bwt", "max backward transfer over the orders (WS: weight stasis)")(_bwt("m_bwt"))
metric_column("a_ppl", "mean final perplexity over orders and datasets",
              dense=lambda ppl: sum(ppl.values()) / len(ppl))(lambda r: r["summary"]["a_ppl"])
metric_column("m_ppl", "max final perplexity over orders and datasets",
              dense=lambda ppl: max(ppl.values()))(lambda r: r["summary"]["m_ppl"])
metric_column("orders", "dataset orders in the job", dense=lambda ppl: 0)(lambda r: len(r["permutations"]))


#: identity columns ``comparison_table(identity=True)`` adds: what a method is, never parsed from its label
IDENTITY = ("method_name", "init", "allocation")


def comparison_table(runs: list[dict[str, Any]], identity: bool = False) -> pd.DataFrame:
    """One row per job; ``model`` and ``datasets`` columns when the jobs differ in them, and a column for
    every other swept key (``data.nsamples``, …) so that no two rows look alike; a dense row per model
    and dataset list, from that model's own dense perplexities, unless a dense job is there. The metric
    columns are :data:`METRIC_COLUMNS`; ``identity`` adds the method's registered name and init."""
    from copal_exp.io.identity import result_config
    from copal_exp.protocol.jobdir import flatten

    swept = swept_keys(runs)
    rows = []
    dense_jobs = set()
    for r in runs:
        dense = not prunes(r)
        if dense:
            dense_jobs.add((model_name(r), datasets_label(r)))
        flat = flatten(result_config(r["config"]))
        method = r["config"]["method"]
        rows.append({"model": model_name(r), "datasets": datasets_label(r), "method": run_label(r),
                     "pattern": pattern_label(r), **{k: None if dense else json.dumps(flat.get(k)).strip('"')
                                                     for k in swept},
                     **{c.name: c.value(r) for c in METRIC_COLUMNS.values()},
                     "method_name": method["name"], "init": method.get("init", "global"),
                     "allocation": Allocation.from_config(r["config"].get("sparsity")).kind})
    dense_rows = []
    for r in runs:  # every job measured its dense model too
        group = (model_name(r), datasets_label(r))
        if group in dense_jobs:
            continue
        dense_jobs.add(group)
        name = reference_method().name
        dense_rows.append({"model": group[0], "datasets": group[1], "method": name, "pattern": "-",
                           **{k: None for k in swept},
                           **{c.name: c.dense(r["dense_ppl"]) if c.dense else None for c in METRIC_COLUMNS.values()},
                           "method_name": name, "init": "global", "allocation": "uniform"})
    frame = pd.DataFrame(dense_rows + rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["model", "datasets"], kind="stable").reset_index(drop=True)
    for column in ("model", "datasets"):
        if frame[column].nunique() <= 1:
            frame = frame.drop(columns=column)
    return frame if identity else frame.drop(columns=list(IDENTITY))


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def table1(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 1: BWT per method and init, ``WS`` where the masks never moved after step 1."""
    frame = comparison_table(runs, identity=True)
    columns = [c for c in ("model", "datasets", "method", "pattern", "a_bwt", "m_bwt") if c in frame.columns]
    return frame[frame["method_name"] != reference_method().name][columns].reset_index(drop=True)


PAPER = "paper LLaMA-7B"  # the paper's numbers are LLaMA-7B's, whatever model the sweep used


def table2(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Paper Table 2: a-/m-bwt, a-/m-ppl per method, one column block per sparsity pattern, paper beside."""

    frame = comparison_table(runs, identity=True)
    rows = []
    for r in frame.itertuples(index=False):
        paper_pattern = "unstructured 50%" if r.pattern == "-" else r.pattern
        # the paper's Table 2 starts every step from the dense model: no reference for sequential init
        # nor for a layer-wise allocation (OWL) the paper did not use
        ref = (None if r.init == "sequential" or r.allocation != "uniform"
               else TABLE2_LLAMA7B.get(paper_pattern, {}).get(r.method_name))
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


def zeroshot_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """The Wanda-paper zero-shot table: a dense row per model, then one row per job; a column per task (its
    reported metric in the header: ``acc`` or ``acc_norm``) and their mean, each the mean ± std over the job's
    orders of the last step's model (computed from the permutations, so merged one-order jobs work too)."""
    from copal_exp.metrics.zeroshot import REPORTED, task_values

    scored = [r for r in runs if (r.get("zeroshot") or {}).get("tasks")]
    if not scored:
        return pd.DataFrame()
    tasks = list(dict.fromkeys(t for r in scored for t in r["zeroshot"]["tasks"]))
    records = {t: rec for r in scored for t, rec in (((r["zeroshot"].get("data") or {}).get("tasks")) or {}).items()}
    moved = {t for t, rec in records.items() if rec.get("split") != rec.get("harness_split")}
    # a column scored on another split than the papers' says so in its own header, not only in the description
    header = {t: f"{t} ({REPORTED.get(t, 'acc')}{', ' + records[t]['split'] + '*' if t in moved else ''})"
              for t in tasks}

    def cells(finals: list[dict[str, float]]) -> dict[str, str]:
        out = {}
        for column in [*tasks, "mean"]:
            values = [f[column] for f in finals if column in f]
            out[header.get(column, column)] = (_pm(float(np.mean(values)), float(np.std(values))) if values else None)
        return out

    rows, dense_seen = [], set()
    for r in scored:
        if r.get("zeroshot_dense") and model_name(r) not in dense_seen:
            dense_seen.add(model_name(r))
            rows.append({"model": model_name(r), "method": reference_method().name, "pattern": "-", "orders": 1,
                         **cells([task_values(r["zeroshot_dense"])])})
    for r in scored:
        if not prunes(r):
            continue
        finals = [task_values(p["zeroshot"][-1]) for p in r["permutations"] if p.get("zeroshot") and p["zeroshot"][-1]]
        rows.append({"model": model_name(r), "method": run_label(r), "pattern": pattern_label(r), "orders": len(finals),
                     **cells(finals)})
    frame = pd.DataFrame(rows)
    return frame.drop(columns="model") if frame["model"].nunique() <= 1 else frame


def job_forgetting(r: dict[str, Any]) -> dict[str, Any]:
    """A run's forgetting summary (:func:`~copal_exp.metrics.forgetting.forgetting_summary`) recomputed from its
    complete permutations (so merged one-order jobs and older records work too)."""
    from copal_exp.metrics.forgetting import forgetting_curve, forgetting_summary, forgetting_table

    complete = [p for p in r["permutations"] if p.get("complete", True)]
    columns = [[r["datasets"].index(d) for d in p["order"]] for p in complete]
    curves = [forgetting_curve(forgetting_table(p["ppl_matrix"], c)) for p, c in zip(complete, columns)]
    return forgetting_summary(curves) if curves and len({len(c) for c in curves}) == 1 else {}


def forgetting_table_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Forgetting along the stream: per job, after each step t ≥ 2 the mean perplexity change of the domains
    seen before t since right after each was calibrated, mean ± std over the job's orders, and the worst
    order's value per step (the last step's mean is a-bwt, its worst m-bwt)."""
    rows = []
    for r in runs:
        if not prunes(r):
            continue
        f = job_forgetting(r)
        if not f or f["steps"] < 2:
            continue
        row = {"method": run_label(r), "pattern": pattern_label(r), "orders": f["orders"]}
        for t in range(1, f["steps"]):
            row[f"step {t + 1}"] = _pm(f["mean"][t], f["std"][t])
        row["worst per step"] = " / ".join(f"{v:.3f}" for v in f["worst"][1:])
        rows.append(row)
    return pd.DataFrame(rows)


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


def _values(runs: list[dict[str, Any]], read) -> str:
    seen: list[str] = []
    for r in runs:
        value = str(read(r))
        if value not in seen:
            seen.append(value)
    return ", ".join(seen) or "–"


def description(runs: list[dict[str, Any]]) -> list[str]:
    """What a table compares, one line each: model(s), datasets, sparsity pattern(s), calibration,
    evaluation windows and the code that produced the jobs."""
    def calibration(r):
        d = r["config"]["data"]
        return f"{d['nsamples']} segments × {d['seqlen']} tokens per step, seed {d['seed']}"

    def windows(r):
        cap = r["config"]["eval"].get("max_windows")
        return f"{r['config']['data']['seqlen']}-token windows, {'at most ' + str(cap) if cap else 'all'} per dataset"

    def code(r):
        v = r.get("versions") or {}
        return f"copal_exp {v.get('copal_exp', '?')}" + (f", commit {v['commit']}" if v.get("commit") else "")

    def zeroshot(r):
        data, limit = r["zeroshot"].get("data") or {}, r["config"]["eval"].get("tasks_limit")
        records = data.get("tasks") or {}
        if data.get("source") == "offline" and records:
            first = next(iter(records.values()))
            where = f"offline {first['package']}=={first['version']} validation splits"
        else:
            where = "the harness's own datasets (Hub)"
        moved = sorted(t for t, rec in records.items() if rec.get("split") != rec.get("harness_split"))
        note = (f"; {', '.join(moved)} (marked *): validation where the papers score test (not comparable to published numbers)"
                if moved else "")
        return f"{data.get('harness', 'lm-eval')}, {where}, {'first ' + str(limit) if limit else 'all'} examples per task{note}"

    pruned = [r for r in runs if prunes(r)] or runs
    zeroshot_line = ([f"zero-shot: {_values([r for r in runs if (r.get('zeroshot') or {}).get('tasks')], zeroshot)}"]
                     if any((r.get("zeroshot") or {}).get("tasks") for r in runs) else [])
    return [f"models: {_values(runs, model_name)}",
            f"datasets: {_values(runs, lambda r: ', '.join(r['datasets']))} "
            f"({_values(runs, lambda r: len(r['permutations']))} order(s) per job)",
            f"sparsity: {_values(pruned, pattern_label)}",
            f"calibration: {_values(pruned, calibration)}",
            f"evaluation: {_values(runs, windows)}",
            *zeroshot_line,
            f"code: {_values(runs, code)}"]


def write_table(frame: pd.DataFrame, sweep: Path | None, name: str, skipped: list[tuple[str, str]] = (),
                runs: list[dict[str, Any]] = ()) -> str:
    """Write ``frame`` into the folder ``sweep`` as ``<name>.md`` (opening with what it compares, closing with
    the jobs left out), ``<name>.tex`` (the same opening as comments) and ``<name>.csv``; return the Markdown
    (only that when ``sweep`` is ``None``)."""
    about = description(list(runs)) if runs else []
    md = "\n".join(f"- {line}" for line in about) + ("\n\n" if about else "") + to_markdown(frame)
    note = "".join(f"\n- skipped {where}: {why}" for where, why in skipped)
    if sweep is None:
        return md
    (sweep / f"{name}.md").write_text(md + ("\n\nJobs not in this table:" + note if note else "") + "\n")
    (sweep / f"{name}.tex").write_text("".join(f"% {line}\n" for line in about) + to_latex(frame) + "\n")
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
