"""Text domains: where the text comes from (:mod:`.sources`) and how it is cut (:mod:`.recipes`)."""

from copal_exp.data.files import TextSource
from copal_exp.data.recipes import (
    DatasetSplits,
    calibration_segments,
    evaluation_windows,
    load_dataset_splits,
)
from copal_exp.data.sources import PAPER_DATASETS, load_text

__all__ = [
    "PAPER_DATASETS",
    "DatasetSplits",
    "TextSource",
    "calibration_segments",
    "evaluation_windows",
    "load_dataset_splits",
    "load_text",
]
