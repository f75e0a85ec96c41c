"""Goldmane (emitter NDJSON, protojson, FlowResult) and Whisker API flows.

The fixtures are synthesised from goldmane/proto/api.proto and whisker-backend's flows.go: no
public sample of either format exists (see docs/formats/goldmane.md).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender import FlowFormatError, IngestLedger, RecommenderError, detect_format, read_flows

DATA = Path(__file__).resolve().parents[1] / "data" / "goldmane"


def _read(paths: Any, fmt: str | None = None) -> tuple[list[dict[str, Any]], IngestLedger]:
    ledger = IngestLedger()
    table = read_flows(paths, format=fmt, ledger=ledger)
    assert ledger.balanced
    return table.to_pylist(), ledger


def _counts(ledger: IngestLedger) -> tuple[int, int, int, dict[str, int]]:
    return ledger.read, ledger.used, ledger.duplicate, dict(ledger.skipped)


def test_detection_of_fixtures() -> None:
    assert detect_format(DATA / "emitter.ndjson") == "goldmane"
    assert detect_format(DATA / "protojson.ndjson") == "goldmane"
    for name in ("whisker.jsonl", "whisker-items.json", "whisker-array.json"):
        assert detect_format(DATA / name) == "whisker", name


def test_emitter_ndjson() -> None:
    rows, ledger = _read(DATA / "emitter.ndjson")
    # lines 1 (src) and 3 (dst) are one connection; 2, 4 and 5 stand alone
    assert _counts(ledger) == (5, 4, 1, {})
    by_row = {r["source_row"]: r for r in rows}
    both = by_row[1]
    assert both["reporter"] == "both"
    assert (both["src_kind"], both["src_namespace"], both["src_pod"]) == ("workload", "shop", None)
    assert (both["src_workload"], both["src_workload_kind"], both["src_name"]) == (
        "checkout",
        "Deployment",
        "checkout-5d8f7c9b6-",
    )
    assert dict(both["src_labels"]) == {"app": "checkout", "pod-template-hash": "5d8f7c9b6"}
    assert (both["dst_workload"], both["dst_port"], both["protocol"]) == (
        "payments-api",
        8443,
        "TCP",
    )
    assert (both["dst_service_namespace"], both["dst_service_name"]) == ("payments", "payments-api")
    assert both["dst_service_port"] == "https"
    assert both["policies"] == [
        "0|__PROFILE__|__PROFILE__.kns.shop|allow|0",
        "0|default|payments/default.allow-checkout|allow|0",
        "pending:0|__PROFILE__|__PROFILE__.kns.shop|allow|0",  # the pending trace, kept apart
    ]
    assert (both["connections"], both["packets"], both["bytes"]) == (3, 18, 1200)
    assert both["start_time"].timestamp() == 1767262815
    assert both["node"] is None
    denied = by_row[2]  # omitted zero values: no dest namespace, no packets_in
    assert (denied["verdict"], denied["reporter"]) == ("denied", "src")
    assert (denied["dst_kind"], denied["dst_name"], denied["dst_namespace"]) == (
        "external",
        "pub",
        None,
    )
    assert denied["dst_labels"] is None
    assert denied["policies"] == ["0|adminnetworkpolicy|deny-public-egress|deny|0"]
    assert (denied["packets"], denied["bytes"], denied["connections"]) == (6, 360, 3)
    host = by_row[4]
    assert (host["src_kind"], host["src_name"], host["src_namespace"], host["src_workload"]) == (
        "host",
        "worker-1-eth0",
        None,
        None,
    )
    assert (host["dst_kind"], host["dst_name"], host["dst_namespace"]) == (
        "external",
        "partner-nets",
        "shop",
    )
    assert host["policies"] == ["1|default|shop/staged:shop.allow-dns|allow|2"]
    assert host["connections"] == 4  # only num_connections_live is set
    assert (by_row[5]["protocol"], by_row[5]["dst_port"]) == ("ICMP", None)


def test_protojson_and_flowresult() -> None:
    rows, ledger = _read(DATA / "protojson.ndjson")
    assert _counts(ledger) == (3, 2, 1, {})
    emitter, _ = _read(DATA / "emitter.ndjson")
    by_port = {r["dst_port"]: r for r in rows}
    same = {r["dst_port"]: r for r in emitter}
    for port in (8443, 443):
        for column in ("src_workload", "dst_kind", "verdict", "reporter", "policies", "packets",
                       "bytes", "connections", "start_time", "end_time", "dst_service_port"):
            assert by_port[port][column] == same[port][column], (port, column)
    wrapped, ledger = _read(DATA / "flowresult.ndjson", "goldmane")
    assert _counts(ledger) == (2, 1, 1, {})
    assert wrapped[0]["reporter"] == "both"


def test_whisker_lines_items_and_array() -> None:
    rows, ledger = _read(DATA / "whisker.jsonl")
    assert _counts(ledger) == (3, 2, 1, {})
    merged = next(r for r in rows if r["reporter"] == "both")
    assert merged["verdict"] == "denied"  # allowed at the source, denied at the destination
    assert merged["start_time"].timestamp() == 1767262815
    assert dict(merged["src_labels"]) == {"app": "checkout", "pod-template-hash": "5d8f7c9b6"}
    assert dict(merged["dst_labels"]) == {"app": "payments-api", "pod-template-hash": "7b4c6d5f8"}
    assert merged["policies"] == [
        "0|__PROFILE__|__PROFILE__.kns.shop|allow|0",
        "0|default|payments/default.deny-all|deny|-1",
    ]
    pub = next(r for r in rows if r["dst_port"] == 443)
    assert (pub["dst_kind"], pub["dst_name"], pub["dst_namespace"]) == ("external", "pub", None)
    assert dict(pub["src_labels"]) == {"app": "checkout", "pod-template-hash": "5d8f7c9b6"}
    rows, ledger = _read(DATA / "whisker-items.json")
    assert _counts(ledger) == (2, 1, 1, {})
    rows, ledger = _read(DATA / "whisker-array.json")
    assert _counts(ledger) == (2, 2, 0, {})
    assert [r["source_row"] for r in rows] == [1, 2]


def test_gzip_and_corrupted_lines(tmp_path: Path) -> None:
    lines = (DATA / "emitter.ndjson").read_text().splitlines()
    good = json.loads(lines[3])
    bad = [
        lines[0][:50],
        json.dumps(dict(good, start_time="soon")),
        json.dumps(dict(good, Key=dict(good["Key"], dest_port=123456))),
        json.dumps(dict(good, Key=dict(good["Key"], proto="gre"))),
        json.dumps(dict(good, Key=dict(good["Key"], action=7))),
        json.dumps({"Key": "not an object"}),
        "[]",
    ]
    path = tmp_path / "flows.ndjson.gz"
    path.write_bytes(gzip.compress(("\n".join([lines[1], *bad, ""]) + "\n").encode()))
    assert detect_format(path) == "goldmane"
    _, ledger = _read(path)
    assert _counts(ledger) == (
        7,  # the empty array on the last line holds no record
        1,
        0,
        {
            "malformed-json": 1,
            "invalid-time": 1,
            "invalid-port": 1,
            "invalid-protocol": 1,
            "invalid-action": 1,
            "unknown-shape": 1,
        },
    )


def test_wrong_file_shape_raises(tmp_path: Path) -> None:
    with pytest.raises(FlowFormatError, match=r"whisker\.jsonl"):
        read_flows(DATA / "whisker.jsonl", format="goldmane")
    with pytest.raises(FlowFormatError, match=r"emitter\.ndjson"):
        read_flows(DATA / "emitter.ndjson", format="whisker")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


def _mutate(draw: st.DrawFn, rec: dict[str, Any]) -> dict[str, Any]:
    rec = dict(rec)
    keys = sorted(rec)
    if not keys:
        return rec
    for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
        rec.pop(key, None)
    for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
        rec[key] = draw(_JSON)
    return rec


@st.composite
def _mutated(draw: st.DrawFn, source: str) -> str:
    rec = json.loads((DATA / source).read_text().splitlines()[0])
    rec = _mutate(draw, rec)
    if isinstance(rec.get("Key"), dict) and draw(st.booleans()):
        rec["Key"] = _mutate(draw, rec["Key"])
    line = json.dumps(rec)
    cut = draw(st.one_of(st.none(), st.integers(0, len(line))))
    return line if cut is None else line[:cut]


def _check(tmp_path: Path, source: str, fmt: str, line: str) -> None:
    path = tmp_path / "m.jsonl"
    first = (DATA / source).read_text().splitlines()[0]
    path.write_text(first + "\n" + line.replace("\n", " ") + "\n")
    ledger = IngestLedger()
    try:
        read_flows(path, format=fmt, ledger=ledger)
    except RecommenderError:
        return
    assert ledger.balanced


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(line=_mutated("emitter.ndjson"))
def test_mutated_goldmane_records(tmp_path: Path, line: str) -> None:
    _check(tmp_path, "emitter.ndjson", "goldmane", line)


@_SETTINGS
@given(line=_mutated("protojson.ndjson"))
def test_mutated_protojson_records(tmp_path: Path, line: str) -> None:
    _check(tmp_path, "protojson.ndjson", "goldmane", line)


@_SETTINGS
@given(line=_mutated("whisker.jsonl"))
def test_mutated_whisker_records(tmp_path: Path, line: str) -> None:
    _check(tmp_path, "whisker.jsonl", "whisker", line)
