"""Every job the Makefile's sweep targets launch (table1, table2 with RIA, DSnoT and OWL, …, zeroshot, stream6)
composes and passes validation — the check a job makes before anything loads — so a two-hour `make table2` cannot
stop at its 30th job on a refused combination. Read from the Makefile itself: a target that gains a method is
covered as soon as it is written."""

import itertools
import re
import shlex

import pytest
from conftest import REPO, compose

from copal_exp.protocol.settings import validate

MAKEFILE = REPO / "Makefile"


def makefile_sweeps() -> dict[str, list[list[str]]]:
    """Per recipe line that starts a copal_exp multirun (``$(PAPER)`` or ``-m copal_exp -m``): the overrides it
    sweeps (Makefile variables other than SCALE dropped: model, sweep dir and ARGS), keyed ``target#n``."""
    text = MAKEFILE.read_text()
    scale = re.search(r"^SCALE\s*\?=\s*(.*)$", text, re.M).group(1).split()
    sweeps, target = {}, None
    for line in text.splitlines():
        head = re.match(r"^([A-Za-z0-9_-]+):", line)
        if head:
            target = head.group(1)
            continue
        if not line.startswith("\t") or not ("$(PAPER)" in line or "-m copal_exp -m" in line):
            continue
        tokens = shlex.split(line.strip())
        overrides = [t for t in tokens if "=" in t and "$(" not in t and not t.startswith("hydra.")]
        if "$(PAPER)" in line:
            overrides = scale + overrides
        sweeps[f"{target}#{sum(k.startswith(target + '#') for k in sweeps)}"] = overrides
    return sweeps


def expand(overrides: list[str]) -> list[list[str]]:
    """Hydra's basic sweeper on plain comma lists: one job per combination."""
    choices = []
    for override in overrides:
        key, value = override.split("=", 1)
        values = value.split(",") if "," in value and not value.startswith("[") else [value]
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


SWEEPS = makefile_sweeps()
MODEL = re.search(r"^MODEL\s*\?=\s*(\S+)", MAKEFILE.read_text(), re.M).group(1)


def test_the_paper_targets_are_all_read():
    targets = {key.split("#")[0] for key in SWEEPS}
    assert {"table1", "table2", "table3", "appendix_e", "fig1", "fig3", "zeroshot", "stream6", "demo"} <= targets
    table2 = [job for key in SWEEPS if key.startswith("table2") for job in expand(SWEEPS[key])]
    methods = {next(o for o in job if o.startswith("method=")) for job in table2}
    assert methods == {f"method={m}" for m in ("dense", "magnitude", "sparsegpt", "wanda", "ria", "dsnot", "copal")}
    assert len(table2) == 1 + 6 * 3 * 2  # dense; six methods × three patterns × uniform/OWL


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_every_job_of_a_make_target_validates(sweep, data_root):
    for job in expand(SWEEPS[sweep]):
        # as `make` runs it, on the Makefile's default MODEL (validation loads no model)
        merged = {"model": MODEL, "data.root": str(data_root), **dict(o.split("=", 1) for o in job)}
        settings = validate(compose([f"{k}={v}" for k, v in merged.items()]))
        assert settings.method == merged.get("method", settings.method)
        assert settings.model.name == MODEL
        if merged.get("sparsity.allocation") == "owl":
            assert not settings.allocation.uniform
            expected = "accumulated" if settings.method_class.carries_memory else "wanda"
            assert settings.allocation.statistic == expected
