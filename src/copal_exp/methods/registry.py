"""The method interface the layer-by-layer engine talks to, and the name → class registry.

The engine knows nothing of any method: it hands each linear's calibration inputs and outputs to
``accumulate`` and asks ``prune`` for the new weight and keep mask. A method's continual memory
(COPAL's accumulated sensitivity) lives in the method object and travels through
``state_dict``/``load_state_dict``; everything else is per step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from copal_exp.masks import Pattern

METHODS: dict[str, type["PruningMethod"]] = {}


def register(name: str):
    """Class decorator adding a method to :data:`METHODS` under ``name``."""

    def wrap(cls: type[PruningMethod]) -> type[PruningMethod]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


class PruningMethod:
    """Base class: a method scores the weights of one linear layer and selects a keep mask."""

    name: ClassVar[str] = ""
    #: whether ``prune`` needs statistics from calibration data
    uses_calibration: ClassVar[bool] = True
    #: whether the method prunes at all (``dense`` does not)
    prunes: ClassVar[bool] = True
    #: option names accepted from the config, with their defaults
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, pattern: Pattern, **options: Any):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"method={self.name}: unknown option(s) {unknown}; allowed: {sorted(self.options)}"
            )
        self.pattern = pattern
        self.config = {**self.options, **options}

    def new_statistics(self, weight: torch.Tensor) -> Any:
        """Empty per-step statistics for a linear layer with this weight."""
        return None

    def accumulate(self, stats: Any, inputs: torch.Tensor, outputs: torch.Tensor, bias: torch.Tensor | None) -> Any:
        """Fold one batch of calibration segments (``[B, L, d_in]`` → ``[B, L, d_out]``) into ``stats``."""
        return stats

    def prune(self, name: str, weight: torch.Tensor, stats: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(new_weight, keep_mask)`` for the linear layer ``name``."""
        raise NotImplementedError

    def end_step(self) -> None:
        """Called once after every layer of a step has been pruned."""

    def state_dict(self) -> dict[str, Any]:
        """Memory that carries over between continual steps (none for the baselines)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method={self.name} keeps no state between steps, got keys {sorted(state)}")


def build_method(name: str, pattern: Pattern, **options: Any) -> PruningMethod:
    """Instantiate the method registered as ``name``."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}: allowed values are {sorted(METHODS)}")
    return METHODS[name](pattern, **options)
