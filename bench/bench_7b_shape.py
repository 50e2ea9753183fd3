"""A LLaMA-7B-shaped model with random weights: one prune step per method, evaluation, peak memory.

    python bench/bench_7b_shape.py --device cuda [--layers 32] [--nsamples 16] [--seqlen 2048]
                                   [--methods wanda,sparsegpt,copal] [--eval-windows 8] [--resident] [--out DIR]

No weights are needed: the model is LlamaForCausalLM with LLaMA-7B's shapes (hidden 4096, MLP 11008,
32 heads, 32 layers, vocabulary 32000) and Hugging Face's random initialisation (std 0.02), in
``--dtype`` (float16). Calibration segments and evaluation windows are random token ids, so the
perplexities mean nothing; the times and memory are those of the real shapes. Each step runs the
project's engine exactly as a job does: the model on the host, one decoder layer at a time on the
device, activations and COPAL's G on the host; with ``--resident``, as a job whose memory plan keeps
the model on the GPU (``run.resident``): the whole model and the activations on the device, nothing
moved (only the dense copy and COPAL's G on the host). ``--layers`` fewer than 32 times a slice of the model
(steps scale linearly with layers; the result file gives per-layer figures to extrapolate).

Needs torch, transformers, tqdm, numpy, safetensors (no Hydra): it imports the engine alone.
Writes ``<out>/bench-7b-<device>[-resident]-<commit>-<time>.json`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise  # noqa: E402
from copal_exp.io.offload import Offloader  # noqa: E402
from copal_exp.models.anatomy import prunable_linears  # noqa: E402
from copal_exp.protocol.memory import peak_rss_bytes, rss_bytes  # noqa: E402
from copal_exp.pruning.engine import PhaseTimer, prune_model  # noqa: E402
from copal_exp.pruning.masks import Pattern  # noqa: E402
from copal_exp.pruning.methods import build_method  # noqa: E402

LLAMA_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
            "num_key_value_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6}


def commit() -> str:
    """``BENCH_COMMIT`` when set (a copy of the tree whose .git is stale, e.g. on a lent GPU machine), else git's HEAD."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def machine(device: str) -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "cuda": torch.version.cuda})
    return info


def rss_gib() -> float:
    return round(rss_bytes() / 2**30, 2)


def peak_rss_gib() -> float:
    return round(peak_rss_bytes() / 2**30, 2)


def build_model(layers: int, dtype: torch.dtype, device: str, shapes: dict | None = None):
    """Random LLaMA-7B-shaped model (or of ``shapes``), initialised on ``device`` (fast) and left on the host."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**(shapes or LLAMA_7B), num_hidden_layers=layers, tie_word_embeddings=False)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.config.use_cache = False
    return model.to("cpu").eval()


def gpu_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def reset_gpu_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--methods", default="wanda,sparsegpt,copal")
    p.add_argument("--patterns", default="unstructured", help="comma list of unstructured, 2:4")
    p.add_argument("--eval-windows", type=int, default=8)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--resident", action="store_true",
                   help="keep the whole model and the activations on the device, as run.resident does: no layer moves")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)

    out = {"kind": "llama-7b-shape", "commit": commit(), "machine": machine(args.device),
           "settings": {k: str(v) for k, v in vars(args).items()}, "steps": {}, "evaluation": {}}
    start = time.perf_counter()
    model = build_model(args.layers, dtype, args.device)
    linears = prunable_linears(model)
    params = sum(p.numel() for p in model.parameters())
    out["model"] = {"parameters": params, "prunable_weights": sum(l.weight.numel() for l in linears.values()),
                    "layers": args.layers, "build_s": round(time.perf_counter() - start, 1),
                    "host_rss_after_build_gib": rss_gib()}
    print("model", out["model"], flush=True)
    dense = {n: lin.weight.data.to("cpu", copy=True) for n, lin in linears.items()}  # on the host, as a job keeps it
    activations = Offloader("device", args.device) if args.resident else None
    if args.resident:
        model.to(args.device)
    g = torch.Generator().manual_seed(0)
    segments = torch.randint(0, LLAMA_7B["vocab_size"], (args.nsamples, args.seqlen), generator=g)
    windows = torch.randint(0, LLAMA_7B["vocab_size"], (args.eval_windows, args.seqlen), generator=g)

    for name in args.methods.split(","):
        for pattern_name in args.patterns.split(","):
            pattern = Pattern.parse("nm", n=2, m=4) if pattern_name == "2:4" else Pattern.parse("unstructured", 0.5)
            for n, lin in linears.items():
                lin.weight.data.copy_(dense[n])
            method = build_method(name, pattern)
            timer = PhaseTimer()
            reset_gpu_peak(args.device)
            t0 = time.perf_counter()
            masks, _ = prune_model(model, segments, method, args.device, timer, progress=False,
                                   desc=f"{name} {pattern_name}", activations=activations)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize(args.device)
            seconds = time.perf_counter() - t0
            kept = sum(int(m.count_nonzero()) for m in masks.values())
            total = sum(m.numel() for m in masks.values())
            row = {"step_s": round(seconds, 2), "step_s_per_layer": round(seconds / args.layers, 3),
                   "step_s_extrapolated_32_layers": round(seconds * 32 / args.layers, 1),
                   "phases_s": {k: round(v, 2) for k, v in timer.seconds.items()},
                   "sparsity": round(1 - kept / total, 4), "gpu_peak_gib": gpu_peak(args.device),
                   "host_rss_gib": rss_gib(), "host_peak_rss_gib": peak_rss_gib()}
            out["steps"][f"{name} {pattern_name}"] = row
            print(name, pattern_name, row, flush=True)
            del masks, method

    for n, lin in linears.items():
        lin.weight.data.copy_(dense[n])
    for mode in ("kept on the device" if args.resident else "resident", "layerwise"):
        reset_gpu_peak(args.device)
        t0 = time.perf_counter()
        if mode != "layerwise":
            ppl = perplexity(model, windows, args.device)
        else:
            ppl = perplexity_layerwise(model, windows, args.device, False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize(args.device)
        seconds = time.perf_counter() - t0
        out["evaluation"][mode] = {"windows": args.eval_windows, "seconds": round(seconds, 2),
                                   "tokens_per_s": round(windows.numel() / seconds, 1), "ppl": round(ppl, 2),
                                   "gpu_peak_gib": gpu_peak(args.device), "host_peak_rss_gib": peak_rss_gib()}
        print("evaluation", mode, out["evaluation"][mode], flush=True)
    out["host_peak_rss_gib"] = peak_rss_gib()
    args.out.mkdir(parents=True, exist_ok=True)
    kind = args.device.split(":")[0] + ("-resident" if args.resident else "")
    dest = args.out / f"bench-7b-{kind}-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps(out, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
