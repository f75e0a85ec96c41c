"""The connection outcome from flow-log counters (Calico Enterprise JSON and text, Goldmane,
Whisker) and through the canonical Parquet round trip; Hubble's flags are tested on both reading
paths in test_hubble_scan.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender import IngestLedger, read_flows
from recommender.ingest._flowlog import counters_outcome
from recommender.ingest.schema import FLOW_SCHEMA


@pytest.mark.parametrize(
    ("protocol", "reporter", "counters", "expected"),
    [
        ("TCP", "src", (10, 12, 4000, 900), ("established", None)),
        ("TCP", "src", (0, 52, 0, 3120), ("failed", None)),  # SYNs, no answer
        ("TCP", "src", (3, 3, 120, 180), ("failed", None)),  # bare 40-byte resets
        ("TCP", "dst", (282, 239, 18236, 52519), ("established", None)),  # what left the server
        ("TCP", "dst", (5, 0, 300, 0), ("failed", None)),
        ("TCP", "dst", (5, 5, 300, 200), ("failed", None)),  # resets from the server
        ("UDP", "src", (0, 8, 0, 640), ("unknown", None)),  # one-way UDP is normal
        ("UDP", "src", (8, 8, 900, 640), ("established", None)),
        ("TCP", "fwd", (0, 52, 0, 3120), ("unknown", None)),  # a transit node
        ("TCP", None, (0, 52, 0, 3120), ("unknown", None)),
        ("TCP", "src", (None, 52, None, 3120), ("unknown", "missing-counters")),
        ("TCP", "src", (0, 0, 0, 0), ("unknown", None)),  # nothing either way
    ],
)
def test_counters_truth_table(protocol: str, reporter: str | None, counters: tuple[Any, ...],
                              expected: tuple[str, str | None]) -> None:  # fmt: skip
    assert counters_outcome(protocol, reporter, *counters) == expected


def _read(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], IngestLedger]:
    ledger = IngestLedger()
    rows = read_flows(path, format=fmt, ledger=ledger).to_pylist()
    assert ledger.balanced
    return rows, ledger


def test_real_calico_records(shared: Path) -> None:
    """The docs' real cluster: 50 SYNs the source saw unanswered (the destination denied them),
    and connections answered; the two reports of one connection merge to the better outcome."""
    rows, ledger = _read(shared / "datasets" / "calico-enterprise-docs")
    got = sorted((r["verdict"], r["reporter"], r["outcome"]) for r in rows)
    assert ("denied", "both", "failed") in got
    assert {o for v, _, o in got if v == "allowed"} == {"established"}
    assert ledger.outcome_unknown == {}


def test_calico_text_and_missing_counters(tmp_path: Path) -> None:
    base = {
        "start_time": 1767261600, "end_time": 1767261900, "source_type": "wep",
        "source_namespace": "shop", "source_name": "-", "source_name_aggr": "web-5d8f7c9b6-*",
        "dest_type": "wep", "dest_namespace": "shop", "dest_name": "-",
        "dest_name_aggr": "db-7b4c6d5f8-*", "dest_port": 5432, "proto": "tcp",
        "action": "allow", "reporter": "src", "num_flows": 3, "num_flows_started": 3,
        "num_flows_completed": 3,
    }  # fmt: skip
    records = [
        {**base, "packets_in": 0, "packets_out": 9, "bytes_in": 0, "bytes_out": 540},
        {**base, "dest_port": 6379, "packets_in": 3, "packets_out": 3, "bytes_in": 120,
         "bytes_out": 180},
        {**base, "dest_port": 5433},  # no counters at all
    ]  # fmt: skip
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows, ledger = _read(path, "calico")
    assert [(r["dst_port"], r["outcome"]) for r in rows] == [
        (5432, "failed"), (6379, "failed"), (5433, "unknown")]  # fmt: skip
    assert ledger.outcome_unknown == {"missing-counters": 1}
    text = tmp_path / "flows.log"
    line = ("1767261600 1767261900 wep shop web-5d8f7c9b6-* - wep shop db-7b4c6d5f8-* - - - 6 - "
            "5432 3 3 3 out {in} 9 {inb} 540 allow")  # fmt: skip
    text.write_text(line.format(**{"in": 0, "inb": 0}) + "\n"
                    + line.format(**{"in": 9, "inb": 4000}) + "\n")  # fmt: skip
    rows, _ = _read(text, "calico-text")
    assert sorted(r["outcome"] for r in rows) == ["established", "failed"]


def test_goldmane_and_whisker(tmp_path: Path) -> None:
    key = {"source_name": "web-5d8f7c9b6-", "source_namespace": "shop", "source_type": 1,
           "dest_name": "db-7b4c6d5f8-", "dest_namespace": "shop", "dest_type": 1,
           "dest_port": 5432, "proto": "tcp", "reporter": 1, "action": 1}  # fmt: skip
    flows = [
        {"Key": key, "start_time": 1767262815, "end_time": 1767262830, "packets_out": 6,
         "bytes_out": 360, "num_connections_started": 3},  # zero packets_in left out: failed
        {"Key": {**key, "dest_port": 5433}, "start_time": 1767262815, "end_time": 1767262830,
         "packets_in": 20, "packets_out": 22, "bytes_in": 9000, "bytes_out": 2000},
        {"Key": {**key, "dest_port": 5434}, "start_time": 1767262815,
         "end_time": 1767262830},  # no counter at all
    ]  # fmt: skip
    path = tmp_path / "goldmane.ndjson"
    path.write_text("".join(json.dumps(f) + "\n" for f in flows))
    rows, ledger = _read(path, "goldmane")
    assert [(r["dst_port"], r["outcome"]) for r in rows] == [
        (5432, "failed"), (5433, "established"), (5434, "unknown")]  # fmt: skip
    assert ledger.outcome_unknown == {"missing-counters": 1}
    whisker = tmp_path / "whisker.jsonl"
    whisker.write_text(json.dumps({
        "start_time": "2026-01-01T10:00:00Z", "end_time": "2026-01-01T10:00:15Z",
        "action": "Allow", "source_name": "web-5d8f7c9b6-", "source_namespace": "shop",
        "dest_name": "db-7b4c6d5f8-", "dest_namespace": "shop", "protocol": "tcp",
        "dest_port": 5432, "reporter": "Dst", "packets_in": 4, "packets_out": 0,
        "bytes_in": 240, "bytes_out": 0,
    }) + "\n")  # fmt: skip
    rows, _ = _read(whisker, "whisker")
    assert [r["outcome"] for r in rows] == ["failed"]


def test_canonical_round_trip_and_files_without_the_column(tmp_path: Path) -> None:
    from conftest import flow_row, make_table

    table = make_table([flow_row(src_workload="a", src_namespace="n", dst_workload="b",
                                 dst_namespace="n", dst_port=80, outcome=o)
                        for o in ("established", "failed", "unknown")])  # fmt: skip
    path = tmp_path / "flows.parquet"
    pq.write_table(table, path)
    assert read_flows(path).column("outcome").to_pylist() == ["established", "failed", "unknown"]
    old = tmp_path / "old.parquet"  # written before the column existed
    pq.write_table(table.drop_columns(["outcome"]).replace_schema_metadata(
        {"recommender.schema_version": "1.0"}), old)  # fmt: skip
    back = read_flows(old)
    assert back.schema.equals(FLOW_SCHEMA, check_metadata=False)
    assert back.column("outcome").to_pylist() == ["unknown"] * 3
    # A hand-made table without the column is aggregated as unknown outcomes too.
    from recommender.aggregate.edges import aggregate_edges

    edges = aggregate_edges(table.drop_columns(["outcome"])).edges
    assert edges.column("established").to_pylist() == [0]
    assert isinstance(edges, pa.Table)


def test_malformed_flags_are_read_and_counted_never_a_traceback(tmp_path: Path, capsys) -> None:
    from recommender.cli import main

    line = (
        '{"flow":{"time":"2026-01-05T09:00:00Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1",'
        '"destination":"10.0.0.2"},"l4":{"TCP":{"source_port":%d,"destination_port":80,'
        '"flags":%s}},"is_reply":false}}'
    )
    path = tmp_path / "flags.jsonl"
    path.write_text("\n".join(line % (40000 + k, flags) for k, flags in enumerate(
        ['{"SYN":"yes"}', '{"SYN":true,"FIN":true}', '[1]', '{"SYN":true}'])) + "\n")  # fmt: skip
    assert main(["ingest", str(path), "-o", str(tmp_path / "out.parquet")]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "outcome unknown (malformed-tcp-flags): 2" in out
    assert "outcome unknown (impossible-tcp-flags): 1" in out
    rows, ledger = _read(path)
    assert [r["outcome"] for r in rows] == ["unknown"] * 4 and ledger.used == 4
