"""Figures a person reads: the dense reference row, one colour scale relative to dense with a colour
bar, text colours that stay readable, and one figure per job once a sweep is large."""

import itertools

import matplotlib

matplotlib.use("Agg")

from copal_exp.metrics.heatmap import _text_colour, matrix_figure  # noqa: E402
from copal_exp.reporting.figures import heatmaps  # noqa: E402

DATASETS = ["wikitext2", "ptb", "c4"]
DENSE = {"wikitext2": 10.0, "ptb": 40.0, "c4": 20.0}


def run(k: int) -> dict:
    perms = [{"order": list(o), "ppl_matrix": [[DENSE[d] * (1 + 0.1 * (t + k)) for d in DATASETS] for t in range(3)]}
             for o in itertools.permutations(DATASETS)]
    return {"config": {"method": {"name": "wanda", "init": "global"},
                       "sparsity": {"pattern": "unstructured", "ratio": 0.3 + 0.05 * k}},
            "datasets": DATASETS, "dense_ppl": DENSE, "permutations": perms}


def test_matrix_figure_has_the_dense_row_and_a_colour_bar():
    fig = matrix_figure(run(0)["permutations"][0]["ppl_matrix"], DATASETS, DATASETS, "x", dense=DENSE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dense", "1: wikitext2", "2: ptb", "3: c4"]
    assert len(fig.axes) == 2 and "dense" in fig.axes[1].get_ylabel()  # the colour bar
    texts = {t.get_text() for t in ax.texts}
    assert {"10.0", "40.0", "20.0"} <= texts  # the numbers are perplexities, not ratios


def test_text_colour_follows_the_cell():
    assert _text_colour((0.05, 0.05, 0.3, 1)) == "white" and _text_colour((0.98, 0.95, 0.9, 1)) == "black"


def test_a_large_sweep_gets_one_figure_per_job(tmp_path):
    runs = [run(k) for k in range(13)]
    path = heatmaps(runs, tmp_path / "ppl_matrices.png")
    assert path.stat().st_size > 5000
    per_job = sorted((tmp_path / "ppl_matrices").glob("*.png"))
    assert len(per_job) == 13 and all(p.stat().st_size > 5000 for p in per_job)
