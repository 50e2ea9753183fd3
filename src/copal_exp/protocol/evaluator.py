"""One evaluation round: the perplexity of the current model on every dataset of the job, and the
dense model's perplexities, shared between jobs through a checksummed cache."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from copal_exp.data import DatasetSplits
from copal_exp.errors import IntegrityError, NonFiniteError
from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise
from copal_exp.io.offload import resident, return_freed_memory
from copal_exp.io.paths import dense_cache_dir
from copal_exp.io.storage import read_json, write_json

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(self, model, data: dict[str, DatasetSplits], device: str, batch_size: int = 1,
                 layerwise: bool = False, progress: bool = True, timer=None):
        self.model, self.data, self.device = model, data, device
        self.batch_size, self.layerwise, self.progress = batch_size, layerwise, progress
        self.timer = timer

    def round(self, label: str) -> dict[str, float]:
        """Perplexity on every dataset; the model visits the device once for the round (or layer-wise)."""
        ppl = {}
        timing = self.timer("evaluation") if self.timer else nullcontext()
        with timing, (nullcontext() if self.layerwise else resident(self.model, self.device)):
            for name, split in self.data.items():
                if self.layerwise:
                    ppl[name] = perplexity_layerwise(self.model, split.evaluation, self.device, self.progress,
                                                     f"{label} eval {name}")
                else:
                    ppl[name] = perplexity(self.model, split.evaluation, self.device, self.batch_size,
                                           self.progress, f"{label} eval {name}")
                return_freed_memory()  # the logits' memory back to the OS, not kept in the heap
                if not np.isfinite(ppl[name]):
                    dtype = next(self.model.parameters()).dtype
                    hint = (f"; the model runs in {dtype} on {self.device}: try model.dtype=float32 (or bfloat16)"
                            if dtype in (torch.float16, torch.bfloat16) else "")
                    raise NonFiniteError(f"{label}: perplexity on {name} is {ppl[name]}{hint}")
        return ppl

    def cache_path(self, model_cfg: dict[str, Any]) -> Path:
        """The dense cache entry: keyed by the model config (with its weights' fingerprint), device, batch size and
        the exact evaluation tokens."""
        digest = hashlib.sha256(json.dumps({"model": model_cfg, "device": self.device, "batch": self.batch_size},
                                           sort_keys=True, default=str).encode())
        for name, split in self.data.items():
            digest.update(name.encode())
            digest.update(split.evaluation.numpy().tobytes())
        return dense_cache_dir() / f"{model_cfg['name']}-{digest.hexdigest()[:20]}.json"

    def dense(self, model_cfg: dict[str, Any], use_cache: bool) -> tuple[dict[str, float], str]:
        """The dense model's perplexities and where they came from (``computed`` or ``hit: <file>``)."""
        cache = self.cache_path(model_cfg) if use_cache else None
        cached = read_dense_cache(cache) if cache is not None else None
        if cached is not None:
            log.info("dense perplexities from the cache %s", cache)
            return cached, f"hit: {cache}"
        ppl = self.round("dense")
        if cache is not None:
            try:
                write_json(cache, {"dense_ppl": ppl, "model": model_cfg})
            except OSError as exc:  # a cache is a convenience: a read-only or full one never stops the job
                log.warning("the dense-perplexity cache %s cannot be written (%s): the job goes on without it "
                            "(run.dense_cache=false turns it off)", cache.parent, getattr(exc, "problem", None) or exc)
        return ppl, "computed"


def read_dense_cache(cache: Path) -> dict[str, float] | None:
    """Dense perplexities from the shared cache; a damaged entry is reported, removed and recomputed."""
    if not cache.is_file():
        return None
    try:
        return read_json(cache, "")["dense_ppl"]
    except (IntegrityError, KeyError) as exc:
        log.warning("ignoring the damaged dense-cache entry %s (%s); recomputing it", cache, exc)
        cache.unlink(missing_ok=True)
        return None


class TaskScorer:
    """Zero-shot accuracy of the current model through lm-evaluation-harness (``eval.tasks``); the dense model's
    once per sweep through a checksummed cache beside the dense perplexities."""

    def __init__(self, model, tokenizer, tasks: list[str], limit: int | None, source: str, device: str,
                 batch_size: int = 1, timer=None):
        self.model, self.tokenizer, self.tasks = model, tokenizer, tasks
        self.limit, self.source, self.device, self.batch_size, self.timer = limit, source, device, batch_size, timer

    def score(self, label: str) -> dict[str, dict[str, Any]]:
        from copal_exp.evaluation.zeroshot.harness import evaluate

        log.info("%s: zero-shot tasks %s (limit %s)", label, ", ".join(self.tasks), self.limit)
        timing = self.timer("zeroshot") if self.timer else nullcontext()
        with timing, resident(self.model, self.device):
            scores = evaluate(self.model, self.tokenizer, self.tasks, limit=self.limit, device=self.device,
                              batch_size=self.batch_size, source=self.source)
        log.info("%s: zero-shot %s", label, {t: round(s.get("acc_norm") or s["acc"], 4) for t, s in scores.items()})
        return scores

    def cache_path(self, model_cfg: dict[str, Any]) -> Path:
        from copal_exp.evaluation.zeroshot.harness import harness_version

        key = {"model": model_cfg, "device": self.device, "batch": self.batch_size, "tasks": self.tasks,
               "limit": self.limit, "source": self.source, "harness": harness_version()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return dense_cache_dir() / f"{model_cfg['name']}-zeroshot-{digest}.json"

    def dense(self, model_cfg: dict[str, Any], use_cache: bool) -> dict[str, dict[str, Any]]:
        cache = self.cache_path(model_cfg) if use_cache else None
        if cache is not None and cache.is_file():
            try:
                scores = read_json(cache, "")["zeroshot"]
                log.info("dense zero-shot accuracy from the cache %s", cache)
                return scores
            except (IntegrityError, KeyError) as exc:
                log.warning("ignoring the damaged dense-cache entry %s (%s); recomputing it", cache, exc)
                cache.unlink(missing_ok=True)
        scores = self.score("dense")
        if cache is not None:
            try:
                write_json(cache, {"zeroshot": scores, "model": model_cfg})
            except OSError as exc:
                log.warning("the dense zero-shot cache %s cannot be written (%s): the job goes on without it",
                            cache.parent, getattr(exc, "problem", None) or exc)
        return scores
