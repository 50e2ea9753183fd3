"""The pruned model of any state of a finished job, rebuilt from its verified ``states/``, as a Hugging Face
folder (safetensors, config, tokenizer, a model card); ``verify`` reloads it and checks its perplexities.

A method that only masks (``updates_weights = False``: magnitude, Wanda, COPAL) gives ``W_t = W ⊙ M_t``
on the dense weights. A method that also changes the kept weights (SparseGPT) has them recomputed: the
job's steps leading to that state are run again on the same calibration segments (the protocol is
deterministic), and the recomputed masks must equal the recorded ones.

Nothing of the user's is replaced: a non-empty target folder is refused unless ``force``, and then the
export is written beside it and swapped in whole (what it did not write is gone, never mixed with it).
``copal_exp.json`` lists the SHA-256 of every file written, so :func:`check` can verify an existing
folder without writing anything. The command is :mod:`copal_exp.cli.export`."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from copal_exp.errors import IntegrityError, UserError
from copal_exp.io.checkpoint import StateStore
from copal_exp.io.identity import result_config, weights_fingerprint
from copal_exp.io.results import read_results
from copal_exp.io.storage import read_json, sha256_file, verify_file, write_json
from copal_exp.models.anatomy import (
    prunable_linears,
    set_weight_matrix,
    weight_matrix,
)
from copal_exp.protocol.jobdir import config_differences, unwritable
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
    store = StateStore(job_dir)
    if store.config is not None:  # results.json says what to rebuild; the states must be that configuration's
        diff = config_differences(result_config(store.config), result_config(results["config"]))
        if diff:
            raise UserError(f"{job_dir}: its results.json and states/index.json record different configurations "
                            f"({len(diff)} key(s): {'; '.join(diff[:3])}{' …' if len(diff) > 3 else ''}): results.json "
                            "was edited or replaced, so no state of it can be trusted to match; nothing was exported")
    settings = validate(results["config"])
    if not settings.method_class.prunes:
        raise UserError(f"{job_dir}: method={settings.method} prunes nothing, so the job has no pruned state to "
                        "export (the dense model is the one it loaded)")
    step = len(settings.datasets) - 1 if step is None else step
    chain = state_chain(settings, order, step)
    record = store.load_record(chain[-1][1])
    if record is None:
        raise UserError(f"{job_dir}: state {chain[-1][1]} was not computed (yet): run the job to completion first")
    model, tokenizer = load_model(settings.model)
    selection = settings.selection
    linears = prunable_linears(model, selection)
    recorded = (store.inputs or {}).get("model")
    if recorded is not None and weights_fingerprint({n: lin.weight.data for n, lin in linears.items()}) != recorded:
        raise UserError(f"{job_dir}: the model {settings.model.name} loaded now has other weights than the job pruned "
                        "(its fingerprint differs): the checkpoint changed since; nothing was exported")
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
                                        selection=selection, allocation=settings.allocation)
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

# {s.model.name} pruned with {s.method_class.label(s.method_options, s.init)}{s.allocation.label}, {s.pattern.name}

Pruned by copal_exp (continual pruning, no training), state after the steps {chain}.

* method: `{s.method}` with {json.dumps(s.method_options)}, init `{s.init}`
* sparsity pattern: {s.pattern.name}; achieved overall sparsity {record['sparsity']['overall']:.4f}
* calibration: {s.data.nsamples} segments × {s.data.seqlen} tokens per step, seed {s.data.seed}
* evaluation: windows of {s.data.seqlen} tokens (at most {s.eval.max_windows or 'all'} per dataset)

| dataset | perplexity | dense |
|---|---|---|
{ppl}
"""


MANIFEST = "copal_exp.json"


def check_target(out: Path, force: bool = False) -> None:
    """Refuse a target that holds anything (unless ``force``) or cannot be written, before any model loads."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: give the export a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise UserError(f"{out} is not empty (it holds {shown}{' …' if len(list(out.iterdir())) > 5 else ''}): nothing "
                        "was written. Give the export an empty or new folder, or add --force to replace that "
                        "folder's content with the export (nothing else stays in it)")
    blocked = unwritable(out.parent if out.is_dir() else out)
    if blocked is not None:
        raise UserError(f"{out}: {blocked} cannot be written; give the export a folder this user can write")


def export(job_dir: Path, out: Path, order: int = 0, step: int | None = None, force: bool = False) -> dict[str, Any]:
    """Write the state's model folder to ``out`` (refused when ``out`` holds anything, unless ``force``)."""
    out = Path(out)
    check_target(out, force)
    model, tokenizer, info = pruned_model(job_dir, order, step)
    staging = out.with_name(f".{out.name}.export-{os.getpid()}")  # beside the target: one rename swaps it in
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        model.save_pretrained(staging)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(info))
        files = {str(p.relative_to(staging)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        write_json(staging / MANIFEST, {"job": str(job_dir), "state": list(info["chain"][-1][1]),
                                        "ppl": info["record"]["ppl"], "config": info["settings"].resolved,
                                        "files": files})
        if out.exists():  # --force: what the export did not write does not stay beside it
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def check(folder: Path) -> dict[str, float]:
    """Verify an exported folder without writing to it: every file the export wrote is there, unchanged (its
    SHA-256), nothing else was added, and the reloaded model gives the recorded perplexities."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UserError(f"{folder}: no {MANIFEST} (not a folder written by python -m copal_exp.export)")
    try:
        meta = read_json(manifest, "Export the state again into a new folder.")
    except Exception as exc:  # noqa: BLE001 - an edited or damaged manifest fails the check, in one line
        raise UserError(f"{folder}: {exc}") from None
    if "files" not in meta:
        raise UserError(f"{folder}: {MANIFEST} lists no file checksums (exported by an older copal_exp): export "
                        "the state again to check it")
    problems = []
    for name, expected in meta["files"].items():
        try:
            verify_file(folder / name, expected, "")
        except IntegrityError as exc:
            problems.append(str(exc).strip())
    extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != MANIFEST and str(p.relative_to(folder)) not in meta["files"])
    problems += [f"{name} was not written by the export" for name in extra]
    if problems:
        raise UserError(f"{folder} fails the check: " + "; ".join(problems))
    return verify(folder, {"settings": validate(meta["config"]), "record": {"ppl": meta["ppl"]}})


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
