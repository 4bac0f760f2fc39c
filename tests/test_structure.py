"""Imports point one way: cli -> augment/export/preflight -> pipeline/stats -> stages -> backends -> ops -> runner
-> io -> records/config (the runner, Ray glue over the output, serves the corpus pipeline and the canvas).

``amg/`` imports nothing else of curate, ``train/`` only the config loader and the output layout, and nothing in
the package imports ``testing/`` (random models are for tests and benchmarks). Every import counts,
also the ones inside functions, and no two modules import each other, directly or round a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Most specific prefix wins. A module may import a lower rank, or its own package.
RANKS = {
    "curate.amg": 0, "curate.uris": 0,
    "curate": 1, "curate.records": 1, "curate.config": 1, "curate.rows": 1, "curate.samples": 1,
    "curate.io": 2,
    "curate.train": 3, "curate.backends.types": 3, "curate.runner": 3,
    "curate.ops": 4,
    "curate.backends": 5,
    "curate.stages": 6,
    "curate.pipeline": 7, "curate.stats": 7,
    "curate.augment": 8, "curate.preflight": 8, "curate.export": 8,
    "curate.schemas": 9,
    "curate.cli": 10,
    "curate.testing": 11,
}
# train reads what the pipeline writes: the shared config loader, the module that knows the output's
# file names and the modules that read files and records (local or object storage), nothing else.
STANDALONE = {"curate.amg": set(),
              "curate.train": {"curate.config", "curate.io.layout", "curate.io.objpath", "curate.io.fs",
                               "curate.io.reader"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def owner(name: str, table) -> str:
    """The longest key of ``table`` that is ``name`` or a package above it."""
    best = ""
    for key in table:
        if (name == key or name.startswith(key + ".")) and len(key) > len(best):
            best = key
    return best


def curate_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("curate")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("curate") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (REPO / node.module.replace(".", "/") / f"{a.name}.py").exists()}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (REPO / "curate").rglob("*.py")}
    return {name: {m for m in curate_imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_module_has_a_rank():
    missing = [m for m in graph() if not owner(m, RANKS)]
    assert not missing


def test_imports_point_one_way():
    wrong = []
    for name, imports in graph().items():
        mine = owner(name, RANKS)
        for target in imports:
            theirs = owner(target, RANKS)
            if theirs == "curate" or (mine != "curate" and (theirs == mine or target.startswith(mine + "."))):
                continue  # the package root (its version) is everyone's; a package may use its own modules
            if RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the direction:\n" + "\n".join(sorted(wrong))


def test_amg_and_train_stand_alone():
    wrong = []
    for name, imports in graph().items():
        package = owner(name, STANDALONE)
        if not package:
            continue
        for target in imports:
            if not target.startswith(package) and owner(target, {k: 0 for k in STANDALONE[package]}) == "" \
                    and target != "curate":
                wrong.append(f"{name} -> {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    # A package's __init__ that re-exports its own modules is not a circle of meaning.
    circles = [c for c in circles if not any(m.rsplit(".", 1)[0] == c[0] or c[0] == m for m in c[1:-1])
               or len({owner(m, RANKS) for m in c}) > 1]
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The direction test must be able to fail: an io module importing a stage is caught."""
    bad = REPO / "curate" / "io" / "_direction_probe.py"
    bad.write_text("from curate.stages.regions import RegionsStage\n")
    try:
        wrong = [t for t in graph()["curate.io._direction_probe"]
                 if RANKS[owner(t, RANKS)] >= RANKS["curate.io"]]
        assert wrong == ["curate.stages.regions"]
    finally:
        bad.unlink()
