"""Per-step checkpoints in the job directory, so that a killed job resumes where it stopped.

Every distinct state is saved as it completes (``states/<id>.pt``: evaluations, bit-packed masks,
achieved sparsity, timings). A state that later steps start from also saves what they need
(``states/<id>.carry.pt``: the pruned weights for sequential init, COPAL's accumulated G), and that
file is removed once every child has run. ``manifest.json`` holds a fingerprint of the
configuration: resuming with a different one is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

STATE_DIR = "states"
# keys that do not change what is computed
NEUTRAL_KEYS = {"run": ("progress", "device", "dense_cache", "offload"), "logger": None, "eval": ("batch_size", "layerwise")}


def fingerprint(resolved: dict[str, Any]) -> str:
    cfg = json.loads(json.dumps(resolved, default=str))
    for key, sub in NEUTRAL_KEYS.items():
        if sub is None:
            cfg.pop(key, None)
        else:
            for k in sub:
                cfg.get(key, {}).pop(k, None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def state_id(key: tuple) -> str:
    readable = "-".join(str(k) for k in key)[:80]
    return f"{readable}-{hashlib.sha1(repr(key).encode()).hexdigest()[:8]}"


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StateStore:
    def __init__(self, job_dir: str | Path, resolved: dict[str, Any]):
        self.dir = Path(job_dir) / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        self.fingerprint = fingerprint(resolved)
        if manifest.is_file():
            previous = json.loads(manifest.read_text())["fingerprint"]
            if previous != self.fingerprint:
                raise ValueError(
                    f"{self.dir} holds the states of a different configuration (fingerprint {previous}, "
                    f"this run {self.fingerprint}); use another output directory (hydra.run.dir=...) to start afresh"
                )
        else:
            manifest.write_text(json.dumps({"fingerprint": self.fingerprint}))

    def save_dense(self, ppl: dict[str, float]) -> None:
        _atomic_save({"dense_ppl": ppl}, self.dir / "dense.pt")

    def load_dense(self) -> dict[str, float] | None:
        path = self.dir / "dense.pt"
        return torch.load(path, weights_only=False)["dense_ppl"] if path.is_file() else None

    def save(self, step) -> None:
        """Save a completed state; its carry (if any) first, so a saved state never lacks it."""
        sid = state_id(step.key)
        if step.weights is not None or step.method_state is not None:
            _atomic_save({"weights": step.weights, "method_state": step.method_state}, self.dir / f"{sid}.carry.pt")
        record = {"key": step.key, "ppl": step.ppl, "masks": step.masks, "sparsity": step.sparsity,
                  "seconds": step.seconds}
        _atomic_save(record, self.dir / f"{sid}.pt")

    def drop_carry(self, key: tuple) -> None:
        (self.dir / f"{state_id(key)}.carry.pt").unlink(missing_ok=True)

    def load_all(self, make_step) -> dict[tuple, Any]:
        """Every saved state, rebuilt with ``make_step(record, carry)``."""
        steps = {}
        for path in sorted(self.dir.glob("*.pt")):
            if path.name.endswith(".carry.pt") or path.name == "dense.pt":
                continue
            record = torch.load(path, weights_only=False)
            carry_path = path.with_name(path.stem + ".carry.pt")
            carry = torch.load(carry_path, weights_only=False) if carry_path.is_file() else None
            steps[tuple(record["key"])] = make_step(record, carry)
        return steps
