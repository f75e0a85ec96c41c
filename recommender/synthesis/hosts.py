"""Host policies: least-privilege rules for the nodes themselves (``--host-policies``).

Flows whose endpoint is a host (a Calico host endpoint, ``hep``; Hubble's ``reserved:host``,
the node the flow was observed on) say what each node sends and receives. Per node seen as an
endpoint, one cluster-scoped policy selects the node by ``kubernetes.io/hostname`` (the label
Calico's automatic HostEndpoints copy from the node, and Cilium's nodeSelector matches) with
ingress rules from the observed sources and egress rules to the observed destinations; only a
direction with observed traffic is isolated.
The node is the one a Calico automatic host endpoint is named after (``<node>-auto-hep``), else
the one node the flow was observed on; a host endpoint seen from several nodes, and traffic
from another node (``remote-node``), cannot be pinned to one node and are left out.

Only Calico (GlobalNetworkPolicy over HostEndpoints) and Cilium (CiliumClusterwideNetworkPolicy
with ``nodeSelector``; needs Cilium's host firewall) render them; see ``docs/dialects.md``.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any, Final

from ..aggregate.edges import EdgeTables
from ..config import RecommendConfig
from ..policy._names import is_label_value, safe_name
from ..policy.model import Evidence, LabelSelector, Peer, Policy, PortSpec, Rule
from .synthesizer import MANAGED_BY, NAMESPACE_LABEL, Findings

__all__ = ["AUTO_HEP_SUFFIX", "HOSTNAME_LABEL", "host_policies"]

#: The node label a host policy selects by.
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
#: The name suffix of Calico's automatic host endpoints (``<node>-auto-hep``).
AUTO_HEP_SUFFIX: Final = "-auto-hep"
_ENTITY: Final = {"host": "host", "remote-node": "remote-node", "external": "world"}
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")


def _peer_key(peer: Peer) -> tuple[Any, ...]:
    net = ipaddress.ip_network(peer.cidr) if peer.cidr else None
    return (
        peer.kind,
        peer.namespace_selector.match_labels if peer.namespace_selector else (),
        peer.pod_selector.match_labels if peer.pod_selector else (),
        net.version if net else 0,
        int(net.network_address) if net else 0,
        peer.cidr or "",
    )


def host_policies(
    tables: EdgeTables, findings: Findings, config: RecommendConfig | None = None
) -> tuple[Policy, ...]:
    """One host policy per node observed as a flow endpoint.

    Parameters
    ----------
    tables
        The evidence edges (their ``nodes`` column names the observing nodes).
    findings
        Synthesis findings (the selectors of workload peers).
    config
        The run's options (``policy_prefix``, DNS over both protocols).

    Returns
    -------
    tuple of Policy
        Host policies (namespace ``""``), sorted by name.
    """
    config = config or RecommendConfig()
    selectors = findings.selectors
    # node -> direction -> peer -> ports, evidence
    peers: dict[str, dict[str, dict[Peer, set[PortSpec]]]] = defaultdict(
        lambda: {"ingress": defaultdict(set), "egress": defaultdict(set)}
    )
    counts: dict[tuple[str, str, Peer], int] = defaultdict(int)
    for edge in tables.edges.to_pylist():
        if edge["protocol"] not in _PROTOCOLS:
            continue
        for direction, near, other in (("ingress", "dst", "src"), ("egress", "src", "dst")):
            if edge[f"{near}_kind"] != "host":
                continue
            node = _node_of(edge, near)
            if node is None:  # a host endpoint we cannot pin to one node
                continue
            nodes = [node]
            for peer in _far_peers(edge, other, selectors):
                port = edge["dst_port"]
                spec = (
                    PortSpec(edge["protocol"], int(port))
                    if port is not None
                    else PortSpec(edge["protocol"])
                )
                peers[nodes[0]][direction][peer].add(spec)
                counts[(nodes[0], direction, peer)] += int(edge["connections"] or 0)
                if config.dns_both_protocols and port == 53 and edge["protocol"] in ("UDP", "TCP"):
                    peers[nodes[0]][direction][peer].add(
                        PortSpec("TCP" if edge["protocol"] == "UDP" else "UDP", 53)
                    )
    out = []
    for node in sorted(peers):
        rules: dict[str, list[Rule]] = {"ingress": [], "egress": []}
        for direction in ("ingress", "egress"):
            grouped: dict[tuple[PortSpec, ...], list[Peer]] = defaultdict(list)
            for peer, ports in peers[node][direction].items():
                key = tuple(sorted(ports, key=lambda p: (p.protocol, p.port or 0)))
                grouped[key].append(peer)
            for port_key, members in sorted(
                grouped.items(), key=lambda kv: [(p.protocol, p.port or 0) for p in kv[0]]
            ):
                members.sort(key=_peer_key)
                connections = sum(counts[(node, direction, m)] for m in members)
                rules[direction].append(
                    Rule(
                        direction,  # type: ignore[arg-type]
                        tuple(members),
                        port_key,
                        evidence=Evidence(connections=connections, flags=("host",)),
                    )
                )
        out.append(
            Policy(
                name=safe_name(f"{config.policy_prefix}host-{node}"),
                namespace="",
                selector=LabelSelector.of({HOSTNAME_LABEL: node}),
                # Only directions with observed traffic are isolated: a host's unobserved
                # ingress (SSH, the kubelet API) must not be cut off by a missing rule.
                policy_types=tuple(d for d in ("ingress", "egress") if rules[d]),
                ingress=tuple(rules["ingress"]),
                egress=tuple(rules["egress"]),
                labels=MANAGED_BY,
                annotations=(("recommender.io/node", node),),
                description=f"Observed traffic of node {node}.",
            )
        )
    return tuple(out)


def _node_of(edge: dict[str, Any], side: str) -> str | None:
    """The node a host endpoint belongs to: from a Calico automatic host endpoint's name
    (``<node>-auto-hep``), else the one node the edge was observed on."""
    name = edge[f"{side}_name"] or ""
    if name.endswith(AUTO_HEP_SUFFIX) and is_label_value(name[: -len(AUTO_HEP_SUFFIX)]):
        return name[: -len(AUTO_HEP_SUFFIX)] or None
    nodes = [n for n in edge["nodes"] or () if n and is_label_value(n)]
    return nodes[0] if len(nodes) == 1 else None


def _far_peers(edge: dict[str, Any], side: str, selectors: Any) -> list[Peer]:
    """The far end of a host's edge as peers: a workload (namespace and pod selector) or
    one /32 or /128 per address, marked with what it was observed as."""
    kind = edge[f"{side}_kind"]
    if kind == "workload":
        choice = selectors.get((edge[f"{side}_namespace"], edge[f"{side}_id"]))
        if choice is None:
            return []
        return [
            Peer(
                "pods",
                namespace_selector=LabelSelector.of({NAMESPACE_LABEL: edge[f"{side}_namespace"]}),
                pod_selector=choice.selector,
                workload=edge[f"{side}_id"],
            )
        ]
    entity = _ENTITY.get(kind)
    if kind == "cluster-entity" and (edge[f"{side}_name"] or "") == "kube-apiserver":
        entity = "kube-apiserver"
    out = []
    for ip in edge[f"{side}_ips"] or ():
        net = ipaddress.ip_network(ip)
        out.append(Peer("cidr", cidr=str(net), entities=(entity or "world",)))
    return out
