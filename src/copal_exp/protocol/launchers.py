"""How jobs run under launchers: the command line's launcher defaults, each job's torch thread count
(many jobs side by side without oversubscribing cores), and SIGTERM as an interruption.

Several torch processes each using every core run many times slower than one, so a job sets its
intra-op threads from what it was given: ``run.threads`` when set; under SLURM the CPUs allocated to
it (``SLURM_CPUS_PER_TASK``, else ``SLURM_CPUS_ON_NODE``); under the joblib launcher the cores divided
by the jobs that run at once; otherwise torch's default (every core).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from copal_exp.errors import JobInterrupted
from copal_exp.registry import Registry

MULTIRUN_FLAGS = ("-m", "--multirun")
#: Hydra's flags that take a value (``--cfg job``); ``--info`` takes one optionally
WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
              "-cd", "--experimental-rerun")
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def normalise_argv(argv: list[str], cores: int | None = None) -> list[str]:
    """Hydra's flags (``-m``, ``--cfg job``, ``--help``, …) moved in front of the overrides, wherever the
    user typed them (plain Hydra rejects an override before ``-m`` and after ``--cfg job``); with the
    joblib launcher and no ``hydra.launcher.n_jobs``, as many jobs at once as there are cores (the
    plugin's default, 10, would oversubscribe a smaller machine)."""
    flags, rest, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token in WITH_VALUE and i + 1 < len(argv):
            flags += [token, argv[i + 1]]
            i += 2
            continue
        if token == "--info" and i + 1 < len(argv) and argv[i + 1] in INFO_CHOICES:
            flags += [token, argv[i + 1]]
            i += 2
            continue
        (flags if token.startswith("-") else rest).append(token)
        i += 1
    multirun = [f for f in flags if f in MULTIRUN_FLAGS][:1]
    flags = multirun + [f for f in flags if f not in MULTIRUN_FLAGS]
    for rules in LAUNCHERS.values():
        rest += rules().argv_defaults(rest, cores or usable_cores())
    return flags + rest


class LauncherRules:
    """What copal_exp does under one way of launching jobs: defaults it adds to the command line, and the
    torch threads a job takes there. A new launcher is one subclass registered with :func:`launcher_rules`."""

    def argv_defaults(self, overrides: list[str], cores: int) -> list[str]:
        """Overrides to add to the command line's ``overrides``."""
        return []

    def threads(self, launcher: Mapping[str, Any], environ: Mapping[str, str], cores: int) -> tuple[int, str] | None:
        """``(threads, why)`` for a job under this launcher, or ``None`` when it does not apply."""
        return None


#: the launchers with rules of their own, consulted in this order (the first that applies decides)
LAUNCHERS: Registry = Registry("launcher rules")
launcher_rules = LAUNCHERS.register


@launcher_rules("slurm")
class SlurmRules(LauncherRules):
    """A job inside a SLURM allocation (submitit's launcher, or ``srun``): the CPUs allocated to it."""

    def threads(self, launcher, environ, cores):
        for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
            if environ.get("SLURM_JOB_ID") and environ.get(name, "").isdigit():
                return max(1, int(environ[name])), f"{name}={environ[name]}"
        return None


@launcher_rules("joblib")
class JoblibRules(LauncherRules):
    """``hydra/launcher=joblib``: as many jobs at once as there are cores (the plugin's default of 10 would
    oversubscribe a smaller machine), each with the cores divided by the jobs running at once."""

    choice = "hydra/launcher=joblib"

    def argv_defaults(self, overrides, cores):
        if self.choice in overrides and not any(a.lstrip("+~").startswith("hydra.launcher.n_jobs=") for a in overrides):
            return [f"hydra.launcher.n_jobs={cores}"]
        return []

    def threads(self, launcher, environ, cores):
        if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
            return None
        n_jobs = int(launcher.get("n_jobs") or -1)
        at_once = cores if n_jobs < 1 else min(n_jobs, cores)
        return max(1, cores // at_once), f"{cores} cores / {at_once} joblib jobs at once"


def job_threads(configured: int | None, launcher: Mapping[str, Any] | None, environ: Mapping[str, str] = os.environ,
                cores: int | None = None) -> tuple[int | None, str]:
    """``(threads, why)`` for this job: ``run.threads``, else the first launcher rule that applies; ``threads``
    is ``None`` when torch's default is kept."""
    cores = cores or usable_cores()
    if configured:
        return int(configured), "run.threads"
    for rules in LAUNCHERS.values():
        decided = rules().threads(launcher or {}, environ, cores)
        if decided is not None:
            return decided
    return None, "torch default"


@contextmanager
def torch_threads(configured: int | None, launcher: Mapping[str, Any] | None) -> Iterator[int]:
    """Run the block with :func:`job_threads` applied to torch, restored afterwards (a job run in-process,
    from a test or a notebook, leaves its caller's setting as it was); yields the thread count in use."""
    import torch

    threads, why = job_threads(configured, launcher)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
        logging.getLogger(__name__).info("torch threads: %d (%s)", threads, why)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def preemption_signal() -> signal.Signals:
    """The signal submitit's job handler checkpoints and requeues on (``SUBMITIT_PREEMPT_SIGNAL``, else USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


@contextmanager
def sigterm_interrupts():
    """Within the block SIGTERM (SLURM, ``kill``, container runtimes) raises :class:`JobInterrupted`, as
    Ctrl-C raises ``KeyboardInterrupt``: the job stops between two statements and keeps what it computed.

    Except after a preemption: when the cluster's preemption / time-limit signal has reached a handler
    installed before the block (submitit's, which asks SLURM to requeue the job and then exits), the
    SIGTERM that SLURM sends for the requeue is ignored, so the job leaves as requeued (its states kept),
    never as failed — whichever of the requeue's SIGTERM and submitit's exit comes first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    preempted = threading.Event()

    def interrupt(signum, frame):
        if preempted.is_set():
            logging.getLogger(__name__).warning("SIGTERM after the preemption signal: the job is being requeued")
            return
        raise JobInterrupted(signum)

    usr = preemption_signal()
    on_preemption = signal.getsignal(usr)

    def preemption(signum, frame):
        preempted.set()
        on_preemption(signum, frame)

    previous = signal.signal(signal.SIGTERM, interrupt)
    if callable(on_preemption):  # only a handler someone installed (submitit's); never the default action
        signal.signal(usr, preemption)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if callable(on_preemption):
            signal.signal(usr, on_preemption)
