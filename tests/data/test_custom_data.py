"""The user's own domains (``data.sources``): local text, JSON lines, JSON, parquet files and folders,
split deterministically without overlap or given as two parts, used in a whole job beside a built-in
dataset, with provenance; bad specs are refused before anything loads."""

import json

import pytest
from conftest import TINY, compose

from copal_exp.data.custom import load_custom
from copal_exp.errors import ConfigError, DataError
from copal_exp.protocol.job import run_job
from copal_exp.protocol.settings import validate

DOCS = [(f"Document {i}: the court held that clause {i} of the contract was void. " * 6).strip() for i in range(20)]


def write_all(tmp_path):
    (tmp_path / "legal.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    (tmp_path / "legal.txt").write_text("\n\n".join(DOCS) + "\n")
    (tmp_path / "legal.json").write_text(json.dumps([{"text": d} for d in DOCS]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS}), tmp_path / "legal.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(DOCS[:10]))
    (folder / "b.txt").write_text("\n\n".join(DOCS[10:]))


@pytest.mark.parametrize("spec", [{"path": "legal.jsonl", "field": "body"}, {"path": "legal.txt"},
                                  {"path": "legal.json"}, {"path": "legal.parquet"}, {"path": "folder"}])
def test_every_format_splits_every_fifth_document_off_without_overlap(tmp_path, spec):
    write_all(tmp_path)
    spec = {**spec, "path": str(tmp_path / spec["path"])}
    calibration = load_custom("legal", "calibration", spec)
    evaluation = load_custom("legal", "evaluation", spec)
    assert evaluation.rows == [DOCS[i] for i in (4, 9, 14, 19)]
    assert calibration.rows == [d for i, d in enumerate(DOCS) if i % 5 != 4]
    assert not set(calibration.rows) & set(evaluation.rows)
    assert evaluation.provenance["documents"] == 4 and "every 5th document" in evaluation.provenance["split_rule"]
    assert len(evaluation.provenance["sha256"]) == 64


def test_a_job_on_a_built_in_and_an_own_domain(tmp_path, data_root):
    write_all(tmp_path)
    other = [d.replace("court", "tribunal") for d in DOCS]  # calibration text the evaluation folder does not hold
    (tmp_path / "other.txt").write_text("\n\n".join(other))
    results = run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=all_perms",
                               "datasets=[ptb,legal]", f"+data.sources.legal.calibration={tmp_path / 'other.txt'}",
                               f"+data.sources.legal.evaluation={tmp_path / 'folder'}"]), tmp_path / "job")
    assert results["status"] == "complete" and len(results["permutations"]) == 2
    legal = results["data"]["legal"]
    assert legal["calibration"]["split_rule"] == "given" and legal["evaluation"]["location"].endswith("folder")
    assert legal["evaluation"]["files"] == 2


@pytest.mark.parametrize("source,message", [
    ({"path": "missing.jsonl"}, "data.sources.legal.path=.*missing.jsonl: no such file"),
    ({"path": "legal.txt", "hub": "org/name"}, "give exactly one of"),
    ({"calibration": "legal.txt"}, "calibration= and evaluation= go together"),
    ({"path": "legal.txt", "holdout": 1}, "holdout=1: must be an integer at least 2"),
    ({"path": "legal.txt", "colour": "red"}, "unknown key\\(s\\) \\['colour'\\]"),
])
def test_bad_sources_are_refused_before_anything_loads(tmp_path, source, message):
    write_all(tmp_path)
    source = {k: (str(tmp_path / v) if k in ("path", "calibration") else v) for k, v in source.items()}
    overrides = [f"+data.sources.legal.{k}={v}" for k, v in source.items()]
    with pytest.raises(ConfigError, match=message):
        validate(compose(["datasets=[ptb,legal]", *overrides]))


def test_unknown_domain_names_the_way_to_add_one():
    with pytest.raises(ConfigError, match="unknown \\['legal'\\].*data.sources.NAME"):
        validate(compose(["datasets=[ptb,legal]"]))


def test_a_damaged_own_file_names_it(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match="legal evaluation split: .*bad.jsonl: line 2"):
        load_custom("legal", "evaluation", {"path": str(tmp_path / "bad.jsonl")})
    (tmp_path / "few.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(DataError, match="leave none for evaluation"):
        load_custom("legal", "evaluation", {"path": str(tmp_path / "few.jsonl")})
