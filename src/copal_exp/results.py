"""Plain result files: ``results.json`` (the whole record) and ``ppl_matrices.csv`` (long format)."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path
from typing import Any

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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` and ``ppl_matrices.csv`` atomically (safe to call after every step)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / RESULTS_FILE, json.dumps(results, indent=2, default=str))
    cfg = results.get("config", {})
    method = cfg.get("method", {})
    rows = []
    for perm in results.get("permutations", []):
        for t, row in enumerate(perm["ppl_matrix"]):
            for name, ppl in zip(results["datasets"], row):
                rows.append({"method": method.get("name"), "init": method.get("init", ""),
                             "pattern": results.get("sparsity", {}).get("pattern", ""),
                             "order": ">".join(perm["order"]), "step": t + 1, "step_dataset": perm["order"][t],
                             "dataset": name, "ppl": ppl})
    tmp = out / (MATRICES_FILE + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / MATRICES_FILE)
    return out / RESULTS_FILE


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads((path / RESULTS_FILE if path.is_dir() else path).read_text())
