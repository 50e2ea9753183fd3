"""Per-layer sparsity allocation: how much of each decoder layer a step prunes (docs/design.md, "Allocation").

``uniform`` gives every decoder layer the target pattern. ``owl`` is outlier-weighted layer-wise sparsity
(Yin et al., ICML 2024, ``luuyin/OWL`` ``lib/prune_all.py``): a decoder layer's *outlier ratio* is the share
(in %) of the Wanda scores ``|W_ij| · ‖X_j‖₂`` of all its pruned linears that exceed ``M`` × their mean,
measured on the step's calibration data flowing through the model as the step starts (the official code's
first, pruning-free pass); layers with more outliers are pruned less:

* unstructured at target ``s``: the ratios min–max normalised to ``[0, 2λ]``, centred on their mean, give
  each layer's density ``1 − s + (r̂_l − mean r̂)``, so the layers' mean sparsity is exactly ``s`` (every
  decoder layer of a LLaMA-style model has the same size: the weighted mean is ``s`` too); a sparsity at
  or below 0 becomes 0.01 as in the official code;
* N:M (the official ``wanda_owl_structure``): the ratios normalised to ``[0, λ]`` and centred, rounded to
  whole weights, change the number pruned per group of ``M``, ``(M − N) − round(r̂_l − mean r̂)``, kept
  within ``[0, M]``; so layers keep ``N ± 1`` (…) of every ``M`` and the mean is the target only up to the
  rounding (recorded per layer).

What the outliers are counted in is ``sparsity.owl_statistic``: ``wanda`` (the official statistic above) or
``accumulated`` — for a method that carries memory across steps (COPAL), its own score from that memory plus
this step's statistics, taken in the same pass (COPAL: ``|W ⊙ (G_{t−1} + G_t)|``, so the allocation follows
every domain seen so far, not the new one only; docs/design.md, "Allocation (OWL)", compares the two). Left
null it is ``accumulated`` for a method that carries memory (measured better for COPAL at 50 %, 70 % and 2:4)
and ``wanda`` for every other method.

The maths (:func:`outlier_ratio`, :func:`owl_sparsities`, :func:`owl_pruned_per_group`) are pure functions
of plain tensors and lists; :func:`layer_outlier_ratios` runs the pass that measures them, with the scores
of an :class:`OutlierScores` (:class:`WandaScores` or :class:`MethodScores`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from copal_exp.io.offload import Offloader, discard, resident
from copal_exp.models.anatomy import weight_matrix
from copal_exp.pruning.capture import LayerInputs, run_layer
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods.registry import METHODS, PruningMethod
from copal_exp.pruning.methods.wanda import accumulate_input_norms, wanda_score
from copal_exp.pruning.sharing import InputGroups
from copal_exp.registry import Registry

#: sparsity of a layer whose OWL sparsity came out at or below zero (the official code's floor)
OWL_FLOOR = 0.01


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """The share, in percent, of all entries of ``scores`` (one tensor per linear of a decoder layer) above
    ``m`` times their common mean (OWL's ``check_outlier_mean``)."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return float((flat > flat.mean() * m).sum()) / flat.numel() * 100


def _normalised(ratios: Sequence[float], scale: float) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    spread = r.max() - r.min()
    if spread == 0:  # every layer alike: no reallocation (the official code would divide by zero)
        return np.zeros_like(r)
    r = (r - r.min()) * (1 / spread * scale)
    return r - np.mean(r)


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> list[float]:
    """Unstructured OWL: each decoder layer's sparsity from its outlier ratio, mean ``target``."""
    density = _normalised(ratios, lam * 2) + (1 - target)
    return [float(s) if s > 0 else OWL_FLOOR for s in 1 - density]


def owl_pruned_per_group(ratios: Sequence[float], pattern: Pattern, lam: float) -> list[int]:
    """N:M OWL: weights pruned per group of ``M`` in each decoder layer (official ``wanda_owl_structure``)."""
    shift = np.round(_normalised(ratios, lam))
    pruned = (pattern.m - pattern.n) - shift
    return [int(min(max(p, 0), pattern.m)) for p in pruned]


ALLOCATIONS: Registry = Registry("allocation")
#: class decorator adding an allocation to :data:`ALLOCATIONS` (``sparsity.allocation=<name>``)
register_allocation = ALLOCATIONS.register


@dataclass(frozen=True)
class Allocation:
    """``sparsity.allocation``: how a step spreads the target over the decoder layers. The base class is
    ``uniform``; a subclass registered with :func:`register_allocation` measures something per decoder layer
    on the step's calibration data (:meth:`measure`) and turns it into one pattern per layer
    (:meth:`patterns`). Its options are its dataclass fields; ``record`` is what ``results.json`` keeps."""

    name: ClassVar[str] = "uniform"
    measures: ClassVar[bool] = False  # whether it needs the calibration pass (the engine captures inputs for it)

    @property
    def uniform(self) -> bool:
        return not self.measures

    def measure(self, layers: Sequence[nn.Module], linears: Sequence[dict[str, nn.Module]], inputs: LayerInputs,
                device, keep: Offloader, method: PruningMethod | None = None,
                memory: Callable[[int, str], torch.Tensor | None] | None = None) -> list[float]:
        """Per decoder layer the statistic the allocation is made from (NaN: a layer with nothing pruned).
        ``method`` is the step's pruning method and ``memory(layer_index, sub)`` the memory it carries into
        this step for that linear (``None`` for none)."""
        return [float("nan")] * len(layers)

    def patterns(self, measured: Sequence[float], pattern: Pattern) -> list[Pattern]:
        """One pattern per decoder layer; a layer without a measurement (NaN: none of its linears is pruned)
        keeps the target and takes no part in the allocation."""
        out = [pattern] * len(measured)
        at = [i for i, r in enumerate(measured) if r == r]
        if not self.measures or len(at) < 2:
            return out
        for i, p in zip(at, self.allocate([measured[i] for i in at], pattern)):
            out[i] = p
        return out

    def allocate(self, measured: Sequence[float], pattern: Pattern) -> list[Pattern]:
        return [pattern] * len(measured)

    @property
    def label(self) -> str:
        """What tables add to the method's label (``wanda (global) + owl``); empty for uniform."""
        return "" if self.uniform else f" + {self.name}"

    @property
    def kind(self) -> str:
        return self.name

    @property
    def record(self) -> dict:
        """What ``results.json`` records of it (``sparsity.allocation``)."""
        return {"kind": self.name, **dataclasses.asdict(self)}

    #: option field -> its key in the ``sparsity`` section (``sparsity.owl_m``)
    keys: ClassVar[dict[str, str]] = {}

    @classmethod
    def defaults(cls, pattern: Pattern, method: type[PruningMethod] | None = None) -> dict[str, Any]:
        """Option values when the config leaves them null (they may depend on the pattern and on the job's
        method class, when given)."""
        return {}

    def check(self, pattern: Pattern, method: type[PruningMethod] | None = None) -> None:
        """Raise ``ValueError`` naming ``sparsity.<key>`` for options that cannot run with ``pattern`` (and
        ``method``, the job's method class, when given)."""

    @classmethod
    def from_config(cls, sparsity: dict | None, pattern: Pattern | None = None,
                    method: type[PruningMethod] | None = None) -> "Allocation":
        """The allocation a (recorded) ``sparsity`` section asks for, its null options filled from
        :meth:`defaults` when ``pattern`` is given (and ``method``, the job's method class); records without
        the key are uniform. Options of another allocation are refused (``ValueError`` naming the key)."""
        sparsity = sparsity or {}
        entry = ALLOCATIONS.get_entry(sparsity.get("allocation") or "uniform", "sparsity.allocation")
        for other in ALLOCATIONS.values():
            for key in other.keys.values():
                if other is not entry and sparsity.get(key) is not None and key not in entry.keys.values():
                    raise ValueError(f"sparsity.{key}={sparsity[key]!r} applies to sparsity.allocation={other.name} "
                                     f"only; this job has sparsity.allocation={entry.name}")
        given = {f: sparsity[k] for f, k in entry.keys.items() if sparsity.get(k) is not None}
        filled = {**(entry.defaults(pattern, method) if pattern is not None else {}), **given}
        types = {f.name: f.type for f in dataclasses.fields(entry)}
        return entry(**{f: v if types[f] in (str, "str") else float(v) for f, v in filled.items()})

    def config_values(self) -> dict[str, object]:
        """The ``sparsity`` keys of its options, as recorded (defaults filled in)."""
        return {key: getattr(self, field) for field, key in self.keys.items()}


register_allocation("uniform")(Allocation)


@register_allocation("owl")
@dataclass(frozen=True)
class OWL(Allocation):
    """Outlier-weighted layer-wise sparsity; options ``sparsity.owl_m`` and ``sparsity.owl_lambda``, by default
    the official README's commands (M 5, λ 0.08 unstructured; M 6, λ 2 for N:M), and ``sparsity.owl_statistic``,
    by default the method's own accumulated score for a method that carries memory (COPAL: measured better at
    50 %, 70 % and 2:4, docs/design.md) and the official Wanda scores for every other method."""

    measures: ClassVar[bool] = True
    keys: ClassVar[dict[str, str]] = {"m": "owl_m", "lam": "owl_lambda", "statistic": "owl_statistic"}
    m: float = 5.0
    lam: float = 0.08
    statistic: str = "wanda"

    @classmethod
    def defaults(cls, pattern, method=None):
        nm = pattern.kind == "nm"
        statistic = "accumulated" if method is not None and method.carries_memory else "wanda"
        return {"m": 6.0 if nm else 5.0, "lam": 2.0 if nm else 0.08, "statistic": statistic}

    def check(self, pattern, method=None):
        if self.statistic not in OWL_STATISTICS:
            raise ValueError(f"sparsity.owl_statistic={self.statistic!r}: allowed values are {OWL_STATISTICS}")
        if self.statistic == "accumulated" and method is not None and not method.carries_memory:
            carrying = sorted(name for name, cls in METHODS.items() if cls.carries_memory)
            raise ValueError(f"sparsity.owl_statistic=accumulated: method={method.name} carries no memory across "
                             f"steps to accumulate; it applies to method={'|'.join(carrying)} (allowed for "
                             f"method={method.name}: wanda)")
        if not self.m > 0:
            raise ValueError(f"sparsity.owl_m={self.m!r}: must be > 0 (outliers lie above M x the layer's mean score)")
        if not self.lam > 0:
            raise ValueError(f"sparsity.owl_lambda={self.lam!r}: must be > 0")
        if pattern.kind == "unstructured" and pattern.ratio + 2 * self.lam >= 1:
            raise ValueError(f"sparsity.owl_lambda={self.lam!r}: with sparsity.ratio={pattern.ratio} a layer could be "
                             f"allocated up to {pattern.ratio + 2 * self.lam:.2f} sparsity; allowed: owl_lambda < "
                             f"{(1 - pattern.ratio) / 2:.3f}")

    def measure(self, layers, linears, inputs, device, keep, method=None, memory=None):
        if self.statistic == "accumulated":
            if method is None or not method.carries_memory:
                raise ValueError("sparsity.owl_statistic=accumulated needs a method that carries memory")
            scores: OutlierScores = MethodScores(method, memory or (lambda index, sub: None))
        else:
            scores = WandaScores()
        return layer_outlier_ratios(layers, linears, inputs, device, self.m, keep, scores)

    def allocate(self, measured, pattern):
        if pattern.kind == "nm":
            return [Pattern("nm", ratio=p / pattern.m, n=pattern.m - p, m=pattern.m)
                    for p in owl_pruned_per_group(measured, pattern, self.lam)]
        return [Pattern("unstructured", ratio=s) for s in owl_sparsities(measured, pattern.ratio, self.lam)]

    @property
    def record(self) -> dict:
        return {"kind": self.name, "m": self.m, "lambda": self.lam, "statistic": self.statistic}

    @property
    def label(self) -> str:
        return " + owl" if self.statistic == OWL_STATISTICS[0] else f" + owl ({self.statistic})"


#: ``sparsity.owl_statistic``: what OWL counts outliers in; the first is the official statistic (the default for
#: methods that carry no memory)
OWL_STATISTICS = ("wanda", "accumulated")


class OutlierScores:
    """The per-weight scores a layer's outlier ratio is counted in: statistics folded from the linear's
    calibration inputs and outputs (as a method's ``new_statistics``/``accumulate``), then ``score``.
    ``input_only``: the statistics depend on a linear's input alone, so linears called on one input share one
    accumulation (:class:`~copal_exp.pruning.sharing.InputGroups`)."""

    input_only = False

    def new(self, index: int, sub: str, weight: torch.Tensor) -> Any:
        raise NotImplementedError

    def accumulate(self, stats: Any, inputs: torch.Tensor, outputs: torch.Tensor, bias: torch.Tensor | None) -> Any:
        raise NotImplementedError

    def score(self, index: int, sub: str, weight: torch.Tensor, stats: Any) -> torch.Tensor:
        raise NotImplementedError


class WandaScores(OutlierScores):
    """The official statistic: Wanda's ``|W_ij| · ‖X_j‖₂``."""

    input_only = True

    def new(self, index, sub, weight):
        return torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)

    def accumulate(self, stats, inputs, outputs, bias):
        return accumulate_input_norms(stats, inputs)

    def score(self, index, sub, weight, stats):
        return wanda_score(weight, stats)


class MethodScores(OutlierScores):
    """A memory-carrying method's own score: its statistics of this step on top of ``memory(index, sub)``,
    the memory it carries into the step (:meth:`PruningMethod.outlier_scores`)."""

    def __init__(self, method: PruningMethod, memory: Callable[[int, str], torch.Tensor | None]):
        self.method, self.memory = method, memory
        self.input_only = method.input_statistics

    def new(self, index, sub, weight):
        return self.method.new_statistics(weight)

    def accumulate(self, stats, inputs, outputs, bias):
        return self.method.accumulate(stats, inputs, outputs, bias)

    def score(self, index, sub, weight, stats):
        return self.method.outlier_scores(weight, stats, self.memory(index, sub))


@torch.no_grad()
def layer_outlier_ratios(layers: Sequence[nn.Module], linears: Sequence[dict[str, nn.Module]], inputs: LayerInputs,
                         device, m: float, keep: Offloader, scores: OutlierScores | None = None) -> list[float]:
    """OWL's first pass: the calibration segments run through the decoder layers as they are (nothing is
    pruned), and each layer's outlier ratio of the ``scores`` (default Wanda's) of ``linears[i]`` (its pruned
    linears) is taken (NaN for a layer with none). ``inputs`` (the layers' captured inputs) is left as it
    was; the activations in between wait where ``keep`` puts them."""
    scores = scores or WandaScores()
    hidden, ratios = inputs.hidden, []
    for index, (layer, subset) in enumerate(zip(layers, linears)):
        with resident(layer, device):
            stats = {sub: scores.new(index, sub, weight_matrix(lin)) for sub, lin in subset.items()}
            sharing = InputGroups()
            handles = [lin.register_forward_hook(_stats_hook(scores, stats, sub, sharing)) for sub, lin in subset.items()]
            try:
                last = index + 1 == len(layers)
                outputs = run_layer(layer, LayerInputs(hidden, inputs.args, inputs.kwargs), device, index,
                                    keep=None if last else keep)
            finally:
                for handle in handles:
                    handle.remove()
                sharing.release()
            lead = {sub: sharing.leader.get(sub, sub) if scores.input_only else sub for sub in subset}
            per_linear = [scores.score(index, sub, weight_matrix(lin), stats[lead[sub]]) for sub, lin in subset.items()]
            stats.clear()
            ratios.append(outlier_ratio(per_linear, m) if per_linear else float("nan"))
            del per_linear
        if hidden is not inputs.hidden:
            discard(hidden)
        hidden = outputs
    return ratios


def _stats_hook(scores: OutlierScores, stats: dict[str, Any], sub: str, sharing: InputGroups):
    """Fold a call into ``sub``'s statistics; with input-only statistics a linear called on its group leader's
    input adds nothing (the leader's are the group's)."""
    def record(module, args, output):
        lead = sharing.observe(sub, args[0])
        if scores.input_only and lead != sub:
            return
        stats[sub] = scores.accumulate(stats[sub], args[0].detach(), output.detach(), module.bias)

    return record
