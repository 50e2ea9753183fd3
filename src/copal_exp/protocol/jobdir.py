"""A job's output directory: one process at a time, one configuration, nothing finished overwritten.

Before a job writes anything into its directory it takes an exclusive lock (released by the
operating system when the holder dies, so a killed job never leaves the directory locked), compares
its configuration with the one the directory already holds (``states/index.json`` or
``results.json``) and refuses a different one, listing every differing key as ``old → new``. A job
whose ``results.json`` is already complete for the same configuration is not run again. Temporary
files and offload files left by a killed job are removed once the lock is held — only those that the
job's index or its own file naming proves it wrote.

A folder that is not empty and holds no copal_exp record (``states/index.json`` or ``results.json``)
is somebody else's: it is refused, named, before anything is written into it; so is an output
directory inside the data root.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from copal_exp.errors import JobDirError, ResultsError
from copal_exp.io.identity import result_config
from copal_exp.io.offload import OWN_FILE
from copal_exp.io.results import RESULTS_FILE, read_results
from copal_exp.io.storage import tmp_target

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"
#: what a directory holds before the job's first record: Hydra's log, the lock, Hydra's own files
BEFORE_FIRST_RECORD = {"copal_exp.log", LOCK_FILE, ".hydra"}
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, empty sub-folders left out (they hold nothing to lose)."""
    return [p for p in sorted(folder.iterdir()) if not (p.is_dir() and not any(p.rglob("*")))]


def check_ownership(job_dir: Path, data_root: str | Path | None = None) -> None:
    """Refuse an output directory that is somebody else's folder, before anything is written into it.

    A job directory is one that holds a copal_exp record (``states/index.json``, ``results.json``), or
    nothing but what Hydra and the job write before their first record. Any other non-empty folder is
    refused with its foreign entries named: the job's clean-up would otherwise treat them as its own.
    An output directory inside ``data_root`` is refused too (the job's files would mix with the data)."""
    job_dir = Path(job_dir)
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if job_dir.resolve() == root or root in job_dir.resolve().parents:
            raise JobDirError(f"the output directory {job_dir} lies inside data.root ({root}): the job's states and "
                              "results would mix with the datasets. Give it another one (hydra.run.dir=... / "
                              "hydra.sweep.dir=...)")
    if not job_dir.is_dir() or (job_dir / "states" / "index.json").is_file() or (job_dir / RESULTS_FILE).is_file():
        return
    foreign = [p for p in _entries(job_dir) if p.name not in BEFORE_FIRST_RECORD]
    hydra = job_dir / ".hydra"
    if hydra.is_dir():
        foreign += [p for p in _entries(hydra) if p.name not in HYDRA_FILES]
    if foreign:
        shown = ", ".join(str(p.relative_to(job_dir)) + ("/" if p.is_dir() else "") for p in foreign[:6])
        raise JobDirError(f"{job_dir} is not empty and is not a copal_exp job directory (it holds {shown}"
                          f"{' …' if len(foreign) > 6 else ''}, and no results.json or states/index.json): nothing "
                          "in it was changed. Give the run an empty or new folder (hydra.run.dir=... / "
                          "hydra.sweep.dir=...)")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every key whose value differs (missing keys shown as ``(absent)``)."""
    a, b = flatten(old), flatten(new)
    missing = "(absent)"
    return [f"{key}: {json.dumps(a.get(key, missing), default=str)} → {json.dumps(b.get(key, missing), default=str)}"
            for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing)]


class JobLock:
    """An exclusive ``flock`` on ``<job dir>/job.lock``; a second process is refused at once."""

    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / LOCK_FILE
        self.fh = None

    def acquire(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise JobDirError(f"{self.path.parent} is in use by another copal_exp process ({holder}); wait for it to "
                              "finish (or stop it), or give this run another output directory "
                              "(hydra.run.dir=... / hydra.sweep.dir=...)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def earlier_results(job_dir: Path) -> dict[str, Any] | None:
    """The job's earlier ``results.json`` record, or ``None`` when there is none or it is damaged or
    foreign (kept as it is, not read: the job's checksummed ``states/`` are what resume trusts)."""
    try:
        return read_results(job_dir)
    except ResultsError as exc:
        log.warning("%s; its states/ are used instead", exc)
        return None


def check_configuration(job_dir: Path, resolved: dict[str, Any], saved: dict[str, Any] | None) -> None:
    """Refuse a directory that holds another configuration's work, naming every key that differs.

    ``saved`` is the configuration recorded with the directory's states (``None`` when it has none);
    ``results.json`` is compared too, so that finished results are protected even without ``states/``.
    """
    new = result_config(resolved)
    results = earlier_results(job_dir)
    for what, old in (("states/", saved), (RESULTS_FILE, (results or {}).get("config"))):
        if old is None:
            continue
        diff = config_differences(result_config(old), new)
        if diff:
            raise JobDirError(
                f"{job_dir} holds the states of a different configuration (recorded in its {what}); this run "
                f"differs in {len(diff)} key(s):\n  " + "\n  ".join(diff) + "\nIts results and states were not "
                "changed. Re-run with the recorded values to resume or extend it, or give this run another output "
                "directory (hydra.run.dir=... / hydra.sweep.dir=...) to start afresh.")


def completed_results(job_dir: Path) -> dict[str, Any] | None:
    """The directory's results if they are complete (same configuration already checked), else ``None``."""
    results = earlier_results(job_dir)
    return results if results is not None and results.get("status") == "complete" else None


def unwritable(path: str | Path) -> Path | None:
    """The folder that stops ``path`` being written (itself, or its nearest existing ancestor when it does not
    exist yet), or ``None`` when it can be written."""
    folder = Path(path).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return None if os.access(folder, os.W_OK | os.X_OK) else folder


def check_export_target(path: str | Path) -> None:
    """``state.export`` before the job computes anything: a folder that can be written, and not one holding an
    exported state already (an earlier export is never replaced without the user's word)."""
    target = Path(path).expanduser()
    if (target / "state.json").is_file():
        raise JobDirError(f"state.export={path}: {target} already holds an exported state (state.json); nothing was "
                          "changed. Give state.export another folder, or remove that one to replace it")
    if target.is_file():
        raise JobDirError(f"state.export={path}: {target} is a file; give state.export a folder")
    blocked = unwritable(target)
    if blocked is not None:
        raise JobDirError(f"state.export={path}: {blocked} cannot be written; give state.export a folder this "
                          "user can write")


def remove_temporary_files(job_dir: Path) -> list[Path]:
    """Delete the temporary files a killed process of the job left while writing its own files (the lock is
    held): ``.results.json.<pid>.tmp`` and Hydra's files' under ``.hydra/``; nothing else is touched."""
    removed = []
    for folder, targets in ((Path(job_dir), {RESULTS_FILE}), (Path(job_dir) / ".hydra", HYDRA_FILES)):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and tmp_target(path) in targets:
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def remove_orphans(folder: Path, keep: set[str]) -> list[Path]:
    """Delete the job's offload files under ``folder`` (named as :class:`~copal_exp.io.offload.Offloader`
    names them) whose path is not in ``keep``: a killed job's tensors. Files of other names are left alone."""
    removed = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and OWN_FILE.search(path.name) and str(path.resolve()) not in keep:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_hydra_files(job_dir: Path, cfg, hydra_cfg) -> None:
    """Hydra's ``.hydra/{config,hydra,overrides}.yaml``, written by us only once the run is accepted
    (``hydra.output_subdir: null`` stops Hydra writing them before a refusal could protect them)."""
    from omegaconf import OmegaConf

    from copal_exp.io.storage import write_text

    folder = Path(job_dir) / ".hydra"
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task))))


def offload_folder(configured: str | None, job_dir: Path | None) -> Path:
    """``run.offload.dir``, or ``<job dir>/offload`` (the job's own, cleaned of a killed run's files)."""
    return Path(configured).expanduser() if configured else (job_dir or Path.cwd()) / "offload"
