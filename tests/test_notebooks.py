"""Every notebook in notebooks/ is stored clean, uses the public API, and runs top to bottom.

The notebooks are executed with nbclient in a kernel running this very interpreter (so the
installed package and its dependencies are the ones under test), with notebooks/ as the working
directory, as Jupyter starts them. A notebook added to notebooks/ is picked up without changing
this file.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import recommender


def _need(module: str) -> Any:
    """Import a notebook-runner dependency of the ``test`` extra. A virtual environment made
    before they joined the extra skips these tests; CI (``CI`` set) installs them and fails
    loudly if one is missing."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is missing: pip install -e '.[test]'")


nbformat = _need("nbformat")
_need("ipykernel")
KernelSpecManager = _need("jupyter_client.kernelspec").KernelSpecManager
KernelManager = _need("jupyter_client.manager").KernelManager
NotebookClient = _need("nbclient").NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds one cell may take (the slowest sample cell takes a few seconds on a laptop).
CELL_TIMEOUT = 180
KERNEL_NAME = "recommender-test"


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_notebooks_are_there() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01_explore_flows.ipynb", "02_recommend_and_evaluate.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs or execution counts; clear them "
        "(Jupyter: Edit > Clear All Outputs, or `jupyter nbconvert --clear-output --inplace`)."
    )


def _imports(source: str) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) for every import of a code cell; IPython magics are skipped."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_uses_only_the_public_api(path: Path) -> None:
    problems = []
    for source in _code_cells(path):
        for module, names in _imports(source):
            parts = module.split(".")
            if parts[0] != "recommender":
                continue
            if any(p.startswith("_") for p in parts):
                problems.append(f"private module {module}")
            if module == "recommender":
                problems += [f"{n} is not in recommender.__all__" for n in names
                             if n != "*" and n not in recommender.__all__]  # fmt: skip
            problems += [f"private name {module}.{n}" for n in names if n.startswith("_")]
    assert not problems, f"{path.name}: {problems}"


def test_import_checker_sees_private_use() -> None:
    source = "from recommender import recommend, _LAZY\nimport recommender.policy._yaml\n%time x"
    assert _imports(source) == [
        ("recommender", ("recommend", "_LAZY")),
        ("recommender.policy._yaml", ()),
    ]


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A kernel spec that starts ipykernel with this interpreter, whatever else is installed."""
    folder = tmp_path_factory.mktemp("kernels") / KERNEL_NAME
    folder.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "recommender (tests)",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return KernelSpecManager(kernel_dirs=[str(folder.parent)], ensure_native_kernel=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_top_to_bottom(path: Path, kernel_specs: Any) -> None:
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    # cleanup_kc: stop the channels and the kernel although the client did not create the manager
    client.execute(cleanup_kc=True)  # raises CellExecutionError with the cell and its traceback
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
