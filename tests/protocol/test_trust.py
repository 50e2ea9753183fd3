"""The second trust pass: nothing of the user's is deleted or replaced without their word, old and new
inputs are never mixed, and every failure leaves a directory the same command can resume. One test per
root cause; damaged folders are built in ``tmp_path``."""

import json
from pathlib import Path

import pytest
from conftest import TINY, compose

from copal_exp.errors import IntegrityError, JobDirError
from copal_exp.io.checkpoint import state_id
from copal_exp.protocol.job import run_job


def job(data_root, *extra):
    return compose([*TINY, f"data.root={data_root}", *extra])


def matrices(results):
    return [p["ppl_matrix"] for p in results["permutations"]]


def reopen(job_dir: Path) -> None:
    """Make a finished job resumable again (as if it had been stopped after its last state)."""
    path = job_dir / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))


# ------------------------------------------------------------------ 3. the advice for a damaged state works
def test_following_the_advice_for_a_damaged_state_recomputes_it_from_a_parent_with_its_carry(tmp_path, data_root,
                                                                                             caplog):
    args = ["method=copal", "order=given"]
    reference = run_job(job(data_root, *args), tmp_path / "reference")
    folder = tmp_path / "job"
    run_job(job(data_root, *args), folder)
    order = reference["permutations"][0]["order"]
    middle = folder / "states" / f"{state_id(tuple(order[:2]))}.pt"
    middle.write_bytes(middle.read_bytes()[:-10])  # damaged: the job stops, naming it and the remedy
    reopen(folder)
    with pytest.raises(IntegrityError) as err:
        run_job(job(data_root, *args), folder)
    assert f"Delete {middle}" in str(err.value)
    middle.unlink()  # the advice; the first state's carry (COPAL's G) was released when the middle state ran
    assert not list((folder / "states").glob("*.carry.pt"))
    resumed = run_job(job(data_root, *args), folder)
    assert resumed["status"] == "complete"
    assert "are gone: their states are recomputed" in caplog.text
    assert "recomputing 1 saved state(s) whose carried weights or memory" in caplog.text
    # the middle state was rebuilt from the first one's G, recomputed from the start: same numbers
    assert matrices(resumed) == matrices(reference)


# ------------------------------------------------------------------ 1. a folder that was never a job loses nothing
def test_a_users_folder_is_refused_untouched_and_a_job_cleans_only_what_it_wrote(tmp_path, data_root):
    users = tmp_path / "mine"
    files = {"notes.txt": b"mine", "states/model.pt": b"weights", "offload/big.bin": b"x",
             ".draft.tmp": b"draft", "states/.results.json.12.tmp": b"y"}
    for name, data in files.items():
        (users / name).parent.mkdir(parents=True, exist_ok=True)
        (users / name).write_bytes(data)
    with pytest.raises(JobDirError, match=r"mine is not empty and is not a copal_exp job directory \(it holds "
                                          r"\.draft\.tmp, notes\.txt, offload/, states/"):
        run_job(job(data_root, "method=wanda"), users)
    assert sorted(str(p.relative_to(users)) for p in users.rglob("*") if p.is_file()) == sorted(files)
    assert all((users / name).read_bytes() == data for name, data in files.items())
    # in a real job directory, files the job did not name as its own stay where the user put them
    folder = tmp_path / "job"
    run_job(job(data_root, "method=copal", "order=given"), folder)
    kept = [folder / "states" / "README.txt", folder / "states" / "backup.pt", folder / "offload" / "notes.safetensors",
            folder / ".results.json.tmp", folder / ".hydra" / ".config.yaml.bak.tmp"]
    ours = [folder / "states" / "orphan-0123abcd.pt", folder / "offload" / "memory" / "g-0123456789ab.safetensors",
            folder / ".hydra" / ".config.yaml.77.tmp"]
    for path in kept + ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"z")
    reopen(folder)
    run_job(job(data_root, "method=copal", "order=given"), folder)
    assert all(p.read_bytes() == b"z" for p in kept) and not any(p.exists() for p in ours)


def test_an_output_directory_inside_the_data_root_is_refused(tmp_path, data_root):
    with pytest.raises(JobDirError, match="lies inside data.root"):
        run_job(job(data_root, "method=wanda"), data_root / "outputs" / "job")
    assert not (data_root / "outputs").exists()


# ------------------------------------------------------------------ 4/5/8. inputs, exports and output paths
def test_resume_on_a_replaced_corpus_is_refused_and_exports_never_replace_anything(tmp_path, data_root):
    from copal_exp.errors import UserError
    from copal_exp.protocol.export import check, export

    corpus = tmp_path / "legal.txt"
    corpus.write_text("\n\n".join(f"Clause {i}: the party of the first part shall pay {i} pounds." for i in range(60)))
    args = ["method=wanda", "order=given", "datasets=[ptb,legal]", f"+data.sources.legal.path={corpus}"]
    folder = tmp_path / "job"
    run_job(job(data_root, *args), folder)
    reopen(folder)
    corpus.write_text("\n\n".join(f"Article {i}: the tenant shall keep {i} cats." for i in range(60)))
    with pytest.raises(JobDirError, match=f"legal calibration: the tokens read from {corpus} differ"):
        run_job(job(data_root, *args), folder)
    # an existing export target is refused before any model loads; an exported state is never replaced
    target = tmp_path / "mine"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    with pytest.raises(UserError, match="is not empty .*README.md.*--force"):
        export(folder, target)
    assert (target / "README.md").read_text() == "my notes"
    out = tmp_path / "out"
    export(folder, out)
    (out / "extra.txt").write_text("added")
    with pytest.raises(UserError, match="extra.txt was not written by the export"):
        check(out)
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text("{}")
    with pytest.raises(JobDirError, match="already holds an exported state"):
        run_job(job(data_root, "method=copal", "order=given", f"state.export={state}"), tmp_path / "job2")
    assert (state / "state.json").read_text() == "{}"
