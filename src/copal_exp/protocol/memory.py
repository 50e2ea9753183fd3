"""The memory plan of a job: host, GPU and disk bytes it will need, computed before the model loads.

From the model's config (built on the meta device: exact shapes, no weights), the method's declared
per-linear bytes (``statistics_bytes``, ``working_bytes``, ``memory_bytes``), the schedule (how many
carried states are alive at once), the calibration and evaluation sizes and the offload settings.
A job whose plan cannot fit on this machine is refused with the setting to change; the plan is
logged and recorded in ``results.json`` beside the measured peak.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from copal_exp.errors import ConfigError
from copal_exp.models.anatomy import (
    decoder_layers,
    layer_prefix,
    prunable_linears,
    weight_matrix,
)

GIB = 1024**3
RESIDENT_SHARE = 0.9  # of the GPU's memory a job keeping its whole model there may plan to use


def size(n: int) -> str:
    """Bytes in the unit that shows them: GiB, MiB, KiB or B."""
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class Need:
    what: str
    where: str  # host | gpu | disk
    bytes: int
    setting: str = ""  # what to change when it does not fit


@dataclass
class MemoryPlan:
    needs: list[Need] = field(default_factory=list)
    resident: bool = False  # the whole model kept on the GPU for the job (run.resident)
    memory_place: str = "cpu"  # where a method's memory waits between steps (run.offload.memory, auto resolved)

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
                "resident": self.resident, "memory_place": self.memory_place, "needs": [asdict(n) for n in self.needs if n.bytes]}

    def check(self, host_bytes: int, gpu_bytes: int | None, disk_bytes: int | None,
              disk_folder: Path | None = None) -> None:
        """Refuse (:class:`ConfigError`) when a total exceeds what the machine has, naming the settings
        that would reduce the largest needs there (and, for disk, the folder whose free space was read)."""
        for where, have in (("host", host_bytes), ("gpu", gpu_bytes), ("disk", disk_bytes)):
            need = self.total(where)
            if have is None or need <= have:
                continue
            big = sorted((n for n in self.needs if n.where == where and n.bytes), key=lambda n: -n.bytes)[:3]
            hints = "; ".join(f"{n.what} {size(n.bytes)}" + (f" ({n.setting})" if n.setting else "")
                              for n in big)
            place = f"{where} memory" if where != "disk" else \
                f"disk space{f' under {disk_folder}' if disk_folder is not None else ''}"
            raise ConfigError(f"memory plan: this job needs {size(need)} of {place}, this machine has "
                              f"{size(have)}. Largest: {hints}")


def plan_memory(model: torch.nn.Module, settings, dtype: torch.dtype, device: str, baseline: int = 0,
                eval_windows: int = 0, resident: bool = False, memory_on: str | None = None) -> MemoryPlan:
    """The plan of ``settings``'s job on ``model`` (meta or real) in ``dtype`` on ``device``; ``baseline``
    is what the process holds before the model loads, ``eval_windows`` the most windows of a dataset,
    ``resident`` whether the whole model stays on the GPU for the job, ``memory_on`` where a method's memory
    waits (default: :func:`memory_place` without the device)."""
    memory_on = memory_on or memory_place(settings, resident)
    method = settings.method_class
    item = torch.empty((), dtype=dtype).element_size()
    gpu = str(device).startswith("cuda")
    place = {"device": "gpu" if gpu else "host", "cpu": "host", "disk": "disk"}
    compute = "gpu" if gpu else "host"
    linears = prunable_linears(model, settings.selection)
    shapes = {name: tuple(weight_matrix(lin).shape) for name, lin in linears.items()}
    prunable = sum(o * i for o, i in shapes.values())
    params = sum(p.numel() for p in model.parameters())
    config = model.config
    hidden, vocab = int(config.hidden_size), int(config.vocab_size)
    seqlen, nsamples = settings.data.seqlen, settings.data.nsamples
    layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in decoder_layers(model))
    prefix = layer_prefix(model)
    per_layer: dict[str, list[tuple[int, int]]] = {}
    for name, shape in shapes.items():
        per_layer.setdefault(name[len(prefix) + 1:].split(".")[0], []).append(shape)
    resident = resident and gpu
    activations = activations_place(settings, resident)
    p = MemoryPlan([Need("process before the model (Python, torch, libraries, data)", "host", baseline),
                    Need("model weights" + (" (loaded on the host, then moved)" if resident else ""), "host",
                         params * item)], resident=resident, memory_place=memory_on)
    if resident:
        p.needs.append(Need("the whole model, kept on the GPU for the job", "gpu", params * item, "run.resident=false"))
    if method.prunes:
        order_plan = settings.state_plan()
        carries = order_plan.peak_carries()
        layer_statistics = max((sum(method.statistics_bytes(o, i) for o, i in layer) for layer in per_layer.values()),
                               default=0)
        if method.carries_memory and place[memory_on] == compute:
            layer_statistics = 0  # they become the new memory where they are: counted with the carried states
        p.needs += [
            Need("dense copy of the pruned weights", "host", prunable * item),
            Need("calibration activations (in and out of a layer)", place[activations],
                 2 * nsamples * seqlen * hidden * item, "run.offload.activations=disk"),
            Need("statistics of one decoder layer", compute, layer_statistics),
            Need("one linear's pruning work", compute, max((method.working_bytes(o, i) for o, i in shapes.values()), default=0)),
            Need("bit-packed masks (this step, and two states for a mask change)", "host", 3 * math.ceil(prunable / 8)),
            Need("bit-packed masks of every state (states/)", "disk", order_plan.prune_steps * math.ceil(prunable / 8)),
        ]
        if gpu and not resident:
            p.needs.append(Need("the decoder layer being pruned", "gpu", layer_params * item))
        memory = sum(method.memory_bytes(o, i) for o, i in shapes.values())
        if memory:
            where = place[memory_on]
            p.needs.append(Need(f"{method.name} memory of {carries} carried state(s)", where, carries * memory,
                                "run.offload.memory=disk"))
            if where != "disk":  # checkpointed into states/ (a disk-offloaded memory is referenced, not copied)
                p.needs.append(Need(f"{method.name} memory checkpoints (states/)", "disk", max(carries - 1, 0) * memory))
        if settings.init == "sequential":
            p.needs += [Need(f"pruned weights of {carries} carried state(s)", "host", carries * prunable * item),
                        Need("pruned-weight checkpoints (states/)", "disk", max(carries - 1, 0) * prunable * item)]
    batch = settings.eval.batch_size
    logits = 3 * batch * seqlen * vocab * 4  # logits, their float32 copy and the log-softmax
    if settings.eval.layerwise:
        p.needs.append(Need("layer-wise evaluation: hidden states of every window", "host",
                            eval_windows * seqlen * hidden * item))
        if gpu and not resident:
            p.needs.append(Need("layer-wise evaluation: one layer, norm and LM head", "gpu",
                                (layer_params + hidden * vocab) * item))
    elif gpu and not resident:
        p.needs.append(Need("the whole model during evaluation", "gpu", params * item, "eval.layerwise=true"))
    p.needs.append(Need(f"evaluation logits ({batch} window(s) per pass)", compute, logits, "eval.batch_size=1"))
    return p


def activations_place(settings, resident: bool) -> str:
    """Where calibration activations wait between layers: ``run.offload.activations``, where ``auto`` is the
    device for a model kept there and the host otherwise."""
    place = settings.run.offload.activations
    return ("device" if resident else "cpu") if place == "auto" else place


def memory_place(settings, resident: bool, fits_on_device: bool = False) -> str:
    """Where a method's memory (COPAL's G) waits between steps: ``run.offload.memory``, where ``auto`` is the
    device for a model kept there whose plan still fits with the memory there too, and the host otherwise."""
    place = settings.run.offload.memory
    return ("device" if resident and fits_on_device else "cpu") if place == "auto" else place


def choose_resident(model: torch.nn.Module, settings, dtype: torch.dtype, device: str, gpu_bytes: int | None,
                    baseline: int = 0, eval_windows: int = 0) -> bool:
    """Whether the whole model stays on the GPU for the job: ``run.resident`` when set, else when the plan
    with the model kept there needs at most :data:`RESIDENT_SHARE` of the GPU's memory (the rest is for
    the CUDA context and the allocator). Never on a CPU, where the model is always where it computes."""
    if not str(device).startswith("cuda"):
        return False
    wanted = settings.run.resident
    if wanted is not None:
        return bool(wanted)
    trial = plan_memory(model, settings, dtype, device, baseline, eval_windows, resident=True)
    return gpu_bytes is not None and trial.total("gpu") <= RESIDENT_SHARE * gpu_bytes


def choose_memory_place(model: torch.nn.Module, settings, dtype: torch.dtype, device: str, gpu_bytes: int | None,
                        resident: bool, baseline: int = 0, eval_windows: int = 0) -> str:
    """Where a method's memory waits between steps (:func:`memory_place`): for ``run.offload.memory=auto``
    the device when the model is kept there and the plan with every carried memory on the GPU too needs at
    most :data:`RESIDENT_SHARE` of its memory, else the host."""
    fits = False
    if resident and settings.run.offload.memory == "auto" and settings.method_class.carries_memory:
        trial = plan_memory(model, settings, dtype, device, baseline, eval_windows, resident, memory_on="device")
        fits = gpu_bytes is not None and trial.total("gpu") <= RESIDENT_SHARE * gpu_bytes
    return memory_place(settings, resident, fits)


def plan_for_job(settings, device: str, eval_windows: int, job_dir: Path) -> MemoryPlan:
    """The job's plan before its model loads (logged), with the residency decided; refused when it cannot
    fit on this machine."""
    from copal_exp.models.loading import meta_model, model_config, torch_dtype

    model, dtype, baseline = meta_model(model_config(settings.model)), torch_dtype(settings.model, device), rss_bytes()
    folder = Path(settings.run.offload.dir or job_dir)
    limits = machine_limits(device, folder)
    resident = choose_resident(model, settings, dtype, device, limits[1], baseline, eval_windows)
    memory_on = choose_memory_place(model, settings, dtype, device, limits[1], resident, baseline, eval_windows)
    plan = plan_memory(model, settings, dtype, device, baseline, eval_windows, resident, memory_on)
    kept = ", model kept on the device" if resident else ""
    kept += f", {settings.method_class.name} memory on the device" if plan.memory_place == "device" and resident else ""
    logging.getLogger(__name__).info("memory plan (%s%s):\n%s", device, kept, plan.table())
    plan.check(*limits, disk_folder=folder)
    return plan


# What this machine has and what this process holds (Linux /proc and getrusage).
def rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_limits(device: str, folder: Path) -> tuple[int, int | None, int | None]:
    """Host memory, GPU memory (``None`` without CUDA) and free disk space under ``folder``."""
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu = torch.cuda.get_device_properties(torch.device(device)).total_memory if str(device).startswith("cuda") else None
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return host, gpu, shutil.disk_usage(folder).free
