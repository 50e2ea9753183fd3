"""``python -m copal_exp [overrides] [-m|--multirun] …``: the experiment's command line.

Hydra's own parser rejects an override placed before ``-m``; this entry point accepts ``-m`` and
``--multirun`` anywhere on the line, then hands everything to Hydra.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from copal_exp.errors import JobInterrupted, UserError
from copal_exp.protocol.job import run_job
from copal_exp.protocol.launchers import normalise_argv

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger("copal_exp")


def _to_log_files(level: int, message: str) -> None:
    """Record ``message`` in the job's log file only (the console gets it once, on stderr)."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    try:
        run_job(cfg, out_dir, hydra_cfg)
    except UserError as exc:  # a message the user can act on; the traceback only with HYDRA_FULL_ERROR=1
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _to_log_files(logging.ERROR, str(exc))
        print(f"Error: {exc}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # Hydra runs the sweep's other jobs, then reports this one
            raise type(exc)(str(exc)) from None
        sys.exit(2)
    except KeyboardInterrupt as exc:
        name = exc.signal_name if isinstance(exc, JobInterrupted) else "SIGINT"
        message = (f"Interrupted by {name}: everything computed so far is kept in {out_dir} (status 'interrupted'); "
                   "re-run the same command to resume")
        if os.environ.get("SUBMITIT_FOLDER"):  # a submitit job: an error the waiting sweep receives and reports
            raise RuntimeError(message) from None
        print(message, file=sys.stderr)
        sys.exit(128 + (exc.signum if isinstance(exc, JobInterrupted) else signal.SIGINT))


def main() -> None:
    from copal_exp.io.results import code_version

    code_version()  # the commit of the code loaded now, recorded by every job of this process
    sys.argv = [sys.argv[0], *normalise_argv(sys.argv[1:])]
    hydra_entry()


if __name__ == "__main__":
    main()
