"""Aggregating connection rows into edges: who talks to whom, on which port, how often.

One edge is (source endpoint, destination endpoint, protocol, destination port) with its
connections, bytes, first and last seen, and the number of distinct hours it was seen in. The
work runs in DuckDB over a stream of Arrow record batches (a table, a Parquet file, or
:func:`~recommender.iter_flow_batches`), so memory stays bounded by the number of edges and
pods, not of flows.

The aggregation has two halves so that it also runs distributed (:mod:`recommender.engine`):
:func:`partial_edges` turns any part of the rows into mergeable aggregates,
:func:`merge_partials` combines the parts in input order, and :func:`finish_edges` classifies
the whole edges. :func:`aggregate_edges` is the three in one process.

Only evidence of wanted traffic becomes an edge (:data:`EVIDENCE_VERDICTS`, never a reply);
denied flows and suspected replies are counted separately for the report. Each edge counts its
connections by outcome (``established``, ``failed``; the rest is unknown): an edge whose
connections all failed was attempted but never established and gets no rule (reason
``never-established``) unless ``allow_unestablished`` is set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import RecommendConfig
from ..ingest.schema import FLOW_SCHEMA
from ..policy.mesh import CAPTURE_PORTS
from .label_maps import map_values, remember_label_rows
from .owners import resolve_batch_owners

__all__ = [
    "EDGE_KEY",
    "EVIDENCE_VERDICTS",
    "MAX_HTTP_REQUESTS",
    "POD_PEER_COLUMNS",
    "EdgeTables",
    "PartialEdges",
    "aggregate_edges",
    "finish_edges",
    "merge_partials",
    "partial_edges",
]

#: The columns that name an edge in every edge table: its two endpoints, protocol and port.
EDGE_KEY: Final = (
    "src_kind",
    "src_namespace",
    "src_id",
    "dst_kind",
    "dst_namespace",
    "dst_id",
    "protocol",
    "dst_port",
)

#: Verdicts that show a connection really happened and was wanted. ``audit`` is Cilium's
#: policy-audit mode (would have been dropped, was let through), the traffic to learn from.
EVIDENCE_VERDICTS: Final = ("allowed", "audit", "redirected", "traced", "translated", "pass")

_EPHEMERAL: Final = 32768
#: Rows per batch when a whole table or Parquet file is streamed.
_BATCH_ROWS: Final = 65536

#: Most distinct HTTP requests (method and path) an edge keeps as L7 evidence; an edge with
#: more keeps one more than this, which tells the L7 renderers to give up on paths.
MAX_HTTP_REQUESTS: Final = 64


def _ident(p: str) -> str:
    """SQL for an endpoint's identity within its kind.

    Readers always name a workload endpoint's workload (or pod); label maps are never read
    here, because converting them is the most expensive thing DuckDB could do with the table.
    """
    return (
        f"CASE WHEN {p}_kind = 'workload' THEN coalesce({p}_workload, {p}_pod, {p}_ip, '?') "
        f"ELSE coalesce({p}_ip, {p}_name, '?') END"
    )


@dataclass(frozen=True)
class EdgeTables:
    """The aggregation's results, as Arrow tables.

    Attributes
    ----------
    edges
        One row per edge used as evidence (columns documented in ``docs/report.md``).
    denied
        Denied flows grouped the same way (never allowed; listed in the report).
    excluded
        Evidence edges left out on purpose (suspected replies, ephemeral ports, connections
        that never established, too few connections), with a ``reason`` column.
    workload_labels
        Per workload (namespace, name): each distinct label map seen and its row count.
    rows_used
        Connection rows that passed the time window and became edges, denied or excluded.
    pod_peers
        Per source workload pod (its name, else its address) and destination endpoint
        (``ns``, ``wl``, ``pod``, ``dst_kind``, ``dst_namespace``, ``dst_id``): the owner
        kind ``wk``, connections ``n``, first start ``first`` and last end (or start)
        ``last`` of its evidence rows, replies excluded (:data:`POD_PEER_COLUMNS`): what
        the anomaly screen's sibling rule needs, gathered in the same pass over the rows
        (None when the aggregation did not keep them: the rule then reads the rows again).
    """

    edges: pa.Table
    denied: pa.Table
    excluded: pa.Table
    workload_labels: pa.Table
    rows_used: int
    first_seen: datetime | None
    last_seen: datetime | None
    pod_peers: pa.Table | None = None


_IDS: Final = f"{_ident('src')} AS src_id, {_ident('dst')} AS dst_id"

#: The columns the aggregation reads; label maps are picked per pod on the side (never by DuckDB).
_COLUMNS: Final = (
    "src_kind", "src_namespace", "src_workload", "src_pod", "src_ip", "src_name",
    "dst_kind", "dst_namespace", "dst_workload", "dst_pod", "dst_ip", "dst_name",
    "protocol", "src_port", "dst_port", "verdict", "outcome", "is_reply", "node", "connections",
    "bytes", "start_time", "end_time", "src_workload_kind", "dst_workload_kind", "dst_service_name",
    "dst_dns_names", "http_method", "http_path",
)  # fmt: skip

_KEYS: Final = (
    "src_kind, src_namespace, src_id, src_name, dst_kind, "
    "dst_namespace, dst_id, dst_name, protocol, dst_port, class"
)

#: The partial aggregates of an edge's details: addresses, nodes, names, DNS names and HTTP
#: requests (the same SQL over rows and over :mod:`.parquet_scan`'s fine groups).
_DETAILS: Final = f"""
    list(DISTINCT src_ip) FILTER (WHERE src_ip IS NOT NULL) AS src_ips,
    list(DISTINCT dst_ip) FILTER (WHERE dst_ip IS NOT NULL) AS dst_ips,
    list(DISTINCT node) FILTER (WHERE node IS NOT NULL) AS nodes,
    max(dst_service_name) AS dst_service,
    max(src_workload_kind) AS src_workload_kind,
    max(dst_workload_kind) AS dst_workload_kind,
    list_distinct(flatten(list(dst_dns_names) FILTER (WHERE dst_dns_names IS NOT NULL)))
        AS dns_names,
    list_slice(list(DISTINCT http_method || ' ' || coalesce(http_path, '')
        ORDER BY http_method || ' ' || coalesce(http_path, ''))
        FILTER (WHERE http_method IS NOT NULL), 1, {MAX_HTTP_REQUESTS + 1}) AS http_requests
"""

#: Partial aggregates of one stream of rows, grouped by edge key and class. Every column merges
#: with :data:`_MERGE` (sums, minima, maxima, unions of distinct values), so partials of any
#: split of the rows combine into exactly the aggregates of all of them.
_PARTIAL: Final = f"""
    sum(connections)::BIGINT AS connections,
    coalesce(sum(connections) FILTER (WHERE outcome = 'established'), 0)::BIGINT AS established,
    coalesce(sum(connections) FILTER (WHERE outcome = 'failed'), 0)::BIGINT AS failed,
    count(*)::BIGINT AS rows,
    sum(coalesce(bytes, 0))::BIGINT AS bytes,
    min(start_time) AS first_seen,
    max(end_time) AS last_seen,
    list(DISTINCT date_trunc('hour', start_time)) FILTER (WHERE start_time IS NOT NULL) AS hours,
{_DETAILS}"""


def _union(column: str) -> str:
    return f"list_distinct(flatten(list({column}) FILTER (WHERE {column} IS NOT NULL)))"


_MERGE: Final = f"""
    sum(connections)::BIGINT AS connections,
    sum(established)::BIGINT AS established,
    sum(failed)::BIGINT AS failed,
    sum(rows)::BIGINT AS rows,
    sum(bytes)::BIGINT AS bytes,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    {_union("hours")} AS hours,
    {_union("src_ips")} AS src_ips,
    {_union("dst_ips")} AS dst_ips,
    {_union("nodes")} AS nodes,
    max(dst_service) AS dst_service,
    max(src_workload_kind) AS src_workload_kind,
    max(dst_workload_kind) AS dst_workload_kind,
    {_union("dns_names")} AS dns_names,
    list_slice(list_sort({_union("http_requests")}), 1, {MAX_HTTP_REQUESTS + 1}) AS http_requests
"""

#: The columns of :attr:`EdgeTables.pod_peers`: the grouping keys, then the aggregates.
POD_PEER_KEYS: Final = ("ns", "wl", "pod", "dst_kind", "dst_namespace", "dst_id")
POD_PEER_COLUMNS: Final = (*POD_PEER_KEYS, "wk", "n", "first", "last")
_POD_PEER_AGGREGATES: Final = (("wk", "max"), ("n", "sum"), ("first", "min"), ("last", "max"))
#: Rows of per-pod partial groups held before they are grouped again.
_POD_PEER_SLACK: Final = 1_000_000


def _coalesce(*arrays: Any) -> Any:
    return pc.coalesce(*arrays, pa.scalar("?"))


def _pod_peer_rows(batch: pa.RecordBatch, window: pa.Array | None) -> pa.Table:
    """The pod-level groups of one batch (:attr:`EdgeTables.pod_peers`): its evidence rows
    from workload pods (verdicts of :data:`EVIDENCE_VERDICTS`, not flagged as replies) in the
    window, the endpoints named as :func:`_ident` names them."""
    pod = pc.coalesce(batch.column("src_pod"), batch.column("src_ip"))
    mask = pc.and_(
        pc.equal(batch.column("src_kind"), "workload"),
        pc.is_in(batch.column("verdict"), pa.array(EVIDENCE_VERDICTS, pa.string())),
    )
    mask = pc.and_(mask, pc.invert(pc.fill_null(batch.column("is_reply"), False)))
    mask = pc.and_(mask, pc.is_valid(pod))
    if window is not None:
        mask = pc.and_(mask, window)
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return _empty_pod_peers()
    col = batch.column
    dst_id = pc.if_else(
        pc.equal(col("dst_kind"), "workload"),
        _coalesce(col("dst_workload"), col("dst_pod"), col("dst_ip")),
        _coalesce(col("dst_ip"), col("dst_name")),
    )
    rows = pa.table(
        {
            "ns": col("src_namespace").cast(pa.string()),
            "wl": _coalesce(col("src_workload"), col("src_pod"), col("src_ip")).cast(pa.string()),
            "pod": pod.cast(pa.string()),
            "dst_kind": col("dst_kind").cast(pa.string()),
            "dst_namespace": col("dst_namespace").cast(pa.string()),
            "dst_id": dst_id.cast(pa.string()),
            "wk": col("src_workload_kind").cast(pa.string()),
            "n": col("connections").cast(pa.int64()),
            "first": col("start_time"),
            "last": pc.coalesce(col("end_time"), col("start_time")),
        }
    ).filter(mask)
    return _group_pod_peers([rows])


def _empty_pod_peers() -> pa.Table:
    ts = FLOW_SCHEMA.field("start_time").type
    types = [pa.string()] * 7 + [pa.int64(), ts, ts]
    return pa.schema(list(zip(POD_PEER_COLUMNS, types, strict=True))).empty_table()


def _group_pod_peers(parts: list[pa.Table]) -> pa.Table:
    """Per-pod groups of several parts grouped into one (sums, minima, maxima)."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return _empty_pod_peers()
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    grouped = table.group_by(list(POD_PEER_KEYS), use_threads=False).aggregate(
        list(_POD_PEER_AGGREGATES)
    )
    return grouped.rename_columns(
        [c if c in POD_PEER_KEYS else c.rsplit("_", 1)[0] for c in grouped.column_names]
    ).select(list(POD_PEER_COLUMNS))


@dataclass
class _PodPeers:
    """Per-pod groups gathered batch by batch, grouped again whenever they pile up."""

    parts: list[pa.Table]
    rows: int = 0
    limit: int = _POD_PEER_SLACK

    def add(self, part: pa.Table) -> None:
        if not part.num_rows:
            return
        self.parts.append(part)
        self.rows += part.num_rows
        if self.rows > self.limit:
            merged = _group_pod_peers(self.parts)
            self.parts, self.rows = [merged], merged.num_rows
            self.limit = max(self.limit, 2 * merged.num_rows)

    def table(self) -> pa.Table:
        return _group_pod_peers(self.parts)


#: Per (side, namespace, workload, pod): [first row, its labels, last row, its labels].
LabelPicks = dict[tuple[str, str | None, str, str | None], list[Any]]


@dataclass
class PartialEdges:
    """Mergeable aggregates of a part of the flow rows (see :func:`partial_edges`).

    Partials of consecutive parts of one input (files in order, say) combine with
    :func:`merge_partials` into the partial of the whole; :func:`finish_edges` turns that into
    the :class:`EdgeTables` :func:`aggregate_edges` gives for all rows at once.

    Attributes
    ----------
    groups
        Aggregates per edge key and class (``hours``, ``src_ips``, ... as distinct lists).
    labels
        Per (side, namespace, workload, pod) the row numbers and label maps of its first and
        last row in the time window; row numbers count every input row of this part.
    input_rows
        Rows of this part, inside the time window or not (to number the rows of the next part).
    pod_peers
        Per source pod and peer, the sibling rule's aggregates (:attr:`EdgeTables.pod_peers`;
        None: not kept).
    """

    groups: pa.Table
    labels: LabelPicks
    input_rows: int
    pod_peers: pa.Table | None = None


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # A library call prints nothing of its own: no bar on stderr for a query over two seconds.
    # In Jupyter without ipywidgets DuckDB refuses to touch the setting (and shows no bar).
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")
    return con


def _window(config: RecommendConfig) -> tuple[str, list[Any]]:
    where = ["true"]
    params: list[Any] = []
    if config.since is not None:
        where.append("start_time >= ?")
        params.append(config.since)
    if config.until is not None:
        where.append("start_time < ?")
        params.append(config.until)
    return " AND ".join(where), params


def _window_mask(batch: pa.RecordBatch, config: RecommendConfig) -> pa.Array | None:
    """Rows in ``[since, until)`` (None: every row); the same rows as :func:`_window`'s SQL."""
    start = batch.column("start_time")
    mask = None
    if config.since is not None:
        mask = pc.greater_equal(start, pa.scalar(config.since, type=start.type))
    if config.until is not None:
        upper = pc.less(start, pa.scalar(config.until, type=start.type))
        mask = upper if mask is None else pc.and_(mask, upper)
    return None if mask is None else pc.fill_null(mask, False)


def _pick_labels(
    batch: pa.RecordBatch, offset: int, window: pa.Array | None, picks: LabelPicks
) -> None:
    """Record each workload pod's first and last labelled row of ``batch`` in ``picks``.

    A pod's labels rarely change (and Calico's aggregated rows carry an intersection), so the
    first and last row's maps stand for all of them. Only the chosen rows' maps are converted.
    """
    n = batch.num_rows
    rows = pa.array(np.arange(offset, offset + n, dtype=np.int64))
    shared: dict[Any, Any] = {}
    for side in ("src", "dst"):
        mask = pc.equal(batch.column(f"{side}_kind"), "workload")
        if window is not None:
            mask = pc.and_(mask, window)
        mask = pc.fill_null(mask, False)
        ident = pc.coalesce(
            batch.column(f"{side}_workload"),
            batch.column(f"{side}_pod"),
            batch.column(f"{side}_ip"),
            pa.scalar("?"),
        )
        keyed = pa.table(
            {
                "namespace": batch.column(f"{side}_namespace"),
                "workload": ident,
                "pod": batch.column(f"{side}_pod"),
                "row": rows,
            }
        ).filter(mask)
        if not keyed.num_rows:
            continue
        grouped = keyed.group_by(["namespace", "workload", "pod"], use_threads=False).aggregate(
            [("row", "min"), ("row", "max")]
        )
        namespaces = grouped["namespace"].to_pylist()
        workloads = grouped["workload"].to_pylist()
        pods = grouped["pod"].to_pylist()
        firsts = grouped["row_min"].to_pylist()
        lasts = grouped["row_max"].to_pylist()
        labels = batch.column(f"{side}_labels")
        new = [i for i, k in enumerate(zip(namespaces, workloads, pods, strict=True))
               if (side, *k) not in picks]  # fmt: skip
        # The maps of the new pods' first rows and of every pod's last row, each row once.
        wanted = sorted({firsts[i] - offset for i in new} | {r - offset for r in lasts})
        taken = labels.take(pa.array(wanted, pa.int64()))
        values = (
            map_values(taken, shared) if pa.types.is_map(taken.type) else taken.to_pylist()
        )
        maps = dict(zip(wanted, values, strict=True))
        for i in new:
            picks[(side, namespaces[i], workloads[i], pods[i])] = [
                firsts[i], maps[firsts[i] - offset], -1, None,
            ]  # fmt: skip
        for i, last in enumerate(lasts):
            pick = picks[(side, namespaces[i], workloads[i], pods[i])]
            if last > pick[2]:
                pick[2], pick[3] = last, maps[last - offset]


def _as_batches(
    flows: pa.Table | str | os.PathLike[str] | Iterable[pa.RecordBatch],
) -> Iterable[pa.RecordBatch]:
    if isinstance(flows, pa.Table):
        batches: Iterable[pa.RecordBatch] = flows.to_batches(max_chunksize=_BATCH_ROWS)
        return batches
    if isinstance(flows, str | os.PathLike):
        streamed: Iterable[pa.RecordBatch] = pq.ParquetFile(flows, pre_buffer=False).iter_batches(
            batch_size=_BATCH_ROWS
        )
        return streamed
    return flows


def partial_edges(
    flows: pa.Table | str | os.PathLike[str] | Iterable[pa.RecordBatch],
    config: RecommendConfig | None = None,
) -> PartialEdges:
    """Aggregate a stream of canonical rows into mergeable partial aggregates.

    The batches are consumed once, as they come: memory holds one batch and the aggregates
    (bounded by the number of edges and pods, not of rows).

    Parameters
    ----------
    flows
        A canonical table, the path of a canonical Parquet file, or canonical record batches
        (for example :func:`recommender.iter_flow_batches`).
    config
        Only the time window (``since``, ``until``) is applied here.
    """
    con = _connect()
    try:
        return _partial(con, flows, config or RecommendConfig())
    finally:
        con.close()


def _partial(
    con: duckdb.DuckDBPyConnection,
    flows: pa.Table | str | os.PathLike[str] | Iterable[pa.RecordBatch],
    config: RecommendConfig,
) -> PartialEdges:
    picks: LabelPicks = {}
    pod_peers = _PodPeers([])
    seen = 0
    columns = list(_COLUMNS)
    schema = pa.schema([FLOW_SCHEMA.field(c) for c in columns])

    # What the input raised, kept: DuckDB reads the stream and would wrap it in an error of its
    # own with the traceback in the message; raised as it was once the query has failed.
    failed: list[BaseException] = []

    def feed() -> Iterator[pa.RecordBatch]:
        nonlocal seen
        try:
            for batch in _as_batches(flows):
                if not batch.num_rows:
                    continue
                batch = resolve_batch_owners(batch)
                window = _window_mask(batch, config)
                _pick_labels(batch, seen, window, picks)
                seen += batch.num_rows
                if "outcome" not in batch.schema.names:  # rows from before the column: unknown
                    batch = batch.append_column(
                        "outcome", pa.array(["unknown"] * batch.num_rows, pa.string())
                    )
                batch = batch.select(columns).cast(schema)
                pod_peers.add(_pod_peer_rows(batch, window))
                yield batch
        except BaseException as exc:
            failed.append(exc)
            raise

    con.register("raw", pa.RecordBatchReader.from_batches(schema, feed()))
    window, params = _window(config)
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    # Suspected replies: no reply flag either way, and a well-known port answering a high one.
    classified = f"""
        SELECT src_kind, src_namespace, src_name, dst_kind, dst_namespace, dst_name, protocol,
               dst_port, src_ip, dst_ip, node, connections, bytes, start_time, end_time, outcome,
               src_workload_kind, dst_workload_kind, dst_service_name, dst_dns_names,
               http_method, http_path, {_IDS},
            CASE
              WHEN verdict NOT IN ({verdicts}) THEN 'denied'
              WHEN is_reply THEN 'reply'
              WHEN is_reply IS NULL AND src_port IS NOT NULL AND src_port < {_EPHEMERAL}
                   AND dst_port >= {_EPHEMERAL} THEN 'suspected-reply'
              ELSE 'evidence'
            END AS class
        FROM raw WHERE {window}
    """
    try:
        groups = con.sql(
            f"SELECT {_KEYS}, {_PARTIAL} FROM ({classified}) GROUP BY ALL", params=params
        ).to_arrow_table()
    except Exception:
        if failed:
            raise failed[0] from None
        raise
    con.unregister("raw")
    return PartialEdges(groups, picks, seen, pod_peers.table())


def merge_partials(partials: Iterable[PartialEdges]) -> PartialEdges:
    """Combine the partials of consecutive parts of one input, in input order."""
    tables: list[pa.Table] = []
    picks: LabelPicks = {}
    pod_peers: _PodPeers | None = _PodPeers([])
    offset = 0
    for part in partials:
        tables.append(part.groups)
        if pod_peers is not None and part.pod_peers is not None:
            pod_peers.add(part.pod_peers)
        else:  # a part without them: none for the whole
            pod_peers = None
        for key, (first, first_map, last, last_map) in part.labels.items():
            mine = picks.get(key)
            if mine is None:
                picks[key] = [first + offset, first_map, last + offset, last_map]
            else:
                mine[2], mine[3] = last + offset, last_map
        offset += part.input_rows
    if not tables:
        return partial_edges([])
    con = _connect()
    try:
        con.register("parts", pa.concat_tables(tables))
        groups = con.sql(f"SELECT {_KEYS}, {_MERGE} FROM parts GROUP BY ALL").to_arrow_table()
    finally:
        con.close()
    return PartialEdges(
        groups, picks, offset, pod_peers.table() if pod_peers is not None else None
    )


#: The type of a label map column.
_LABEL_MAP: Final = pa.map_(pa.string(), pa.string())


def _labels_table(picks: LabelPicks) -> pa.Table:
    """Per workload the label maps of its pods, in the order of the former SQL: by namespace
    (missing last), workload, side, first row; each pod's first row's map, then its last's."""

    def order(item: tuple[tuple[str, str | None, str, str | None], list[Any]]) -> tuple[Any, ...]:
        (side, ns, wl, _), (first, *_) = item
        return (side != "src", ns is None, ns or "", wl, first)

    namespaces, workloads, maps = [], [], []
    for (_, ns, wl, _), (_, first_map, _, last_map) in sorted(picks.items(), key=order):
        for labels in (first_map, last_map):
            namespaces.append(ns)
            workloads.append(wl)
            maps.append(None if labels is None else tuple(labels))
    column = pa.array(maps, _LABEL_MAP)  # converted in C: (key, value) pairs, None a null map
    table = pa.table(
        {
            "namespace": pa.array(namespaces, pa.string()),
            "workload": pa.array(workloads, pa.string()),
            "labels": column,
        }
    )
    # The consumers (synthesis, self-check, graph) need these very values back in Python.
    remember_label_rows(table, list(zip(namespaces, workloads, maps, strict=True)))
    return table


def finish_edges(partial: PartialEdges, config: RecommendConfig | None = None) -> EdgeTables:
    """The edge tables from the (merged) partial aggregates of all rows.

    ``min_connections``, ``max_ephemeral_ports`` and ``allow_unestablished`` are applied here:
    they need whole edges.
    """
    con = _connect()
    try:
        return _finish(con, partial, config or RecommendConfig())
    finally:
        con.close()


def _finish(
    con: duckdb.DuckDBPyConnection, partial: PartialEdges, config: RecommendConfig
) -> EdgeTables:
    con.register("parts", partial.groups)
    con.execute(
        f"""
        CREATE TEMP TABLE grouped AS
        SELECT * EXCLUDE (hours, src_ips, dst_ips, nodes, dns_names, dst_service,
                          src_workload_kind, dst_workload_kind, http_requests),
               coalesce(len(hours), 0)::BIGINT AS windows,
               list_sort(src_ips) AS src_ips, list_sort(dst_ips) AS dst_ips,
               list_sort(nodes) AS nodes, dst_service, src_workload_kind, dst_workload_kind,
               list_sort(dns_names) AS dns_names, http_requests
        FROM (SELECT {_KEYS}, {_MERGE} FROM parts GROUP BY ALL)
        """
    )
    rows_used, first, last = con.execute(
        "SELECT coalesce(sum(rows), 0), min(first_seen), max(last_seen) FROM grouped"
    ).fetchone() or (0, None, None)
    # Many distinct high ports between one pair of endpoints: replies or ephemeral listeners.
    con.execute(
        f"""
        CREATE TEMP TABLE judged AS
        WITH scattered AS (
            SELECT src_kind, src_namespace, src_id, dst_kind, dst_namespace, dst_id, protocol
            FROM grouped WHERE class = 'evidence' AND dst_port >= {_EPHEMERAL}
            GROUP BY ALL HAVING count(DISTINCT dst_port) > {int(config.max_ephemeral_ports)}
        )
        SELECT g.*, CASE
            WHEN g.class <> 'evidence' THEN g.class
            WHEN g.dst_kind = 'workload' AND g.protocol = 'TCP'
                 AND g.dst_port IN ({", ".join(map(str, CAPTURE_PORTS))}) THEN 'mesh-capture'
            WHEN g.dst_port >= {_EPHEMERAL} AND s.src_id IS NOT NULL THEN 'ephemeral-port'
            WHEN {"false" if config.allow_unestablished else "true"} AND g.established = 0
                 AND g.failed > 0 AND g.failed >= g.connections THEN 'never-established'
            WHEN greatest(g.connections, 1) < {int(config.min_connections)}
                 THEN 'below-min-connections'
            ELSE 'evidence' END AS reason
        FROM grouped g LEFT JOIN scattered s
          ON g.src_kind = s.src_kind AND g.src_id = s.src_id AND g.dst_kind = s.dst_kind
         AND g.dst_id = s.dst_id AND g.protocol = s.protocol
         AND g.src_namespace IS NOT DISTINCT FROM s.src_namespace
         AND g.dst_namespace IS NOT DISTINCT FROM s.dst_namespace
        """
    )
    order = (
        "ORDER BY src_kind, src_namespace NULLS FIRST, src_id, dst_kind, "
        "dst_namespace NULLS FIRST, dst_id, protocol, dst_port NULLS FIRST, "
        "src_name NULLS FIRST, dst_name NULLS FIRST, class, first_seen"
    )
    edges = con.sql(
        f"SELECT * EXCLUDE (class, reason) FROM judged WHERE reason = 'evidence' {order}"
    ).to_arrow_table()
    denied = con.sql(
        f"SELECT * EXCLUDE (class, reason) FROM judged WHERE class = 'denied' {order}"
    ).to_arrow_table()
    excluded = con.sql(
        f"SELECT * EXCLUDE (class) FROM judged WHERE reason NOT IN ('evidence', 'denied') {order}"
    ).to_arrow_table()
    for name in ("judged", "grouped"):
        con.execute(f"DROP TABLE {name}")
    con.unregister("parts")
    labels = _labels_table(partial.labels)
    return EdgeTables(
        edges, denied, excluded, labels, int(rows_used), first, last, partial.pod_peers
    )


def aggregate_edges(
    flows: pa.Table | str | os.PathLike[str] | Iterable[pa.RecordBatch],
    config: RecommendConfig | None = None,
) -> EdgeTables:
    """Aggregate canonical flow rows into edges (see the module docstring).

    Parameters
    ----------
    flows
        A canonical flow table, the path of a canonical Parquet file, or an iterable of
        canonical record batches (consumed once, streaming: memory does not grow with the
        number of rows).
    config
        Time window, ``min_connections``, ``max_ephemeral_ports`` and
        ``allow_unestablished`` are applied here.
    """
    config = config or RecommendConfig()
    con = _connect()
    try:
        return _finish(con, _partial(con, flows, config), config)
    finally:
        con.close()
