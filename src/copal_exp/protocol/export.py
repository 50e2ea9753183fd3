"""The pruned model of any state of a finished job, rebuilt from its verified ``states/``, as a Hugging Face
folder (safetensors, config, tokenizer, a model card); ``verify`` reloads it and checks its perplexities.

A method that only masks (``updates_weights = False``: magnitude, Wanda, COPAL) gives ``W_t = W ⊙ M_t``
on the dense weights. A method that also changes the kept weights (SparseGPT) has them recomputed: the
job's steps leading to that state are run again on the same calibration segments (the protocol is
deterministic), and the recomputed masks must equal the recorded ones. The command is
:mod:`copal_exp.cli.export`."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from copal_exp.errors import UserError
from copal_exp.io.checkpoint import StateStore
from copal_exp.io.results import read_results
from copal_exp.models.anatomy import (
    prunable_linears,
    set_weight_matrix,
    weight_matrix,
)
from copal_exp.protocol.settings import Settings, validate
from copal_exp.pruning.masks import unpack_mask

log = logging.getLogger(__name__)


def state_chain(settings: Settings, order: int, step: int) -> list[tuple[str, tuple]]:
    """``(dataset, state key)`` of every step from the first to ``step`` of order ``order``."""
    plan = settings.state_plan()
    if not 0 <= order < len(plan.keys) or not 0 <= step < len(plan.keys[order]):
        raise UserError(f"--order {order} --step {step + 1}: this job has {len(plan.keys)} order(s) of "
                        f"{len(settings.datasets)} step(s)")
    return [(settings.orders[order][t], plan.keys[order][t]) for t in range(step + 1)]


def pruned_model(job_dir: Path, order: int = 0, step: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """The model (and tokenizer) of a job's state, and that state's record."""
    from copal_exp.models.loading import load_model
    from copal_exp.protocol.runner import load_job_data
    from copal_exp.pruning.engine import prune_model

    results = read_results(job_dir)
    if results is None:
        raise UserError(f"{job_dir}: no results.json (give a job directory that copal_exp ran)")
    if results["status"] in ("failed", "interrupted") and not results["permutations"]:
        raise UserError(f"{job_dir}: the job {results['status']} before computing any state "
                        f"({results.get('error') or 'no error recorded'}); re-run its command to compute them")
    settings = validate(results["config"])
    step = len(settings.datasets) - 1 if step is None else step
    chain = state_chain(settings, order, step)
    record = StateStore(job_dir).load_record(chain[-1][1])
    if record is None:
        raise UserError(f"{job_dir}: state {chain[-1][1]} was not computed (yet): run the job to completion first")
    model, tokenizer = load_model(settings.model)
    selection = settings.selection
    linears = prunable_linears(model, selection)
    cls = settings.method_class
    if cls.updates_weights:  # recompute the weights: run the steps leading to the state again
        data, _ = load_job_data(settings, tokenizer)
        device = settings.device
        steps = chain if settings.init == "sequential" else chain[-1:]
        memory = None
        for dataset, _key in steps:
            masks, memory = prune_model(model, data[dataset].calibration,
                                        settings.build_method(),
                                        device, progress=False, desc=f"recompute {dataset}", memory=memory,
                                        selection=selection)
        for layer, packed in record["masks"].items():
            if not torch.equal(masks[layer], unpack_mask(packed, masks[layer].shape)):
                raise UserError(f"{job_dir}: recomputing {chain[-1][1]} gave other masks than recorded (layer {layer});"
                                " the job's code, data or machine differ from this one's")
    else:
        for layer, lin in linears.items():
            keep = unpack_mask(record["masks"][layer], weight_matrix(lin).shape)
            set_weight_matrix(lin, weight_matrix(lin) * keep.to(lin.weight.dtype))
    return model, tokenizer, {"settings": settings, "results": results, "record": record, "chain": chain}


def model_card(info: dict[str, Any]) -> str:
    s, record = info["settings"], info["record"]
    chain = " → ".join(d for d, _ in info["chain"])
    ppl = "\n".join(f"| {d} | {v:.3f} | {info['results']['dense_ppl'][d]:.3f} |" for d, v in record["ppl"].items())
    return f"""---
tags: [pruned, sparsity, copal_exp]
base_model: {getattr(s.model, 'name_or_path', None) or s.model.name}
---

# {s.model.name} pruned with {s.method_class.label(s.method_options, s.init)}, {s.pattern.name}

Pruned by copal_exp (continual pruning, no training), state after the steps {chain}.

* method: `{s.method}` with {json.dumps(s.method_options)}, init `{s.init}`
* sparsity pattern: {s.pattern.name}; achieved overall sparsity {record['sparsity']['overall']:.4f}
* calibration: {s.data.nsamples} segments × {s.data.seqlen} tokens per step, seed {s.data.seed}
* evaluation: windows of {s.data.seqlen} tokens (at most {s.eval.max_windows or 'all'} per dataset)

| dataset | perplexity | dense |
|---|---|---|
{ppl}
"""


def export(job_dir: Path, out: Path, order: int = 0, step: int | None = None) -> dict[str, Any]:
    model, tokenizer, info = pruned_model(job_dir, order, step)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(out)
    (out / "README.md").write_text(model_card(info))
    (out / "copal_exp.json").write_text(json.dumps({"job": str(job_dir), "state": list(info["chain"][-1][1]),
                                                    "ppl": info["record"]["ppl"], "config": info["settings"].resolved},
                                                   indent=2, default=str))
    return info


def verify(out: Path, info: dict[str, Any]) -> dict[str, float]:
    """Perplexities of the folder reloaded with ``from_pretrained`` on the job's evaluation windows."""
    from transformers import AutoModelForCausalLM

    from copal_exp.evaluation.perplexity import perplexity
    from copal_exp.models.loading import load_tokenizer, torch_dtype
    from copal_exp.protocol.runner import load_job_data

    settings = info["settings"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch_dtype(settings.model)).eval()
    data, _ = load_job_data(settings, load_tokenizer(settings.model))
    got = {d: perplexity(model, split.evaluation) for d, split in data.items()}
    for d, value in got.items():
        if not math.isclose(value, info["record"]["ppl"][d], rel_tol=1e-4):
            raise UserError(f"{out}: reloaded, its perplexity on {d} is {value:.4f}, the job recorded "
                            f"{info['record']['ppl'][d]:.4f}")
    return got
