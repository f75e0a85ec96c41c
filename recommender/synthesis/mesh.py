"""What the flows say about the service mesh: which workloads run a proxy, and which observed
peers talk plain text to namespaces that a STRICT PeerAuthentication would close to them.

Under ``--mtls strict`` the Istio dialect writes a STRICT PeerAuthentication per namespace:
the proxies then refuse every connection that is not mutual TLS. :func:`mesh_report` lists,
for the report, the observed connections that would break: from sources outside the mesh
(the internet, other nodes) and from workloads the flows show no proxy for.

A workload counts as in the mesh when its labels say so (``security.istio.io/tlsMode: istio``
or ``service.istio.io/canonical-name``, set by sidecar injection; ``istio.io/dataplane-mode:
ambient`` on the pod or, as Cilium copies it, on its namespace) or its traffic does (it
sends or receives HBONE on 15008, or reaches istiod on 15010/15012). Traffic from a pod's own node
(kubelet probes, which Istio rewrites to its agent) is not counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from ..aggregate.edges import EdgeTables
from ..aggregate.label_maps import label_rows
from ..policy.mesh import mesh_port

__all__ = ["MESH_LABELS", "mesh_report", "mesh_workloads"]

#: Labels that show a pod in the mesh: (key, value or None for any value).
MESH_LABELS: Final = (
    ("security.istio.io/tlsMode", "istio"),
    ("service.istio.io/canonical-name", None),
    ("istio.io/dataplane-mode", "ambient"),
    ("io.cilium.k8s.namespace.labels.istio.io/dataplane-mode", "ambient"),
)
#: Most connections listed in the report.
_MAX_LISTED: Final = 200


def _labelled(labels: dict[str, str]) -> bool:
    return any(
        key in labels and (value is None or labels[key] == value) for key, value in MESH_LABELS
    )


def mesh_workloads(tables: EdgeTables) -> set[tuple[str, str]]:
    """The (namespace, workload) pairs the flows show a mesh proxy for (module docstring)."""
    found: set[tuple[str, str]] = set()
    for namespace, workload, labels in label_rows(tables.workload_labels):
        if namespace and workload and _labelled(dict(labels or ())):
            found.add((namespace, workload))
    columns = ["src_kind", "src_namespace", "src_id", "dst_kind", "dst_namespace", "dst_id",
               "protocol", "dst_port"]  # fmt: skip
    for edge in tables.edges.select(columns).to_pylist():
        role = mesh_port(edge["protocol"], edge["dst_port"])
        if role is None:
            continue
        if role.role == "hbone":  # both ends of a tunnel are in the mesh
            for side in ("src", "dst"):
                if edge[f"{side}_kind"] == "workload":
                    found.add((edge[f"{side}_namespace"], edge[f"{side}_id"]))
        if role.port in (15010, 15012) and edge["src_kind"] == "workload":
            found.add((edge["src_namespace"], edge["src_id"]))
    return found


def mesh_report(tables: EdgeTables, strict_namespaces: list[str]) -> dict[str, Any]:
    """The report's ``mesh`` section for STRICT mutual TLS in ``strict_namespaces``.

    Returns
    -------
    dict
        ``mtls`` (``STRICT``), ``namespaces``, ``workloads_in_mesh`` and
        ``workloads_without_proxy`` (observed workloads of those namespaces, by the signs in
        the module docstring), and ``plain_text`` (observed connections a STRICT
        PeerAuthentication would refuse: source, destination, port, connections, why), most
        connections first, with ``plain_text_total``.
    """
    strict = set(strict_namespaces)
    in_mesh = mesh_workloads(tables)
    seen: set[tuple[str, str]] = set()
    breaks: dict[tuple[str, str, str, int | None], list[Any]] = defaultdict(lambda: [0, ""])
    for edge in tables.edges.to_pylist():
        for side in ("src", "dst"):
            if edge[f"{side}_kind"] == "workload" and edge[f"{side}_namespace"] in strict:
                seen.add((edge[f"{side}_namespace"], edge[f"{side}_id"]))
        if edge["dst_kind"] != "workload" or edge["dst_namespace"] not in strict:
            continue
        if edge["protocol"] != "TCP" or mesh_port(edge["protocol"], edge["dst_port"]):
            continue  # the proxies intercept TCP only; their own ports are theirs
        kind = edge["src_kind"]
        if kind == "host":
            continue  # the pod's own node: kubelet probes, rewritten to the agent
        if kind == "workload":
            if (edge["src_namespace"], edge["src_id"]) in in_mesh:
                continue
            source = f"{edge['src_namespace']}/{edge['src_id']}"
            why = "no sign of a mesh proxy on the source"
        else:
            ips = ",".join(edge["src_ips"] or ()) or edge["src_name"] or edge["src_id"]
            source = f"{kind}:{ips}"
            why = "source outside the mesh (plain text)"
        key = (source, f"{edge['dst_namespace']}/{edge['dst_id']}", edge["protocol"],
               edge["dst_port"])  # fmt: skip
        breaks[key][0] += int(edge["connections"] or 0)
        breaks[key][1] = why
    listed = sorted(breaks.items(), key=lambda kv: (-kv[1][0], kv[0][0], kv[0][1], kv[0][3] or 0))
    return {
        "mtls": "STRICT",
        "namespaces": sorted(strict),
        "workloads_in_mesh": sorted(f"{ns}/{wl}" for ns, wl in seen & in_mesh),
        "workloads_without_proxy": sorted(f"{ns}/{wl}" for ns, wl in seen - in_mesh),
        "plain_text_total": len(listed),
        "plain_text": [
            {
                "source": src,
                "destination": dst,
                "protocol": proto,
                "port": port,
                "connections": connections,
                "why": why,
            }
            for (src, dst, proto, port), (connections, why) in listed[:_MAX_LISTED]
        ],
    }
