"""What this machine has and what this process holds: host memory, GPU memory, free disk, resident
memory now and at its peak (Linux ``/proc`` and ``getrusage``)."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import torch


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_limits(device: str, folder: Path) -> tuple[int, int | None, int | None]:
    """Host memory, GPU memory (``None`` without CUDA) and free disk space under ``folder``."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu = torch.cuda.get_device_properties(torch.device(device)).total_memory if str(device).startswith("cuda") else None
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return host, gpu, shutil.disk_usage(folder).free
