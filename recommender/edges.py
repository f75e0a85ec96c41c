"""Aggregating connection rows into edges: who talks to whom, on which port, how often.

One edge is (source endpoint, destination endpoint, protocol, destination port) with its
connections, bytes, first and last seen, and the number of distinct hours it was seen in. The
work runs in DuckDB over the Arrow table (or a Parquet file), so memory stays bounded by the
number of edges, not of flows.

Only evidence of wanted traffic becomes an edge (:data:`EVIDENCE_VERDICTS`, never a reply);
denied flows and suspected replies are counted separately for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import RecommendConfig

__all__ = ["EVIDENCE_VERDICTS", "MAX_HTTP_REQUESTS", "EdgeTables", "aggregate_edges"]

#: Verdicts that show a connection really happened and was wanted. ``audit`` is Cilium's
#: policy-audit mode (would have been dropped, was let through), the traffic to learn from.
EVIDENCE_VERDICTS: Final = ("allowed", "audit", "redirected", "traced", "translated", "pass")

_EPHEMERAL: Final = 32768

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
        Evidence edges left out on purpose (suspected replies, ephemeral ports, too few
        connections), with a ``reason`` column.
    workload_labels
        Per workload (namespace, name): each distinct label map seen and its row count.
    rows_used
        Connection rows that passed the time window and became edges, denied or excluded.
    """

    edges: pa.Table
    denied: pa.Table
    excluded: pa.Table
    workload_labels: pa.Table
    rows_used: int
    first_seen: datetime | None
    last_seen: datetime | None


_IDS: Final = f"{_ident('src')} AS src_id, {_ident('dst')} AS dst_id"


def _workload_labels(
    con: duckdb.DuckDBPyConnection, flows: pa.Table, window: str, params: list[Any]
) -> pa.Table:
    """Per workload, the label maps of its pods: of each (workload, pod), the first and the last
    row's labels (a pod's labels rarely change; Calico's aggregated rows carry an intersection).

    Only the chosen rows' label maps are converted, never the whole column.
    """
    picks = con.execute(
        f"""
        SELECT side, namespace, workload, min(__row), max(__row) FROM (
            SELECT 'src' AS side, src_namespace AS namespace, {_ident("src")} AS workload,
                   src_pod AS pod, __row FROM raw WHERE src_kind = 'workload' AND {window}
            UNION ALL
            SELECT 'dst', dst_namespace, {_ident("dst")}, dst_pod, __row FROM raw
            WHERE dst_kind = 'workload' AND {window})
        GROUP BY side, namespace, workload, pod
        ORDER BY namespace, workload, side, 4
        """,
        params + params,
    ).fetchall()
    namespaces, workloads, maps = [], [], []
    for side in ("src", "dst"):
        chosen = [(ns, wl, a, b) for s, ns, wl, a, b in picks if s == side]
        if not chosen:
            continue
        rows = pa.array([r for _, _, a, b in chosen for r in (a, b)], type=pa.int64())
        taken = flows[f"{side}_labels"].take(rows).to_pylist()
        for i, (ns, wl, _, _) in enumerate(chosen):
            for labels in (taken[2 * i], taken[2 * i + 1]):
                namespaces.append(ns)
                workloads.append(wl)
                maps.append(labels)
    return pa.table(
        {
            "namespace": pa.array(namespaces, pa.string()),
            "workload": pa.array(workloads, pa.string()),
            "labels": pa.array(maps, pa.map_(pa.string(), pa.string())),
        }
    )


def aggregate_edges(flows: pa.Table | str, config: RecommendConfig | None = None) -> EdgeTables:
    """Aggregate canonical flow rows into edges (see the module docstring).

    Parameters
    ----------
    flows
        A canonical flow table, or the path of a canonical Parquet file.
    config
        Time window, ``min_connections`` and ``max_ephemeral_ports`` are applied here.
    """
    config = config or RecommendConfig()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if not isinstance(flows, pa.Table):
        flows = pq.read_table(flows)
    # Only views over the Arrow data: DuckDB then reads just the columns each query needs
    # (copying the table, label maps above all, would cost more than the aggregation).
    flows = flows.append_column("__row", pa.array(np.arange(flows.num_rows, dtype=np.int64)))
    con.register("raw", flows)
    where = ["true"]
    params: list[Any] = []
    if config.since is not None:
        where.append("start_time >= ?")
        params.append(config.since)
    if config.until is not None:
        where.append("start_time < ?")
        params.append(config.until)
    window = " AND ".join(where)
    rows_used, first, last = con.execute(
        f"SELECT count(*), min(start_time), max(end_time) FROM raw WHERE {window}", params
    ).fetchone() or (0, None, None)
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    keys = (
        "src_kind, src_namespace, src_id, src_name, dst_kind, "
        "dst_namespace, dst_id, dst_name, protocol, dst_port"
    )
    # Suspected replies: no reply flag either way, and a well-known port answering a high one.
    classified = f"""
        SELECT src_kind, src_namespace, src_name, dst_kind, dst_namespace, dst_name, protocol,
               dst_port, src_ip, dst_ip, node, connections, bytes, start_time, end_time,
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
    aggregates = f"""
        sum(connections)::BIGINT AS connections,
        count(*)::BIGINT AS rows,
        sum(coalesce(bytes, 0))::BIGINT AS bytes,
        min(start_time) AS first_seen,
        max(end_time) AS last_seen,
        count(DISTINCT date_trunc('hour', start_time))::BIGINT AS windows,
        list(DISTINCT src_ip ORDER BY src_ip) FILTER (WHERE src_ip IS NOT NULL) AS src_ips,
        list(DISTINCT dst_ip ORDER BY dst_ip) FILTER (WHERE dst_ip IS NOT NULL) AS dst_ips,
        list(DISTINCT node ORDER BY node) FILTER (WHERE node IS NOT NULL) AS nodes,
        max(dst_service_name) AS dst_service,
        max(src_workload_kind) AS src_workload_kind,
        max(dst_workload_kind) AS dst_workload_kind,
        list_sort(list_distinct(flatten(list(dst_dns_names)
            FILTER (WHERE dst_dns_names IS NOT NULL)))) AS dns_names,
        list_slice(list(DISTINCT http_method || ' ' || coalesce(http_path, '')
            ORDER BY http_method || ' ' || coalesce(http_path, ''))
            FILTER (WHERE http_method IS NOT NULL), 1, {MAX_HTTP_REQUESTS + 1}) AS http_requests
    """
    # Many distinct high ports between one pair of endpoints: replies or ephemeral listeners.
    con.execute(
        f"""
        CREATE TEMP TABLE judged AS
        WITH grouped AS (
            SELECT {keys}, class, {aggregates} FROM ({classified}) GROUP BY ALL
        ), scattered AS (
            SELECT src_kind, src_namespace, src_id, dst_kind, dst_namespace, dst_id, protocol
            FROM grouped WHERE class = 'evidence' AND dst_port >= {_EPHEMERAL}
            GROUP BY ALL HAVING count(DISTINCT dst_port) > {int(config.max_ephemeral_ports)}
        )
        SELECT g.*, CASE
            WHEN g.class <> 'evidence' THEN g.class
            WHEN g.dst_port >= {_EPHEMERAL} AND s.src_id IS NOT NULL THEN 'ephemeral-port'
            WHEN greatest(g.connections, 1) < {int(config.min_connections)}
                 THEN 'below-min-connections'
            ELSE 'evidence' END AS reason
        FROM grouped g LEFT JOIN scattered s
          ON g.src_kind = s.src_kind AND g.src_id = s.src_id AND g.dst_kind = s.dst_kind
         AND g.dst_id = s.dst_id AND g.protocol = s.protocol
         AND g.src_namespace IS NOT DISTINCT FROM s.src_namespace
         AND g.dst_namespace IS NOT DISTINCT FROM s.dst_namespace
        """,
        params,
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
    labels = _workload_labels(con, flows, window, params)
    return EdgeTables(edges, denied, excluded, labels, int(rows_used), first, last)
