"""Calico Enterprise flow logs (JSON and text): real records, fixtures, corruption, merging."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import (
    FlowFormatError,
    IngestLedger,
    RecommenderError,
    detect_format,
    iter_flow_batches,
    read_flows,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "calico"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL = SHARED / "datasets" / "calico-enterprise-docs"
needs_shared = pytest.mark.skipif(
    not REAL.is_dir(), reason="/work/shared/datasets/calico-enterprise-docs is not available"
)


def _read(paths: Any, fmt: str | None = None) -> tuple[list[dict[str, Any]], IngestLedger]:
    ledger = IngestLedger()
    table = read_flows(paths, format=fmt, ledger=ledger)
    assert ledger.balanced
    return table.to_pylist(), ledger


def _counts(ledger: IngestLedger) -> tuple[int, int, int, dict[str, int]]:
    return ledger.read, ledger.used, ledger.duplicate, dict(ledger.skipped)


# ---------------------------------------------------------------------------------------------
# The real records of tigera/docs
# ---------------------------------------------------------------------------------------------

# aggregation.mdx.flowlogs.jsonl, by hand (line: reporter, start_time, src port, dst pod):
#   1: dst, 1597086849, null, nginx-* (aggregated)       -> alone: no src report of it
#   2: src, 1597164816, null, nginx-...-rkhnf, allow     \ same connection (same start, endpoints,
#   3: dst, 1597164816, null, nginx-...-rkhnf, DENY      / port 80; end 1597165131 vs ...125)
#                                                           -> one row, verdict denied
#   4: src, 1597166567, null, nginx-...-rkhnf, allow     \ same connection (end ...893 vs ...879)
#   5: dst, 1597166567, null, nginx-...-rkhnf, allow     /  -> one row
#   6: dst, 1597166083, port 42106, nginx-...-h6792      two dst reports of different source
#   7: dst, 1597166083, port 43092, nginx-...-h6792      ports: two connections, no src report
# => read 7, used 5 (1, 2+3, 4+5, 6, 7), duplicate 2 (3 and 5), skipped 0.
# datatypes.mdx.flowlog.jsonl: record 6 again (same key, same reporter dst): another report of
#   the same reporter is never a duplicate -> read 1, used 1.
# host-forwarded-traffic.mdx.flowlogs.jsonl: two hand-written records without start_time,
#   end_time or @timestamp; a row cannot exist without a time -> skipped as missing-time (2).
AGGREGATION_COUNTS = (7, 5, 2, {})


@needs_shared
def test_real_aggregation_counts() -> None:
    rows, ledger = _read(REAL / "aggregation.mdx.flowlogs.jsonl")
    assert _counts(ledger) == AGGREGATION_COUNTS
    assert len(rows) == 5
    assert [r["reporter"] for r in rows] == ["dst", "both", "both", "dst", "dst"]
    assert [r["source_row"] for r in rows] == [1, 2, 4, 6, 7]


@needs_shared
def test_real_datatypes_and_host_forwarded_counts() -> None:
    _, ledger = _read(REAL / "datatypes.mdx.flowlog.jsonl")
    assert _counts(ledger) == (1, 1, 0, {})
    _, ledger = _read(REAL / "host-forwarded-traffic.mdx.flowlogs.jsonl")
    assert _counts(ledger) == (2, 0, 0, {"missing-time": 2})


@needs_shared
def test_real_folder_counts_and_detection() -> None:
    for path in REAL.glob("*.jsonl"):
        assert detect_format(path) == "calico"
    rows, ledger = _read(REAL)
    assert _counts(ledger) == (10, 6, 2, {"missing-time": 2})
    assert len(rows) == 6
    assert ledger.files[str(REAL / "aggregation.mdx.flowlogs.jsonl")]["read"] == 7


@needs_shared
def test_real_golden_aggregated_row() -> None:
    rows, _ = _read(REAL / "aggregation.mdx.flowlogs.jsonl")
    row = rows[0]
    assert row["start_time"].timestamp() == 1597086849
    assert row["end_time"].timestamp() == 1597087167
    assert (row["src_kind"], row["src_namespace"], row["src_pod"]) == (
        "workload",
        "policy-demo",
        None,
    )
    assert (row["src_workload"], row["src_workload_kind"]) == ("access", "Deployment")
    assert row["src_name"] == "access-6b687c8dcb-*"
    assert dict(row["src_labels"]) == {"app": "access", "pod-template-hash": "6b687c8dcb"}
    assert (row["dst_workload"], row["dst_workload_kind"]) == ("nginx", "Deployment")
    assert dict(row["dst_labels"]) == {"app": "nginx", "pod-template-hash": "86c57db685"}
    assert (row["src_ip"], row["dst_ip"], row["src_port"], row["dst_port"]) == (
        None,
        None,
        None,
        80,
    )
    assert (row["protocol"], row["verdict"], row["reporter"]) == ("TCP", "allowed", "dst")
    assert row["policies"] == ["0|default|policy-demo/default.access-nginx|allow"]
    assert (row["connections"], row["packets"], row["bytes"]) == (47, 521, 70755)
    assert row["node"] == "bz-n8kf-kadm-node-1"
    assert row["is_reply"] is False
    assert row["source_format"] == "calico"


@needs_shared
def test_real_allow_and_deny_reports_merge_to_denied() -> None:
    rows, _ = _read(REAL / "aggregation.mdx.flowlogs.jsonl")
    row = rows[1]
    assert row["reporter"] == "both"
    assert row["verdict"] == "denied"
    assert row["src_pod"] == "access-6b687c8dcb-zn5s2"
    assert row["dst_pod"] == "nginx-86c57db685-rkhnf"
    assert (row["src_ip"], row["dst_ip"]) == ("192.168.47.9", "192.168.213.223")
    assert row["end_time"].timestamp() == 1597165131  # the later of the two ends
    assert row["policies"] == [
        "0|__PROFILE__|__PROFILE__.kns.policy-demo|allow",
        "0|default|policy-demo/default.deny-access-nginx|deny",
    ]
    assert (row["packets"], row["bytes"], row["connections"]) == (52, 3120, 50)  # mirrored: max
    assert row["node"] == "bz-n8kf-kadm-node-1"  # the src report's node


@needs_shared
def test_real_enforced_policies_preferred_and_the_pending_trace_kept() -> None:
    rows, _ = _read(REAL / "datatypes.mdx.flowlog.jsonl")
    assert rows[0]["policies"] == [
        "0|tier1|ns1/tier1.policy1|pass|3",
        "1|default|policy-demo/default.access-nginx|allow|2",
        # what the staged policy would do: the pending trace, kept apart by its prefix
        "pending:0|tier1|ns1/tier1.policy1|pass|3",
        "pending:1|tier2|ns2/staged:tier1.policy1|deny|1",
    ]
    assert rows[0]["src_port"] == 42106


@needs_shared
def test_the_pending_trace_round_trips_through_canonical_parquet(tmp_path: Path) -> None:
    from recommender.ingest._write import write_flows_parquet

    path = REAL / "datatypes.mdx.flowlog.jsonl"
    batches = iter_flow_batches([path])
    write_flows_parquet(batches, tmp_path / "flows.parquet", ledger=batches.ledger)
    again, _ = _read(tmp_path / "flows.parquet")
    first, _ = _read(path)
    assert [r["policies"] for r in again] == [r["policies"] for r in first]
    assert any(p.startswith("pending:") for r in again for p in r["policies"] or ())


# ---------------------------------------------------------------------------------------------
# Hand-written fixtures
# ---------------------------------------------------------------------------------------------


def test_detection_of_fixtures() -> None:
    for name in ("node-a.jsonl", "node-b.jsonl", "corrupted.jsonl", "array.json",
                 "forwarded-icmp.jsonl"):
        assert detect_format(DATA / name) == "calico", name
    assert detect_format(DATA / "flows-text.log") == "calico-text"


def test_reports_split_over_two_files_merge() -> None:
    rows, ledger = _read([DATA / "node-a.jsonl", DATA / "node-b.jsonl"])
    assert _counts(ledger) == (6, 4, 2, {})
    by_port = {r["dst_port"]: r for r in rows if r["src_kind"] == "workload"}
    assert by_port[8443]["reporter"] == "both"
    assert by_port[8443]["verdict"] == "allowed"
    assert by_port[8443]["node"] == "worker-1"
    assert by_port[8443]["policies"] == [
        "0|__PROFILE__|__PROFILE__.kns.shop|allow|0",
        "0|default|payments/default.allow-checkout|allow|0",
    ]
    assert (by_port[8443]["packets"], by_port[8443]["bytes"]) == (18, 1200)
    assert by_port[8443]["connections"] == 3  # num_flows_started
    assert (by_port[8443]["dst_service_namespace"], by_port[8443]["dst_service_name"]) == (
        "payments",
        "payments-api",
    )
    assert by_port[8443]["dst_service_port"] == "https"
    # allowed at the client, denied at the server: denied
    assert by_port[5432]["reporter"] == "both"
    assert by_port[5432]["verdict"] == "denied"
    assert (by_port[5432]["dst_workload"], by_port[5432]["dst_workload_kind"]) == (
        "db",
        "StatefulSet",
    )
    assert by_port[5432]["dst_service_name"] is None
    # one row per record of the host endpoint (dst only) and of the pub egress (src only)
    hosts = [r for r in rows if r["src_kind"] == "host"]
    assert len(hosts) == 1
    assert (hosts[0]["src_name"], hosts[0]["src_namespace"], hosts[0]["reporter"]) == (
        "worker-1-eth0",
        None,
        "dst",
    )
    assert dict(hosts[0]["src_labels"]) == {"host": "worker-1"}
    pub = by_port[443]
    assert (pub["dst_kind"], pub["dst_name"], pub["dst_namespace"], pub["dst_labels"]) == (
        "external",
        "pub",
        None,
        None,
    )
    assert pub["dst_dns_names"] == ["api.example.com", "example.com"]
    assert ledger.files[str(DATA / "node-b.jsonl")]["read"] == 3


def test_merge_releases_reports_past_the_horizon(tmp_path: Path) -> None:
    src = json.loads((DATA / "node-a.jsonl").read_text().splitlines()[0])
    dst = json.loads((DATA / "node-b.jsonl").read_text().splitlines()[0])
    later = dict(src, start_time=src["start_time"] + 3600, end_time=src["end_time"] + 3600,
                 dest_port=1)
    path = tmp_path / "late.jsonl"
    # the dst report comes an hour of log later than its src report: past the 15-minute horizon
    path.write_text("\n".join(json.dumps(r) for r in (src, later, dst)) + "\n")
    batches = list(iter_flow_batches(path, format="calico", batch_rows=1))
    assert all(b.num_rows == 1 for b in batches)
    rows = [r for b in batches for r in b.to_pylist()]
    assert sorted(r["reporter"] for r in rows) == ["dst", "src", "src"]


def test_corrupted_lines_are_skipped_with_their_reason() -> None:
    rows, ledger = _read(DATA / "corrupted.jsonl")
    assert _counts(ledger) == (
        10,  # 11 lines, one empty
        2,
        0,
        {
            "malformed-json": 1,
            "invalid-ip": 1,
            "invalid-port": 1,
            "invalid-protocol": 1,
            "invalid-time": 1,
            "unknown-shape": 2,
            "invalid-action": 1,
        },
    )
    assert [r["source_row"] for r in rows] == [1, 10]
    assert rows[0]["src_pod"] == "checkout-5d8f7c9b6-x2k8p"
    assert (rows[0]["src_ip"], rows[0]["src_port"], rows[0]["dst_ip"]) == (
        "10.1.0.5",
        40312,
        "10.2.0.7",
    )
    examples = {(e.row, e.reason) for e in ledger.examples}
    assert (2, "malformed-json") in examples
    assert (3, "invalid-ip") in examples


def test_gzip_input(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl.gz"
    path.write_bytes(gzip.compress((DATA / "corrupted.jsonl").read_bytes()))
    assert detect_format(path) == "calico"
    rows, ledger = _read(path)
    assert (ledger.read, ledger.used) == (10, 2)
    assert rows[0]["source_file"] == str(path)


def test_truncated_gzip_is_accounted(tmp_path: Path) -> None:
    data = gzip.compress((DATA / "node-a.jsonl").read_bytes() * 50)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    _, ledger = _read(path, "calico")
    assert ledger.skipped["truncated-file"] == 1


def test_es_response_and_array_documents() -> None:
    rows, ledger = _read(DATA / "es-response.json", "calico")
    assert _counts(ledger) == (2, 1, 1, {})
    assert rows[0]["reporter"] == "both"
    rows, ledger = _read(DATA / "array.json")
    assert _counts(ledger) == (3, 2, 1, {})
    assert [r["source_row"] for r in rows] == [1, 3]  # element index + 1


def test_forwarded_reporters_and_icmp() -> None:
    rows, ledger = _read(DATA / "forwarded-icmp.jsonl")
    assert _counts(ledger) == (3, 3, 0, {})
    by_row = {r["source_row"]: r for r in rows}
    # "dst, fwd": the destination's report (its enforced policies), merged like any dst report
    assert by_row[1]["reporter"] == "dst"
    assert by_row[1]["policies"] == ["0|__PROFILE__|__PROFILE__.kns.maint|allow|0"]
    assert by_row[1]["src_kind"] == "workload"  # no source_type: inferred from namespace + name
    # "fwd": transit policies, both ends public networks
    assert by_row[2]["reporter"] == "fwd"
    assert by_row[2]["policies"] == ["0|default|default.allow-external-http|allow|0"]
    assert (by_row[2]["src_kind"], by_row[2]["src_name"], by_row[2]["src_ip"]) == (
        "external",
        "pub",
        "34.0.113.100",
    )
    # ICMP: no destination port; NetworkSet keeps its namespace
    assert (by_row[3]["protocol"], by_row[3]["dst_port"]) == ("ICMP", None)
    assert (by_row[3]["dst_kind"], by_row[3]["dst_name"], by_row[3]["dst_namespace"]) == (
        "external",
        "partner-nets",
        "shop",
    )


def test_text_form() -> None:
    rows, ledger = _read(DATA / "flows-text.log")
    assert _counts(ledger) == (7, 4, 1, {"invalid-ip": 1, "unknown-shape": 1})
    by_row = {r["source_row"]: r for r in rows}
    doc = by_row[1]  # the documented example line
    assert doc["start_time"].timestamp() == 1528842551
    assert (doc["src_kind"], doc["src_namespace"], doc["src_name"], doc["src_pod"]) == (
        "workload",
        "dev",
        "rails-81531*",
        None,
    )
    assert (doc["protocol"], doc["src_port"], doc["dst_port"], doc["reporter"]) == (
        "TCP",
        None,
        3000,
        "src",
    )
    assert (doc["connections"], doc["packets"], doc["bytes"]) == (3, 215, 119515)
    pair = by_row[2]  # out + in of one connection
    assert pair["reporter"] == "both"
    assert dict(pair["src_labels"]) == {"app": "checkout", "pod-template-hash": "5d8f7c9b6"}
    assert dict(pair["dst_labels"]) == {"app": "payments-api", "pod-template-hash": "7b4c6d5f8"}
    assert (pair["dst_workload"], pair["dst_workload_kind"]) == ("payments-api", "Deployment")
    icmp = by_row[4]
    assert (icmp["protocol"], icmp["dst_port"], icmp["dst_kind"], icmp["dst_name"]) == (
        "ICMP",
        None,
        "external",
        "pub",
    )
    assert icmp["verdict"] == "denied"
    assert icmp["src_pod"] == "checkout-5d8f7c9b6-x2k8p"
    newer = by_row[7]  # the layout with name and aggregated name, policies and a service
    assert (newer["src_pod"], newer["src_name"], newer["reporter"]) == (
        "nginx-7d98456675-2mcs4",
        "nginx-7d98456675-*",
        "dst",
    )
    assert newer["policies"] == ["0|tier|namespace/tier.policy|allow|0"]
    assert (newer["dst_service_namespace"], newer["dst_service_name"]) == (
        "kube-system",
        "kube-dns",
    )
    assert newer["source_format"] == "calico-text"


def test_wrong_file_shape_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": "world"}\n{"hello": "again"}\n')
    with pytest.raises(FlowFormatError, match=r"other\.jsonl"):
        read_flows(path, format="calico")
    with pytest.raises(FlowFormatError, match=r"other\.jsonl"):
        read_flows(path, format="calico-text")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"proto": "tcp",\n')
    with pytest.raises(FlowFormatError, match=r"broken\.json"):
        read_flows(broken, format="calico")


# ---------------------------------------------------------------------------------------------
# Robustness: mutated records never raise anything but RecommenderError, the ledger balances
# ---------------------------------------------------------------------------------------------

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_VALID = json.loads((DATA / "node-a.jsonl").read_text().splitlines()[0])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@st.composite
def _mutated_line(draw: st.DrawFn) -> str:
    rec = dict(_VALID)
    for key in draw(st.lists(st.sampled_from(sorted(rec)), max_size=4)):
        rec.pop(key, None)
    for key in draw(st.lists(st.sampled_from(sorted(_VALID)), max_size=4)):
        rec[key] = draw(_JSON)
    line = json.dumps(rec)
    cut = draw(st.one_of(st.none(), st.integers(0, len(line))))
    return line if cut is None else line[:cut]


@_SETTINGS
@given(line=_mutated_line())
def test_mutated_json_records(tmp_path: Path, line: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_VALID) + "\n" + line.replace("\n", " ") + "\n")
    ledger = IngestLedger()
    try:
        read_flows(path, format="calico", ledger=ledger)
    except RecommenderError:
        return
    assert ledger.balanced
    assert ledger.read == (2 if line.strip() else 1)


_TEXT = (DATA / "flows-text.log").read_text().splitlines()[1]


@_SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 30), st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                               max_size=6)),
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(0, 40)),
)
def test_mutated_text_lines(tmp_path: Path, edits: list[tuple[int, str]], cut: int | None) -> None:
    fields = _TEXT.split(" ")
    for index, value in edits:
        if index < len(fields):
            fields[index] = value
    line = " ".join(fields)
    if cut is not None:
        line = " ".join(line.split(" ")[:cut])
    path = tmp_path / "m.log"
    path.write_text(_TEXT + "\n" + line.replace("\n", " ").replace("\r", " ") + "\n")
    ledger = IngestLedger()
    try:
        read_flows(path, format="calico-text", ledger=ledger)
    except RecommenderError:
        return
    assert ledger.balanced
