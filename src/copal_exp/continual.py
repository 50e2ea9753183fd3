"""COPAL's continual state across processes: export after a step, load later, continue pruning.

A state folder holds ``sensitivity.safetensors`` (the accumulated G of every pruned linear, fp32)
and ``state.json`` (format, method options, the datasets seen so far, the model's name, a SHA-256 of
its dense prunable weights, and every layer's shape). Loading it onto a different model, or a model
whose shapes or weights differ, fails with a message saying what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

FORMAT = "copal_exp.continual_state/1"


def model_identity(name: str, dense_weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Name, per-layer shapes and a SHA-256 over the dense weights of every prunable linear."""
    digest = hashlib.sha256()
    for layer, weight in dense_weights.items():
        digest.update(layer.encode())
        digest.update(weight.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {"name": name, "weights_sha256": digest.hexdigest(),
            "shapes": {layer: list(w.shape) for layer, w in dense_weights.items()}}


def export_state(path: str | Path, method_state: dict[str, Any], identity: dict[str, Any],
                 history: list[str], method_options: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    from copal_exp.offload import materialize

    tensors = {name: materialize(g).contiguous() for name, g in method_state["sensitivity"].items()}
    save_file(tensors, str(out / "sensitivity.safetensors"))
    meta = {"format": FORMAT, "method": "copal", "method_options": method_options,
            "steps_seen": int(method_state["steps_seen"]), "datasets_seen": list(history), "model": identity}
    (out / "state.json").write_text(json.dumps(meta, indent=2))
    return out


def load_state(path: str | Path, identity: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(method_state, metadata)`` from an exported folder, after checking it belongs to this model."""
    from safetensors.torch import load_file

    folder = Path(path)
    meta_path = folder / "state.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"state.load={path}: no state.json there (export one with state.export=DIR)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"state.load={path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    saved = meta["model"]
    if saved["name"] != identity["name"]:
        raise ValueError(f"state.load={path}: saved for model {saved['name']!r}, this run uses {identity['name']!r}")
    if saved["shapes"] != identity["shapes"]:
        diff = sorted(k for k in set(saved["shapes"]) | set(identity["shapes"])
                      if saved["shapes"].get(k) != identity["shapes"].get(k))[:3]
        raise ValueError(f"state.load={path}: layer shapes differ from this model's (e.g. {diff})")
    if saved["weights_sha256"] != identity["weights_sha256"]:
        raise ValueError(f"state.load={path}: saved for different dense weights of {saved['name']} "
                         f"(sha256 {saved['weights_sha256'][:12]}…, this model {identity['weights_sha256'][:12]}…)")
    sensitivity = load_file(str(folder / "sensitivity.safetensors"))
    return {"sensitivity": sensitivity, "steps_seen": meta["steps_seen"]}, meta
