"""Zero-shot accuracy against perplexity evaluation on SmolLM2 (CPU): tokens per second of each.

    .venv/bin/python bench/bench_zeroshot.py [--limit 20] [--windows 16] [--repeats 3]

Perplexity: ``perplexity`` over ``--windows`` WikiText-2 windows of 256 tokens. Zero-shot:
``harness.evaluate`` (lm-evaluation-harness on the model in memory) on the seven ``wanda7`` tasks with
``limit`` examples each, at batch size 1 and 8; the tokens it runs are counted at the model's forward
(every ``input_ids`` entry the harness feeds, its padding included; at batch size 1 there is none, so that
count is the real tokens of both). Median seconds
of ``--repeats`` after one warm-up run each (``bench/timing.py``). Writes ``bench/results/zeroshot-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_eval import SMOLLM2  # noqa: E402
from bench_peer import commit  # noqa: E402
from timing import median_seconds  # noqa: E402

from copal_exp.data import load_dataset_splits  # noqa: E402
from copal_exp.evaluation.perplexity import perplexity  # noqa: E402
from copal_exp.evaluation.zeroshot import harness  # noqa: E402
from copal_exp.evaluation.zeroshot.tasks import TASK_SETS  # noqa: E402
from copal_exp.io.paths import default_root  # noqa: E402
from copal_exp.models.loading import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer = load_model(SMOLLM2)
    model.eval()
    windows = load_dataset_splits("wikitext2", tokenizer, root=default_root(), nsamples=1, seqlen=256, seed=0,
                                  max_windows=args.windows).evaluation
    ppl_seconds = median_seconds(lambda: perplexity(model, windows), args.repeats, warmup=1)
    tasks = list(TASK_SETS["wanda7"])
    counts = {"fed": 0, "forwards": 0}

    def count(module, call_args, call_kwargs):
        ids = call_args[0] if call_args else call_kwargs.get("input_ids")
        counts["fed"] += ids.numel()
        counts["forwards"] += 1

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    zeroshot = {}
    for batch in (1, 8):
        counts.update(fed=0, forwards=0)
        seconds = median_seconds(lambda b=batch: harness.evaluate(model, tokenizer, tasks, limit=args.limit, device="cpu",
                                                                  batch_size=b), args.repeats, warmup=1)
        runs = args.repeats + 1  # median_seconds' warm-up and the timed repeats, each the same requests
        per_run = {key: value // runs for key, value in counts.items()}
        per_run["real"] = zeroshot["batch_1"]["fed"] if batch > 1 else per_run["fed"]  # batch 1 pads nothing
        zeroshot[f"batch_{batch}"] = {"seconds": seconds, **per_run, "tokens_per_s": per_run["fed"] / seconds,
                                      "real_tokens_per_s": per_run["real"] / seconds}
        print(f"zero-shot batch {batch}: {seconds:.1f} s, {per_run['forwards']} forwards, {per_run['fed']} tokens fed "
              f"({per_run['real']} real): {per_run['fed'] / seconds:.0f} tokens/s", flush=True)
    handle.remove()
    tokens = windows.numel()
    print(f"perplexity: {ppl_seconds:.2f} s for {tokens} tokens: {tokens / ppl_seconds:.0f} tokens/s")
    record = {"machine": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__},
              "commit": commit(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
              "perplexity": {"windows": args.windows, "seqlen": 256, "seconds": ppl_seconds, "tokens": tokens,
                             "tokens_per_s": tokens / ppl_seconds},
              "zeroshot": {"tasks": tasks, "limit": args.limit, **zeroshot}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"zeroshot-{record['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
