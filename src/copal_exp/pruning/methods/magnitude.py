"""Magnitude pruning: score |W|, compared over the whole matrix (docs/design.md, "Methods")."""

from __future__ import annotations

import torch

from copal_exp.pruning.masks import select_mask
from copal_exp.pruning.methods.registry import PruningMethod, register


def magnitude_score(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs()


@register("magnitude")
class Magnitude(PruningMethod):
    uses_calibration = False

    def prune(self, name, weight, stats, memory, pattern=None):
        keep = select_mask(magnitude_score(weight.float()), pattern or self.pattern, group="layer")
        return weight * keep, keep, None
