"""The method contract: a new method is one file. A method defined here, in the test alone, runs the
whole protocol — planner, resume, export and load of its memory across processes — without any
change to the package; and no module outside ``methods/`` tests a method's name."""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, compose

from copal_exp.protocol.job import run_job
from copal_exp.protocol.settings import register_method_configs
from copal_exp.pruning.masks import select_mask
from copal_exp.pruning.methods import METHODS, PruningMethod
from copal_exp.pruning.methods.wanda import accumulate_input_norms, wanda_score


class RememberingWanda(PruningMethod):
    """Wanda whose scores accumulate over the datasets seen, S_t = decay · S_{t−1} + |W| · ‖X_t‖."""

    carries_memory = True
    memory_file = "scores.safetensors"
    memory_options = ("decay",)
    inits = ("global",)

    @dataclass
    class Options:
        decay: float = 1.0

        def check(self):
            if not 0 < float(self.decay) <= 1:
                raise ValueError(f"method.decay={self.decay!r}: must lie in (0, 1]")

    def new_statistics(self, weight):
        return torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)

    def accumulate(self, stats, inputs, outputs, bias):
        return accumulate_input_norms(stats, inputs)

    def prune(self, name, weight, stats, memory, pattern=None):
        score = wanda_score(weight, stats)
        if memory is not None:
            score = score + self.opts.decay * memory
        keep = select_mask(score, pattern or self.pattern, group="row")
        return weight * keep, keep, score


@pytest.fixture
def remembering_wanda(monkeypatch):
    RememberingWanda.name = "remembering_wanda"
    monkeypatch.setitem(METHODS, "remembering_wanda", RememberingWanda)
    register_method_configs()
    yield "remembering_wanda"
    # the option leaves Hydra's ConfigStore with the test: later tests compose the package's methods only
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().repo["method"].pop("remembering_wanda.yaml")
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        compose(["method=remembering_wanda"])


def test_a_method_defined_in_a_test_runs_the_whole_protocol(tmp_path, data_root, remembering_wanda):
    base = [*TINY, f"data.root={data_root}", f"method={remembering_wanda}"]
    results = run_job(compose([*base, "method.decay=0.5"]), tmp_path / "all")
    assert results["status"] == "complete" and len(results["permutations"]) == 6
    assert results["plan"]["prune_steps"] == 15 and results["plan"]["state_keys"] == "prefix"  # memory → prefixes
    assert not results["weight_stasis"] and results["sparsity"]["overall"] == pytest.approx(0.5)
    # its memory crosses processes: export after one dataset, load, continue = one uninterrupted run
    given = [*base, "order=given"]
    whole = run_job(compose([*given, "datasets=[wikitext2,ptb]"]), tmp_path / "whole")
    run_job(compose([*given, "datasets=[wikitext2]", f"state.export={tmp_path / 's'}"]), tmp_path / "one")
    assert (tmp_path / "s" / "scores.safetensors").is_file()
    assert json.loads((tmp_path / "s" / "state.json").read_text())["method"] == remembering_wanda
    second = run_job(compose([*given, "datasets=[ptb]", f"state.load={tmp_path / 's'}"]), tmp_path / "two")
    assert second["permutations"][0]["ppl_matrix"][0][0] == whole["permutations"][0]["ppl_matrix"][1][1]
    # its declared memory_options are enforced on load, its own option checks run before anything loads
    from copal_exp.errors import ConfigError, StateError

    with pytest.raises(StateError, match="decay: 1.0 \\(saved\\) → 0.5"):
        run_job(compose([*given, "datasets=[ptb]", "method.decay=0.5", f"state.load={tmp_path / 's'}"]),
                tmp_path / "three")
    with pytest.raises(ConfigError, match="method.decay=2"):
        run_job(compose([*base, "method.decay=2"]), tmp_path / "four")
    # and its label is the default one of a method without options in the label
    from copal_exp.reporting.runs import collect
    from copal_exp.reporting.tables import comparison_table

    assert "remembering_wanda" in set(comparison_table(collect(tmp_path / "all"))["method"])


def method_name_tests(path: Path, names: set[str]) -> list[str]:
    """Comparisons (``==``, ``!=``, ``in``) against a registered method's name, as ``file:line``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                values = part.elts if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [part]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_module_outside_methods_tests_a_method_name():
    package = REPO / "src" / "copal_exp"
    names = set(METHODS)
    offenders = [hit for path in sorted(package.rglob("*.py")) if "methods" not in path.parts
                 for hit in method_name_tests(path, names)]
    assert offenders == []



def test_the_name_check_finds_a_name_test(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text('if s.method == "copal" or name in ("wanda", "x"):\n    pass\n')
    assert method_name_tests(sample, set(METHODS)) == ["probe.py:1", "probe.py:1"]
