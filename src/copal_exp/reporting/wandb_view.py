"""A W&B report that compares one sweep, defined from its local result files (works offline).

    python -m copal_exp.reporting.wandb_view SWEEP_DIR [--project P] [--entity E] [--upload]

Writes ``SWEEP_DIR/wandb_view.json``: the sweep's W&B groups (the run set's filter), the config keys
that differ between its jobs (run-comparer columns; W&B flattens the config with dots), and the panels — the summary metrics side by
side, one line plot per dataset order with each dataset's perplexity against that order's own step
axis (``perm<k>/step``) and, for a stream of several datasets, its forgetting curve (``perm<k>/forgetting``),
and the ``ppl_matrices`` and ``forgetting`` tables. ``--upload`` (needs the
``wandb-workspaces`` package and a W&B login) saves it as a report in the project; offline runs
must be synced first (``wandb sync SWEEP_DIR/*/wandb/offline-run-*``). Jobs the view leaves out (failed,
interrupted, refused, unreadable: see ``copal_exp.reporting.runs.collect``) are listed under ``omitted``, in
the report's description and on the console.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from copal_exp.errors import fail
from copal_exp.protocol.jobdir import unwritable
from copal_exp.protocol.tracking import wandb_group
from copal_exp.reporting.runs import collect, model_name
from copal_exp.reporting.tables import swept_keys

SUMMARY_METRICS = ["a_bwt", "m_bwt", "a_ppl", "m_ppl"]
VIEW_FILE = "wandb_view.json"


def run_group(results: dict[str, Any]) -> str:
    """The W&B group the job logged to."""
    return wandb_group((results["config"].get("logger") or {}).get("group"), Path(results["_path"]), model_name(results))


def view_definition(sweep: Path, project: str | None = None, entity: str | None = None) -> dict[str, Any]:
    omitted: list[tuple[str, str]] = []
    runs = collect(sweep, merge=False, skipped=omitted)
    if not runs:
        fail(f"{sweep}: no finished job to compare" + "".join(f"; omitted {w}: {why}" for w, why in omitted))
    datasets = list(runs[0]["datasets"])
    orders = max(len(r["permutations"]) for r in runs)
    logger = runs[0]["config"].get("logger") or {}
    swept = swept_keys(runs)  # config keys whose value differs between the jobs
    panels: list[dict[str, Any]] = [{"type": "bar", "title": "summary (perplexity points)", "metrics": SUMMARY_METRICS}]
    for k in range(orders):
        panels.append({"type": "line", "title": f"order {k}: perplexity after each step", "x": f"perm{k}/step",
                       "y": [f"perm{k}/ppl/{d}" for d in datasets]})
    if len(datasets) > 1:  # a stream: how much the earlier domains have lost after each step, per order
        for k in range(orders):
            panels.append({"type": "line", "title": f"order {k}: forgetting of the earlier domains (ppl points)",
                           "x": f"perm{k}/step", "y": [f"perm{k}/forgetting"]})
    panels += [{"type": "table", "title": "perplexity matrices", "key": "ppl_matrices"},
               *([{"type": "table", "title": "forgetting tables", "key": "forgetting"}] if len(datasets) > 1 else []),
               {"type": "run_comparer", "title": "configurations",
                "columns": ["model.name", "method.name", "method.init", "sparsity.pattern", *swept]}]
    return {"format": "copal_exp.reporting.wandb_view/1", "title": f"copal_exp · {sweep.name}",
            "project": project or logger.get("project") or "copal_exp", "entity": entity or logger.get("entity"),
            "groups": sorted({run_group(r) for r in runs}), "runs": len(runs), "datasets": datasets,
            "swept_keys": swept, "panels": panels,
            "omitted": [{"job": where, "reason": why} for where, why in omitted]}


def write_view(sweep: Path, project: str | None = None, entity: str | None = None,
               out: Path | None = None) -> Path:
    """Write the view definition to ``out`` (a folder; default ``sweep``) and return its path."""
    view = view_definition(Path(sweep), project, entity)
    path = Path(out or sweep) / VIEW_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(view, indent=2))
    return path


def build_report(view: dict[str, Any]):
    """The view as a ``wandb_workspaces`` report (not saved)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as exc:
        raise SystemExit("--upload needs the wandb-workspaces package: pip install wandb-workspaces") from exc
    groups = ", ".join(repr(g) for g in view["groups"])
    runset = wr.Runset(entity=view["entity"] or "", project=view["project"], name=view["title"],
                       filters=f"Metric('Group') in [{groups}]")
    panels = []
    for panel in view["panels"]:
        if panel["type"] == "bar":
            panels.append(wr.BarPlot(title=panel["title"], metrics=panel["metrics"]))
        elif panel["type"] == "line":
            panels.append(wr.LinePlot(title=panel["title"], x=panel["x"], y=panel["y"]))
        elif panel["type"] == "table":
            panels.append(wr.WeavePanelSummaryTable(table_name=panel["key"]))
        elif panel["type"] == "run_comparer":
            panels.append(wr.RunComparer(diff_only="split"))
    return wr.Report(project=view["project"], entity=view["entity"] or "", title=view["title"],
                     description=f"{view['runs']} jobs; groups {view['groups']}; swept {view['swept_keys']}"
                                 + "".join(f"; omitted {o['job']}: {o['reason']}" for o in view.get("omitted", [])),
                     blocks=[wr.PanelGrid(runsets=[runset], panels=panels)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.reporting.wandb_view", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--project")
    parser.add_argument("--entity")
    parser.add_argument("--upload", action="store_true", help="save the report to W&B (wandb-workspaces, online)")
    parser.add_argument("--out", type=Path, help=f"folder for {VIEW_FILE} (default: the sweep directory)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        fail(f"{args.sweep}: no such directory (give a sweep or job directory holding results.json files)")
    blocked = unwritable(args.out or args.sweep)
    if blocked is not None:
        fail(f"{blocked} cannot be written: give --out DIR for {VIEW_FILE}")
    path = write_view(args.sweep, args.project, args.entity, args.out)
    view = json.loads(path.read_text())
    for omitted in view["omitted"]:
        print(f"omitted {omitted['job']}: {omitted['reason']}")
    print(f"W&B view written to {path}: {view['runs']} job(s)" + (f", {len(view['omitted'])} omitted" if view["omitted"] else ""))
    if args.upload:
        report = build_report(json.loads(path.read_text()))
        report.save()
        print(f"report saved: {report.url}")


if __name__ == "__main__":
    main()
