"""What a job reads before its protocol runs: every dataset (tokenizer only, before the model loads),
the device and the folder for disk offload."""

from __future__ import annotations

import logging
from pathlib import Path

from copal_exp.config import Settings
from copal_exp.data import DatasetSplits, load_dataset_splits
from copal_exp.data.sources import default_root
from copal_exp.methods import method_class
from copal_exp.paths import token_cache_dir

log = logging.getLogger(__name__)


def load_job_data(s: Settings, tokenizer) -> tuple[dict[str, DatasetSplits], str | None]:
    """Every dataset of the job, tokenised and cut (needs only the tokenizer: runs before the model loads)."""
    d = s.data
    root = d.get("root")
    if root is None and (root := default_root()) is not None:
        log.info("data.root is unset: using %s", root)
    data = {
        name: load_dataset_splits(
            name, tokenizer, root=root, nsamples=d["nsamples"], seqlen=d["seqlen"], seed=d["seed"],
            max_windows=s.eval.get("max_windows"), hub=d.get("hub"), use_hub=bool(d.get("use_hub", True)),
            with_calibration=method_class(s.method).prunes, demo_root=d.get("demo_root"),
            token_cache=token_cache_dir() if d.get("token_cache", True) else None, bos=d.get("bos", "text"),
            custom=d.get("sources"))
        for name in s.datasets
    }
    return data, str(root) if root else None


def offload_folder(configured: str | None, job_dir: Path | None) -> Path:
    """``run.offload.dir``, or ``<job dir>/offload`` (the job's own, cleaned of a killed run's files)."""
    return Path(configured).expanduser() if configured else (job_dir or Path.cwd()) / "offload"


def resolve_device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
