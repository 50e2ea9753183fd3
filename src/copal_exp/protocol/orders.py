"""The dataset orders a job runs (``order=<kind>``; docs/protocol.md, "Orders"): one registry entry per kind,
each a pure function of the ``datasets`` list and the ``order`` section.

* ``given``: the list as written;
* ``all_perms``: every permutation (T! orders, in :func:`itertools.permutations` order); above
  :data:`LARGE` orders it needs ``order.allow_large=true``;
* ``sample``: ``order.count`` distinct permutations drawn with ``order.seed`` (NumPy's PCG64), in the order
  drawn — the same list on every machine and in every job of a sweep;
* ``balanced``: T orders forming a Latin square, every dataset once in every position. For an even T it is
  the Williams square (rows ``first + i mod T`` with ``first = 0, 1, T−1, 2, T−2, …``), in which every
  dataset also immediately follows every other exactly once (first-order carry-over balance); for an odd T
  no T-row square has that (for T = 3, 5, 7), and it is the cyclic rotations of the list.

Each returns the orders and what was built (``construction``), which results record. ``order.index=K`` then
picks the K-th (one job per order on a cluster) in every kind.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from copal_exp.registry import Registry

#: ``order=all_perms`` above this many orders needs ``order.allow_large=true`` (3! = 6 is the paper's protocol)
LARGE = 6
#: ``order=sample`` enumerates every permutation up to this many datasets, and draws by rejection beyond
ENUMERATE_UP_TO = 8

Order = tuple[str, ...]


@dataclass(frozen=True)
class OrderPlan:
    """The orders of a job before ``order.index`` picks one, and how they were built (recorded)."""

    orders: list[Order]
    construction: str

    @property
    def record(self) -> dict:
        return {"construction": self.construction, "count": len(self.orders)}


ORDER_KINDS: Registry = Registry("order")
#: decorator adding an order kind: ``f(datasets, order_section) -> OrderPlan``
register_order = ORDER_KINDS.register


class OrderError(ValueError):
    """An ``order`` section that cannot give orders; the message names the key and the allowed values."""


@register_order("given")
def given(datasets: list[str], section: dict) -> OrderPlan:
    return OrderPlan([tuple(datasets)], "given")


@register_order("all_perms")
def all_perms(datasets: list[str], section: dict) -> OrderPlan:
    count = math.factorial(len(datasets))
    if count > LARGE and not section.get("allow_large"):
        raise OrderError(
            f"order=all_perms: {len(datasets)} datasets give {count} orders ({len(datasets)}!); choose "
            f"order=sample (order.count=N, order.seed=S) or order=balanced ({len(datasets)} orders, every dataset "
            "once in every position), or set order.allow_large=true to run them all")
    return OrderPlan(list(itertools.permutations(datasets)), "permutations")


@register_order("sample")
def sample(datasets: list[str], section: dict) -> OrderPlan:
    count, seed, total = section.get("count"), section.get("seed") or 0, math.factorial(len(datasets))
    if count is None:
        raise OrderError("order=sample: set order.count (how many distinct orders to draw)")
    if not 1 <= count <= total:
        raise OrderError(f"order.count={count}: {len(datasets)} datasets have {total} distinct orders; "
                         f"allowed: 1..{total}")
    rng = np.random.default_rng(seed)
    if len(datasets) <= ENUMERATE_UP_TO:
        every = list(itertools.permutations(range(len(datasets))))
        picked = [every[i] for i in rng.choice(total, size=count, replace=False)]
    else:  # T! is too many to list; draws of distinct permutations by rejection
        seen: dict[tuple[int, ...], None] = {}
        while len(seen) < count:
            seen.setdefault(tuple(int(i) for i in rng.permutation(len(datasets))), None)
        picked = list(seen)
    return OrderPlan([tuple(datasets[i] for i in p) for p in picked], f"sample (seed {seed})")


def williams_square(n: int) -> list[list[int]]:
    """The Williams Latin square of an even ``n``: row i is ``first + i mod n``, ``first = 0, 1, n−1, 2, …``."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    return [[(j + i) % n for j in first] for i in range(n)]


def cyclic_square(n: int) -> list[list[int]]:
    return [[(j + i) % n for j in range(n)] for i in range(n)]


@register_order("balanced")
def balanced(datasets: list[str], section: dict) -> OrderPlan:
    n = len(datasets)
    square, construction = (williams_square(n), "williams") if n % 2 == 0 else (cyclic_square(n), "cyclic")
    return OrderPlan([tuple(datasets[i] for i in row) for row in square], construction)


def build_orders(datasets: list[str], section: dict) -> OrderPlan:
    """The orders of ``order.kind`` for ``datasets`` (every one, before ``order.index``)."""
    make: Callable[[list[str], dict], OrderPlan] = ORDER_KINDS.get_entry(section.get("kind"), "order")
    return make(list(datasets), section)


def pick(plan: OrderPlan, index: int | None, kind: str) -> list[Order]:
    """``order.index=K``: the K-th order alone; ``None``: all of them."""
    if index is None:
        return list(plan.orders)
    if not 0 <= index < len(plan.orders):
        raise OrderError(f"order.index={index}: allowed values are 0..{len(plan.orders) - 1} for order={kind}")
    return [plan.orders[index]]


def is_latin_square(orders: list[Order]) -> bool:
    """Every dataset once in every position (and once in every order)."""
    n = len(orders)
    return all(len(o) == n and len(set(o)) == n for o in orders) and \
        all(len({o[t] for o in orders}) == n for t in range(n))
