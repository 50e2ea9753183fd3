"""Checkpoint I/O of a carried COPAL state at LLaMA-7B shapes, measured on this machine's disk.

    .venv/bin/python bench/bench_checkpoint.py [--layers 2] [--repeats 3] [--dir DIR]

A carried COPAL state is its accumulated sensitivity G: one float32 per pruned weight, 25.9 GB for
LLaMA-7B (32 decoder layers × 7 linears, 809 MB per layer). This writes the G of ``--layers`` such
layers (random values, real shapes) through the job's own code, three ways, and reads it back:

* ``in memory``: G in host memory (``run.offload.memory=cpu``, the default), checkpointed by the
  background writer into ``states/`` (``torch.save`` through a temporary file, SHA-256 computed while
  writing, ``fsync``, rename);
* ``disk offload``: G written once by the offload store (``run.offload.memory=disk``: one safetensors
  file per linear), then the checkpoint, which only references those files and reads them back once
  for their SHA-256;
* ``resume``: a fresh ``StateStore`` verifies every file against its checksum and loads the state, as
  a resumed job does.

Every write ends with ``fsync``, so the seconds are the disk's, not the page cache's; the read-back
may be served from the page cache (the files were just written), so it is a lower bound. Reports
the median of ``--repeats`` and the extrapolation to 7B (× 32 / layers).
Writes ``bench/results/checkpoint-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from copal_exp.io.checkpoint import StateStore
from copal_exp.io.offload import Offloader
from copal_exp.protocol.states import ModelState, restore_state
from copal_exp.pruning.methods import Memory

ROOT = Path(__file__).resolve().parents[1]
H, I, LAYERS_7B = 4096, 11008, 32
SHAPES = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
          "self_attn.o_proj": (H, H), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def sensitivity(layers: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {f"model.layers.{i}.{sub}": torch.rand(shape, generator=gen) for i in range(layers)
            for sub, shape in SHAPES.items()}


def state(key: tuple, memory: Memory) -> ModelState:
    masks = {name: np.zeros(1, dtype=np.uint8) for name in memory.tensors}
    return ModelState(key, {"wikitext2": 10.0}, masks, {"overall": 0.5}, {}, memory=memory)


def one_repeat(g: dict[str, torch.Tensor], folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    store = StateStore(folder / "in_memory")
    store.initialise({})
    start = time.perf_counter()
    store.save(state(("wikitext2",), Memory(dict(g), steps=1)))
    store.flush()
    out["in_memory_write_s"] = time.perf_counter() - start
    out["in_memory_bytes"] = store.written["bytes"]

    store = StateStore(folder / "offloaded")
    store.initialise({})
    offload = Offloader("disk", "cpu", folder / "offload")
    start = time.perf_counter()
    handles = {name: offload.store(tensor, name) for name, tensor in g.items()}
    os.sync()  # safetensors does not fsync: count the flush to disk
    out["offload_write_s"] = time.perf_counter() - start
    start = time.perf_counter()
    store.save(state(("wikitext2",), Memory(handles, steps=1)))
    store.flush()
    out["offload_checkpoint_s"] = time.perf_counter() - start  # the reference: SHA-256 of the offload files

    start = time.perf_counter()
    restored = StateStore(folder / "in_memory").load_all(restore_state)
    out["resume_read_s"] = time.perf_counter() - start
    assert torch.equal(next(iter(restored.values())).memory.tensors[next(iter(g))], next(iter(g.values())))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2, help="LLaMA-7B decoder layers of G to write (809 MB each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder on /tmp's disk)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    g = sensitivity(args.layers)
    gb = sum(t.numel() * 4 for t in g.values()) / 1e9
    runs = []
    for repeat in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
        try:
            runs.append(one_repeat(g, folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items() if k.endswith("_s")))
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    scale = LAYERS_7B / args.layers
    summary = {"g_gb": round(gb, 3), **{k: round(v, 3) for k, v in median.items()},
               "in_memory_gb_per_s": round(gb / median["in_memory_write_s"], 3),
               "offload_gb_per_s": round(gb / median["offload_write_s"], 3),
               "7b_in_memory_checkpoint_s": round(median["in_memory_write_s"] * scale, 1),
               "7b_offload_write_s": round(median["offload_write_s"] * scale, 1),
               "7b_offload_checkpoint_s": round(median["offload_checkpoint_s"] * scale, 1),
               "7b_resume_read_s": round(median["resume_read_s"] * scale, 1)}
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "commit": commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "layers": args.layers,
              "repeats": runs, "median": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"checkpoint-{commit()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
