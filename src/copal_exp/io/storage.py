"""Files written and read back: atomic writes, SHA-256 checksums, and errors that name the file.

Every write goes to a temporary file beside its target (``.<name>.<pid>.tmp``) that is renamed over
the target only when complete, so a killed process never leaves a half-written file under a real
name, and a failed write (disk full) removes its temporary file and says which path it was writing.
Checksums are computed while writing (no second pass over large tensors) and verified on reading:
same-size corruption (a flipped bit, an edited number) is detected, never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from copal_exp.errors import IntegrityError, StorageError

TMP_SUFFIX = ".tmp"
CHUNK = 1 << 22
_SAVE_LOCK = threading.Lock()


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def tmp_target(path: Path) -> str | None:
    """The name of the file a temporary file of :func:`atomic_file` (``.<name>.<pid>.tmp``) was being written
    as, or ``None`` when ``path`` is not named like one (a user's file that merely ends in ``.tmp``)."""
    name = Path(path).name
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return None
    target, _, pid = name[1: -len(TMP_SUFFIX)].rpartition(".")
    return target if target and pid.isdigit() else None


def is_tmp(path: Path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_file` (left only by a killed process)."""
    return tmp_target(path) is not None


class HashingWriter:
    """A binary file wrapper that hashes what passes through and remembers an I/O error."""

    def __init__(self, fh):
        self.fh = fh
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            written = self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.digest.update(data)
        self.bytes += len(data)
        return written

    def flush(self) -> None:
        self.fh.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def storage_error(path: Path, exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem = "no space left on the device (or disk quota exceeded)"
    else:
        problem = exc.strerror or str(exc)
    error = StorageError(f"cannot write {path}: {problem}. The previous version of the file, if any, is unchanged "
                         "and no temporary file was left; free space (or set another output directory) and re-run: "
                         "the job resumes from its last saved state")
    error.problem = problem  # the cause alone, for callers that go on without the file (caches)
    return error


@contextmanager
def atomic_file(path: str | Path) -> Iterator[HashingWriter]:
    """Write ``path`` through a temporary file, renamed over it once complete and flushed to disk."""
    path = Path(path)
    tmp = tmp_path(path)
    writer = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            writer = HashingWriter(fh)
            yield writer
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = writer.error if writer is not None and writer.error is not None else exc
        if isinstance(cause, OSError) and not isinstance(cause, StorageError):
            raise storage_error(path, cause) from exc
        raise


def write_bytes(path: str | Path, data: bytes) -> str:
    with atomic_file(path) as fh:
        fh.write(data)
    return fh.hexdigest()


def write_text(path: str | Path, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def save_torch(obj: Any, path: str | Path) -> dict[str, Any]:
    """``torch.save`` atomically; returns ``{"sha256", "bytes"}`` of what was written.

    The zip container's own CRC-32 of every record is turned off for the call (restored after): the
    SHA-256 computed here covers the whole file and is verified on every read, and the CRC made
    ``torch.save`` about twice as slow on large tensors (bench/README.md, "Checkpoints")."""
    import torch

    with _SAVE_LOCK:  # the option is global to torch: one save at a time sets and restores it
        crc = torch.serialization.get_crc32_options()
        torch.serialization.set_crc32_options(False)
        try:
            with atomic_file(path) as fh:
                torch.save(obj, fh)
        finally:
            torch.serialization.set_crc32_options(crc)
    return {"sha256": fh.hexdigest(), "bytes": fh.bytes}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, expected: dict[str, Any] | str, recover: str) -> None:
    """Raise :class:`IntegrityError` unless ``path`` exists with the recorded size and SHA-256."""
    path = Path(path)
    expected = {"sha256": expected} if isinstance(expected, str) else expected
    if not path.is_file():
        raise IntegrityError(f"{path} is missing. {recover}")
    size = path.stat().st_size
    if expected.get("bytes") is not None and size != expected["bytes"]:
        raise IntegrityError(f"{path} is damaged: {size} bytes, {expected['bytes']} were written (truncated or "
                             f"overwritten). {recover}")
    if sha256_file(path) != expected["sha256"]:
        raise IntegrityError(f"{path} is damaged: its SHA-256 differs from the checksum written with it. {recover}")


def load_torch(path: str | Path, expected: dict[str, Any] | str, recover: str) -> Any:
    """``torch.load`` of a file written by :func:`save_torch`, after verifying its checksum."""
    import torch

    verify_file(path, expected, recover)
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler raises, the file is unusable
        raise IntegrityError(f"{path} cannot be read ({type(exc).__name__}: {exc}). {recover}") from None


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def write_json(path: str | Path, obj: dict[str, Any]) -> str:
    """Write a JSON object with a ``sha256`` field over its own canonical content."""
    body = {k: v for k, v in obj.items() if k != "sha256"}
    body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    return write_text(path, json.dumps(body, indent=2, default=str) + "\n")


def read_json(path: str | Path, recover: str) -> dict[str, Any]:
    """Read a file written by :func:`write_json`; a damaged or edited one raises :class:`IntegrityError`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path} cannot be read ({type(exc).__name__}: {exc}). {recover}") from None
    if not isinstance(obj, dict) or "sha256" not in obj:
        raise IntegrityError(f"{path} has no checksum (damaged, or written by another program). {recover}")
    body = {k: v for k, v in obj.items() if k != "sha256"}
    if hashlib.sha256(_canonical(body)).hexdigest() != obj["sha256"]:
        raise IntegrityError(f"{path} is damaged: its content differs from the checksum written with it. {recover}")
    return body
