"""The continual protocol on tiny_llama with the real text domains (byte-level tokenizer)."""

import json

import pytest
from conftest import compose

from copal_exp.models.loading import load_model
from copal_exp.protocol.job import run_job
from copal_exp.protocol.plan import make_plan
from copal_exp.protocol.runner import Experiment
from copal_exp.protocol.settings import validate

SMALL = ["model=tiny_llama", "data.nsamples=2", "data.seqlen=64", "eval.max_windows=2", "run.progress=false",
         "logger=none"]


def run(tmp_path, data_root, *overrides):
    cfg = compose([*SMALL, f"data.root={data_root}", *overrides])
    return run_job(cfg, tmp_path)


def experiment(data_root, *overrides):
    settings = validate(compose([*SMALL, f"data.root={data_root}", *overrides]))
    model, tokenizer = load_model(settings.model)
    exp = Experiment(settings, model, tokenizer)
    return exp, exp.run()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria"])
def test_sequential_init_baselines_show_weight_stasis(tmp_path, data_root, method):
    results = run(tmp_path, data_root, f"method={method}", "method.init=sequential")
    assert len(results["permutations"]) == 6
    for perm in results["permutations"]:
        assert perm["weight_stasis"] is True
        assert perm["mask_change"][1:] == [0.0, 0.0]
    assert results["weight_stasis"] is True


def test_copal_masks_change_between_steps(tmp_path, data_root):
    results = run(tmp_path, data_root, "method=copal")
    changes = [c for perm in results["permutations"] for c in perm["mask_change"][1:]]
    assert all(c > 0 for c in changes)
    assert results["weight_stasis"] is False
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "complete" and on_disk["summary"] == results["summary"]


def test_mask_changes_once_per_pair_and_masks_leave_memory(tmp_path, data_root, monkeypatch):
    """Mask changes are computed once per pair of adjacent states, whichever orders share the pair, and a
    saved state's masks live in ``states/`` only: host memory does not grow with the number of states."""
    import copal_exp.protocol.states as states
    from copal_exp.io.checkpoint import StateStore

    pairs = []
    real = states.mask_change
    monkeypatch.setattr(states, "mask_change", lambda a, b, sizes: pairs.append(1) or real(a, b, sizes))
    exp = Experiment(validate(compose([*SMALL, f"data.root={data_root}", "method=wanda"])),
                     *load_model(validate(compose(SMALL)).model), store=StateStore(tmp_path))
    exp.store.initialise({})
    results = exp.run()
    # global init: one state per dataset, 3 datasets → 6 ordered adjacent pairs over the 6 orders' 12 pairs
    assert len(pairs) == 6 and len(exp.cache.mask_changes) == 6
    assert all(state.masks is None for state in exp.states.values())
    assert all(c > 0 for perm in results["permutations"] for c in perm["mask_change"][1:])


def test_global_init_masks_depend_only_on_current_dataset(data_root):
    exp, results = experiment(data_root, "method=wanda", "method.init=global", "run.planner=false")
    by_dataset = {}
    for key, step in exp.states.items():  # without the planner every order recomputes every step
        dataset = key[-1]
        if dataset in by_dataset:
            for name, packed in step.masks.items():
                assert (packed == by_dataset[dataset][name]).all(), (key, name)
        by_dataset[dataset] = step.masks
    assert len(exp.states) == 18 and len(by_dataset) == 3


@pytest.mark.parametrize("method,init", [("sparsegpt", "sequential"), ("copal", "global"), ("wanda", "global")])
def test_planner_gives_identical_results(data_root, method, init):
    with_planner = experiment(data_root, f"method={method}", f"method.init={init}" if method != "copal" else "method.group=row")[1]
    without = experiment(data_root, f"method={method}", f"method.init={init}" if method != "copal" else "method.group=row",
                         "run.planner=false")[1]
    assert [p["ppl_matrix"] for p in with_planner["permutations"]] == [p["ppl_matrix"] for p in without["permutations"]]
    assert with_planner["summary"] == without["summary"]
    assert with_planner["plan"]["prune_steps"] < without["plan"]["prune_steps"] == 18


@pytest.mark.parametrize("T,prefix_steps", [(2, 4), (3, 15), (4, 64)])
def test_plan_counts(T, prefix_steps):
    import itertools
    orders = list(itertools.permutations(range(T)))
    assert make_plan(orders, carries_state=False).prune_steps == T
    assert make_plan(orders, carries_state=True).prune_steps == prefix_steps
    assert make_plan(orders, carries_state=True, planner=False).prune_steps == T * len(orders)


def test_results_fields_and_csv(tmp_path, data_root):
    import pandas as pd

    results = run(tmp_path, data_root, "method=sparsegpt", "sparsity=2:4", "order=given")
    assert set(results) >= {"config", "dense_ppl", "permutations", "summary", "per_dataset", "sparsity", "timings",
                            "plan", "data", "versions", "seed"} - {"versions"}
    perm = results["permutations"][0]
    assert perm["order"] == ["wikitext2", "ptb", "c4"] and len(perm["ppl_matrix"]) == 3
    assert results["sparsity"]["overall"] == pytest.approx(0.5)
    assert all(v == pytest.approx(0.5) for v in results["sparsity"]["layers"].values())
    stand_ins = {d: results["data"][d]["calibration"]["stand_in"] for d in results["datasets"]}
    assert all(stand_ins.values())  # shared/data lacks the train splits: the substitution is recorded
    frame = pd.read_csv(tmp_path / "ppl_matrices.csv")
    assert len(frame) == 9 and set(frame["dataset"]) == {"wikitext2", "ptb", "c4"}


def test_dense_method_matrix_and_zero_bwt(tmp_path, data_root):
    results = run(tmp_path, data_root, "method=dense")
    assert results["summary"]["a_bwt"] == 0.0
    assert results["permutations"][0]["ppl_matrix"][2] == [results["dense_ppl"][d] for d in results["datasets"]]


def test_results_grow_after_every_step(tmp_path, data_root):
    """While an order runs, results.json and the CSV already hold its rows so far (no BWT until it ends)."""
    import copy

    from copal_exp.io.results import write_results

    seen = []

    def save(results):
        write_results(results, tmp_path)
        seen.append((copy.deepcopy(results), (tmp_path / "ppl_matrices.csv").read_text().count("\n") - 1))

    settings = validate(compose([*SMALL, f"data.root={data_root}", "method=copal", "order=given"]))
    model, tokenizer = load_model(settings.model)
    Experiment(settings, model, tokenizer, on_progress=save).run()
    after_steps = [(r["permutations"], csv_rows) for r, csv_rows in seen if r.get("permutations")]
    assert [len(p[0]["ppl_matrix"]) for p, _ in after_steps] == [1, 2, 3]
    assert [p[0]["complete"] for p, _ in after_steps] == [False, False, True]
    assert [p[0]["bwt"] is None for p, _ in after_steps] == [True, True, False]
    assert [rows for _, rows in after_steps] == [3, 6, 9]  # one CSV row per dataset and step so far
    first = next(r for r, _ in seen if r.get("permutations"))
    assert "summary" not in first and "summary" in seen[-1][0]
