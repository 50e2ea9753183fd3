"""The job's log file handler: Hydra's ``copal_exp.log`` in the job directory, which never stops a run.

Hydra configures logging before the job starts; with its plain ``logging.FileHandler`` an output
directory that cannot be written (a finished job on a read-only filesystem, a folder of another user)
ends the run in ``Unable to configure handler 'file'`` with a traceback. This handler, when the file
cannot be opened, logs to the console only, and the job itself then says in one line what it can do:
report a finished job's results, or refuse to run there, naming the folder.
"""

from __future__ import annotations

import logging


class JobLogFile(logging.FileHandler):
    def __init__(self, filename, mode: str = "a", encoding: str | None = None, delay: bool = False, errors=None):
        self.unavailable: OSError | None = None
        try:
            super().__init__(filename, mode, encoding, delay, errors)
        except OSError as exc:  # unwritable: keep the handler, write nothing (the job names the folder)
            self.unavailable = exc
            super().__init__(filename, mode, encoding, delay=True, errors=errors)

    def emit(self, record: logging.LogRecord) -> None:
        if self.unavailable is None:
            super().emit(record)
