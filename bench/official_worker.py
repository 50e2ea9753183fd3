"""One side of ``bench_official.py``, in a fresh process: load SmolLM2, prune it once — with the method's
official code (OWL, RIA, DSnoT; their ``lib/`` extracted by ``bench_official.py`` into a temporary folder,
never into this repository) or with copal_exp — on the calibration segments of ``inputs.pt``, and save the
pruned positions of every decoder linear, the perplexity on the evaluation windows and the seconds.

The official functions are called as their ``main.py`` calls them, with three shims for this machine and
this transformers: their data loader returns our segments; ``Tensor.cuda``/``torch.cuda.synchronize`` are
no-ops on a CPU; a decoder layer called without ``position_embeddings`` (their loops predate it) computes
them from its ``position_ids`` with the model's own rotary table. Nothing in their arithmetic is changed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from copal_exp.evaluation.perplexity import perplexity  # noqa: E402
from copal_exp.models.anatomy import prunable_linears  # noqa: E402

#: config name -> (official package, function, its args, our method, our options, allocation)
CONFIGS = {
    "wanda": ("owl", "prune_wanda", {}, "wanda", {}, False),
    "wanda+owl": ("owl", "prune_wanda_outlier", {}, "wanda", {}, True),
    "sparsegpt": ("owl", "prune_sparsegpt", {}, "sparsegpt", {}, False),
    "sparsegpt+owl": ("owl", "prune_sparsegpt_outlier", {}, "sparsegpt", {}, True),
    "wanda+owl-nm": ("owl", "prune_wanda_outlier_structure", {}, "wanda", {}, True),
    "ria": ("ria", "prune_ria", {"prune_method": "ria"}, "ria", {}, False),
    "dsnot": ("dsnot", "prune_DSnoT", {"initial_method": "wanda"}, "dsnot", {"base": "wanda"}, False),
}


def parse_pattern(text: str):
    from copal_exp.pruning.masks import Pattern

    if ":" in text:
        n, m = map(int, text.split(":"))
        return Pattern.parse("nm", n=n, m=m)
    return Pattern.parse("unstructured", ratio=float(text))


def legacy_layer_calls(model) -> None:
    """Decoder layers called as in transformers 4.3x (hidden states, attention_mask, position_ids) compute
    their rotary ``position_embeddings`` themselves."""
    rotary = model.model.rotary_emb
    for layer in model.model.layers:
        forward = layer.forward

        def call(hidden_states, *args, _forward=forward, **kwargs):
            if kwargs.get("position_embeddings") is None:
                ids = kwargs.get("position_ids")
                if ids is None:
                    ids = torch.arange(hidden_states.shape[-2], device=hidden_states.device)[None]
                kwargs["position_embeddings"] = rotary(hidden_states, ids)
            return _forward(hidden_states, *args, **kwargs)

        layer.forward = call


def run_official(model, segments, config, pattern, lam, m, official_dir):
    package, function, extra, _, _, _ = CONFIGS[config]
    sys.path.insert(0, str(official_dir))
    module = importlib.import_module(f"official_{package}.prune" if package != "owl" else "official_owl.prune_all")
    loader = [(row.reshape(1, -1), None) for row in segments]
    module.get_loaders = lambda *a, **k: (loader, None)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    model.seqlen = segments.shape[1]
    model.hf_device_map = {}
    legacy_layer_calls(model)
    nm = pattern.kind == "nm"
    args = SimpleNamespace(model="llama", nsamples=segments.shape[0], seed=0, seqlen=segments.shape[1],
                           sparsity_ratio=pattern.ratio, sparsity_type=f"{pattern.n}:{pattern.m}" if nm else "unstructured",
                           Lamda=lam, Hyper_m=m, use_variant=False, calib_dataset="c4", a=0.5, reallocation=False,
                           lsa=False, gptq=False, per_outneuron=False, reconstruction=False, semi_sparse_acc=False,
                           importance_score="sum", max_cycle_time=50, update_threshold=0.1, pow_of_var_regrowing=1.0,
                           pow_of_var_pruning=1.0, skip_layer="mlp", skip_sub_layer="no_skip", without_same_sign=True,
                           get_time_overhead=False, without_DSnoT=False, **extra)
    prune_n, prune_m = (pattern.m - pattern.n, pattern.m) if nm else (0, 0)  # their N is the number pruned
    getattr(module, function)(args, model, None, torch.device("cpu"), prune_n=prune_n, prune_m=prune_m)


def run_ours(model, segments, config, pattern, lam, m):
    from copal_exp.pruning.allocation import OWL
    from copal_exp.pruning.engine import prune_model
    from copal_exp.pruning.methods import build_method

    _, _, _, method, options, owl = CONFIGS[config]
    allocation = OWL(m=m, lam=lam) if owl else None
    prune_model(model, segments, build_method(method, pattern, **options), progress=False, allocation=allocation)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["official", "ours"], required=True)
    p.add_argument("--config", choices=list(CONFIGS), required=True)
    p.add_argument("--pattern", required=True)
    p.add_argument("--lam", type=float, default=0.08)
    p.add_argument("--m", type=float, default=5.0)
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True)
    p.add_argument("--official", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    data = torch.load(args.inputs)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    pattern = parse_pattern(args.pattern)
    start = time.perf_counter()
    with torch.no_grad():
        if args.side == "official":
            run_official(model, data["segments"], args.config, pattern, args.lam, args.m, Path(args.official))
        else:
            run_ours(model, data["segments"], args.config, pattern, args.lam, args.m)
    seconds = time.perf_counter() - start
    linears = prunable_linears(model)
    pruned = {name: (lin.weight.data == 0).cpu() for name, lin in linears.items()}
    ppl = perplexity(model, data["windows"])
    torch.save({"pruned": pruned, "ppl": ppl, "seconds": seconds}, args.out)
    print(json.dumps({"ppl": ppl, "seconds": seconds}))


if __name__ == "__main__":
    main()
