"""Shared fixtures: the ../shared material (skipped cleanly when absent) and small flow tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, settings

from recommender.ingest.schema import FLOW_SCHEMA, conform_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

# Property tests check behaviour, not speed: no per-example deadline and no "too slow" health
# check, so a loaded CI machine cannot fail them. Examples are derandomized, so the suite is the
# same on every run (a CI run cannot fail on a case no earlier run saw); set
# RECOMMENDER_HYPOTHESIS=explore to search new random examples locally.
settings.register_profile(
    "recommender",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "explore", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("RECOMMENDER_HYPOTHESIS", "recommender"))


@pytest.fixture
def shared() -> Path:
    if not DATASETS.is_dir():
        pytest.skip("../shared/ (third-party datasets and oracles) is not beside this checkout")
    return SHARED


def flow_row(**values: Any) -> dict[str, Any]:
    """One canonical row with defaults: an allowed TCP connection between two workloads."""
    row: dict[str, Any] = {
        "start_time": T0,
        "end_time": T0,
        "src_kind": "workload",
        "dst_kind": "workload",
        "protocol": "TCP",
        "verdict": "allowed",
        "is_reply": False,
        "connections": 1,
        "source_format": "test",
        "source_file": "test",
        "source_row": 0,
    }
    row.update(values)
    if "src_workload" in row and "src_labels" not in row:
        row["src_labels"] = {"app": row["src_workload"]}
    if "dst_workload" in row and "dst_labels" not in row:
        row["dst_labels"] = {"app": row["dst_workload"]}
    return row


def make_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A canonical table from row dicts (missing columns are nulls)."""
    for i, row in enumerate(rows):
        row.setdefault("source_row", i + 1)
        if isinstance(row.get("src_labels"), dict):
            row["src_labels"] = list(row["src_labels"].items())
        if isinstance(row.get("dst_labels"), dict):
            row["dst_labels"] = list(row["dst_labels"].items())
    columns = {name: [r.get(name) for r in rows] for name in FLOW_SCHEMA.names}
    table = pa.table({n: pa.array(v, type=FLOW_SCHEMA.field(n).type) for n, v in columns.items()})
    return conform_table(table)


@pytest.fixture
def table_of() -> Callable[[list[dict[str, Any]]], pa.Table]:
    return make_table


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def topology(workloads: dict[tuple[str, str], dict[str, str]]) -> list[dict[str, Any]]:
    """Namespaces and one Pod per workload, as NCA reads them.

    Pods carry their selector labels plus a pod-template-hash that differs from anything seen
    in flows: the policies must hold after a rollout.
    """
    docs: list[dict[str, Any]] = []
    for ns in sorted({ns for ns, _ in workloads}):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            }
        )
    for (ns, name), labels in sorted(workloads.items()):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {**labels, "pod-template-hash": "rollout-b"},
                },
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
        )
    return docs


@pytest.fixture
def nca_check(shared: Path, tmp_path: Path) -> Callable[..., tuple[int, int, str]]:
    """Run the independent oracle: network-config-analyzer through shared/tools.

    Returns a function ``check(manifests, topology_docs, expectations)`` giving
    ``(passed, failed, output)``. Expectations are dicts with src, dst ("ns/pod"), protocol,
    port and allowed.
    """
    tool = shared / "tools" / "nca_connectivity.py"
    if not tool.is_file():
        pytest.skip("shared/tools/nca_connectivity.py is absent")
    if shutil.which("nca") is None and not (Path(sys.executable).parent / "nca").exists():
        pytest.skip("network-config-analyzer (nca) is not installed")
    nca = shutil.which("nca") or str(Path(sys.executable).parent / "nca")
    counter = [0]

    def check(
        manifests: list[dict[str, Any]],
        topo: list[dict[str, Any]],
        expectations: list[dict[str, Any]],
    ) -> tuple[int, int, str]:
        counter[0] += 1
        work = tmp_path / f"nca{counter[0]}"
        work.mkdir()
        (work / "policies.yaml").write_text(yaml.safe_dump_all(manifests) if manifests else "")
        (work / "topology.yaml").write_text(yaml.safe_dump_all(topo))
        (tmp_path / f"expect{counter[0]}.yaml").write_text(yaml.safe_dump(expectations))
        proc = subprocess.run(
            [
                sys.executable,
                str(tool),
                "--nca",
                nca,
                "--check",
                str(tmp_path / f"expect{counter[0]}.yaml"),
                str(work),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = proc.stdout + proc.stderr
        for line in out.splitlines():
            if line.startswith("nca-check:"):
                parts = line.split()
                return int(parts[1]), int(parts[3]), out
        raise AssertionError(f"the oracle did not run (exit {proc.returncode}):\n{out}")

    return check
