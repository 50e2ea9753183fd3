"""Checks of one config section each, run by :func:`copal_exp.protocol.settings.validate` before anything loads.
Every failure is a :class:`ConfigError` naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copal_exp.config.fields import coerce
from copal_exp.config.schema import (
    DataConfig,
    EvalConfig,
    PruneConfig,
    RunConfig,
    StateConfig,
)
from copal_exp.errors import ConfigError


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def available_devices() -> list[str]:
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: Any) -> str:
    """``run.device`` must name a device that exists on this machine (checked before anything loads)."""
    import torch

    allowed = available_devices()
    if name in allowed:
        return name
    why = "not available on this machine"
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError):
        why = "not a device name"
    else:
        if device.type == "cuda" and not torch.cuda.is_available():
            why = f"CUDA is not available here (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
        elif device.type == "cuda":
            why = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    raise ConfigError(f"run.device={name!r}: {why}; allowed values here are {allowed}")


def section(c: dict[str, Any], key: str) -> dict[str, Any]:
    value = c.get(key)
    require(isinstance(value, dict), f"{key}={value!r}: must be a config group (see docs/configuration.md)")
    return value


def check_data(data: dict[str, Any]) -> dict[str, Any]:
    data = coerce(data, DataConfig, "data")
    if data.get("root") == "":  # COPAL_DATA_DIR set but empty: no reference data
        data["root"] = None
    root = data.get("root")
    if root is not None:
        path = Path(str(root)).expanduser()
        require(path.exists(), f"data.root={root}: no such directory (set data.root or COPAL_DATA_DIR to a directory "
                                "laid out like shared/data, or null for the default)")
        require(path.is_dir(), f"data.root={root}: not a directory (give the folder that holds wikitext2/, ptb/, c4/)")
    return data


def check_prune(prune: Any) -> dict[str, Any]:
    import re

    prune = coerce(prune, PruneConfig, "prune")
    for key in ("targets", "ignore"):
        for pattern in prune.get(key) or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"prune.{key}: {pattern!r} is not a regular expression ({exc})") from None
    if prune.get("max_layer") is not None:
        require(prune["max_layer"] > prune["min_layer"], f"prune.max_layer={prune['max_layer']}: must be above "
                                                         f"prune.min_layer={prune['min_layer']}")
    return prune


def check_run(run: dict[str, Any], ev: dict[str, Any], state: dict[str, Any]) -> tuple[dict, dict, dict]:
    ev, run, state = coerce(ev, EvalConfig, "eval"), coerce(run, RunConfig, "run"), coerce(state, StateConfig, "state")
    run["device"] = check_device(run["device"])
    if state.get("load") is not None:
        folder = Path(str(state["load"])).expanduser()
        require((folder / "state.json").is_file(),
                 f"state.load={state['load']}: no exported state there (no state.json); export one with state.export=DIR")
    return run, ev, state
