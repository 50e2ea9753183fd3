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

from copal_exp.config import check_context, check_model, validate
from copal_exp.continual import export_state, load_state, model_identity
from copal_exp.engine import prunable_linears
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
    from copal_exp.models import context_before_load, load_model
    from copal_exp.runner import Experiment

    settings = validate(cfg)  # fails before any model is loaded
    check_context(settings, context_before_load(settings.model))
    extra = {"versions": library_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tracker = make_logger(settings.resolved.get("logger"), settings.resolved, out_dir)

    def save(results):
        write_results({**results, **extra}, out_dir)  # local files first
        tracker.update(results)

    experiment = None
    try:
        model, tokenizer = load_model(settings.model)
        check_model(settings, model)  # shapes and context, before any calibration
        state_cfg = settings.resolved.get("state") or {}
        initial_state, continual = None, {}
        if state_cfg.get("load") or state_cfg.get("export"):
            identity = model_identity(settings.model["name"],
                                      {n: lin.weight.data for n, lin in prunable_linears(model).items()})
        if state_cfg.get("load"):
            initial_state, meta = load_state(state_cfg["load"], identity)
            continual = {"loaded_from": str(state_cfg["load"]), "datasets_seen_before": meta["datasets_seen"]}
            log.info("continuing COPAL after %s from %s", meta["datasets_seen"], state_cfg["load"])
        experiment = Experiment(settings, model, tokenizer, on_progress=save, job_dir=out_dir,
                                initial_state=initial_state, keep_final_state=bool(state_cfg.get("export")))
        results = experiment.run()
        if state_cfg.get("export"):
            final = experiment.steps[experiment.final_keys[0]]
            history = continual.get("datasets_seen_before", []) + list(settings.orders[0])
            export_state(state_cfg["export"], final.method_state, identity, history, settings.method_options)
            continual.update({"exported_to": str(state_cfg["export"]), "datasets_seen": history})
            log.info("COPAL state after %s exported to %s", history, state_cfg["export"])
        if continual:
            results["continual"] = continual
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
