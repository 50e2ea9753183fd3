"""The package's layout: sub-packages by concept, imports only downhill along the data's path, and no
import cycle between modules (imports inside functions count too)."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "copal_exp"
#: the order of the sub-packages: each may import only those before it (``errors`` and ``registry`` are the roots;
#: the three command modules ``__main__``, ``report`` and ``export`` sit above ``cli``)
ORDER = ["errors", "registry", "io", "data", "config", "models", "pruning", "evaluation", "metrics", "protocol", "reporting", "cli",
         "__main__", "report", "export"]


def imports(path: Path) -> list[tuple[str, int]]:
    """``(copal_exp module imported, line)`` for every import of the package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "copal_exp":
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "copal_exp"]
    return found


def unit(module: str) -> str:
    """The sub-package (or top-level module) a dotted ``copal_exp`` name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "copal_exp"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("copal_exp", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def upward_imports(package: Path = PACKAGE) -> list[str]:
    hits = []
    for path in sorted(package.rglob("*.py")):
        here = unit(".".join(("copal_exp", *path.relative_to(package).with_suffix("").parts)))
        for target, line in imports(path):
            there = unit(target)
            if there in ("copal_exp", here):
                continue
            if ORDER.index(there) > ORDER.index(here):
                hits.append(f"{path.relative_to(package)}:{line} ({here}) imports {target} ({there})")
    return hits


def test_every_module_lives_in_a_known_place():
    units = {unit(name) for name in modules()} - {"copal_exp"}
    assert units <= set(ORDER), f"modules outside the layout: {sorted(units - set(ORDER))}"


def test_imports_run_downhill():
    assert upward_imports() == []


def test_no_import_cycle_between_modules():
    known = modules()
    graph = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(path):
            target = target if target in known else target.rsplit(".", 1)[0]  # `from pkg.mod import name`
            if target in known and target != name and not known[target].name == "__init__.py":
                graph[name].add(target)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checks_find_an_upward_import(tmp_path):
    """The check is not vacuous: a data module importing the protocol is reported."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.py").write_text("def f():\n    from copal_exp.protocol.job import run_job\n")
    assert upward_imports(tmp_path) == ["data/bad.py:2 (data) imports copal_exp.protocol.job.run_job (protocol)"]
