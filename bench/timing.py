"""The one timer of the benchmarks: median wall seconds of repeated calls, after optional warm-up calls, each
call bracketed by an optional synchronisation (a GPU's ``torch.cuda.synchronize``) so that queued kernels are
counted. Plain Python: the GPU suite imports it on a bare PyTorch image."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_run(fn: Callable[[], Any], repeats: int = 1, warmup: int = 0,
               synchronize: Callable[[], None] | None = None) -> tuple[float, Any]:
    """``(median seconds of repeats calls of fn, the last call's result)`` after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: at least one timed call is needed")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def median_seconds(fn: Callable[[], Any], repeats: int = 1, warmup: int = 0,
                   synchronize: Callable[[], None] | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    return median_run(fn, repeats, warmup, synchronize)[0]
