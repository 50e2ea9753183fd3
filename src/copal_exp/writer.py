"""One background thread that runs file writes in the order they were submitted.

The job computes the next step while the previous state's files go to disk. A failed write is not
lost in the thread: it is raised in the job at its next submission or wait.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


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
