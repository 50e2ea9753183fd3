"""``results.json`` has one schema (:class:`copal_exp.io.results.JobResults`): what a job writes is exactly
its keys, a record with other keys is refused on write and skipped by the report with the reason."""

import dataclasses
import json

import pytest
from conftest import TINY, compose

from copal_exp.io.results import JobResults, load_results, write_results
from copal_exp.metrics.records import Permutation
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
    assert load_results(job) == record
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
