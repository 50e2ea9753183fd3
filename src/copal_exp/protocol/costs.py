"""What a job will cost, said before anything loads (docs/protocol.md, "Orders"): its plan's orders, prune
steps and evaluations after prefix sharing, and a run-time estimate from the costs earlier jobs of the same
model measured on this machine.

Every finished (or failed) job adds its measured costs to ``$COPAL_CACHE_DIR/costs/<model>.json``, under
this machine's key (host, device, threads): per method and allocation the seconds of a prune step per
calibration token (its wall time but its evaluations: pruning, restoring, checkpointing, logging), the seconds per evaluated token of a perplexity round,
and per dataset the number of evaluation windows at that ``seqlen``. The estimate of a job is then

    prune steps × median(seconds per calibration token) × nsamples × seqlen
    + evaluations × median(seconds per evaluated token) × windows × seqlen

(zero-shot scoring and the dense evaluation not included). Without an earlier record it says so.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
from pathlib import Path
from typing import Any

from copal_exp.io.paths import cache_root
from copal_exp.io.storage import write_text

log = logging.getLogger(__name__)

#: the most recent samples kept per cost
KEEP = 20
#: phases of a state that are not its prune step
EVALUATION_PHASES = ("evaluation", "zeroshot")


def costs_file(model: str) -> Path:
    return cache_root() / "costs" / f"{model}.json"


def machine_key(device: str, threads: int) -> str:
    return f"{platform.node()}|{device}|{threads} threads"


def method_key(method: str, allocation: str) -> str:
    return method if allocation == "uniform" else f"{method}+{allocation}"


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):  # none yet, or damaged: estimates start over
        return {}


def plan_counts(settings) -> dict[str, Any]:
    """Orders, prune steps (after prefix sharing and without it) and perplexity evaluations of a job: the
    counts its log line says before anything loads and its ``results.json`` records under ``plan``. A method
    that prunes nothing (dense) evaluates each dataset once."""
    orders = len(settings.orders)
    if not settings.method_class.prunes:
        return {"orders": orders, "prune_steps": 0, "prune_steps_without_planner": 0,
                "evaluations": len(settings.datasets)}
    plan = settings.state_plan()
    return {"orders": orders, "prune_steps": plan.prune_steps,
            "prune_steps_without_planner": sum(len(o) for o in settings.orders),
            "evaluations": plan.prune_steps * len(settings.datasets)}


def estimate_seconds(settings, device: str, threads: int) -> tuple[float | None, str]:
    """The estimated run time of the job's prune steps and evaluations, and where it came from."""
    counts = plan_counts(settings)
    if not counts["prune_steps"]:
        return 0.0, "nothing to prune"
    record = _read(costs_file(settings.model.name)).get(machine_key(device, threads))
    if not record:
        return None, f"no earlier job of model={settings.model.name} recorded its costs on this machine"
    key = method_key(settings.method, settings.allocation.name)
    step = record.get("prune", {}).get(key)
    per_token = record.get("evaluation")
    if not step or not per_token:
        missing = f"method={key}" if not step else "an evaluation"
        return None, f"no earlier job of model={settings.model.name} on this machine measured {missing}"
    seqlen, nsamples, cap = settings.data.seqlen, settings.data.nsamples, settings.eval.max_windows
    windows = []
    for name in settings.datasets:
        known = record.get("windows", {}).get(f"{name}@{seqlen}")
        if known is None and cap is None:
            return None, f"the evaluation windows of {name} at data.seqlen={seqlen} are not known yet"
        windows.append(min(v for v in (known, cap) if v is not None))
    step_s = statistics.median(step) * nsamples * seqlen
    round_s = statistics.median(per_token) * sum(windows) * seqlen
    total = counts["prune_steps"] * (step_s + round_s)
    return total, (f"{step_s:.1f} s per {key} step and {round_s:.1f} s per evaluation round, medians of earlier "
                   f"jobs on this machine")


def describe_plan(settings, device: str, threads: int) -> str:
    """The line a job logs before anything loads."""
    c = plan_counts(settings)
    order = settings.resolved.get("order", {}).get("kind", "given")
    shared = (f" ({c['prune_steps_without_planner']} without sharing prefixes)"
              if c["prune_steps_without_planner"] != c["prune_steps"] else "")
    seconds, why = estimate_seconds(settings, device, threads)
    when = f"estimated {_duration(seconds)} ({why})" if seconds is not None else f"no estimate: {why}"
    return (f"plan: {c['orders']} order(s) (order={order}), {c['prune_steps']} prune step(s){shared}, "
            f"{c['evaluations']} perplexity evaluation(s) of {len(settings.datasets)} dataset(s); {when}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def record_costs(settings, device: str, threads: int, states, windows: dict[str, int],
                 walls: dict[tuple, float] | None = None) -> None:
    """Add what this job measured (``states``: its computed states, with per-phase seconds; ``walls``: each
    one's whole step in wall seconds, by key) to the model's costs file. A step's cost is its wall time but
    its evaluations — pruning and everything around it (restoring the dense weights, checkpointing, logging) —
    or, without a wall time, the sum of its phases. Never fails the job: a cache that cannot be written only
    loses the estimate."""
    seqlen, tokens = settings.data.seqlen, settings.data.nsamples * settings.data.seqlen
    walls = walls or {}
    steps, rounds = [], []
    for state in states:
        seconds = state.seconds or {}
        if not seconds:
            continue
        evaluating = sum(v for p, v in seconds.items() if p in EVALUATION_PHASES)
        wall = walls.get(state.key)
        step = wall - evaluating if wall is not None else sum(v for p, v in seconds.items() if p not in EVALUATION_PHASES)
        steps.append(max(step, 0.0) / tokens)
        if "evaluation" in seconds:
            rounds.append(seconds["evaluation"] / (sum(windows.values()) * seqlen))
    if not steps:
        return
    path = costs_file(settings.model.name)
    try:
        whole = _read(path)
        record = whole.setdefault(machine_key(device, threads), {})
        prune = record.setdefault("prune", {})
        key = method_key(settings.method, settings.allocation.name)
        prune[key] = (prune.get(key, []) + steps)[-KEEP:]
        record["evaluation"] = (record.get("evaluation", []) + rounds)[-KEEP:]
        record.setdefault("windows", {}).update({f"{name}@{seqlen}": n for name, n in windows.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(whole, indent=1, sort_keys=True))
    except OSError as exc:
        log.warning("could not record this job's costs in %s: %s", path, exc)
