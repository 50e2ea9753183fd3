"""Per-state checkpoints in the job directory, so that a killed job resumes where it stopped.

Every distinct state is saved as it completes (``states/<id>.pt``: evaluations, bit-packed masks,
achieved sparsity, timings). A state that later steps start from also saves what they need
(``states/<id>.carry.pt``: the pruned weights for sequential init, a method's memory such as COPAL's
accumulated G; with ``run.offload.memory=disk`` the files it refers to stay in the offload folder), removed once
every child has run. The dense perplexities are ``states/dense.pt``.

States are written by a :class:`~copal_exp.io.checkpoint.BackgroundWriter` while the next step computes; a
state enters the index only once its files are complete, so a job killed mid-write recomputes it.
``written`` counts files, bytes, writer seconds and the seconds the job waited.

``states/index.json`` is the commit record: the configuration (for resume checks) and the size and
SHA-256 of every file above, the offload files a carry refers to included. A file is part of the
job only once the index names it, so a process killed between writing a file and the index leaves
an orphan that the next run removes. Every file is verified against the index when read: a damaged
one stops the job with a message naming it and how to recover, never a bare unpickling traceback.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from copal_exp.errors import IntegrityError
from copal_exp.io.offload import file_handles
from copal_exp.io.storage import load_torch, read_json, save_torch, sha256_file, tmp_target, verify_file, write_json


# One background thread that runs file writes in the order they were submitted: the job computes the
# next step while the previous state's files go to disk. A failed write is not lost in the thread: it is
# raised in the job at its next submission or wait.
class BackgroundWriter:
    """Runs submitted callables one at a time, in order, on a single worker thread."""

    def __init__(self, name: str = "writer"):
        self.name = name
        self.waited_seconds = 0.0  # time the job spent waiting in :meth:`flush`
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; first raises the error of any earlier write that failed."""
        self.raise_failed()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._pending.append(self._executor.submit(fn, *args))

    def raise_failed(self) -> None:
        """Raise the error of a finished write that failed (finished writes are forgotten)."""
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            future.result()

    def flush(self) -> None:
        """Wait for every write submitted so far; raise the first failure."""
        start = time.perf_counter()
        pending, self._pending = self._pending, []
        try:
            for future in pending:
                future.result()
        finally:
            self.waited_seconds += time.perf_counter() - start


STATE_DIR = "states"
INDEX = "index.json"
DENSE = "dense.pt"
FORMAT = "copal_exp.protocol.states/2"


OWN_NAME = re.compile(r"^(dense|.+-[0-9a-f]{8}(\.carry)?)\.pt$")  # what :meth:`StateStore.save` names files


def state_id(key: tuple) -> str:
    readable = "-".join(str(k) for k in key)[:80]
    return f"{readable}-{hashlib.sha1(repr(key).encode()).hexdigest()[:8]}"


def _recover(path: Path) -> str:
    if path.name == INDEX:
        return (f"Without a valid index the saved states cannot be trusted: delete {path.parent} to recompute every "
                "state (results.json keeps what was reported so far), or restore the file from a backup.")
    return (f"Delete {path} (and {path.name.replace('.carry.pt', '.pt') if path.name.endswith('.carry.pt') else path.stem + '.carry.pt'}"
            " if present) and re-run the same command: the job recomputes that state and resumes.")


class StateStore:
    """The ``states/`` folder of one job directory."""

    def __init__(self, job_dir: str | Path):
        self.dir = Path(job_dir) / STATE_DIR
        self.index_path = self.dir / INDEX
        self.index: dict[str, Any] | None = None
        self._counts = {"files": 0, "bytes": 0, "writer_seconds": 0.0}
        self._writer = BackgroundWriter("states-writer")
        self._lock = threading.Lock()
        if self.index_path.is_file():
            self.index = read_json(self.index_path, _recover(self.index_path))
            if self.index.get("format") != FORMAT:
                raise IntegrityError(f"{self.index_path}: format {self.index.get('format')!r}, expected {FORMAT!r}. "
                                     + _recover(self.index_path))
        elif (self.dir / "manifest.json").is_file():
            raise IntegrityError(
                f"{self.dir} was written by an older copal_exp without checksums, so its states cannot be verified: "
                "delete that folder to recompute them (results.json keeps what was reported), or use another output "
                "directory")

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved configuration the states were computed with (``None`` for a new directory)."""
        return None if self.index is None else self.index["config"]

    def initialise(self, resolved: dict[str, Any]) -> None:
        """Record the configuration (a new directory), once the caller has checked it may use the directory."""
        if self.index is None:
            self.index = {"format": FORMAT, "config": resolved, "files": {}}
            self._commit()

    def _commit(self, new: dict[str, Any] | None = None, drop: str | None = None) -> None:
        with self._lock:
            self.index["files"].update(new or {})
            if drop is not None:
                self.index["files"].pop(drop, None)
            write_json(self.index_path, self.index)

    def _save(self, obj: Any, name: str, offload: list[str] | None = None) -> dict[str, Any]:
        entry = save_torch(obj, self.dir / name)
        if offload:
            entry["offload"] = {p: {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for p in offload}
        self._counts["files"] += 1
        self._counts["bytes"] += entry["bytes"]
        return entry

    @property
    def written(self) -> dict[str, float]:
        """Files and bytes written so far, the writer's seconds and the seconds the job waited for it."""
        return {**self._counts, "waited_seconds": self._writer.waited_seconds}

    def flush(self) -> None:
        """Wait until every state submitted so far is on disk and in the index."""
        self._writer.flush()

    def _load(self, name: str) -> Any:
        path = self.dir / name
        entry = self.index["files"][name]
        for offloaded, expected in (entry.get("offload") or {}).items():
            verify_file(offloaded, expected, f"It holds part of the state saved in {path}. " + _recover(path))
        return load_torch(path, entry, _recover(path))

    # -- inputs ----------------------------------------------------------------------------------
    def bind_inputs(self, inputs: dict[str, Any]) -> None:
        """Tie the states to the inputs they are computed from (model fingerprint, each dataset's tokens):
        recorded by the first run, compared by every later one; a mismatch is refused, naming what differs,
        so that no result is built from two different datasets or models."""
        from copal_exp.errors import JobDirError
        from copal_exp.io.identity import input_differences

        recorded = self.index.get("inputs")
        if recorded is None:
            self.index["inputs"] = inputs
            self._commit()
            return
        diff = input_differences(recorded, inputs)
        if diff:
            raise JobDirError(
                f"{self.dir.parent} holds states computed on other inputs than this run reads:\n  " + "\n  ".join(diff)
                + "\nNothing was changed. Restore the original input to resume, or give this run another output "
                "directory (hydra.run.dir=... / hydra.sweep.dir=...) to start afresh.")

    @property
    def inputs(self) -> dict[str, Any] | None:
        return (self.index or {}).get("inputs")

    # -- dense -----------------------------------------------------------------------------------
    def save_dense(self, ppl: dict[str, float], zeroshot: dict[str, Any] | None = None) -> None:
        self.flush()
        self._commit({DENSE: self._save({"dense_ppl": ppl, "zeroshot": zeroshot}, DENSE)})

    def load_dense(self) -> dict[str, float] | None:
        self.flush()
        return self._load(DENSE)["dense_ppl"] if DENSE in self.index["files"] else None

    def load_dense_zeroshot(self) -> dict[str, Any] | None:
        """The dense model's zero-shot scores saved with its perplexities (``None``: not scored yet)."""
        self.flush()
        return self._load(DENSE).get("zeroshot") if DENSE in self.index["files"] else None

    # -- states ----------------------------------------------------------------------------------
    def save(self, step) -> None:
        """Queue a completed state with its carry (if any) for writing; the index names both only once both
        are written."""
        sid = state_id(step.key)
        carry = None
        if step.weights is not None or step.memory is not None:
            memory = None if step.memory is None else {"tensors": step.memory.tensors, "steps": step.memory.steps}
            carry = {"weights": step.weights, "memory": memory}
        record = {"key": step.key, "ppl": step.ppl, "masks": step.masks, "sparsity": step.sparsity,
                  "seconds": step.seconds, "zeroshot": step.zeroshot}
        self._writer.submit(self._write_state, sid, record, carry)

    def _write_state(self, sid: str, record: dict[str, Any], carry: dict[str, Any] | None) -> None:
        start = time.perf_counter()
        new = {}
        if carry is not None:
            offload = file_handles(((carry["memory"] or {}).get("tensors") or {}).values())
            new[f"{sid}.carry.pt"] = self._save(carry, f"{sid}.carry.pt", offload)
        new[f"{sid}.pt"] = self._save(record, f"{sid}.pt")
        self._commit(new)
        self._counts["writer_seconds"] += time.perf_counter() - start

    def load_record(self, key: tuple) -> dict[str, Any] | None:
        """The verified record of one state (evaluations, masks, sparsity), or ``None`` if it was not saved."""
        self.flush()
        name = f"{state_id(key)}.pt"
        return self._load(name) if self.index is not None and name in self.index["files"] else None

    def drop_carry(self, key: tuple) -> None:
        """Forget a carry no step needs any more (after its pending write, in order)."""
        self._writer.submit(self._drop_carry, f"{state_id(key)}.carry.pt")

    def _drop_carry(self, name: str) -> None:
        if name in self.index["files"]:
            self._commit(drop=name)
        (self.dir / name).unlink(missing_ok=True)

    def load_all(self, make_step) -> dict[tuple, Any]:
        """Every saved state, verified and rebuilt with ``make_step(record, carry)``."""
        self.flush()
        steps = {}
        files = self.index["files"] if self.index else {}
        for name in sorted(files):
            if name.endswith(".carry.pt") or name == DENSE:
                continue
            record = self._load(name)
            carry_name = name[: -len(".pt")] + ".carry.pt"
            carry = self._load(carry_name) if carry_name in files else None
            steps[tuple(record["key"])] = make_step(record, carry)
        return steps

    # -- clean-up --------------------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Drop from the index every file that is no longer there (a user followed the advice to delete a
        damaged state, or a disk lost it), and a carry whose state record or offload files are gone, so that
        the job recomputes those states instead of stopping at "missing". Returns the names dropped."""
        if self.index is None:
            return []
        files = self.index["files"]
        gone = {name for name, entry in files.items()
                if not (self.dir / name).is_file() or any(not Path(p).is_file() for p in entry.get("offload") or {})}
        for name in [n for n in files if n.endswith(".carry.pt")]:
            record = name[: -len(".carry.pt")] + ".pt"
            if record not in files or record in gone:
                gone.add(name)
        for name in sorted(gone):
            self._commit(drop=name)
            (self.dir / name).unlink(missing_ok=True)  # a carry kept without its record (the index named it)
        return sorted(gone)

    def referenced_offload_files(self) -> set[str]:
        files = (self.index or {}).get("files", {})
        return {str(Path(p).resolve()) for entry in files.values() for p in (entry.get("offload") or {})}

    def remove_orphans(self) -> list[Path]:
        """Delete the files in ``states/`` that this store's own naming says it wrote but the index does not
        name (a killed job's half-saved state, its temporary files); anything else there is left alone."""
        removed = []
        if self.dir.is_dir():
            known = set((self.index or {}).get("files", {})) | {INDEX}
            for path in self.dir.iterdir():
                target = tmp_target(path)
                ours = (target is not None and (target == INDEX or OWN_NAME.match(target))) or (
                    path.name not in known and OWN_NAME.match(path.name))
                if path.is_file() and ours:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed
