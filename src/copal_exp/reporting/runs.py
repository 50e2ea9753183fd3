"""Finished jobs read back from their result files: collected, labelled, and one-permutation jobs merged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from copal_exp.errors import ResultsError
from copal_exp.io.results import RESULTS_FILE, read_results
from copal_exp.pruning.allocation import Allocation
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import method_class


def prunes(results: dict[str, Any]) -> bool:
    return method_class(results["config"]["method"]["name"]).prunes


def run_label(results: dict[str, Any]) -> str:
    """The method's own table label for its options and init (e.g. ``wanda (global)``, ``copal (token, row)``)."""
    method = results["config"]["method"]
    allocation = Allocation.from_config(results["config"].get("sparsity"))
    return method_class(method["name"]).label(method, method.get("init", "global")) + allocation.label


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


SWEEP_RECORD = "multirun.yaml"


def _walk(root: Path, unreadable: list[tuple[str, str]]) -> list[Path]:
    """Every folder under ``root`` (itself included), in order; folders the walk cannot open are added to
    ``unreadable`` with the operating system's reason instead of being passed over in silence."""
    def refused(exc: OSError) -> None:
        unreadable.append((str(exc.filename), f"cannot be read ({exc.strerror or exc}): its jobs are not in this report"))

    folders = []
    for folder, subfolders, _ in os.walk(root, onerror=refused):
        subfolders.sort()
        folders.append(Path(folder))
    return folders


def _last_logged_error(job_dir: Path) -> str | None:
    """The last ERROR line of the job's ``copal_exp.log`` (Hydra's file format ``[time][name][LEVEL] - msg``)."""
    try:
        lines = (job_dir / "copal_exp.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.split("] - ", 1)[-1] for line in lines if "][ERROR] - " in line]
    return errors[-1] if errors else None


def sweep_jobs(record: Path) -> list[tuple[Path | None, list[str]]] | None:
    """The jobs a Hydra sweep record (``multirun.yaml``) launched: ``(job directory, overrides)`` each, in job
    number order, the directory ``None`` where the sweep's ``subdir`` is not the job number (such jobs are
    known by their overrides only). ``None`` when the record cannot be expanded (another sweeper plugin)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        hydra = OmegaConf.to_container(OmegaConf.load(record).hydra, resolve=False)
        if not str(hydra["sweeper"].get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = [f"{k}={v}" for k, v in (hydra["sweeper"].get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *hydra["overrides"]["task"]])
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception:  # noqa: BLE001 - a record we cannot expand lists nothing (the scan still reports every folder)
        return None
    numbered = str(hydra["sweep"].get("subdir")) == "${hydra.job.num}"
    return [(record.parent / str(num) if numbered else None, job) for num, job in enumerate(jobs)]


def _missing_job(job_dir: Path | None, overrides: list[str]) -> tuple[str, str]:
    """Why a job its sweep launched left no results record."""
    if job_dir is None:
        return f"sweep job {' '.join(overrides)}", "named by the sweep's multirun.yaml, but no job folder records it"
    if not job_dir.is_dir():
        return str(job_dir), f"never started (no job folder; overrides {' '.join(overrides)})"
    error = _last_logged_error(job_dir)
    if error:
        return str(job_dir), f"refused before it computed anything: {error}"
    return str(job_dir), "left no results.json: still starting, or killed before its first record (see its copal_exp.log)"


def collect(sweep: Path, merge: bool = True, skipped: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every complete job under ``sweep``; per-permutation jobs (``order.index``) merged into one run.

    Jobs that cannot be reported are left out and, when ``skipped`` is a list, appended to it as
    ``(job directory, reason)``: a damaged record, a failed, interrupted or running job, a folder that cannot
    be read, and every job a sweep's ``multirun.yaml`` launched that left no ``results.json`` (refused by
    validation, never started).
    """
    skipped = [] if skipped is None else skipped
    runs = []
    folders = _walk(Path(sweep), skipped)
    recorded = set()
    for folder in folders:
        path = folder / RESULTS_FILE
        if not path.is_file():
            continue
        recorded.add(folder)
        try:
            results = read_results(path)
        except ResultsError as exc:
            skipped.append((str(folder), str(exc).replace(f"{path} ", f"{RESULTS_FILE} ", 1)))
            continue
        status = results.get("status")
        if status != "complete":
            reasons = {"failed": f"failed: {results.get('error') or 'no error recorded'}",
                       "interrupted": "interrupted (re-run the same command to resume it)",
                       "running": "still running (or killed: re-run the same command to resume it)"}
            skipped.append((str(folder), reasons.get(status) or f"status {status!r}, not complete"))
            continue
        missing = [k for k in ("config", "datasets", "dense_ppl", "permutations", "summary") if not results.get(k)]
        if missing:
            skipped.append((str(folder), f"complete but lacks {missing} (written by another program?)"))
            continue
        results["_path"] = str(folder)
        runs.append(results)
    unreadable = {Path(where) for where, _ in skipped}
    for record in (folder / SWEEP_RECORD for folder in folders):
        if not record.is_file():
            continue
        jobs = sweep_jobs(record)
        if jobs is None:
            continue
        if any(job_dir is None for job_dir, _ in jobs):  # jobs known by overrides: those with a record are found
            found = {tuple(sorted(_job_overrides(folder))) for folder in recorded if folder.is_relative_to(record.parent)}
            jobs = [(d, o) for d, o in jobs if tuple(sorted(o)) not in found]
        for job_dir, overrides in jobs:
            if job_dir in recorded or job_dir in unreadable:
                continue
            skipped.append(_missing_job(job_dir, overrides))
    return merge_permutation_jobs(runs) if merge else runs


def _job_overrides(job_dir: Path) -> list[str]:
    """The overrides a job's ``.hydra/overrides.yaml`` records, as the sweeper spells them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        listed = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
        return [f"{o.get_key_element()}={o.get_value_element_as_str()}"
                for o in OverridesParser.create().parse_overrides(listed)]
    except Exception:  # noqa: BLE001 - no readable record: the job is not matched (and so listed as missing)
        return []


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
