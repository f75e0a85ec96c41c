"""Replay observed flows against a policy set: how much of the observed traffic do they allow?

:func:`replay` aggregates flows into edges (:func:`~recommender.aggregate.edges.aggregate_edges`),
builds the cluster the flows saw (:func:`cluster_from_flows`) and judges every distinct edge
**once** with the Kubernetes NetworkPolicy evaluator
(:func:`~recommender.evaluation.evaluator.evaluate`), weighting the verdict by the edge's connection
count: tens of millions of flow rows collapse to thousands of edges. The result, a
:class:`Coverage`, holds

* ``coverage``: allowed connections / observed allowed connections (Illumio's "rule
  coverage"); 1.0 when nothing was observed;
* ``false_denies``: observed allowed edges the policies would deny, with the evaluator's reason;
* ``denied_but_allowed``: edges denied in the input that the policies would allow;
* ``unused_rules``: rules no observed edge matched;
* ``over_permissive``: workload pairs x observed ports that the policies allow although never
  observed ("synthetic negatives"), against the number observed;
* ``not_evaluated``: edges Kubernetes semantics cannot judge (node addresses, entities without an
  address, ICMP), each with its reason: counted, never dropped;
* ``redundant_rules``: rules other rules make redundant (``shadowed`` when no observed edge
  matched them) and ``broad_rules``: rules that allow much more than least privilege, with
  their utilisation (:mod:`recommender.evaluation.rule_analysis`).

Traffic from a node to a pod (endpoint kind ``host``, the pod's own node in Hubble and Calico)
counts as allowed: Kubernetes always lets a pod's own node reach it (kubelet probes). See
``docs/evaluate.md``.
"""

from __future__ import annotations

import ipaddress
import os
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import pyarrow as pa

from ..aggregate.edges import EDGE_KEY, EdgeTables, aggregate_edges
from ..aggregate.label_maps import label_rows
from ..config import RecommendConfig
from ..guardrails.model import Guardrails
from ..policy.authz import IstioPolicies
from ..policy.index import SelectorIndex
from ..policy.istio import DEFAULT_TRUST_DOMAIN, principal
from ..policy.mesh import mesh_port
from ..policy.model import Direction, Policy, PolicySet, Rule
from .evaluator import (
    NAMESPACE_NAME_LABEL,
    Cluster,
    Endpoint,
    Namespace,
    Pod,
    Verdict,
    _Check,
    _supported,
)
from .istio import ROOT_NAMESPACE, Identity, IstioVerdict, Request, authorize
from .pair_classes import PAIR_BUDGET, count_allowed_pairs
from .precedence import evaluate_stack, with_namespace_labels
from .rule_analysis import RuleFinding, find_broad_rules, find_redundant_rules
from .services import ServiceMap, service_map

__all__ = [
    "Coverage",
    "EdgeVerdict",
    "OverPermissive",
    "cluster_from_flows",
    "replay",
]

PathLike = str | os.PathLike[str]

#: Protocols Kubernetes NetworkPolicy can match.
_K8S_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
#: Cilium copies a pod's namespace labels into its own labels under this prefix.
_CILIUM_NS_LABELS: Final = "io.cilium.k8s.namespace.labels."
#: Reason given to node-local traffic, which Kubernetes always allows.
NODE_LOCAL: Final = "node-local: Kubernetes always allows a pod's own node to reach it"
#: Most (source, destination, port) triples the over-permissiveness measure evaluates.
_DEFAULT_SYNTHETIC_LIMIT: Final = 250_000
#: Appended to a workload's pod name when two of its pods talk to each other.
_OTHER_POD: Final = " (another pod)"

#: A rule: (namespace, policy name, direction, index in that direction).
RuleKey = tuple[str, str, Direction, int]


@dataclass(frozen=True)
class EdgeVerdict:
    """One edge and what the policies say about it.

    Parameters
    ----------
    source, destination : str
        ``namespace/workload`` for a workload, else ``kind:address-or-name``.
    protocol : str
        The edge's protocol.
    port : int or None
        The destination port.
    connections : int
        Observed connections on the edge (at least 1 per edge).
    reason : str
        The evaluator's reason (the denying direction(s) for a deny) or why it was not
        evaluated.
    """

    source: str
    destination: str
    protocol: str
    port: int | None
    connections: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "connections": self.connections,
            "destination": self.destination,
            "port": self.port,
            "protocol": self.protocol,
            "reason": self.reason,
            "source": self.source,
        }


@dataclass(frozen=True)
class OverPermissive:
    """Synthetic negatives: (source workload, destination workload, protocol/port) triples.

    Every ordered pair of distinct observed workloads is crossed with every protocol/port
    observed anywhere in the evidence. A triple never observed is a *synthetic negative*: a
    least-privilege policy set should deny it.

    Parameters
    ----------
    candidates : int
        Triples considered (``None`` fields below when skipped, see ``skipped``).
    observed : int
        Triples observed as evidence.
    allowed_unobserved : int
        Triples the policies allow although never observed.
    examples : tuple of str
        Some allowed unobserved triples, ``src -> dst PROTO/port``.
    skipped : str
        Why the measure was not computed (empty when it was).
    estimate : str
        Empty when ``allowed_unobserved`` is exact; otherwise it is an upper bound and this
        says how it was computed (:mod:`recommender.evaluation.pair_classes`). In
        :meth:`to_dict` only when not empty.
    """

    candidates: int
    observed: int
    allowed_unobserved: int
    examples: tuple[str, ...] = ()
    skipped: str = ""
    estimate: str = ""

    @property
    def ratio(self) -> float:
        """Allowed unobserved triples per observed triple (0.0 when none was observed)."""
        return self.allowed_unobserved / self.observed if self.observed else 0.0

    @property
    def rate(self) -> float:
        """Share of the unobserved triples that the policies allow."""
        negatives = self.candidates - self.observed
        return self.allowed_unobserved / negatives if negatives > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "allowed_unobserved": self.allowed_unobserved,
            "candidates": self.candidates,
            "examples": list(self.examples),
            "observed": self.observed,
            "rate": self.rate,
            "ratio": self.ratio,
            "skipped": self.skipped,
        } | ({"estimate": self.estimate} if self.estimate else {})


@dataclass(frozen=True)
class Coverage:
    """How a policy set fares against observed flows (see the module docstring).

    Parameters
    ----------
    observed_connections, allowed_connections : int
        Evaluated evidence connections, and how many of them the policies allow.
    observed_edges, allowed_edges : int
        The same counted in edges.
    false_denies : tuple of EdgeVerdict
        Evidence edges the policies deny, most connections first.
    denied_but_allowed : tuple of EdgeVerdict
        Edges denied in the input that the policies allow, most connections first.
    denied_edges : int
        Evaluated edges denied in the input.
    unused_rules : tuple of dict
        Rules no evidence edge matched: ``policy`` (namespace/name), ``direction``, ``rule``
        (index in that direction), ``peers`` and ``ports`` (counts).
    rules : int
        Rules in the policy set.
    over_permissive : OverPermissive
        The synthetic-negatives measure.
    not_evaluated : tuple of EdgeVerdict
        Evidence and denied edges Kubernetes semantics cannot judge, with the reason.
    excluded_edges : int
        Edges the aggregation left out (suspected replies, ephemeral ports, too few
        connections); neither evidence nor judged.
    notes : tuple of str
        Assumptions made (node-local traffic, labels assumed for unlabelled workloads).
    redundant_rules : tuple of RuleFinding
        Rules other rules of policies selecting the same pods make redundant; ``shadowed``
        when no evidence edge matched them (see
        :func:`~recommender.evaluation.rule_analysis.find_redundant_rules`).
    broad_rules : tuple of RuleFinding
        Rules that allow much more than least privilege, with their utilisation (see
        :func:`~recommender.evaluation.rule_analysis.find_broad_rules`).
    rule_traffic : mapping
        Per rule key ``(namespace, policy, direction, index)``, the (peer, protocol, port) of
        the evidence edges it matched (peer: ``namespace/workload`` or an IP address). Not in
        :meth:`to_dict` nor compared.
    cluster : Cluster or None
        The cluster built from the flows (not in :meth:`to_dict` nor compared).
    external_addresses : frozenset of str
        External addresses of the evidence edges (not in :meth:`to_dict` nor compared).
    """

    observed_connections: int
    allowed_connections: int
    observed_edges: int
    allowed_edges: int
    false_denies: tuple[EdgeVerdict, ...]
    denied_but_allowed: tuple[EdgeVerdict, ...]
    denied_edges: int
    unused_rules: tuple[dict[str, Any], ...]
    rules: int
    over_permissive: OverPermissive
    not_evaluated: tuple[EdgeVerdict, ...] = ()
    excluded_edges: int = 0
    notes: tuple[str, ...] = ()
    redundant_rules: tuple[RuleFinding, ...] = ()
    broad_rules: tuple[RuleFinding, ...] = ()
    rule_traffic: Mapping[RuleKey, frozenset[tuple[str, str, int | None]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    cluster: Cluster | None = field(default=None, repr=False, compare=False)
    external_addresses: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    @property
    def coverage(self) -> float:
        """Allowed / observed allowed connections, in [0, 1]; 1.0 when none was observed."""
        if self.observed_connections == 0:
            return 1.0
        return self.allowed_connections / self.observed_connections

    @property
    def false_deny_connections(self) -> int:
        """Connections on the false-deny edges."""
        return sum(e.connections for e in self.false_denies)

    def not_evaluated_by_reason(self) -> dict[str, int]:
        """Edges not evaluated, counted per reason."""
        return dict(sorted(Counter(e.reason for e in self.not_evaluated).items()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; dict keys are sorted when dumped with ``sort_keys=True``.

        Returns
        -------
        dict
            Every metric and list; lists are in a stable order.
        """
        return {
            "allowed_connections": self.allowed_connections,
            "allowed_edges": self.allowed_edges,
            "broad_rules": [f.to_dict() for f in self.broad_rules],
            "coverage": self.coverage,
            "denied_but_allowed": [e.to_dict() for e in self.denied_but_allowed],
            "denied_edges": self.denied_edges,
            "excluded_edges": self.excluded_edges,
            "false_deny_connections": self.false_deny_connections,
            "false_denies": [e.to_dict() for e in self.false_denies],
            "not_evaluated": [e.to_dict() for e in self.not_evaluated],
            "not_evaluated_by_reason": self.not_evaluated_by_reason(),
            "notes": list(self.notes),
            "observed_connections": self.observed_connections,
            "observed_edges": self.observed_edges,
            "over_permissive": self.over_permissive.to_dict(),
            "redundant_rules": [f.to_dict() for f in self.redundant_rules],
            "rules": self.rules,
            "unused_rules": [dict(sorted(r.items())) for r in self.unused_rules],
        }


# --------------------------------------------------------------------------- the cluster


#: Pod labels that carry a pod's service account in flows (Hubble's, Calico's).
_SERVICE_ACCOUNT_KEYS: Final = (
    "io.cilium.k8s.policy.serviceaccount",
    "k8s:io.cilium.k8s.policy.serviceaccount",
    "projectcalico.org/serviceaccount",
)


def _with_service_accounts(cluster: Cluster) -> Cluster:
    """Pods with their service account under both Cilium's and Calico's label, whichever the
    flows carried, so that either dialect's service-account selectors can be judged."""
    pods = []
    for pod in cluster.pods:
        account = next((pod.labels[k] for k in _SERVICE_ACCOUNT_KEYS if k in pod.labels), None)
        if account is not None:
            extra = {_SERVICE_ACCOUNT_KEYS[0]: account, _SERVICE_ACCOUNT_KEYS[2]: account}
            pod = replace(pod, labels={**pod.labels, **extra})
        pods.append(pod)
    return Cluster(cluster.namespaces, tuple(pods))


def _label_maps(
    workload_labels: pa.Table,
) -> dict[tuple[str, str], list[tuple[tuple[str, str], ...]]]:
    """Per (namespace, workload), every distinct label map observed, as (key, value) pairs in
    the order first seen (empty list: none observed). A pod's rows mostly repeat one map (the
    rows share one tuple per distinct map, :func:`~recommender.aggregate.label_maps.label_rows`),
    so each workload keeps one or two."""
    maps: dict[tuple[str, str], list[tuple[tuple[str, str], ...]]] = {}
    for ns, wl, labels in label_rows(workload_labels):
        if ns is None or wl is None:
            continue
        entry = maps.get((ns, wl))
        if entry is None:
            entry = maps[(ns, wl)] = []
        if labels and labels not in entry:
            entry.append(labels)
    return maps


def _shared(maps: Iterable[Iterable[tuple[str, str]]]) -> dict[str, str]:
    """The labels every map (as (key, value) pairs) carries with the same value."""
    common: dict[str, str] | None = None
    for pairs in maps:
        labels = dict(pairs)
        common = (
            labels
            if common is None
            else {k: v for k, v in common.items() if labels.get(k) == v}
        )
    return common or {}


#: Per ``workload_labels`` table (by id, while it lives): its label maps and the cluster built
#: from them with ``assume_app_label``, so that the self-check's second replay (the edges left
#: out on purpose, the same workloads) does not build them again.
_CLUSTERS: dict[int, tuple[Any, dict[tuple[str, str], list[Any]], Cluster]] = {}


def _cluster_of(
    workload_labels: pa.Table,
) -> tuple[dict[tuple[str, str], list[tuple[tuple[str, str], ...]]], Cluster]:
    """:func:`_label_maps` and :func:`_cluster` (app label assumed) of a table, once per table."""
    key = id(workload_labels)
    hit = _CLUSTERS.get(key)
    if hit is not None and hit[0]() is workload_labels:
        return hit[1], hit[2]
    maps = _label_maps(workload_labels)
    cluster = _cluster(maps, True)
    _CLUSTERS[key] = (
        weakref.ref(workload_labels, lambda _ref: _CLUSTERS.pop(key, None)), maps, cluster
    )
    return maps, cluster


def _edge_tables(flows: Any, config: RecommendConfig | None, format: str | None) -> EdgeTables:
    if isinstance(flows, EdgeTables):
        return flows
    if isinstance(flows, pa.Table):
        return aggregate_edges(flows, config)
    from ..aggregate.checked import aggregate_flow_files

    # Streamed through the input checks: copies counted once, the window of --last.
    return aggregate_flow_files(flows, config, format)[0]


def cluster_from_flows(
    table_or_edges: pa.Table | EdgeTables,
    *,
    assume_app_label: bool = True,
) -> Cluster:
    """The namespaces and pods the flows saw: one pod per observed workload.

    Parameters
    ----------
    table_or_edges : pyarrow.Table or EdgeTables
        A canonical flow table, or its aggregation.
    assume_app_label : bool, default True
        Give a workload whose labels were never observed the label ``app=<workload>``, the
        selector synthesis assumes for it (otherwise it has no labels).

    Returns
    -------
    Cluster
        A pod named after each workload, in its namespace, labelled with the labels all its
        observed pods share; namespaces labelled ``kubernetes.io/metadata.name`` (plus the
        namespace labels Cilium copies into pod labels, ``io.cilium.k8s.namespace.labels.*``).
        External endpoints are not part of it: they are IP addresses.

    Examples
    --------
    >>> from recommender.aggregate.edges import EdgeTables
    >>> labels = pa.table({"namespace": ["shop"], "workload": ["web"],
    ...                    "labels": pa.array([[("app", "web")]], pa.map_(pa.string(), pa.string()))})
    >>> empty = pa.table({})
    >>> c = cluster_from_flows(EdgeTables(empty, empty, empty, labels, 0, None, None))
    >>> [(p.key, dict(p.labels)) for p in c.pods]
    [('shop/web', {'app': 'web'})]
    """  # noqa: E501
    tables = (
        table_or_edges
        if isinstance(table_or_edges, EdgeTables)
        else aggregate_edges(table_or_edges)
    )
    return _cluster(_label_maps(tables.workload_labels), assume_app_label)


def _cluster(
    maps: Mapping[tuple[str, str], list[tuple[tuple[str, str], ...]]], assume_app_label: bool
) -> Cluster:
    """:func:`cluster_from_flows` from the label maps (:func:`_label_maps`)."""
    pods: list[Pod] = []
    ns_labels: dict[str, dict[str, str]] = {}
    for (ns, name), observed in sorted(maps.items()):
        labels = _shared(observed)
        if not observed and assume_app_label:
            labels = {"app": name}
        pods.append(Pod(ns, name, labels))
        copied = {
            k[len(_CILIUM_NS_LABELS) :]: v
            for k, v in labels.items()
            if k.startswith(_CILIUM_NS_LABELS)
        }
        ns_labels.setdefault(ns, {}).update(copied)
    namespaces = {
        ns: Namespace(ns, {**labels, NAMESPACE_NAME_LABEL: ns})
        for ns, labels in sorted(ns_labels.items())
    }
    return Cluster(namespaces, tuple(pods))


# --------------------------------------------------------------------------- judging edges


@dataclass
class _Judge:
    """Evaluates queries once each, on the policies that can decide them only.

    Without guardrails, those are the policies selecting the source or the destination pod,
    found through a label index per namespace (:class:`~recommender.policy.index.SelectorIndex`)
    and kept per pod: the verdict is the one all policies give (a policy that selects neither
    pod takes no part in it), and the cost no longer grows with the policies of the namespace.
    Every policy of a namespace is still checked for unsupported features (as
    :func:`~recommender.evaluation.evaluator.evaluate` does) the first time the namespace is
    judged. With guardrails, the policies of the endpoints' namespaces.
    """

    policy_set: PolicySet
    cluster: Cluster
    pods: dict[tuple[str, str], Pod]
    guardrails: Guardrails | None = None
    dialect: str = "kubernetes"
    istio: _IstioLayer | None = None
    tree: Any = None  # a PolicyTree with Calico or Cilium policies: it judges every query
    services: ServiceMap | None = None  # Service endpoints seen in the flows (for the tree)
    _by_ns: dict[tuple[str, ...], PolicySet] = field(default_factory=dict)
    _cache: dict[tuple[Any, ...], Verdict] = field(default_factory=dict)
    _in_ns: dict[str, tuple[Policy, ...]] = field(default_factory=dict)
    _index: dict[str, SelectorIndex[Policy]] = field(default_factory=dict)
    _selecting: dict[str, tuple[Policy, ...]] = field(default_factory=dict)
    _isolating_cache: dict[tuple[str, str], list[Policy]] = field(default_factory=dict)
    _checked: set[str] = field(default_factory=set)
    #: While set, the indexed verdicts also record which rules each query uses (every rule of
    #: the isolating policies is tried once, for the verdict and the use together).
    rule_use: _RuleUse | None = None

    def __post_init__(self) -> None:
        grouped: dict[str, list[Policy]] = {}
        for policy in self.policy_set.policies:
            grouped.setdefault(policy.namespace, []).append(policy)
            self._index.setdefault(policy.namespace, SelectorIndex()).add(policy.selector, policy)
        self._in_ns = {ns: tuple(policies) for ns, policies in grouped.items()}

    def policies_for(self, *namespaces: str) -> PolicySet:
        key = tuple(sorted(set(namespaces)))
        found = self._by_ns.get(key)
        if found is None:
            found = PolicySet(tuple(p for ns in key for p in self._in_ns.get(ns, ())))
            self._by_ns[key] = found
        return found

    def selecting(self, pod: Pod) -> tuple[Policy, ...]:
        """The policies of the pod's namespace that select it (any direction), in order."""
        found = self._selecting.get(pod.key)
        if found is None:
            if pod.namespace not in self._checked:
                for policy in self._in_ns.get(pod.namespace, ()):
                    _supported(policy)
                self._checked.add(pod.namespace)
            index = self._index.get(pod.namespace)
            found = tuple(index.matching(pod.labels)) if index is not None else ()
            self._selecting[pod.key] = found
        return found

    def verdict(
        self,
        src: Pod | Endpoint,
        dst: Pod | Endpoint,
        protocol: str,
        port: int | None,
        requests: tuple[str, ...] = (),
        family: int | None = None,
    ) -> Verdict:
        """The connection's verdict; with Istio policies, theirs too (on each HTTP request).

        ``requests`` and ``family`` (of the edge's addresses) are what Calico and Cilium trees
        may match on, besides :attr:`services`."""
        found = self._network_verdict(src, dst, protocol, port, requests, family)
        if self.istio is None or not found.allowed:
            return found
        return self.istio.verdict(found, src, dst, protocol, port, requests)

    def _network_verdict(
        self,
        src: Pod | Endpoint,
        dst: Pod | Endpoint,
        protocol: str,
        port: int | None,
        requests: tuple[str, ...] = (),
        family: int | None = None,
    ) -> Verdict:
        key: tuple[Any, ...] = (_key(src), _key(dst), protocol, port)
        if self.tree is not None:
            key += (requests if self.tree.matches_requests else (), family)
        found = self._cache.get(key)
        if found is None:
            if self.tree is not None:  # Calico or Cilium: the tree judges the whole stack
                found = self.tree.verdict(
                    self.cluster, src, dst, protocol, port, requests=requests, family=family,
                    services=self.services,
                )
            elif self.guardrails is None:
                found = self._indexed_verdict(src, dst, protocol, port)
            else:  # the whole stack: guardrails above and below the NetworkPolicies
                namespaces = [e.namespace for e in (src, dst) if isinstance(e, Pod)]
                found = evaluate_stack(
                    self.guardrails, self.policies_for(*namespaces), self.cluster, src, dst,
                    protocol, port, dialect=self.dialect,  # type: ignore[arg-type]
                )
            self._cache[key] = found
        return found


    def _indexed_verdict(
        self, src: Pod | Endpoint, dst: Pod | Endpoint, protocol: str, port: int | None
    ) -> Verdict:
        """What :func:`~recommender.evaluation.evaluator.evaluate` says on the policies that
        select either pod (every policy of their namespaces already checked as supported by
        :meth:`selecting`), without building a policy set per query: the same policies, in the
        same order, the same rules and reasons."""
        if isinstance(src, Pod) and isinstance(dst, Pod) and src.key == dst.key:
            return Verdict(True, "loopback", "loopback")
        # The policies isolating the source for egress are those of its namespace selecting it
        # (whatever the destination), likewise the destination for ingress; each list is kept
        # per pod, in a PolicySet's order (namespace, name), as the evaluator reads them.
        # (Through selecting(), the source's namespace is checked for unsupported policies
        # first, then the destination's, as before.)
        out_policies = self._isolating(src, "egress") if isinstance(src, Pod) else []
        in_policies = self._isolating(dst, "ingress") if isinstance(dst, Pod) else []
        check = _Check(self.cluster, src, dst, protocol.upper(), port, False)
        use = self.rule_use
        out_hits: list[tuple[Policy, int]] | None = [] if use is not None else None
        in_hits: list[tuple[Policy, int]] | None = [] if use is not None else None
        egress_ok, egress, out_by = check.judge_isolated(out_policies, "egress", out_hits)
        ingress_ok, ingress, in_by = check.judge_isolated(in_policies, "ingress", in_hits)
        if use is not None:
            if out_hits:
                use.record(out_hits, "egress", dst, protocol, port)
            if in_hits:
                use.record(in_hits, "ingress", src, protocol, port)
        return Verdict(
            egress_ok and ingress_ok, egress, ingress, tuple(sorted(set(out_by + in_by)))
        )

    def _isolating(self, pod: Pod, direction: Direction) -> list[Policy]:
        """The policies selecting ``pod`` with ``direction`` in their types, in a PolicySet's
        order."""
        key = (pod.key, direction)
        found = self._isolating_cache.get(key)
        if found is None:
            found = sorted(
                (p for p in self.selecting(pod) if direction in p.policy_types),
                key=lambda p: (p.namespace, p.name),
            )
            self._isolating_cache[key] = found
        return found


@dataclass
class _IstioLayer:
    """Istio's AuthorizationPolicies (and PeerAuthentications) at the destination's proxy,
    judged after the NetworkPolicies allowed the connection (:mod:`recommender.evaluation.istio`).

    Every workload is taken to be in the mesh: its principal is its service account from the
    flows under ``trust_domain`` (unknown: an mTLS peer with no known principal); sources that
    are not workloads are plain-text peers known by their address. UDP and SCTP, which the
    proxies do not intercept, Istio's own ports (served by the proxy itself), and destinations
    that are not workloads are not Istio's to judge.
    """

    policies: IstioPolicies
    accounts: Mapping[tuple[str, str], str]
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    root_namespace: str = ROOT_NAMESPACE
    _cache: dict[tuple[Any, ...], IstioVerdict] = field(default_factory=dict)
    _by_ns: dict[str, IstioPolicies] = field(default_factory=dict)

    def for_namespace(self, namespace: str) -> IstioPolicies:
        """The objects that can apply to a workload of ``namespace`` (its own, the root's)."""
        found = self._by_ns.get(namespace)
        if found is None:
            keep = (namespace, self.root_namespace)
            found = IstioPolicies(
                tuple(p for p in self.policies.authorization if p.namespace in keep),
                tuple(p for p in self.policies.peer_authentication if p.namespace in keep),
            )
            self._by_ns[namespace] = found
        return found

    def identity(self, endpoint: Pod | Endpoint) -> Identity:
        if isinstance(endpoint, Endpoint):
            return Identity(ip=endpoint.ip)
        workload = endpoint.name.removesuffix(_OTHER_POD)
        account = self.accounts.get((endpoint.namespace, workload))
        name = None if account is None else principal(
            self.trust_domain, endpoint.namespace, account
        )
        return Identity(name, endpoint.namespace, endpoint.ip, mtls=True)

    def verdict(
        self,
        network: Verdict,
        src: Pod | Endpoint,
        dst: Pod | Endpoint,
        protocol: str,
        port: int | None,
        requests: tuple[str, ...],
    ) -> Verdict:
        if not isinstance(dst, Pod) or protocol != "TCP" or mesh_port(protocol, port):
            return network  # not proxied, or one of the proxy's own ports
        calls: tuple[tuple[str | None, str | None], ...] = tuple(
            (m, p or None) for m, _, p in (r.partition(" ") for r in requests)
        ) or ((None, None),)
        for method, path in calls:
            key = (_key(src), _key(dst), port, method, path)
            found = self._cache.get(key)
            if found is None:
                request = Request(
                    dst.namespace, dict(dst.labels), port, self.identity(src), method, path
                )
                found = authorize(
                    self.for_namespace(dst.namespace), request, root_namespace=self.root_namespace
                )
                self._cache[key] = found
            if not found.allowed:
                what = "connection" if method is None else f"{method} {path or ''}".strip()
                return Verdict(
                    False, network.egress, f"istio: {what}: {found.reason}", network.policies
                )
        return network


def _key(endpoint: Pod | Endpoint) -> str:
    return endpoint.key if isinstance(endpoint, Pod) else endpoint.ip


def _describe(kind: str, namespace: str | None, ident: str | None) -> str:
    if kind == "workload":
        return f"{namespace}/{ident}"
    return f"{kind}:{ident}"


def _is_ip(text: str | None) -> bool:
    if not text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _endpoint(
    judge: _Judge,
    kind: str,
    namespace: str | None,
    ident: str | None,
    name: str | None = None,
    dns_names: Any = None,
) -> Pod | Endpoint | str:
    """The evaluator's endpoint for one side of an edge, or why there is none."""
    if kind == "workload":
        pod = judge.pods.get((namespace or "", ident or ""))
        if pod is None:
            return "workload without a namespace or name"
        return pod
    if kind in ("host", "remote-node"):
        return "node address: whether an ipBlock matches a node is up to the CNI"
    if _is_ip(ident):
        return Endpoint(str(ident), kind, name or "", tuple(dns_names or ()))
    if kind == "cluster-entity":
        return "cluster entity without an address"
    if kind == "external":
        return "external endpoint without an address (an aggregate such as Calico pub/pvt)"
    return f"{kind} endpoint without an address"


def _deny_reason(verdict: Verdict) -> str:
    parts = []
    if not verdict.egress.startswith(("allowed", "not ")) and verdict.egress != "loopback":
        parts.append(f"egress: {verdict.egress}")
    if not verdict.ingress.startswith(("allowed", "not ")) and verdict.ingress != "loopback":
        parts.append(f"ingress: {verdict.ingress}")
    return "; ".join(parts) or f"egress: {verdict.egress}; ingress: {verdict.ingress}"


def _allow_reason(verdict: Verdict) -> str:
    return f"egress: {verdict.egress}; ingress: {verdict.ingress}"


@dataclass(slots=True)
class _Query:
    src: Pod | Endpoint
    dst: Pod | Endpoint
    protocol: str
    port: int | None
    requests: tuple[str, ...] = ()
    family: int | None = None  # 4 or 6 when all the edge's addresses are of one family


def _family(row: Mapping[str, Any]) -> int | None:
    versions = set()
    for text in (row.get("src_ips") or []) + (row.get("dst_ips") or []):
        versions.add(6 if ":" in str(text) else 4)
    return versions.pop() if len(versions) == 1 else None


def _query(judge: _Judge, row: Mapping[str, Any]) -> _Query | str:
    """The evaluator's query for an edge row, or the reason it cannot be judged."""
    protocol = str(row["protocol"]).upper()
    if protocol not in _K8S_PROTOCOLS:
        return f"protocol {row['protocol']}: Kubernetes NetworkPolicy matches only TCP, UDP, SCTP"
    if row["src_kind"] == "host" and row["dst_kind"] == "workload":
        return NODE_LOCAL
    src = _endpoint(
        judge, row["src_kind"], row["src_namespace"], row["src_id"], row.get("src_name")
    )
    dst = _endpoint(
        judge, row["dst_kind"], row["dst_namespace"], row["dst_id"], row.get("dst_name"),
        row.get("dns_names"),
    )
    if isinstance(src, str):
        return src
    if isinstance(dst, str):
        return dst
    if isinstance(src, Pod) and isinstance(dst, Pod) and src.key == dst.key:
        src_ips, dst_ips = set(row["src_ips"] or ()), set(row["dst_ips"] or ())
        if not (len(src_ips) == 1 and src_ips == dst_ips):
            # Two pods of one workload: not loopback, judge it between two of its pods.
            dst = Pod(dst.namespace, f"{dst.name}{_OTHER_POD}", dst.labels)
    port = row["dst_port"]
    wants = judge.istio is not None or (judge.tree is not None and judge.tree.matches_requests)
    requests = tuple(row.get("http_requests") or ()) if wants else ()
    return _Query(
        src, dst, protocol, None if port is None else int(port), requests, _family(row)
    )


# --------------------------------------------------------------------------- rules used


@dataclass
class _RuleUse:
    """Which evidence edges each rule matches: what a one-rule policy of it would allow. The
    policies come from a label index per namespace and direction (they select the pod), so a
    rule is used exactly when it matches the peer and the port.

    Every rule of a policy selecting an edge's pod is checked on every evidence edge (not only until
    it is first used), so that :func:`~recommender.evaluation.rule_analysis.find_broad_rules` can
    measure how much of what a rule allows its traffic used.
    """

    judge: _Judge
    rules: dict[RuleKey, tuple[Policy, Rule]] = field(default_factory=dict)
    used: set[RuleKey] = field(default_factory=set)
    traffic: dict[RuleKey, set[tuple[str, str, int | None]]] = field(default_factory=dict)
    _by_side: dict[tuple[str, Direction], list[RuleKey]] = field(default_factory=dict)
    _by_selector: dict[tuple[str, Direction], SelectorIndex[list[RuleKey]]] = field(
        default_factory=dict
    )
    _pod_keys: dict[tuple[str, Direction], list[RuleKey]] = field(default_factory=dict)
    _supported: set[RuleKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        directions: tuple[Direction, ...] = ("ingress", "egress")
        for policy in self.judge.policy_set.policies:
            for direction in directions:
                rules = policy.ingress if direction == "ingress" else policy.egress
                for index, rule in enumerate(rules):
                    key = (policy.namespace, policy.name, direction, index)
                    self.rules[key] = (policy, rule)
                    if direction in policy.policy_types:
                        self._by_side.setdefault((policy.namespace, direction), []).append(key)

    def _index(self) -> None:
        """The rules by their policies' selectors, per (namespace, direction): for
        :meth:`observe` (built on first use; the judge may record the use instead)."""
        for (namespace, direction), keys in self._by_side.items():
            selectors: SelectorIndex[list[RuleKey]] = SelectorIndex()
            by_policy: dict[str, list[RuleKey]] = {}
            for key in keys:
                by_policy.setdefault(key[1], []).append(key)
            for policy_keys in by_policy.values():
                selectors.add(self.rules[policy_keys[0]][0].selector, policy_keys)
            self._by_selector[(namespace, direction)] = selectors

    def _keys(self, pod: Pod, direction: Direction) -> list[RuleKey]:
        """The rules of the policies that select ``pod`` for ``direction``, in order."""
        found = self._pod_keys.get((pod.key, direction))
        if found is None:
            if not self._by_selector and self._by_side:
                self._index()
            index = self._by_selector.get((pod.namespace, direction))
            found = [k for ks in index.matching(pod.labels) for k in ks] if index else []
            self._pod_keys[(pod.key, direction)] = found
        return found

    def record(
        self,
        hits: list[tuple[Policy, int]],
        direction: Direction,
        peer: Pod | Endpoint,
        protocol: str,
        port: int | None,
    ) -> None:
        """The rules ``hits`` (policy, index in ``direction``) matched a query with ``peer`` at
        the other end: what :meth:`observe` finds, handed over by the judge's verdict."""
        entry = (_peer_key(peer), protocol, port)
        for policy, index in hits:
            key = (policy.namespace, policy.name, direction, index)
            self.used.add(key)
            found = self.traffic.get(key)
            if found is None:
                found = self.traffic[key] = set()
            found.add(entry)

    def observe(self, query: _Query) -> None:
        sides: tuple[tuple[Direction, Pod | Endpoint, Pod | Endpoint], ...] = (
            ("egress", query.src, query.dst),
            ("ingress", query.dst, query.src),
        )
        src, dst = query.src, query.dst
        if isinstance(src, Pod) and isinstance(dst, Pod) and src.key == dst.key:
            return  # loopback: allowed, but by no rule
        # A rule is used when its one-rule policy allows the query (evaluate's "allowed by"):
        # the policy selects the pod for the direction (the index found it), so exactly when
        # the rule matches the peer and port.
        check = _Check(self.judge.cluster, src, dst, query.protocol.upper(), query.port, False)
        for direction, pod, peer in sides:
            if not isinstance(pod, Pod):
                continue
            for key in self._keys(pod, direction):
                policy, rule = self.rules[key]
                if key not in self._supported:  # what evaluating the one-rule policy checks
                    _supported(_one_rule(policy, direction, rule))
                    self._supported.add(key)
                if check._rule_matches(policy, rule, peer):
                    self.used.add(key)
                    self.traffic.setdefault(key, set()).add(
                        (_peer_key(peer), query.protocol, query.port)
                    )

    def unused(self) -> list[dict[str, Any]]:
        out = []
        for key, (_, rule) in self.rules.items():
            if key in self.used:
                continue
            out.append(
                {
                    "direction": key[2],
                    "peers": len(rule.peers),
                    "policy": f"{key[0]}/{key[1]}",
                    "ports": len(rule.ports),
                    "rule": key[3],
                }
            )
        return sorted(out, key=lambda r: (r["policy"], r["direction"], r["rule"]))


def _rule_count(policy_set: PolicySet) -> int:
    """How many rule keys :class:`_RuleUse` would hold: (namespace, name, direction, index),
    two policies of one name counting once."""
    longest: dict[tuple[str, str, str], int] = {}
    for policy in policy_set.policies:
        for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
            key = (policy.namespace, policy.name, direction)
            longest[key] = max(longest.get(key, 0), len(rules))
    return sum(longest.values())


def _peer_key(endpoint: Pod | Endpoint) -> str:
    """``namespace/workload`` for a pod (its workload's key), the address otherwise."""
    if isinstance(endpoint, Pod):
        return f"{endpoint.namespace}/{endpoint.name.removesuffix(_OTHER_POD)}"
    return endpoint.ip


def _one_rule(policy: Policy, direction: Direction, rule: Rule) -> Policy:
    return Policy(
        name=policy.name,
        namespace=policy.namespace,
        selector=policy.selector,
        policy_types=(direction,),
        ingress=(rule,) if direction == "ingress" else (),
        egress=(rule,) if direction == "egress" else (),
    )


# --------------------------------------------------------------------------- replay



def _key_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The naming columns of every edge, as dicts."""
    return _row_dicts(table, list(EDGE_KEY))


class _KeyRows:
    """:func:`_key_rows` of a table, built the first time a row is asked for: the replay
    names only the edges it reports (false denies, edges not evaluated), usually none."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._rows: list[dict[str, Any]] | None = None

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._rows is None:
            self._rows = _key_rows(self._table)
        return self._rows[i]


def _row_dicts(table: pa.Table, columns: list[str]) -> list[dict[str, Any]]:
    """``table.select(columns).to_pylist()``, built from the columns converted whole (Arrow's
    row-by-row conversion is several times slower)."""
    values = table.select(columns).to_pydict()
    return [dict(zip(columns, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _judge_table(
    judge: _Judge, table: pa.Table
) -> tuple[list[_Query | str], np.ndarray[Any, np.dtype[np.int64]]]:
    """One query (or reason) per edge, and the edges' connection weights (at least 1)."""
    if table.num_rows == 0:
        return [], np.zeros(0, dtype=np.int64)
    columns = [*EDGE_KEY, "src_ips", "dst_ips"]
    wants = judge.istio is not None or (judge.tree is not None and judge.tree.matches_requests)
    if wants and "http_requests" in table.column_names:
        columns.append("http_requests")
    columns += [c for c in ("src_name", "dst_name", "dns_names") if c in table.column_names]
    rows = _row_dicts(table, columns)
    weights = np.maximum(
        table["connections"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64), 1
    )
    return [_query(judge, row) for row in rows], weights


def _verdict_row(row: Mapping[str, Any], connections: int, reason: str) -> EdgeVerdict:
    port = row["dst_port"]
    return EdgeVerdict(
        _describe(row["src_kind"], row["src_namespace"], row["src_id"]),
        _describe(row["dst_kind"], row["dst_namespace"], row["dst_id"]),
        str(row["protocol"]),
        None if port is None else int(port),
        connections,
        reason,
    )


def _ordered(items: list[EdgeVerdict]) -> tuple[EdgeVerdict, ...]:
    return tuple(
        sorted(
            items,
            key=lambda e: (-e.connections, e.source, e.destination, e.protocol, e.port or -1),
        )
    )


def _over_permissive(judge: _Judge, evidence: Iterable[_Query], limit: int) -> OverPermissive:
    pods = sorted(judge.cluster.pods, key=lambda p: p.key)
    observed_queries = list(evidence)
    ports = sorted({(q.protocol, q.port) for q in observed_queries if q.port is not None})
    pod_keys = {p.key for p in pods}
    observed = {
        (q.src.key, q.dst.key, q.protocol, q.port)
        for q in observed_queries
        if isinstance(q.src, Pod)
        and isinstance(q.dst, Pod)
        and q.src.key != q.dst.key
        and q.dst.key in pod_keys
    }
    candidates = len(pods) * (len(pods) - 1) * len(ports)
    # Plain Kubernetes policies on pods without named ports are counted per selector class
    # (exact within a budget, a bound beyond); guardrail stacks, Istio and Calico or Cilium
    # trees pair by pair, up to ``limit``.
    by_class = (
        judge.guardrails is None
        and judge.istio is None
        and judge.tree is None
        and not any(p.ports for p in pods)
    )
    if limit <= 0 or (candidates > limit and not by_class):
        return OverPermissive(
            candidates,
            len(observed),
            0,
            skipped=f"{candidates:,} workload pair x port triples exceed the limit of {limit:,}",
        )
    if by_class:
        for namespace in sorted({p.namespace for p in pods} - judge._checked):
            for policy in judge.policies_for(namespace).policies:
                _supported(policy)
        index = {p.key: i for i, p in enumerate(pods)}
        port_index = {port: k for k, port in enumerate(ports)}
        counted = count_allowed_pairs(
            judge.policy_set,
            judge.cluster,
            pods,
            ports,
            {
                (index[s], index[d], port_index[(proto, port)])
                for s, d, proto, port in observed
                if port is not None
            },
            budget=PAIR_BUDGET,
            isolating=lambda i, direction: judge._isolating(pods[i], direction),
            # Every observed triple is an evidence edge, judged already (Kubernetes semantics
            # only, as here: no tree, guardrails or Istio).
            observed_allowed=sum(
                judge._cache[(s, d, proto, port)].allowed for s, d, proto, port in observed
            ),
        )
        estimate = "" if counted.exact else (
            f"upper bound: more than {PAIR_BUDGET:,} workloads in the allowed peer sets, so "
            "the pairs were not listed; per port, the smaller of the summed sizes of the "
            "sources' and the destinations' allowed peer sets, less the observed triples"
        )
        return OverPermissive(
            candidates, len(observed), counted.allowed, counted.examples, estimate=estimate
        )
    allowed = 0
    examples: list[str] = []
    for src in pods:
        for dst in pods:
            if src.key == dst.key:
                continue
            for protocol, port in ports:
                if (src.key, dst.key, protocol, port) in observed:
                    continue
                if judge.verdict(src, dst, protocol, port).allowed:
                    allowed += 1
                    if len(examples) < 20:
                        examples.append(f"{src.key} -> {dst.key} {protocol}/{port}")
    return OverPermissive(candidates, len(observed), allowed, tuple(examples))


def replay(
    policy_set: PolicySet,
    flows: pa.Table | EdgeTables | PathLike | Iterable[PathLike],
    *,
    config: RecommendConfig | None = None,
    format: str | None = None,
    synthetic_limit: int = _DEFAULT_SYNTHETIC_LIMIT,
    guardrails: Guardrails | None = None,
    dialect: str = "kubernetes",
    istio: IstioPolicies | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    root_namespace: str = ROOT_NAMESPACE,
    tree: Any = None,
    rule_findings: bool = True,
) -> Coverage:
    """Replay observed flows against ``policy_set`` and measure coverage.

    Parameters
    ----------
    policy_set : PolicySet
        Kubernetes NetworkPolicies (for instance from
        :func:`~recommender.policy.reader.read_policies`, or ``recommend(...).policy_set``).
    flows : pyarrow.Table, EdgeTables, path or paths
        A canonical flow table, its aggregation, or flow files of any supported format.
    config : RecommendConfig, optional
        Time window and thresholds of the aggregation (see
        :func:`~recommender.aggregate.edges.aggregate_edges`).
    format : str, optional
        Input format when ``flows`` are paths (detected per file when None).
    synthetic_limit : int, default 250000
        Most (source, destination, port) triples evaluated for :class:`OverPermissive`; above
        it the measure is skipped and says so.
    guardrails : Guardrails, optional
        Evaluate the whole stack: these guardrails above and below ``policy_set``
        (:func:`~recommender.evaluation.precedence.evaluate_stack`); their declared namespace labels
        are added to the namespaces seen in the flows.
    dialect : {"kubernetes", "calico", "cilium"}, default "kubernetes"
        Whose precedence rules apply to the guardrails.
    istio : IstioPolicies, optional
        Istio AuthorizationPolicies (and PeerAuthentications), judged with Istio's semantics
        (:mod:`recommender.evaluation.istio`) on what the NetworkPolicies allow: an HTTP edge
        request by request, with each workload's service account from the flows as its
        principal.
    trust_domain : str, default "cluster.local"
        The trust domain of those principals.
    root_namespace : str, default "istio-system"
        Istio's root namespace, whose policies apply mesh-wide.
    tree : PolicyTree, optional
        A tree with Calico or Cilium policies
        (:func:`~recommender.evaluation.stack.read_policy_tree`): it judges every edge under its
        dialect's precedence; ``policy_set`` and ``guardrails`` should be its own. Unused,
        redundant and broad rules are then found among Kubernetes NetworkPolicies only.
    rule_findings : bool, default True
        Find which rules the evidence uses, and the unused, redundant and broad rules. False
        leaves ``unused_rules``, ``redundant_rules``, ``broad_rules`` and ``rule_traffic``
        empty (``rules`` still counts every rule) and skips that work: for callers that read
        only the verdicts and over-permissiveness, such as the pipeline's self-check.

    Returns
    -------
    Coverage
        Coverage, false denies, denied flows the policies allow, unused rules,
        over-permissiveness, the edges not evaluated, and the redundant (or shadowed) and broad
        rules (:mod:`recommender.evaluation.rule_analysis`).

    Raises
    ------
    UnsupportedDialectError
        If a policy is not plain Kubernetes NetworkPolicy (deny rules, entities, tiers).
    RecommenderError
        If the flows cannot be read.

    Examples
    --------
    >>> from recommender import recommend                               # doctest: +SKIP
    >>> rec = recommend("sample_flows/flows.parquet")                   # doctest: +SKIP
    >>> replay(rec.policy_set, rec.tables).coverage                     # doctest: +SKIP
    1.0
    """
    tables = _edge_tables(flows, config, format)
    label_maps, cluster = _cluster_of(tables.workload_labels)
    cluster = with_namespace_labels(cluster, guardrails)
    unlabelled = sorted(f"{ns}/{wl}" for (ns, wl), maps in label_maps.items() if not maps)
    layer = None
    if istio:
        from ..synthesis.enrich import service_accounts

        accounts = service_accounts(tables, partial=True)
        layer = _IstioLayer(istio, accounts, trust_domain, root_namespace)
    if tree is not None and not tree.native:
        tree = None
    if tree is not None:
        cluster = _with_service_accounts(cluster)
    judge = _Judge(
        policy_set,
        cluster,
        {(p.namespace, p.name): p for p in cluster.pods},
        guardrails,
        dialect,
        layer,
        tree,
    )
    if tree is not None:
        judge.services = service_map(tables.edges, tables.denied)
    rule_use = _RuleUse(judge) if rule_findings else None
    # The indexed judge records rule use with each verdict (one pass over the rules); an edge
    # whose verdict is cached has the key, so the use, of an edge already recorded. Policies
    # sharing a name in a namespace share rule keys: those are observed apart.
    recorded = (
        rule_use is not None
        and judge.tree is None
        and guardrails is None
        and len({(p.namespace, p.name) for p in policy_set.policies})
        == len(policy_set.policies)
    )
    if recorded:
        judge.rule_use = rule_use

    not_evaluated: list[EdgeVerdict] = []
    false_denies: list[EdgeVerdict] = []
    queries, weights = _judge_table(judge, tables.edges)
    rows = _KeyRows(tables.edges)
    judged = np.zeros(len(queries), dtype=bool)
    allowed = np.zeros(len(queries), dtype=bool)
    evidence: list[_Query] = []
    node_local = 0
    for i, query in enumerate(queries):
        if query == NODE_LOCAL:
            judged[i] = allowed[i] = True
            node_local += 1
            continue
        if isinstance(query, str):
            not_evaluated.append(_verdict_row(rows[i], int(weights[i]), query))
            continue
        judged[i] = True
        verdict = judge.verdict(
            query.src, query.dst, query.protocol, query.port, query.requests, query.family,
        )
        allowed[i] = verdict.allowed
        evidence.append(query)
        if rule_use is not None and not recorded:
            rule_use.observe(query)
        if not verdict.allowed:
            false_denies.append(_verdict_row(rows[i], int(weights[i]), _deny_reason(verdict)))

    judge.rule_use = None  # denied edges use no rule
    denied_queries, denied_weights = _judge_table(judge, tables.denied)
    denied_rows = _KeyRows(tables.denied)
    denied_but_allowed: list[EdgeVerdict] = []
    denied_judged = 0
    for i, query in enumerate(denied_queries):
        if isinstance(query, str):
            if query != NODE_LOCAL:
                not_evaluated.append(
                    _verdict_row(
                        denied_rows[i], int(denied_weights[i]), f"denied in input; {query}"
                    )
                )
            continue
        denied_judged += 1
        verdict = judge.verdict(
            query.src, query.dst, query.protocol, query.port, query.requests, query.family,
        )
        if verdict.allowed:
            denied_but_allowed.append(
                _verdict_row(denied_rows[i], int(denied_weights[i]), _allow_reason(verdict))
            )

    notes = list(tree.notes) if tree is not None else []
    if tree is not None:
        notes.append(
            f"{tree.dialect} policies judged with {tree.dialect}'s precedence; unused, redundant "
            "and broad rules are found among Kubernetes NetworkPolicies only."
        )
    if node_local:
        notes.append(f"{node_local} node-to-pod edges counted as allowed ({NODE_LOCAL}).")
    if layer is not None:
        unknown = sorted(
            f"{p.namespace}/{p.name}" for p in cluster.pods
            if (p.namespace, p.name) not in layer.accounts
        )
        notes.append(
            "Istio: every workload taken to be in the mesh, its principal "
            f"{trust_domain}/ns/NS/sa/<service account from the flows>"
            + (f"; no service account known for {', '.join(unknown[:20])}" if unknown else "")
            + "."
        )
    if unlabelled:
        notes.append(
            "no labels observed for " + ", ".join(unlabelled) + "; assumed app=<workload>."
        )
    coverage = Coverage(
        observed_connections=int(weights[judged].sum()),
        allowed_connections=int(weights[judged & allowed].sum()),
        observed_edges=int(judged.sum()),
        allowed_edges=int((judged & allowed).sum()),
        false_denies=_ordered(false_denies),
        denied_but_allowed=_ordered(denied_but_allowed),
        denied_edges=denied_judged,
        unused_rules=tuple(rule_use.unused()) if rule_use is not None else (),
        rules=(len(rule_use.rules) if rule_use is not None else _rule_count(policy_set))
        + (tree.rules if tree is not None else 0),
        over_permissive=_over_permissive(judge, evidence, synthetic_limit),
        not_evaluated=_ordered(not_evaluated),
        excluded_edges=tables.excluded.num_rows,
        notes=tuple(notes),
        rule_traffic=(
            {k: frozenset(v) for k, v in rule_use.traffic.items()} if rule_use is not None else {}
        ),
        cluster=cluster,
        external_addresses=frozenset(
            e.ip for q in evidence for e in (q.src, q.dst) if isinstance(e, Endpoint)
        ),
    )
    if not rule_findings:
        return coverage
    return replace(
        coverage,
        redundant_rules=tuple(find_redundant_rules(policy_set, coverage)),
        broad_rules=tuple(find_broad_rules(policy_set, coverage)),
    )
