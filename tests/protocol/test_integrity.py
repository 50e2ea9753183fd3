"""Nothing lost, nothing silently wrong: refused reruns, checksums, continual-state checks, value checks,
damaged input data, interruption, locking, disk full, reports that say what they skipped, and W&B that
costs seconds when it is unreachable. Damaged files are built in ``tmp_path``."""

import errno
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose

from copal_exp.errors import (
    DataError,
    IntegrityError,
    JobDirError,
    StateError,
    StorageError,
)
from copal_exp.io.checkpoint import StateStore
from copal_exp.io.results import write_results
from copal_exp.io.storage import read_json, write_json
from copal_exp.protocol.job import run_job
from copal_exp.protocol.jobdir import JobLock
from copal_exp.protocol.settings import validate
from copal_exp.protocol.states import ModelState
from copal_exp.pruning.methods import Memory


def job(data_root, *extra):
    return compose([*TINY, f"data.root={data_root}", *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (except the lock and Hydra's log) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("job.lock", "copal_exp.log")}


def cli(args, cwd, data_root, **kw):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "copal_exp", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


# ------------------------------------------------------------------ 1. a refused or failed run destroys nothing
@pytest.mark.subprocess
def test_refused_rerun_of_a_finished_sweep_changes_nothing_and_names_the_keys(tmp_path, data_root):
    args = [*TINY, "method=wanda", "order=given", f"hydra.sweep.dir={tmp_path / 'sweep'}", "-m"]
    first = cli(args, tmp_path, data_root)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(tmp_path / "sweep" / "0")
    assert json.loads(before["results.json"])["status"] == "complete" and ".hydra/overrides.yaml" in before

    # a trailing slash on the data directory is the same configuration: nothing to do, nothing rewritten
    same = cli(args, tmp_path, f"{data_root}/")
    assert same.returncode == 0 and "already holds the complete results" in same.stdout + same.stderr
    assert snapshot(tmp_path / "sweep" / "0") == before

    changed = cli([*args, "data.seed=1", "method=sparsegpt"], tmp_path, data_root)
    assert changed.returncode != 0
    assert "data.seed: 0 → 1" in changed.stderr and 'method.name: "wanda" → "sparsegpt"' in changed.stderr
    assert changed.stderr.count('File "') <= 1  # in a sweep Hydra reports the job's error with one frame at most
    assert snapshot(tmp_path / "sweep" / "0") == before
    kept = list((tmp_path / "sweep").glob("multirun.*.yaml"))  # the first sweep's record survives beside the new
    assert len(kept) == 1 and "method=wanda" in kept[0].read_text()


def test_a_complete_results_file_is_only_replaced_by_a_complete_one_of_the_same_config(tmp_path, data_root):
    results = run_job(job(data_root, "method=magnitude", "order=given"), tmp_path)
    before = snapshot(tmp_path)
    for status, config in (("failed", results["config"]), ("running", results["config"]),
                           ("complete", {**results["config"], "data": {**results["config"]["data"], "seed": 7}})):
        with pytest.raises(JobDirError, match="holds complete results"):
            write_results({**results, "status": status, "config": config}, tmp_path)
    assert snapshot(tmp_path) == before
    write_results(results, tmp_path)  # the same complete record may be written again


def test_a_run_that_fails_early_keeps_the_earlier_partial_results(tmp_path, data_root, monkeypatch):
    results = run_job(job(data_root, "method=wanda", "order=given"), tmp_path)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**results, "status": "running"}))  # as if killed after its last step
    rows = (tmp_path / "ppl_matrices.csv").read_text()

    import copal_exp.models.loading

    def no_model(cfg, device="cpu"):
        raise RuntimeError("out of memory while loading")

    monkeypatch.setattr(copal_exp.models.loading, "load_model", no_model)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_job(job(data_root, "method=wanda", "order=given"), tmp_path)
    failed = json.loads(path.read_text())
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    assert failed["permutations"] == results["permutations"] and failed["summary"] == results["summary"]
    assert (tmp_path / "ppl_matrices.csv").read_text() == rows


# ------------------------------------------------------------------ 2. checksums on everything read back
def saved_store(tmp_path) -> StateStore:
    store = StateStore(tmp_path)
    store.initialise({"method": {"name": "copal"}})
    store.save_dense({"ptb": 12.5})
    g = torch.rand(8, 16)
    step = ModelState(("ptb",), {"ptb": 31.25}, {"l": torch.ones(3, dtype=torch.uint8).numpy()},
                      {"overall": 0.5}, {"masks": 1.0}, weights=None, memory=Memory({"l": g}, steps=1))
    store.save(step)
    store.flush()  # states are written in the background
    return store


def restore(record, carry):
    return record, carry


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_states_round_trip_through_the_checksummed_index(tmp_path):
    saved_store(tmp_path)
    store = StateStore(tmp_path)
    steps = store.load_all(restore)
    record, carry = steps[("ptb",)]
    assert record["ppl"] == {"ptb": 31.25} and carry["memory"]["steps"] == 1
    assert store.load_dense() == {"ptb": 12.5}


def test_a_flipped_bit_in_copal_g_is_detected(tmp_path):
    saved_store(tmp_path)
    (carry,) = (tmp_path / "states").glob("*.carry.pt")
    size = carry.stat().st_size
    flip_byte(carry, size - 200)  # inside the tensor data, same size
    assert carry.stat().st_size == size
    with pytest.raises(IntegrityError) as err:
        StateStore(tmp_path).load_all(restore)
    assert str(carry) in str(err.value) and "SHA-256" in str(err.value) and "re-run" in str(err.value)


def test_an_edited_perplexity_is_detected(tmp_path):
    saved_store(tmp_path)
    (record,) = [p for p in (tmp_path / "states").glob("*.pt") if ".carry" not in p.name and p.name != "dense.pt"]
    data = record.read_bytes()
    assert data.count(struct.pack(">d", 31.25)) == 1  # pickle stores floats big-endian
    record.write_bytes(data.replace(struct.pack(">d", 31.25), struct.pack(">d", 21.25)))
    with pytest.raises(IntegrityError, match="SHA-256"):
        StateStore(tmp_path).load_all(restore)
    dense = tmp_path / "states" / "dense.pt"
    dense.write_bytes(dense.read_bytes().replace(struct.pack(">d", 12.5), struct.pack(">d", 2.5)))
    with pytest.raises(IntegrityError, match="dense.pt"):
        StateStore(tmp_path).load_dense()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_truncated_or_garbled_state_names_the_file_and_the_remedy(tmp_path, damage):
    saved_store(tmp_path)
    (carry,) = (tmp_path / "states").glob("*.carry.pt")
    carry.write_bytes(carry.read_bytes()[:100] if damage == "truncate" else b"x" * carry.stat().st_size)
    with pytest.raises(IntegrityError) as err:
        StateStore(tmp_path).load_all(restore)
    message = str(err.value)
    assert str(carry) in message and "Delete" in message and "re-run the same command" in message
    assert "Traceback" not in message and "UnpicklingError" not in message


def test_a_damaged_index_or_an_old_unchecked_states_folder_is_refused(tmp_path):
    saved_store(tmp_path)
    index = tmp_path / "states" / "index.json"
    index.write_text(index.read_text()[:50])
    with pytest.raises(IntegrityError, match="index.json cannot be read.*delete"):
        StateStore(tmp_path)
    index.write_text(json.dumps({"format": "copal_exp.protocol.states/2", "config": {}, "files": {}, "sha256": "0" * 64}))
    with pytest.raises(IntegrityError, match="differs from the checksum"):
        StateStore(tmp_path)
    index.unlink()
    (tmp_path / "states" / "manifest.json").write_text('{"fingerprint": "abc"}')
    with pytest.raises(IntegrityError, match="older copal_exp without checksums"):
        StateStore(tmp_path)


def test_a_damaged_state_stops_a_resumed_job_with_the_file_named(tmp_path, data_root):
    args = ["method=copal", "order=given", f"state.export={tmp_path / 'export'}"]
    results = run_job(job(data_root, *args), tmp_path / "job")
    (carry,) = (tmp_path / "job" / "states").glob("*.carry.pt")  # the final state, kept for the export
    flip_byte(carry, carry.stat().st_size - 300)
    path = tmp_path / "job" / "results.json"
    path.write_text(json.dumps({**results, "status": "running"}))
    again = ["method=copal", "order=given", f"state.export={tmp_path / 'export2'}"]  # an export is never replaced
    with pytest.raises(IntegrityError, match=str(carry.name)):
        run_job(job(data_root, *again), tmp_path / "job")
    assert json.loads(path.read_text())["permutations"] == results["permutations"]  # still reported


def test_a_damaged_dense_cache_entry_is_recomputed_not_used(tmp_path, data_root, monkeypatch, caplog):
    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path / "cache"))
    first = run_job(job(data_root, "method=magnitude", "order=given"), tmp_path / "a")
    (entry,) = (tmp_path / "cache" / "dense").glob("*.json")
    body = json.loads(entry.read_text())
    body["dense_ppl"]["ptb"] = 1.0  # an edited number, checksum unchanged
    entry.write_text(json.dumps(body))
    second = run_job(job(data_root, "method=magnitude", "order=given"), tmp_path / "b")
    assert second["dense_ppl"] == first["dense_ppl"] and second["dense_cache"] == "computed"
    assert "damaged dense-cache entry" in caplog.text


def test_a_damaged_token_cache_entry_is_tokenised_again(tmp_path, caplog):
    from copal_exp.data.tokens import encode_cached

    class Tok:
        name_or_path = "t"

        def get_vocab(self):
            return {"a": 0}

        def __call__(self, text, return_tensors, verbose):
            class Out:
                input_ids = torch.tensor([[len(text), 1, 2]])

            return Out()

    ids = encode_cached(Tok(), "hello", "x", tmp_path)
    (entry,) = tmp_path.glob("x-*.pt")
    entry.write_bytes(entry.read_bytes()[:40])
    assert torch.equal(encode_cached(Tok(), "hello", "x", tmp_path), ids)
    assert "damaged token-cache entry" in caplog.text


# ------------------------------------------------------------------ 3. continual state checks
@pytest.fixture
def exported(tmp_path, data_root):
    base = ["method=copal", "order=given", "datasets=[ptb]"]
    run_job(job(data_root, *base, f"state.export={tmp_path / 's'}"), tmp_path / "job1")
    return tmp_path / "s"


def load_into(tmp_path, data_root, state, *extra):
    return run_job(job(data_root, "method=copal", "order=given", "datasets=[c4]", f"state.load={state}", *extra),
                   tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}")


@pytest.mark.parametrize("option,value", [("granularity", "segment"), ("group", "layer"), ("epsilon", "2.0")])
def test_state_load_refuses_other_copal_options(tmp_path, data_root, exported, option, value):
    with pytest.raises(StateError, match=f"{option}: .* \\(saved\\) → .* \\(this run\\)"):
        load_into(tmp_path, data_root, exported, f"method.{option}={value}")


def rewrite_sensitivity(state: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    from copal_exp.io.storage import sha256_file

    tensors = change(load_file(str(state / "sensitivity.safetensors")))
    save_file(tensors, str(state / "sensitivity.safetensors"))
    meta = read_json(state / "state.json", "")
    meta["files"]["sensitivity.safetensors"] = {"sha256": sha256_file(state / "sensitivity.safetensors"),
                                                "bytes": (state / "sensitivity.safetensors").stat().st_size}
    write_json(state / "state.json", meta)  # a consistent, checksummed folder: only the layers differ


def test_state_load_refuses_a_missing_or_extra_layer(tmp_path, data_root, exported):
    first = sorted(read_json(exported / "state.json", "")["model"]["shapes"])[0]
    rewrite_sensitivity(exported, lambda t: {k: v for k, v in t.items() if k != first})
    with pytest.raises(StateError, match=f"missing \\['{first}'\\]"):
        load_into(tmp_path, data_root, exported)
    rewrite_sensitivity(exported, lambda t: {**t, first: torch.zeros(1), "model.layers.9.mlp.up_proj": torch.zeros(2, 2)})
    with pytest.raises(StateError, match="extra \\['model.layers.9.mlp.up_proj'\\]"):
        load_into(tmp_path, data_root, exported)


def test_state_load_refuses_a_damaged_folder(tmp_path, data_root, exported):
    g = exported / "sensitivity.safetensors"
    flip_byte(g, g.stat().st_size - 10)
    with pytest.raises(IntegrityError, match="sensitivity.safetensors is damaged"):
        load_into(tmp_path, data_root, exported)
    meta = exported / "state.json"
    meta.write_text(meta.read_text().replace('"steps_seen": 1', '"steps_seen": 2'))
    with pytest.raises(IntegrityError, match="state.json is damaged"):
        load_into(tmp_path, data_root, exported)


# ------------------------------------------------------------------ 4. every value checked before the model loads


@pytest.mark.subprocess
def test_command_line_shows_the_message_without_a_traceback(tmp_path, data_root):
    proc = cli(["data.nsamples=2.7", "model=tiny_llama"], tmp_path, data_root)
    assert proc.returncode == 2 and "Error: data.nsamples=2.7" in proc.stderr and "Traceback" not in proc.stderr
    full = subprocess.run([sys.executable, "-m", "copal_exp", "data.nsamples=2.7", "model=tiny_llama"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COPAL_DATA_DIR": str(data_root), "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def write_c4(root: Path, docs: list[str]) -> None:
    (root / "c4").mkdir(parents=True)
    for name in ("c4-train.00000-of-01024.first1000.jsonl", "c4-validation.subset2000.jsonl"):
        (root / "c4" / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_c4_with_no_document_long_enough_fails_at_once_before_the_model(tmp_path, monkeypatch):
    write_c4(tmp_path / "data", ["short document number %d" % i for i in range(50)] + ["x" * 40])
    import copal_exp.models.loading

    monkeypatch.setattr(copal_exp.models.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DataError) as err:
        run_job(compose([*TINY, f"data.root={tmp_path / 'data'}", "datasets=[c4]", "data.seqlen=48",
                         "eval.max_windows=null"]), tmp_path / "job")
    message = str(err.value)
    assert "none of the 51 documents" in message and "data.seqlen=48" in message and "first1000.jsonl" in message


# ------------------------------------------------------------------ 5. damaged input data names the file
def damaged_inputs(root: Path) -> dict[str, tuple[str, str, str]]:
    """Per damage: (dataset, file written under root, expected words)."""
    (root / "c4").mkdir(parents=True, exist_ok=True)
    (root / "ptb").mkdir(parents=True, exist_ok=True)
    good = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(2000))
    blob = gzip.compress(good.encode())
    return {
        "truncated json": ("c4", "c4/c4-validation.subset2000.jsonl", good[: len(good) // 2].rstrip("\n")[:-3] + "\n",
                           "is not a complete JSON object"),
        "truncated gzip": ("c4", "c4/c4-validation.00000-of-00008.json.gz", blob[: len(blob) // 2],
                           "the gzip stream is damaged"),
        "not utf-8": ("ptb", "ptb/ptb.test.txt", b"a b c\nd \xff\xfe e\n", "line 2 is not valid UTF-8"),
        "missing field": ("c4", "c4/c4-validation.subset2000.jsonl", '{"text": "a"}\n{"content": "b"}\n',
                          "line 2 has no 'text' field"),
        "empty": ("ptb", "ptb/ptb.test.txt", "", "holds no text (empty)"),
    }


@pytest.mark.parametrize("damage", ["truncated json", "truncated gzip", "not utf-8", "missing field", "empty"])
def test_damaged_input_data_names_dataset_split_file_and_line(tmp_path, damage):
    from copal_exp.data import load_text

    dataset, rel, content, words = damaged_inputs(tmp_path)[damage]
    path = tmp_path / rel
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_text(dataset, "evaluation", tmp_path, use_hub=False)
    message = str(err.value)
    assert f"{dataset} evaluation split: {path}" in message and words in message


# ------------------------------------------------------------------ 6. interruption, locking, disk full, orphans
SLOW = ["model=tiny_llama", "model.hidden_size=256", "model.intermediate_size=512", "model.num_layers=4",
        "data.nsamples=4", "data.seqlen=128", "eval.max_windows=4", "run.progress=false", "logger=none",
        "method=sparsegpt", "method.init=sequential"]


@pytest.mark.subprocess
def test_sigterm_marks_the_job_interrupted_keeps_its_states_and_resumes(tmp_path, data_root):
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "job"
    proc = subprocess.Popen([sys.executable, "-m", "copal_exp", *SLOW, f"hydra.run.dir={out}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((out / "states").glob("*.carry.pt")):
        assert proc.poll() is None and time.time() < deadline, "job ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and "SIGTERM" in results["error"]
    saved = [p for p in (out / "states").glob("*.pt") if p.name != "dense.pt" and ".carry" not in p.name]
    assert saved
    resumed = subprocess.run([sys.executable, "-m", "copal_exp", *SLOW, f"hydra.run.dir={out}"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["resumed_states"] >= len(saved)


@pytest.mark.subprocess
def test_a_second_process_on_the_same_job_directory_is_refused_at_once(tmp_path, data_root):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from copal_exp.protocol.jobdir import JobLock; "
                               "lock = JobLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(JobDirError, match=f"in use by another copal_exp process \\(pid {holder.pid} on"):
            run_job(job(data_root, "method=magnitude"), tmp_path)  # refused, not waiting for the holder
        assert not (tmp_path / "results.json").exists()
    finally:
        holder.kill()  # the lock dies with its holder
        holder.wait()
    assert run_job(job(data_root, "method=magnitude", "order=given"), tmp_path)["status"] == "complete"
    with JobLock(tmp_path):  # and is released by a finished job
        pass


def test_disk_full_names_the_path_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from copal_exp.io import storage

    def full(self, data):
        self.error = OSError(errno.ENOSPC, "No space left on device")
        raise self.error

    monkeypatch.setattr(storage.HashingWriter, "write", full)
    with pytest.raises(StorageError) as err:
        storage.save_torch({"g": torch.zeros(1000)}, tmp_path / "states" / "x.pt")
    assert str(tmp_path / "states" / "x.pt") in str(err.value) and "no space left" in str(err.value)
    with pytest.raises(StorageError, match="results.json: no space left"):
        write_results({"status": "running", "datasets": [], "permutations": []}, tmp_path)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_next_run_removes_what_a_killed_job_left_behind(tmp_path, data_root):
    args = ["method=copal", "order=given"]
    run_job(job(data_root, *args), tmp_path)
    left = [tmp_path / "states" / "orphan-0123abcd.carry.pt", tmp_path / "states" / ".index.json.999.tmp",
            tmp_path / ".results.json.999.tmp", tmp_path / "offload" / "memory" / "g-0123456789ab.safetensors",
            tmp_path / "offload" / "activations" / "act0-abcdef012345.safetensors"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    before = json.loads((tmp_path / "results.json").read_text())
    assert run_job(job(data_root, *args), tmp_path)["summary"] == before["summary"]
    assert not any(path.exists() for path in left)


# ------------------------------------------------------------------ 7. reports say what they skipped
@pytest.mark.subprocess
def test_report_lists_skipped_jobs_and_reports_the_rest(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    good = run_job(job(data_root, "method=magnitude", "order=given"), sweep / "0")
    for sub, text in (("1", '{"status": "complete", "config": {'), ("2", json.dumps({"status": "failed",
                      "error": "RuntimeError: CUDA out of memory"})), ("3", json.dumps({"status": "running"}))):
        (sweep / sub).mkdir()
        (sweep / sub / "results.json").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "copal_exp.report", str(sweep)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "skipped 3 job(s)" in out and f"{good['summary']['a_ppl']:.3f}" in out
    assert f"{sweep / '1'}: results.json cannot be read" in out
    assert f"{sweep / '2'}: failed: RuntimeError: CUDA out of memory" in out
    assert f"{sweep / '3'}: still running" in out
    assert "skipped" in (sweep / "report.md").read_text()


@pytest.mark.subprocess
def test_report_on_a_missing_directory_or_a_file_says_so(tmp_path):
    def report(path):
        return subprocess.run([sys.executable, "-m", "copal_exp.report", str(path)], capture_output=True, text=True,
                              timeout=120)

    missing = report(tmp_path / "nope")
    assert missing.returncode != 0 and "no such directory" in missing.stderr
    (tmp_path / "results.json").write_text("{}")
    file = report(tmp_path / "results.json")
    assert file.returncode != 0 and "is a file" in file.stderr


def test_report_of_mixed_models_and_datasets_has_their_columns_and_own_dense_rows(tmp_path, data_root):
    from copal_exp.reporting.runs import collect
    from copal_exp.reporting.tables import comparison_table

    a = run_job(job(data_root, "method=wanda", "order=given"), tmp_path / "a")
    b = run_job(job(data_root, "method=wanda", "order=given", "model.name=tiny_b", "model.init_seed=3",
                    "datasets=[ptb,c4]"), tmp_path / "b")
    frame = comparison_table(collect(tmp_path))
    assert {"model", "datasets"} <= set(frame.columns)
    dense = frame[frame["method"] == "dense"].set_index("model")
    assert dense.loc["tiny_llama", "a_ppl"] == pytest.approx(sum(a["dense_ppl"].values()) / 3)
    assert dense.loc["tiny_b", "a_ppl"] == pytest.approx(sum(b["dense_ppl"].values()) / 2)
    assert dense.loc["tiny_b", "datasets"] == "ptb,c4"


# ------------------------------------------------------------------ 8. unreachable W&B costs seconds, once
@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_first_wandb_failure_turns_it_off_for_the_rest_of_the_process(tmp_path, no_wandb_account, monkeypatch):
    import wandb

    from copal_exp.protocol.tracking import NullLogger, make_logger

    calls = []

    def broken_init(*args, **kwargs):
        calls.append(kwargs)
        raise wandb.errors.CommError("timed out")

    monkeypatch.setattr(wandb, "init", broken_init)
    settings = validate(compose(["logger=wandb", "model=tiny_llama"]))
    for k in range(3):
        logger = make_logger(settings.logger, settings.resolved, tmp_path / str(k))
        assert isinstance(logger, NullLogger) and logger.run is None
    assert len(calls) == 1


def test_unreachable_wandb_server_is_detected_in_seconds_and_logs_offline(tmp_path, no_wandb_account, monkeypatch):
    import socket

    from copal_exp.protocol import tracking

    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    attempts = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a) or real(*a, **k))
    settings = validate(compose(["logger=wandb", "logger.mode=online", "model=tiny_llama"]))
    loggers = [tracking.make_logger(settings.logger, settings.resolved, tmp_path / str(k)) for k in range(2)]
    try:
        assert all(lg.run is not None and lg.run.settings.mode == "offline" for lg in loggers)
    finally:
        for lg in loggers:
            lg.finish({"datasets": [], "permutations": []})
    assert len([a for a in attempts if a[0] == ("127.0.0.1", port)]) == 1  # checked once per process
    assert list((tmp_path / "1").glob("wandb/offline-run-*"))


def test_a_job_that_failed_before_its_first_state_reruns_with_the_same_command(tmp_path, data_root):
    """The record of a failure before any state holds the job's configuration: the same command is not
    refused as another configuration, and export says why there is nothing to export."""
    from copal_exp.errors import UserError
    from copal_exp.protocol.export import export

    cfg = compose([*TINY, f"data.root={data_root}", "datasets=[ptb]", "data.nsamples=2000", "data.seqlen=500",
                   "method=wanda"])
    for _ in range(2):  # the second run meets the same data error, not a refusal of the directory
        with pytest.raises(DataError, match="data.nsamples=2000"):
            run_job(cfg, tmp_path)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and record["config"]["data"]["nsamples"] == 2000
    with pytest.raises(UserError, match=r"the job failed before computing any state \(DataError: "):
        export(tmp_path, tmp_path / "out")
