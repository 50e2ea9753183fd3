"""The layer-by-layer pruning engine (docs/design.md, "Protocol"). It knows nothing of any method.

For each decoder layer in turn: hooks on its linears feed the calibration inputs/outputs to the
method, the method returns new weights and keep masks, and the segments run again through the
now-pruned layer to give the next layer's inputs, so errors propagate as in SparseGPT and Wanda.
Only the layer being processed visits ``device``; the rest stays on the host, and the activations wait
where ``activations`` keeps them — unless the whole model is kept on the device for the job
(``run.resident``), in which case nothing moves.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from copal_exp.errors import NonFiniteError
from copal_exp.io.offload import Offloader, discard, resident
from copal_exp.models.anatomy import (
    Selection,
    decoder_layers,
    find_linears,
    layer_prefix,
    set_weight_matrix,
    weight_matrix,
)
from copal_exp.pruning.allocation import Allocation
from copal_exp.pruning.capture import capture_layer_inputs, run_layer
from copal_exp.pruning.masks import PackedMasks
from copal_exp.pruning.methods.registry import Memory, PruningMethod
from copal_exp.pruning.sharing import InputGroups


def synchronize() -> None:
    """Wait for queued CUDA work (a no-op without CUDA), so wall time is charged to the phase that caused it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class PhaseTimer:
    """Accumulates wall time per named phase (synchronising CUDA at both ends of a phase)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize()
            self.seconds[phase] += time.perf_counter() - start


@torch.no_grad()
def prune_model(
    model: nn.Module,
    segments: torch.Tensor,
    method: PruningMethod,
    device: str | torch.device = "cpu",
    timer: PhaseTimer | None = None,
    progress: bool = True,
    desc: str = "prune",
    activations: Offloader | None = None,
    memory: Memory | None = None,
    memory_store: Offloader | None = None,
    selection: Selection | None = None,
    allocation: Allocation | None = None,
) -> tuple[PackedMasks, Memory | None]:
    """Prune every decoder-layer linear of ``model`` in place.

    Returns the keep masks by name (bit-packed as they are made: :class:`PackedMasks`) and, for a method that carries memory, its memory after
    this step (``memory`` is the memory before it; its tensors are kept by ``memory_store``, default
    host memory). ``activations`` says where the calibration activations wait between layers;
    ``selection`` which linears are pruned (default: all of them); ``allocation`` how much of each decoder
    layer (default: the method's pattern everywhere; OWL first measures the layers' outlier ratios on these
    segments, through the model as it is now).
    """
    timer = timer or PhaseTimer()
    activations = activations or Offloader("cpu")
    memory_store = memory_store or Offloader("cpu")
    selection = selection or Selection()
    masks = PackedMasks()
    if not method.prunes:
        return masks, None
    previous = memory or Memory()
    carried = Memory(steps=previous.steps + 1) if method.carries_memory else None
    layers = decoder_layers(model)
    prefix = layer_prefix(model)
    selected = [{sub: lin for sub, lin in find_linears(layer).items() if selection.selects(f"{prefix}.{index}.{sub}", index)}
                for index, layer in enumerate(layers)]
    allocation = allocation or Allocation()
    inputs = None
    if method.uses_calibration or allocation.measures:
        with timer("capture"):
            inputs = capture_layer_inputs(model, segments, device)
    patterns = [method.pattern] * len(layers)
    if allocation.measures:
        with timer("allocation"):
            measured = allocation.measure(layers, selected, inputs, device, activations, method=method,
                                          memory=_memory_of(previous, prefix, device))
        patterns = allocation.patterns(measured, method.pattern)
    if not method.uses_calibration and inputs is not None:  # the allocation's pass only: nothing to propagate
        discard(inputs.hidden)
        inputs = None
    for index, layer in enumerate(tqdm(layers, desc=desc, unit="layer", disable=not progress, leave=False)):
        with resident(layer, device):  # a host-held layer visits the device; a model kept there stays
            linears = selected[index]
            sharing = InputGroups()
            stats: dict[str, Any] = {}
            if inputs is not None:
                with timer("statistics"):
                    handles = [lin.register_forward_hook(_stats_hook(method, stats, sub, sharing))
                               for sub, lin in linears.items()]
                    try:
                        run_layer(layer, inputs, device, index)
                    finally:
                        for handle in handles:
                            handle.remove()
                        sharing.release()
            groups = sharing.groups(list(linears)) if method.input_statistics else [[sub] for sub in linears]
            for group in groups:
                names = [f"{prefix}.{index}.{sub}" for sub in group]
                with timer("masks"):  # scores and mask selection (SparseGPT: also its OBS weight update)
                    shared = stats.pop(group[0], None)
                    if shared is None:  # never called (or no calibration): empty statistics
                        shared = method.new_statistics(weight_matrix(linears[group[0]]))
                    befores = [previous.tensors.get(name) for name in names]
                    befores = [None if b is None else Offloader.load(b, linears[sub].weight.device)
                               for b, sub in zip(befores, group)]
                    weights = [weight_matrix(linears[sub]) for sub in group]
                    if len(group) > 1:
                        outcomes = method.prune_group(names, weights, shared, befores, patterns[index])
                    else:
                        outcomes = [method.prune(names[0], weights[0], shared, befores[0], patterns[index])]
                    del shared, befores, weights
                    if carried is not None:
                        for name, (_, _, after) in zip(names, outcomes):
                            carried.tensors[name] = memory_store.store(after, name)
                with timer("update"):
                    for sub, name, (new_weight, keep, _) in zip(group, names, outcomes):
                        set_weight_matrix(linears[sub], new_weight)
                        masks.add(name, keep)
                    del outcomes
            if inputs is not None and index + 1 < len(layers):
                with timer("propagation"):
                    hidden = inputs.hidden
                    try:
                        inputs.hidden = run_layer(layer, inputs, device, index, keep=activations)
                    except NonFiniteError as exc:
                        raise NonFiniteError(f"{desc}: non-finite activations leaving decoder layer {index} ({exc})") from None
                    discard(hidden)
    if inputs is not None:
        discard(inputs.hidden)
    return masks, carried


def _memory_of(memory: Memory, prefix: str, device):
    """``(layer index, sub) -> `` the memory a method carries into this step for that linear, or ``None``."""
    def lookup(index: int, sub: str):
        held = memory.tensors.get(f"{prefix}.{index}.{sub}")
        return None if held is None else Offloader.load(held, device)

    return lookup


def _stats_hook(method: PruningMethod, stats: dict[str, Any], sub: str, sharing: InputGroups):
    """Fold a call's inputs (and outputs) into ``sub``'s statistics, created at its first call; for a method
    whose statistics depend on the input only, a linear called on its group leader's input adds nothing
    (the leader's statistics are the group's)."""
    def hook(module: nn.Linear, args, output):
        lead = sharing.observe(sub, args[0])
        if method.input_statistics and lead != sub:
            return
        held = stats.get(sub)
        if held is None:
            held = method.new_statistics(weight_matrix(module))
        stats[sub] = method.accumulate(held, args[0].detach(), output.detach(), module.bias)

    return hook
