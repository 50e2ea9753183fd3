"""Which linears of a decoder layer read the same input, observed in the layer's own forward (not from names).

In a LLaMA-style layer ``q_proj``, ``k_proj`` and ``v_proj`` are called on one tensor (the normed hidden
states), and ``gate_proj`` and ``up_proj`` on another; other architectures have their own sets (GPT-2's
fused ``c_attn`` has none). A method whose statistics depend only on a linear's input
(``PruningMethod.input_statistics``: Wanda's and RIA's input norms, SparseGPT's Hessian, DSnoT's moments)
accumulates them once per such group, and a method that solves jointly (``PruningMethod.prune_group``:
SparseGPT's one factorisation and one column loop over the stacked rows) gets the whole group at once.

:class:`InputGroups` is fed by the statistics hooks: a linear called on the very tensor object another
linear was last called on joins that linear's group (references are held, so an object's identity cannot
be reused while it is compared). The grouping decided on the first batch must hold on every later one.
"""

from __future__ import annotations

from typing import Any


class InputGroups:
    """Linears (by sub-name) grouped by the input tensor they are called on."""

    def __init__(self) -> None:
        self.leader: dict[str, str] = {}  # sub -> the first linear of its group (itself for a leader)
        self._last: dict[str, Any] = {}  # sub -> the input tensor of its latest call

    def observe(self, sub: str, inputs: Any) -> str:
        """Record a call of ``sub`` on ``inputs``; return its group's leader (``sub`` itself if it leads)."""
        lead = self.leader.get(sub)
        if lead is None:
            lead = next((s for s, x in self._last.items() if x is inputs and self.leader[s] == s), sub)
            self.leader[sub] = lead
        elif lead != sub and self._last.get(lead) is not inputs:
            raise RuntimeError(f"{sub} was called on the same input as {lead} in an earlier batch but not in "
                               "this one: the layer's input sharing changes between calls")
        self._last[sub] = inputs
        return lead

    def release(self) -> None:
        """Drop the references to the inputs (after the statistics pass)."""
        self._last.clear()

    def groups(self, subs: list[str]) -> list[list[str]]:
        """``subs`` partitioned into groups, each led by the member called first (whose statistics are the
        group's), the others in ``subs`` order; a linear never called forms its own group."""
        out: dict[str, list[str]] = {}
        for sub in subs:
            lead = self.leader.get(sub, sub)
            out.setdefault(lead, [lead])
            if sub != lead:
                out[lead].append(sub)
        return list(out.values())
