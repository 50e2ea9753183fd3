"""Calibration capture: the hidden states entering decoder layer 0, and the arguments every decoder
layer is called with.

Layers of one model may be called with different arguments: Gemma 3, Qwen 3 and Mistral variants
give sliding-window and full-attention layers different masks and rotary embeddings. So the model's
own forward is run once per segment with every decoder layer's ``forward`` replaced by a recorder
that keeps its positional and keyword arguments (and, for layer 0, the hidden states) and does no
work; the last recorder stops the pass. Nothing is rebuilt, so it holds across transformers
versions. Arguments shared by several layers (the same tensor objects) are stored once.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from copal_exp.errors import NonFiniteError
from copal_exp.io.offload import Offloader, resident
from copal_exp.models.anatomy import decoder_layers, layer_prefix


class _Captured(Exception):
    pass


@dataclass
class LayerInputs:
    """Per-segment hidden states entering the current layer (``[1, L, d]``, stored by an offloader), and
    for every layer and segment the extra positional and keyword arguments that layer is called with."""

    hidden: list
    args: list[list[tuple]]  # [layer][segment]
    kwargs: list[list[dict[str, Any]]]  # [layer][segment]

    def __len__(self) -> int:
        return len(self.hidden)


def to_device(value: Any, device: torch.device | str, memo: dict[int, Any] | None = None) -> Any:
    """``value`` with every tensor inside moved to ``device``; with ``memo``, a tensor met twice is moved once."""
    if isinstance(value, torch.Tensor):
        if memo is None:
            return value.to(device)
        if id(value) not in memo:
            memo[id(value)] = (value, value.detach().to(device))  # keep the source alive: ids stay unique
        return memo[id(value)][1]
    if isinstance(value, tuple):
        return tuple(to_device(v, device, memo) for v in value)
    if isinstance(value, list):
        return [to_device(v, device, memo) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device, memo) for k, v in value.items()}
    return value


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, segments: torch.Tensor, device: torch.device | str = "cpu") -> LayerInputs:
    """Run each segment (``[n, L]`` token ids) through the model with recording layers; what every
    layer receives is kept on CPU. Only the modules outside the decoder layers are moved to ``device``."""
    layers = decoder_layers(model)
    hidden: list[torch.Tensor] = []
    args: list[list[tuple]] = [[] for _ in layers]
    kwargs: list[list[dict[str, Any]]] = [[] for _ in layers]
    memo: dict[int, Any] = {}

    def recorder(index: int):
        def forward(*call_args, **call_kwargs):
            if call_args:
                x, rest = call_args[0], call_args[1:]
            else:
                x, rest = call_kwargs.pop("hidden_states"), ()
            if index == 0:
                hidden.append(x.detach().cpu())
            args[index].append(to_device(rest, "cpu", memo))
            kwargs[index].append(to_device(call_kwargs, "cpu", memo))
            if index == len(layers) - 1:
                raise _Captured
            return x

        return forward

    for index, layer in enumerate(layers):
        layer.forward = recorder(index)  # an instance attribute: the class's forward is untouched
    try:
        with ExitStack() as moved:  # the modules outside the layers visit the device, then go back where they were
            for module in _outside_layers(model):
                moved.enter_context(resident(module, device))
            for row in segments:
                memo.clear()  # share tensors between the layers of one segment, never across segments
                try:
                    model(row.reshape(1, -1).to(device), use_cache=False)
                except _Captured:
                    pass
    finally:
        for layer in layers:
            del layer.forward
    return LayerInputs(hidden, args, kwargs)


def _outside_layers(model: nn.Module) -> list[nn.Module]:
    """The leaf modules outside the decoder layers (embeddings, rotary tables, final norm, LM head)."""
    prefix = layer_prefix(model)
    return [m for name, m in model.named_modules() if not name.startswith(prefix) and not list(m.children())]


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs, device, index: int, keep: Offloader | None = None) -> list | None:
    """Outputs of decoder layer ``index`` for every captured segment, called with that layer's own
    arguments, in the model's dtype, stored by ``keep`` (non-finite outputs raise
    :class:`NonFiniteError`); ``None`` without ``keep`` (only the hooks matter)."""
    outputs = []
    for j, h in enumerate(inputs.hidden):
        memo: dict[int, Any] = {}
        out = _layer_output(layer(Offloader.load(h, device), *to_device(inputs.args[index][j], device, memo),
                                  **to_device(inputs.kwargs[index][j], device, memo)))
        if keep is not None and not torch.isfinite(out).all():
            raise NonFiniteError(f"segment {j}")
        if keep is not None:
            outputs.append(keep.store(out, f"act{j}"))
    return outputs if keep is not None else None
