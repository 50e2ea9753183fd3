"""The unpruned reference: every step leaves the model as it is."""

from __future__ import annotations

from copal_exp.pruning.methods.registry import PruningMethod, register


@register("dense")
class Dense(PruningMethod):
    uses_calibration = False
    prunes = False
    inits = ("global",)
