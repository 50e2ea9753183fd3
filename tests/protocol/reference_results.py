"""Reference numbers recorded before a refactoring, and the jobs that reproduce them.

    python tests/protocol/reference_results.py record   # writes tests/protocol/reference_results.json

``test_reference_results.py`` re-runs the same jobs and compares every perplexity, BWT, mask change
and sparsity with the recorded ones: a redesign that changes any number fails it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = HERE / "reference_results.json"
TINY_NO_CACHE = ["run.dense_cache=false"]
JOBS = {
    "dense": ["method=dense"],
    "magnitude-global": ["method=magnitude"],
    "magnitude-sequential": ["method=magnitude", "method.init=sequential"],
    "wanda-global": ["method=wanda"],
    "wanda-sequential": ["method=wanda", "method.init=sequential"],
    "wanda-2:4": ["method=wanda", "sparsity=2:4"],
    "sparsegpt-global": ["method=sparsegpt"],
    "sparsegpt-sequential": ["method=sparsegpt", "method.init=sequential"],
    "sparsegpt-4:8": ["method=sparsegpt", "sparsity=4:8"],
    "copal-token-row": ["method=copal"],
    "copal-segment-layer": ["method=copal", "method.granularity=segment", "method.group=layer"],
    "copal-2:4": ["method=copal", "sparsity=2:4"],
    "copal-no-planner": ["method=copal", "run.planner=false", "sparsity.ratio=0.7"],
}


def numbers(results: dict) -> dict:
    """What a refactoring must not change."""
    return {"dense_ppl": results["dense_ppl"], "summary": results.get("summary"),
            "weight_stasis": results.get("weight_stasis"), "per_dataset": results.get("per_dataset"),
            "sparsity": (results.get("sparsity") or {}).get("overall"),
            # the plan's counts (its `orders` record, added later, describes and is tested elsewhere)
            "plan": {k: v for k, v in (results.get("plan") or {}).items() if k != "orders"},
            "permutations": [{k: p[k] for k in ("order", "ppl_matrix", "bwt", "mask_change", "sparsity")}
                             for p in results["permutations"]]}


def run_reference_jobs(data_root: Path, workdir: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from conftest import TINY, compose

    from copal_exp.protocol.job import run_job

    out = {}
    for name, overrides in JOBS.items():
        out[name] = numbers(run_job(compose([*TINY, *TINY_NO_CACHE, f"data.root={data_root}", *overrides]), workdir / name))
    base = [*TINY, *TINY_NO_CACHE, f"data.root={data_root}", "method=copal", "order=given"]
    run_job(compose([*base, "datasets=[wikitext2]", f"state.export={workdir / 's1'}"]), workdir / "continual-1")
    out["copal-continued"] = numbers(run_job(compose([*base, "datasets=[ptb,c4]", f"state.load={workdir / 's1'}"]),
                                             workdir / "continual-2"))
    return out


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    sys.path.insert(0, str(HERE))
    from conftest import shared_data_dir

    with tempfile.TemporaryDirectory() as tmp:
        record = run_reference_jobs(shared_data_dir(), Path(tmp))
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(f"recorded {len(record)} jobs in {RECORD}")
