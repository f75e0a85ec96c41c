"""notebooks/03_graph_and_segments.ipynb is stored clean, uses the public API and runs.

A minimal runner until tests/test_notebooks.py (which executes every notebook) is present;
then this file defers to it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import recommender

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_graph_and_segments.ipynb"

if (ROOT / "tests" / "test_notebooks.py").exists():
    pytest.skip("tests/test_notebooks.py runs every notebook", allow_module_level=True)


def test_stored_clean_and_public() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    for cell in code:
        for line in "".join(cell["source"]).splitlines():
            match = re.match(r"(?:from|import) (recommender\S*)(?: import (.*))?", line)
            if not match:
                continue
            module, names = match[1], [n.strip() for n in (match[2] or "").split(",") if n]
            assert not any(part.startswith("_") for part in module.split(".")), line
            assert not any(n.startswith("_") for n in names), line
            if module == "recommender":
                assert set(names) <= set(recommender.__all__), line


def test_runs_top_to_bottom(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = tmp_path / "kernels" / "recommender-test"
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "recommender (tests)", "language": "python"}  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(folder.parent)], ensure_native_kernel=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = KernelManager(kernel_name="recommender-test", kernel_spec_manager=specs)
    where = {"metadata": {"path": str(NOTEBOOK.parent)}}
    client = nbclient.NotebookClient(nb, km=km, timeout=180, allow_errors=False, resources=where)
    client.execute(cleanup_kc=True)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
