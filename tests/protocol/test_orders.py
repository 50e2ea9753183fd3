"""Orders for long streams: generation, order.index into each kind, the planner's sharing, the plan line."""

import itertools
import logging

import pytest
from conftest import TINY, compose

from copal_exp.errors import ConfigError
from copal_exp.protocol.orders import (
    balanced,
    cyclic_square,
    is_latin_square,
    sample,
    williams_square,
)
from copal_exp.protocol.plan import make_plan
from copal_exp.protocol.settings import validate

NAMES = [f"d{i}" for i in range(10)]


@pytest.mark.parametrize("n", range(2, 9))
def test_balanced_orders_are_a_latin_square(n):
    plan = balanced(NAMES[:n], {})
    assert len(plan.orders) == n and is_latin_square(plan.orders)
    assert len(set(plan.orders)) == n
    if n % 2 == 0:  # Williams: every dataset directly follows every other exactly once
        assert plan.construction == "williams"
        pairs = [(o[t], o[t + 1]) for o in plan.orders for t in range(n - 1)]
        assert len(pairs) == len(set(pairs)) == n * (n - 1)
    else:
        assert plan.construction == "cyclic" and plan.orders[1] == tuple(NAMES[1:n] + NAMES[:1])


def test_square_constructions_by_hand():
    assert williams_square(4) == [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]]
    assert cyclic_square(3) == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert not is_latin_square([("a", "b"), ("a", "b")])


def test_sampled_orders_are_distinct_reproducible_and_seeded():
    first = sample(NAMES[:5], {"count": 12, "seed": 3}).orders
    assert len(first) == len(set(first)) == 12
    assert all(sorted(o) == NAMES[:5] for o in first)
    assert sample(NAMES[:5], {"count": 12, "seed": 3}).orders == first
    assert sample(NAMES[:5], {"count": 12, "seed": 4}).orders != first
    every = sample(NAMES[:3], {"count": 6, "seed": 0}).orders
    assert sorted(every) == sorted(itertools.permutations(NAMES[:3]))
    large = sample(NAMES, {"count": 7, "seed": 1})  # 10! orders: drawn by rejection, never listed
    assert len(set(large.orders)) == 7 and all(sorted(o) == sorted(NAMES) for o in large.orders)
    assert large.construction == "sample (seed 1)"


def refused(*overrides):
    with pytest.raises(ConfigError) as info:
        validate(compose([*TINY, *overrides]))
    return str(info.value)


def test_order_keys_are_checked_before_anything_loads():
    four = "datasets=[wikitext2,ptb,c4,shakespeare]"
    message = refused(four)  # order=all_perms is the default: 24 orders
    assert "24 orders" in message and "order=sample" in message and "order=balanced" in message
    assert "order.allow_large=true" in message
    assert len(validate(compose([*TINY, four, "+order.allow_large=true"])).orders) == 24
    assert "order.count=30: 3 datasets have 6 distinct orders; allowed: 1..6" in refused("order=sample",
                                                                                        "order.count=30")
    assert "order.count=2: applies to order=sample only" in refused("+order.count=2")
    assert "order.index=3: allowed values are 0..2 for order=balanced" in refused("order=balanced", "order.index=3")
    assert "allowed values" in refused("order.kind=random")


@pytest.mark.parametrize("kind", ["all_perms", "given", "sample", "balanced"])
def test_order_index_picks_one_order_of_every_kind(kind):
    every = validate(compose([*TINY, f"order={kind}"])).orders
    expected = {"all_perms": 6, "given": 1, "sample": 6, "balanced": 3}[kind]
    assert len(every) == expected
    for k, order in enumerate(every):
        picked = validate(compose([*TINY, f"order={kind}", f"order.index={k}"]))
        assert picked.orders == [order] and picked.order_plan.orders == every


def test_the_planner_computes_each_shared_prefix_of_sampled_orders_once():
    orders = sample(NAMES[:4], {"count": 10, "seed": 0}).orders
    prefixes = {o[:t] for o in orders for t in range(1, 5)}
    plan = make_plan(orders, carries_state=True)
    assert plan.prune_steps == len(prefixes) < 40
    assert make_plan(orders, carries_state=False).prune_steps == 4  # global init: one state per dataset
    assert make_plan(orders, carries_state=True, planner=False).prune_steps == 40


def test_a_sampled_job_records_its_orders_and_shares_prefixes(tmp_path, data_root):
    from copal_exp.protocol.job import run_job

    args = [*TINY, f"data.root={data_root}", "method=copal", "order=sample", "order.count=4", "order.seed=2"]
    results = run_job(compose(args), tmp_path)
    orders = [tuple(p["order"]) for p in results["permutations"]]
    assert orders == sample(["wikitext2", "ptb", "c4"], {"count": 4, "seed": 2}).orders
    assert results["plan"]["orders"] == {"kind": "sample", "index": None, "construction": "sample (seed 2)",
                                         "count": 4, "count_requested": 4, "seed": 2}
    assert results["plan"]["prune_steps"] == len({o[:t] for o in orders for t in (1, 2, 3)})
    # orders sharing a prefix share its rows exactly
    by_prefix = {}
    for p in results["permutations"]:
        for t in range(3):
            row = by_prefix.setdefault(tuple(p["order"][:t + 1]), p["ppl_matrix"][t])
            assert row == p["ppl_matrix"][t]


def test_a_job_says_its_plan_and_estimates_its_time_from_earlier_jobs(tmp_path, data_root, monkeypatch, caplog):
    from copal_exp.protocol.job import run_job

    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path / "cache"))
    args = [*TINY, f"data.root={data_root}", "method=copal", "order=balanced"]
    with caplog.at_level(logging.INFO, logger="copal_exp"):
        run_job(compose(args), tmp_path / "first")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert line.startswith("plan: 3 order(s) (order=balanced), 9 prune step(s), 27 perplexity evaluation(s) of "
                           "3 dataset(s); no estimate: no earlier job of model=tiny_llama")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="copal_exp"):
        run_job(compose([*TINY, f"data.root={data_root}", "method=copal", "order=all_perms"]), tmp_path / "second")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert "6 order(s) (order=all_perms), 15 prune step(s) (18 without sharing prefixes)" in line
    assert "estimated" in line and "per copal step" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="copal_exp"):
        run_job(compose([*TINY, f"data.root={data_root}", "method=wanda", "order=given"]), tmp_path / "third")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("plan:"))
    assert "no estimate: no earlier job of model=tiny_llama on this machine measured method=wanda" in line


def test_the_estimate_is_the_recorded_medians_times_the_plan(tmp_path, monkeypatch):
    from copal_exp.protocol import costs

    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path))
    settings = validate(compose([*TINY, "method=wanda", "order=all_perms"]))
    key = costs.machine_key(settings.device, 2)
    path = costs.costs_file("tiny_llama")
    path.parent.mkdir(parents=True)
    import json

    per_token = {"prune": {"wanda": [1e-3, 3e-3, 2e-3]}, "evaluation": [1e-4],
                 "windows": {"wikitext2@32": 5, "ptb@32": 1, "c4@32": 1}}
    path.write_text(json.dumps({key: per_token}))
    seconds, why = costs.estimate_seconds(settings, settings.device, 2)
    step = 2e-3 * 2 * 32  # median per calibration token × nsamples × seqlen
    evaluation = 1e-4 * (1 + 1 + 1) * 32  # eval.max_windows=1 caps wikitext2's 5 windows
    assert seconds == pytest.approx(3 * (step + evaluation))  # 3 prune steps (global init), each evaluated
    assert costs.estimate_seconds(settings, settings.device, 1)[0] is None  # other threads: another machine key


def test_a_steps_recorded_cost_is_its_wall_time_but_its_evaluations(tmp_path, monkeypatch):
    """What is recorded per step is everything the step cost but its evaluations (checkpointing and logging
    included), per calibration token; without a wall time, its phases but the evaluations."""
    import json
    from types import SimpleNamespace

    from copal_exp.protocol import costs

    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path))
    settings = validate(compose([*TINY, "method=wanda", "order=all_perms"]))
    tokens = settings.data.nsamples * settings.data.seqlen
    states = [SimpleNamespace(key=("a",), seconds={"statistics": 1.0, "masks": 0.5, "evaluation": 2.0}),
              SimpleNamespace(key=("b",), seconds={"statistics": 1.0, "evaluation": 2.0, "zeroshot": 1.0})]
    costs.record_costs(settings, "cpu", 2, states, {"wikitext2": 1, "ptb": 1, "c4": 1}, {("a",): 6.0})
    record = json.loads(costs.costs_file("tiny_llama").read_text())[costs.machine_key("cpu", 2)]
    assert record["prune"]["wanda"] == pytest.approx([(6.0 - 2.0) / tokens, 1.0 / tokens])
    assert record["evaluation"] == pytest.approx([2.0 / (3 * settings.data.seqlen)] * 2)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_the_memory_plan_counts_the_carried_states_of_a_t_step_prefix(n):
    """All orders of T datasets, computed depth first: the T − 1 open prefixes and the state being built are
    alive at once (COPAL's G of each), so the planned memory grows with T; a balanced square shares no
    prefix and holds two."""
    every = list(itertools.permutations(NAMES[:n]))
    assert make_plan(every, carries_state=True).peak_carries() == n
    assert make_plan(balanced(NAMES[:n], {}).orders, carries_state=True).peak_carries() == 2
    import torch

    from copal_exp.models.loading import build_tiny_llama
    from copal_exp.protocol.memory import plan_memory

    model, _ = build_tiny_llama({"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
                                 "num_kv_heads": 2, "context": 128, "init_seed": 3})
    names = ["wikitext2", "ptb", "c4", "shakespeare", "bible"][:n]
    settings = validate(compose([*TINY, "method=copal", f"datasets=[{','.join(names)}]", "+order.allow_large=true"]))
    plan = plan_memory(model, settings, torch.float32, "cpu")
    (need,) = [x for x in plan.needs if x.what.startswith("copal memory of")]
    assert need.what == f"copal memory of {n} carried state(s)"
    one = 4 * sum(lin.weight.numel() for layer in model.model.layers for lin in
                  [m for m in layer.modules() if isinstance(m, torch.nn.Linear)])
    assert need.bytes == n * one


def test_the_six_domain_experiment_composes_to_a_williams_square():
    from copal_exp.protocol.costs import plan_counts

    settings = validate(compose(["experiment=stream6", "method=copal", "run.progress=false", "logger=none"]))
    assert settings.datasets == ["wikitext2", "ptb", "c4", "shakespeare", "bible", "sotu"]
    assert settings.order_plan.construction == "williams" and is_latin_square(settings.orders)
    assert plan_counts(settings) == {"orders": 6, "prune_steps": 36, "prune_steps_without_planner": 36,
                                     "evaluations": 216}
    wanda = validate(compose(["experiment=stream6", "method=wanda", "logger=none"]))
    assert plan_counts(wanda)["prune_steps"] == 6  # global init: one state per domain, shared by every order


def test_one_job_per_balanced_order_merges_to_the_whole_set(tmp_path, data_root):
    from copal_exp.protocol.job import run_job
    from copal_exp.reporting.runs import collect

    base = [*TINY, f"data.root={data_root}", "method=copal", "order=balanced"]
    whole = run_job(compose(base), tmp_path / "whole")
    for k in range(3):
        run_job(compose([*base, f"order.index={k}"]), tmp_path / "sweep" / str(k))
    (merged,) = collect(tmp_path / "sweep")
    assert merged["order_indices"] == [0, 1, 2]
    assert [p["order"] for p in merged["permutations"]] == [p["order"] for p in whole["permutations"]]
    assert merged["summary"] == pytest.approx(whole["summary"])
    for key in ("mean", "worst", "min"):
        assert merged["forgetting"][key][1:] == pytest.approx(whole["forgetting"][key][1:])
