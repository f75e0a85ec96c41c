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
import pyarrow as pa

from .config import RecommendConfig

__all__ = ["EVIDENCE_VERDICTS", "EdgeTables", "aggregate_edges"]

#: Verdicts that show a connection really happened and was wanted. ``audit`` is Cilium's
#: policy-audit mode (would have been dropped, was let through), the traffic to learn from.
EVIDENCE_VERDICTS: Final = ("allowed", "audit", "redirected", "traced", "translated", "pass")

_EPHEMERAL: Final = 32768


def _ident(p: str) -> str:
    """SQL for an endpoint's identity within its kind."""
    return (
        f"CASE WHEN {p}_kind = 'workload' THEN coalesce({p}_workload, {p}_pod, "
        f"element_at({p}_labels, 'app.kubernetes.io/name')[1], "
        f"element_at({p}_labels, 'app')[1], {p}_ip, '?') "
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
    if isinstance(flows, pa.Table):
        con.register("raw", flows)
    else:
        literal = str(flows).replace("'", "''")
        con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{literal}')")
    where = ["true"]
    params: list[Any] = []
    if config.since is not None:
        where.append("start_time >= ?")
        params.append(config.since)
    if config.until is not None:
        where.append("start_time < ?")
        params.append(config.until)
    con.execute(f"CREATE TEMP TABLE f AS SELECT * FROM raw WHERE {' AND '.join(where)}", params)
    rows_used, first, last = con.execute(
        "SELECT count(*), min(start_time), max(end_time) FROM f"
    ).fetchone() or (0, None, None)
    verdicts = ", ".join(f"'{v}'" for v in EVIDENCE_VERDICTS)
    # Suspected replies: no reply flag either way, and a well-known port answering a high one.
    con.execute(f"""
        CREATE TEMP TABLE classified AS
        SELECT *, {_IDS},
            CASE
              WHEN verdict NOT IN ({verdicts}) THEN 'denied'
              WHEN is_reply THEN 'reply'
              WHEN is_reply IS NULL AND src_port IS NOT NULL AND src_port < {_EPHEMERAL}
                   AND dst_port >= {_EPHEMERAL} THEN 'suspected-reply'
              ELSE 'evidence'
            END AS class
        FROM f
    """)
    aggregates = """
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
        list(DISTINCT dns ORDER BY dns) FILTER (WHERE dns IS NOT NULL) AS dns_names
    """
    keys = (
        "src_kind, src_namespace, src_id, src_name, dst_kind, "
        "dst_namespace, dst_id, dst_name, protocol, dst_port"
    )
    con.execute(f"""
        CREATE TEMP TABLE grouped AS
        SELECT {keys}, class, {aggregates}
        FROM (SELECT *, unnest(coalesce(dst_dns_names, [NULL]::VARCHAR[])) AS dns FROM classified)
        GROUP BY ALL
    """)
    # Many distinct high ports between one pair of endpoints: replies or ephemeral listeners.
    con.execute(f"""
        CREATE TEMP TABLE scattered AS
        SELECT src_kind, src_namespace, src_id, dst_kind, dst_namespace, dst_id, protocol
        FROM grouped WHERE class = 'evidence' AND dst_port >= {_EPHEMERAL}
        GROUP BY ALL HAVING count(DISTINCT dst_port) > {int(config.max_ephemeral_ports)}
    """)
    con.execute(f"""
        CREATE TEMP TABLE judged AS
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
    """)
    order = (
        "ORDER BY src_kind, src_namespace NULLS FIRST, src_id, dst_kind, "
        "dst_namespace NULLS FIRST, dst_id, protocol, dst_port NULLS FIRST"
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
    labels = con.sql("""
        SELECT namespace, workload, labels, sum(n)::BIGINT AS rows FROM (
          SELECT src_namespace AS namespace, src_id AS workload, src_labels AS labels,
                 count(*) AS n FROM classified WHERE src_kind = 'workload' GROUP BY ALL
          UNION ALL
          SELECT dst_namespace, dst_id, dst_labels, count(*) FROM classified
          WHERE dst_kind = 'workload' GROUP BY ALL)
        GROUP BY ALL ORDER BY namespace, workload, rows DESC
    """).to_arrow_table()
    return EdgeTables(edges, denied, excluded, labels, int(rows_used), first, last)
