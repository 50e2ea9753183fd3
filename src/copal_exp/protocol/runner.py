"""The continual-pruning protocol of one job: plan every step of every order, compute each distinct
state once (layer by layer, then an evaluation round), and assemble the results after every step.

It composes the parts: :mod:`.plan` (which states, which parent), :mod:`.states` (what is computed,
what children start from, saved and released), :mod:`.evaluator` (perplexities, dense cache),
:mod:`.engine` (one prune step) and :mod:`.assemble` (matrices and metrics).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from tqdm.auto import tqdm

from copal_exp.data import DatasetSplits, load_dataset_splits
from copal_exp.io.checkpoint import StateStore
from copal_exp.io.identity import tokens_digest, weights_fingerprint
from copal_exp.io.offload import Offloader, return_freed_memory
from copal_exp.io.paths import default_root, token_cache_dir
from copal_exp.metrics.records import metrics, permutation
from copal_exp.metrics.transfer import sparsity_report
from copal_exp.metrics.zeroshot import zeroshot_summary
from copal_exp.models.anatomy import prunable_linears, pruned_modules
from copal_exp.protocol.costs import plan_counts
from copal_exp.protocol.evaluator import Evaluator, TaskScorer
from copal_exp.protocol.jobdir import offload_folder
from copal_exp.protocol.memory import activations_place
from copal_exp.protocol.memory import memory_place as memory_place_of
from copal_exp.protocol.plan import Plan
from copal_exp.protocol.settings import Settings
from copal_exp.protocol.states import ModelState, StateCache
from copal_exp.pruning.engine import PhaseTimer, prune_model
from copal_exp.pruning.methods import Memory

log = logging.getLogger(__name__)


def step_seconds(states) -> dict[str, float]:
    """Per-phase seconds summed over the given states (restored ones included)."""
    total: dict[str, float] = {}
    for state in states:
        for phase, seconds in (state.seconds or {}).items():
            total[phase] = total.get(phase, 0.0) + seconds
    return {phase: round(v, 3) for phase, v in total.items()}


class Experiment:
    """One Hydra job: a model, a method, a pattern and one or more dataset orders."""

    def __init__(self, settings: Settings, model, tokenizer, on_progress=None, store: StateStore | None = None,
                 initial_memory: Memory | None = None, keep_final_state: bool = False, resident: bool = False,
                 memory_place: str | None = None):
        self.settings = settings
        self.model, self.tokenizer = model, tokenizer
        self.device = settings.device
        self.progress = settings.run.progress
        self.on_progress = on_progress or (lambda results: None)
        self.timer = PhaseTimer()
        self.store = store
        self.initial_memory = initial_memory
        self.keep_final_state = keep_final_state
        self.method = settings.build_method()
        self.selection = settings.selection
        self.cache = StateCache(prunable_linears(model, self.selection), store)  # dense copy on the host
        # the memory plan's decision: the whole model stays on the GPU for the job, so no layer and no evaluation
        # round moves it (on a CPU it is always there)
        self.resident = resident
        # where the method's memory waits between steps (the plan's decision for run.offload.memory=auto)
        self.memory_place = memory_place or memory_place_of(settings, resident)
        if resident:
            model.to(self.device)
        self.plan: Plan | None = None
        self.scorer: TaskScorer | None = None  # eval.tasks: set when the job runs
        self.dense_zeroshot: dict[str, Any] | None = None
        self.results: dict[str, Any] = {}
        self.computed: list[tuple] = []  # keys of the states this process computed (not restored)
        # key -> wall seconds of its whole step (prune, evaluation, checkpoint, logging): what the next plan estimates
        self.walls: dict[tuple, float] = {}

    def computed_states(self) -> list[ModelState]:
        return [self.states[key] for key in self.computed if key in self.states]

    @property
    def states(self) -> dict[tuple, ModelState]:
        return self.cache.states

    def run(self, data: dict[str, DatasetSplits] | None = None, data_root: str | None = None) -> dict[str, Any]:
        """Run the protocol on ``data`` (as :func:`load_job_data` gives it; loaded here when not given)."""
        s, t0 = self.settings, time.perf_counter()
        if data is None:
            with self.timer("data"):
                data, data_root = load_job_data(s, self.tokenizer)
        evaluator = Evaluator(self.model, data, self.device, s.eval.batch_size, s.eval.layerwise, self.progress,
                              self.timer)
        self.results.update({"status": "running", "config": s.resolved, "datasets": s.datasets,
                             "data": {name: split.provenance for name, split in data.items()},
                             "seed": s.data.seed, "data_root": data_root})
        self.results["inputs"] = inputs = job_inputs(data, self.cache.dense)
        if self.store:
            self.store.bind_inputs(inputs)  # refuses states computed on another file, tokenizer or model
        dense_ppl = self.store.load_dense() if self.store else None
        self.results["dense_cache"] = "job"
        if dense_ppl is None:
            dense_ppl, self.results["dense_cache"] = evaluator.dense({**s.resolved["model"], "weights": inputs["model"]},
                                                                     s.run.dense_cache)
            if self.store:
                self.store.save_dense(dense_ppl)
        self.results["dense_ppl"] = dense_ppl
        self.scorer = self.task_scorer()
        if self.scorer is not None:
            from copal_exp.evaluation.zeroshot.harness import provenance

            self.results["zeroshot"] = {"data": provenance(self.scorer.tasks, self.scorer.source)}
            self.dense_zeroshot = self.store.load_dense_zeroshot() if self.store else None
            if self.dense_zeroshot is None:
                self.dense_zeroshot = self.scorer.dense({**s.resolved["model"], "weights": inputs["model"]},
                                                        s.run.dense_cache)
                if self.store:
                    self.store.save_dense(dense_ppl, self.dense_zeroshot)
            self.results["zeroshot_dense"] = self.dense_zeroshot
        self.results["pruned_modules"] = pruned_modules(self.cache.linears, self.selection)
        self.on_progress(self.results)
        if self.method.prunes:
            self.run_steps(data, evaluator)
        else:
            self.plan = Plan([[()] * len(order) for order in s.orders], {})
            self.cache.states[()] = ModelState((), dense_ppl, {}, {"overall": 0.0, "layers": {}}, {},
                                               zeroshot=self.dense_zeroshot)
        if self.store:
            self.store.flush()  # every state on disk before the job calls itself complete
            self.results["checkpoints"] = {k: round(v, 3) for k, v in self.store.written.items()}
        self.results.update(self.assemble())
        self.results["plan"] = self.plan_info()
        # `timings` is this process's wall time per phase; a resumed job's earlier work is in the restored
        # states, so `step_seconds_total` sums every state's own per-phase seconds, whichever process computed it
        self.results["timings"] = {**{k: round(v, 3) for k, v in self.timer.seconds.items()},
                                   "total": round(time.perf_counter() - t0, 3)}
        self.results["step_seconds_total"] = step_seconds(self.states.values())
        self.results.setdefault("resumed_states", 0)
        self.results["status"] = "complete"
        return self.results

    def run_steps(self, data: dict[str, DatasetSplits], evaluator: Evaluator) -> None:
        s, method = self.settings, self.method
        sequential = s.init == "sequential"
        plan = self.plan = s.state_plan()
        offload = s.run.offload
        folder = offload_folder(offload.dir, self.store.dir.parent if self.store else None)
        activations = Offloader(activations_place(s, self.resident), self.device, folder / "activations")
        memory_store = Offloader(self.memory_place, self.device, folder / "memory")
        resumed = self.results["resumed_states"] = self.cache.resume(plan, self.keep_final_state)
        if resumed:
            log.info("resuming: %d of %d states already computed in this job directory", resumed, plan.prune_steps)
            self.results.update(self.assemble())
        finals = set(plan.final_keys)  # eval.tasks_at=final scores these (each once, however many orders end there)
        bar = tqdm(total=plan.prune_steps, initial=resumed, desc=f"{s.method} steps", unit="step",
                   disable=not self.progress)
        for k, order in enumerate(s.orders):
            for t, key in enumerate(plan.keys[k]):
                if key in self.states:
                    continue
                parent = self.states.get(plan.parents[key]) if plan.parents[key] is not None else None
                label = f"order {k + 1}/{len(s.orders)} step {t + 1}/{len(order)} [{order[t]}]"
                bar.set_postfix_str(label)
                step_started = time.perf_counter()
                self.cache.start(parent, from_parent_weights=sequential)
                memory_before = parent.memory if parent is not None else self.initial_memory
                started = dict(self.timer.seconds)
                masks, memory = prune_model(self.model, data[order[t]].calibration, method, self.device, self.timer,
                                            self.progress, f"{label} prune", activations, memory_before,
                                            memory_store, self.selection, s.allocation)
                ppl = evaluator.round(label)
                scored = self.scorer is not None and (s.eval.tasks_at == "every" or key in finals)
                zeroshot = self.scorer.score(label) if scored else None
                seconds = {p: round(v - started.get(p, 0.0), 3) for p, v in self.timer.seconds.items()}
                state = ModelState(key, ppl, masks.bits, sparsity_report(masks), seconds, zeroshot=zeroshot)
                keep = bool(self.cache.children_left.get(key)) or (self.keep_final_state and t == len(order) - 1)
                self.cache.add(state, keep_weights=sequential, memory=memory, keep_carry=keep)
                self.computed.append(key)
                self.cache.child_done(parent)
                masks = memory = memory_before = parent = None  # what is not carried is freed now, not next step
                return_freed_memory()
                log.info("%s: %s sparsity %.4f, ppl %s", label, s.method, state.sparsity["overall"],
                         {d: round(v, 3) for d, v in ppl.items()})
                bar.update(1)
                self.results.update(self.assemble())
                self.on_progress(self.results)
                self.walls[key] = time.perf_counter() - step_started
        bar.close()

    def task_scorer(self) -> TaskScorer | None:
        """The zero-shot scorer of ``eval.tasks`` (``None`` when the job scores none)."""
        ev = self.settings.eval
        if not ev.tasks:
            return None
        return TaskScorer(self.model, self.tokenizer, list(ev.tasks), ev.tasks_limit, ev.tasks_source, self.device,
                          ev.batch_size, self.timer)

    def final_state(self, order_index: int = 0) -> ModelState:
        return self.states[self.plan.final_keys[order_index]]

    def plan_info(self) -> dict[str, Any]:
        s = self.settings
        order = s.resolved.get("order", {})
        orders = {"kind": order.get("kind"), "index": order.get("index"),
                  **(s.order_plan.record if s.order_plan else {}),
                  **({"count_requested": order.get("count"), "seed": order.get("seed")}
                     if order.get("kind") == "sample" else {})}
        counts = plan_counts(s)
        info = {"prune_steps": counts["prune_steps"], "evaluations": counts["evaluations"], "orders": orders}
        if not self.method.prunes:
            return info
        return {**info, "prune_steps_without_planner": counts["prune_steps_without_planner"],
                "state_keys": "prefix" if self.plan.carries_state else "dataset"}

    def assemble(self) -> dict[str, Any]:
        """Per-permutation matrices and every metric, from the distinct states computed so far."""
        s, prunes = self.settings, self.method.prunes
        perms, last = [], None
        for order, keys in zip(s.orders, self.plan.keys):
            # every order has its place (stable indices); an order still to run has the rows computed so far
            rows = [self.states[key] for key in itertools.takewhile(lambda key: key in self.states, keys)]
            changes: list[float | None] = [None] + [self.cache.mask_change(prev, cur) for prev, cur in zip(rows, rows[1:])]
            perms.append(permutation(order, s.datasets, [r.ppl for r in rows], changes,
                                     [r.sparsity["overall"] for r in rows], [r.seconds for r in rows], prunes,
                                     complete=len(rows) == len(keys), zeroshot=[r.zeroshot for r in rows],
                                     layer_sparsity=None if s.allocation.uniform else
                                     [r.sparsity.get("decoder_layers") for r in rows]))
            last = rows[-1] if len(rows) == len(keys) else last
        done = [p for p in perms if p["complete"]]  # metrics over whole orders; partial rows are shown as they come
        out: dict[str, Any] = {"permutations": perms, **metrics(done, s.datasets)}
        if s.eval.tasks:
            rows = [p["zeroshot"] or [None] * len(p["order"]) for p in done]
            out["zeroshot"] = {**self.results.get("zeroshot", {}),
                               **zeroshot_summary(rows, self.dense_zeroshot, s.eval.tasks)}
        if last is not None:
            out["sparsity"] = {"pattern": s.pattern.name, "target": s.pattern.ratio if prunes else 0.0,
                               "allocation": s.allocation.record, **last.sparsity}
        return out


def job_inputs(data: dict[str, DatasetSplits], dense: dict[str, Any]) -> dict[str, Any]:
    """What a job's states are computed from: the dense weights' fingerprint and, per dataset, a digest of the
    calibration segments and evaluation windows (text and tokenizer together) with the file each came from."""
    def role(tokens, provenance):
        return {"tokens": tokens_digest(tokens), "location": (provenance or {}).get("location")}

    return {"model": weights_fingerprint(dense),
            "data": {name: {"evaluation": role(split.evaluation, split.provenance.get("evaluation")),
                            **({"calibration": role(split.calibration, split.provenance["calibration"])}
                               if "calibration" in split.provenance else {})}
                     for name, split in data.items()}}


def load_job_data(s: Settings, tokenizer) -> tuple[dict[str, DatasetSplits], str | None]:
    """Every dataset of the job, tokenised and cut (needs only the tokenizer: runs before the model loads)."""
    d = s.data
    root = d.root
    if root is None and (root := default_root()) is not None:
        log.info("data.root is unset: using %s", root)
    data = {
        name: load_dataset_splits(
            name, tokenizer, root=root, nsamples=d.nsamples, seqlen=d.seqlen, seed=d.seed,
            max_windows=s.eval.max_windows, hub=d.hub, use_hub=d.use_hub, with_calibration=s.method_class.prunes,
            demo_root=d.demo_root, token_cache=token_cache_dir() if d.token_cache else None, bos=d.bos,
            custom=d.sources)
        for name in s.datasets
    }
    return data, str(root) if root else None
