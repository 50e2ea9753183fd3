"""Wanda (Sun et al. 2023): score |W_ik| · ‖X_k‖₂, compared within each output row (docs/design.md, "Methods")."""

from __future__ import annotations

import torch

from copal_exp.pruning.masks import select_mask
from copal_exp.pruning.methods.registry import PruningMethod, register


def accumulate_input_norms(sq_norms: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Add the squared norm of every input feature over all tokens of ``inputs`` (``[..., d_in]``)."""
    return sq_norms + inputs.reshape(-1, inputs.shape[-1]).float().pow(2).sum(dim=0)


def wanda_score(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    return weight.float().abs() * sq_norms.sqrt().reshape(1, -1)


@register("wanda")
class Wanda(PruningMethod):
    input_statistics = True  # statistics of the input only: linears reading one input share them

    @classmethod
    def statistics_bytes(cls, d_out, d_in):
        return 4 * d_in  # float32 squared input norms

    def new_statistics(self, weight):
        return torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)

    def accumulate(self, stats, inputs, outputs, bias):
        return accumulate_input_norms(stats, inputs)

    def prune(self, name, weight, stats, memory, pattern=None):
        keep = select_mask(wanda_score(weight, stats), pattern or self.pattern, group="row")
        return weight * keep, keep, None
