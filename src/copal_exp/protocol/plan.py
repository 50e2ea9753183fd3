"""The schedule of a job: every distinct model state its dataset orders visit, computed once each.

A state is identified by its *key*: when nothing is carried between steps (global init, no method
memory) the state after step t depends only on D_t, so its key is ``(D_t,)``; when weights or
memory are carried, it is the whole prefix ``(D_1, …, D_t)``. Orders sharing a key share the
pruning and its evaluations. Without the planner every order gets keys of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def state_key(order: tuple[str, ...], step: int, carries_state: bool, planner: bool, order_index: int) -> tuple:
    key = tuple(order[: step + 1]) if carries_state else (order[step],)
    return key if planner else (order_index, *key)


@dataclass
class Plan:
    """Per order the key of every step; each state's parent; each parent's number of distinct children."""

    keys: list[list[tuple]]
    parents: dict[tuple, tuple | None]
    children: dict[tuple, int] = field(default_factory=dict)
    carries_state: bool = False

    @property
    def prune_steps(self) -> int:
        return len(self.parents)

    def children_left(self, done: set[tuple]) -> dict[tuple, int]:
        """How many children of each parent are still to compute (a parent's carry is released at 0)."""
        return {key: n - sum(1 for child, parent in self.parents.items() if parent == key and child in done)
                for key, n in self.children.items()}

    def peak_carries(self) -> int:
        """Most carried states (weights or memory) alive at once, the one being built included, when the
        states are computed in order and each parent is released after its last child."""
        live: dict[tuple, int] = {}
        peak, done = 0, set()
        for keys in self.keys:
            for key in keys:
                if key in done:
                    continue
                peak = max(peak, len(live) + 1)
                done.add(key)
                if self.children.get(key):
                    live[key] = self.children[key]
                parent = self.parents.get(key)
                if parent in live:
                    live[parent] -= 1
                    if live[parent] == 0:
                        del live[parent]
        return peak

    @property
    def final_keys(self) -> list[tuple]:
        return [row[-1] for row in self.keys]


def make_plan(orders: list[tuple[str, ...]], carries_state: bool, planner: bool = True) -> Plan:
    """Every distinct state the orders visit, with each one's parent and number of distinct children."""
    keys, parents, children = [], {}, {}
    for k, order in enumerate(orders):
        row = [state_key(order, t, carries_state, planner, k) for t in range(len(order))]
        for t, key in enumerate(row):
            if key not in parents:
                parent = row[t - 1] if carries_state and t > 0 else None
                parents[key] = parent
                if parent is not None:
                    children[parent] = children.get(parent, 0) + 1
        keys.append(row)
    return Plan(keys, parents, children, carries_state)
