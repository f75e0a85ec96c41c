"""The canonical flow schema: one Arrow schema that every reader produces.

One row is one observed connection record (see ``docs/flow-schema.md`` for every column, its
meaning and the value sets). Column names live here as constants, so that no other module spells
them out twice.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from ..errors import SchemaError

__all__ = [
    "PENDING_PREFIX",
    "ENDPOINT_KINDS",
    "FLOW_SCHEMA",
    "OUTCOMES",
    "PROTOCOLS",
    "SCHEMA_VERSION",
    "VERDICTS",
    "WORKLOAD_KINDS",
    "conform_table",
    "empty_flow_table",
]

#: Version of the canonical schema (Parquet metadata key ``recommender.schema_version``).
SCHEMA_VERSION: Final = "1.1"

#: Prefix of a ``policies`` entry from the *pending* trace (Calico Enterprise
#: ``policies.pending_policies``, Goldmane/Whisker ``PolicyTrace.pending_policies``): what the
#: staged policies would do to the connection, in Calico's ``index|tier|name|action|rule`` form.
PENDING_PREFIX: Final = "pending:"

#: What an endpoint is.
ENDPOINT_KINDS: Final = (
    "workload",  # a pod (or a set of pods of one workload)
    "host",  # the node the flow was observed on, or a Calico host endpoint
    "remote-node",  # another node of the cluster
    "external",  # an address outside the cluster (Calico pub/pvt/NetworkSet, Hubble world)
    "cluster-entity",  # kube-apiserver, cilium-health, init, unmanaged, ...
    "unknown",
)

#: Owner kinds; ``prefix`` means only a pod-name prefix is known.
WORKLOAD_KINDS: Final = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicaSet",
    "Pod",
    "prefix",
)

PROTOCOLS: Final = ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6")

#: Normalised verdicts. Only ``allowed``, ``audit`` and ``redirected`` are evidence of a wanted
#: connection; ``denied`` never becomes an allow rule.
VERDICTS: Final = (
    "allowed",
    "denied",
    "audit",
    "redirected",
    "traced",
    "translated",
    "pass",
    "error",
    "unknown",
)

#: Connection outcomes: ``established`` (the other end answered: a TCP SYN-ACK or data, a UDP
#: reply, a reply counter above zero), ``failed`` (only resets, or no answer to a retried TCP
#: SYN or a reporting end that saw none), ``unknown`` (the input cannot tell). How each format
#: derives it: ``docs/flow-schema.md``. A null (an older canonical file) reads as ``unknown``.
OUTCOMES: Final = ("established", "failed", "unknown")

_TS = pa.timestamp("us", tz="UTC")
_LABELS = pa.map_(pa.string(), pa.string())
_STRINGS = pa.list_(pa.string())


def _endpoint(prefix: str) -> list[pa.Field]:
    return [
        pa.field(f"{prefix}_kind", pa.string(), nullable=False),
        pa.field(f"{prefix}_namespace", pa.string()),
        pa.field(f"{prefix}_workload", pa.string()),
        pa.field(f"{prefix}_workload_kind", pa.string()),
        pa.field(f"{prefix}_pod", pa.string()),
        pa.field(f"{prefix}_labels", _LABELS),
        pa.field(f"{prefix}_ip", pa.string()),
        pa.field(f"{prefix}_port", pa.int32()),
        pa.field(f"{prefix}_name", pa.string()),
    ]


#: The canonical flow schema.
FLOW_SCHEMA: Final = pa.schema(
    [
        pa.field("start_time", _TS, nullable=False),
        pa.field("end_time", _TS, nullable=False),
        *_endpoint("src"),
        *_endpoint("dst"),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("icmp_type", pa.int16()),
        pa.field("icmp_code", pa.int16()),
        pa.field("dst_service_namespace", pa.string()),
        pa.field("dst_service_name", pa.string()),
        pa.field("dst_service_port", pa.string()),
        pa.field("dst_dns_names", _STRINGS),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("drop_reason", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("policies", _STRINGS),
        pa.field("reporter", pa.string()),
        pa.field("traffic_direction", pa.string()),
        pa.field("observation_point", pa.string()),
        pa.field("node", pa.string()),
        pa.field("is_reply", pa.bool_()),
        pa.field("connections", pa.int64(), nullable=False),
        pa.field("packets", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("l7_protocol", pa.string()),
        pa.field("http_method", pa.string()),
        pa.field("http_path", pa.string()),
        pa.field("http_code", pa.int32()),
        pa.field("dns_query", pa.string()),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ],
    metadata={"recommender.schema_version": SCHEMA_VERSION},
)

COLUMNS: Final = tuple(FLOW_SCHEMA.names)
_REQUIRED: Final = frozenset(f.name for f in FLOW_SCHEMA if not f.nullable)


def empty_flow_table() -> pa.Table:
    """Return a table with the canonical schema and no rows."""
    return FLOW_SCHEMA.empty_table()


def conform_table(table: pa.Table, *, origin: str = "table") -> pa.Table:
    """Cast ``table`` to :data:`FLOW_SCHEMA`, adding missing optional columns as nulls.

    Parameters
    ----------
    table
        A table that has at least the required (non-nullable) canonical columns.
    origin
        Named in error messages (a file name, say).

    Returns
    -------
    pyarrow.Table
        The same rows with the canonical column order and types.

    Raises
    ------
    SchemaError
        When a required column is missing or a column cannot be cast to its canonical type.
    """
    missing = sorted(_REQUIRED - set(table.column_names))
    if missing:
        raise SchemaError(
            f"{origin}: required column(s) {', '.join(missing)} missing; "
            "see docs/flow-schema.md for the canonical schema."
        )
    arrays = []
    for field in FLOW_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(
                        f"{origin}: column {field.name!r} of type {column.type} cannot be read "
                        f"as {field.type}: {exc}"
                    ) from None
            arrays.append(column)
        elif field.name == "outcome":  # a file from before the column: nothing is known
            arrays.append(pa.array(["unknown"] * table.num_rows, field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)
