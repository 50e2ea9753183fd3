"""One GPU benchmark, end to end in one call (``bench/gpu_suite.sh``, ``make bench-gpu``): what a lent GPU
machine with this repository and PyTorch (+ transformers, tqdm, numpy, safetensors: no Hydra) measures in
under 8 minutes, recorded in one JSON file.

    bench/gpu_suite.sh [--layers 4] [--out DIR]          # on a CUDA GPU; refuses to run without one
    bench/gpu_suite.sh --cpu-smoke                       # its CPU path, tiny shapes (the test suite's slow tier)

It measures, on a random LLaMA-7B-shaped model (``bench_7b_shape.py``'s: hidden 4096, MLP 11008, 32 heads,
fp16; ``--layers`` of its 32 decoder layers, per-layer figures extrapolated to 32), with the project's engine
exactly as a job runs it:

* **prune steps** of Wanda, SparseGPT and COPAL at 50 % and 2:4 on 16 × 2048 random-token segments, in
  non-resident mode (model on the host, one layer at a time on the GPU, activations and G on the host) and
  resident mode (``run.resident``: model, activations and COPAL's G on the GPU, as ``run.offload.memory=auto``
  keeps it when the plan fits; nothing moved); each with its phases and the peak GPU and host memory;
* **evaluation** tokens/s of ``perplexity`` (model kept on the GPU), of a round that moves the model there
  first (non-resident) and of ``perplexity_layerwise``, against a bare forward on the same windows;
* a **projected wall time** of ``model=llama_7b method=copal -m order=all_perms`` at the paper's settings
  (15 prune steps of COPAL, 45 evaluations, i.e. 15 states × WikiText-2/PTB/C4, plus the dense evaluation),
  from the measured parts; the full splits' window counts at 2048 are ``--windows`` (LLaMA-tokenizer
  counts, stated as assumptions in the file);
* **2:4 in practice**: a 2:4-pruned model's linears and its whole forward through PyTorch's
  semi-structured sparse tensors (``torch.sparse.to_sparse_semi_structured``) against dense, fp16, for
  batch 1 with one token (a decoding step) and with a long prompt.

Without CUDA it exits with an error (never a silent CPU run) unless ``--cpu-smoke`` asks for the CPU path on
small shapes, where the semi-structured kernels (CUDA only) are recorded as not measured.
Writes ``<out>/gpu-suite-<device>-<commit>-<time>.json`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import bench_7b_shape as shape
import torch
from timing import median_seconds

from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise
from copal_exp.io.offload import Offloader
from copal_exp.models.anatomy import decoder_layers, find_linears, prunable_linears
from copal_exp.pruning.engine import PhaseTimer, prune_model
from copal_exp.pruning.masks import Pattern, nm_mask
from copal_exp.pruning.methods import build_method

#: tiny LLaMA shapes for the CPU path (every dimension a multiple of 4, so 2:4 tiles)
SMOKE = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 344, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 256, "rms_norm_eps": 1e-6}
#: the paper's protocol: 3 datasets, 6 orders, 15 distinct COPAL prune steps after prefix sharing, 45 evaluations
PAPER_STEPS = 15
PATTERNS = {"unstructured": Pattern.parse("unstructured", 0.5), "2:4": Pattern.parse("nm", n=2, m=4)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device: str, repeats: int = 1, warmup: int = 0) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (synchronised on a GPU)."""
    return median_seconds(fn, repeats, warmup, synchronize=lambda: sync(device))


def restore(linears: dict, dense: dict) -> None:
    for name, lin in linears.items():
        lin.weight.data.copy_(dense[name])


def prune_steps(model, linears, dense, segments, args, resident: bool) -> dict:
    """One prune step per method and pattern in one mode; per-phase seconds, peak memory."""
    activations = Offloader("device", args.device) if resident else None
    # resident: COPAL's G stays on the GPU too, as run.offload.memory=auto decides when the plan fits (7B on an H200)
    memory_store = Offloader("device", args.device) if resident else None
    model.to(args.device if resident else "cpu")
    rows = {}
    for name in args.methods.split(","):
        for pattern_name in args.patterns.split(","):
            restore(linears, dense)
            timer = PhaseTimer()
            shape.reset_gpu_peak(args.device)
            start = time.perf_counter()
            masks, _ = prune_model(model, segments, build_method(name, PATTERNS[pattern_name]), args.device, timer,
                                   progress=False, activations=activations, memory_store=memory_store)
            sync(args.device)
            seconds = time.perf_counter() - start
            kept = sum(masks.kept.values())
            total = sum(int(torch.Size(s).numel()) for s in masks.shapes.values())
            rows[f"{name} {pattern_name}"] = {
                "step_s": round(seconds, 3), "step_s_per_layer": round(seconds / args.layers, 4),
                "step_s_32_layers": round(seconds * 32 / args.layers, 2),
                "phases_s": {k: round(v, 3) for k, v in timer.seconds.items()},
                "sparsity": round(1 - kept / total, 4), "gpu_peak_gib": shape.gpu_peak(args.device),
                "host_peak_rss_gib": shape.peak_rss_gib()}
            print("step", "resident" if resident else "non-resident", name, pattern_name, rows[f"{name} {pattern_name}"],
                  flush=True)
    restore(linears, dense)
    model.to("cpu")
    return rows


@torch.no_grad()
def evaluation(model, windows, args) -> dict:
    """Evaluation against a bare forward on the same windows, and the LM head's share (for the projection)."""
    device, tokens = args.device, windows.numel()
    out = {"windows": int(windows.shape[0]), "seqlen": int(windows.shape[1])}
    model.to(device)
    on_device = windows.to(device)

    def bare():
        for row in on_device:
            model(row[None], use_cache=False)

    hidden = torch.randn(1, windows.shape[1], model.config.hidden_size, dtype=model.dtype, device=device)

    def head():
        model.lm_head(model.model.norm(hidden))

    shape.reset_gpu_peak(device)
    cases = {"bare_forward": bare, "perplexity_kept_on_device": lambda: perplexity(model, windows, device)}
    for case, fn in cases.items():
        seconds = timed(fn, device, repeats=args.repeats, warmup=1)
        out[case] = {"seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1)}
    out["head_s_per_window"] = round(timed(head, device, repeats=args.repeats * 3, warmup=1), 5)
    out["gpu_peak_gib_kept"] = shape.gpu_peak(device)
    model.to("cpu")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    for case, fn in {"perplexity_moving_model": lambda: perplexity(model, windows, device),
                     "perplexity_layerwise": lambda: perplexity_layerwise(model, windows, device)}.items():
        seconds = timed(fn, device, repeats=1)
        out[case] = {"seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1)}
    for case in ("perplexity_kept_on_device", "perplexity_moving_model", "perplexity_layerwise"):
        out[case]["over_bare"] = round(out[case]["seconds"] / out["bare_forward"]["seconds"], 3)
    print("evaluation", out, flush=True)
    return out


def projection(steps: dict, ev: dict, args) -> dict:
    """``model=llama_7b method=copal -m order=all_perms`` at the paper's settings, from the measured parts."""
    windows = dict(part.split("=") for part in args.windows.split(","))
    windows = {k: int(v) for k, v in windows.items()}
    per_window_bare = ev["bare_forward"]["seconds"] / ev["windows"]
    head = ev["head_s_per_window"]
    # the decoder layers scale with their count, the embedding and LM head do not
    per_window_32 = max(per_window_bare - head, 0.0) * 32 / args.layers + head
    out = {"assumed_windows_at_2048": windows, "prune_steps": PAPER_STEPS,
           "evaluations": PAPER_STEPS * len(windows), "dense_evaluations": len(windows),
           "bare_forward_s_per_window_32_layers": round(per_window_32, 4)}
    for mode, kept in (("resident", "perplexity_kept_on_device"), ("non-resident", "perplexity_moving_model")):
        step = steps.get(mode, {}).get("copal unstructured")
        if step is None:
            continue
        round_s = per_window_32 * ev[kept]["over_bare"] * sum(windows.values())
        prune_s = PAPER_STEPS * step["step_s_32_layers"]
        total = prune_s + (PAPER_STEPS + 1) * round_s
        out[mode] = {"copal_step_s": step["step_s_32_layers"], "evaluation_round_s": round(round_s, 1),
                     "prune_s": round(prune_s, 1), "evaluation_s": round((PAPER_STEPS + 1) * round_s, 1),
                     "total_s": round(total, 1), "total_h": round(total / 3600, 2)}
    out["formula"] = ("15 x COPAL step (32 layers) + 16 rounds (15 states + dense) x windows x seconds per window "
                      "of the 32-layer model (bare forward x the evaluation's measured overhead)")
    return out


def _semi_structured_linear(w: torch.Tensor, device: str, repeats: int, tokens: int) -> dict:
    from torch.sparse import to_sparse_semi_structured

    keep = nm_mask(w.abs().float(), 2, 4)
    sparse_w = to_sparse_semi_structured(w * keep)
    x = torch.randn(tokens, w.shape[1], dtype=w.dtype, device=device)
    dense_s = timed(lambda: torch.nn.functional.linear(x, w), device, repeats=repeats, warmup=3)
    sparse_s = timed(lambda: torch.nn.functional.linear(x, sparse_w), device, repeats=repeats, warmup=3)
    return {"dense_ms": round(dense_s * 1e3, 4), "sparse_ms": round(sparse_s * 1e3, 4),
            "speedup": round(dense_s / sparse_s, 3)}


def _semi_structured_forward(dense_model, args, lengths: dict) -> dict:
    """The whole forward of a 2:4 copy of ``dense_model`` (its linears semi-structured) against the dense one."""
    from torch.sparse import to_sparse_semi_structured

    device, out = args.device, {}
    sparse_model = copy.deepcopy(dense_model)
    for lin in prunable_linears(sparse_model).values():
        keep = nm_mask(lin.weight.abs().float(), 2, 4)
        lin.weight = torch.nn.Parameter(to_sparse_semi_structured(lin.weight * keep), requires_grad=False)
    for label, tokens in lengths.items():
        ids = torch.randint(0, dense_model.config.vocab_size, (1, tokens), device=device)
        dense_s = timed(lambda: dense_model(ids, use_cache=False), device, repeats=args.repeats * 3, warmup=2)
        sparse_s = timed(lambda: sparse_model(ids, use_cache=False), device, repeats=args.repeats * 3, warmup=2)
        out[label] = {"layers": args.layers, "dense_ms": round(dense_s * 1e3, 3), "sparse_ms": round(sparse_s * 1e3, 3),
                      "speedup": round(dense_s / sparse_s, 3)}
        print("2:4 forward", label, out[label], flush=True)
    return out


@torch.no_grad()
def semi_structured(model, args) -> dict:
    """A 2:4 model's linears and whole forward through semi-structured sparse tensors, against dense."""
    device = args.device
    if not device.startswith("cuda"):
        return {"status": "not measured: PyTorch's semi-structured sparse kernels (cuSPARSELt / CUTLASS) run on "
                          "CUDA GPUs only"}
    out = {"status": "measured", "linears": {}}
    lengths = {"batch 1, 1 token": 1, f"batch 1, {args.seqlen}-token prompt": args.seqlen}
    layer = decoder_layers(model)[0]
    shapes = {}
    for name, lin in find_linears(layer).items():
        shapes.setdefault(tuple(lin.weight.shape), name)
    for (d_out, d_in), name in shapes.items():
        w = torch.randn(d_out, d_in, dtype=torch.float16, device=device) * 0.02
        for label, tokens in lengths.items():
            key = f"{name} {d_out}x{d_in}, {label}"
            try:
                out["linears"][key] = _semi_structured_linear(w, device, args.repeats * 10, tokens)
            except Exception as exc:  # noqa: BLE001 - recorded: what this GPU/PyTorch cannot do is a result
                out["linears"][key] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            print("2:4 linear", key, out["linears"][key], flush=True)
    try:
        out["forward"] = _semi_structured_forward(model.to(device), args, lengths)
    except Exception as exc:  # noqa: BLE001
        out["forward"] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        print("2:4 forward failed:", out["forward"]["error"], flush=True)
    model.to("cpu")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="the CPU path on tiny shapes (proves the script runs)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=4, help="decoder layers built (of 32); per-layer figures x 32")
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--eval-windows", type=int, default=8)
    p.add_argument("--methods", default="wanda,sparsegpt,copal")
    p.add_argument("--patterns", default="unstructured,2:4")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each evaluation timing (medians)")
    p.add_argument("--windows", default="wikitext2=166,ptb=56,c4=256",
                   help="full evaluation windows at 2048 tokens per dataset, for the projection (assumed)")
    p.add_argument("--out", type=Path, default=shape.ROOT / "bench" / "results")
    args = p.parse_args(argv)
    config = shape.LLAMA_7B
    dtype = torch.float16
    if args.cpu_smoke:
        args.device, config, dtype = "cpu", SMOKE, torch.float32
        args.layers, args.nsamples, args.seqlen, args.eval_windows = 2, 2, 64, 2
    elif not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(f"gpu_suite: no CUDA GPU (--device {args.device}, torch.cuda.is_available()="
              f"{torch.cuda.is_available()}, torch {torch.__version__}): this suite measures a GPU and does not fall "
              "back to the CPU. Run it on a CUDA machine, or with --cpu-smoke for its CPU path on tiny shapes.",
              file=sys.stderr)
        return 2
    begin = time.perf_counter()
    out = {"kind": "gpu-suite", "commit": shape.commit(), "machine": shape.machine(args.device),
           "settings": {k: str(v) for k, v in vars(args).items()}, "shapes": config}
    model = shape.build_model(args.layers, dtype, args.device, config)
    linears = prunable_linears(model)
    dense = {n: lin.weight.data.to("cpu", copy=True) for n, lin in linears.items()}
    g = torch.Generator().manual_seed(0)
    segments = torch.randint(0, config["vocab_size"], (args.nsamples, args.seqlen), generator=g)
    windows = torch.randint(0, config["vocab_size"], (args.eval_windows, args.seqlen), generator=g)
    out["steps"] = {"non-resident": prune_steps(model, linears, dense, segments, args, resident=False),
                    "resident": prune_steps(model, linears, dense, segments, args, resident=True)}
    out["evaluation"] = evaluation(model, windows, args)
    out["projection_llama7b_copal_all_perms"] = projection(out["steps"], out["evaluation"], args)
    out["semi_structured_2_4"] = semi_structured(model, args)
    out["host_peak_rss_gib"] = shape.peak_rss_gib()
    out["wall_s"] = round(time.perf_counter() - begin, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "cpu-smoke" if args.cpu_smoke else "cuda"
    dest = args.out / f"gpu-suite-{kind}-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["projection_llama7b_copal_all_perms"], indent=2))
    print(f"written {dest} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
