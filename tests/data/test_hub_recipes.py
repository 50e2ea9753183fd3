"""The Hub code path itself, pointed at local files in the Hub's own formats (JSON lines, parquet)."""

import gzip

import pytest

from copal_exp.data.sources import load_hub, load_text, read_rows
from copal_exp.errors import DataError


def test_c4_hub_recipe_reads_json_gz_shards(tmp_path, data_root):
    shard = tmp_path / "en" / "c4-train.00000-of-01024.json.gz"
    shard.parent.mkdir()
    src = data_root / "c4" / "c4-train.00000-of-01024.first1000.jsonl"
    with open(src, "rb") as fh, gzip.open(shard, "wb") as out:
        out.write(fh.read())
    source = load_hub("c4", "calibration", {"path": "json", "data_files": {"calibration": {"train": str(shard)}}})
    assert source.rows == read_rows(src, "jsonl")
    assert source.provenance["source"] == "hub" and source.provenance["split"] == "train"


@pytest.mark.parametrize("dataset,field,local,reader", [
    ("wikitext2", "text", "wikitext2/wikitext-2-raw-v1.test.jsonl", "jsonl"),
    ("ptb", "sentence", "ptb/ptb.test.txt", "sentences"),
])
def test_parquet_mirror_recipe(tmp_path, data_root, dataset, field, local, reader):
    import pandas as pd

    rows = read_rows(data_root / local, reader)
    pd.DataFrame({field: rows}).to_parquet(tmp_path / "test.parquet")
    source = load_hub(dataset, "evaluation",
                      {"path": "parquet", "name": None, "data_files": {"test": str(tmp_path / "test.parquet")}})
    assert source.rows == rows


def test_failed_hub_load_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_text("wikitext2", "calibration", tmp_path, {"path": str(tmp_path / "no-such-dataset")})
    message = str(err.value)
    assert "dataset 'wikitext2' (calibration split) is not available" in message
    assert "loading it from the Hugging Face Hub failed" in message and "COPAL_DATA_DIR" in message
