"""Names that let a researcher find a run: its W&B name and group, and the code version it ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def wandb_group(logger: dict[str, Any] | None, out_dir: Path, model: str) -> str:
    """The W&B group of a job: ``logger.group`` when set, else :func:`sweep_group` (one rule for the run
    that logs and the view that later filters on it)."""
    return (logger or {}).get("group") or sweep_group(out_dir, model)


def sweep_group(out_dir: Path, model: str) -> str:
    """Runs of one sweep share a group: the sweep directory below ``multirun/`` (e.g.
    ``paper_smollm2_135m/table2/pruned``), or ``<model>/single`` for a single run."""
    out_dir = Path(out_dir).resolve()
    if not out_dir.name.isdigit():
        return f"{model}/single"
    parts = out_dir.parent.parts
    return "/".join(parts[parts.index("multirun") + 1:]) if "multirun" in parts else out_dir.parent.name


def run_name(config: dict[str, Any], pattern: str, swept: list[str]) -> str:
    """``model · method label · pattern`` and the swept keys that are not already in it."""
    from copal_exp.methods import method_class

    method = config["method"]
    label = method_class(method["name"]).label(method, method.get("init", "global"))
    extra = [s.lstrip("+~") for s in swept if not s.lstrip("+~").startswith(("method", "sparsity", "model="))]
    index = config.get("order", {}).get("index")
    return " · ".join([config["model"]["name"], label, pattern, *extra,
                       *([f"order {index}"] if index is not None and not any("order" in e for e in extra) else [])])


def code_version() -> dict[str, str]:
    """The package version and, from a git checkout, its commit (with ``+dirty`` for local changes)."""
    import importlib.metadata
    import subprocess

    out = {"copal_exp": importlib.metadata.version("copal_exp")}
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            out["commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out
