"""The method contract the protocol and the engine talk to, and the name → class registry.

A method is one module: pure functions for its maths (``accumulate_*``, ``*_score``), and a
:class:`PruningMethod` subclass registered with :func:`register` that declares everything the
protocol needs to know about it — nothing outside ``methods/`` tests a method's name:

* ``prunes`` / ``uses_calibration``: whether it prunes at all, whether it needs calibration data;
* ``carries_memory``: whether it carries memory from one step to the next (one tensor per pruned
  linear, shaped like its weight, plus the number of steps seen). Such a method's states are keyed
  by the whole dataset prefix, and its memory can be exported and loaded across processes
  (``state.export`` / ``state.load``); ``memory_file`` names the exported tensors and
  ``memory_options`` the options a loaded memory must have been made with;
* ``updates_weights``: whether ``prune`` changes the kept weights too (SparseGPT's error
  compensation), so a pruned model is not ``W ⊙ M`` (export recomputes it);
* ``inits``: the step initialisations it allows (``global``: each step starts from the dense
  weights; ``sequential``: from the previous step's pruned weights);
* ``Options``: a dataclass of its typed options with their defaults (the only place they are
  defined), checked in ``Options.check``; ``label`` names a configured method in tables.

* ``input_statistics``: whether its statistics depend on a linear's input only; linears of a layer called
  on one input then share one accumulation, and :meth:`prune_group` gets them together.

The engine hands each linear's calibration inputs and outputs to :meth:`accumulate` and asks
:meth:`prune` (or :meth:`prune_group`) for the new weight, the keep mask and the linear's new memory: memory goes in and
comes out explicitly; where it is kept between layers and steps (device, host, disk) is the
caller's business.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from copal_exp.pruning.masks import Pattern
from copal_exp.registry import Registry

METHODS: Registry = Registry("method")
#: class decorator adding a method to :data:`METHODS` under ``name`` (``@register("name")``)
register = METHODS.register


@dataclass
class NoOptions:
    def check(self) -> None:
        """Raise ``ValueError`` naming ``method.<key>`` for a value that cannot run."""


@dataclass
class Memory:
    """What a method carries between steps: a tensor (or a storage handle) per pruned linear."""

    tensors: dict[str, Any] = field(default_factory=dict)
    steps: int = 0


class PruningMethod:
    """Base class: a method scores the weights of one linear layer and selects a keep mask."""

    name: ClassVar[str] = ""
    prunes: ClassVar[bool] = True
    uses_calibration: ClassVar[bool] = True
    carries_memory: ClassVar[bool] = False
    memory_file: ClassVar[str] = "memory.safetensors"
    memory_options: ClassVar[tuple[str, ...]] = ()
    inits: ClassVar[tuple[str, ...]] = ("global", "sequential")
    updates_weights: ClassVar[bool] = False
    # whether the statistics depend on a linear's input only (not its weight or output): linears called on
    # one input (q/k/v_proj, gate/up_proj) then share one accumulation (copal_exp.pruning.sharing)
    input_statistics: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def __init__(self, pattern: Pattern, **options: Any):
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"method={self.name}: unknown option(s) {unknown}; allowed: {sorted(known)}")
        self.pattern = pattern
        self.opts = self.Options(**options)
        self.opts.check()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls.Options())

    @property
    def config(self) -> dict[str, Any]:
        """The options as a plain dict (recorded in results and exported states)."""
        return dataclasses.asdict(self.opts)

    @classmethod
    def label(cls, options: dict[str, Any], init: str) -> str:
        """How tables name this method with these options and init."""
        return f"{cls.name} ({init})" if len(cls.inits) > 1 else cls.name

    # Bytes per linear layer of ``d_out × d_in`` weights, for the memory plan (``copal_exp.protocol.memory``):
    # what ``new_statistics``/``accumulate`` hold for every linear of one decoder layer, what ``prune``
    # allocates at once for one linear (default, measured: 20 bytes per weight for a float32 score, the
    # selection's copy, boolean masks, its int64 tie counts and the new weight),
    # and the memory carried to later steps.
    @classmethod
    def statistics_bytes(cls, d_out: int, d_in: int) -> int:
        return 0

    @classmethod
    def working_bytes(cls, d_out: int, d_in: int) -> int:
        return 20 * d_out * d_in if cls.prunes else 0

    @classmethod
    def memory_bytes(cls, d_out: int, d_in: int) -> int:
        return 0

    def new_statistics(self, weight: torch.Tensor) -> Any:
        """Empty per-step statistics for a linear layer with this weight."""
        return None

    def accumulate(self, stats: Any, inputs: torch.Tensor, outputs: torch.Tensor, bias: torch.Tensor | None) -> Any:
        """Fold one batch of calibration segments (``[B, L, d_in]`` → ``[B, L, d_out]``) into ``stats``."""
        return stats

    def prune(self, name: str, weight: torch.Tensor, stats: Any, memory: torch.Tensor | None,
              pattern: Pattern | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return ``(new_weight, keep_mask, new_memory)`` for the linear layer ``name``; ``memory`` is its
        memory from earlier steps (``None`` at the first step, and always for methods without memory);
        ``pattern`` the sparsity its decoder layer was allocated (``sparsity.allocation``; ``None``: the
        method's own ``self.pattern``)."""
        raise NotImplementedError

    def prune_group(self, names: list[str], weights: list[torch.Tensor], stats: Any, memories: list,
                    pattern: Pattern | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Prune linears that read the same input and share ``stats`` (``input_statistics`` methods only):
        by default each on its own through :meth:`prune`; a method that solves them jointly (SparseGPT)
        overrides it, giving the same masks."""
        return [self.prune(name, weight, stats, memory, pattern) for name, weight, memory in zip(names, weights, memories)]

    def outlier_scores(self, weight: torch.Tensor, stats: Any, memory: torch.Tensor | None) -> torch.Tensor:
        """The per-weight scores this method ranks ``weight`` by, from this step's ``stats`` and the memory
        carried into the step (what ``sparsity.owl_statistic=accumulated`` counts outliers in; methods that
        carry memory define it)."""
        raise NotImplementedError(f"method={self.name} has no accumulated score for sparsity.owl_statistic")


def method_class(name: str) -> type[PruningMethod]:
    return METHODS.get_entry(name, "method")


def build_method(name: str, pattern: Pattern, **options: Any) -> PruningMethod:
    """Instantiate the method registered as ``name``."""
    return method_class(name)(pattern, **options)


def reference_method() -> type[PruningMethod]:
    """The registered method that does not prune (the dense reference of every table)."""
    return next(cls for cls in METHODS.values() if not cls.prunes)
