"""DSnoT (Zhang et al., ICLR 2024): training-free prune-and-grow cycles on a base mask (docs/design.md, "Methods").

Official code: ``zyxxmu/DSnoT``, ``lib/prune.py`` ``prune_DSnoT``. Per output row, with ``x̄_j`` the input
feature ``j`` summed over a segment's tokens and averaged over segments, a weight's signed contribution to
the row's output is ``c_ij = W_ij · x̄_j``, and pruning row ``i`` changes its mean output by the
*reconstruction error* ``e_i = Σ_{j pruned} c_ij``. Starting from the base method's mask (Wanda's
``|W|·‖X‖``, magnitude, or SparseGPT's ``W²/[H⁻¹]_jj²``; per row for unstructured, per group of M for N:M),
each cycle swaps one pruned weight back in and one kept weight out, in every row whose ``|e_i|`` is still
above ``update_threshold``:

* **grow** the pruned weight whose ``c_ij / Var(x_j)^γ`` is largest when ``e_i > 0`` (smallest when
  ``e_i ≤ 0``), walking down (up) that order one candidate per cycle;
* **prune** (unstructured) the kept weight next in line among, first, those with ``c_ij < 0`` from the lowest
  Wanda score up and, last, those with ``c_ij > 0`` from the lowest Wanda score: from the front when
  ``e_i ≥ 0``, from the back when ``e_i < 0``; (N:M) the kept weight with the lowest base score in the grown
  weight's group of M, so every group keeps N;
* a row stops for good once its error is within the threshold (and, for N:M, or with ``same_sign``, once a
  swap would flip the error's sign), or once its walks run out of candidates of the right kind (only in a
  layer too narrow for its cycles, where the official code would change the row's count or index past the
  end); at most ``max_cycle_time`` cycles.

Linears of the ``skip_layer`` block (default ``mlp``, as the official code) or named ``skip_sub_layer``
keep the base mask. The weights are never updated. The pure functions here take plain tensors; the
statistics are the official wrapper's (squared norms and sums over tokens averaged over segments, the
per-segment variance of every input feature averaged over tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from copal_exp.config.fields import integer, number
from copal_exp.pruning.methods.registry import PruningMethod, register
from copal_exp.pruning.methods.sparsegpt import accumulate_hessian, inverse_cholesky_upper, prepare_hessian

BASES = ("wanda", "magnitude", "sparsegpt")
SKIP_LAYERS = ("no_skip", "mlp", "self_attn")


def new_dsnot_statistics(d_in: int, hessian: bool, device=None) -> dict:
    zeros = lambda: torch.zeros(d_in, dtype=torch.float32, device=device)  # noqa: E731
    stats = {"sq": zeros(), "sum": zeros(), "var_tokens": zeros(), "tokens": 0, "segments": 0}
    if hessian:
        stats["hessian"] = torch.zeros(d_in, d_in, dtype=torch.float32, device=device)
    return stats


def accumulate_dsnot(stats: dict, inputs: torch.Tensor) -> dict:
    """Fold a batch of segments (``[B, L, d_in]``) in: per input feature the squared norm and the sum over
    tokens, and each segment's variance over its tokens (population) weighted by its token count."""
    x = inputs.float().reshape(-1, inputs.shape[-2], inputs.shape[-1]) if inputs.dim() > 2 else inputs.float()[None]
    for segment in x:
        stats["sq"] += segment.pow(2).sum(dim=0)
        stats["sum"] += segment.sum(dim=0)
        stats["var_tokens"] += segment.var(dim=0, unbiased=False) * segment.shape[0]
        stats["tokens"] += segment.shape[0]
        stats["segments"] += 1
    if "hessian" in stats:
        accumulate_hessian(stats["hessian"], x)
    return stats


def sign_order(values: torch.Tensor) -> torch.Tensor:
    """Per row, the positions of the negative entries in order, then those of the positive entries in reverse
    order (the official ``return_reorder_indice``; a zero entry contributes position 0)."""
    position = torch.arange(values.shape[1], device=values.device, dtype=torch.float64).expand_as(values)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=values.device)
    negative = torch.where(values < 0, position, inf).sort(dim=1).values
    positive = torch.where(values > 0, position, inf).sort(dim=1).values.flip(dims=[1])
    return (torch.where(negative.isinf(), 0, negative) + torch.where(positive.isinf(), 0, positive)).to(torch.int64)


def _advance(pointers: torch.Tensor, side: torch.Tensor, steps: torch.Tensor, size: int,
             update: torch.Tensor) -> torch.Tensor:
    """Each row's current position at its ``side`` (0: front, 1: back), then moved one step inwards. A row
    whose walk has run off the end (a small layer, many cycles: the official code indexes out of bounds there)
    stops for good (``update`` cleared) and reads a valid position."""
    at = pointers.gather(1, side)
    pointers.scatter_(1, side, at + steps.gather(1, side))
    update &= (at >= 0) & (at < size)
    return at.clamp(0, size - 1)


def _swappable(pruned: torch.Tensor, regrow: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Rows whose growth candidate is pruned and whose pruning candidate is kept. In a layer as wide as an
    LLM's, 50 cycles never walk past the real candidates and this always holds; in a narrow one the walks reach
    weights of the other kind, where the official code's writes would change the row's count, so the row stops."""
    return pruned.gather(1, regrow) & ~pruned.gather(1, drop)


def _swap(pruned: torch.Tensor, drop: torch.Tensor, regrow: torch.Tensor, update: torch.Tensor) -> None:
    """Prune ``drop`` and grow ``regrow`` back in the rows being updated; the other rows are left as they are
    (the official code writes their current values back, the same thing while its candidates are valid)."""
    pruned.scatter_(1, drop, update | pruned.gather(1, drop))
    pruned.scatter_(1, regrow, ~update & pruned.gather(1, regrow))


def _pointers(rows: int, last: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    pointers = torch.zeros(rows, 2, dtype=torch.long, device=device)
    pointers[:, 1] = last
    steps = torch.ones(rows, 2, dtype=torch.long, device=device)
    steps[:, 1] = -1
    return pointers, steps


def _start(contribution, pruned_at, kept_at, variance, power):
    """The base mask, each row's reconstruction error (its pruned contributions' sum) and that error's sign, and
    the order in which pruned weights are offered for growth (contribution / Var(x)^γ, kept weights at 0)."""
    pruned = torch.zeros_like(contribution, dtype=torch.bool).scatter_(1, pruned_at, True)
    grow = contribution.clone().scatter_(1, kept_at, 0)
    error = grow.sum(dim=1, keepdim=True)
    if power:
        grow = grow / variance.reshape(1, -1).pow(power)
    return pruned, error, torch.sign(error), torch.sort(grow, dim=1, stable=True).indices


def dsnot_unstructured(contribution: torch.Tensor, base: torch.Tensor, wanda: torch.Tensor, variance: torch.Tensor,
                       ratio: float, cycles: int = 50, threshold: float = 0.1, power: float = 1.0,
                       same_sign: bool = False) -> torch.Tensor:
    """The pruned mask (``True`` = pruned) after DSnoT's cycles on the per-row base mask of ``base`` scores.
    ``contribution`` is ``W · x̄`` ([d_out, d_in]), ``wanda`` the Wanda scores that order the pruning candidates,
    ``variance`` the inputs' variance ([d_in])."""
    rows, cols = base.shape
    k = int(cols * ratio)
    order = torch.sort(base, dim=1, stable=True).indices
    pruned_at, kept_at = order[:, :k], order[:, k:]
    pruned, error, first_sign, grow_order = _start(contribution, pruned_at, kept_at, variance, power)
    candidates = wanda.clone().scatter_(1, pruned_at, float("inf"))
    kept_by_wanda = torch.sort(candidates, dim=1, stable=True).indices[:, : cols - k]
    prune_order = kept_by_wanda.gather(1, sign_order(contribution.gather(1, kept_by_wanda)))
    grow_ptr, grow_step = _pointers(rows, cols - 1, base.device)
    prune_ptr, prune_step = _pointers(rows, cols - k - 1, base.device)
    update = torch.ones_like(error, dtype=torch.bool)
    for _ in range(cycles):
        if not update.any():
            break
        regrow = grow_order.gather(1, _advance(grow_ptr, (error > 0).long(), grow_step, cols, update))
        regrow_c = contribution.gather(1, regrow)
        drop = prune_order.gather(1, _advance(prune_ptr, (error < 0).long(), prune_step, cols - k, update))
        drop_c = contribution.gather(1, drop)
        update &= (error.abs() > threshold) & _swappable(pruned, regrow, drop)
        if same_sign:
            update &= first_sign == torch.sign(error + drop_c - regrow_c)
        _swap(pruned, drop, regrow, update)
        error += torch.where(update, drop_c, 0.0) - torch.where(update, regrow_c, 0.0)
    return pruned


def dsnot_nm(contribution: torch.Tensor, base: torch.Tensor, variance: torch.Tensor, n_pruned: int, m: int,
             cycles: int = 50, threshold: float = 0.1, power: float = 1.0) -> torch.Tensor:
    """The pruned mask after DSnoT's cycles on the N:M base mask (``n_pruned`` lowest ``base`` of every ``m``);
    a weight grown back is paid for by the lowest-scored kept weight of its own group."""
    rows, cols = base.shape
    groups = torch.sort(base.reshape(rows, cols // m, m), dim=-1, stable=True).indices
    groups = groups + torch.arange(0, cols, m, device=base.device).reshape(1, -1, 1)
    pruned_at = groups[..., :n_pruned].reshape(rows, -1)
    kept_at = groups[..., n_pruned:].reshape(rows, -1)
    pruned, error, first_sign, grow_order = _start(contribution, pruned_at, kept_at, variance, power)
    score = base.clone().scatter_(1, pruned_at, float("inf"))
    spent = score.max(dim=1, keepdim=True).values + 1  # a kept weight once offered is never offered again
    grow_ptr, grow_step = _pointers(rows, cols - 1, base.device)
    update = torch.ones_like(error, dtype=torch.bool)
    within = torch.arange(m, device=base.device).reshape(1, -1)
    for _ in range(cycles):
        if not update.any():
            break
        regrow = grow_order.gather(1, _advance(grow_ptr, (error > 0).long(), grow_step, cols, update))
        regrow_c = contribution.gather(1, regrow)
        start = regrow - regrow % m
        drop = score.gather(1, start + within).argmin(dim=1, keepdim=True) + start
        drop_c = contribution.gather(1, drop)
        update &= (first_sign == torch.sign(error + drop_c - regrow_c)) & (error.abs() > threshold)
        update &= _swappable(pruned, regrow, drop)
        score.scatter_(1, drop, spent)
        _swap(pruned, drop, regrow, update)
        error += torch.where(update, drop_c, 0.0) - torch.where(update, regrow_c, 0.0)
    return pruned


def base_score(base: str, weight: torch.Tensor, stats: dict, percdamp: float = 0.01, name: str = "") -> torch.Tensor:
    """The base method's score of every weight, from DSnoT's statistics."""
    w = weight.float()
    if base == "magnitude":
        return w.abs()
    if base == "wanda":
        return w.abs() * (stats["sq"] / max(stats["segments"], 1)).sqrt().reshape(1, -1)
    hessian, w, damp = prepare_hessian(stats["hessian"] * (2.0 / max(stats["segments"], 1)), w, percdamp)
    upper = inverse_cholesky_upper(hessian, damp, name=name)
    return w.pow(2) / torch.diag(upper).reshape(1, -1).pow(2)


def block_of(name: str) -> tuple[str, str]:
    """A linear's block and own name inside its decoder layer (``…layers.3.mlp.up_proj`` → ``mlp``, ``up_proj``)."""
    parts = name.split(".")
    at = next((i for i, p in enumerate(parts) if p.isdigit()), -1)
    inside = parts[at + 1:]
    return (inside[0] if len(inside) > 1 else ""), inside[-1]


@register("dsnot")
class DSnoT(PruningMethod):
    input_statistics = True  # statistics of the input only: linears reading one input share them

    @dataclass
    class Options:
        base: str = "wanda"  # wanda | magnitude | sparsegpt: the mask DSnoT starts from (official --initial_method)
        max_cycle_time: int = 50  # prune-and-grow cycles per linear
        update_threshold: float = 0.1  # a row stops once |its reconstruction error| is within this
        pow_of_var_regrowing: float = 1.0  # γ: growth candidates ranked by W·x̄ / Var(x)^γ (0: not divided)
        skip_layer: str = "mlp"  # no_skip | mlp | self_attn: block whose linears keep the base mask
        skip_sub_layer: str = "no_skip"  # a linear's own name (e.g. o_proj) that keeps the base mask
        without_same_sign: bool = True  # unstructured: do not stop a row whose error would change sign

        def check(self) -> None:
            if self.base not in BASES:
                raise ValueError(f"method.base={self.base!r}: allowed values are {BASES}")
            if self.skip_layer not in SKIP_LAYERS:
                raise ValueError(f"method.skip_layer={self.skip_layer!r}: allowed values are {SKIP_LAYERS}")
            self.max_cycle_time = integer(self.max_cycle_time, "method.max_cycle_time", minimum=0)
            self.update_threshold = number(self.update_threshold, "method.update_threshold")
            if self.update_threshold < 0:
                raise ValueError(f"method.update_threshold={self.update_threshold!r}: must be >= 0")
            self.pow_of_var_regrowing = number(self.pow_of_var_regrowing, "method.pow_of_var_regrowing")
            if not isinstance(self.without_same_sign, bool):
                raise ValueError(f"method.without_same_sign={self.without_same_sign!r}: allowed values are true, false")

    @classmethod
    def label(cls, options, init):
        return f"{cls.name} ({options.get('base')}, {init})"

    @classmethod
    def statistics_bytes(cls, d_out, d_in):
        # squared norms, sums, variances (float32), and the Hessian the sparsegpt base needs (counted for every
        # base: the plan is made from the class)
        return 3 * 4 * d_in + 4 * d_in * d_in

    @classmethod
    def working_bytes(cls, d_out, d_in):
        # scores, contributions, growth values and their sort indices (int64), masks; sparsegpt base: H work
        return 8 * 4 * d_out * d_in + 3 * 8 * d_out * d_in + 5 * 4 * d_in * d_in

    def new_statistics(self, weight):
        return new_dsnot_statistics(weight.shape[1], self.opts.base == "sparsegpt", weight.device)

    def accumulate(self, stats, inputs, outputs, bias):
        return accumulate_dsnot(stats, inputs)

    def refines(self, name: str) -> bool:
        block, own = block_of(name)
        return block != self.opts.skip_layer and own != self.opts.skip_sub_layer

    def prune(self, name, weight, stats, memory, pattern=None):
        pattern = pattern or self.pattern
        o, segments = self.opts, max(stats["segments"], 1)
        base = base_score(o.base, weight, stats, name=name)
        contribution = weight.float() * (stats["sum"] / segments).reshape(1, -1)
        variance = stats["var_tokens"] / max(stats["tokens"], 1)
        refine = self.refines(name)
        if pattern.kind == "nm":
            pruned = dsnot_nm(contribution, base, variance, pattern.m - pattern.n, pattern.m,
                              o.max_cycle_time if refine else 0, o.update_threshold, o.pow_of_var_regrowing)
        else:
            wanda = weight.float().abs() * (stats["sq"] / segments).sqrt().reshape(1, -1)
            pruned = dsnot_unstructured(contribution, base, wanda, variance, pattern.ratio,
                                        o.max_cycle_time if refine else 0, o.update_threshold,
                                        o.pow_of_var_regrowing, same_sign=not o.without_same_sign)
        keep = ~pruned
        return weight * keep, keep, None

