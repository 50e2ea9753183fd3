"""States are checkpointed by a background writer: a state enters the index only once its files are
complete, a failed write surfaces in the job, and a job records what it wrote."""

import threading

import pytest
import torch
from conftest import TINY, compose

import copal_exp.io.checkpoint as checkpoint
from copal_exp.io.checkpoint import StateStore
from copal_exp.protocol.job import run_job
from copal_exp.protocol.states import ModelState
from copal_exp.pruning.methods import Memory


def state(key, g):
    return ModelState(key, {"ptb": 3.0}, {"l": torch.ones(2, dtype=torch.uint8).numpy()}, {"overall": 0.5}, {},
                      memory=Memory({"l": g}, steps=1))


def test_a_state_is_indexed_only_once_its_files_are_written(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.initialise({})
    release, started = threading.Event(), threading.Event()
    real = checkpoint.save_torch

    def slow(obj, path):
        started.set()
        assert release.wait(30)
        return real(obj, path)

    monkeypatch.setattr(checkpoint, "save_torch", slow)
    store.save(state(("ptb",), torch.rand(4, 4)))
    assert started.wait(30)  # the job goes on while the writer works
    assert StateStore(tmp_path).index["files"] == {}  # a killed job would recompute this state
    release.set()
    store.flush()
    assert sorted(StateStore(tmp_path).index["files"]) == sorted(
        [f"{checkpoint.state_id(('ptb',))}.pt", f"{checkpoint.state_id(('ptb',))}.carry.pt"])
    assert store.written["files"] == 2 and store.written["bytes"] > 4 * 4 * 4


def test_a_failed_background_write_is_raised_in_the_job(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.initialise({})

    def full(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_torch", full)
    store.save(state(("ptb",), torch.rand(4, 4)))
    with pytest.raises(OSError, match="No space left"):
        store.flush()


def test_a_job_records_its_checkpoints(tmp_path, data_root):
    results = run_job(compose([*TINY, f"data.root={data_root}", "method=copal", "order=given"]), tmp_path / "j")
    written = results["checkpoints"]
    assert written["files"] >= 3 * 2 and written["bytes"] > 0  # three states, two with a carried G
    assert written["writer_seconds"] > 0 and written["waited_seconds"] >= 0


def test_a_checkpoint_file_is_saved_without_the_zip_crc_and_still_verified(tmp_path):
    """``save_torch`` turns the zip container's CRC-32 off for its call only (the file's SHA-256 guards it):
    the file loads back equal, torch's global option is as it was, and a flipped byte is still caught."""
    from copal_exp.errors import IntegrityError
    from copal_exp.io.storage import load_torch, save_torch

    g = torch.rand(64, 64)
    before = torch.serialization.get_crc32_options()
    entry = save_torch({"g": g}, tmp_path / "x.pt")
    assert torch.serialization.get_crc32_options() == before
    assert torch.equal(load_torch(tmp_path / "x.pt", entry, "recompute it")["g"], g)
    data = bytearray((tmp_path / "x.pt").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "x.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        load_torch(tmp_path / "x.pt", entry, "recompute it")
