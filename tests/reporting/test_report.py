"""The report command and the analysis notebook on a small real sweep made here (tiny_llama, real data)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "COPAL_DATA_DIR": str(data_root)}
    common = ["model=tiny_llama", "data.seqlen=32", "eval.max_windows=1", "run.progress=false", "logger=none"]
    for sub, args in (("a", ["method=wanda,copal", "sparsity.ratio=0.5,0.7", "data.nsamples=2"]),
                      ("b", ["method=wanda", "data.nsamples=1,3"])):
        proc = subprocess.run([sys.executable, "-m", "copal_exp", "-m", *args, *common, f"hydra.sweep.dir={out / sub}"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def report(*args):
    proc = subprocess.run([sys.executable, "-m", "copal_exp.report", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_numbers_come_from_the_result_files(sweep):
    out = report(sweep / "a")
    results = [json.loads(p.read_text()) for p in sorted((sweep / "a").glob("*/results.json"))]
    for r in results:
        assert f"{r['summary']['a_ppl']:.3f}" in out and f"{r['summary']['m_bwt']:.3f}" in out
    assert (sweep / "a" / "report.csv").is_file() and (sweep / "a" / "report.tex").is_file()
    assert (sweep / "a" / "ppl_matrices.png").stat().st_size > 5000


def test_a_report_says_what_it_compares(sweep):
    report(sweep / "a")
    md = (sweep / "a" / "report.md").read_text().splitlines()
    head = md[:md.index("")]
    assert head[0] == "- models: tiny_llama"
    assert head[1].startswith("- datasets: wikitext2, ptb, c4 (6 order(s) per job)")
    assert head[2] == "- sparsity: unstructured 50%, unstructured 70%"
    assert head[3] == "- calibration: 2 segments × 32 tokens per step, seed 0"
    assert head[4] == "- evaluation: 32-token windows, at most 1 per dataset"
    assert head[5].startswith("- code: copal_exp 0.1.0, commit ")
    assert (sweep / "a" / "report.tex").read_text().startswith("% models: tiny_llama\n")


def test_paper_tables_and_figures(sweep):
    out = report(sweep / "a", "--kind", "table2")
    assert "paper LLaMA-7B a_bwt" in out and "0.569" in out  # paper: Wanda, LLaMA-7B, 50 %
    assert "paper LLaMA-7B a\\_bwt" in (sweep / "a" / "table2.tex").read_text()  # escaped for LaTeX
    assert "50\\%" in (sweep / "a" / "table2.tex").read_text()
    assert "±" in report(sweep / "a", "--kind", "table3")
    assert "±" in report(sweep / "a", "--kind", "appendix_e")
    assert "WS" not in report(sweep / "a", "--kind", "table1").split("copal")[1]
    report(sweep / "a", "--kind", "fig1")
    assert (sweep / "a" / "fig1.png").stat().st_size > 5000
    report(sweep / "b", "--kind", "fig3")
    assert (sweep / "b" / "fig3.png").stat().st_size > 5000


def test_analysis_notebook_executes(sweep, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("COPAL_SWEEP", str(sweep / "a"))
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    assert (sweep / "a" / "notebook_bwt.png").is_file() and (sweep / "a" / "notebook_fig1.png").is_file()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "4 finished jobs" in outputs


def test_rows_that_differ_in_a_swept_key_show_it(sweep):
    out = report(sweep / "b")  # method=wanda, data.nsamples=1,3
    header = next(line for line in out.splitlines() if line.startswith("|"))
    assert "data.nsamples" in header
    rows = [line for line in out.splitlines() if line.startswith("| wanda")]
    assert len(rows) == 2 and len(set(rows)) == 2 and "| 1 " in rows[0] + rows[1] and "| 3 " in rows[0] + rows[1]


# every sweep kind the Makefile's paper targets produce, in miniature (same sub-sweep layout and swept keys)
SWEEP_KINDS = {
    "table1": {"baselines": [["method=magnitude", "method.init=global"], ["method=magnitude", "method.init=sequential"]],
               "copal": [["method=copal"]]},
    "table2": {"dense": [["method=dense"]],
               "pruned": [["method=wanda", "sparsity=unstructured"], ["method=wanda", "sparsity=2:4"],
                          ["method=copal", "sparsity=unstructured"], ["method=copal", "sparsity=2:4"]]},
    "table3": {".": [["method=wanda"], ["method=copal"]]},
    "fig1": {".": [["method=wanda", "sparsity.ratio=0.3"], ["method=wanda", "sparsity.ratio=0.7"]]},
    "fig3": {".": [["method=wanda", "data.nsamples=1"], ["method=wanda", "data.nsamples=2"]]},
}


@pytest.mark.parametrize("kind", list(SWEEP_KINDS))
def test_analysis_notebook_on_every_sweep_kind(kind, tmp_path, data_root, monkeypatch):
    import nbformat
    from conftest import TINY, compose
    from nbclient import NotebookClient

    from copal_exp.protocol.job import run_job

    sweep = tmp_path / kind
    for sub, jobs in SWEEP_KINDS[kind].items():
        for n, overrides in enumerate(jobs):
            run_job(compose([*TINY, f"data.root={data_root}", "datasets=[wikitext2,ptb]", *overrides]),
                    sweep / sub / str(n))
    monkeypatch.setenv("COPAL_SWEEP", str(sweep))
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    jobs = sum(len(j) for j in SWEEP_KINDS[kind].values())
    assert f"{jobs} finished jobs" in outputs
    assert (sweep / "notebook_matrices.png").is_file()
    if kind in ("fig1", "fig3"):
        assert (sweep / f"notebook_{kind}.png").is_file()


def test_a_four_domain_stream_through_results_report_and_notebook(tmp_path, data_root, monkeypatch):
    """T = 4 (three built-in domains and one of the user's own) with order=balanced: the forgetting table in
    results.json and forgetting.csv, every report kind, the forgetting figure, and the notebook."""
    import csv

    import nbformat
    from conftest import TINY, compose
    from nbclient import NotebookClient

    from copal_exp.protocol.job import run_job

    text = tmp_path / "legal.txt"
    text.write_text("\n\n".join(f"Clause {i}: the court shall hear the matter of party {i % 7} against party "
                                f"{(i * 3) % 11} before the end of term {i % 4}." for i in range(400)))
    sweep = tmp_path / "stream4"
    base = [*TINY, f"data.root={data_root}", "datasets=[wikitext2,ptb,c4,legal]", "order=balanced",
            f"+data.sources.legal.path={text}"]
    jobs = {m: run_job(compose([*base, f"method={m}"]), sweep / str(k)) for k, m in enumerate(["wanda", "copal"])}
    copal = jobs["copal"]
    assert [len(p["order"]) for p in copal["permutations"]] == [4] * 4
    assert copal["plan"]["orders"]["construction"] == "williams"
    for p in copal["permutations"]:
        table = p["forgetting"]
        assert len(table) == 4 and all(v is None for v in table[0])
        assert p["forgetting_curve"][-1] == pytest.approx(p["bwt"])
    assert copal["forgetting"]["mean"][-1] == pytest.approx(copal["summary"]["a_bwt"])
    assert copal["forgetting"]["worst"][-1] == pytest.approx(copal["summary"]["m_bwt"])
    rows = list(csv.DictReader((sweep / "1" / "forgetting.csv").open()))
    assert len(rows) == 4 * 6 and {r["dataset"] for r in rows} == {"wikitext2", "ptb", "c4", "legal"}

    out = report(sweep, "--kind", "forgetting")
    assert "step 4" in out and f"{copal['forgetting']['mean'][-1]:.3f}" in out
    assert (sweep / "forgetting.png").stat().st_size > 5000
    assert "legal BWT" in report(sweep, "--kind", "table3")
    report(sweep)
    assert (sweep / "ppl_matrices.png").stat().st_size > 5000
    for kind in ("table1", "table2", "appendix_e"):
        report(sweep, "--kind", kind)

    monkeypatch.setenv("COPAL_SWEEP", str(sweep))
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "2 finished jobs" in outputs
    assert (sweep / "notebook_forgetting.png").is_file() and (sweep / "notebook_matrices.png").is_file()
