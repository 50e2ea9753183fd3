"""The continual-pruning protocol (DESIGN §2): plan every step of every order, run each distinct state once.

A state is identified by its *key*: for a global-init baseline the state after step t depends only
on D_t, so its key is ``(D_t,)``; for sequential-init baselines and COPAL it is the whole prefix
``(D_1, …, D_t)``. Orders sharing a key share the pruning and its evaluations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from copal_exp.checkpoint import StateStore
from copal_exp.errors import IntegrityError
from copal_exp.storage import read_json, write_json
from copal_exp.config import Settings
from copal_exp.data import DatasetSplits, load_dataset_splits
from copal_exp.data.sources import default_root
from copal_exp.engine import NonFiniteError, PhaseTimer, prunable_linears, prune_model
from copal_exp.evaluate import perplexity, perplexity_layerwise, resident
from copal_exp.methods import build_method
from copal_exp.offload import Offloader
from copal_exp.masks import pack_masks
from copal_exp.metrics import backward_transfer, mask_change, per_dataset, sparsity_report, summary, weight_stasis

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """One distinct model state: its evaluations, bit-packed masks and achieved sparsity."""

    key: tuple
    ppl: dict[str, float]
    masks: dict[str, np.ndarray]
    sparsity: dict[str, Any]
    seconds: dict[str, float]
    # what a child step needs to start from (freed once every child has run)
    weights: dict[str, torch.Tensor] | None = None
    method_state: dict[str, Any] | None = None


@dataclass
class Plan:
    keys: list[list[tuple]]  # per order, the state key of every step
    parents: dict[tuple, tuple | None]
    children: dict[tuple, int] = field(default_factory=dict)

    @property
    def prune_steps(self) -> int:
        return len(self.parents)


def state_key(order: tuple[str, ...], step: int, carries_state: bool, planner: bool, order_index: int) -> tuple:
    key = tuple(order[: step + 1]) if carries_state else (order[step],)
    return key if planner else (order_index, *key)


def make_plan(orders: list[tuple[str, ...]], carries_state: bool, planner: bool = True) -> Plan:
    """Every distinct state the orders visit, with each one's parent and number of distinct children."""
    keys, parents, children = [], {}, {}
    for k, order in enumerate(orders):
        row = [state_key(order, t, carries_state, planner, k) for t in range(len(order))]
        for t, key in enumerate(row):
            if key not in parents:
                parent = row[t - 1] if carries_state and t > 0 else None
                parents[key] = parent
                if parent is not None:
                    children[parent] = children.get(parent, 0) + 1
        keys.append(row)
    return Plan(keys, parents, children)


def _restore_step(record: dict[str, Any], carry: dict[str, Any] | None) -> StepResult:
    step = StepResult(tuple(record["key"]), record["ppl"], record["masks"], record["sparsity"], record["seconds"])
    if carry is not None:
        step.weights, step.method_state = carry["weights"], carry["method_state"]
    return step


def step_seconds(steps) -> dict[str, float]:
    """Per-phase seconds summed over the given states (restored ones included)."""
    total: dict[str, float] = {}
    for step in steps:
        for phase, seconds in (step.seconds or {}).items():
            total[phase] = total.get(phase, 0.0) + seconds
    return {phase: round(v, 3) for phase, v in total.items()}


def dense_cache_path(s: Settings, data: dict[str, DatasetSplits], device: str):
    """Cache file of the dense perplexities, keyed by the model config, device and the exact evaluation tokens."""
    from copal_exp.models import cache_root

    digest = hashlib.sha256(json.dumps({"model": s.model, "device": device, "batch": s.eval.get("batch_size", 1)},
                                       sort_keys=True, default=str).encode())
    for name in s.datasets:
        digest.update(name.encode())
        digest.update(data[name].evaluation.numpy().tobytes())
    return cache_root() / "dense" / f"{s.model['name']}-{digest.hexdigest()[:20]}.json"


def read_dense_cache(cache: Path) -> dict[str, float] | None:
    """Dense perplexities from the shared cache; a damaged entry is reported, removed and recomputed."""
    if not cache.is_file():
        return None
    try:
        return read_json(cache, "")["dense_ppl"]
    except (IntegrityError, KeyError) as exc:
        log.warning("ignoring the damaged dense-cache entry %s (%s); recomputing it", cache, exc)
        cache.unlink(missing_ok=True)
        return None


def discard_files(method_state: dict[str, Any] | None) -> None:
    """Remove the on-disk tensors (offload=disk) of a method state nothing will start from again."""
    for handle in ((method_state or {}).get("sensitivity") or {}).values():
        if isinstance(handle, str):
            Path(handle).unlink(missing_ok=True)


def offload_folder(configured: str | None, job_dir: Path | None) -> Path:
    """``run.offload.dir``, or ``<job dir>/offload`` (the job's own, cleaned of a killed run's files)."""
    return Path(configured).expanduser() if configured else (job_dir or Path.cwd()) / "offload"


def token_cache_dir(enabled: bool):
    from copal_exp.models import cache_root

    return cache_root() / "tokens" if enabled else None


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_job_data(s: Settings, tokenizer) -> tuple[dict[str, DatasetSplits], str | None]:
    """Every dataset of the job, tokenised and cut (needs only the tokenizer: runs before the model loads)."""
    d, prunes = s.data, s.method != "dense"
    root = d.get("root")
    if root is None and (root := default_root()) is not None:
        log.info("data.root is unset: using %s", root)
    data = {
        name: load_dataset_splits(
            name, tokenizer, root=root, nsamples=int(d["nsamples"]), seqlen=int(d["seqlen"]),
            seed=int(d["seed"]), max_windows=s.eval.get("max_windows"), hub=d.get("hub"),
            use_hub=bool(d.get("use_hub", True)), with_calibration=prunes, demo_root=d.get("demo_root"),
            token_cache=token_cache_dir(d.get("token_cache", True)),
        )
        for name in s.datasets
    }
    return data, str(root) if root else None


class Experiment:
    """One Hydra job: a model, a method, a pattern and one or more dataset orders."""

    def __init__(self, settings: Settings, model, tokenizer, on_progress=None, store: StateStore | None = None,
                 initial_state: dict[str, Any] | None = None, keep_final_state: bool = False):
        self.s = settings
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(settings.run.get("device", "auto"))
        self.progress = bool(settings.run.get("progress", True))
        self.on_progress = on_progress or (lambda results: None)
        self.timer = PhaseTimer()
        self._sizes: dict[str, int] = {}
        self.results: dict[str, Any] = {}
        self.steps: dict[tuple, StepResult] = {}
        self.store = store
        self.initial_state = initial_state or {}
        self.keep_final_state = keep_final_state
        self.method = None

    # -- data -----------------------------------------------------------------------------------
    def load_data(self) -> dict[str, DatasetSplits]:
        data, self.data_root = load_job_data(self.s, self.tokenizer)
        return data

    def evaluate_all(self, data: dict[str, DatasetSplits], label: str) -> dict[str, float]:
        ppl = {}
        layerwise = bool(self.s.eval.get("layerwise", False))
        with self.timer("evaluation"), (nullcontext() if layerwise else resident(self.model, self.device)):
            for name in self.s.datasets:
                if layerwise:
                    ppl[name] = perplexity_layerwise(self.model, data[name].evaluation, self.device, self.progress,
                                                     f"{label} eval {name}")
                else:
                    ppl[name] = perplexity(self.model, data[name].evaluation, self.device,
                                           int(self.s.eval.get("batch_size", 1)), self.progress, f"{label} eval {name}")
                if not np.isfinite(ppl[name]):
                    raise NonFiniteError(f"{label}: perplexity on {name} is {ppl[name]}")
        return ppl

    # -- protocol -------------------------------------------------------------------------------
    def run(self, data: dict[str, DatasetSplits] | None = None, data_root: str | None = None) -> dict[str, Any]:
        """Run the protocol on ``data`` (as :func:`load_job_data` gives it; loaded here when not given)."""
        s = self.s
        t0 = time.perf_counter()
        self.data_root = data_root
        if data is None:
            with self.timer("data"):
                data = self.load_data()
        results = self.results
        results.update({
            "status": "running",
            "config": s.resolved,
            "datasets": s.datasets,
            "data": {name: split.provenance for name, split in data.items()},
            "seed": int(s.data["seed"]),
            "data_root": self.data_root,
        })
        dense_ppl = self.store.load_dense() if self.store else None
        results["dense_cache"] = "job"
        if dense_ppl is None:
            cache = dense_cache_path(s, data, self.device) if s.run.get("dense_cache", True) else None
            dense_ppl = read_dense_cache(cache) if cache is not None else None
            if dense_ppl is not None:
                results["dense_cache"] = f"hit: {cache}"
                log.info("dense perplexities from the cache %s", cache)
            else:
                dense_ppl = self.evaluate_all(data, "dense")
                results["dense_cache"] = "computed"
                if cache is not None:
                    write_json(cache, {"dense_ppl": dense_ppl, "model": s.model})
            if self.store:
                self.store.save_dense(dense_ppl)
        results["dense_ppl"] = dense_ppl
        self.on_progress(results)

        if s.method == "dense":
            steps = {(): StepResult((), dense_ppl, {}, {"overall": 0.0, "layers": {}}, {})}
            keys = [[()] * len(order) for order in s.orders]
            plan_info = {"prune_steps": 0, "evaluations": len(s.datasets)}
        else:
            steps, keys, plan_info = self.run_steps(data, results)
        results.update(self.assemble(steps, keys))
        results["plan"] = plan_info
        # `timings` is this process's wall time per phase; a resumed job's earlier work is in the restored
        # states, so `step_seconds_total` sums every state's own per-phase seconds, whichever process computed it
        results["timings"] = {**{k: round(v, 3) for k, v in self.timer.seconds.items()},
                              "total": round(time.perf_counter() - t0, 3)}
        results["step_seconds_total"] = step_seconds(steps.values())
        results.setdefault("resumed_states", 0)
        results["status"] = "complete"
        return results

    def run_steps(self, data, results):
        s = self.s
        carries_state = s.method == "copal" or s.init == "sequential"
        plan = make_plan(s.orders, carries_state, bool(s.run.get("planner", True)))
        method = self.method = build_method(s.method, s.pattern, **s.method_options)
        offload = s.run.get("offload") or {}
        offload_dir = offload_folder(offload.get("dir"), self.store.dir.parent if self.store else None)
        activations = Offloader(offload.get("activations", "cpu"), self.device, offload_dir / "activations")
        if hasattr(method, "offload"):
            method.offload = Offloader(offload.get("sensitivity", "cpu"), self.device, offload_dir / "sensitivity")
        linears = prunable_linears(self.model)
        dense = {name: lin.weight.data.clone() for name, lin in linears.items()}
        self._sizes = {n: w.numel() for n, w in dense.items()}
        steps: dict[tuple, StepResult] = self.store.load_all(_restore_step) if self.store else {}
        steps = {key: step for key, step in steps.items() if key in plan.parents}
        self.steps = steps
        remaining = {key: n - sum(1 for c, p in plan.parents.items() if p == key and c in steps)
                     for key, n in plan.children.items()}
        results["resumed_states"] = len(steps)
        if steps:
            log.info("resuming: %d of %d states already computed in this job directory", len(steps), plan.prune_steps)
            results.update(self.assemble(steps, plan.keys))
        bar = tqdm(total=plan.prune_steps, initial=len(steps), desc=f"{s.method} steps", unit="step",
                   disable=not self.progress)
        for k, order in enumerate(s.orders):
            for t, key in enumerate(plan.keys[k]):
                if key in steps:
                    continue
                parent = steps.get(plan.parents[key]) if plan.parents[key] is not None else None
                label = f"order {k + 1}/{len(s.orders)} step {t + 1}/{len(order)} [{order[t]}]"
                bar.set_postfix_str(label)
                weights = parent.weights if (parent is not None and s.method != "copal") else dense
                for name, lin in linears.items():
                    lin.weight.data.copy_(weights[name])
                method.load_state_dict(parent.method_state if parent is not None else self.initial_state)
                started = dict(self.timer.seconds)
                masks = prune_model(self.model, data[order[t]].calibration, method, self.device, self.timer,
                                    self.progress, f"{label} prune", activations)
                ppl = self.evaluate_all(data, label)
                seconds = {p: round(v - started.get(p, 0.0), 3) for p, v in self.timer.seconds.items()}
                step = StepResult(key, ppl, pack_masks(masks), sparsity_report(masks), seconds)
                if remaining.get(key) or (self.keep_final_state and t == len(order) - 1):
                    step.weights = {n: lin.weight.data.clone() for n, lin in linears.items()} if s.method != "copal" else None
                    step.method_state = method.state_dict()
                else:
                    discard_files(method.state_dict())
                steps[key] = step
                if self.store:
                    self.store.save(step)
                if parent is not None:
                    remaining[parent.key] -= 1
                    if remaining[parent.key] == 0:
                        discard_files(parent.method_state)
                        parent.weights = parent.method_state = None
                        if self.store:
                            self.store.drop_carry(parent.key)
                log.info("%s: %s sparsity %.4f, ppl %s", label, s.method, step.sparsity["overall"],
                         {d: round(v, 3) for d, v in ppl.items()})
                bar.update(1)
                results.update(self.assemble(steps, plan.keys))
                self.on_progress(results)
        bar.close()
        self.final_keys = [row[-1] for row in plan.keys]
        plan_info = {"prune_steps": plan.prune_steps, "evaluations": plan.prune_steps * len(s.datasets),
                     "prune_steps_without_planner": sum(len(o) for o in s.orders),
                     "state_keys": "prefix" if carries_state else "dataset"}
        return steps, plan.keys, plan_info

    def assemble(self, steps: dict[tuple, StepResult], keys: list[list[tuple]]) -> dict[str, Any]:
        """Per-permutation matrices and every metric, from the distinct states computed so far."""
        s = self.s
        col = {name: i for i, name in enumerate(s.datasets)}
        perms, final_keys = [], []
        for order, row_keys in zip(s.orders, keys):
            if not all(key in steps for key in row_keys):
                continue
            rows = [steps[key] for key in row_keys]
            matrix = [[r.ppl[d] for d in s.datasets] for r in rows]
            idx = [col[d] for d in order]
            changes: list[float | None] = [None]
            for prev, cur in zip(rows, rows[1:]):
                changes.append(mask_change(prev.masks, cur.masks, self._sizes) if cur.masks else 0.0)
            final_keys.append(row_keys[-1])
            perms.append({
                "order": list(order),
                "ppl_matrix": matrix,
                "bwt": backward_transfer(matrix, idx),
                "weight_stasis": weight_stasis(changes) if s.method != "dense" else False,
                "mask_change": changes,
                "sparsity": [r.sparsity["overall"] for r in rows],
                "step_seconds": [r.seconds for r in rows],
            })
        out: dict[str, Any] = {"permutations": perms}
        if perms:
            matrices = [p["ppl_matrix"] for p in perms]
            orders = [[col[d] for d in p["order"]] for p in perms]
            out["summary"] = summary(matrices, orders)
            out["per_dataset"] = per_dataset(matrices, orders, s.datasets)
            out["weight_stasis"] = all(p["weight_stasis"] for p in perms)
            last = steps[final_keys[-1]]
            out["sparsity"] = {"pattern": s.pattern.name, "target": s.pattern.ratio if s.method != "dense" else 0.0,
                               **last.sparsity}
        return out
