"""Staged and enforcing forms of the same policies allow the same connections (issue 20).

The job runs its first night on the sample twice, with and without a staged rollout, in every
dialect (host policies included, so that Calico's staged global policies are there too):

- network-config-analyzer (an independent oracle, through ../shared/tools/nca_connectivity.py)
  finds the same connectivity for the Kubernetes ``_staged/`` tree, read as an operator applies
  it (``kubectl apply -k _staged``: its kustomizations followed), and for the enforcing tree;
- this project's evaluator gives the same coverage of the flows for the staged and the
  enforcing form of every dialect (Calico's staged kinds judged as if enforced);
- ../shared/tools/validate_manifests.py accepts the Calico trees (``StagedNetworkPolicy``,
  ``StagedGlobalNetworkPolicy`` and their enforcing kinds) and the Cilium trees (the policies
  under ``_staged/`` that audit mode evaluates, and the enforcing ones).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from _jobdata import job_file, noon
from conftest import topology

from recommender import recommend
from recommender.job.runner import run_job

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
TOOLS = ROOT.parent / "shared" / "tools"
DAY = date(2026, 1, 5)
OPTIONS = {"dialects": ["kubernetes", "calico", "cilium"], "host_policies": True}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The job's outputs for the sample's day: ``staged`` (rollout.staged, every namespace
    still learning) and ``enforcing`` (no rollout)."""
    tmp = tmp_path_factory.mktemp("rollout-forms")
    flows = tmp / "flows" / f"date={DAY:%Y-%m-%d}"
    flows.mkdir(parents=True)
    shutil.copy(SAMPLE, flows / "flows.parquet")
    out = {}
    for name, staged in (("staged", True), ("enforcing", False)):
        config = job_file(
            tmp / f"{name}.yaml",
            {
                "input": {"uri": str(tmp / "flows"), "window_days": 1},
                "output": {"uri": str(tmp / name)},
                "rollout": {"staged": staged},
            },
            **OPTIONS,
        )
        run_job(config, as_of=noon(DAY))
        out[name] = tmp / name
    return out


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    """The manifests ``kubectl apply -k folder`` applies: its kustomization's resources,
    folders followed through their own kustomizations."""
    (kustomization,) = _docs(folder / "kustomization.yaml")
    out: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = folder / resource
        out += _kustomize(path) if path.is_dir() else _docs(path)
    return out


def _kinds(folder: Path) -> set[str]:
    return {d["kind"] for p in folder.rglob("*.yaml") for d in _docs(p)}


def test_the_two_forms_are_what_the_rollout_documents(trees: dict[str, Path]) -> None:
    staged, enforcing = trees["staged"], trees["enforcing"]
    for dialect in ("kubernetes", "cilium"):  # the staged folder is not applied by -k
        top = _docs(staged / dialect / "kustomization.yaml")[0]["resources"]
        assert "_staged" not in top
        assert _kustomize(staged / dialect) == []  # every namespace still learning
        assert _kustomize(staged / dialect / "_staged")
        assert not (enforcing / dialect / "_staged").exists()
    assert {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy"} <= _kinds(staged / "calico")
    assert not {"NetworkPolicy", "GlobalNetworkPolicy"} & _kinds(staged / "calico")
    assert {"NetworkPolicy", "GlobalNetworkPolicy"} <= _kinds(enforcing / "calico")


@pytest.mark.oracle
def test_network_config_analyzer_sees_the_same_connectivity(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    tool = TOOLS / "nca_connectivity.py"
    if not tool.is_file():
        pytest.skip("../shared/tools/nca_connectivity.py is absent")
    nca = shutil.which("nca") or str(Path(sys.executable).parent / "nca")
    if not Path(nca).exists():
        pytest.skip("network-config-analyzer (nca) is not installed")
    rec = recommend(SAMPLE)
    pods = topology({k: dict(c.selector.match_labels) for k, c in rec.findings.selectors.items()})

    def connectivity(name: str, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "all.yaml").write_text(yaml.safe_dump_all(manifests + pods))
        done = subprocess.run(
            [sys.executable, str(tool), "--nca", nca, str(folder)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    staged = connectivity("staged", _kustomize(trees["staged"] / "kubernetes" / "_staged"))
    enforcing = connectivity("enforcing", _kustomize(trees["enforcing"] / "kubernetes"))
    assert staged["inputs"]["policies"] == enforcing["inputs"]["policies"] > 0
    assert enforcing["edges"], "NCA found no connectivity at all"
    assert staged["edges"] == enforcing["edges"]
    # and not allow-all: some pod pair is left out
    pairs = {(e["src"], e["dst"]) for e in enforcing["edges"]}
    names = [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in pods
             if d["kind"] == "Pod"]  # fmt: skip
    assert len(pairs) < len(names) * len(names)


def _coverage(policies: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "recommender", "evaluate", str(policies), str(SAMPLE), "--json",
         "--examples", "50"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result.pop("notes", None)  # "N staged policies judged as if enforced"
    return result


@pytest.mark.parametrize("dialect", ["kubernetes", "calico", "cilium"])
def test_the_evaluator_judges_both_forms_alike(trees: dict[str, Path], dialect: str) -> None:
    staged = trees["staged"] / dialect
    if dialect != "calico":
        staged = staged / "_staged"
    ours, theirs = _coverage(staged), _coverage(trees["enforcing"] / dialect)
    assert ours == theirs
    assert theirs["coverage"] > 0.9


@pytest.mark.parametrize("dialect", ["calico", "cilium"])
@pytest.mark.parametrize("form", ["staged", "enforcing"])
def test_the_trees_pass_the_schema_validator(
    trees: dict[str, Path], dialect: str, form: str
) -> None:
    tool = TOOLS / "validate_manifests.py"
    if not tool.is_file():
        pytest.skip("../shared/tools/validate_manifests.py is absent")
    folder = trees[form] / dialect
    if form == "staged" and dialect == "cilium":
        assert (folder / "_staged").is_dir()  # the audit-mode form is validated with the rest
    done = subprocess.run(
        [sys.executable, str(tool), str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
