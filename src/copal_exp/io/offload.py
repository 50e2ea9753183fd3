"""Where large per-layer tensors live between uses: the device, CPU memory, or disk (safetensors).

Used for COPAL's accumulated sensitivity G (one fp32 per pruned weight, carried between steps) and
for the captured calibration activations (``nsamples × seqlen × hidden`` in the model's dtype,
carried between layers). Disk storage writes one safetensors file per tensor set and reads it back
lazily, so host memory holds only the layer being processed.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

PLACES = ("device", "cpu", "disk")
#: how :meth:`Offloader.store` names its files (a job's clean-up removes only files named so)
OWN_FILE = re.compile(r"-[0-9a-f]{12}\.safetensors$")


class Offloader:
    def __init__(self, place: str = "cpu", device: str | torch.device = "cpu", directory: str | Path | None = None):
        if place not in PLACES:
            raise ValueError(f"offload place {place!r}: allowed values are {PLACES}")
        if place == "disk" and directory is None:
            raise ValueError("offload to disk needs a directory (run.offload.dir)")
        self.place, self.device = place, device
        self.directory = Path(directory) if directory is not None else None

    def store(self, tensor: torch.Tensor, name: str = "t"):
        """Keep ``tensor`` where configured; returns a handle for :meth:`load` (a tensor or a file path)."""
        if self.place == "device":
            return tensor.to(self.device)
        if self.place == "cpu":
            return tensor.cpu()
        from safetensors.torch import save_file

        from copal_exp.io.storage import storage_error

        path = self.directory / f"{name.replace('/', '_')}-{uuid.uuid4().hex[:12]}.safetensors"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_file({"t": tensor.detach().cpu().contiguous()}, str(path))
        except OSError as exc:  # disk full: no partial file left, the path named
            path.unlink(missing_ok=True)
            raise storage_error(path, exc) from exc
        return str(path)

    @staticmethod
    def load(handle, device: str | torch.device = "cpu") -> torch.Tensor:
        if isinstance(handle, torch.Tensor):
            return handle.to(device)
        from safetensors.torch import load_file

        return load_file(handle, device=str(device))["t"]


def file_handles(handles) -> list[str]:
    """The handles that are files (tensors offloaded to disk)."""
    return [h for h in handles if isinstance(h, str)]


def home_device(module: torch.nn.Module) -> torch.device | None:
    """Where ``module``'s first parameter (or buffer) lives; ``None`` when it holds no tensor."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


@contextmanager
def resident(module: torch.nn.Module, device) -> Iterator[None]:
    """Keep ``module`` on ``device`` for the block and put it back where it was afterwards; a no-op when it
    is already there: a model kept on the GPU for the whole job (``run.resident``) is never moved, and one
    evaluation round moves a host-held model once, not once per dataset."""
    where, target = home_device(module), torch.device(device)  # ``cuda`` matches any ``cuda:N``
    if where is None or (where.type == target.type and target.index in (None, where.index)):
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to(where)


def discard(handles) -> None:
    """Delete the files behind handles nothing will read again (tensors in memory are left to the GC)."""
    for handle in handles:
        if isinstance(handle, str):
            Path(handle).unlink(missing_ok=True)


def materialize(handle) -> torch.Tensor:
    """A CPU tensor from any handle (for export and checkpoints)."""
    return Offloader.load(handle, "cpu")


def return_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; a no-op elsewhere). Without it a
    released carry's gigabytes stay in the process's heap and resident memory only grows."""
    import ctypes
    import ctypes.util

    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_libc = None
