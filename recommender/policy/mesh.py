"""Istio's own ports: recognising sidecar, ambient and control-plane traffic in the flows.

A flow to one of these ports is the mesh talking to itself, not an application port, and every
dialect renders it deliberately (``docs/dialects.md``, "Mesh ports"):

* **capture** (15001 outbound, 15006 inbound): Envoy's redirect targets inside the pod. Traffic
  to them never crosses the network, so a record naming them was observed after the redirect;
  the aggregation leaves such edges out (reason ``mesh-capture``) and no rule is written.
* **hbone** (15008): the HBONE mTLS tunnel of ambient mode (ztunnel, waypoints); the
  application port travels inside the tunnel.
* **health** (15021), **telemetry** (15020 merged metrics, 15090 Envoy statistics): served by
  the proxy, reached by kubelet, load balancers and Prometheus.
* **control-plane** (15010 xDS plain text, 15012 xDS and CA over TLS, 15014 monitoring, 15017
  webhooks): istiod's ports, reached by every proxy and by the API server.

The NetworkPolicy dialects give the last three kinds rules of their own (never merged with
application ports, flagged ``mesh:<role>``, listed in the ``recommender.io/mesh-ports``
annotation); the Istio dialect writes no AuthorizationPolicy rule for any of them (the proxy
serves them itself), except that a source seen only through HBONE gets an any-port rule for
its identity (the application port is inside the tunnel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CAPTURE_PORTS", "MESH_PORTS", "MESH_PORTS_ANNOTATION", "MeshPort", "mesh_port"]


@dataclass(frozen=True)
class MeshPort:
    """One of Istio's ports: its number, role and what listens on it."""

    port: int
    role: str
    description: str

    @property
    def flag(self) -> str:
        """The evidence flag of a rule for this port (``mesh:hbone``, say)."""
        return f"mesh:{self.role}"


#: Istio's well-known TCP ports (istio.io, "Ports used by Istio").
MESH_PORTS: Final[dict[int, MeshPort]] = {
    m.port: m
    for m in (
        MeshPort(15001, "capture", "Envoy outbound capture (inside the pod)"),
        MeshPort(15006, "capture", "Envoy inbound capture (inside the pod)"),
        MeshPort(15008, "hbone", "HBONE mTLS tunnel (ambient ztunnel, waypoints)"),
        MeshPort(15010, "control-plane", "istiod xDS and CA, plain text"),
        MeshPort(15012, "control-plane", "istiod xDS and CA, TLS"),
        MeshPort(15014, "control-plane", "istiod control-plane monitoring"),
        MeshPort(15017, "control-plane", "istiod webhooks"),
        MeshPort(15020, "telemetry", "istio-agent merged Prometheus metrics"),
        MeshPort(15021, "health", "sidecar and gateway health checks"),
        MeshPort(15090, "telemetry", "Envoy Prometheus statistics"),
    )
}
#: The redirect targets inside the pod: never a network port.
CAPTURE_PORTS: Final = tuple(sorted(p for p, m in MESH_PORTS.items() if m.role == "capture"))
#: The annotation listing a policy's mesh-port rules.
MESH_PORTS_ANNOTATION: Final = "recommender.io/mesh-ports"


def mesh_port(protocol: str | None, port: int | None) -> MeshPort | None:
    """The mesh port ``protocol``/``port`` is, or None (Istio's ports are all TCP).

    Examples
    --------
    >>> mesh_port("TCP", 15008).role, mesh_port("UDP", 15008), mesh_port("TCP", 8080)
    ('hbone', None, None)
    """
    if port is None or (protocol or "").upper() != "TCP":
        return None
    return MESH_PORTS.get(int(port))
