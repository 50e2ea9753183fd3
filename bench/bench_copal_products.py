"""COPAL's own work, one product per linear and segment (4ε |Y|ᵀ|X| at token granularity), against one
product over the tokens of all segments at once, on SmolLM2's linear shapes: does batching the segments
pay on this machine?

    python bench/bench_copal_products.py [--repeats 5] [--nsamples 8] [--seqlen 256]

Both variants do the same arithmetic (``2 · d_out · d_in · tokens`` flops); the one-product variant first
concatenates the segments (what buffering them in the hook would cost in memory: ``tokens × (d_in + d_out)``
floats per linear). Writes ``bench/results/copal-products-<commit>-<time>.json``. Run it alone (2 cores).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_prune import ROOT, commit, machine
from timing import median_seconds

from copal_exp.pruning.methods.copal import accumulate_sensitivity

#: SmolLM2-135M's linear shapes (d_out, d_in) and how many of each a decoder layer has
SHAPES = {"q/o_proj": (576, 576, 2), "k/v_proj": (192, 576, 2), "gate/up_proj": (1536, 576, 2), "down_proj": (576, 1536, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    args = p.parse_args()
    out = {"machine": machine(), "commit": commit(), "settings": vars(args), "shapes": {}}
    g = torch.Generator().manual_seed(0)
    per_layer = {"per_segment_s": 0.0, "one_product_s": 0.0}
    for label, (d_out, d_in, count) in SHAPES.items():
        xs = [torch.randn(1, args.seqlen, d_in, generator=g) for _ in range(args.nsamples)]
        ys = [torch.randn(1, args.seqlen, d_out, generator=g) for _ in range(args.nsamples)]

        def per_segment():
            s = torch.zeros(d_out, d_in)
            for x, y in zip(xs, ys):  # what the hook does: one call per segment
                accumulate_sensitivity(s, x, y, "token")
            return s

        def one_product():
            s = torch.zeros(d_out, d_in)
            return accumulate_sensitivity(s, torch.cat(xs, dim=1), torch.cat(ys, dim=1), "token")

        a, b = median_seconds(per_segment, args.repeats, warmup=1), median_seconds(one_product, args.repeats, warmup=1)
        close = torch.allclose(per_segment(), one_product(), rtol=1e-5, atol=1e-3)
        out["shapes"][label] = {"d_out": d_out, "d_in": d_in, "per_segment_ms": round(a * 1e3, 2),
                                "one_product_ms": round(b * 1e3, 2), "ratio": round(a / b, 3),
                                "gflops_per_s": round(2 * d_out * d_in * args.nsamples * args.seqlen / a / 1e9, 1),
                                "same_up_to_rounding": close}
        per_layer["per_segment_s"] += a * count
        per_layer["one_product_s"] += b * count
        print(label, out["shapes"][label], flush=True)
    out["per_layer"] = {k: round(v, 4) for k, v in per_layer.items()}
    out["per_layer"]["ratio"] = round(per_layer["per_segment_s"] / per_layer["one_product_s"], 3)
    out["per_step_30_layers_s"] = {k: round(v * 30, 3) for k, v in per_layer.items()}
    dest = ROOT / "bench" / "results" / f"copal-products-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["per_layer"]), f"\nwritten {dest}")


if __name__ == "__main__":
    main()
