"""One measured run for ``bench_peer.py``, in a fresh process: load SmolLM2, prune it once with one
tool (``copal_exp`` or ``llmcompressor``), evaluate it, and print one JSON line.

Both tools get the same model folder, the same calibration segments and the same evaluation windows
(``inputs.pt`` written by ``bench_peer.py``), and are evaluated by the same perplexity function. Runs
under either virtualenv: it imports only torch, transformers and copal_exp's engine modules from
``src/`` (plus llmcompressor for that tool).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from copal_exp.evaluation.perplexity import perplexity  # noqa: E402
from copal_exp.models.anatomy import prunable_linears  # noqa: E402


def prune_with_copal_exp(model, segments, method, pattern):
    from copal_exp.pruning.engine import prune_model
    from copal_exp.pruning.masks import Pattern
    from copal_exp.pruning.methods import build_method

    parsed = Pattern.parse("nm", n=2, m=4) if pattern == "2:4" else Pattern.parse("unstructured", 0.5)
    prune_model(model, segments, build_method(method, parsed), progress=False)


def prune_with_llmcompressor(model, segments, method, pattern):
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    structure = "2:4" if pattern == "2:4" else "0:0"
    cls = WandaPruningModifier if method == "wanda" else SparseGPTModifier
    # lm_head excluded by name: SmolLM2 ties it to the embeddings, which must never be pruned
    modifier = cls(sparsity=0.5, mask_structure=structure, targets=["Linear"], ignore=["re:.*lm_head"])
    data = Dataset.from_dict({"input_ids": segments.tolist(), "attention_mask": torch.ones_like(segments).tolist()})
    oneshot(model=model, dataset=data, recipe=[modifier], num_calibration_samples=segments.shape[0],
            max_seq_length=segments.shape[1], shuffle_calibration_samples=False, pipeline="sequential")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tool", choices=["copal_exp", "llmcompressor"], required=True)
    p.add_argument("--method", choices=["wanda", "sparsegpt"], required=True)
    p.add_argument("--pattern", choices=["50%", "2:4"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True)
    args = p.parse_args()
    from transformers import AutoModelForCausalLM

    inputs = torch.load(args.inputs)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    model.config.use_cache = False
    load_s = time.perf_counter() - start
    embeddings = model.get_input_embeddings().weight.detach().clone()
    start = time.perf_counter()
    if args.tool == "copal_exp":
        prune_with_copal_exp(model, inputs["segments"], args.method, args.pattern)
    else:
        prune_with_llmcompressor(model, inputs["segments"], args.method, args.pattern)
    prune_s = time.perf_counter() - start
    linears = prunable_linears(model)
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears.values())
    total = sum(lin.weight.numel() for lin in linears.values())
    start = time.perf_counter()
    ppl = perplexity(model, inputs["windows"])
    eval_s = time.perf_counter() - start
    print(json.dumps({"tool": args.tool, "method": args.method, "pattern": args.pattern, "load_s": round(load_s, 2),
                      "prune_s": round(prune_s, 2), "eval_s": round(eval_s, 2), "ppl": round(ppl, 4),
                      "sparsity": round(zeros / total, 4),
                      "embeddings_untouched": bool(torch.equal(model.get_input_embeddings().weight, embeddings)),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
