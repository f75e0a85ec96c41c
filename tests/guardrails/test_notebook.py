"""The guardrails notebook runs, top to bottom, with the public API (stored without outputs).

A minimal execution without a Jupyter kernel: the code cells are run in order in one
namespace from the repository root, as a kernel would; their own asserts check the results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_guardrails_and_diff.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_runs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for index, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
            source = "".join(cell["source"])
            exec(compile(source, f"{NOTEBOOK.name} cell {index}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["section"]["conflicts_total"] >= 1  # type: ignore[index]
