"""The state cache of a job: every distinct model state computed so far, what a later step starts
from (pruned weights for sequential init, a method's memory), and their lifetime.

States are restored from the job's ``states/`` folder on resume, saved there as they complete, and a
state's carried weights and memory are released (from memory, disk offload and ``states/``) once
every child step that starts from it has run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from copal_exp.io.checkpoint import StateStore
from copal_exp.io.offload import discard, file_handles
from copal_exp.metrics.transfer import mask_change
from copal_exp.protocol.plan import Plan
from copal_exp.pruning.methods import Memory

log = logging.getLogger(__name__)


@dataclass
class ModelState:
    """One distinct model state: evaluations, bit-packed keep masks (``None`` once saved in ``states/``:
    read back when a mask change needs them), achieved sparsity, seconds per phase, and — while a child
    step still needs them — its pruned weights and its method's memory."""

    key: tuple
    ppl: dict[str, float]
    masks: dict[str, np.ndarray] | None
    sparsity: dict[str, Any]
    seconds: dict[str, float]
    weights: dict[str, torch.Tensor] | None = None
    memory: Memory | None = None
    zeroshot: dict[str, dict[str, Any]] | None = None  # eval.tasks: task -> acc, acc_norm, stderr, n

    @property
    def carries(self) -> bool:
        return self.weights is not None or self.memory is not None


def memory_files(memory: Memory | None) -> list[str]:
    """The files holding a memory's tensors (offloaded to disk)."""
    return file_handles(memory.tensors.values()) if memory is not None else []


def discard_memory(memory: Memory | None) -> None:
    """Remove the on-disk tensors of a memory nothing will start from again."""
    discard(memory_files(memory))


def restore_state(record: dict[str, Any], carry: dict[str, Any] | None) -> ModelState:
    """A saved state as read back from ``states/``; its masks stay there (read per pair that needs a mask change)."""
    state = ModelState(tuple(record["key"]), record["ppl"], None, record["sparsity"], record["seconds"],
                       zeroshot=record.get("zeroshot"))
    if carry is not None:
        state.weights = carry["weights"]
        state.memory = Memory(**carry["memory"]) if carry.get("memory") is not None else None
    return state


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy in host memory (the weights a step starts from wait there, whichever device the model is on)."""
    return tensor.detach().to("cpu", copy=True)


class StateCache:
    def __init__(self, linears: dict[str, torch.nn.Linear], store: StateStore | None):
        self.linears = linears
        self.dense = {name: host_copy(lin.weight.data) for name, lin in linears.items()}
        self.sizes = {name: w.numel() for name, w in self.dense.items()}
        self.store = store
        self.states: dict[tuple, ModelState] = {}
        self.children_left: dict[tuple, int] = {}
        self.mask_changes: dict[tuple[tuple, tuple], float] = {}

    def resume(self, plan: Plan, keep_final: bool = False) -> int:
        """Restore the states the job directory holds (verified); returns how many belong to ``plan``.

        A restored state that a step still to compute starts from (or the final state of an order, when
        ``keep_final``: it is exported) must come with its carry; one whose carry was released (or lost) is
        recomputed instead, and so on up the order to the nearest state that still has its carry (or to
        the start), so a child is never computed from a parent without its weights or memory."""
        saved = self.store.load_all(restore_state) if self.store else {}
        states = {key: state for key, state in saved.items() if key in plan.parents}
        finals = set(plan.final_keys) if keep_final else set()
        while plan.carries_state:
            left = plan.children_left(set(states))
            lacking = [key for key, state in states.items()
                       if not state.carries and (left.get(key, 0) > 0 or key in finals)]
            if not lacking:
                break
            log.warning("recomputing %d saved state(s) whose carried weights or memory a later step needs and "
                        "the job directory no longer holds: %s", len(lacking), ", ".join(map(str, lacking)))
            for key in lacking:
                del states[key]
        self.states = states
        self.children_left = plan.children_left(set(self.states))
        return len(self.states)

    def start(self, parent: ModelState | None, from_parent_weights: bool) -> None:
        """Put the weights a step starts from into the model: the parent's pruned ones, or the dense ones."""
        weights = parent.weights if (from_parent_weights and parent is not None) else self.dense
        for name, lin in self.linears.items():
            lin.weight.data.copy_(weights[name])

    def add(self, state: ModelState, keep_weights: bool, memory: Memory | None, keep_carry: bool) -> None:
        """Record a completed state, with what its children start from when ``keep_carry``; save it."""
        if keep_carry:
            state.weights = {n: host_copy(lin.weight.data) for n, lin in self.linears.items()} if keep_weights else None
            state.memory = memory
        else:
            discard_memory(memory)
        self.states[state.key] = state
        if self.store:
            self.store.save(state)
            state.masks = None  # on disk now: host memory does not grow with the number of states

    def masks_of(self, state: ModelState) -> dict[str, np.ndarray]:
        return state.masks if state.masks is not None else self.store.load_record(state.key)["masks"]

    def mask_change(self, previous: ModelState, current: ModelState) -> float:
        """Fraction of mask entries that differ between two states, computed once per pair."""
        pair = (previous.key, current.key)
        if pair not in self.mask_changes:
            before, after = self.masks_of(previous), self.masks_of(current)
            self.mask_changes[pair] = mask_change(before, after, self.sizes) if after else 0.0
        return self.mask_changes[pair]

    def child_done(self, parent: ModelState | None) -> None:
        """One more child of ``parent`` has run; release its carry after the last."""
        if parent is None:
            return
        self.children_left[parent.key] -= 1
        if self.children_left[parent.key] == 0:
            discard_memory(parent.memory)
            parent.weights = parent.memory = None
            if self.store:
                self.store.drop_carry(parent.key)
