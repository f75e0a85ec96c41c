"""Canonical Parquet files aggregated by DuckDB's own Parquet reader.

:func:`~recommender.aggregate.edges.aggregate_edges` takes canonical rows as Arrow batches:
every column of every row is decoded, checked and handed over, label maps included, although
the aggregation reads 29 of the 47 columns and needs a pod's labels only once. For canonical
Parquet files whose columns need no conversion (:func:`~recommender.ingest.canonical.reads_as_is`:
what ``recommend ingest`` writes), :func:`aggregate_parquet_files` gives the same
:class:`~recommender.aggregate.edges.EdgeTables` and ledger by letting DuckDB read the files:

- **only the columns a stage needs**: the aggregation's, and the value checks' (protocol,
  verdict, endpoint kinds, ports); DuckDB reads row groups on every core;
- **the time window pushed down**: ``since``/``until`` filter the scan, so row groups outside
  the window are skipped on their statistics (only the value checks still look at them, for
  the ledger);
- **label maps read once per pod**, not per row: the scan groups the rows finely (edge, class,
  pod, address, node, hour, DNS names, HTTP request, ...) and keeps each group's first and last
  row number; a pod's first and last rows are then looked up, and only the row groups that hold
  them have a label column decoded (by pyarrow, as :class:`~recommender.ingest.canonical.
  ParquetReader` reads them);
- the fine groups (thousands, whatever the row count) are then grouped into the partial
  aggregates of :func:`~recommender.aggregate.edges.partial_edges`, one per file, merged and
  finished as there.

Rows with impossible values are counted in the ledger exactly as the streaming reader counts
them (same reason, same first rows as examples). Namespaces are not pushed down: the report,
the graph and the anomaly screening cover every namespace's edges (in-scope policies need
their out-of-scope peers, and out-of-scope namespaces are listed).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

from ..config import RecommendConfig
from ..errors import FlowFormatError
from ..ingest.canonical import INVALID_DETAIL, INVALID_REASON, reads_as_is, valid_row_sql
from ..ingest.ledger import MAX_EXAMPLES, IngestLedger
from .edges import (
    _DETAILS,
    _EPHEMERAL,
    _IDS,
    _KEYS,
    EVIDENCE_VERDICTS,
    EdgeTables,
    LabelPicks,
    PartialEdges,
    _connect,
    _empty_pod_peers,
    _window,
    finish_edges,
    merge_partials,
)
from .owners import resolve_owner

__all__ = ["aggregate_parquet_files", "parquet_rows", "scannable_parquet"]

#: Characters DuckDB reads as a glob or a URL in a file name: such files are left to pyarrow.
_GLOB: Final = frozenset("*?[]{}")

#: The fine groups: every column a partial aggregate keeps (or reads distinct values of).
_FINE_KEYS: Final = (
    "src_kind, src_namespace, src_workload, src_name, dst_kind, dst_namespace, dst_workload, "
    "dst_name, protocol, dst_port, class, src_pod, dst_pod, src_ip, dst_ip, node, hour, "
    "traffic_direction, "
    "dst_dns_names, "
    "http_method, http_path, dst_service_name, src_workload_kind, dst_workload_kind"
)

#: The partial aggregates of :mod:`.edges` (``_PARTIAL``) computed from the fine groups: sums
#: of sums, minima of minima, distinct values of distinct values.
_FROM_FINE: Final = f"""
    sum(connections)::BIGINT AS connections,
    coalesce(sum(established), 0)::BIGINT AS established,
    coalesce(sum(failed), 0)::BIGINT AS failed,
    sum(rows)::BIGINT AS rows,
    sum(bytes)::BIGINT AS bytes,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    list(DISTINCT hour) FILTER (WHERE hour IS NOT NULL) AS hours,
{_DETAILS}"""


def scannable_parquet(files: Sequence[tuple[Path, str]]) -> list[Path] | None:
    """The paths of ``files`` (path, format) when every one is a canonical Parquet file DuckDB
    can read as it is (:func:`~recommender.ingest.canonical.reads_as_is`, and a plain file
    name); None otherwise (the streaming readers then read them all, in order)."""
    paths = []
    for path, fmt in files:
        if fmt != "parquet" or _GLOB & set(str(path)) or not reads_as_is(path):
            return None
        paths.append(path)
    return paths or None


def _source(path: Path, row_numbers: bool = False) -> str:
    """The SQL that reads the file at ``path``: its absolute name as a string literal (a
    relative one could read as a URL), no Hive partition columns from folder names such as
    ``src_namespace=shop/`` (they would stand in for the file's own columns)."""
    text = "'" + str(path.resolve()).replace("'", "''") + "'"
    return (
        f"read_parquet({text}, hive_partitioning = false"
        f"{', file_row_number = true' if row_numbers else ''})"
    )


@dataclass
class _FileScan:
    """What one file gave: its partial aggregates and its ledger counts."""

    partial: PartialEdges
    rows: int
    invalid: int
    invalid_rows: list[int]
    #: The input checks' counts (:meth:`~recommender.ingest.overlap.InputCheck.add_counts`) of
    #: the rows in the window, or None when a pod's cluster is not one (then a pass of its own).
    parts: list[tuple[Any, ...]] | None = None


def _scan_file(con: duckdb.DuckDBPyConnection, path: Path, config: RecommendConfig) -> _FileScan:
    import pyarrow.parquet as pq

    source = _source(path, row_numbers=True)
    # A file written before the outcome column existed reads as "outcome unknown".
    outcome = "outcome" if "outcome" in pq.read_schema(path).names else "NULL::VARCHAR AS outcome"
    valid = valid_row_sql()
    clause, params = _window(config)
    window = clause if params else None  # no since/until: no window
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    # Rows with impossible values are a class of their own (counted, never aggregated); rows
    # outside the window are not read, except for the value checks just below.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE fine AS
        SELECT {_FINE_KEYS},
               sum(connections) AS connections,
               sum(connections) FILTER (WHERE outcome = 'established') AS established,
               sum(connections) FILTER (WHERE outcome = 'failed') AS failed,
               count(*) AS rows,
               sum(coalesce(bytes, 0)) AS bytes, min(start_time) AS first_seen,
               max(end_time) AS last_seen,
               max(coalesce(end_time, start_time)) AS pod_last,
               min(file_row_number) AS first_row,
               max(file_row_number) AS last_row
        FROM (
            SELECT src_kind, src_namespace, src_name, src_pod, src_ip, src_workload_kind,
                   dst_kind, dst_namespace, dst_name, dst_pod, dst_ip, dst_workload_kind,
                   src_workload, dst_workload,
                   protocol, dst_port, node, traffic_direction, connections, {outcome}, bytes,
                   start_time, end_time,
                   dst_service_name, dst_dns_names, http_method, http_path, file_row_number,
                   date_trunc('hour', start_time) AS hour,
                CASE
                  WHEN NOT {valid} THEN 'invalid'
                  WHEN verdict NOT IN ({verdicts}) THEN 'denied'
                  WHEN is_reply THEN 'reply'
                  WHEN is_reply IS NULL AND src_port IS NOT NULL AND src_port < {_EPHEMERAL}
                       AND dst_port >= {_EPHEMERAL} THEN 'suspected-reply'
                  ELSE 'evidence'
                END AS class
            FROM {source}
            {f"WHERE {window}" if window else ""}
        )
        GROUP BY ALL
        """,
        params,
    ).fetchall()
    ((count,),) = con.execute(
        "SELECT coalesce(sum(rows), 0)::BIGINT FROM fine WHERE class = 'invalid'"
    ).fetchall()
    if window:  # the rows outside the window are checked too: the ledger counts every row
        ((outside,),) = con.execute(
            f"SELECT count(*) FROM {source} WHERE NOT {valid} AND NOT coalesce({window}, false)",
            params,
        ).fetchall()
        count += outside
    first_bad: list[int] = []
    if count:
        first_bad = [
            int(r) + 1
            for (r,) in con.execute(
                f"SELECT file_row_number FROM {source} WHERE NOT {valid} "
                f"ORDER BY file_row_number LIMIT {MAX_EXAMPLES}"
            ).fetchall()
        ]
    _resolve_owners(con)
    # The endpoints' identities, from the owners (as the stream names them).
    con.execute(f"CREATE OR REPLACE TEMP VIEW named AS SELECT *, {_IDS} FROM fine").fetchall()
    groups = con.sql(
        f"SELECT {_KEYS}, {_FROM_FINE} FROM named WHERE class <> 'invalid' GROUP BY ALL"
    ).to_arrow_table()
    pod_peers = con.sql(
        """
        SELECT src_namespace AS ns, src_id AS wl, coalesce(src_pod, src_ip) AS pod, dst_kind,
               dst_namespace, dst_id, max(src_workload_kind) AS wk,
               sum(connections)::BIGINT AS n, min(first_seen) AS first, max(pod_last) AS last
        FROM named
        WHERE src_kind = 'workload' AND class IN ('evidence', 'suspected-reply')
          AND coalesce(src_pod, src_ip) IS NOT NULL
        GROUP BY ALL
        """
    ).to_arrow_table()
    pod_peers = pod_peers.cast(_empty_pod_peers().schema)
    parquet = pq.ParquetFile(path, pre_buffer=False)
    picks = _label_picks(con, parquet)
    parts = _check_counts(con, picks)
    con.execute("DROP VIEW named").fetchall()
    con.execute("DROP TABLE fine").fetchall()
    rows = parquet.metadata.num_rows
    return _FileScan(PartialEdges(groups, picks, rows, pod_peers), rows, count, first_bad, parts)


def _check_counts(
    con: duckdb.DuckDBPyConnection, picks: LabelPicks
) -> list[tuple[Any, ...]] | None:
    """The input checks' counts from the fine groups, each pod's cluster read from the label
    maps its picks hold (every pod endpoint has one): no second read of the labels. None when
    a pod's maps name two clusters (one pod name in two clusters: a StatefulSet's ``db-0``)."""
    from ..ingest.overlap import CLUSTER_LABEL

    clusters: dict[tuple[str, Any, Any], Any] = {}
    for (side, ns, _, pod), (_, first, _, last) in picks.items():
        named = {dict(m or ()).get(CLUSTER_LABEL) for m in (first, last)}
        if len(named) > 1 or clusters.setdefault((side, ns, pod), *named) not in named:
            return None
    out = []
    for src_kind, src_ns, src_pod, dst_kind, dst_ns, dst_pod, *rest in con.execute(
        "SELECT src_kind, src_namespace, src_pod, dst_kind, dst_namespace, dst_pod, node, "
        "traffic_direction, CAST(date_trunc('day', hour) AS DATE), sum(rows)::BIGINT "
        "FROM fine WHERE class <> 'invalid' GROUP BY ALL"
    ).fetchall():
        node, direction, day, n = rest
        src = clusters.get(("src", src_ns, src_pod)) if src_kind == "workload" else None
        dst = clusters.get(("dst", dst_ns, dst_pod)) if dst_kind == "workload" else None
        out.append((node, src, dst, direction, day, n))
    return out


def _resolve_owners(con: duckdb.DuckDBPyConnection) -> None:
    """Map the fine groups' workload names and kinds to their owners, as the stream does to
    every batch (:func:`~recommender.aggregate.owners.resolve_owner`: a Job run to its CronJob,
    a ReplicaSet to its Deployment, ...), once per distinct (name, kind)."""
    for side in ("src", "dst"):
        pairs = con.execute(
            f"SELECT DISTINCT {side}_workload, {side}_workload_kind FROM fine "
            f"WHERE {side}_workload IS NOT NULL"
        ).fetchall()
        mapped = [
            (name, kind, *owner)
            for name, kind in pairs
            if (owner := resolve_owner(name, kind)) != (name, kind)
        ]
        if not mapped:
            continue
        table = pa.table(
            {
                name: pa.array(values, pa.string())
                for name, values in zip(
                    ("name", "kind", "owner", "owner_kind"), zip(*mapped, strict=True), strict=True
                )
            }
        )
        con.register("owners", table)
        con.execute(
            f"""
            UPDATE fine SET {side}_workload = owners.owner,
                            {side}_workload_kind = owners.owner_kind
            FROM owners
            WHERE fine.{side}_workload = owners.name
              AND fine.{side}_workload_kind IS NOT DISTINCT FROM owners.kind
            """
        ).fetchall()
        con.unregister("owners")


def _label_picks(con: duckdb.DuckDBPyConnection, parquet: Any) -> LabelPicks:
    """Per (side, namespace, workload, pod) of a workload endpoint: its first and last row in
    the window and their label maps, as :func:`.edges._pick_labels` records them."""
    found: list[tuple[str, Any, Any, Any, int, int]] = []
    for side in ("src", "dst"):
        found += [
            (side, *row)
            for row in con.execute(
                f"""
                SELECT {side}_namespace, {side}_id, {side}_pod, min(first_row), max(last_row)
                FROM named WHERE {side}_kind = 'workload' AND class <> 'invalid'
                GROUP BY ALL
                """
            ).fetchall()
        ]
    maps = _label_maps(
        parquet,
        {
            "src": {r for side, *_, first, last in found if side == "src" for r in (first, last)},
            "dst": {r for side, *_, first, last in found if side == "dst" for r in (first, last)},
        },
    )
    return {
        (side, ns, wl, pod): [first, maps[side][first], last, maps[side][last]]
        for side, ns, wl, pod, first, last in found
    }


def _label_maps(parquet: Any, wanted: dict[str, set[int]]) -> dict[str, dict[int, Any]]:
    """The ``<side>_labels`` map of each wanted row number, read with pyarrow from only the row
    groups that hold one (the values :class:`~recommender.ingest.canonical.ParquetReader`
    gives)."""
    meta = parquet.metadata
    starts = [0]
    for i in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(i).num_rows)
    names = set(parquet.schema_arrow.names)
    out: dict[str, dict[int, Any]] = {}
    for side, rows in wanted.items():
        column = f"{side}_labels"
        maps: dict[int, Any] = out.setdefault(side, {})
        if column not in names:
            maps.update(dict.fromkeys(rows))
            continue
        by_group: dict[int, list[int]] = {}
        for row in sorted(rows):
            by_group.setdefault(bisect.bisect_right(starts, row) - 1, []).append(row)
        for group, members in sorted(by_group.items()):
            labels = parquet.read_row_group(group, columns=[column], use_threads=False)[column]
            offsets = pa.array([r - starts[group] for r in members], pa.int64())
            for row, value in zip(members, labels.take(offsets).to_pylist(), strict=True):
                maps[row] = value
    return out


def aggregate_parquet_files(
    paths: Sequence[Path],
    config: RecommendConfig,
    ledger: IngestLedger,
    on_file: Callable[[int], None] | None = None,
    counts: list[tuple[str, list[tuple[Any, ...]]]] | None = None,
) -> tuple[EdgeTables, float]:
    """The edge tables of canonical Parquet files (see the module docstring), and the seconds
    spent scanning the files (reading and the fine grouping, which DuckDB does in one pass).

    ``paths`` must be :func:`scannable_parquet`'s. ``ledger`` gets every row's outcome, per
    file, as the streaming reader would count it, once every file has been scanned;
    ``on_file`` is called with each file's row count; ``counts`` gets each file's counts for
    the input checks (of the rows in the window).

    Raises
    ------
    FlowFormatError
        When DuckDB cannot read a file.
    """
    con = _connect()
    scans: list[_FileScan] = []
    started = time.perf_counter()
    try:
        for path in paths:
            try:
                scans.append(_scan_file(con, path, config))
            except (duckdb.Error, OSError, pa.ArrowException) as exc:
                raise FlowFormatError(f"{path}: not a readable Parquet file: {exc}") from None
            if on_file is not None:
                on_file(scans[-1].rows)
    finally:
        con.close()
    scanned = time.perf_counter() - started
    for path, scan in zip(paths, scans, strict=True):
        ledger.open_file(str(path), "parquet")
        ledger.read += scan.rows
        ledger.skip_rows(str(path), scan.invalid_rows, scan.invalid, INVALID_REASON, INVALID_DETAIL)
        ledger.used += scan.rows - scan.invalid
        ledger.close_file(str(path))
    if counts is not None:
        for path, scan in zip(paths, scans, strict=True):
            if scan.parts is not None:
                counts.append((str(path), scan.parts))
            else:  # a pod name in two clusters: count from the labels themselves
                counts.extend(parquet_input_parts([path]))
    partial = merge_partials(scan.partial for scan in scans)
    return finish_edges(partial, config), scanned


def parquet_input_parts(
    paths: Sequence[Path],
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Per :func:`scannable_parquet` file, its valid rows counted by node, the two endpoints'
    cluster labels, direction and day: what the input checks need
    (:meth:`recommender.ingest.overlap.InputCheck.add_counts`), without decoding the rest."""
    from ..ingest.overlap import CLUSTER_LABEL

    label = "'" + CLUSTER_LABEL + "'"
    con = _connect()
    try:
        for path in paths:
            query = (
                f"SELECT node, map_extract(src_labels, {label})[1], "
                f"map_extract(dst_labels, {label})[1], traffic_direction, "
                "epoch_us(start_time) // 86400000000, count(*) "
                f"FROM {_source(path)} WHERE {valid_row_sql()} GROUP BY ALL"
            )
            try:
                rows = con.sql(query).fetchall()
            except duckdb.Error:  # an older canonical file: nothing to say
                continue
            epoch = date(1970, 1, 1)
            yield str(path), [(*r[:4], epoch + timedelta(days=int(r[4])), r[5]) for r in rows]
    finally:
        con.close()


def parquet_rows(paths: Sequence[Path], columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The valid rows of :func:`scannable_parquet` files, only ``columns``, in record batches:
    what a stage that reads flow rows again needs, without decoding the rest."""
    con = _connect()
    try:
        for path in paths:
            query = con.sql(
                f"SELECT {', '.join(columns)} FROM {_source(path)} WHERE {valid_row_sql()}"
            )
            yield from query.to_arrow_reader(65536)
    finally:
        con.close()
