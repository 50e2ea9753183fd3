"""One job of the protocol: validate the composed config, claim the job directory, read the data (tokenizer
only), plan memory, load the model, run every order, and write the results after every step. Whatever
was computed is kept when the job fails or is interrupted."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from copal_exp.errors import JobDirError, JobInterrupted
from copal_exp.io.checkpoint import StateStore
from copal_exp.io.paths import default_root
from copal_exp.io.results import library_versions, write_results
from copal_exp.models.anatomy import prunable_linears, weight_matrix
from copal_exp.protocol.continual import export_state, load_state, model_identity
from copal_exp.protocol.costs import describe_plan, record_costs
from copal_exp.protocol.jobdir import (
    JobLock,
    check_configuration,
    check_export_target,
    check_ownership,
    completed_results,
    earlier_results,
    offload_folder,
    remove_orphans,
    remove_temporary_files,
    unwritable,
    write_hydra_files,
)
from copal_exp.protocol.launchers import sigterm_interrupts, torch_threads
from copal_exp.protocol.memory import peak_rss_bytes, plan_for_job
from copal_exp.protocol.runner import Experiment, load_job_data
from copal_exp.protocol.settings import Settings, check_context, check_model, validate
from copal_exp.protocol.tracking import make_logger

log = logging.getLogger("copal_exp")


def run_job(cfg: DictConfig, out_dir: str | Path, hydra_cfg: DictConfig | None = None) -> dict:
    """Validate ``cfg``, claim the job directory, load data and model, run the protocol, writing results
    after every step. ``hydra_cfg`` (from the command line) is written to ``.hydra/`` once the run is accepted."""
    from copal_exp.models.loading import context_before_load

    settings = validate(cfg)  # fails before any model is loaded
    check_context(settings, context_before_load(settings.model))
    out_dir = Path(out_dir)
    check_ownership(out_dir, settings.data.root or default_root())  # before the lock file is written into it
    blocked = unwritable(out_dir)
    if blocked is not None:  # nothing can be recorded there: a finished job is reported, anything else refused
        check_configuration(out_dir, settings.resolved, StateStore(out_dir).config if out_dir.is_dir() else None)
        if out_dir.is_dir() and (done := _already_done(out_dir)) is not None:
            return done
        raise JobDirError(f"the output directory {out_dir} cannot be written ({blocked} is read-only for this user): "
                          "give the run a folder it can write (hydra.run.dir=... / hydra.sweep.dir=...)")
    launcher = dict(hydra_cfg.launcher) if hydra_cfg is not None and "launcher" in hydra_cfg else None
    with JobLock(out_dir), sigterm_interrupts(), torch_threads(settings.run.threads, launcher):
        store = StateStore(out_dir)
        check_configuration(out_dir, settings.resolved, store.config)  # refuses before anything is written
        if hydra_cfg is not None and completed_results(out_dir) is None:
            write_hydra_files(out_dir, cfg, hydra_cfg)
        store.initialise(settings.resolved)
        dropped = store.reconcile()
        if dropped:
            log.warning("%d file(s) named in %s are gone: their states are recomputed (%s)", len(dropped),
                        store.index_path, ", ".join(dropped))
        removed = store.remove_orphans() + remove_temporary_files(out_dir)
        if not settings.run.offload.dir:  # the job's own offload folder
            removed += remove_orphans(offload_folder(None, out_dir), store.referenced_offload_files())
        if removed:
            log.info("removed %d file(s) left by an interrupted run: %s", len(removed),
                     ", ".join(str(p) for p in removed[:5]) + (" …" if len(removed) > 5 else ""))
        if (done := _already_done(out_dir)) is not None:
            return done
        if settings.state.export:
            check_export_target(settings.state.export)  # before the model loads, not after the whole job
        log.info("%s", describe_plan(settings, settings.device, torch.get_num_threads()))
        return _run(settings, out_dir, store, hydra_cfg)


def _already_done(out_dir: Path) -> dict | None:
    """The directory's complete results of this (already checked) configuration, logged as nothing to do."""
    done = completed_results(out_dir)
    if done is not None:
        log.info("%s already holds the complete results of this configuration: nothing to do", out_dir)
    return done


def _run(settings: Settings, out_dir: Path, store: StateStore, hydra_cfg=None) -> dict:
    from copal_exp.models.loading import load_model, load_tokenizer

    extra = {"versions": library_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "threads": torch.get_num_threads()}
    earlier = earlier_results(out_dir) or {}  # an earlier attempt's partial record: kept if this one fails early
    swept = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    tracker = make_logger(settings.logger, settings.resolved, out_dir, swept)

    def save(results):
        extra["peak_rss_bytes"] = peak_rss_bytes()
        write_results({**results, **extra}, out_dir)  # local files first
        tracker.update(results)

    experiment = None
    windows: dict[str, int] = {}
    try:
        tokenizer = load_tokenizer(settings.model)
        data, data_root = load_job_data(settings, tokenizer)  # data problems surface before the model loads
        device = settings.device
        windows = {name: int(split.evaluation.shape[0]) for name, split in data.items()}
        plan = plan_for_job(settings, device, max(windows.values()), out_dir)  # refuses what cannot fit; decides residency
        extra["memory_plan"] = plan.record()
        model, tokenizer = load_model(settings.model, device)
        check_model(settings, model)  # shapes and context, before any calibration
        state, method = settings.state, settings.method_class
        initial_memory, continual = None, {}
        if state.load or state.export:
            identity = model_identity(settings.model.name, {n: weight_matrix(lin) for n, lin in
                                                            prunable_linears(model, settings.selection).items()})
        if state.load:
            initial_memory, meta = load_state(state.load, identity, method, settings.method_options)
            continual = {"loaded_from": str(state.load), "datasets_seen_before": meta["datasets_seen"]}
            log.info("continuing %s after %s from %s", method.name, meta["datasets_seen"], state.load)
        experiment = Experiment(settings, model, tokenizer, on_progress=save, store=store,
                                initial_memory=initial_memory, keep_final_state=bool(state.export),
                                resident=plan.resident, memory_place=plan.memory_place)
        results = experiment.run(data, data_root)
        if state.export:
            history = continual.get("datasets_seen_before", []) + list(settings.orders[0])
            export_state(state.export, experiment.final_state().memory, identity, history, method,
                         settings.method_options)
            continual.update({"exported_to": str(state.export), "datasets_seen": history})
            log.info("%s state after %s exported to %s", method.name, history, state.export)
        if continual:
            results["continual"] = continual
    except BaseException as exc:  # keep everything computed so far, marked as failed or interrupted
        # SystemExit: submitit's handler of the cluster's preemption/time-limit signal, after requeueing the job
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        # the job's own configuration always: a job that failed before its first state resumes with the same command
        partial = {"config": settings.resolved, "datasets": settings.datasets, **earlier,
                   **(experiment.results if experiment else {}),
                   "status": "interrupted" if interrupted else "failed",
                   "error": str(exc) if isinstance(exc, JobInterrupted) else
                   "preempted or timed out: requeued by the cluster" if isinstance(exc, SystemExit) else
                   f"{type(exc).__name__}: {exc}"}
        try:
            store.flush()  # states already computed reach the disk (and the index) before the lock is released
            write_results({**partial, **extra}, out_dir)
        except Exception as write_error:  # noqa: BLE001 - e.g. the disk is full: report the original error
            log.error("could not record the job's status in %s: %s", out_dir, write_error)
        tracker.finish(partial, failed=True)
        if experiment is not None:
            record_costs(settings, settings.device, torch.get_num_threads(), experiment.computed_states(), windows,
                     experiment.walls)
        raise
    record_costs(settings, settings.device, torch.get_num_threads(), experiment.computed_states(), windows,
                     experiment.walls)
    extra["peak_rss_bytes"] = peak_rss_bytes()
    write_results({**results, **extra}, out_dir)
    tracker.finish(results)
    log.info("results written to %s", out_dir / "results.json")
    return results
