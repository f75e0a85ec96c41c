"""Which endpoints back which Kubernetes Service, as the flows show it.

Calico ``services`` matches and Cilium ``toServices`` select a Service's endpoints. The flows
carry no Service objects, but they name the Service a client addressed
(``dst_service_name``: Hubble ``destination_service``, Calico ``dst_service_name``): every
destination reached through Service ``S`` is one of its endpoints, on the port it was reached
on. :func:`service_map` collects that mapping from the edges; an endpoint never reached through
its Service in the flows is not known to be one of its endpoints (the verdicts are then
stricter than the cluster's).

A Service's namespace is its endpoints' (a pod behind a Service is in the Service's namespace);
an address outside the cluster (a Service without a selector) is recorded under namespace
``*``, matched by the Service's name alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .evaluator import Endpoint, Pod

__all__ = ["ServiceMap", "endpoint_key", "service_map"]

Ports = frozenset[tuple[str, int]]

#: The suffix replay gives the second pod of a workload (see ``replay._OTHER_POD``).
_OTHER_POD: Final = " (another pod)"


def endpoint_key(end: Pod | Endpoint) -> str:
    """``namespace/workload`` of a pod, the address of anything else."""
    if isinstance(end, Pod):
        return f"{end.namespace}/{end.name.removesuffix(_OTHER_POD)}"
    return end.ip


@dataclass(frozen=True)
class ServiceMap:
    """Per Service ``(namespace, name)``: its endpoints and the (protocol, port) each was
    reached on through it."""

    members: Mapping[tuple[str, str], Mapping[str, frozenset[tuple[str, int]]]] = field(
        default_factory=dict
    )

    def ports(self, namespace: str, name: str, end: Pod | Endpoint) -> Ports | None:
        """The ports ``end`` serves Service ``namespace/name`` on (None: not one of its
        endpoints)."""
        key = endpoint_key(end)
        if namespace == "*":
            return next(
                (found[key] for (_, n), found in self.members.items() if n == name
                 and key in found),
                None,
            )
        for ns in (namespace, "*"):
            found = self.members.get((ns, name), {}).get(key)
            if found is not None:
                return found
        return None

    def backs(self, namespace: str, name: str, end: Pod | Endpoint) -> bool:
        """Whether ``end`` is one of the Service's endpoints."""
        return self.ports(namespace, name, end) is not None

    def __len__(self) -> int:
        return len(self.members)


def service_map(*tables: Any) -> ServiceMap:
    """The Service mapping of edge tables (``dst_service``, ``dst_kind``, ``dst_namespace``,
    ``dst_id``, ``protocol``, ``dst_port`` columns; tables without them add nothing)."""
    found: dict[tuple[str, str], dict[str, set[tuple[str, int]]]] = {}
    for table in tables:
        if table is None or table.num_rows == 0 or "dst_service" not in table.column_names:
            continue
        columns = ("dst_service", "dst_kind", "dst_namespace", "dst_id", "protocol", "dst_port")
        rows = table.select(list(columns)).to_pylist()
        for row in rows:
            name = row["dst_service"]
            if not name or not row["dst_id"]:
                continue
            if row["dst_kind"] == "workload":
                if not row["dst_namespace"]:
                    continue
                key = (str(row["dst_namespace"]), str(name))
                end = f"{row['dst_namespace']}/{row['dst_id']}"
            else:
                key, end = ("*", str(name)), str(row["dst_id"])
            ports = found.setdefault(key, {}).setdefault(end, set())
            if row["dst_port"] is not None:
                ports.add((str(row["protocol"]).upper(), int(row["dst_port"])))
    return ServiceMap({
        k: {e: frozenset(p) for e, p in sorted(v.items())} for k, v in sorted(found.items())
    })
