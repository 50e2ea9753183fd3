"""The errors a user can act on. Each message names the key, file or directory at fault and what to do.

The command line prints a :class:`UserError` as one message, without a traceback
(``HYDRA_FULL_ERROR=1`` shows the traceback too); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, files or machine, explained by its message."""


class ConfigError(UserError, ValueError):
    """A config value that cannot run; the message names the key, the value and what is allowed."""


class DataError(UserError, ValueError):
    """Input data that cannot be read; the message names the dataset, split, file and (where known) line."""


class IntegrityError(UserError, ValueError):
    """A file read back that is damaged or fails its checksum; the message names it and how to recover."""


class ResultsError(UserError, ValueError):
    """A ``results.json`` that cannot be read or is not a copal_exp results record; the message names it."""


class JobDirError(UserError, ValueError):
    """A job directory that this run may not use (another configuration's results, or another live process)."""


class StateError(UserError, ValueError):
    """A continual state that does not fit this run (model, options, layers)."""


class StorageError(UserError, OSError):
    """A file that could not be written (disk full, permissions); the message names the path."""


class NonFiniteError(RuntimeError):
    """Activations or perplexities stopped being finite; the message names the order, step and layer."""


class JobInterrupted(KeyboardInterrupt):
    """SIGTERM (SLURM, ``kill``, container runtimes), handled like Ctrl-C: the job stops, marked interrupted."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"received {self.signal_name}")


def fail(message: str):
    """End a command on a user error: ``Error: message`` as one line on stderr, exit status 2 (as every
    copal_exp command does)."""
    import sys

    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)
