"""The submitit SLURM launcher against a real single-node SLURM cluster (``scripts/slurm_local.sh``,
started here when it is not running): one permutation per job merging to the single job's summary,
a job preempted mid-run (requeued by submitit) and a job cancelled mid-run (resubmitted) resuming from
``states/`` with identical results, and jobs that do not oversubscribe cores.

Needs root on Debian the first time (apt-get install slurm-wlm munge); without it these tests fail,
they are not skipped: ``make test-slurm`` runs them alone.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, TINY, compose

from copal_exp.protocol.job import run_job
from copal_exp.reporting.runs import collect

pytestmark = [pytest.mark.slurm, pytest.mark.subprocess]

# one CPU per job: on 2 cores SLURM runs 2 jobs at once, each with 1 torch thread
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=local", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=20", "hydra.launcher.array_parallelism=8", "hydra.launcher.mem_gb=null"]
# a job long enough to be stopped in the middle: COPAL, 15 prefix states on a wider tiny LLaMA
SLOW = [*TINY, "method=copal", "model.hidden_size=256", "model.intermediate_size=512", "model.num_layers=4",
        "data.nsamples=16", "data.seqlen=256", "eval.max_windows=8"]


@pytest.fixture(scope="module")
def cluster():
    proc = subprocess.run([str(REPO / "scripts" / "slurm_local.sh"), "start"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"could not start the local SLURM cluster:\n{proc.stderr[-3000:]}"
    return proc


def launch(args, data_root, wait=True):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root)}
    cmd = [sys.executable, "-m", "copal_exp", *args]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_states(job_dir):
    index = job_dir / "states" / "index.json"
    if not index.is_file():
        return 0
    try:
        files = json.loads(index.read_text())["files"]
    except (ValueError, KeyError):
        return 0
    return sum(1 for name in files if not name.endswith(".carry.pt") and name != "dense.pt")


def slurm_job_id(sweep):
    """The SLURM job id submitit recorded for the sweep's only job."""
    ids = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    assert len(ids) == 1, ids
    return ids[0]


def wait_for_states(job_dir, count, proc, timeout=600):
    deadline = time.time() + timeout
    while saved_states(job_dir) < count:
        assert proc.poll() is None, f"the job ended before {count} states were saved: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"fewer than {count} states after {timeout} s"
        time.sleep(0.5)


def reference(tmp_path, data_root, name):
    """The same job run here in one piece, with the thread count of the SLURM jobs."""
    return run_job(compose([*SLOW, f"data.root={data_root}", "run.threads=1"]), tmp_path / name)


def test_design_card_command_one_permutation_per_slurm_job(cluster, tmp_path, data_root):
    sweep = tmp_path / "sweep"
    proc = launch(["method=copal", "sparsity=2:4", "-m", "order=all_perms", "order.index=0,1,2,3,4,5", *TINY, *SLURM,
                   f"hydra.sweep.dir={sweep}"], data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(sweep.glob("*/results.json"))
    assert len(jobs) == 6
    records = [json.loads(p.read_text()) for p in jobs]
    assert {r["threads"] for r in records} == {1}  # SLURM_CPUS_PER_TASK=1: 2 jobs × 1 thread on 2 cores
    single = run_job(compose([*TINY, f"data.root={data_root}", "method=copal", "sparsity=2:4", "run.threads=1"]),
                     tmp_path / "single")
    (merged,) = collect(sweep)
    assert merged["order_indices"] == [0, 1, 2, 3, 4, 5]
    assert merged["summary"] == single["summary"] and merged["per_dataset"] == single["per_dataset"]
    assert [p["ppl_matrix"] for p in merged["permutations"]] == [p["ppl_matrix"] for p in single["permutations"]]


def test_a_preempted_job_is_requeued_and_resumes(cluster, tmp_path, data_root):
    """SLURM's time-limit/preemption signal (USR2, ``--signal=USR2@90``): submitit requeues the job, which
    starts again in the same directory and resumes from ``states/``."""
    sweep = tmp_path / "sweep"
    proc = launch(["-m", *SLOW, *SLURM, f"hydra.sweep.dir={sweep}"], data_root, wait=False)
    wait_for_states(sweep / "0", 3, proc)
    subprocess.run(["scancel", "--signal=USR2", slurm_job_id(sweep)], check=True)
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "complete" and results["resumed_states"] >= 3
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.err"))
    assert "Requeued" in logs or "requeue" in logs.lower(), logs[-2000:]
    whole = reference(tmp_path, data_root, "whole")
    assert [p["ppl_matrix"] for p in results["permutations"]] == [p["ppl_matrix"] for p in whole["permutations"]]
    assert results["summary"] == whole["summary"]


def test_a_cancelled_job_keeps_its_states_and_the_same_command_resumes_it(cluster, tmp_path, data_root):
    """``scancel`` (SIGTERM): the job records ``interrupted`` and keeps its states; submitting the same
    command again resumes it to the results of an uninterrupted run."""
    sweep = tmp_path / "sweep"
    args = ["-m", *SLOW, *SLURM, f"hydra.sweep.dir={sweep}"]
    proc = launch(args, data_root, wait=False)
    wait_for_states(sweep / "0", 3, proc)
    subprocess.run(["scancel", slurm_job_id(sweep)], check=True)
    proc.communicate(timeout=600)
    assert proc.returncode != 0  # the sweep reports its cancelled job
    partial = json.loads((sweep / "0" / "results.json").read_text())
    assert partial["status"] == "interrupted" and "SIGTERM" in partial["error"]
    kept = saved_states(sweep / "0")
    assert kept >= 3
    again = launch(args, data_root)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "complete" and results["resumed_states"] >= kept
    whole = reference(tmp_path, data_root, "whole")
    assert [p["ppl_matrix"] for p in results["permutations"]] == [p["ppl_matrix"] for p in whole["permutations"]]
