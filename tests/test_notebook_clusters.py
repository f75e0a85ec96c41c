"""notebooks/05_clusters.ipynb: stored without outputs, public API only, and it runs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_clusters.ipynb"


def test_clusters_notebook_runs_on_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None
               for c in cells if c["cell_type"] == "code")
    # Only the package itself, never its private modules.
    imports = re.findall(r"^\s*(?:from|import) (\S+)", "\n".join(code), re.M)
    assert set(imports) <= {"recommender", "pathlib", "pandas"}
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"print": lambda *a, **k: None}
    for source in code:
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    assert namespace["model"].n_clusters_ > 0  # type: ignore[attr-defined]
    assert os.fspath(namespace["FLOWS"]).endswith("flows.parquet")
