"""COPAL (Malla et al., ICML 2024): continual pruning by accumulated output sensitivity (docs/design.md, "Methods").

For a linear layer Y = W X, the perturbations ΔW = εW and ΔX = εX give ΔY = 2εY. The gradient of
L_j = ‖ΔY_j‖² with respect to ΔW is ∇_j = 2 ΔY_j X_jᵀ. The sensitivity accumulates over every
dataset seen so far, G_t = G_{t−1} + Σ_j |∇_j|, and the importance is S = |W ⊙ G| with the dense
base weights W. ``granularity`` picks what j is: a calibration segment (gradients summed over its
tokens before the absolute value) or a single token (Σ_tokens |∇| = 2 |ΔY|ᵀ|X|).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from copal_exp.config.fields import number
from copal_exp.pruning.masks import select_mask
from copal_exp.pruning.methods.registry import PruningMethod, register

GRANULARITIES = ("segment", "token")
GROUPS = ("layer", "row")


def accumulate_sensitivity(
    sensitivity: torch.Tensor,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    granularity: str = "token",
    epsilon: float = 1.0,
) -> torch.Tensor:
    """Add Σ_j |∇_j| for a batch of segments: ``inputs`` ``[B, L, d_in]``, bias-free ``outputs`` ``[B, L, d_out]``.

    With ΔY = 2εY, ∇_j = 2 ΔY_jᵀ X_j = 4ε Y_jᵀ X_j, and ε > 0, so |∇_j| = 4ε |Y_jᵀ X_j| per segment and
    Σ_tokens |∇| = 4ε |Y|ᵀ|X| per token: the factor 4ε goes into the product's scale, not over Y."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"method.granularity={granularity!r}: allowed values are {GRANULARITIES}")
    x = inputs.float().reshape(-1, inputs.shape[-2], inputs.shape[-1])
    y = outputs.float().reshape(-1, outputs.shape[-2], outputs.shape[-1])
    scale = 4.0 * epsilon
    for xj, yj in zip(x, y):
        if granularity == "segment":
            sensitivity.add_((yj.t() @ xj).abs_(), alpha=scale)
        else:
            sensitivity.addmm_(yj.t().abs(), xj.abs(), alpha=scale)
    return sensitivity


def copal_score(dense_weight: torch.Tensor, sensitivity: torch.Tensor) -> torch.Tensor:
    return torch.mul(dense_weight.float(), sensitivity).abs_()


@register("copal")
class Copal(PruningMethod):
    carries_memory = True
    memory_file = "sensitivity.safetensors"
    # G's meaning (granularity, perturbation) and scale (epsilon) must match to add to it; group as well
    memory_options = ("granularity", "group", "perturbation", "epsilon")
    inits = ("global",)  # every step restarts from the dense weights W; only G carries over

    @dataclass
    class Options:
        granularity: str = "token"  # token | segment: what one gradient j is; token chosen by measurement
        group: str = "row"  # row | layer: comparison group of unstructured masks; row chosen by measurement
        perturbation: str = "relative"  # ΔW = εW, ΔX = εX
        epsilon: float = 1.0  # scales G only; masks do not depend on it

        def check(self) -> None:
            if self.granularity not in GRANULARITIES:
                raise ValueError(f"method.granularity={self.granularity!r}: allowed values are {GRANULARITIES}")
            if self.group not in GROUPS:
                raise ValueError(f"method.group={self.group!r}: allowed values are {GROUPS}")
            if self.perturbation != "relative":
                raise ValueError(f"method.perturbation={self.perturbation!r}: allowed values are ('relative',)")
            # ε only scales G, but 0 or NaN would make every score 0 or NaN: a meaningless mask
            self.epsilon = number(self.epsilon, "method.epsilon", positive=True)

    @classmethod
    def label(cls, options, init):
        return f"{cls.name} ({options.get('granularity')}, {options.get('group')})"

    @classmethod
    def statistics_bytes(cls, d_out, d_in):
        return 4 * d_out * d_in  # this step's float32 G

    @classmethod
    def working_bytes(cls, d_out, d_in):
        return 4 * d_out * d_in * 2 + 20 * d_out * d_in  # G before + after, and the mask selection

    @classmethod
    def memory_bytes(cls, d_out, d_in):
        return 4 * d_out * d_in  # the accumulated float32 G, carried to later steps

    def new_statistics(self, weight):
        return torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)

    def accumulate(self, stats, inputs, outputs, bias):
        if bias is not None:
            outputs = outputs - bias
        return accumulate_sensitivity(stats, inputs, outputs, self.opts.granularity, self.opts.epsilon)

    def outlier_scores(self, weight, stats, memory):
        return copal_score(weight, stats if memory is None else stats + memory)

    def prune(self, name, weight, stats, memory, pattern=None):
        total = stats if memory is None else stats.add_(memory)  # this step's G is not read again: G_t in place
        keep = select_mask(copal_score(weight, total), pattern or self.pattern, group=self.opts.group)
        return weight * keep, keep, total
