"""A method's continual state across processes: export after a step, load later, continue pruning.

For a method that carries memory (COPAL: its accumulated sensitivity G, one fp32 per pruned weight)
a state folder holds the memory tensors (``sensitivity.safetensors`` for COPAL: the method's
``memory_file``) and ``state.json`` (format, method options, the datasets seen so far, the model's name, a SHA-256 of
its dense prunable weights, every layer's shape, the size and SHA-256 of ``sensitivity.safetensors``,
and a checksum of itself). Loading it fails with a message saying what differs when the folder is
damaged, belongs to another model (name, layers, shapes, weights) or method, or was accumulated with
other values of the method's ``memory_options`` (COPAL: granularity, group, perturbation, epsilon).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from copal_exp.errors import IntegrityError, StateError
from copal_exp.io.storage import (
    read_json,
    sha256_file,
    storage_error,
    tmp_path,
    verify_file,
    write_json,
)
from copal_exp.pruning.methods import Memory, PruningMethod

FORMAT = "copal_exp.continual_state/2"


def model_identity(name: str, dense_weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Name, per-layer shapes and a SHA-256 over the dense weights of every prunable linear."""
    digest = hashlib.sha256()
    for layer, weight in dense_weights.items():
        digest.update(layer.encode())
        digest.update(weight.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {"name": name, "weights_sha256": digest.hexdigest(),
            "shapes": {layer: list(w.shape) for layer, w in dense_weights.items()}}


def export_state(path: str | Path, memory: Memory, identity: dict[str, Any], history: list[str],
                 method: type[PruningMethod], method_options: dict[str, Any]) -> Path:
    """Write the folder: the memory tensors (``method.memory_file``), then ``state.json`` (with its
    checksum) as the commit."""
    from safetensors.torch import save_file

    from copal_exp.io.offload import materialize

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: materialize(g).contiguous() for name, g in memory.tensors.items()}
    target = out / method.memory_file
    tmp = tmp_path(target)
    try:
        save_file(tensors, str(tmp))
        entry = {"sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(target, exc) from exc
    meta = {"format": FORMAT, "method": method.name, "method_options": method_options, "steps_seen": memory.steps,
            "datasets_seen": list(history), "model": identity, "files": {method.memory_file: entry}}
    write_json(out / "state.json", meta)
    return out


def load_state(path: str | Path, identity: dict[str, Any], method: type[PruningMethod],
               method_options: dict[str, Any]) -> tuple[Memory, dict[str, Any]]:
    """``(memory, metadata)`` from an exported folder, after checking that it is intact, was made by this
    method with the same ``method.memory_options``, and belongs to this model (name, layers, shapes, weights)."""
    from safetensors.torch import load_file

    folder = Path(path)
    meta_path = folder / "state.json"
    recover = "Re-export it (state.export=DIR) from the run that made it, or start without state.load."
    if not meta_path.is_file():
        raise StateError(f"state.load={path}: no state.json there (export one with state.export=DIR)")
    meta = read_json(meta_path, recover)
    if meta.get("format") != FORMAT:
        raise StateError(f"state.load={path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("method") != method.name:
        raise StateError(f"state.load={path}: exported by method={meta.get('method')}, this run is method={method.name}")
    saved_options = meta.get("method_options") or {}
    differ = [f"{k}: {saved_options.get(k)!r} (saved) → {method_options.get(k)!r} (this run)"
              for k in method.memory_options if saved_options.get(k) != method_options.get(k)]
    if differ:
        raise StateError(f"state.load={path}: its memory was accumulated with other {method.name} options, and "
                         "adding to it would mix two meanings or scales: " + "; ".join(differ)
                         + ". Run with the saved options (method.<key>=...) or start without state.load.")
    saved = meta["model"]
    if saved["name"] != identity["name"]:
        raise StateError(f"state.load={path}: saved for model {saved['name']!r}, this run uses {identity['name']!r}")
    if saved["shapes"] != identity["shapes"]:
        diff = sorted(k for k in set(saved["shapes"]) | set(identity["shapes"])
                      if saved["shapes"].get(k) != identity["shapes"].get(k))[:3]
        raise StateError(f"state.load={path}: layer shapes differ from this model's (e.g. {diff})")
    if saved["weights_sha256"] != identity["weights_sha256"]:
        raise StateError(f"state.load={path}: saved for different dense weights of {saved['name']} "
                         f"(sha256 {saved['weights_sha256'][:12]}…, this model {identity['weights_sha256'][:12]}…)")
    target = folder / method.memory_file
    verify_file(target, meta["files"][method.memory_file], recover)
    try:
        tensors = load_file(str(target))
    except Exception as exc:  # noqa: BLE001
        raise IntegrityError(f"{target} cannot be read ({type(exc).__name__}: {exc}). {recover}") from None
    missing = sorted(set(identity["shapes"]) - set(tensors))
    extra = sorted(set(tensors) - set(identity["shapes"]))
    if missing or extra:
        raise StateError(f"state.load={path}: {target.name} does not hold exactly this model's pruned layers: "
                         f"missing {missing[:3]}{' …' if len(missing) > 3 else ''} ({len(missing)}), "
                         f"extra {extra[:3]}{' …' if len(extra) > 3 else ''} ({len(extra)})")
    wrong = [k for k, g in tensors.items() if list(g.shape) != identity["shapes"][k]]
    if wrong:
        raise StateError(f"state.load={path}: the memory has the wrong shape for {wrong[:3]}")
    return Memory(tensors, int(meta["steps_seen"])), meta
