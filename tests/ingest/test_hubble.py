"""The Hubble reader on the real captures, on hand-made edge cases and on corrupted input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import IngestLedger, RecommenderError, detect_format, read_flows
from recommender.ingest.hubble import infer_reply
from recommender.ingest.schema import COLUMNS

HUBBLE = "hubble-otel-testdata"

# Counts per file: (read, used, duplicate, reply, skipped). The reply counts are those of
# shared/brief/real-data.md §2 (is_reply true, or legacy reply true) plus replies inferred where
# both flags are absent, listed by hand: in 400-tcp four server -> client packets (9080 ->
# 58634 FIN, 14250 -> 39472, 9080 -> 58950 SYN+ACK and PSH), in 400-icmpv4 three ICMP echo
# replies (type 0). Used + duplicate = the other events, one row per distinct 5-tuple.
EXPECTED = {
    "basic-sample-10-flows.json": (10, 5, 0, 5, 0),
    "basic-sample-5-dns-flows.json": (5, 3, 0, 2, 0),
    "basic-sample-330-dns-flows.json": (330, 165, 0, 165, 0),
    "basic-sample-5-http-flows.json": (5, 3, 0, 2, 0),
    "basic-sample-348-http-flows.json": (348, 39, 136, 173, 0),
    "basic-sample-400-icmpv4-flows.json": (18, 3, 8, 7, 0),
    "basic-sample-400-l7-redirected-flows.json": (400, 400, 0, 0, 0),
    "basic-sample-400-tcp-flows.json": (400, 85, 179, 136, 0),
    "basic-sample-400-udp-flows.json": (400, 146, 106, 148, 0),
}


def _plain_reply_count(path: Path) -> int:
    """Replies as the file itself flags them (independent of the reader)."""
    count = 0
    for line in path.read_text().splitlines():
        flow = json.loads(line)["flow"]
        count += bool(flow.get("is_reply") or flow.get("reply"))
    return count


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_capture_counts(shared: Path, name: str):
    path = shared / "datasets" / HUBBLE / name
    ledger = IngestLedger()
    table = read_flows(path, ledger=ledger)
    read, used, duplicate, reply, skipped = EXPECTED[name]
    assert (ledger.read, ledger.used, ledger.duplicate, ledger.reply, ledger.skipped_total) == (
        read,
        used,
        duplicate,
        reply,
        skipped,
    )
    assert ledger.balanced
    assert table.num_rows == used
    inferred = {"basic-sample-400-tcp-flows.json": 4, "basic-sample-400-icmpv4-flows.json": 3}
    assert reply == _plain_reply_count(path) + inferred.get(name, 0)
    assert detect_format(path) == "hubble"


def test_all_captures_together_merge_overlapping_files(shared: Path):
    # 5-dns repeats the first lines of 330-dns, 5-http of 348-http, and the REDIRECTED events
    # of tcp/udp are in l7-redirected too: read together they are duplicates, not new rows.
    ledger = IngestLedger()
    table = read_flows(shared / "datasets" / HUBBLE, ledger=ledger)
    assert (ledger.read, ledger.used, ledger.reply) == (1916, 787, 638)
    assert ledger.balanced and table.num_rows == 787
    assert sum(table["connections"].to_pylist()) == 625
    assert ledger.ignored_files  # SOURCE.md is passed over, not an error


def test_golden_row_productpage_to_reviews(shared: Path):
    table = read_flows(shared / "datasets" / HUBBLE / "basic-sample-400-tcp-flows.json")
    row = table.slice(0, 1).to_pylist()[0]
    assert row["start_time"].isoformat() == "2021-11-10T10:40:56.465598+00:00"
    expected = {
        "src_kind": "workload",
        "src_namespace": "bookinfo",
        "src_workload": "productpage-v1",
        "src_workload_kind": "Deployment",
        "src_pod": "productpage-v1-6b746f74dc-9rcxx",
        "src_ip": "10.244.0.177",
        "src_port": 35128,
        "dst_kind": "workload",
        "dst_namespace": "bookinfo",
        "dst_workload": "reviews-v2",
        "dst_pod": "reviews-v2-7bf8c9648f-r7bs2",
        "dst_ip": "10.244.0.110",
        "dst_port": 9080,
        "protocol": "TCP",
        "verdict": "allowed",
        "is_reply": False,
        "connections": 1,
        "traffic_direction": "egress",
        "observation_point": "TO_PROXY",
        "node": "kind-control-plane",
        "source_format": "hubble",
        "source_row": 1,
    }
    assert {k: row[k] for k in expected} == expected
    labels = dict(row["src_labels"])
    assert labels["app"] == "productpage" and labels["version"] == "v1"
    assert "io.kubernetes.pod.namespace" in labels  # kept in the table; selectors drop it


def test_world_identity_with_pod_name_is_a_workload(shared: Path):
    table = read_flows(shared / "datasets" / HUBBLE / "basic-sample-348-http-flows.json")
    rows = table.to_pylist()
    assert not [r for r in rows if r["dst_kind"] == "external" and r["dst_pod"]]
    # 35 requests to productpage carry reserved:world and the productpage pod name.
    assert {r["dst_workload"] for r in rows if r["dst_namespace"] == "bookinfo"} >= {
        "productpage-v1",
        "reviews-v1",
    }
    http = [r for r in rows if r["l7_protocol"] == "http"]
    assert http and all(r["http_method"] and r["http_path"].startswith("/") for r in http)


def test_minimal_exporter_lines(shared: Path):
    path = shared / "datasets" / "cilium-starwars-demo" / "export.rst.sample-flows.jsonl"
    table = read_flows(path)
    rows = table.to_pylist()
    assert [r["verdict"] for r in rows] == ["denied", "denied"]
    assert rows[0]["protocol"] == "ICMPv6" and rows[0]["src_kind"] == "unknown"
    assert rows[1]["src_pod"] == "xwing" and rows[1]["dst_workload"] == "deathstar"
    assert rows[1]["drop_reason"] == "POLICY_DENIED"


def _line(**flow_overrides) -> str:
    flow = {
        "time": "2026-01-05T09:00:00.000000001Z",
        "verdict": "FORWARDED",
        "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": True}}},
        "source": {
            "namespace": "a",
            "pod_name": "client-7d4b9c8f6b-x2x4z",
            "labels": ["k8s:app=client"],
        },
        "destination": {
            "namespace": "a",
            "pod_name": "server-0",
            "labels": ["k8s:app=server", "k8s:statefulset.kubernetes.io/pod-name=server-0"],
        },
        "Type": "L3_L4",
        "is_reply": False,
    }
    flow.update(flow_overrides)
    return json.dumps({"flow": flow, "node_name": "n1", "time": flow["time"]})


def test_reply_encodings_and_observation_points(tmp_path: Path):
    lines = [
        _line(),  # the SYN
        _line(trace_observation_point="TO_ENDPOINT"),  # the same SYN at the destination
        _line(
            is_reply=True,
            IP={"source": "10.0.0.2", "destination": "10.0.0.1"},
            l4={
                "TCP": {
                    "source_port": 80,
                    "destination_port": 40000,
                    "flags": {"SYN": True, "ACK": True},
                }
            },
        ),
        # Legacy Hubble writes only "reply" (no "is_reply").
        json.dumps(
            {
                "flow": {
                    **{k: v for k, v in json.loads(_line())["flow"].items() if k != "is_reply"},
                    "reply": True,
                    "l4": {"TCP": {"source_port": 80, "destination_port": 40001}},
                }
            }
        ),
        # Neither flag: a SYN+ACK is a reply whatever the ports.
        json.dumps(
            {
                "flow": {
                    k: v
                    for k, v in json.loads(
                        _line(
                            l4={
                                "TCP": {
                                    "source_port": 80,
                                    "destination_port": 40002,
                                    "flags": {"SYN": True, "ACK": True},
                                }
                            }
                        )
                    )["flow"].items()
                    if k != "is_reply"
                }
            }
        ),
    ]
    path = tmp_path / "flows.json"
    path.write_text("\n".join(lines) + "\n")
    ledger = IngestLedger()
    table = read_flows(path, ledger=ledger)
    assert (ledger.used, ledger.duplicate, ledger.reply) == (1, 1, 3)
    row = table.to_pylist()[0]
    assert (row["src_workload"], row["src_workload_kind"]) == ("client", "Deployment")
    assert (row["dst_workload"], row["dst_workload_kind"]) == ("server", "StatefulSet")


def test_bare_flows_array_and_compression(tmp_path: Path):
    import pyarrow as pa_

    bare = json.loads(_line())["flow"]
    (tmp_path / "array.json").write_text(json.dumps([{"flow": bare}, bare]))
    ledger = IngestLedger()
    read_flows(tmp_path / "array.json", ledger=ledger)
    assert (ledger.read, ledger.used, ledger.duplicate) == (2, 1, 1)

    data = (_line() + "\n").encode()
    (tmp_path / "f.json.gz").write_bytes(gzip.compress(data))
    with pa_.output_stream(str(tmp_path / "f.json.zst"), compression="zstd") as out:
        out.write(data)
    for name in ("f.json.gz", "f.json.zst"):
        assert detect_format(tmp_path / name) == "hubble"
        assert read_flows(tmp_path / name).num_rows == 1


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path):
    body = "\n".join(
        _line(l4={"TCP": {"source_port": 40000 + i, "destination_port": 80}}) for i in range(2000)
    ).encode()
    blob = gzip.compress(body)
    (tmp_path / "cut.json.gz").write_bytes(blob[: len(blob) // 2])
    ledger = IngestLedger()
    read_flows(tmp_path / "cut.json.gz", ledger=ledger)
    assert ledger.skipped["truncated-file"] == 1
    assert ledger.balanced


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"flow": {"time": "2026-01-05T09:00:00Z"', "malformed-json"),
        (_line(IP={"source": "10.0.0.999", "destination": "10.0.0.2"}), "invalid-ip"),
        (_line(l4={"TCP": {"source_port": 70000, "destination_port": 80}}), "invalid-port"),
        (_line(l4={"TCP": {"source_port": "x", "destination_port": 80}}), "invalid-port"),
        (_line(time="yesterday"), "invalid-time"),
        (_line(l4={"GRE": {}}), "unsupported-protocol"),
        (_line(IP=None), "missing-address"),
        ('{"node_status": {"state": "NODE_CONNECTED"}}', "not-a-flow"),
        ("not json at all", "malformed-json"),
        # Two objects on one line: never taken for two lines (nor a crash).
        (_line() + "," + _line(), "malformed-json"),
    ],
)
def test_bad_lines_are_skipped_with_a_reason(tmp_path: Path, line: str, reason: str):
    path = tmp_path / "flows.json"
    path.write_text(_line() + "\n" + line + "\n")
    ledger = IngestLedger()
    table = read_flows(path, format="hubble", ledger=ledger)
    assert table.num_rows == 1
    assert ledger.skipped == {reason: 1}
    assert ledger.examples[0].row == 2 and ledger.examples[0].file == str(path)


def test_infer_reply_truth_table():
    assert infer_reply("TCP", 40000, 80) is False
    assert infer_reply("TCP", 80, 40000) is True
    assert infer_reply("UDP", 40000, 45000) is None
    assert infer_reply("UDP", 53, 80) is None
    assert infer_reply("ICMP", None, None, icmp_type=8) is False
    assert infer_reply("ICMP", None, None, icmp_type=0) is True
    assert infer_reply("ICMPv6", None, None, icmp_type=129) is True


def test_row_tuple_order_matches_schema():
    # The reader builds rows as tuples in schema order: guard against a reordered schema.
    assert COLUMNS[:3] == ("start_time", "end_time", "src_kind")
    assert COLUMNS[-3:] == ("source_format", "source_file", "source_row")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "flow.time",
                    "flow.IP",
                    "flow.l4",
                    "flow.source",
                    "flow.destination",
                    "flow.verdict",
                    "flow.is_reply",
                    "flow.l7",
                    "flow",
                    "time",
                    "flow.l4.TCP",
                ]
            ),
            _JSON,
        ),
        max_size=4,
    ),
    st.integers(0, 400),
)
def test_corrupted_records_raise_nothing_and_are_counted(tmp_path: Path, edits, cut):
    record = json.loads(_line())
    for path, value in edits:
        target = record
        keys = path.split(".")
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[keys[-1]] = value
    text = json.dumps(record)
    if cut:
        text = text[: cut % (len(text) + 1)]
    file = tmp_path / "fuzz.json"
    file.write_text(_line() + "\n" + text + "\n")
    ledger = IngestLedger()
    try:
        table = read_flows(file, format="hubble", ledger=ledger)
    except RecommenderError:
        return
    assert isinstance(table, pa.Table)
    assert ledger.balanced
    assert ledger.read == (2 if text.strip() else 1)


@pytest.mark.parametrize("scanner", ["1", ""])
def test_audit_verdicts_keep_the_policies_that_would_deny(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanner: str
):
    """Policy audit mode: the flow was forwarded, Hubble says AUDIT and which policy would
    have dropped it (a connection's later AUDIT event counts as well as its first)."""
    if not scanner:
        monkeypatch.setenv("RECOMMENDER_NO_SCANNER", "1")
    denied_by = [{"name": "db", "namespace": "shop", "kind": "CiliumNetworkPolicy"}]
    lines = [
        _line(verdict="AUDIT", ingress_denied_by=denied_by, policy_match_type=2),
        _line(l4={"TCP": {"source_port": 40100, "destination_port": 80}}),
        _line(l4={"TCP": {"source_port": 40100, "destination_port": 80}}, verdict="AUDIT",
              egress_denied_by=denied_by),
    ]
    path = tmp_path / "audit.json"
    path.write_text("\n".join(lines) + "\n")
    rows = sorted(read_flows(path).to_pylist(), key=lambda r: r["src_port"])
    assert [(r["verdict"], r["policies"]) for r in rows] == [
        ("audit", ["denied-by:ingress|CiliumNetworkPolicy|shop/db", "policy-match:2"]),
        ("audit", ["denied-by:egress|CiliumNetworkPolicy|shop/db"]),
    ]
    from recommender.evaluation.staged import staged_verdict

    assert staged_verdict(rows[0]["policies"], "audit") == ("deny", "shop/db", -2)
