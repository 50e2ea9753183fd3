"""``python -m copal_exp [overrides] [-m|--multirun] …``: the experiment's command line.

Hydra's own parser rejects an override placed before ``-m``; this entry point accepts ``-m`` and
``--multirun`` anywhere on the line, then hands everything to Hydra.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from copal_exp.config import check_model, validate
from copal_exp.results import library_versions, write_results
from copal_exp.tracking import make_logger

CONF_DIR = str(Path(__file__).resolve().parent / "conf")
MULTIRUN_FLAGS = ("-m", "--multirun")

log = logging.getLogger("copal_exp")


def normalise_argv(argv: list[str]) -> list[str]:
    """Move ``-m``/``--multirun`` in front of the overrides, wherever the user typed them."""
    flags = [a for a in argv if a in MULTIRUN_FLAGS]
    rest = [a for a in argv if a not in MULTIRUN_FLAGS]
    return flags[:1] + rest


def run_job(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Validate ``cfg``, load model and data, run the protocol, writing results after every step."""
    from copal_exp.models import load_model
    from copal_exp.runner import Experiment

    settings = validate(cfg)  # fails before any model is loaded
    extra = {"versions": library_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tracker = make_logger(settings.resolved.get("logger"), settings.resolved, out_dir)

    def save(results):
        write_results({**results, **extra}, out_dir)  # local files first
        tracker.update(results)

    experiment = None
    try:
        model, tokenizer = load_model(settings.model)
        check_model(settings, model)  # shapes and context, before any calibration
        experiment = Experiment(settings, model, tokenizer, on_progress=save)
        results = experiment.run()
    except BaseException as exc:  # keep everything computed so far, marked as failed
        partial = {**(experiment.results if experiment else {}), "status": "failed",
                   "error": f"{type(exc).__name__}: {exc}"}
        write_results({**partial, **extra}, out_dir)
        tracker.finish(partial, failed=True)
        raise
    write_results({**results, **extra}, out_dir)
    tracker.finish(results)
    log.info("results written to %s", Path(out_dir) / "results.json")
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_entry(cfg: DictConfig) -> None:
    run_job(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    sys.argv = [sys.argv[0], *normalise_argv(sys.argv[1:])]
    hydra_entry()


if __name__ == "__main__":
    main()
