"""Finished jobs read back from their result files: collected, labelled, and one-permutation jobs merged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from copal_exp.errors import ResultsError
from copal_exp.io.results import RESULTS_FILE, read_results
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import method_class


def prunes(results: dict[str, Any]) -> bool:
    return method_class(results["config"]["method"]["name"]).prunes


def run_label(results: dict[str, Any]) -> str:
    """The method's own table label for its options and init (e.g. ``wanda (global)``, ``copal (token, row)``)."""
    method = results["config"]["method"]
    return method_class(method["name"]).label(method, method.get("init", "global"))


def pattern_label(results: dict[str, Any]) -> str:
    if not prunes(results):
        return "-"
    return Pattern.label(results["config"]["sparsity"])


def job_label(results: dict[str, Any], swept: list[str] | tuple[str, ...] = ()) -> str:
    """The method label and pattern, with the values of the ``swept`` keys (``tables.swept_keys``): what
    tells a job apart from the others of its sweep."""
    from copal_exp.io.identity import result_config
    from copal_exp.protocol.jobdir import flatten

    flat = flatten(result_config(results["config"]))
    return ", ".join([f"{run_label(results)} {pattern_label(results)}", *(f"{k}={flat.get(k)}" for k in swept)])


def collect(sweep: Path, merge: bool = True, skipped: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every complete job under ``sweep``; per-permutation jobs (``order.index``) merged into one run.

    Jobs that cannot be reported (damaged file, failed, interrupted or still running) are left out and,
    when ``skipped`` is a list, appended to it as ``(job directory, reason)``.
    """
    skipped = [] if skipped is None else skipped
    runs = []
    for path in sorted(Path(sweep).rglob(RESULTS_FILE)):
        try:
            results = read_results(path)
        except ResultsError as exc:
            skipped.append((str(path.parent), str(exc).replace(f"{path} ", f"{RESULTS_FILE} ", 1)))
            continue
        status = results.get("status")
        if status != "complete":
            reasons = {"failed": f"failed: {results.get('error') or 'no error recorded'}",
                       "interrupted": "interrupted (re-run the same command to resume it)",
                       "running": "still running (or killed: re-run the same command to resume it)"}
            skipped.append((str(path.parent), reasons.get(status) or f"status {status!r}, not complete"))
            continue
        missing = [k for k in ("config", "datasets", "dense_ppl", "permutations", "summary") if not results.get(k)]
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
    from copal_exp.io.identity import result_config

    cfg = result_config(results["config"])
    cfg["order"]["index"] = None
    return json.dumps(cfg, sort_keys=True)


def merge_permutation_jobs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs that differ only in ``order.index`` become one run whose metrics are recomputed over all
    their permutations — the same summary a single ``order=all_perms`` job gives."""
    from copal_exp.metrics.records import metrics

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
