"""The memory plan against the measured peak: each job in a fresh ``python -m copal_exp`` process.

    make bench-memory               # = .venv/bin/python bench/bench_memory_plan.py

Cases: SmolLM2 (Wanda, SparseGPT, COPAL; two datasets, both orders) and one LLaMA-7B-shaped decoder
layer (hidden 4096, MLP 11008, 32 heads; random weights, float32, byte vocabulary) pruned by each
method on the CPU. Each job records its plan (made before the model loads) and its measured peak RSS in
``results.json``; this script collects them with the per-phase seconds of every prune step.
Writes ``bench/results/memory-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "run.progress=false", "run.dense_cache=false"]
SMOLLM2 = ["datasets=[wikitext2,ptb]", "data.nsamples=8", "data.seqlen=256", "eval.max_windows=4"]
LAYER_7B = ["model=tiny_llama", "model.hidden_size=4096", "model.intermediate_size=11008", "model.num_layers=1",
            "model.num_heads=32", "model.num_kv_heads=32", "model.context=2048", "datasets=[wikitext2]",
            "order=given", "data.nsamples=4", "data.seqlen=512", "eval.max_windows=2"]
CASES = {f"smollm2 {m}": [f"method={m}", *SMOLLM2] for m in ("wanda", "sparsegpt", "copal")}
CASES |= {f"llama-7b layer {m}": [f"method={m}", *LAYER_7B] for m in ("wanda", "sparsegpt", "copal")}


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="run only cases whose name contains this")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in CASES.items():
            if args.only not in name:
                continue
            job = Path(tmp) / name.replace(" ", "_")
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "copal_exp", *overrides, *COMMON, f"hydra.run.dir={job}"],
                                  capture_output=True, text=True, cwd=tmp)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            r = json.loads((job / "results.json").read_text())
            plan, peak = r["memory_plan"]["host_bytes"], r["peak_rss_bytes"]
            steps = [s for perm in r["permutations"] for s in perm["step_seconds"]]
            rows.append({"case": name, "overrides": overrides, "plan_host_mib": round(plan / 2**20, 1),
                         "peak_rss_mib": round(peak / 2**20, 1), "plan_over_peak": round(plan / peak, 3),
                         "needs": r["memory_plan"]["needs"], "step_seconds": steps[0] if steps else {},
                         "wall_s": round(time.perf_counter() - start, 1)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("needs", "overrides")}), flush=True)
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "commit": commit(), "cases": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{record['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print("| case | plan (host) MiB | peak RSS MiB | plan / peak | first step: seconds per phase |\n|---|---|---|---|---|")
    for row in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in row["step_seconds"].items())
        print(f"| {row['case']} | {row['plan_host_mib']:.0f} | {row['peak_rss_mib']:.0f} | {row['plan_over_peak']:.3f} | "
              f"{phases} |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
