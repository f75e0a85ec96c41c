"""Input checks (recommender.ingest.checked / overlap): copies among inputs of different formats
counted once and accounted as ``overlap_dropped``, several clusters in one capture, far-apart
windows within one capture.

The two-cluster capture is written here, by hand, from the field lists of Cilium's
``api/v1/flow/flow.proto`` (``Flow``: ``time``, ``verdict``, ``IP``, ``l4``, ``source``,
``destination``, ``Type``, ``node_name``, ``event_type``, ``traffic_direction``,
``trace_observation_point``, ``is_reply``; ``Endpoint``: ``ID``, ``identity``, ``cluster_name``,
``namespace``, ``labels``, ``pod_name``, ``workloads``) and of ``GetFlowsResponse`` (``flow``,
``node_name``, ``time``) as ``hubble observe -o json`` prints them; Cilium gives every pod the
label ``k8s:io.cilium.k8s.policy.cluster=<cluster>`` and Hubble Relay in a ClusterMesh names
nodes ``<cluster>/<node>``. The values are ours.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _flowlogs import hubble_line

from recommender import IngestLedger, read_flows
from recommender.ingest.overlap import InputCheck, row_cluster

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_row_cluster_truth_table() -> None:
    """The cluster a row was observed in: the node's cluster/ prefix first, else the
    observing endpoint's cluster label (source for egress, destination for ingress)."""
    cases = [
        # node, src label, dst label, direction -> cluster
        (("east/worker-1", None, None, "egress"), "east"),
        (("east/worker-1", "west", "west", "ingress"), "east"),
        (("worker-1", "east", "west", "egress"), "east"),
        (("worker-1", "east", "west", "ingress"), "west"),
        (("worker-1", "east", "west", None), "east"),
        (("worker-1", None, "west", "egress"), "west"),
        (("worker-1", None, None, "egress"), None),
        ((None, None, None, None), None),
    ]
    for args, expected in cases:
        assert row_cluster(*args) == expected, args


def test_two_clusters_in_one_capture_are_named_with_their_rows(tmp_path: Path) -> None:
    capture = tmp_path / "mesh.json"
    lines = [hubble_line(T0 + timedelta(seconds=i), 40000 + i, cluster="east",
                         node="east/worker-1") for i in range(3)]
    lines += [hubble_line(T0 + timedelta(seconds=i), 41000 + i, cluster="west",
                          node="west/worker-9") for i in range(2)]
    capture.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    table = read_flows(capture, ledger=ledger)
    assert table.num_rows == 5 and ledger.balanced
    assert ledger.clusters == {"east": 3, "west": 2}
    [warning] = ledger.warnings
    assert "mixes 2 clusters: east (3 rows), west (2 rows)" in warning


def test_cluster_from_labels_alone(tmp_path: Path) -> None:
    """Without a cluster/ prefix in the node name (one cluster's Hubble Relay), the pods'
    cluster label tells."""
    capture = tmp_path / "two.json"
    lines = [hubble_line(T0, 40000, cluster="east", node="worker-1"),
             hubble_line(T0, 40001, cluster="west", node="worker-2"),
             hubble_line(T0, 40002, cluster=None, node="worker-3")]
    capture.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    read_flows(capture, ledger=ledger)
    assert ledger.clusters == {"east": 1, "west": 1}
    assert any("east (1 row), west (1 row); 1 row name no cluster" in w
               for w in ledger.warnings)


def test_one_cluster_gives_no_warning(tmp_path: Path) -> None:
    capture = tmp_path / "one.json"
    capture.write_text("\n".join(
        hubble_line(T0 + timedelta(hours=i), 40000 + i, cluster="east", node="east/w1")
        for i in range(4)) + "\n")
    ledger = IngestLedger()
    read_flows(capture, ledger=ledger)
    assert ledger.clusters == {"east": 4} and ledger.warnings == []


def test_far_apart_windows_within_one_capture(tmp_path: Path) -> None:
    capture = tmp_path / "gap.json"
    later = T0 + timedelta(days=150)
    capture.write_text("\n".join([
        hubble_line(T0, 40000, cluster="east", node="w1"),
        hubble_line(T0 + timedelta(days=1), 40001, cluster="east", node="w1"),
        hubble_line(later, 40002, cluster="east", node="w1"),
    ]) + "\n")
    ledger = IngestLedger()
    read_flows(capture, ledger=ledger)
    [warning] = ledger.warnings
    assert ("2 windows far apart: 2026-01-01..2026-01-02 (2 rows), 2026-05-31 (1 row); "
            "149 days apart") in warning


def test_days_a_week_apart_are_one_window(tmp_path: Path) -> None:
    capture = tmp_path / "week.json"
    capture.write_text("\n".join(
        hubble_line(T0 + timedelta(days=7 * i), 40000 + i, cluster=None, node="w1")
        for i in range(4)) + "\n")
    ledger = IngestLedger()
    read_flows(capture, ledger=ledger)
    assert ledger.warnings == []


# --- copies among inputs: the ledger's truth table -------------------------------------------


def _alone(path: Path) -> int:
    ledger = IngestLedger()
    read_flows(path, ledger=ledger)
    return ledger.used


def _shifted_calico(tmp_path: Path, days: int) -> Path:
    out = tmp_path / f"calico-{days}d.jsonl"
    with gzip.open(SAMPLES / "calico.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f if line.strip()]
    for r in records:
        r["start_time"] += days * 86400
        r["end_time"] += days * 86400
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


@pytest.fixture(scope="module")
def hubble_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A canonical Parquet copy of the Hubble sample (its rows name the Hubble file)."""
    out = tmp_path_factory.mktemp("copy") / "hubble-copy.parquet"
    pq.write_table(read_flows(SAMPLES / "hubble.jsonl.gz"), out)
    return out


@pytest.mark.parametrize(
    ("inputs", "kept", "dropped"),
    [
        (["hubble"], ["hubble"], []),
        (["hubble", "calico"], ["hubble"], ["calico"]),
        (["calico", "hubble"], ["hubble"], ["calico"]),  # the order given does not matter
        (["hubble", "calico", "parquet"], ["hubble"], ["calico", "parquet"]),
        # a canonical copy next to its source: the copy is kept (both as detailed)
        (["hubble", "copy"], ["copy"], ["hubble"]),
        # the same connections five months apart: not copies
        (["hubble", "calico+150d"], ["hubble", "calico+150d"], []),
    ],
)
def test_overlap_ledger_truth_table(
    tmp_path: Path, hubble_copy: Path, inputs: list[str], kept: list[str], dropped: list[str]
) -> None:
    files = {
        "hubble": SAMPLES / "hubble.jsonl.gz",
        "calico": SAMPLES / "calico.jsonl.gz",
        "parquet": SAMPLES / "flows.parquet",
        "copy": hubble_copy,
        "calico+150d": _shifted_calico(tmp_path, 150),
    }
    used_alone = {name: _alone(files[name]) for name in inputs}
    ledger = IngestLedger()
    table = read_flows([files[name] for name in inputs], ledger=ledger)
    assert ledger.used == table.num_rows == sum(used_alone[n] for n in kept)
    assert ledger.overlap_dropped == sum(used_alone[n] for n in dropped)
    assert ledger.balanced
    assert ledger.read == (ledger.used + ledger.duplicate + ledger.reply
                           + ledger.overlap_dropped + ledger.skipped_total)
    for name in inputs:
        entry = ledger.files[str(files[name])]
        assert entry.get("overlap_dropped", 0) == (used_alone[name] if name in dropped else 0)
    copies = [w for w in ledger.warnings if "holds the same connections" in w]
    assert len(copies) == len(dropped)
    if "calico+150d" in inputs:
        assert any("windows far apart" in w and "150 days apart" in w for w in ledger.warnings)


def test_ledger_dict_carries_the_checks(tmp_path: Path) -> None:
    ledger = IngestLedger()
    read_flows([SAMPLES / "hubble.jsonl.gz", SAMPLES / "calico.jsonl.gz"], ledger=ledger)
    out = ledger.to_dict()
    assert out["overlap_dropped"] == ledger.overlap_dropped > 0
    assert out["balanced"] is True and out["warnings"] == ledger.warnings
    assert out["clusters"] == {"default": ledger.used}  # the sample's pods say cluster default


def test_input_check_without_a_file_uses_each_rows_file() -> None:
    """The low-level check on rows that name their file (what a library user may feed)."""
    import pyarrow as pa

    check = InputCheck()
    for name, fmt, when in (("a", "hubble", T0), ("b", "calico", T0 + timedelta(days=150))):
        check.observe(pa.RecordBatch.from_pylist([{
            "source_file": name, "source_format": fmt, "src_namespace": "x",
            "src_workload": "w", "dst_namespace": "y", "dst_workload": "v",
            "protocol": "TCP", "dst_port": 80, "start_time": when,
        }]))
    found = check.findings()
    assert found.dropped == ()  # same connections, not in the same window: no copies
    assert len(found.warnings) == 1 and "150 days apart" in found.warnings[0]


def test_hostile_cluster_names_are_shown_escaped(tmp_path: Path) -> None:
    capture = tmp_path / "hostile.json"
    capture.write_text("\n".join([
        hubble_line(T0, 40000, cluster="east\x1b[2J", node="w1"),
        hubble_line(T0, 40001, cluster="w" * 300, node="w2"),
    ]) + "\n")
    ledger = IngestLedger()
    read_flows(capture, ledger=ledger)
    [warning] = ledger.warnings
    assert "\x1b" not in warning and "east\\x1b[2J (1 row)" in warning
    assert len(warning) < 400
    assert set(ledger.clusters) == {"east\x1b[2J", "w" * 300}  # kept as they are in the JSON
