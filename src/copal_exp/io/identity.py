"""What identifies a job's results: its resolved config without the keys that do not change them, with
paths normalised. One notion shared by resume (a job directory accepts only its own configuration)
and reports (jobs that differ only in ``order.index`` are one run). The shared dense-perplexity cache
is keyed more strictly (the model section, the device, the evaluation batch size and the exact
evaluation tokens, :meth:`copal_exp.protocol.evaluator.Evaluator.cache_path`): device and batching change
floating-point rounding, which a resumed job may absorb but a cache shared by many jobs should not."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: keys that do not change what a job computes: ignored when a job directory's configuration is compared
#: (resume), and when a report groups jobs. ``None`` means the whole group.
NEUTRAL_KEYS: dict[str, tuple[str, ...] | None] = {
    "run": ("progress", "device", "resident", "dense_cache", "offload", "threads"),
    "logger": None,
    "eval": ("batch_size", "layerwise"),
    "data": ("token_cache", "demo_root"),
    "state": ("export",),
}
#: keys holding filesystem paths, compared after normalisation (``~``, relative parts, trailing slashes)
PATH_KEYS = (("data", "root"), ("state", "load"), ("model", "cache_dir"))


def normalise_path(value: Any) -> Any:
    """A path as the filesystem sees it: ``~`` expanded, absolute, no trailing slash or ``..`` parts."""
    if not isinstance(value, str) or not value:
        return value
    return os.path.normpath(os.path.abspath(os.path.expanduser(value)))


def result_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what a job computes, with paths normalised.

    Used to compare a job directory's configuration with a new run's, and to group jobs in reports.
    """
    from copal_exp.io.paths import default_root

    cfg = json.loads(json.dumps(resolved, default=str))
    cfg.pop("hydra", None)
    for group, keys in NEUTRAL_KEYS.items():
        if keys is None:
            cfg.pop(group, None)
        elif isinstance(cfg.get(group), dict):
            for key in keys:
                cfg[group].pop(key, None)
    data = cfg.get("data")
    if isinstance(data, dict) and data.get("root") is None:
        root = default_root()
        data["root"] = str(root) if root else None
    for group, key in PATH_KEYS:
        if isinstance(cfg.get(group), dict) and key in cfg[group]:
            cfg[group][key] = normalise_path(cfg[group][key])
    model = cfg.get("model")
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        local = Path(model["name_or_path"]).expanduser()
        if model["name_or_path"].startswith((".", "/", "~")) or local.exists():
            model["name_or_path"] = normalise_path(model["name_or_path"])
    return cfg


#: elements of each weight matrix a fingerprint reads (evenly strided): cheap on a 65B model, and a
#: different checkpoint or a replaced file changes it with near certainty
FINGERPRINT_ELEMENTS = 1 << 16


def weights_fingerprint(weights: dict[str, Any]) -> str:
    """SHA-256 over every layer's name, shape, dtype and an even stride of its elements (the dense weights a
    job starts from): the model identity a job directory's states are tied to, checked on every resume and
    export, so it reads a strided sample rather than every byte. An exported continual state, which travels to
    other machines and jobs, carries the full SHA-256 instead (``protocol.continual.model_identity``)."""
    digest = hashlib.sha256()
    for name, weight in weights.items():
        flat = weight.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_ELEMENTS)
        digest.update(f"{name}:{tuple(weight.shape)}:{weight.dtype}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())  # exact for every float dtype
    return digest.hexdigest()


def tokens_digest(tokens) -> str:
    """SHA-256 of a token tensor's ids and shape (the exact segments or windows a job computes on)."""
    digest = hashlib.sha256(str(tuple(tokens.shape)).encode())
    digest.update(tokens.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def input_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records of a job's inputs (model fingerprint; each dataset's calibration
    and evaluation tokens, with the file they came from), one line each."""
    lines = []
    if old.get("model") != new.get("model"):
        lines.append(f"the model's weights differ (fingerprint {str(old.get('model'))[:12]}… recorded, "
                     f"{str(new.get('model'))[:12]}… now)")
    for dataset in sorted(set(old.get("data", {})) | set(new.get("data", {}))):
        before, now = old.get("data", {}).get(dataset, {}), new.get("data", {}).get(dataset, {})
        for role in ("calibration", "evaluation"):
            a, b = before.get(role) or {}, now.get(role) or {}
            if a.get("tokens") != b.get("tokens"):
                where = b.get("location") or a.get("location") or "its source"
                lines.append(f"{dataset} {role}: the tokens read from {where} differ from those the states were "
                             "computed on (the file was changed or replaced, or the tokenizer differs)")
    return lines
