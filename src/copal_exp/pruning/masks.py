"""Sparsity patterns and mask selection (docs/design.md, "Masks").

Masks are *keep* masks: ``True`` marks a weight that survives, so a pruned weight is ``W * mask``.
Every function here is pure and works on plain tensors.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: ``unstructured`` at ``ratio``, or ``nm`` keeping ``n`` of every ``m``."""

    kind: str
    ratio: float = 0.5
    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, kind: str, ratio: float | None = None, n: int | None = None, m: int | None = None) -> "Pattern":
        from copal_exp.config.fields import integer, number

        if kind == "unstructured":
            ratio = number(ratio, "sparsity.ratio")
            if not 0.0 < ratio < 1.0:
                raise ValueError(f"sparsity.ratio={ratio!r}: must lie strictly between 0 and 1")
            return cls("unstructured", ratio=ratio)
        if kind == "nm":
            n, m = integer(n, "sparsity.n"), integer(m, "sparsity.m")
            if n < 1 or n >= m:
                raise ValueError(
                    f"sparsity.n={n!r}, sparsity.m={m!r}: N:M keeps N of every M weights and needs 1 <= N < M"
                )
            return cls("nm", ratio=1.0 - n / m, n=n, m=m)
        raise ValueError(f"sparsity.pattern={kind!r}: allowed values are 'unstructured', 'nm'")

    @property
    def name(self) -> str:
        """The one label of a pattern, in results, CSV, W&B tags and tables: ``2:4`` or ``unstructured 50%``."""
        return f"{self.n}:{self.m}" if self.kind == "nm" else f"unstructured {self.ratio:.0%}"

    @classmethod
    def label(cls, sparsity: dict) -> str:
        """:attr:`name` of a ``sparsity`` config section."""
        return cls.parse(sparsity.get("pattern"), sparsity.get("ratio"), sparsity.get("n"), sparsity.get("m")).name

    def check_shape(self, name: str, in_features: int) -> None:
        """Raise if an N:M pattern cannot tile a layer's input dimension."""
        if self.kind == "nm" and in_features % self.m:
            raise ValueError(
                f"sparsity {self.n}:{self.m}: layer {name} has in_features={in_features}, "
                f"not divisible by M={self.m}"
            )


def prune_count(size: int, ratio: float) -> int:
    """Number of weights pruned from a comparison group of ``size``: ``floor(ratio * size)``."""
    return int(math.floor(ratio * size + 1e-9))


def kth_smallest(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest value (1-based) of each row of a 2-D tensor, as a ``[rows, 1]`` column.

    The value ``torch.kthvalue`` returns. On a CPU it comes from NumPy's introselect (``np.partition``),
    about four times faster than ``torch.kthvalue`` on this project's shapes (``bench/bench_selection.py``),
    with the rows split among torch's threads (NumPy releases the GIL while it partitions: about 2× on two
    cores); half-precision rows are widened to float32 first, which is exact. Elsewhere it is ``torch.kthvalue``."""
    return select_kth(rows, k)[0]


def select_kth(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kth_smallest` and, per row, whether that value is *tied beyond the count*: whether it occurs again
    after the k smallest, so that ``rows <= kth`` would hold more than ``k`` entries (a ``[rows]`` bool). On a
    CPU the second comes free from the partition (the minimum of its upper part), with no pass over the rows."""
    if rows.device.type != "cpu":
        kth = torch.kthvalue(rows, k, dim=1, keepdim=True).values
        return kth, (rows <= kth).sum(dim=1) > k
    values = rows.detach()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    array = values.numpy()
    kth = np.empty((array.shape[0], 1), dtype=array.dtype)
    tied = np.zeros(array.shape[0], dtype=bool)

    def select(start: int, stop: int) -> None:
        # partitioned in place in this thread's reused buffer (np.partition would allocate a fresh copy,
        # page faults included, for every call): the k smallest left of position k − 1, the rest right of it
        chunk = _scratch(array[start:stop])
        chunk.partition(k - 1, axis=1)
        kth[start:stop] = chunk[:, k - 1 : k]
        if k < chunk.shape[1]:
            np.less_equal(chunk[:, k:].min(axis=1), chunk[:, k - 1], out=tied[start:stop])

    parts = min(torch.get_num_threads(), array.shape[0], max(1, array.size // PARALLEL_MIN_ENTRIES))
    bounds = np.linspace(0, array.shape[0], parts + 1).astype(int)
    if parts > 1:
        pool = _selection_pool(parts - 1)
        done = [pool.submit(select, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
        select(bounds[0], bounds[1])
        for future in done:
            future.result()
    else:
        select(0, array.shape[0])
    return torch.from_numpy(kth).to(rows.dtype), torch.from_numpy(tied)


PARALLEL_MIN_ENTRIES = 1 << 16  # rows are split among threads only in chunks of at least this many entries
_POOLS: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_POOLS.clear)  # a forked child has none of its parent's threads


def _selection_pool(workers: int) -> ThreadPoolExecutor:
    """The ``workers`` threads :func:`select_kth` partitions on beside the calling one (created at first use)."""
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="copal-select")
    return pool


_SCRATCH = threading.local()
SCRATCH_MAX_ENTRIES = 1 << 24


def _scratch(rows: np.ndarray) -> np.ndarray:
    """A copy of ``rows`` in a buffer of the calling thread's, reused from call to call (grown when needed, up
    to :data:`SCRATCH_MAX_ENTRIES`; larger rows get a fresh copy, so no thread holds more than 64 MiB)."""
    if rows.size > SCRATCH_MAX_ENTRIES:
        return rows.copy()
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.dtype != rows.dtype or buffer.size < rows.size:
        buffer = _SCRATCH.buffer = np.empty(rows.size, dtype=rows.dtype)
    out = buffer[: rows.size].reshape(rows.shape)
    np.copyto(out, rows)
    return out


def unstructured_mask(score: torch.Tensor, ratio: float, group: str = "layer") -> torch.Tensor:
    """Keep mask pruning exactly ``floor(ratio * size)`` lowest scores of each comparison group.

    ``group='layer'`` compares all elements of the matrix, ``group='row'`` each output row. Ties are
    broken by a stable sort (lowest index pruned first), so tied scores never change the count.
    """
    if group not in ("layer", "row"):
        raise ValueError(f"group={group!r}: allowed values are 'layer', 'row'")
    rows = score.reshape(1, -1) if group == "layer" else score.reshape(score.shape[0], -1)
    k = prune_count(rows.shape[1], ratio)
    if k == 0:
        return torch.ones_like(score, dtype=torch.bool)
    # The first k indices of a stable ascending sort, without sorting: everything up to the k-th smallest
    # value — exactly k entries in a row where that value is not tied beyond the count — and, in the rows
    # where it is, everything below it and then its lowest-index ties until the count is exactly k.
    kth, tied = select_kth(rows, k)
    keep = rows > kth
    tied = tied.nonzero().squeeze(1)
    if tied.numel():
        sub, at = rows[tied], kth[tied]
        below, ties = sub < at, sub == at
        need = k - below.sum(dim=1, keepdim=True)
        keep[tied] = ~(below | (ties & (ties.cumsum(dim=1) <= need)))
    return keep.reshape(score.shape)


PAIRWISE_MAX_M = 16  # N:M groups up to this size are ranked by pairwise comparison, larger ones sorted


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask holding the ``n`` highest scores of every ``m`` consecutive inputs of each row."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"N:M mask needs in_features divisible by M: {cols} % {m} != 0")
    groups = score.reshape(rows, cols // m, m)
    if m > PAIRWISE_MAX_M:
        top = torch.sort(groups, dim=-1, stable=True, descending=True).indices[..., :n]
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
        return keep.reshape(rows, cols)
    # The n first of a stable descending sort of each group, without sorting: an entry's rank is the number
    # of entries of its group that come before it — higher, or equal and at a lower index — counted from
    # the m(m−1)/2 comparisons of its pairs (for 2:4, six comparisons of quarter-size columns: about 6× a
    # sort of the groups on a CPU, bench/bench_selection.py).
    members = [groups[..., i] for i in range(m)]
    ranks = [torch.zeros(members[0].shape, dtype=torch.uint8, device=score.device) for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            later_first = members[j] > members[i]  # a later entry comes first only when strictly higher
            ranks[i] += later_first
            ranks[j] += ~later_first
    return (torch.stack(ranks, dim=-1) < n).reshape(rows, cols)


def nm_keep_group(score: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`nm_mask` of a single group of M columns given transposed (``[m, rows]``: its rows are the
    group's columns), as SparseGPT chooses one group at a time: the same choice (the n highest of each
    column of ``score``, equal scores lowest row first) in a handful of kernels, by one broadcast pairwise
    comparison (``m × m × rows`` booleans; the per-group call is bound by kernel launches, not arithmetic)."""
    m = score.shape[0]
    if m > PAIRWISE_MAX_M:  # m² × rows booleans would grow too large: sort
        return nm_mask(score.t(), n, m).t()
    later = torch.ones(m, m, dtype=torch.bool, device=score.device).triu_(1).unsqueeze(-1)  # [i, j]: j > i
    other, this = score.unsqueeze(0), score.unsqueeze(1)  # [1, j, rows], [i, 1, rows]
    # entry j comes before entry i when higher, or equal and at a lower position
    before = torch.where(later, other > this, other >= this)
    before.diagonal(dim1=0, dim2=1).fill_(False)
    return before.sum(dim=1) < n


def select_mask(score: torch.Tensor, pattern: Pattern, group: str = "layer") -> torch.Tensor:
    """Keep mask for ``score`` under ``pattern``; ``group`` applies to unstructured patterns only."""
    if pattern.kind == "nm":
        return nm_mask(score, pattern.n, pattern.m)
    return unstructured_mask(score, pattern.ratio, group)


_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_mask(keep: torch.Tensor) -> np.ndarray:
    """A keep mask bit-packed where it lies (8 entries per byte, ``np.packbits`` order), so only an
    eighth of it crosses to the host. On a CPU it is ``np.packbits`` itself (about 15× the tensor arithmetic)."""
    if keep.device.type == "cpu":
        return np.packbits(keep.detach().reshape(-1).to(torch.bool).numpy())
    return pack_bits_tensor(keep).cpu().numpy()


def pack_bits_tensor(keep: torch.Tensor) -> torch.Tensor:
    """:func:`pack_mask`'s bytes computed on the mask's own device (a ``uint8`` tensor there)."""
    flat = keep.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = _BIT_WEIGHTS.to(flat.device)
    return (flat.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


class PackedMasks(Mapping):
    """The keep masks of one prune step, bit-packed as each is made (one bit per weight on the host,
    never the whole model's boolean masks at once), with each mask's shape and kept count. Indexing
    unpacks one mask."""

    def __init__(self) -> None:
        self.bits: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.kept: dict[str, int] = {}

    def add(self, name: str, keep: torch.Tensor) -> None:
        self.kept[name] = int(torch.count_nonzero(keep))
        self.shapes[name] = tuple(keep.shape)
        self.bits[name] = pack_mask(keep)

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack_mask(self.bits[name], self.shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.bits)

    def __len__(self) -> int:
        return len(self.bits)


def unpack_mask(packed: np.ndarray, shape) -> torch.Tensor:
    """The boolean keep mask of ``shape`` that :func:`pack_mask` packed."""
    count = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(packed, count=count).astype(bool)).reshape(tuple(shape))
