"""Weights & Biases logging (``logger=wandb``). Local result files come first: any W&B failure is
logged as a warning and the job carries on without W&B.

One W&B run per Hydra job. Runs of one sweep share a ``group`` (the sweep directory's name),
``job_type`` is the method, tags carry model, sparsity pattern and init. Offline unless an API key
is configured (``WANDB_API_KEY`` or ``wandb login``), or ``logger.mode`` says otherwise. An online run first
makes one quick TCP connection to the server (once per process): an unreachable server costs seconds
and the run logs offline instead. If ``wandb.init`` fails, W&B stays off for the rest of the process's
jobs (a sweep on the basic launcher runs them all in one process).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from copal_exp.config.schema import LoggerConfig, key
from copal_exp.errors import ConfigError
from copal_exp.io.results import (
    FORGETTING_FIELDS,
    ZEROSHOT_FIELDS,
    code_version,
    forgetting_rows,
    matrix_rows,
    zeroshot_rows,
)
from copal_exp.metrics.zeroshot import task_values
from copal_exp.pruning.masks import Pattern
from copal_exp.registry import Registry

log = logging.getLogger(__name__)


#: why W&B was turned off in this process (the first failure turns it off for every later job of the sweep)
_disabled: str | None = None
#: whether the W&B server answered a TCP connection, per ``host:port`` (checked once per process)
_reachable: dict[str, bool] = {}
CONNECT_TIMEOUT = 3.0


def server_address() -> tuple[str, int]:
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """One quick TCP connection to the W&B server, remembered for the rest of the process."""
    import socket

    key = f"{host}:{port}"
    if key not in _reachable:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _reachable[key] = True
        except OSError:
            _reachable[key] = False
    return _reachable[key]


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_group(group: str | None, out_dir: Path, model: str) -> str:
    """The W&B group of a job: ``logger.group`` when set, else :func:`sweep_group` (one rule for the run
    that logs and the view that later filters on it)."""
    return group or sweep_group(out_dir, model)


def sweep_group(out_dir: Path, model: str) -> str:
    """Runs of one sweep share a group: the sweep directory below ``multirun/`` (e.g.
    ``paper_smollm2_135m/table2/pruned``), or ``<model>/single`` for a single run."""
    out_dir = Path(out_dir).resolve()
    if not out_dir.name.isdigit():
        return f"{model}/single"
    parts = out_dir.parent.parts
    return "/".join(parts[parts.index("multirun") + 1:]) if "multirun" in parts else out_dir.parent.name


def run_name(config: dict[str, Any], pattern: str, swept: list[str]) -> str:
    """``model · method label · pattern`` and the swept keys that are not already in it."""
    from copal_exp.pruning.allocation import Allocation
    from copal_exp.pruning.methods import method_class

    method = config["method"]
    label = (method_class(method["name"]).label(method, method.get("init", "global"))
             + Allocation.from_config(config.get("sparsity")).label)
    extra = [s.lstrip("+~") for s in swept if not s.lstrip("+~").startswith(("method", "sparsity", "model="))]
    index = config.get("order", {}).get("index")
    return " · ".join([config["model"]["name"], label, pattern, *extra,
                       *([f"order {index}"] if index is not None and not any("order" in e for e in extra) else [])])


@dataclass
class NoLoggerConfig(LoggerConfig):
    name: str = key("none", "plain result files only", choices=("none",))


@dataclass
class WandbLoggerConfig(LoggerConfig):
    name: str = key("wandb", "the logger", choices=("wandb",))
    project: str = key("copal_exp", "W&B project")
    entity: Optional[str] = key(None, "W&B entity (user or team)")
    mode: Optional[str] = key(None, "null = online with an API key, else offline",
                              choices=("online", "offline", "disabled"))
    group: Optional[str] = key(None, "null = the sweep directory below multirun/, or <model>/single")
    run_name: Optional[str] = key(None, "null = model · method · pattern · swept keys")
    tags: list = key([], "extra tags")
    init_timeout: float = key(30.0, "seconds before giving up on W&B")


#: ``logger=<name>``: each logger's class (its ``config`` the typed ``logger`` section); a new logger is one
#: subclass of :class:`NullLogger` registered with :func:`logger`
LOGGERS: Registry = Registry("logger")
logger = LOGGERS.register


@logger("none")
class NullLogger:
    """``logger=none``: nothing leaves the job directory."""

    config: ClassVar[type[LoggerConfig]] = NoLoggerConfig

    def __init__(self, cfg: LoggerConfig | None = None, config: dict[str, Any] | None = None,
                 out_dir: Path | None = None, swept: list[str] | None = None):
        pass

    @classmethod
    def check(cls, cfg: LoggerConfig) -> None:
        """Logger-specific checks before anything loads."""

    def update(self, results: dict[str, Any]) -> None:
        pass

    def finish(self, results: dict[str, Any], failed: bool = False) -> None:
        pass


@logger("wandb")
class WandbLogger(NullLogger):
    config = WandbLoggerConfig

    @classmethod
    def check(cls, cfg: WandbLoggerConfig) -> None:
        if not cfg.init_timeout > 0:
            raise ConfigError(f"logger.init_timeout={cfg.init_timeout}: must be > 0")

    def __init__(self, cfg: WandbLoggerConfig, config: dict[str, Any], out_dir: Path, swept: list[str] | None = None):
        global _disabled
        self.run = None
        self.logged: set[tuple[int, int]] = set()
        self.defined: set[int] = set()
        if _disabled is not None:
            log.warning("W&B stays off for this job (it failed earlier in this process: %s); local results are "
                        "unaffected", _disabled)
            return
        try:
            import wandb

            mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")
            if mode == "online" and not reachable(*server_address()):
                host, port = server_address()
                log.warning("W&B server %s:%d is unreachable: logging offline in %s (upload later with `wandb sync`)",
                            host, port, out_dir / "wandb")
                mode = "offline"
            method = config["method"]
            init = method.get("init", "global")
            pattern = Pattern.label(config["sparsity"])
            swept = [s for s in (swept or []) if not s.lstrip("+~").startswith("hydra")]
            group = wandb_group(cfg.group, out_dir, config["model"]["name"])
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, mode=mode, dir=str(out_dir),
                config={**config, "swept": dict(s.lstrip("+~").split("=", 1) for s in swept if "=" in s),
                        "code": code_version()},
                group=group, job_type=method["name"],
                tags=[f"model:{config['model']['name']}", f"sparsity:{pattern}", f"init:{init}",
                      *(s.lstrip("+~")[:64] for s in swept), *cfg.tags],
                name=cfg.run_name or run_name(config, pattern, swept), reinit="finish_previous",
                settings=wandb.Settings(init_timeout=cfg.init_timeout, silent=True),
            )
            self.wandb = wandb
            log.info("W&B run %s (%s mode) in group %s", self.run.id, mode, group)
        except Exception as exc:  # noqa: BLE001 - W&B must never fail the job
            _disabled = f"{type(exc).__name__}: {exc}"
            log.warning("W&B disabled for this job and the rest of this process's jobs (%s); local results are "
                        "unaffected", _disabled)
            self.run = None

    def _guard(self, what: str, fn) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B %s failed (%s: %s); disabling W&B, local results are unaffected",
                        what, type(exc).__name__, exc)
            self.run = None

    def update(self, results: dict[str, Any]) -> None:
        """Log every (permutation, step) row computed since the last call, as soon as its state completes.
        Each permutation has its own step axis (``perm<k>/step``), so W&B plots each order step by step."""
        self._guard("logging", lambda: self._log_new_rows(results))

    def _log_new_rows(self, results):
        datasets = results["datasets"]
        for row in matrix_rows(results):
            k, t = row["permutation"], row["step"]
            if (k, t) in self.logged:
                continue
            if k not in self.defined:
                self.run.define_metric(f"perm{k}/step")
                self.run.define_metric(f"perm{k}/*", step_metric=f"perm{k}/step")
                self.defined.add(k)
            ppl = {f"ppl/{d}": row["ppl"][d] for d in datasets}
            scored = results["permutations"][k].get("zeroshot")
            scores = scored[t - 1] if scored else None
            ppl.update({f"zeroshot/{task}": value for task, value in task_values(scores or {}).items()})
            curve = results["permutations"][k].get("forgetting_curve") or []
            if t > 1 and len(curve) >= t and curve[t - 1] is not None:  # forgetting of the earlier domains so far
                ppl["forgetting"] = curve[t - 1]
            self.run.log({"permutation": k, "order": row["order"], "step": t, "step_dataset": row["step_dataset"],
                          **ppl, "mask_change": row["mask_change"], "sparsity": row["sparsity"],
                          f"perm{k}/step": t, **{f"perm{k}/{name}": v for name, v in ppl.items()}})
            self.logged.add((k, t))

    def finish(self, results: dict[str, Any], failed: bool = False) -> None:
        if self.run is None:
            return
        self.update(results)
        self._guard("summary", lambda: self._final(results))
        self._guard("finish", lambda: self.run.finish(exit_code=1 if failed else 0))

    def _final(self, results):
        from copal_exp.metrics.heatmap import matrix_figure

        wandb = self.wandb
        datasets = results["datasets"]
        rows = [[row["order"], row["step"], row["step_dataset"], *(row["ppl"][d] for d in datasets)]
                for row in matrix_rows(results)]
        payload: dict[str, Any] = {
            "ppl_matrices": wandb.Table(columns=["order", "step", "step_dataset", *datasets], data=rows)}
        for k, perm in enumerate(results.get("permutations", [])):
            fig = matrix_figure(perm["ppl_matrix"], datasets, perm["order"], title=">".join(perm["order"]),
                                dense=results.get("dense_ppl"))
            payload[f"heatmap/{k}"] = wandb.Image(fig)
            fig.clf()
        per = results.get("per_dataset", {})
        payload["per_dataset"] = wandb.Table(
            columns=["dataset", "bwt_mean", "bwt_std", "ppl_mean", "ppl_std"],
            data=[[d, v["bwt_mean"], v["bwt_std"], v["ppl_mean"], v["ppl_std"]] for d, v in per.items()])
        if results.get("zeroshot"):
            columns = [f for f in ZEROSHOT_FIELDS if f not in ("method", "init", "pattern")]
            payload["zeroshot"] = wandb.Table(columns=columns,
                                              data=[[r[c] for c in columns] for r in zeroshot_rows(results)])
            over = results["zeroshot"].get("over_orders") or {}
            for task, v in over.items():
                self.run.summary[f"zeroshot/{task}"] = v["mean"]
        forgetting = forgetting_rows(results)
        if forgetting:
            columns = [f for f in FORGETTING_FIELDS if f not in ("method", "init", "pattern")]
            payload["forgetting"] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in forgetting])
        curves = results.get("forgetting") or {}
        for t, value in enumerate(curves.get("mean") or []):
            if value is not None:
                self.run.summary[f"forgetting/step{t + 1}_mean"] = value
                self.run.summary[f"forgetting/step{t + 1}_worst"] = curves["worst"][t]
        self.run.log(payload)
        for key, value in (results.get("summary") or {}).items():
            self.run.summary[key] = value
        self.run.summary["weight_stasis"] = results.get("weight_stasis")
        self.run.summary["dense_ppl"] = results.get("dense_ppl")
        self.run.summary["sparsity_overall"] = (results.get("sparsity") or {}).get("overall")
        self.run.summary["status"] = results.get("status")


def make_logger(cfg: LoggerConfig, config: dict[str, Any], out_dir: str | Path,
                swept: list[str] | None = None) -> NullLogger:
    """The job's logger: ``cfg`` is the typed ``logger`` section, ``config`` the job's resolved record."""
    return LOGGERS[cfg.name](cfg, config, Path(out_dir), swept)
