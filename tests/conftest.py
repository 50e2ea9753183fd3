"""Shared fixtures. The reference data is read in place from ../shared/data (or $COPAL_DATA_DIR)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "src" / "copal_exp" / "conf"
#: the tiny-model job every protocol test starts from: random tiny LLaMA, 2 × 32-token segments, 1 window
TINY = ["model=tiny_llama", "data.nsamples=2", "data.seqlen=32", "eval.max_windows=1", "run.progress=false",
        "logger=none"]


def shared_data_dir() -> Path:
    return Path(os.environ.get("COPAL_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


def has_reference_data(root: Path) -> bool:
    return all((root / name).is_dir() for name in ("wikitext2", "ptb", "c4"))


def pytest_collection_finish(session):
    """Tests that read the reference data fail as one line saying where to get it, before any of them
    runs (never a skip: in CI a missing data directory is a failure)."""
    root = shared_data_dir()
    needing = [item for item in session.items if "data_root" in getattr(item, "fixturenames", ())]
    if needing and not has_reference_data(root):
        pytest.exit(f"reference data not found at {root} ({len(needing)} selected tests read it): set "
                    "COPAL_DATA_DIR to a copy of shared/data (wikitext2/, ptb/, c4/) or check out shared/ "
                    "beside the repository", returncode=4)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_dir()
    # A missing data directory is a failure, never a skip: the end-to-end tests are the point.
    assert has_reference_data(root), (
        f"reference data not found at {root}: set COPAL_DATA_DIR or check out shared/ beside the repository"
    )
    return root


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def compose(overrides: list[str]):
    """Compose the project's config with Hydra's compose API, as the command line would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import copal_exp.protocol.settings  # noqa: F401 - registers every method as a `method=` option

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


@pytest.fixture(autouse=True)
def _fresh_wandb_state():
    """W&B's per-process memory (turned off after a failure, server reachability) starts empty in every test."""
    from copal_exp.protocol import tracking

    tracking._disabled = None
    tracking._reachable.clear()
    yield
    tracking._disabled = None
    tracking._reachable.clear()


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable for this process as a read-only share would be: its mode bits, or for root
    (whom mode bits do not stop) the immutable attribute. Restored on exit."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"cannot make {folder} read-only for root on this machine (chattr: {made.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
