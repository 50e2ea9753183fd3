"""Plain result files: ``results.json`` (the whole record) and ``ppl_matrices.csv`` (long format)."""

from __future__ import annotations

import csv
import io
import json
import platform
from pathlib import Path
from typing import Any

from copal_exp.storage import write_text

RESULTS_FILE = "results.json"
MATRICES_FILE = "ppl_matrices.csv"
CSV_FIELDS = ["method", "init", "pattern", "order", "step", "step_dataset", "dataset", "ppl"]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("copal_exp", "torch", "transformers", "hydra-core", "datasets", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def matrix_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (permutation, step): the order as ``a>b>c``, the step (from 1), its dataset, the
    perplexity on every dataset, the mask change and sparsity — the rows of the CSV, the W&B history
    and table, and anything else that lists matrices."""
    return [{"permutation": k, "order": ">".join(perm["order"]), "step": t + 1, "step_dataset": perm["order"][t],
             "ppl": dict(zip(results["datasets"], row)), "mask_change": perm["mask_change"][t],
             "sparsity": perm["sparsity"][t]}
            for k, perm in enumerate(results.get("permutations", [])) for t, row in enumerate(perm["ppl_matrix"])]


def _protect_complete(path: Path, results: dict[str, Any]) -> None:
    """A complete ``results.json`` is replaced only by a complete one of the same configuration."""
    from copal_exp.errors import JobDirError
    from copal_exp.identity import result_config

    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # damaged: nothing trustworthy to protect
    if not isinstance(old, dict) or old.get("status") != "complete":
        return
    same = result_config(old.get("config") or {}) == result_config(results.get("config") or {})
    if results.get("status") != "complete" or not same:
        raise JobDirError(f"{path} holds complete results; refusing to replace them with "
                          f"{'another configuration' if not same else repr(results.get('status'))}'s record")


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` and ``ppl_matrices.csv`` atomically (safe to call after every step)."""
    out = Path(out_dir)
    _protect_complete(out / RESULTS_FILE, results)
    write_text(out / RESULTS_FILE, json.dumps(results, indent=2, default=str))
    method = results.get("config", {}).get("method", {})
    pattern = results.get("sparsity", {}).get("pattern", "")
    rows = [{"method": method.get("name"), "init": method.get("init", ""), "pattern": pattern, "order": row["order"],
             "step": row["step"], "step_dataset": row["step_dataset"], "dataset": name, "ppl": ppl}
            for row in matrix_rows(results) for name, ppl in row["ppl"].items()]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / MATRICES_FILE, text.getvalue())
    return out / RESULTS_FILE


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / RESULTS_FILE if path.is_dir() else path).read_text())
