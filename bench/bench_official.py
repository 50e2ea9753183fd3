"""copal_exp's OWL, RIA and DSnoT against the official code of each, on the same inputs (SmolLM2, CPU).

    .venv/bin/python bench/bench_official.py --owl PATH --ria PATH --dsnot PATH [--nsamples 8] [--seqlen 256]

Each PATH is a clone (or a bare git directory) of the official repository: ``github.com/luuyin/OWL``,
``github.com/biomedical-cybernetics/Relative-importance-and-activation-pruning``, ``github.com/zyxxmu/DSnoT``.
Their ``lib/`` folder is copied into a temporary directory for the run (never into this repository); modules
their ``lib/prune.py`` imports but the repository does not ship (DSnoT's ``save_results``, ``sparsegpt``) are
stubbed, unused by the functions called. Both sides get the same converted SmolLM2 folder, the same
WikiText-2 calibration segments and evaluation windows (written once), each run in its own process
(``official_worker.py``, 2 threads, one at a time). Recorded per configuration: the share of decoder-linear
weights whose pruned/kept state agrees (overall and per layer), per decoder layer the sparsity of both (OWL's
allocation), both perplexities and prune seconds. Writes ``bench/results/official-<commit>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_peer import commit, write_inputs  # noqa: E402

from copal_exp.metrics.transfer import decoder_index  # noqa: E402

#: (config, pattern, λ, M): OWL at the official README's settings (λ 0.08, M 5; N:M: λ 2, M 6)
RUNS = [("wanda", "0.5", 0, 0), ("wanda", "0.7", 0, 0), ("sparsegpt", "0.5", 0, 0),  # uniform references (OWL's repo)
        ("wanda+owl", "0.5", 0.08, 5.0), ("wanda+owl", "0.7", 0.08, 5.0), ("sparsegpt+owl", "0.5", 0.08, 5.0),
        ("wanda+owl-nm", "2:4", 2.0, 6.0), ("ria", "0.5", 0, 0), ("ria", "2:4", 0, 0), ("dsnot", "0.5", 0, 0),
        ("dsnot", "2:4", 0, 0)]
STUBS = {"save_results.py": "def save_time_result(*args, **kwargs):\n    pass\n",
         "sparsegpt.py": "class SparseGPT:  # stub: prune_DSnoT does not use it\n    pass\n"}


def extract(repo: Path, package: str, into: Path) -> None:
    """``repo``'s ``lib/*.py`` as the package ``into/<package>``, missing imports stubbed."""
    target = into / package
    target.mkdir(parents=True)
    bare = (repo / "HEAD").is_file() and not (repo / "lib").is_dir()
    if bare:
        names = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "--name-only", "HEAD", "lib/"],
                               capture_output=True, text=True, check=True).stdout.split()
        for name in names:
            if name.endswith(".py"):
                text = subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{name}"], capture_output=True,
                                      text=True, check=True).stdout
                (target / Path(name).name).write_text(text)
    else:
        for file in (repo / "lib").glob("*.py"):
            (target / file.name).write_text(file.read_text())
    for name, text in STUBS.items():
        if not (target / name).exists():
            (target / name).write_text(text)
    (target / "__init__.py").write_text("")


def compare(official: dict, ours: dict) -> dict:
    agree, total, layers, sparsity = 0, 0, {}, {}
    for name, theirs in official["pruned"].items():
        mine = ours["pruned"][name]
        same = int((theirs == mine).sum())
        agree, total = agree + same, total + theirs.numel()
        layers[name] = same / theirs.numel()
        block = sparsity.setdefault(decoder_index(name), [0, 0, 0])
        block[0] += int(theirs.sum())
        block[1] += int(mine.sum())
        block[2] += theirs.numel()
    first = next((name for name, v in layers.items() if v < 1.0), None)
    return {"agreement": agree / total, "first_differing_linear": first,
            "pruned_official_minus_ours": sum(int(official["pruned"][n].sum()) - int(ours["pruned"][n].sum())
                                              for n in official["pruned"]), "min_layer_agreement": min(layers.values()),
            "layers_identical": sum(v == 1.0 for v in layers.values()), "layers": len(layers),
            "per_layer_agreement": layers,
            "decoder_layer_sparsity": {str(i): {"official": o / n, "ours": m / n} for i, (o, m, n) in sorted(sparsity.items())},
            "ppl": {"official": official["ppl"], "ours": ours["ppl"]},
            "seconds": {"official": official["seconds"], "ours": ours["seconds"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--owl", type=Path, required=True)
    p.add_argument("--ria", type=Path, required=True)
    p.add_argument("--dsnot", type=Path, required=True)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--only", nargs="*", help="config names to run (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for package, repo in (("official_owl", args.owl), ("official_ria", args.ria), ("official_dsnot", args.dsnot)):
            extract(repo, package, tmp)
        inputs = tmp / "inputs.pt"
        model = write_inputs(inputs, args.nsamples, args.seqlen, args.windows)
        for config, pattern, lam, m in RUNS:
            if args.only and config not in args.only:
                continue
            sides = {}
            for side in ("official", "ours"):
                out = tmp / f"{config}-{pattern}-{side}.pt"
                proc = subprocess.run([sys.executable, str(ROOT / "bench" / "official_worker.py"), "--side", side,
                                       "--config", config, "--pattern", pattern, "--lam", str(lam), "--m", str(m),
                                       "--model", str(model), "--inputs", str(inputs), "--official", str(tmp),
                                       "--out", str(out)], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"{side} {config} {pattern} failed:\n{proc.stderr[-4000:]}")
                sides[side] = torch.load(out)
            row = {"config": config, "pattern": pattern, "lambda": lam, "M": m, **compare(sides["official"], sides["ours"])}
            print(f"{config:>14} {pattern:>4}: agreement {row['agreement']:.6f} (min layer {row['min_layer_agreement']:.6f}, "
                  f"{row['layers_identical']}/{row['layers']} identical, first {row['first_differing_linear']}, "
                  f"{row['pruned_official_minus_ours']:+d} pruned), ppl official {row['ppl']['official']:.3f} "
                  f"ours {row['ppl']['ours']:.3f}, s {row['seconds']['official']:.1f} / {row['seconds']['ours']:.1f}",
                  flush=True)
            results.append(row)
    record = {"machine": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch": torch.__version__},
              "commit": commit(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "inputs": {"model": "smollm2_135m", "calibration": f"wikitext2 {args.nsamples} x {args.seqlen}, seed 0",
                         "windows": args.windows},
              "official": {"owl": str(args.owl), "ria": str(args.ria), "dsnot": str(args.dsnot)}, "runs": results}
    path = args.out / f"official-{record['commit']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
