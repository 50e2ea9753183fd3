"""SparseGPT's column-by-column OBS loop against its arithmetic: what one column update costs, before and
after the loop was cut from five kernels per column to three (commit of this script), on real shapes.

    python bench/bench_column_loop.py [--repeats 3] [--shapes smollm2,llama7b]

For each shape (``rows × cols``: SmolLM2's stacked q/k/v_proj 1728 × 576 and its down_proj 576 × 1536;
LLaMA-7B's stacked q/k/v_proj 12288 × 4096 on its first 1024 columns) it times, median of ``--repeats``:

* ``sparsify_stacked`` as it is now (``after``) and the loop as it was (``before``: the same function with
  the five-kernel column body, kept here verbatim as the reference), both on the same H and W, checking the
  results are bit-identical;
* the loop's **arithmetic floor**: the same floating-point work without the per-column launches — each
  block's mask selection at once and its rank-one updates as one matrix product of the block's errors
  (``2 · rows · blk² / 2`` flops per block), the factorisation and the lazy update across blocks as in both.

Per column: ``(loop − floor) / cols`` is the launch overhead a column costs. Writes
``bench/results/column-loop-<commit>-<time>.json``. Run it alone (2 cores).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_prune import ROOT, commit, machine
from timing import median_run

from copal_exp.pruning.masks import Pattern, nm_mask, prune_count, unstructured_mask
from copal_exp.pruning.methods.sparsegpt import (
    full_fp32_matmul,
    inverse_cholesky_upper,
    prepare_hessian,
    sparsify_stacked,
)

SHAPES = {"smollm2": [("q/k/v_proj stacked", 1728, 576), ("down_proj", 576, 1536)],
          "llama7b": [("q/k/v_proj stacked, first 1024 columns", 12288, 1024)]}
PATTERNS = {"unstructured": Pattern.parse("unstructured", ratio=0.5), "2:4": Pattern.parse("nm", n=2, m=4)}


def before(weights, hessian, pattern, blocksize=128, percdamp=0.01):
    """The column loop as it was before this change (five kernels per column), otherwise the same function."""
    with full_fp32_matmul():
        bounds = [0]
        for w in weights:
            bounds.append(bounds[-1] + w.shape[0])
        stacked = torch.cat([w.float() for w in weights]) if len(weights) > 1 else weights[0].float()
        hessian, w, damp = prepare_hessian(hessian.float(), stacked, percdamp)
        u = inverse_cholesky_upper(hessian, damp)
        rows, cols = w.shape
        wt = w.t().contiguous()
        pruned = torch.zeros(cols, rows, dtype=torch.bool)
        for i1 in range(0, cols, blocksize):
            i2 = min(i1 + blocksize, cols)
            w1, u1 = wt[i1:i2], u[i1:i2, i1:i2]
            d = torch.diag(u1)
            err1 = torch.empty_like(w1)
            mask1 = pruned[i1:i2]
            if pattern.kind == "unstructured":
                for r0, r1 in zip(bounds, bounds[1:]):
                    score = (w1[:, r0:r1] ** 2 / d.reshape(-1, 1) ** 2).t().reshape(-1)
                    k = prune_count(score.numel(), pattern.ratio)
                    chosen = torch.zeros(score.numel(), dtype=torch.bool)
                    chosen[torch.sort(score, stable=True).indices[:k]] = True
                    mask1[:, r0:r1] = chosen.reshape(r1 - r0, i2 - i1).t()
            for i in range(i2 - i1):
                if pattern.kind == "nm" and i % pattern.m == 0:
                    score = w1[i : i + pattern.m].t() ** 2 / d[i : i + pattern.m].reshape(1, -1) ** 2
                    mask1[i : i + pattern.m] = ~nm_mask(score, pattern.n, pattern.m).t()
                err = w1[i].masked_fill(~mask1[i], 0.0).div_(d[i])
                err1[i] = err
                w1[i:].addr_(u1[i, i:], err, alpha=-1.0)
                w1[i].masked_fill_(mask1[i], 0.0)
            wt[i2:].addmm_(u[i1:i2, i2:].t(), err1, alpha=-1.0)
        out = []
        for r0, r1 in zip(bounds, bounds[1:]):
            keep = ~pruned[:, r0:r1].t()
            out.append((wt[:, r0:r1].t() * keep, keep.contiguous()))
        return out


def floor(weights, hessian, pattern, blocksize=128, percdamp=0.01):
    """The loop's arithmetic without its per-column launches: the same preparation and factorisation, then per
    block its mask selection done at once (the loop's own selection, ``unstructured_mask`` of each block, for
    unstructured; every N:M group of the block in one call), one product for its in-block updates (upper triangle of U1 × the block's errors) and the lazy
    update."""
    with full_fp32_matmul():
        stacked = torch.cat([w.float() for w in weights]) if len(weights) > 1 else weights[0].float()
        hessian, w, damp = prepare_hessian(hessian.float(), stacked, percdamp)
        u = inverse_cholesky_upper(hessian, damp)
        wt = w.t().contiguous()
        cols = wt.shape[0]
        for i1 in range(0, cols, blocksize):
            i2 = min(i1 + blocksize, cols)
            w1, u1 = wt[i1:i2], u[i1:i2, i1:i2]
            d = torch.diag(u1)
            score = (w1**2 / d.reshape(-1, 1) ** 2).t()
            if pattern.kind == "unstructured":
                unstructured_mask(score, pattern.ratio)
            else:
                nm_mask(score, pattern.n, pattern.m)
            err1 = w1 / d.reshape(-1, 1)
            w1.addmm_(torch.triu(u1, 1).t(), err1, alpha=-1.0)
            wt[i2:].addmm_(u[i1:i2, i2:].t(), err1, alpha=-1.0)
        return wt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", default="smollm2,llama7b")
    args = p.parse_args()
    out = {"machine": machine(), "commit": commit(), "settings": vars(args), "cases": {}}
    for family in args.shapes.split(","):
        for label, rows, cols in SHAPES[family]:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(2048, cols, generator=g)
            hessian = x.t() @ x * (2.0 / 2048)
            weights = [torch.randn(rows, cols, generator=g) * 0.02]
            for name, pattern in PATTERNS.items():
                floor_s, _ = median_run(lambda: floor(weights, hessian, pattern), args.repeats)
                before_s, old = median_run(lambda: before(weights, hessian, pattern), args.repeats)
                after_s, new = median_run(lambda: sparsify_stacked(weights, hessian, pattern), args.repeats)
                identical = all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(old, new))
                row = {"rows": rows, "cols": cols, "before_s": round(before_s, 3), "after_s": round(after_s, 3),
                       "floor_s": round(floor_s, 3), "speedup": round(before_s / after_s, 3),
                       "before_us_per_column_over_floor": round((before_s - floor_s) / cols * 1e6, 1),
                       "after_us_per_column_over_floor": round((after_s - floor_s) / cols * 1e6, 1),
                       "after_over_floor": round(after_s / floor_s, 2), "bit_identical": identical}
                key = f"{family} {label} {name}"
                out["cases"][key] = row
                print(key, row, flush=True)
    dest = ROOT / "bench" / "results" / f"column-loop-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
