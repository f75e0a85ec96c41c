"""Attach the evidence richer dialects use to the peers of a synthesised PolicySet.

Synthesis builds the dialect-neutral rules; Calico and Cilium can say more about some peers:
the DNS names observed for external addresses (Calico domains, Cilium toFQDNs), what an
address was observed as (the node, another node, the API server: Cilium matches those only by
entity), the HTTP requests seen on a port (Cilium L7 rules), and a workload's service account.
This module reads that from the evidence edges and sets the optional peer and policy fields
(:class:`~recommender.policy.model.Peer` ``dns_names``, ``entities``, ``http``,
``service_account``, ``workload``); it never adds, removes or widens a rule, so the Kubernetes
rendering and the self-check are unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from ..aggregate.edges import MAX_HTTP_REQUESTS, EdgeTables
from ..aggregate.label_maps import label_rows
from ..aggregate.selectors import SelectorChoice
from ..policy._names import is_label_value
from ..policy.model import HttpRule, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = ["SERVICE_ACCOUNT_LABELS", "enrich_policy_set", "service_accounts"]

#: Labels that carry a pod's service account: Cilium's (Hubble) and Calico's.
SERVICE_ACCOUNT_LABELS: Final = (
    "io.cilium.k8s.policy.serviceaccount",
    "k8s:io.cilium.k8s.policy.serviceaccount",
    "projectcalico.org/serviceaccount",
)
_NAMESPACE_LABEL: Final = "kubernetes.io/metadata.name"
_HTTP_METHOD: Final = re.compile(r"[A-Z]{1,20}")
#: Paths kept as L7 evidence: printable ASCII, starting with '/', at most 256 characters.
_HTTP_PATH: Final = re.compile(r"/[\x21-\x7e]{0,255}")
#: A DNS name usable in a domain rule: letters, digits, '-', '_' and dots, at most 253 long.
_DNS_NAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
#: A peer on a port with more distinct paths than this gets method-only HTTP rules.
MAX_PATHS: Final = 16
_KIND_ENTITY: Final = {"host": "host", "remote-node": "remote-node", "external": "world"}
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def service_accounts(
    tables: EdgeTables, *, partial: bool = False
) -> dict[tuple[str, str], str]:
    """The one service account of each (namespace, workload) whose pods all name the same one,
    from the labels the flows carry (:data:`SERVICE_ACCOUNT_LABELS`).

    ``partial``: a label map that names no account (Hubble sometimes records an endpoint with
    only some of its labels) does not count against the account the others name; by default
    it does (the workload then has no known account).
    """
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for namespace, workload, pairs in label_rows(tables.workload_labels):
        key = (namespace, workload)
        labels = dict(pairs or ())
        values = {labels[k] for k in SERVICE_ACCOUNT_LABELS if k in labels}
        if partial and not values:
            seen.setdefault(key, set())
            continue
        seen[key].update(values or {""})
    return {
        key: next(iter(values))
        for key, values in seen.items()
        if len(values) == 1 and "" not in values and is_label_value(next(iter(values)))
    }


def _http(edge: dict[str, Any]) -> list[HttpRule] | None:
    """The edge's HTTP requests; None when they cannot be listed (too many, or odd values)."""
    requests = edge.get("http_requests") or []
    if len(requests) > MAX_HTTP_REQUESTS or edge["dst_port"] is None:
        return None
    out = []
    for request in requests:
        method, _, path = request.partition(" ")
        if not _HTTP_METHOD.fullmatch(method):
            return None
        out.append(
            HttpRule(
                edge["protocol"],
                int(edge["dst_port"]),
                method,
                path if _HTTP_PATH.fullmatch(path) else None,
            )
        )
    return out


def _generalise(rules: set[HttpRule]) -> tuple[HttpRule, ...]:
    """Per port and method, exact paths; more than :data:`MAX_PATHS` (or one unknown path)
    become the method alone."""
    by_key: dict[tuple[str, int, str], set[str | None]] = defaultdict(set)
    for rule in rules:
        by_key[(rule.protocol, rule.port, rule.method)].add(rule.path)
    out: list[HttpRule] = []
    for (protocol, port, method), paths in by_key.items():
        if None in paths or len(paths) > MAX_PATHS:
            out.append(HttpRule(protocol, port, method, None))
        else:
            out.extend(HttpRule(protocol, port, method, p) for p in paths)
    return tuple(sorted(out, key=lambda r: (r.protocol, r.port, r.method, r.path or "")))


class _Far:
    """What one policy's edges say about the far ends of its rules."""

    def __init__(self) -> None:
        self.workloads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.addresses: list[tuple[str, str | None, dict[str, Any]]] = []


def enrich_policy_set(
    policy_set: PolicySet,
    tables: EdgeTables,
    selectors: Mapping[tuple[str, str], SelectorChoice],
) -> PolicySet:
    """Set the optional dialect evidence on the peers and policies of ``policy_set``.

    Parameters
    ----------
    policy_set
        The synthesised policies.
    tables
        The evidence edges they were built from.
    selectors
        The selector chosen per workload (``Findings.selectors``).

    Returns
    -------
    PolicySet
        Equal to ``policy_set`` (the fields set take no part in comparisons), with
        ``dns_names``, ``entities``, ``http``, ``service_account`` and ``workload`` filled in
        where the evidence shows them.
    """
    by_selector = {(ns, choice.selector): wl for (ns, wl), choice in selectors.items()}
    accounts = service_accounts(tables)
    mesh_accounts = service_accounts(tables, partial=True)
    far: dict[tuple[str, str, str], _Far] = defaultdict(_Far)
    for edge in tables.edges.to_pylist():
        for direction, near, other in (("egress", "src", "dst"), ("ingress", "dst", "src")):
            if edge[f"{near}_kind"] != "workload":
                continue
            entry = far[(direction, edge[f"{near}_namespace"], edge[f"{near}_id"])]
            if edge[f"{other}_kind"] == "workload":
                entry.workloads[(edge[f"{other}_namespace"], edge[f"{other}_id"])].append(edge)
            else:
                kind = edge[f"{other}_kind"]
                entity = _KIND_ENTITY.get(kind)
                if kind == "cluster-entity":
                    name = edge[f"{other}_name"] or edge[f"{other}_id"]
                    entity = "kube-apiserver" if name == "kube-apiserver" else None
                for ip in edge[f"{other}_ips"] or ():
                    entry.addresses.append((ip, entity, edge))
    policies = []
    for policy in policy_set.policies:
        workload = by_selector.get((policy.namespace, policy.selector))
        if workload is None or policy.selector.is_empty:
            policies.append(policy)
            continue
        owner = (policy.namespace, workload)
        rules: dict[str, list[Rule]] = {"ingress": [], "egress": []}
        for rule in policy.rules:
            evidence = far.get((rule.direction, *owner))
            peers = tuple(
                _peer(peer, rule, policy, evidence, by_selector, accounts, mesh_accounts)
                for peer in rule.peers
            )
            rules[rule.direction].append(replace(rule, peers=peers))
        policies.append(
            replace(
                policy,
                ingress=tuple(rules["ingress"]),
                egress=tuple(rules["egress"]),
                service_account=accounts.get(owner),
            )
        )
    return PolicySet(tuple(policies), policy_set.host_policies)


def _in_ports(edge: dict[str, Any], ports: tuple[PortSpec, ...]) -> bool:
    if not ports:
        return True
    return any(p.contains(edge["protocol"], edge["dst_port"]) for p in ports)


def _peer(
    peer: Peer,
    rule: Rule,
    policy: Policy,
    evidence: _Far | None,
    by_selector: Mapping[tuple[str, LabelSelector], str],
    accounts: Mapping[tuple[str, str], str],
    mesh_accounts: Mapping[tuple[str, str], str],
) -> Peer:
    if evidence is None:
        return peer
    if peer.kind == "pods":
        namespace = policy.namespace
        if peer.namespace_selector is not None:
            named = dict(peer.namespace_selector.match_labels).get(_NAMESPACE_LABEL)
            if named is None or len(peer.namespace_selector.match_labels) != 1:
                return peer
            namespace = named
        workload = by_selector.get((namespace, peer.pod_selector or LabelSelector()))
        if workload is None:
            return peer
        http: set[HttpRule] = set()
        unlisted: set[tuple[str, int | None]] = set()  # ports whose requests cannot be listed
        for edge in evidence.workloads.get((namespace, workload), ()):
            if not _in_ports(edge, rule.ports):
                continue
            found = _http(edge)
            if found is None:
                unlisted.add((edge["protocol"], edge["dst_port"]))
            http.update(found or ())
        kept = {h for h in http if (h.protocol, h.port) not in unlisted}
        return replace(
            peer,
            workload=workload,
            service_account=accounts.get((namespace, workload)),
            mesh_account=mesh_accounts.get((namespace, workload)),
            http=_generalise(kept),
        )
    if peer.kind == "cidr" and peer.cidr is not None:
        network = ipaddress.ip_network(peer.cidr, strict=False)
        excepted = [ipaddress.ip_network(e, strict=False) for e in peer.except_]
        names: set[str] = set()
        entities: set[str] = set()
        unnamed = False
        for ip, entity, edge in evidence.addresses:
            address = ipaddress.ip_address(ip)
            if address not in network or any(address in e for e in excepted):
                continue
            if not _in_ports(edge, rule.ports):
                continue
            entities.add(entity or "world")
            valid = [
                n.rstrip(".").lower() for n in edge["dns_names"] or () if _DNS_NAME.fullmatch(n)
            ]
            names.update(valid)
            unnamed = unnamed or not valid
        # Names stand in for the addresses only when every address of the peer had one.
        dns = tuple(sorted(names)) if rule.direction == "egress" and not unnamed else ()
        return replace(peer, dns_names=dns, entities=tuple(sorted(entities)))
    return peer
