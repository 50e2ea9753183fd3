"""Plain result files: ``results.json`` (the whole record, :class:`JobResults`) and ``ppl_matrices.csv``
(long format, one row per permutation, step and dataset)."""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copal_exp.io.storage import write_text

RESULTS_FILE = "results.json"
MATRICES_FILE = "ppl_matrices.csv"
CSV_FIELDS = ["method", "init", "pattern", "order", "step", "step_dataset", "dataset", "ppl"]
ZEROSHOT_FILE = "zeroshot.csv"
FORGETTING_FILE = "forgetting.csv"
FORGETTING_FIELDS = ["method", "init", "pattern", "order", "step", "step_dataset", "position", "dataset",
                     "ppl_change"]
ZEROSHOT_FIELDS = ["method", "init", "pattern", "order", "step", "step_dataset", "task", "acc", "acc_stderr",
                   "acc_norm", "acc_norm_stderr", "n", "split", "harness_split"]


STATUSES = ("running", "complete", "failed", "interrupted")


@dataclass
class Permutation:
    """One dataset order's record in ``results.json`` (``permutations[k]``)."""

    order: list[str]
    ppl_matrix: list[list[float]]  # rows: steps; columns: the job's datasets, in their order
    bwt: float | None  # None for a single dataset
    weight_stasis: bool
    mask_change: list[float | None]  # fraction of mask entries changed at each step (None at step 1)
    sparsity: list[float]  # achieved overall sparsity after each step
    step_seconds: list[dict[str, float]]  # seconds per phase of each step's state
    complete: bool = True  # False while the order runs: its rows so far, no BWT yet
    zeroshot: list | None = None  # eval.tasks: per step, task -> acc/acc_norm/stderr/n (None: not scored there)
    layer_sparsity: list | None = None  # sparsity.allocation=owl: per step, decoder layer -> its allocated sparsity
    # forgetting[t][j]: ppl change of the step-j domain after step t since right after step j (j < t; else None)
    forgetting: list | None = None
    forgetting_curve: list | None = None  # per step: mean of forgetting[t][:t] (None at step 1); last = bwt


@dataclass
class JobResults:
    """Every key of ``results.json``, declared once. Written after every step (``status: running``, the
    permutations computed so far) and at the end; read back by the report, ``export`` and resume."""

    status: str = "running"  # one of STATUSES
    config: dict = field(default_factory=dict)  # the resolved Hydra config of the job
    datasets: list = field(default_factory=list)  # matrix columns, in this order
    data: dict = field(default_factory=dict)  # per dataset: where its splits came from, segment/window counts
    seed: int | None = None  # data.seed
    data_root: str | None = None  # the folder the data was read from (None: the Hub or the demo suite)
    dense_cache: str | None = None  # where the dense perplexities came from: computed, cache, job
    dense_ppl: dict = field(default_factory=dict)  # dataset -> perplexity of the unpruned model
    pruned_modules: dict = field(default_factory=dict)  # how many linears, of which types, chosen how
    permutations: list = field(default_factory=list)  # one Permutation record per order (stable indices)
    summary: dict = field(default_factory=dict)  # a-/m-bwt, a-/m-ppl over complete permutations
    per_dataset: dict = field(default_factory=dict)  # dataset -> bwt/ppl mean and std
    weight_stasis: bool | None = None  # every complete order ended with unchanged masks
    forgetting: dict = field(default_factory=dict)  # forgetting curves over complete orders: mean/std/min/worst
    sparsity: dict = field(default_factory=dict)  # pattern, target, overall and per-layer of the last state
    plan: dict = field(default_factory=dict)  # prune steps and evaluations with and without the planner
    timings: dict = field(default_factory=dict)  # this process's wall seconds per phase, and total
    step_seconds_total: dict = field(default_factory=dict)  # per-phase seconds summed over every state
    resumed_states: int = 0  # states read back from states/ instead of computed
    checkpoints: dict = field(default_factory=dict)  # states/ written by this process: files, bytes, writer seconds
    # (in the background) and seconds the job waited for them
    continual: dict = field(default_factory=dict)  # state.load / state.export: from where, datasets seen
    versions: dict = field(default_factory=dict)  # python and library versions
    memory_plan: dict = field(default_factory=dict)  # host/GPU/disk bytes planned before the model loaded
    inputs: dict = field(default_factory=dict)  # model weights' fingerprint, per dataset a digest of its tokens
    peak_rss_bytes: int | None = None  # the job process's measured peak resident memory
    started: str | None = None  # when this process started the job (ISO 8601, local time)
    threads: int | None = None  # torch threads the job ran with (run.threads, SLURM's CPUs, cores / joblib jobs)
    error: str | None = None  # why the job failed or was interrupted
    zeroshot: dict = field(default_factory=dict)  # eval.tasks: data, final accuracies, over orders, change
    zeroshot_dense: dict = field(default_factory=dict)  # eval.tasks: the dense model's scores per task

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> JobResults:
        """``record`` checked against the schema: an unknown key, a status outside :data:`STATUSES` or a
        permutation record with other fields raises ``ValueError`` naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known - {"_path"})
        if unknown:
            raise ValueError(f"results record has unknown key(s) {unknown}; allowed: {sorted(known)}")
        if record.get("status", "running") not in STATUSES:
            raise ValueError(f"results status={record.get('status')!r}: allowed values are {STATUSES}")
        fields = {f.name for f in dataclasses.fields(Permutation)}
        for k, perm in enumerate(record.get("permutations") or []):
            if not isinstance(perm, dict) or not set(perm) <= fields or not {"order", "ppl_matrix"} <= set(perm):
                raise ValueError(f"permutations[{k}] is not a permutation record (fields: {sorted(fields)})")
        return cls(**{k: v for k, v in record.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def library_versions() -> dict[str, str]:
    """Python and library versions, and the copal_exp commit (:func:`code_version`)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), **code_version()}
    for pkg in ("copal_exp", "torch", "transformers", "hydra-core", "datasets", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def matrix_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (permutation, step): the order as ``a>b>c``, the step (from 1), its dataset, the
    perplexity on every dataset, the mask change and sparsity — the rows of the CSV, the W&B history
    and table, and anything else that lists matrices."""
    return [{"permutation": k, "order": ">".join(perm["order"]), "step": t + 1, "step_dataset": perm["order"][t],
             "ppl": dict(zip(results["datasets"], row)), "mask_change": perm["mask_change"][t],
             "sparsity": perm["sparsity"][t]}
            for k, perm in enumerate(results.get("permutations", [])) for t, row in enumerate(perm["ppl_matrix"])]


def zeroshot_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scored (permutation, step) and task (``eval.tasks``), the dense model's first as order
    ``dense``, step 0: ``acc``, ``acc_norm`` (empty where the task has none), their standard errors, the
    examples scored and the split they came from — the rows of ``zeroshot.csv`` and the W&B table."""
    def row(order, step, step_dataset, task, s):
        return {"order": order, "step": step, "step_dataset": step_dataset, "task": task,
                **{m: s.get(m) for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")},
                "n": s.get("n"), "split": s.get("split"), "harness_split": s.get("harness_split")}

    dense = results.get("zeroshot_dense") or {}
    rows = [row("dense", 0, "", task, s) for task, s in dense.items()]
    for perm in results.get("permutations", []):
        for t, scores in enumerate(perm.get("zeroshot") or []):
            rows += [row(">".join(perm["order"]), t + 1, perm["order"][t], task, s) for task, s in (scores or {}).items()]
    return rows


def forgetting_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (permutation, step t, earlier position j < t): the forgetting table as long-form rows —
    ``forgetting.csv`` and the W&B table."""
    rows = []
    for perm in results.get("permutations", []):
        order = perm["order"]
        for t, row in enumerate(perm.get("forgetting") or []):
            rows += [{"order": ">".join(order), "step": t + 1, "step_dataset": order[t], "position": j + 1,
                      "dataset": order[j], "ppl_change": row[j]} for j in range(t)]
    return rows


def _csv(fields: list[str], rows: list[dict[str, Any]]) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _protect_complete(path: Path, results: dict[str, Any]) -> None:
    """A complete ``results.json`` is replaced only by a complete one of the same configuration."""
    from copal_exp.errors import JobDirError, ResultsError
    from copal_exp.io.identity import result_config

    try:
        old = read_results(path)
    except ResultsError:
        return  # damaged or foreign: nothing trustworthy to protect
    if old is None or old.get("status") != "complete":
        return
    same = result_config(old.get("config") or {}) == result_config(results.get("config") or {})
    if results.get("status") != "complete" or not same:
        raise JobDirError(f"{path} holds complete results; refusing to replace them with "
                          f"{'another configuration' if not same else repr(results.get('status'))}'s record")


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` (every :class:`JobResults` key) and ``ppl_matrices.csv`` atomically (safe to
    call after every step)."""
    out = Path(out_dir)
    results = JobResults.from_dict(results).to_dict()
    _protect_complete(out / RESULTS_FILE, results)
    write_text(out / RESULTS_FILE, json.dumps(results, indent=2, default=str))
    method = results.get("config", {}).get("method", {})
    pattern = results.get("sparsity", {}).get("pattern", "")
    rows = [{"method": method.get("name"), "init": method.get("init", ""), "pattern": pattern, "order": row["order"],
             "step": row["step"], "step_dataset": row["step_dataset"], "dataset": name, "ppl": ppl}
            for row in matrix_rows(results) for name, ppl in row["ppl"].items()]
    write_text(out / MATRICES_FILE, _csv(CSV_FIELDS, rows))
    job = {"method": method.get("name"), "init": method.get("init", ""), "pattern": pattern}
    if results.get("zeroshot"):
        write_text(out / ZEROSHOT_FILE, _csv(ZEROSHOT_FIELDS, [{**job, **r} for r in zeroshot_rows(results)]))
    write_text(out / FORGETTING_FILE, _csv(FORGETTING_FIELDS, [{**job, **r} for r in forgetting_rows(results)]))
    return out / RESULTS_FILE


def read_results(path: str | Path) -> dict[str, Any] | None:
    """The one reader of ``results.json``: the record in a job folder (or the file itself) checked against
    :class:`JobResults`; ``None`` when there is none. A file that cannot be read, is not JSON or is not a
    copal_exp results record raises :class:`ResultsError` naming it and why. A partial record (a job still
    running, failed or interrupted) is returned as it is: its ``status`` says so."""
    from copal_exp.errors import ResultsError

    path = Path(path)
    path = path / RESULTS_FILE if path.is_dir() else path
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{path} is not a copal_exp results record (a JSON {type(record).__name__})")
    try:
        return JobResults.from_dict(record).to_dict()
    except (TypeError, ValueError) as exc:
        raise ResultsError(f"{path} is not a copal_exp results record ({exc})") from None


@functools.lru_cache(maxsize=1)
def _code_version() -> tuple[tuple[str, str], ...]:
    return tuple(_read_code_version().items())


def code_version() -> dict[str, str]:
    """The package version and commit of the code this process runs: read once, at the first call (the
    command line makes it as it starts), so every job of a sweep records the commit its code was loaded
    from, not whatever the checkout holds when the job starts."""
    return dict(_code_version())


def _read_code_version() -> dict[str, str]:
    """The package version and, from a git checkout, its commit (with ``+dirty`` for local changes)."""
    import importlib.metadata
    import subprocess

    out = {"copal_exp": importlib.metadata.version("copal_exp")}
    try:
        root = Path(__file__).resolve().parents[3]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit:
            out["commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out
