"""W&B logging in offline mode, read back from the run file; W&B failures never lose local results."""

import json

import pytest
from conftest import compose
from wandb_records import read_run

from copal_exp.protocol.job import run_job

SMALL = ["model=tiny_llama", "data.nsamples=2", "data.seqlen=32", "eval.max_windows=1", "run.progress=false",
         "logger=wandb", "logger.group=test-sweep"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_offline_run_holds_steps_tables_and_summary(tmp_path, data_root, offline):
    results = run_job(compose([*SMALL, f"data.root={data_root}", "method=copal", "sparsity=2:4"]), tmp_path)
    (run_file,) = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    run = read_run(run_file)
    assert run["run"]["group"] == "test-sweep" and run["run"]["job_type"] == "copal"
    assert "model:tiny_llama" in run["run"]["tags"] and "sparsity:2:4" in run["run"]["tags"]
    steps = [row for row in run["history"] if "ppl/wikitext2" in row]
    assert len(steps) == 6 * 3  # one row per permutation and step, each logged once, as its state completed
    first = results["permutations"][0]
    own = sorted((s for s in steps if s["permutation"] == 0), key=lambda s: s["perm0/step"])
    assert [s["perm0/ppl/ptb"] for s in own] == pytest.approx([row[1] for row in first["ppl_matrix"]])
    assert [s["mask_change"] for s in own][1:] == pytest.approx(first["mask_change"][1:])
    assert run["run"]["display_name"] == "tiny_llama · copal (token, row) · 2:4"
    assert run["config"]["code"]["copal_exp"] and "swept" in run["config"]
    for key in ("a_bwt", "m_bwt", "a_ppl", "m_ppl"):
        assert run["summary"][key] == pytest.approx(results["summary"][key])
    tables = [row for row in run["history"] if "ppl_matrices/_type" in row]
    assert tables and tables[0]["ppl_matrices/nrows"] == 18
    assert any("heatmap/0/_type" in row for row in run["history"])
    media = list(tmp_path.glob("wandb/offline-run-*/files/media/table/ppl_matrices_*.table.json"))
    assert json.loads(media[0].read_text())["columns"] == ["order", "step", "step_dataset", "wikitext2", "ptb", "c4"]


def test_wandb_init_failure_keeps_local_results(tmp_path, data_root, offline, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    results = run_job(compose([*SMALL, f"data.root={data_root}", "method=wanda"]), tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "complete" and len(on_disk["permutations"]) == 6
    assert on_disk["summary"] == results["summary"]
    assert "W&B disabled for this job" in caplog.text


def test_wandb_failure_mid_run_keeps_local_results(tmp_path, data_root, offline, monkeypatch, caplog):
    import wandb.sdk.wandb_run as wandb_run

    def broken_log(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(wandb_run.Run, "log", broken_log)
    run_job(compose([*SMALL, f"data.root={data_root}", "method=magnitude"]), tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "complete" and len(on_disk["permutations"]) == 6
    assert "W&B logging failed" in caplog.text


def test_runs_are_named_and_grouped_by_what_they_are(tmp_path):
    from copal_exp.protocol.settings import validate
    from copal_exp.protocol.tracking import run_name, sweep_group

    job = tmp_path / "multirun" / "paper_smollm2_135m" / "table2" / "pruned" / "7"
    assert sweep_group(job, "smollm2_135m") == "paper_smollm2_135m/table2/pruned"
    assert sweep_group(tmp_path / "outputs" / "2026-11-23" / "07-00-00", "tiny_llama") == "tiny_llama/single"
    config = validate(compose(["model=tiny_llama", "method=wanda", "order.index=2", "data.nsamples=4"])).resolved
    name = run_name(config, "unstructured 50%", ["method=wanda", "data.nsamples=4", "hydra.job.num=1"][:2])
    assert name == "tiny_llama · wanda (global) · unstructured 50% · data.nsamples=4 · order 2"


def test_a_sweep_gets_a_wandb_view_that_matches_what_its_runs_logged(tmp_path, data_root, offline):
    """The W&B comparison view written from a sweep's result files names the groups, metrics, step axes
    and config keys its offline runs actually hold."""
    from copal_exp.reporting.wandb_view import build_report, write_view

    sweep = tmp_path / "multirun" / "nsamples"
    base = [s for s in SMALL if not s.startswith("logger.group")] + [f"data.root={data_root}", "datasets=[wikitext2,ptb]"]
    for n, overrides in enumerate([["method=wanda", "data.nsamples=1"], ["method=wanda", "data.nsamples=2"]]):
        run_job(compose([*base, *overrides]), sweep / str(n))
    view = json.loads(write_view(sweep).read_text())
    runs = [read_run(p) for p in sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))]
    assert len(runs) == 2 and view["runs"] == 2
    assert view["groups"] == sorted({r["run"]["group"] for r in runs}) == ["nsamples"]
    assert "data.nsamples" in view["swept_keys"]
    logged = {key for r in runs for row in r["history"] for key in row}
    lines = [p for p in view["panels"] if p["type"] == "line"]
    assert len(lines) == 4  # per order of two datasets: its perplexities and its forgetting curve
    assert {p["y"][0].split("/", 1)[1] for p in lines} == {"ppl/wikitext2", "forgetting"}
    for panel in lines:
        assert panel["x"] in logged and set(panel["y"]) <= logged
    (bar,) = [p for p in view["panels"] if p["type"] == "bar"]
    assert all(set(bar["metrics"]) <= set(r["summary"]) for r in runs)
    (comparer,) = [p for p in view["panels"] if p["type"] == "run_comparer"]
    for key in comparer["columns"]:  # config keys as W&B holds them (nested sections)
        section, name = key.split(".", 1)
        assert all(name.split(".")[0] in r["config"][section] for r in runs), key
    report = build_report(view)  # the real wandb-workspaces objects (saving needs a login)
    assert report.title == view["title"] and len(report.blocks[0].panels) == len(view["panels"])
    assert "Metric('Group') in ['nsamples']" in str(report.blocks[0].runsets[0].filters)
