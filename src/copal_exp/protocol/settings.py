"""A job's settings: the composed config validated into the schema's typed sections, before any model or
data is loaded, with the values derived from them computed once (:class:`Settings`).

Every failure is a :class:`ConfigError` naming the key, the value and what is allowed. Each section is
read through its schema (:mod:`copal_exp.config.schema`); the ``model`` and ``logger`` sections through
the registered source's or logger's own config, the method's options through the method's ``Options``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from omegaconf import DictConfig, OmegaConf

from copal_exp.config.checks import check_data, check_prune, check_run, require, section
from copal_exp.config.fields import coerce, instance
from copal_exp.config.schema import (
    DataConfig,
    EvalConfig,
    LoggerConfig,
    ModelConfig,
    OrderConfig,
    PruneConfig,
    RunConfig,
    SparsityConfig,
    StateConfig,
    register_base,
)
from copal_exp.data.custom import check_source
from copal_exp.data.demo_suite import DEMO_DATASETS
from copal_exp.data.sources import KNOWN_DATASETS
from copal_exp.errors import ConfigError
from copal_exp.evaluation.zeroshot.tasks import resolve_tasks
from copal_exp.models.anatomy import Selection
from copal_exp.models.loading import model_settings
from copal_exp.protocol.orders import OrderPlan, build_orders, pick
from copal_exp.protocol.plan import Plan, make_plan
from copal_exp.protocol.tracking import LOGGERS
from copal_exp.pruning.allocation import Allocation
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import METHODS, PruningMethod

INITS = ("global", "sequential")


@dataclass
class Settings:
    """The validated job: typed sections (the schema's dataclass instances) and what is derived from them.
    ``resolved`` is the same configuration as a plain mapping: the record written into the job's files
    and compared on resume."""

    datasets: list[str]
    orders: list[tuple[str, ...]]
    method: str
    init: str
    method_options: dict[str, Any]
    pattern: Pattern
    allocation: Allocation
    model: ModelConfig
    data: DataConfig
    eval: EvalConfig
    run: RunConfig
    state: StateConfig
    prune: PruneConfig
    logger: LoggerConfig
    resolved: dict[str, Any] = field(default_factory=dict)
    #: every order of ``order.kind`` before ``order.index`` picked (``orders``), and how they were built
    order_plan: OrderPlan | None = None

    @cached_property
    def method_class(self) -> type[PruningMethod]:
        return METHODS[self.method]

    @cached_property
    def selection(self) -> Selection:
        """Which linears are pruned (``prune.*``)."""
        return Selection.from_config(self.prune)

    @property
    def keyed_by_prefix(self) -> bool:
        """Whether a state depends on the whole order so far (a carried memory or sequential init), not
        only on the step's dataset."""
        return self.method_class.carries_memory or self.init == "sequential"

    def state_plan(self) -> Plan:
        """Which distinct states the job computes, and from which parent (``run.planner``)."""
        return make_plan(self.orders, self.keyed_by_prefix, self.run.planner)

    @cached_property
    def device(self) -> str:
        """``run.device`` with ``auto`` resolved on this machine."""
        return resolve_device(self.run.device)

    def build_method(self) -> PruningMethod:
        return self.method_class(self.pattern, **self.method_options)


def register_method_configs() -> None:
    """Make every registered method a ``method=<name>`` config-group option, its keys and defaults taken
    from the method's own ``Options`` (the one place they are defined): a new method needs no YAML."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in METHODS.items():
        store.store(group="method", name=name, node={"name": name, "init": cls.inits[0], **cls.defaults()})


register_method_configs()
register_base()


def plan_orders(datasets: list[str], section: dict[str, Any]) -> tuple[list[tuple[str, ...]], OrderPlan]:
    """The dataset orders a job runs (``order.index`` picks one) and the whole set they were picked from."""
    try:
        every = build_orders(datasets, section)
        return pick(every, section.get("index"), section["kind"]), every
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def check_logger(logger: Any) -> dict[str, Any]:
    """The ``logger`` section read through the chosen logger's config, and the logger's own checks."""
    logger = logger or {"name": "none"}
    require(isinstance(logger, dict) and logger.get("name") in LOGGERS,
            f"logger={logger.get('name') if isinstance(logger, dict) else logger!r}: allowed values are {list(LOGGERS)}")
    cls = LOGGERS[logger["name"]]
    logger = coerce(logger, cls.config, "logger")
    cls.check(instance(cls.config, logger))
    return logger


def check_allocation(sp: dict[str, Any], pattern: Pattern, cls: type[PruningMethod]) -> Allocation:
    """``sparsity.allocation`` and its options, their defaults filled in by pattern and method (and recorded so)."""
    try:
        allocation = Allocation.from_config(sp, pattern, cls)
        allocation.check(pattern, cls)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    require(allocation.uniform or cls.prunes,
            f"sparsity.allocation={allocation.name}: the dense reference prunes nothing to allocate")
    sp.update(allocation.config_values())
    return allocation


def validate(cfg: DictConfig | dict) -> Settings:
    """Turn a composed config into :class:`Settings`, or raise :class:`ConfigError` naming the key."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    c.pop("hydra", None)

    datasets = list(DEMO_DATASETS) if c["datasets"] == "demo" else c["datasets"]
    require(isinstance(datasets, list), f"datasets={datasets!r}: give a list such as [wikitext2,ptb,c4], or 'demo'")
    require(len(datasets) >= 1, "datasets=[]: give at least one dataset")
    sources = (c.get("data") or {}).get("sources") or {}
    require(isinstance(sources, dict), f"data.sources={sources!r}: give a mapping of name → source")
    clash = sorted(set(sources) & set(KNOWN_DATASETS))
    require(not clash, f"data.sources: {clash} would hide the built-in dataset(s) of that name; choose other names")
    for name, spec in sources.items():
        check_source(name, spec)
    allowed = [*KNOWN_DATASETS, *sources]
    unknown = [d for d in datasets if d not in allowed]
    require(not unknown, f"datasets={datasets}: unknown {unknown}; allowed values are {allowed} or 'demo' (your own "
                         "domains: data.sources.NAME={path: FILE, field: text})")
    require(len(set(datasets)) == len(datasets), f"datasets={datasets}: each dataset may appear once")

    c["order"] = order = coerce(section(c, "order"), OrderConfig, "order")
    require(order.get("count") is None or order["kind"] == "sample",
            f"order.count={order.get('count')}: applies to order=sample only; this job has order={order['kind']}")
    orders, order_plan = plan_orders(datasets, order)

    method = dict(section(c, "method"))
    name = method.pop("name")
    require(name in METHODS, f"method={name!r}: allowed values are {sorted(METHODS)}")
    cls = METHODS[name]
    init = method.pop("init", "global")
    require(init in INITS, f"method.init={init!r}: allowed values are {INITS}")
    require(init in cls.inits, f"method.init={init!r}: method={name} always starts each step from the dense "
                                f"weights; allowed: {cls.inits}")
    allowed = cls.defaults()
    extra = sorted(set(method) - set(allowed))
    require(not extra, f"method={name}: unknown key(s) {extra}; allowed: {sorted(allowed) + ['init', 'name']}")

    c["sparsity"] = sp = coerce(section(c, "sparsity"), SparsityConfig, "sparsity")
    try:
        pattern = Pattern.parse(sp.get("pattern"), sp.get("ratio"), sp.get("n"), sp.get("m"))
        method = cls(pattern, **method).config  # method-specific checks, typed values
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    allocation = check_allocation(sp, pattern, cls)

    composed = section(c, "model")
    model = model_settings(composed)  # its source's typed config and the source's own checks
    c["model"] = {name: getattr(model, name) for name in composed}  # the record, in the composed order
    c["data"] = data = check_data(c.get("data"))
    c["run"], c["eval"], c["state"] = run, ev, state = check_run(c.get("run"), c.get("eval"), c.get("state") or {})
    c["prune"] = prune = check_prune(c.get("prune"))
    c["datasets"] = datasets
    if state.get("load") or state.get("export"):
        carriers = sorted(n for n, m in METHODS.items() if m.carries_memory)
        require(cls.carries_memory, f"state.load/state.export: only a method that carries memory between steps "
                                     f"({', '.join(carriers)}) has a continual state, not method={name}")
    if state.get("export"):
        require(len(orders) == 1, f"state.export={state['export']}: needs a single order (order=given, or "
                                   f"order.index=K), this job runs {len(orders)}")
    ev["tasks"] = resolve_tasks(ev["tasks"]) or None
    if ev["tasks"]:
        require(not ev["layerwise"], "eval.tasks with eval.layerwise=true: lm-evaluation-harness runs the whole model "
                                     "at once; drop eval.tasks or set eval.layerwise=false")
        require(getattr(model, "tokenizer", "hf") != "bytes",
                f"eval.tasks: lm-evaluation-harness needs a Hugging Face tokenizer, and model={model.name} reads "
                "UTF-8 bytes; set model.tokenizer=hf_bytes (the same ids through a Hugging Face tokenizer)")
    c["logger"] = logger = check_logger(c.get("logger"))
    return Settings(datasets, orders, name, init, method, pattern, allocation=allocation,
                    model=model, data=instance(DataConfig, data),
                    eval=instance(EvalConfig, ev), run=instance(RunConfig, run), state=instance(StateConfig, state),
                    prune=instance(PruneConfig, prune), logger=instance(LOGGERS[logger["name"]].config, logger),
                    resolved=c, order_plan=order_plan)


def check_context(settings: Settings, context: int | None) -> None:
    seqlen = settings.data.seqlen
    if context is not None and seqlen > context:
        raise ConfigError(f"data.seqlen={seqlen}: above the model's context of {context} tokens "
                          f"(model={settings.model.name}); allowed: 2..{context}")


def check_model(settings: Settings, model) -> None:
    """Checks that need the model's shapes: context length and N:M divisibility, before calibration."""
    from copal_exp.models.anatomy import in_features, prunable_linears

    check_context(settings, getattr(model.config, "max_position_embeddings", None))
    if not settings.method_class.prunes:
        return
    every = prunable_linears(model)
    if not every:
        raise ConfigError(f"model={settings.model.name} ({type(model).__name__}): no nn.Linear or Conv1D inside "
                          "its decoder layers, so there is nothing to prune")
    linears = prunable_linears(model, settings.selection)
    if not linears:
        raise ConfigError(f"prune={settings.resolved['prune']}: selects none of the {len(every)} "
                          f"linears of model={settings.model.name} (e.g. {next(iter(every))})")
    for name, linear in linears.items():
        try:
            settings.pattern.check_shape(name, in_features(linear))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def resolve_device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
