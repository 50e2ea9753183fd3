"""Checks of one config section each, run by :func:`copal_exp.config.validate` before anything loads.
Every failure is a :class:`ConfigError` naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copal_exp.errors import ConfigError
from copal_exp.values import boolean, integer

MODEL_SOURCES = ("pypi_gguf", "tiny", "hub")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def _require(ok: bool, message: str) -> None:
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


def _section(c: dict[str, Any], key: str) -> dict[str, Any]:
    value = c.get(key)
    _require(isinstance(value, dict), f"{key}={value!r}: must be a config group (see README, 'Configuration reference')")
    return value


def _check_model(model: dict[str, Any]) -> None:
    _require(model.get("source") in MODEL_SOURCES,
             f"model.source={model.get('source')!r}: allowed values are {MODEL_SOURCES}")
    _require(model.get("dtype", "float32") in DTYPE_NAMES,
             f"model.dtype={model.get('dtype')!r}: allowed values are {DTYPE_NAMES}")
    model["seqlen"] = integer(model.get("seqlen"), "model.seqlen", minimum=2)
    if model["source"] == "hub":
        path = model.get("name_or_path")
        _require(isinstance(path, str) and path not in ("", "???"),
                 f"model.name_or_path={path!r}: model={model.get('name')} needs the model to load, e.g. "
                 "model.name_or_path=meta-llama/Llama-3.2-1B (a Hugging Face id) or a local folder")
    if model["source"] == "tiny":
        for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "context"):
            model[key] = integer(model.get(key), f"model.{key}", minimum=1)
        model["init_seed"] = integer(model.get("init_seed", 0), "model.init_seed")


def _check_data(data: dict[str, Any]) -> None:
    data["nsamples"] = integer(data.get("nsamples"), "data.nsamples", minimum=1)
    data["seqlen"] = integer(data.get("seqlen"), "data.seqlen", minimum=2)
    data["seed"] = integer(data.get("seed"), "data.seed")
    for key in ("use_hub", "token_cache"):
        if key in data:
            boolean(data[key], f"data.{key}")
    root = data.get("root")
    if root is not None:
        path = Path(str(root)).expanduser()
        _require(path.exists(), f"data.root={root}: no such directory (set data.root or COPAL_DATA_DIR to a directory "
                                "laid out like shared/data, or null for the default)")
        _require(path.is_dir(), f"data.root={root}: not a directory (give the folder that holds wikitext2/, ptb/, c4/)")


def _check_run(run: dict[str, Any], ev: dict[str, Any], state: dict[str, Any]) -> None:
    ev["max_windows"] = integer(ev.get("max_windows"), "eval.max_windows", minimum=1, allow_none=True)
    ev["batch_size"] = integer(ev.get("batch_size", 1), "eval.batch_size", minimum=1)
    boolean(ev.get("layerwise", False), "eval.layerwise")
    run["device"] = check_device(run.get("device", "auto"))
    for key in ("planner", "progress", "dense_cache"):
        if key in run:
            boolean(run[key], f"run.{key}")
    for what, place in (run.get("offload") or {}).items():
        if what != "dir":
            _require(place in ("device", "cpu", "disk"),
                     f"run.offload.{what}={place!r}: allowed values are 'device', 'cpu', 'disk'")
    if state.get("load") is not None:
        folder = Path(str(state["load"])).expanduser()
        _require((folder / "state.json").is_file(),
                 f"state.load={state['load']}: no exported state there (no state.json); export one with state.export=DIR")
