"""The package's shape (issue 16): stage packages, few top-level modules, no import cycle, and
dependencies that point one way (a package imports only the layers below it).

Every import counts, at module level or inside a function (a lazy import that breaks a cycle at
run time still ties the design). ``../shared/tools/package_layout.py`` checks the first three
the same way; this test needs no ``../shared``.
"""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "recommender"

#: Lowest first. A module of a layer may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_forked"),
    ("policy",),
    ("config",),
    ("ingest", "samples"),
    ("aggregate",),
    ("analysis",),
    ("synthesis",),
    ("guardrails",),
    ("evaluation",),
    ("engine",),
    ("report",),
    ("pipeline",),
    ("job",),
    ("cli",),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(mods: dict[str, Path]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for name, path in mods.items():
        graph.add_node(name)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if (
                    target
                    and target not in (name, "recommender")
                    and not name.startswith(target + ".")
                ):
                    graph.add_edge(name, target)
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_at_most_12_modules_at_the_top() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 12, sorted(top)


def test_no_import_cycle_between_modules() -> None:
    graph = _imports(_modules())
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


def test_packages_import_only_lower_layers() -> None:
    graph = _imports(_modules())
    wrong = []
    for src, dst in graph.edges:
        a, b = _layer(src), _layer(dst)
        if a in ("", "_compat", "__main__") or a == b:
            continue
        assert a in RANK and b in RANK, f"{src} or {dst} is in no layer: add it to LAYERS"
        if RANK[b] > RANK[a]:
            wrong.append(f"{src} -> {dst}")
    assert wrong == []


def test_runtime_never_imports_the_sample_generators() -> None:
    graph = _imports(_modules())
    users = {src for src, dst in graph.edges if _layer(dst) == "samples"}
    assert {u for u in users if _layer(u) != "samples"} == set()


@pytest.mark.parametrize("old", sorted(importlib.import_module("recommender._compat").MOVED))
def test_an_old_import_path_still_works_and_says_where_it_moved(old: str) -> None:
    from recommender._compat import MOVED

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert any(
        issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught
    ) or old in __import__("sys").modules


def test_every_package_says_what_it_takes_and_gives() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 2, f"{init} needs a docstring naming its stage"
