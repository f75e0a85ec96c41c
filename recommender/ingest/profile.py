"""A short profile of a canonical flow table: time span, namespaces, verdicts, top talkers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

__all__ = ["FlowProfile", "profile_flows"]


@dataclass(frozen=True)
class FlowProfile:
    """What a flow table holds, in brief."""

    rows: int
    connections: int
    first_seen: datetime | None
    last_seen: datetime | None
    namespaces: tuple[str, ...]
    workloads: int
    verdicts: dict[str, int] = field(default_factory=dict)
    protocols: dict[str, int] = field(default_factory=dict)
    endpoint_kinds: dict[str, int] = field(default_factory=dict)
    top_talkers: tuple[tuple[str, str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "rows": self.rows,
            "connections": self.connections,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "namespaces": list(self.namespaces),
            "workloads": self.workloads,
            "verdicts": self.verdicts,
            "protocols": self.protocols,
            "endpoint_kinds": self.endpoint_kinds,
            "top_talkers": [
                {"source": s, "destination": d, "connections": c} for s, d, c in self.top_talkers
            ],
        }


_ENDPOINT = (
    "CASE WHEN {p}_kind = 'workload' THEN coalesce({p}_namespace, '?') || '/' || "
    "coalesce({p}_workload, {p}_pod, '?') ELSE {p}_kind || ':' || "
    "coalesce({p}_name, {p}_ip, '?') END"
)


def profile_flows(flows: pa.Table | str, *, top: int = 10) -> FlowProfile:
    """Profile a canonical table (or a canonical Parquet file path) with DuckDB.

    Parameters
    ----------
    flows
        A table in :data:`~recommender.ingest.schema.FLOW_SCHEMA`, or the path of a Parquet file
        written by ``recommend ingest`` (read without loading it whole).
    top
        How many top talkers (workload pairs by connections) to list.
    """
    con = duckdb.connect()
    if isinstance(flows, pa.Table):
        con.register("flows", flows)
    else:
        literal = str(flows).replace("'", "''")
        con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet('{literal}')")
    rows, conns, first, last, workloads = con.execute(
        "SELECT count(*), coalesce(sum(connections), 0), min(start_time), max(end_time), "
        "count(DISTINCT CASE WHEN src_kind = 'workload' THEN src_namespace || '/' || "
        "coalesce(src_workload, src_pod) END) FROM flows"
    ).fetchone() or (0, 0, None, None, 0)
    namespaces = tuple(
        r[0]
        for r in con.execute(
            "SELECT DISTINCT ns FROM (SELECT src_namespace AS ns FROM flows UNION "
            "SELECT dst_namespace FROM flows) WHERE ns IS NOT NULL ORDER BY ns"
        ).fetchall()
    )

    def counts(column: str) -> dict[str, int]:
        result = con.execute(
            f"SELECT {column}, sum(connections) FROM flows GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        return {str(k): int(v) for k, v in result}

    talkers = con.execute(
        f"SELECT {_ENDPOINT.format(p='src')} AS s, {_ENDPOINT.format(p='dst')} AS d, "
        "sum(connections) AS c FROM flows GROUP BY 1, 2 ORDER BY c DESC, s, d LIMIT ?",
        [top],
    ).fetchall()
    return FlowProfile(
        rows=int(rows),
        connections=int(conns),
        first_seen=first,
        last_seen=last,
        namespaces=namespaces,
        workloads=int(workloads),
        verdicts=counts("verdict"),
        protocols=counts("protocol"),
        endpoint_kinds=counts("src_kind || ' -> ' || dst_kind"),
        top_talkers=tuple((str(s), str(d), int(c)) for s, d, c in talkers),
    )
