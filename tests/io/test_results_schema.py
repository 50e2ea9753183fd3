"""``results.json`` has one schema (:class:`copal_exp.io.results.JobResults`): what a job writes is exactly
its keys, a record with other keys is refused on write and skipped by the report with the reason; one reader
(:func:`copal_exp.io.results.read_results`) with one behaviour for a missing, damaged, foreign or partial file."""

import dataclasses
import json

import pytest
from conftest import TINY, compose

from copal_exp.errors import ResultsError, UserError
from copal_exp.io.results import JobResults, Permutation, read_results, write_results
from copal_exp.protocol.job import run_job
from copal_exp.reporting.runs import collect


@pytest.fixture(scope="module")
def job(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("job")
    run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "datasets=[wikitext2,ptb]"]), out)
    return out


def test_a_job_writes_exactly_the_schema(job):
    record = json.loads((job / "results.json").read_text())
    assert set(record) == {f.name for f in dataclasses.fields(JobResults)}
    assert record["status"] == "complete" and record["datasets"] == ["wikitext2", "ptb"]
    for perm in record["permutations"]:
        assert set(perm) == {f.name for f in dataclasses.fields(Permutation)}
    assert read_results(job) == record
    # the memory plan made before the model loaded, beside the peak the process reached
    assert record["memory_plan"]["host_bytes"] > 0 and record["peak_rss_bytes"] > 0
    assert {n["where"] for n in record["memory_plan"]["needs"]} <= {"host", "gpu", "disk"}


def test_unknown_keys_and_statuses_are_refused_on_write(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['ppl'\]"):
        write_results({"status": "running", "ppl": 3.0}, tmp_path)
    with pytest.raises(ValueError, match="status='done'"):
        write_results({"status": "done"}, tmp_path)
    with pytest.raises(ValueError, match=r"permutations\[0\]"):
        write_results({"permutations": [{"order": ["a"], "matrix": [[1.0]]}]}, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_the_report_skips_a_foreign_record_with_the_reason(job, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    record = json.loads((job / "results.json").read_text())
    (foreign / "results.json").write_text(json.dumps({**record, "extra_metric": 1.0}))
    skipped: list = []
    assert collect(tmp_path, skipped=skipped) == []
    assert skipped and "unknown key(s) ['extra_metric']" in skipped[0][1]


@pytest.mark.parametrize("text,why", [('{"status": "complete", "conf', "cannot be read (JSONDecodeError"),
                                      ("[1, 2]", "not a copal_exp results record (a JSON list)"),
                                      ('{"ppl": 3}', "not a copal_exp results record (results record has unknown key")])
def test_one_reader_one_behaviour_for_damaged_and_foreign_files(tmp_path, job, text, why):
    assert read_results(tmp_path) is None  # no results.json: nothing there
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ResultsError) as err:
        read_results(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'results.json'} ") and why in str(err.value)
    # every caller sees the same: the report skips it with that reason, export refuses it as a user error
    skipped: list = []
    assert collect(tmp_path, skipped=skipped) == [] and why in skipped[0][1]
    from copal_exp.protocol.export import export

    with pytest.raises(UserError, match="results.json"):
        export(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_partial_record_is_read_as_it_is(tmp_path, job):
    record = json.loads((job / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps({**record, "status": "interrupted", "error": "SIGTERM"}))
    assert read_results(tmp_path)["status"] == "interrupted"
    skipped: list = []
    assert collect(tmp_path, skipped=skipped) == [] and "interrupted" in skipped[0][1]


def test_the_recorded_commit_is_the_one_the_process_started_with(monkeypatch):
    """A sweep's later jobs record the commit their code was loaded from, not a commit made meanwhile."""
    import subprocess

    from copal_exp.io import results

    first = results.code_version()
    real = subprocess.run

    def moved_on(args, *a, **k):
        if "rev-parse" in args:
            return subprocess.CompletedProcess(args, 0, stdout="f" * 40 + "\n", stderr="")
        return real(args, *a, **k)

    monkeypatch.setattr(subprocess, "run", moved_on)
    assert results.code_version() == first
    assert results._read_code_version().get("commit", "").startswith("f" * 40)
