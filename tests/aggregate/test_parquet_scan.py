"""Canonical Parquet read by DuckDB (columns pruned, the window pushed down, label maps read per
pod) gives the edges, labels and ledger of the full streamed read, and `recommend` the same
report and policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import RecommendConfig, recommend
from recommender.aggregate import parquet_scan
from recommender.aggregate.edges import aggregate_edges
from recommender.aggregate.parquet_scan import (
    aggregate_parquet_files,
    parquet_rows,
    scannable_parquet,
)
from recommender.ingest import iter_flow_batches
from recommender.ingest.ledger import IngestLedger
from recommender.ingest.schema import FLOW_SCHEMA, PROTOCOLS, VERDICTS
from tests.conftest import T0, make_table

# kind, namespace, workload, ip, name
ENDPOINTS = [
    ("workload", "shop", "web", "10.0.0.1", None),
    ("workload", "shop", "db", "10.0.0.2", None),
    ("workload", "pay", "api", "10.0.1.1", None),
    ("workload", "pay", None, "10.0.1.9", None),  # no workload: named by its pod
    ("workload", None, "lost", None, None),
    ("external", None, None, "203.0.113.7", "example.com"),
    ("host", None, None, "10.1.0.1", None),
    ("alien", "shop", "web", "10.0.0.1", None),  # not an endpoint kind: the row is skipped
    # Names the stream maps to their owners (a Job run to its CronJob, a ReplicaSet to its
    # Deployment): the scan must name them alike.
    ("workload", "shop", "nightly-report-29383920", "10.0.0.5", None),
    ("workload", "shop", "web-5d8f7c9b6", "10.0.0.6", None),
]
KINDS_OF = {"nightly-report-29383920": "Job", "web-5d8f7c9b6": "ReplicaSet"}
LABELS = [None, [], [("app", "x")], [("app", "x"), ("v", "2")], [("app", "y")]]
KINDS = {"workload", "host", "remote-node", "external", "cluster-entity", "unknown"}


@st.composite
def flow_rows(draw: Any) -> dict[str, Any]:
    src = draw(st.sampled_from(ENDPOINTS))
    dst = draw(st.sampled_from(ENDPOINTS))
    start = T0 + timedelta(minutes=draw(st.integers(0, 300)), seconds=draw(st.integers(0, 59)))
    row: dict[str, Any] = {
        "start_time": start,
        "end_time": start + timedelta(seconds=draw(st.integers(0, 5))),
        "protocol": draw(st.sampled_from(["TCP", "TCP", "UDP", "ICMP", "tcp"])),
        "verdict": draw(st.sampled_from(["allowed", "allowed", "denied", "audit", "bogus"])),
        "is_reply": draw(st.sampled_from([False, False, None, True])),
        "src_port": draw(st.sampled_from([None, 1000, 45000, 50000, -1])),
        "dst_port": draw(st.sampled_from([53, 80, 8080, 40000, 40001, None, 70000])),
        "connections": draw(st.integers(1, 3)),
        "bytes": draw(st.sampled_from([None, 100, 2000])),
        "node": draw(st.sampled_from([None, "n1", "n2"])),
        "dst_service_name": draw(st.sampled_from([None, "svc"])),
        "dst_dns_names": draw(st.sampled_from([None, ["a.example."], ["b.example.", "a."]])),
        "http_method": draw(st.sampled_from([None, "GET", "POST"])),
        "http_path": draw(st.sampled_from([None, "/x", "/y"])),
        "source_format": "test",
        "source_file": "test",
    }
    for side, (kind, ns, wl, ip, name) in (("src", src), ("dst", dst)):
        row[f"{side}_kind"] = kind
        row[f"{side}_namespace"] = ns
        row[f"{side}_workload"] = wl
        row[f"{side}_workload_kind"] = KINDS_OF.get(wl or "", "Deployment") if wl else None
        row[f"{side}_ip"] = draw(st.sampled_from([ip, None])) if kind == "workload" else ip
        row[f"{side}_name"] = name
        row[f"{side}_pod"] = (
            draw(st.sampled_from([f"{wl or 'p'}-1", f"{wl or 'p'}-2", None]))
            if kind == "workload"
            else None
        )
        row[f"{side}_labels"] = draw(st.sampled_from(LABELS)) if kind == "workload" else None
    return row


def _invalid(row: dict[str, Any]) -> bool:
    """The value checks, stated independently of both readers."""
    return not (
        row["protocol"] in PROTOCOLS
        and row["verdict"] in VERDICTS
        and row["src_kind"] in KINDS
        and row["dst_kind"] in KINDS
        and all(row[p] is None or 0 <= row[p] <= 65535 for p in ("src_port", "dst_port"))
    )


windows = st.tuples(st.sampled_from([None, 0, 60, 150]), st.sampled_from([None, 90, 200, 400])).map(
    lambda w: (
        None if w[0] is None else T0 + timedelta(minutes=w[0]),
        None if w[1] is None else T0 + timedelta(minutes=w[1]),
    )
)


def _sorted_rows(table: Any) -> list[tuple[Any, ...]]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def _write(rows: list[dict[str, Any]], folder: Path, files: int, group_rows: int) -> list[Path]:
    """The rows as ``files`` canonical Parquet files of row groups of ``group_rows`` rows."""
    paths = []
    cut = [len(rows) * i // files for i in range(files + 1)]
    for i in range(files):
        part = [dict(r) for r in rows[cut[i] : cut[i + 1]]]
        path = folder / f"part-{i}.parquet"
        table = make_table(part) if part else FLOW_SCHEMA.empty_table()
        pq.write_table(table, path, row_group_size=group_rows)
        paths.append(path)
    return paths


@settings(max_examples=60)
@given(
    rows=st.lists(flow_rows(), max_size=60),
    window=windows,
    files=st.integers(1, 3),
    group_rows=st.sampled_from([3, 7, 1000]),
)
def test_scan_gives_the_edges_labels_and_ledger_of_the_full_read(
    tmp_path_factory: Any, rows: list[dict[str, Any]], window: Any, files: int, group_rows: int
) -> None:
    since, until = window
    if since is not None and until is not None and since >= until:
        until = None
    config = RecommendConfig(since=since, until=until)
    paths = _write(rows, tmp_path_factory.mktemp("scan"), files, group_rows)
    assert scannable_parquet([(p, "parquet") for p in paths]) == paths

    full = iter_flow_batches(paths)
    expected = aggregate_edges(full, config)
    ledger = IngestLedger()
    got, _ = aggregate_parquet_files(paths, config, ledger)

    for name in ("edges", "denied", "excluded", "workload_labels"):
        assert getattr(got, name).equals(getattr(expected, name)), name
    assert got.pod_peers is not None and expected.pod_peers is not None
    assert _sorted_rows(got.pod_peers) == _sorted_rows(expected.pod_peers)
    assert (got.rows_used, got.first_seen, got.last_seen) == (
        expected.rows_used,
        expected.first_seen,
        expected.last_seen,
    )
    assert ledger.to_dict() == full.ledger.to_dict()
    # Every row is accounted for, with the independent value checks.
    bad = [r for r in rows if _invalid(r)]
    assert ledger.read == len(rows) and ledger.balanced
    assert ledger.used == len(rows) - len(bad)
    assert ledger.skipped_total == len(bad)


@settings(max_examples=10)
@given(
    rows=st.lists(flow_rows(), min_size=1, max_size=40),
    window=windows,
    namespaces=st.sampled_from([(), ("shop",), ("pay", "shop")]),
)
def test_recommend_reads_parquet_with_the_same_result(
    tmp_path_factory: Any, rows: list[dict[str, Any]], window: Any, namespaces: tuple[str, ...]
) -> None:
    since, until = window
    if since is not None and until is not None and since >= until:
        until = None
    paths = _write(rows, tmp_path_factory.mktemp("rec"), 2, 5)
    options = {"since": since, "until": until, "namespaces": namespaces}
    scanned = recommend(paths, **options)
    with mock.patch.object(parquet_scan, "scannable_parquet", return_value=None):
        streamed = recommend(paths, **options)
    assert scanned.report == streamed.report
    assert scanned.to_yaml() == streamed.to_yaml()


def test_invalid_rows_are_counted_with_their_places(tmp_path: Path) -> None:
    rows = [
        {
            "start_time": T0 + timedelta(minutes=i),
            "end_time": T0 + timedelta(minutes=i),
            "src_kind": "workload",
            "src_namespace": "shop",
            "src_workload": "web",
            "dst_kind": "workload",
            "dst_namespace": "shop",
            "dst_workload": "db",
            "protocol": "TCP",
            "dst_port": 5432,
            "verdict": "bogus" if i % 4 == 1 else "allowed",
            "connections": 1,
            "source_format": "test",
            "source_file": "test",
        }
        for i in range(100)
    ]
    path = tmp_path / "flows.parquet"
    pq.write_table(make_table(rows), path, row_group_size=16)
    ledger = IngestLedger()
    # The window leaves most rows outside: they are still checked and counted.
    config = RecommendConfig(since=T0 + timedelta(minutes=50), until=T0 + timedelta(minutes=60))
    tables, _ = aggregate_parquet_files([path], config, ledger)
    assert ledger.read == 100 and ledger.skipped == {"invalid-value": 25}
    assert ledger.used == 75 and ledger.balanced
    assert [e.row for e in ledger.examples] == [2 + 4 * k for k in range(20)]
    assert tables.rows_used == 10 - 2  # minutes 50..59, two of them bogus


def test_label_maps_are_read_only_where_a_pod_starts_or_ends(tmp_path: Path) -> None:
    """Ten row groups, one pod seen in all of them: only the first and the last row group
    have a label column decoded, and the picks are those of the full read."""
    rows = []
    for i in range(100):
        at = T0 + timedelta(seconds=i)
        rows.append(
            {
                "start_time": at,
                "end_time": at,
                "src_kind": "workload",
                "src_namespace": "shop",
                "src_workload": "web",
                "src_pod": "web-1",
                "src_labels": {"app": "web", "rev": str(i)},
                "dst_kind": "external",
                "dst_ip": "203.0.113.7",
                "protocol": "TCP",
                "dst_port": 443,
                "verdict": "allowed",
                "connections": 1,
                "source_format": "test",
                "source_file": "test",
            }
        )
    path = tmp_path / "flows.parquet"
    pq.write_table(make_table(rows), path, row_group_size=10)
    real = pq.ParquetFile.read_row_group
    groups: list[int] = []

    def counted(self: Any, i: int, *args: Any, **kwargs: Any) -> Any:
        groups.append(i)
        return real(self, i, *args, **kwargs)

    with mock.patch.object(pq.ParquetFile, "read_row_group", counted):
        tables, _ = aggregate_parquet_files([path], RecommendConfig(), IngestLedger())
    assert sorted(groups) == [0, 9]
    assert tables.workload_labels.equals(aggregate_edges(path).workload_labels)
    assert tables.workload_labels["labels"].to_pylist() == [
        [("app", "web"), ("rev", "0")],
        [("app", "web"), ("rev", "99")],
    ]


def test_files_to_convert_are_left_to_the_stream(tmp_path: Path) -> None:
    table = make_table(
        [
            {
                "start_time": T0,
                "end_time": T0,
                "src_kind": "workload",
                "dst_kind": "workload",
                "protocol": "TCP",
                "verdict": "allowed",
                "connections": 1,
                "source_format": "test",
                "source_file": "test",
            }
        ]
    )
    canonical = tmp_path / "ok.parquet"
    pq.write_table(table, canonical)
    wide = tmp_path / "wide.parquet"  # ports as int64: the stream casts them
    index = table.schema.get_field_index("dst_port")
    pq.write_table(table.set_column(index, "dst_port", table["dst_port"].cast(pa.int64())), wide)
    globbed = tmp_path / "flows[1].parquet"  # DuckDB would read the name as a pattern
    pq.write_table(table, globbed)
    assert scannable_parquet([(canonical, "parquet")]) == [canonical]
    assert scannable_parquet([(wide, "parquet")]) is None
    assert scannable_parquet([(globbed, "parquet")]) is None
    assert scannable_parquet([(canonical, "parquet"), (canonical, "hubble")]) is None
    # And the pipeline still reads them (by the stream), with the same result.
    streamed, scanned = recommend(wide), recommend(canonical)
    assert streamed.edges.equals(scanned.edges)
    assert streamed.to_yaml() == scanned.to_yaml()


def test_rows_read_again_are_the_valid_rows_columns(tmp_path: Path) -> None:
    rows = [
        {
            "start_time": T0,
            "end_time": T0,
            "src_kind": kind,
            "dst_kind": "workload",
            "protocol": "TCP",
            "verdict": "allowed",
            "connections": 1,
            "source_format": "test",
            "source_file": "test",
        }
        for kind in ("workload", "alien", "host")
    ]
    path = tmp_path / "flows.parquet"
    pq.write_table(make_table(rows), path)
    batches = list(parquet_rows([path], ("src_kind", "verdict")))
    got = pa.Table.from_batches(batches)
    assert got.column_names == ["src_kind", "verdict"]
    assert got["src_kind"].to_pylist() == ["workload", "host"]


def test_a_file_duckdb_cannot_read_is_streamed(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "flows.parquet"
    pq.write_table(
        make_table(
            [
                {
                    "start_time": T0,
                    "end_time": T0,
                    "src_kind": "workload",
                    "src_namespace": "shop",
                    "src_workload": "web",
                    "dst_kind": "workload",
                    "dst_namespace": "shop",
                    "dst_workload": "db",
                    "protocol": "TCP",
                    "dst_port": 5432,
                    "verdict": "allowed",
                    "connections": 1,
                    "source_format": "test",
                    "source_file": "test",
                }
            ]
        ),
        path,
    )
    scanned = recommend(path)
    with mock.patch.object(parquet_scan, "_scan_file", side_effect=duckdb.IOException("no")):
        streamed = recommend(path)
    assert streamed.report == scanned.report
    assert streamed.report["ingest"]["read"] == 1 and streamed.report["ingest"]["balanced"]


def test_folder_names_do_not_stand_in_for_columns(tmp_path: Path) -> None:
    """A folder named like a Hive partition (``src_namespace=other``) changes nothing."""
    folder = tmp_path / "src_namespace=other"
    folder.mkdir()
    row = {
        "start_time": T0,
        "end_time": T0,
        "src_kind": "workload",
        "src_namespace": "shop",
        "src_workload": "web",
        "dst_kind": "workload",
        "dst_namespace": "shop",
        "dst_workload": "db",
        "protocol": "TCP",
        "dst_port": 5432,
        "verdict": "allowed",
        "connections": 1,
        "source_format": "test",
        "source_file": "test",
    }
    path = folder / "flows.parquet"
    pq.write_table(make_table([row]), path)
    tables, _ = aggregate_parquet_files([path], RecommendConfig(), IngestLedger())
    assert tables.edges["src_namespace"].to_pylist() == ["shop"]
    rows = pa.Table.from_batches(list(parquet_rows([path], ("src_namespace",))))
    assert rows["src_namespace"].to_pylist() == ["shop"]


@settings(max_examples=40)
@given(rows=st.lists(flow_rows(), max_size=60), window=windows)
def test_pod_peers_are_the_rows_the_sibling_rule_read_again(
    rows: list[dict[str, Any]], window: Any
) -> None:
    # The aggregation gathers, in its one pass, what the sibling rule used to read the flow
    # rows again for: per source pod and peer, connections and times of the evidence rows,
    # the sources named by their owners.
    import duckdb

    from recommender.analysis.anomaly import _evidence_rows, _owned

    since, until = window
    if since is not None and until is not None and since >= until:
        until = None
    config = RecommendConfig(since=since, until=until)
    table = make_table(rows) if rows else FLOW_SCHEMA.empty_table()
    tables = aggregate_edges(table, config)
    assert tables.pod_peers is not None
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    owned = pa.Table.from_batches([_owned(b) for b in table.to_batches()] or [], table.schema)
    con.register("candidates", pa.table({"ns": pa.array([], pa.string()),
                                         "wl": pa.array([], pa.string())}))  # fmt: skip
    everyone = con.sql(
        "SELECT DISTINCT src_namespace AS ns, "
        "coalesce(src_workload, src_pod, src_ip, '?') AS wl FROM owned"
    ).to_arrow_table()
    con.register("candidates", everyone)
    expected = _evidence_rows(con, owned, config)
    assert _sorted_rows(tables.pod_peers) == _sorted_rows(expected)
