"""The memory plan of a job: host, GPU and disk bytes it will need, computed before the model loads.

From the model's config (built on the meta device: exact shapes, no weights), the method's declared
per-linear bytes (``statistics_bytes``, ``working_bytes``, ``memory_bytes``), the schedule (how many
carried states are alive at once), the calibration and evaluation sizes and the offload settings.
A job whose plan cannot fit on this machine is refused with the setting to change; the plan is
logged and recorded in ``results.json`` beside the measured peak.
"""

from __future__ import annotations

import math
import resource
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from copal_exp.anatomy import (
    Selection,
    decoder_layers,
    layer_prefix,
    prunable_linears,
    weight_matrix,
)
from copal_exp.errors import ConfigError
from copal_exp.methods import method_class
from copal_exp.plan import Plan, make_plan

GIB = 1024**3


def size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.1f} MiB"


@dataclass
class Need:
    what: str
    where: str  # host | gpu | disk
    bytes: int
    setting: str = ""  # what to change when it does not fit


@dataclass
class MemoryPlan:
    needs: list[Need] = field(default_factory=list)

    def total(self, where: str) -> int:
        return sum(n.bytes for n in self.needs if n.where == where)

    def table(self) -> str:
        lines = [f"{'where':<5} {'size':>10}  what"]
        for n in sorted(self.needs, key=lambda n: ("host", "gpu", "disk").index(n.where)):
            if n.bytes:
                lines.append(f"{n.where:<5} {size(n.bytes):>10}  {n.what}")
        lines += [f"{w:<5} {size(self.total(w)):>10}  total" for w in ("host", "gpu", "disk") if self.total(w)]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        return {"host_bytes": self.total("host"), "gpu_bytes": self.total("gpu"), "disk_bytes": self.total("disk"),
                "needs": [asdict(n) for n in self.needs if n.bytes]}

    def check(self, host_bytes: int, gpu_bytes: int | None, disk_bytes: int | None) -> None:
        """Refuse (:class:`ConfigError`) when a total exceeds what the machine has, naming the settings
        that would reduce the largest needs there."""
        for where, have in (("host", host_bytes), ("gpu", gpu_bytes), ("disk", disk_bytes)):
            need = self.total(where)
            if have is None or need <= have:
                continue
            big = sorted((n for n in self.needs if n.where == where and n.bytes), key=lambda n: -n.bytes)[:3]
            hints = "; ".join(f"{n.what} {n.bytes / GIB:.1f} GiB" + (f" ({n.setting})" if n.setting else "")
                              for n in big)
            raise ConfigError(f"memory plan: this job needs {need / GIB:.1f} GiB of {where} memory, this machine has "
                              f"{have / GIB:.1f} GiB. Largest: {hints}")


def peak_carries(plan: Plan) -> int:
    """Most carried states (weights or memory) alive at once, the one being built included."""
    live: dict[tuple, int] = {}
    peak, done = 0, set()
    for keys in plan.keys:
        for key in keys:
            if key in done:
                continue
            peak = max(peak, len(live) + 1)
            done.add(key)
            parent = plan.parents.get(key)
            if plan.children.get(key):
                live[key] = plan.children[key]
            if parent in live:
                live[parent] -= 1
                if live[parent] == 0:
                    del live[parent]
    return peak


def meta_model(config) -> torch.nn.Module:
    """The model of ``config`` (a transformers config) with every tensor on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def plan_memory(model: torch.nn.Module, settings, dtype: torch.dtype, device: str, baseline: int = 0,
                eval_windows: int = 0) -> MemoryPlan:
    """The plan of ``settings``'s job on ``model`` (meta or real) in ``dtype`` on ``device``; ``baseline``
    is what the process holds before the model loads, ``eval_windows`` the most windows of a dataset."""
    run, offload = settings.run, settings.run.get("offload") or {}
    method = method_class(settings.method)
    item = torch.empty((), dtype=dtype).element_size()
    gpu = str(device).startswith("cuda")
    place = {"device": "gpu" if gpu else "host", "cpu": "host", "disk": "disk"}
    compute = "gpu" if gpu else "host"
    linears = prunable_linears(model, Selection.from_config(settings.resolved.get("prune")))
    shapes = {name: tuple(weight_matrix(lin).shape) for name, lin in linears.items()}
    prunable = sum(o * i for o, i in shapes.values())
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    hidden, vocab = int(config.hidden_size), int(config.vocab_size)
    seqlen, nsamples = int(settings.data["seqlen"]), int(settings.data["nsamples"])
    layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in decoder_layers(model))
    prefix = layer_prefix(model)
    per_layer: dict[str, list[tuple[int, int]]] = {}
    for name, shape in shapes.items():
        per_layer.setdefault(name[len(prefix) + 1:].split(".")[0], []).append(shape)
    p = MemoryPlan([Need("process before the model (Python, torch, libraries, data)", "host", baseline),
                    Need("model weights", "host", params * item)])
    if method.prunes:
        order_plan = make_plan(settings.orders, method.carries_memory or settings.init == "sequential",
                               bool(run.get("planner", True)))
        carries = peak_carries(order_plan)
        layer_statistics = max((sum(method.statistics_bytes(o, i) for o, i in layer) for layer in per_layer.values()),
                               default=0)
        if method.carries_memory and place[offload.get("memory", "cpu")] == compute:
            layer_statistics = 0  # they become the new memory where they are: counted with the carried states
        p.needs += [
            Need("dense copy of the pruned weights", "host", prunable * item),
            Need("calibration activations (in and out of a layer)", place[offload.get("activations", "cpu")],
                 2 * nsamples * seqlen * hidden * item, "run.offload.activations=disk"),
            Need("statistics of one decoder layer", compute, layer_statistics),
            Need("one linear's pruning work", compute, max((method.working_bytes(o, i) for o, i in shapes.values()), default=0)),
            Need("bit-packed masks (this step, and two states for a mask change)", "host", 3 * math.ceil(prunable / 8)),
            Need("bit-packed masks of every state (states/)", "disk", order_plan.prune_steps * math.ceil(prunable / 8)),
        ]
        if gpu:
            p.needs.append(Need("the decoder layer being pruned", "gpu", layer_params * item))
        memory = sum(method.memory_bytes(o, i) for o, i in shapes.values())
        if memory:
            where = place[offload.get("memory", "cpu")]
            p.needs.append(Need(f"{method.name} memory of {carries} carried state(s)", where, carries * memory,
                                "run.offload.memory=disk"))
            if where != "disk":  # checkpointed into states/ (a disk-offloaded memory is referenced, not copied)
                p.needs.append(Need(f"{method.name} memory checkpoints (states/)", "disk", max(carries - 1, 0) * memory))
        if settings.init == "sequential":
            p.needs += [Need(f"pruned weights of {carries} carried state(s)", "host", carries * prunable * item),
                        Need("pruned-weight checkpoints (states/)", "disk", max(carries - 1, 0) * prunable * item)]
    batch = int(settings.eval.get("batch_size", 1))
    logits = 3 * batch * seqlen * vocab * 4  # logits, their float32 copy and the log-softmax
    if bool(settings.eval.get("layerwise", False)):
        p.needs.append(Need("layer-wise evaluation: hidden states of every window", "host",
                            eval_windows * seqlen * hidden * item))
        if gpu:
            p.needs.append(Need("layer-wise evaluation: one layer, norm and LM head", "gpu",
                                (layer_params + hidden * vocab) * item))
    elif gpu:
        p.needs.append(Need("the whole model during evaluation", "gpu", params * item, "eval.layerwise=true"))
    p.needs.append(Need(f"evaluation logits ({batch} window(s) per pass)", compute, logits, "eval.batch_size=1"))
    return p


def machine_limits(device: str, folder: Path) -> tuple[int, int | None, int | None]:
    """Host memory, GPU memory (``None`` without CUDA) and free disk space under ``folder``."""
    import os

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu = torch.cuda.get_device_properties(torch.device(device)).total_memory if str(device).startswith("cuda") else None
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return host, gpu, shutil.disk_usage(folder).free


def plan_for_job(settings, device: str, eval_windows: int, job_dir: Path) -> MemoryPlan:
    """The job's plan before its model loads (logged), refused when it cannot fit on this machine."""
    import logging

    from copal_exp.models import model_config, torch_dtype

    plan = plan_memory(meta_model(model_config(settings.model)), settings, torch_dtype(settings.model, device), device,
                       baseline=rss_bytes(), eval_windows=eval_windows)
    logging.getLogger(__name__).info("memory plan (%s):\n%s", device, plan.table())
    folder = Path((settings.run.get("offload") or {}).get("dir") or job_dir)
    plan.check(*machine_limits(device, folder))
    return plan
