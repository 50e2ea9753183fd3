"""Validation of a composed config into typed settings, before any model or data is loaded."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from copal_exp.data.demo_suite import DEMO_DATASETS
from copal_exp.data.sources import KNOWN_DATASETS
from copal_exp.errors import ConfigError
from copal_exp.masks import Pattern
from copal_exp.methods import METHODS
from copal_exp.values import boolean, integer, number

INITS = ("global", "sequential")
ORDER_KINDS = ("all_perms", "given")
MODEL_SOURCES = ("pypi_gguf", "tiny", "hub")
DTYPE_NAMES = ("float32", "float16", "bfloat16")

#: keys that do not change what a job computes: ignored when a job directory's configuration is compared
#: (resume), and when a report groups jobs. ``None`` means the whole group.
NEUTRAL_KEYS: dict[str, tuple[str, ...] | None] = {
    "run": ("progress", "device", "dense_cache", "offload"),
    "logger": None,
    "eval": ("batch_size", "layerwise"),
    "data": ("token_cache", "demo_root"),
    "state": ("export",),
}
#: keys holding filesystem paths, compared after normalisation (``~``, relative parts, trailing slashes)
PATH_KEYS = (("data", "root"), ("state", "load"), ("model", "cache_dir"))


@dataclass
class Settings:
    datasets: list[str]
    orders: list[tuple[str, ...]]
    method: str
    init: str
    method_options: dict[str, Any]
    pattern: Pattern
    model: dict[str, Any]
    data: dict[str, Any]
    eval: dict[str, Any]
    run: dict[str, Any]
    resolved: dict[str, Any] = field(default_factory=dict)


def register_method_configs() -> None:
    """Make every registered method a ``method=<name>`` config-group option, its keys and defaults taken
    from the method's own ``Options`` (the one place they are defined): a new method needs no YAML."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in METHODS.items():
        store.store(group="method", name=name, node={"name": name, "init": cls.inits[0], **cls.defaults()})


register_method_configs()


def plan_orders(datasets: list[str], kind: str, index: int | None) -> list[tuple[str, ...]]:
    """The dataset orders a job runs: every permutation, or the list as given; ``index`` picks one."""
    orders = list(itertools.permutations(datasets)) if kind == "all_perms" else [tuple(datasets)]
    if index is None:
        return orders
    if not 0 <= index < len(orders):
        raise ConfigError(f"order.index={index}: allowed values are 0..{len(orders) - 1} for order={kind}")
    return [orders[index]]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def normalise_path(value: Any) -> Any:
    """A path as the filesystem sees it: ``~`` expanded, absolute, no trailing slash or ``..`` parts."""
    if not isinstance(value, str) or not value:
        return value
    return os.path.normpath(os.path.abspath(os.path.expanduser(value)))


def result_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what a job computes, with paths normalised.

    Used to compare a job directory's configuration with a new run's, and to group jobs in reports.
    """
    from copal_exp.data.sources import default_root

    cfg = json.loads(json.dumps(resolved, default=str))
    cfg.pop("hydra", None)
    for group, keys in NEUTRAL_KEYS.items():
        if keys is None:
            cfg.pop(group, None)
        elif isinstance(cfg.get(group), dict):
            for key in keys:
                cfg[group].pop(key, None)
    data = cfg.get("data")
    if isinstance(data, dict) and data.get("root") is None:
        root = default_root()
        data["root"] = str(root) if root else None
    for group, key in PATH_KEYS:
        if isinstance(cfg.get(group), dict) and key in cfg[group]:
            cfg[group][key] = normalise_path(cfg[group][key])
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        local = Path(model["name_or_path"]).expanduser()
        if model["name_or_path"].startswith((".", "/", "~")) or local.exists():
            model["name_or_path"] = normalise_path(model["name_or_path"])
    return cfg


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


def validate(cfg: DictConfig | dict) -> Settings:
    """Turn a composed config into :class:`Settings`, or raise :class:`ConfigError` naming the key."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    c.pop("hydra", None)

    datasets = list(DEMO_DATASETS) if c["datasets"] == "demo" else c["datasets"]
    _require(isinstance(datasets, list), f"datasets={datasets!r}: give a list such as [wikitext2,ptb,c4], or 'demo'")
    _require(len(datasets) >= 1, "datasets=[]: give at least one dataset")
    unknown = [d for d in datasets if d not in KNOWN_DATASETS]
    _require(not unknown, f"datasets={datasets}: unknown {unknown}; allowed values are {list(KNOWN_DATASETS)} or 'demo'")
    _require(len(set(datasets)) == len(datasets), f"datasets={datasets}: each dataset may appear once")

    order = _section(c, "order")
    _require(order.get("kind") in ORDER_KINDS, f"order.kind={order.get('kind')!r}: allowed values are {ORDER_KINDS}")
    order["index"] = integer(order.get("index"), "order.index", minimum=0, allow_none=True)
    orders = plan_orders(datasets, order["kind"], order["index"])

    method = dict(_section(c, "method"))
    name = method.pop("name")
    _require(name in METHODS, f"method={name!r}: allowed values are {sorted(METHODS)}")
    cls = METHODS[name]
    init = method.pop("init", "global")
    _require(init in INITS, f"method.init={init!r}: allowed values are {INITS}")
    _require(init in cls.inits, f"method.init={init!r}: method={name} always starts each step from the dense "
                                f"weights; allowed: {cls.inits}")
    allowed = cls.defaults()
    extra = sorted(set(method) - set(allowed))
    _require(not extra, f"method={name}: unknown key(s) {extra}; allowed: {sorted(allowed) + ['init', 'name']}")

    sp = _section(c, "sparsity")
    try:
        pattern = Pattern.parse(sp.get("pattern"), sp.get("ratio"), sp.get("n"), sp.get("m"))
        method = cls(pattern, **method).config  # method-specific checks, typed values
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    model, data, ev, run = (_section(c, key) for key in ("model", "data", "eval", "run"))
    _check_model(model)
    _check_data(data)
    state = c.get("state") or {}
    _check_run(run, ev, state)
    c["datasets"] = datasets
    if state.get("load") or state.get("export"):
        carriers = sorted(n for n, m in METHODS.items() if m.carries_memory)
        _require(cls.carries_memory, f"state.load/state.export: only a method that carries memory between steps "
                                     f"({', '.join(carriers)}) has a continual state, not method={name}")
    if state.get("export"):
        _require(len(orders) == 1, f"state.export={state['export']}: needs a single order (order=given, or "
                                   f"order.index=K), this job runs {len(orders)}")
    logger = c.get("logger") or {"name": "none"}
    _require(logger.get("name") in ("wandb", "none"), f"logger={logger.get('name')!r}: allowed values are 'wandb', 'none'")
    if "init_timeout" in logger:
        logger["init_timeout"] = number(logger["init_timeout"], "logger.init_timeout", positive=True)
    return Settings(datasets, orders, name, init, method, pattern, model, data, ev, run, c)


def check_context(settings: Settings, context: int | None) -> None:
    seqlen = int(settings.data["seqlen"])
    if context is not None and seqlen > context:
        raise ConfigError(f"data.seqlen={seqlen}: above the model's context of {context} tokens "
                          f"(model={settings.model['name']}); allowed: 2..{context}")


def check_model(settings: Settings, model) -> None:
    """Checks that need the model's shapes: context length and N:M divisibility, before calibration."""
    from copal_exp.anatomy import prunable_linears

    check_context(settings, getattr(model.config, "max_position_embeddings", None))
    if not METHODS[settings.method].prunes:
        return
    for name, linear in prunable_linears(model).items():
        try:
            settings.pattern.check_shape(name, linear.in_features)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
