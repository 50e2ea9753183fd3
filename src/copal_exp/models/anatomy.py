"""Where things are inside a causal LM: its decoder layers, their prefix, their prunable linears, the
final norm and the LM head. The one place that knows model families' attribute names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: decoder-layer lists of the families supported (LLaMA/Mistral/Qwen/Gemma; OPT; GPT-2; GPT-NeoX)
LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers")
#: final norms, in the same order of families
NORM_PATHS = ("model.norm", "model.decoder.final_layer_norm", "transformer.ln_f", "gpt_neox.final_layer_norm",
              "model.final_layernorm")  # the last: Phi


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM."""
    for path in LAYER_PATHS:
        obj = _get(model, path)
        if isinstance(obj, nn.ModuleList):
            return obj
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def layer_prefix(model: nn.Module) -> str:
    """The qualified name of the decoder-layer list (``model.layers`` for LLaMA)."""
    layers = decoder_layers(model)
    return next(name for name, m in model.named_modules() if m is layers)


def is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 and relatives): a linear map whose weight is stored ``[in, out]``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def find_linears(module: nn.Module) -> dict[str, nn.Module]:
    """Every linear map inside ``module`` — ``nn.Linear`` and transformers' ``Conv1D`` — by qualified name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear) or is_conv1d(m)}


def weight_matrix(module: nn.Module):
    """The weight as ``[out, in]`` (what every method expects): a transposed view for ``Conv1D``."""
    return module.weight.data.t() if is_conv1d(module) else module.weight.data


def set_weight_matrix(module: nn.Module, weight) -> None:
    """Write an ``[out, in]`` weight back in the module's own layout."""
    module.weight.data.copy_(weight.t() if is_conv1d(module) else weight)


def in_features(module: nn.Module) -> int:
    return module.weight.shape[0] if is_conv1d(module) else module.in_features


@dataclass(frozen=True)
class Selection:
    """Which linears inside the decoder layers are pruned (``prune.*`` in the config): names matching one
    of ``targets`` (all when ``None``) and none of ``ignore`` (regular expressions, ``re.search``), in
    decoder layers ``min_layer <= i < max_layer``. Embeddings and the LM head are never candidates."""

    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = field(default_factory=tuple)
    min_layer: int = 0
    max_layer: int | None = None

    @classmethod
    def from_config(cls, prune) -> "Selection":
        """From the typed ``prune`` section (:class:`copal_exp.config.schema.PruneConfig`)."""
        return cls(None if prune.targets is None else tuple(prune.targets), tuple(prune.ignore), prune.min_layer,
                   prune.max_layer)

    def selects(self, name: str, layer_index: int) -> bool:
        if layer_index < self.min_layer or (self.max_layer is not None and layer_index >= self.max_layer):
            return False
        if self.targets is not None and not any(re.search(t, name) for t in self.targets):
            return False
        return not any(re.search(i, name) for i in self.ignore)


def prunable_linears(model: nn.Module, selection: Selection | None = None) -> dict[str, nn.Module]:
    """The linears that are pruned, by qualified name: inside the decoder layers (never embeddings or
    LM head), chosen by ``selection`` (default: all of them)."""
    selection = selection or Selection()
    prefix = layer_prefix(model)
    return {f"{prefix}.{i}.{sub}": lin for i, layer in enumerate(decoder_layers(model))
            for sub, lin in find_linears(layer).items() if selection.selects(f"{prefix}.{i}.{sub}", i)}


def final_norm(model: nn.Module) -> nn.Module:
    for path in NORM_PATHS:
        obj = _get(model, path)
        if isinstance(obj, nn.Module):
            return obj
    raise ValueError(f"cannot find the final norm of {type(model).__name__}")


def lm_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def pruned_modules(linears: dict, selection: Selection) -> dict[str, Any]:
    """What the job prunes: how many linears, of which types, chosen how."""
    types: dict[str, int] = {}
    for lin in linears.values():
        types[type(lin).__name__] = types.get(type(lin).__name__, 0) + 1
    targets = None if selection.targets is None else list(selection.targets)
    return {"count": len(linears), "types": types, "targets": targets, "ignore": list(selection.ignore),
            "min_layer": selection.min_layer, "max_layer": selection.max_layer}
