"""RIA (Zhang et al., ICLR 2024, "Plug-and-Play"): relative importance and activations (docs/design.md, "Methods").

A weight's importance relative to its input channel (its column) and to its output channel (its row),
times the input activation norm raised to the power ``a``:

    S_ij = ( |W_ij| / Σ_k |W_kj|  +  |W_ij| / Σ_k |W_ik| ) · ‖X_j‖₂^a

(official code: ``biomedical-cybernetics/Relative-importance-and-activation-pruning``, ``lib/prune.py``,
``prune_ria``). Unstructured masks compare the whole matrix (``group=layer``, the official default;
``--per_outneuron`` is ``group=row``); N:M keeps the N highest of every M. The official channel
reallocation and linear-sum-assignment options for N:M are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from copal_exp.config.fields import number
from copal_exp.pruning.masks import select_mask
from copal_exp.pruning.methods.registry import register
from copal_exp.pruning.methods.wanda import Wanda

GROUPS = ("layer", "row")


def _relative(magnitude: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``magnitude / total``, 0 where the total is 0 (an all-zero row or column: nothing to rank)."""
    return torch.where(total > 0, magnitude / total.clamp_min(torch.finfo(magnitude.dtype).tiny), 0.0)


def ria_score(weight: torch.Tensor, sq_norms: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """RIA's importance of every weight; ``sq_norms`` the summed squared input norms (any positive scale of them
    ranks the same)."""
    w = weight.float().abs()
    relative = _relative(w, w.sum(dim=0, keepdim=True)) + _relative(w, w.sum(dim=1, keepdim=True))
    return relative * sq_norms.sqrt().reshape(1, -1).pow(a)


@register("ria")
class RIA(Wanda):
    """Wanda's statistics (the inputs' squared norms), RIA's score and comparison group."""

    @dataclass
    class Options:
        a: float = 0.5  # exponent of the activation norm (official --a)
        group: str = "layer"  # layer | row: unstructured comparison group (official default: the whole matrix)

        def check(self) -> None:
            self.a = number(self.a, "method.a")
            if self.a < 0:
                raise ValueError(f"method.a={self.a!r}: the exponent of the activation norm must be >= 0")
            if self.group not in GROUPS:
                raise ValueError(f"method.group={self.group!r}: allowed values are {GROUPS}")

    def prune(self, name, weight, stats, memory, pattern=None):
        keep = select_mask(ria_score(weight, stats, self.opts.a), pattern or self.pattern, group=self.opts.group)
        return weight * keep, keep, None
