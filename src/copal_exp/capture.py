"""Calibration capture: the hidden states and keyword arguments entering decoder layer 0.

The layer's keyword arguments (attention mask, position ids, rotary embeddings, cache position …)
change between transformers versions, so they are captured from a real forward call, never rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from copal_exp.anatomy import decoder_layers, layer_prefix
from copal_exp.errors import NonFiniteError
from copal_exp.offload import Offloader


class _Captured(Exception):
    pass


@dataclass
class LayerInputs:
    """Per-segment hidden states ``[1, L, d]`` (CPU, model dtype) and the layer's keyword arguments."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.hidden)


def to_device(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, segments: torch.Tensor, device: torch.device | str = "cpu") -> LayerInputs:
    """Run each segment (``[n, L]`` token ids) up to decoder layer 0 and record what enters it.

    Only the modules before the first layer (embeddings, rotary embedding) and layer 0 itself are
    moved to ``device``; the captured tensors are kept on CPU.
    """
    layers = decoder_layers(model)
    first = layers[0]
    hidden: list[torch.Tensor] = []
    kwargs: list[dict[str, Any]] = []

    def grab(module, args, kw):
        x = args[0] if args else kw.pop("hidden_states")
        kw = {k: v for k, v in kw.items() if k != "hidden_states"}
        hidden.append(x.detach().cpu())
        kwargs.append(to_device(kw, "cpu"))
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    moved = _move_outside_layers(model, layers, device)
    try:
        for row in segments:
            try:
                model(row.reshape(1, -1).to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
        for m in moved:
            m.to("cpu")
    return LayerInputs(hidden, kwargs)


def _move_outside_layers(model: nn.Module, layers: nn.ModuleList, device) -> list[nn.Module]:
    """Move the leaf modules outside the decoder layers, and layer 0, to ``device``; return them."""
    if str(device) == "cpu":
        return []
    prefix = layer_prefix(model)
    moved = [m for name, m in model.named_modules() if not name.startswith(prefix) and not list(m.children())]
    moved.append(layers[0])
    for m in moved:
        m.to(device)
    return moved


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs, device, keep: Offloader | None = None) -> list | None:
    """Outputs of ``layer`` for every captured segment, in the model's dtype, stored by ``keep``
    (non-finite outputs raise :class:`NonFiniteError`); ``None`` without ``keep`` (only the hooks matter)."""
    outputs = []
    for j, (h, kw) in enumerate(zip(inputs.hidden, inputs.kwargs)):
        out = _layer_output(layer(Offloader.load(h, device), **to_device(kw, device)))
        if keep is not None and not torch.isfinite(out).all():
            raise NonFiniteError(f"segment {j}")
        if keep is not None:
            outputs.append(keep.store(out, f"act{j}"))
    return outputs if keep is not None else None
