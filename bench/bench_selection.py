"""Mask selection's k-th value: ``torch.kthvalue`` against NumPy's introselect (``masks.kth_smallest``), and the
whole unstructured mask with each, on the prunable shapes of one SmolLM2-135M decoder layer (× 30 for the model).

    python bench/bench_selection.py [--repeats 5]

Scores are random (selection time hardly depends on the values) in two kinds: distinct (uniform) and heavily
tied (eight levels, like dequantised weights). For each comparison group (``row``: every output row, Wanda's
and COPAL's default; ``layer``: the whole matrix; ``block``: SparseGPT's 128-column blocks) it times, median of
``--repeats`` after one warm-up, the k-th value at 50 % both ways, checking they are equal, and the full
``unstructured_mask`` as the project runs it; and N:M masks (2:4, 4:8) by the stable sort of each group they
used to be chosen with (``sorted_nm_mask`` below, kept as the reference) against ``nm_mask``'s pairwise
ranking, checking they are equal. Writes ``bench/results/selection-<commit>-<time>.json``. Run it
alone (2 cores).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_prune import ROOT, commit, machine
from timing import median_run, median_seconds

from copal_exp.pruning.masks import kth_smallest, nm_mask, prune_count, unstructured_mask

# (rows, cols) of SmolLM2-135M's prunable linears in one decoder layer
LAYER = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
         "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}
LAYERS = 30


def groups(score: torch.Tensor, group: str) -> list[torch.Tensor]:
    """The 2-D comparison groups of ``score`` (one row each) the selection runs on."""
    if group == "row":
        return [score]
    if group == "layer":
        return [score.reshape(1, -1)]
    return [score[:, i : i + 128].reshape(1, -1) for i in range(0, score.shape[1], 128)]  # SparseGPT's blocks


def sorted_nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M selection as it was before pairwise ranking: a stable descending sort of every group."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    top = torch.sort(groups, dim=-1, stable=True, descending=True).indices[..., :n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(rows, cols)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    out = {"machine": machine(), "commit": commit(), "settings": vars(args), "layers": LAYERS, "cases": {}}
    g = torch.Generator().manual_seed(0)
    kinds = {"distinct": lambda s: torch.rand(s, generator=g),
             "tied": lambda s: torch.randint(0, 8, s, generator=g).float()}
    for kind, make in kinds.items():
        scores = [make(shape) for shape in LAYER.values()]
        for group in ("row", "layer", "block"):
            parts = [part for s in scores for part in groups(s, group)]
            ks = [prune_count(part.shape[1], 0.5) for part in parts]
            torch_s, expected = median_run(lambda: [torch.kthvalue(x, k, dim=1, keepdim=True).values
                                                    for x, k in zip(parts, ks)], args.repeats, warmup=1)
            numpy_s, got = median_run(lambda: [kth_smallest(x, k) for x, k in zip(parts, ks)], args.repeats,
                                      warmup=1)
            equal = all(torch.equal(a, b) for a, b in zip(expected, got))
            mask_s = median_seconds(lambda: [unstructured_mask(x, 0.5, "layer" if group != "row" else "row")
                                             for x in parts], args.repeats, warmup=1)
            row = {"torch_kthvalue_s": round(torch_s * LAYERS, 3), "kth_smallest_s": round(numpy_s * LAYERS, 3),
                   "speedup": round(torch_s / numpy_s, 2), "equal": equal,
                   "unstructured_mask_s": round(mask_s * LAYERS, 3)}
            out["cases"][f"{kind}, {group}"] = row
            print(f"{kind:8s} {group:5s}", row, flush=True)
            if not equal:
                raise SystemExit(f"kth_smallest differs from torch.kthvalue ({kind}, {group})")
        for n, m in ((2, 4), (4, 8)):
            sort_s, expected = median_run(lambda: [sorted_nm_mask(x, n, m) for x in scores], args.repeats, warmup=1)
            pair_s, got = median_run(lambda: [nm_mask(x, n, m) for x in scores], args.repeats, warmup=1)
            equal = all(torch.equal(a, b) for a, b in zip(expected, got))
            row = {"sort_s": round(sort_s * LAYERS, 3), "nm_mask_s": round(pair_s * LAYERS, 3),
                   "speedup": round(sort_s / pair_s, 2), "equal": equal}
            out["cases"][f"{kind}, {n}:{m}"] = row
            print(f"{kind:8s} {n}:{m}  ", row, flush=True)
            if not equal:
                raise SystemExit(f"nm_mask differs from the stable sort ({kind}, {n}:{m})")
    dest = ROOT / "bench" / "results" / f"selection-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    print("wrote", dest)


if __name__ == "__main__":
    main()
