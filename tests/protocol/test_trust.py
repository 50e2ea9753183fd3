"""The second trust pass: nothing of the user's is deleted or replaced without their word, old and new
inputs are never mixed, and every failure leaves a directory the same command can resume. One test per
root cause; damaged folders are built in ``tmp_path``."""

import json
import re
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


# ------------------------------------------------------------------ 6. nothing silently left out of a report
def test_every_job_a_sweep_launched_is_reported_or_listed_with_its_reason(tmp_path, data_root, monkeypatch, capsys):
    import os
    import shutil
    import subprocess
    import sys

    from conftest import read_only

    from copal_exp.cli import report
    from copal_exp.reporting import runs, wandb_view

    sweep = tmp_path / "sweep"
    # job 0 runs, job 1 is refused by validation, job 2 runs; then job 2's folder is lost (a sweep killed
    # before it started leaves the same)
    proc = subprocess.run([sys.executable, "-m", "copal_exp", "-m", *TINY, "method=wanda", "order=given",
                           "sparsity.ratio=0.5,1.5,0.6", f"hydra.sweep.dir={sweep}"], capture_output=True, text=True,
                          env={**os.environ, "COPAL_DATA_DIR": str(data_root)}, timeout=600)
    assert proc.returncode != 0 and (sweep / "0" / "results.json").is_file()
    shutil.rmtree(sweep / "2")
    (sweep / "extra" / "job").mkdir(parents=True)  # a folder the walk cannot open
    scandir = os.scandir

    def refusing(path="."):
        if str(path).endswith("extra"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    skipped = []
    (done,) = runs.collect(sweep, skipped=skipped)
    reasons = dict(skipped)
    assert done["_path"] == str(sweep / "0")
    assert "refused before it computed anything" in reasons[str(sweep / "1")]
    assert "sparsity.ratio" in reasons[str(sweep / "1")]
    assert "never started" in reasons[str(sweep / "2")] and "sparsity.ratio=0.6" in reasons[str(sweep / "2")]
    assert "cannot be read (Permission denied)" in reasons[str(sweep / "extra")]
    # a read-only sweep still prints its table, writes nothing, and says so; --out writes the files elsewhere
    with read_only(sweep):
        report.main([str(sweep)])
        printed = capsys.readouterr()
        assert "wanda" in printed.out and "skipped 3 job(s)" in printed.out
        assert "cannot be written: the table is printed only" in printed.err
        assert not (sweep / "report.md").exists()
        report.main([str(sweep), "--out", str(tmp_path / "tables")])
        assert "never started" in (tmp_path / "tables" / "report.md").read_text()
        assert (tmp_path / "tables" / "ppl_matrices.png").is_file()
        # the W&B view says which jobs it leaves out
        wandb_view.main([str(sweep), "--out", str(tmp_path / "view")])
    view = json.loads((tmp_path / "view" / "wandb_view.json").read_text())
    assert view["runs"] == 1 and {o["job"] for o in view["omitted"]} == set(reasons)
    assert f"omitted {sweep / '1'}: refused" in capsys.readouterr().out


# ------------------------------------------------------------------ 7. custom corpora read as the user meant
def test_own_corpora_are_read_as_meant_listed_and_never_scored_on_their_calibration_text(tmp_path, data_root, caplog):
    import gzip

    from copal_exp.data.custom import load_custom
    from copal_exp.errors import ConfigError, DataError
    from copal_exp.protocol.settings import validate

    docs = [f"Ruling {i}: the appeal of party {i} is dismissed with costs." for i in range(20)]
    folder = tmp_path / "corpus"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "notes.txt").write_text("not a document")
    (folder / ".draft.txt.swp").write_text("not a document")
    (folder / "a.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in docs[:10]).encode()))
    (folder / "b.csv").write_text("id,text\n" + "".join(f'{i},"{d}"\n' for i, d in enumerate(docs[10:], 10)))
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4")
    evaluation = load_custom("legal", "evaluation", {"path": str(folder)})
    assert evaluation.rows == [docs[i] for i in (4, 9, 14, 19)]  # the gzip'd JSON lines and the CSV's text column
    record = evaluation.provenance
    assert record["read"] == ["a.jsonl.gz", "b.csv"]
    assert {s["file"]: s["why"] for s in record["skipped"]} == {
        ".draft.txt.swp": "hidden", ".git/notes.txt": "hidden", "scan.pdf": "suffix '.pdf' is not a known format"}
    assert "skipped 3 file(s)" in caplog.text
    # a file of an unknown format is refused, naming the allowed suffixes, before anything loads
    (tmp_path / "rulings.docx").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"path=.*rulings.docx: format auto does not know the suffix '.docx'; "
                                          r"allowed suffixes: .txt, .*\.jsonl\.gz"):
        validate(compose(["datasets=[ptb,legal]", f"+data.sources.legal.path={tmp_path / 'rulings.docx'}"]))
    # calibration and evaluation as one file, or sharing documents, is refused
    (tmp_path / "cal.txt").write_text("\n\n".join(docs[:15]))
    (tmp_path / "ev.txt").write_text("\n\n".join(docs[12:]))
    with pytest.raises(ConfigError, match="calibration= and evaluation= are the same file"):
        validate(compose(["datasets=[ptb,legal]", f"+data.sources.legal.calibration={tmp_path / 'cal.txt'}",
                          f"+data.sources.legal.evaluation={tmp_path / 'cal.txt'}"]))
    shared = [f"+data.sources.legal.calibration={tmp_path / 'cal.txt'}", f"+data.sources.legal.evaluation={tmp_path / 'ev.txt'}"]
    with pytest.raises(DataError, match="3 of the 8 evaluation documents .* also occur in the calibration part"):
        run_job(job(data_root, "method=wanda", "order=given", "datasets=[ptb,legal]", *shared), tmp_path / "job")


# ------------------------------------------------------------------ 10. calibration size checked for every dataset
def test_c4_with_far_more_segments_than_documents_is_refused_before_the_model(tmp_path, data_root, monkeypatch):
    import copal_exp.models.loading
    from copal_exp.errors import DataError

    monkeypatch.setattr(copal_exp.models.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DataError, match=r"data.nsamples=5000 segments of data.seqlen=32 tokens, but at most \d+ of the "
                                        r"1000 documents in .*first1000.jsonl are long enough.*lower data.nsamples"):
        run_job(job(data_root, "datasets=[c4]", "data.nsamples=5000"), tmp_path / "job")


# ------------------------------------------------------------------ 8/9. read-only folders: one line, nothing lost
def test_read_only_folders_give_one_line_and_a_cache_that_cannot_be_written_is_a_warning(tmp_path, data_root):
    import os
    import subprocess
    import sys

    from conftest import read_only

    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root), "COPAL_CACHE_DIR": str(cache)}

    def launch(folder):
        return subprocess.run([sys.executable, "-m", "copal_exp", *TINY, "method=wanda", "order=given",
                               f"hydra.run.dir={folder}"], capture_output=True, text=True, env=env, timeout=600)

    (cache / "dense").mkdir()
    with read_only(cache / "dense"):  # an empty cache that cannot be written: the job runs without it, and says so
        done = launch(tmp_path / "job")
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"dense-perplexity cache .* cannot be written \((Operation not permitted|Permission denied)\): the job goes on", done.stdout)
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "job" / "results.json").read_text())["status"] == "complete"
    with read_only(tmp_path / "job"):  # finished and read-only: reported, exit 0, nothing written
        again = launch(tmp_path / "job")
    assert again.returncode == 0 and "nothing to do" in again.stderr + again.stdout, again.stderr[-2000:]
    (tmp_path / "fresh").mkdir()
    with read_only(tmp_path / "fresh"):  # anything else: one line naming the folder, exit 2
        refused = launch(tmp_path / "fresh")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"Error: the output directory {tmp_path / 'fresh'} cannot be written" in refused.stderr
