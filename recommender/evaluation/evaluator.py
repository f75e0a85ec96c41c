"""Evaluate Kubernetes NetworkPolicy semantics over the policy model, one connection at a time.

:func:`evaluate` answers "does ``policy_set`` allow ``src`` to reach ``dst`` on ``protocol``/
``port`` in ``cluster``?" with a :class:`Verdict` that says why, per direction. The semantics
(checklist in ``docs/evaluator.md``):

* a connection is allowed iff egress is allowed at the source (when it is a pod) **and**
  ingress at the destination (when it is a pod); traffic from a pod to itself is always allowed
  (loopback; NCA never reports it, the Kubernetes e2e suite ignores it);
* a pod is isolated for a direction iff some policy of its namespace selects it and lists that
  direction in ``policy_types``; an isolated pod needs a rule of one such policy to match;
  policies are additive and order-free;
* in a rule, peers are OR-ed and ports are OR-ed; no peers = every peer, no ports = every port;
* a ``pods`` peer ANDs its namespace selector (None: the policy's own namespace) and pod
  selector (None: every pod); namespaces are matched on their labels, which always include
  ``kubernetes.io/metadata.name``;
* a ``cidr`` peer matches addresses outside the cluster in ``cidr`` and in no ``except``; it
  matches a pod's own IP only with ``ipblock_matches_pods=True`` (default False, as NCA: which
  one holds depends on the CNI);
* a port spec needs the same protocol; no port = all ports of it, ``end_port`` a range, a named
  port is resolved on the **destination** pod's container ports (for egress rules too) and
  never matches an external address.

Only allow rules of Kubernetes NetworkPolicy are evaluated: deny or pass rules, entity peers and
tiers (Calico, Cilium, AdminNetworkPolicy) raise
:class:`~recommender.errors.UnsupportedDialectError`; guardrails and tiers above and below
NetworkPolicies are evaluated by :mod:`recommender.evaluation.precedence`. hostNetwork pods are
treated like any other pod, as NCA does; Kubernetes leaves them to the network plugin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ..policy.model import Direction, Peer, Policy, PolicySet, PortSpec, Rule
from ..policy.reader import iter_manifests

__all__ = [
    "NAMESPACE_NAME_LABEL",
    "Cluster",
    "Endpoint",
    "Namespace",
    "Pod",
    "Verdict",
    "evaluate",
    "read_cluster",
]

#: The label the API server puts on every namespace (Kubernetes 1.21+).
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

#: Workload kinds whose pod template makes pods ``<name>-1`` ... ``<name>-<replicas>``.
_WORKLOADS: Final = (
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "ReplicationController",
    "Job",
    "CronJob",
)


@dataclass(frozen=True)
class Namespace:
    """A namespace and its labels (``kubernetes.io/metadata.name`` is added if missing).

    Parameters
    ----------
    name : str
        The namespace name.
    labels : Mapping of str to str
        Its labels.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if NAMESPACE_NAME_LABEL not in self.labels:
            object.__setattr__(self, "labels", {**self.labels, NAMESPACE_NAME_LABEL: self.name})


@dataclass(frozen=True)
class Pod:
    """A pod: where it lives, its labels, its IP and its named container ports.

    Parameters
    ----------
    namespace, name : str
        Where the pod lives and its name.
    labels : Mapping of str to str
        Its labels.
    ip : str, optional
        Its IP address (used only with ``ipblock_matches_pods=True``).
    ports : Mapping of str to (str, int)
        Named container ports: name to (protocol, number).
    """

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None
    ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """``namespace/name`` (kept once computed: the replay asks for it per edge)."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Endpoint:
    """An address outside the cluster (no policy isolates it).

    Parameters
    ----------
    ip : str
        The IPv4 or IPv6 address.
    kind : str
        What the flows saw there: ``external``, ``cluster-entity``, ``host``, ``remote-node``
        ("" when unknown); Cilium's entities (``world``, ``kube-apiserver``) are judged by it.
    name : str
        Its name in the flows (``kube-apiserver``, ``world``), if any.
    dns_names : tuple of str
        The DNS names the flows resolved to it (Cilium toFQDNs, Calico domains).
    """

    ip: str
    kind: str = field(default="", compare=False)
    name: str = field(default="", compare=False)
    dns_names: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Cluster:
    """The namespaces and pods that policies are evaluated against.

    Parameters
    ----------
    namespaces : Mapping of str to Namespace
        Every namespace by name; namespaces of pods are added with the default label only.
    pods : tuple of Pod
        Every pod.

    Examples
    --------
    >>> cluster = Cluster.from_manifests([
    ...     {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
    ...      "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}}}}])
    >>> [p.key for p in cluster.pods], dict(cluster.namespaces["shop"].labels)
    (['shop/web-1', 'shop/web-2'], {'kubernetes.io/metadata.name': 'shop'})
    """

    namespaces: Mapping[str, Namespace]
    pods: tuple[Pod, ...]

    def __post_init__(self) -> None:
        missing = {p.namespace for p in self.pods} - set(self.namespaces)
        if missing:
            extra = {n: Namespace(n) for n in sorted(missing)}
            object.__setattr__(self, "namespaces", {**self.namespaces, **extra})

    @classmethod
    def from_manifests(cls, docs: Iterable[Mapping[str, Any]]) -> Cluster:
        """Build a cluster from Namespace, Pod and workload manifests (others are ignored).

        A workload (Deployment, ReplicaSet, StatefulSet, DaemonSet, ReplicationController,
        Job, CronJob) gives ``replicas`` pods (``parallelism`` for a Job, 1 by default) named
        ``<name>-1``, ``<name>-2`` ... with its pod template's labels and ports, as NCA names
        them (NCA keeps at most two of them).

        Parameters
        ----------
        docs : iterable of mapping
            The manifests.

        Returns
        -------
        Cluster
            The namespaces and pods.

        Raises
        ------
        InputError
            If a Namespace, Pod or workload has no name, or two pods share a name.
        """
        namespaces: dict[str, Namespace] = {}
        pods: dict[str, Pod] = {}
        for doc in docs:
            kind = doc.get("kind")
            metadata = doc.get("metadata") or {}
            name = metadata.get("name")
            if kind not in ("Namespace", "Pod", *_WORKLOADS):
                continue
            if not isinstance(name, str) or not name:
                raise InputError(f"A {kind} manifest has no metadata.name.")
            if kind == "Namespace":
                namespaces[name] = Namespace(name, _labels(metadata.get("labels")))
                continue
            namespace = str(metadata.get("namespace") or "default")
            for pod in _pods(str(kind), name, namespace, doc):
                if pod.key in pods:
                    raise InputError(f"Two pods are named {pod.key!r}.")
                pods[pod.key] = pod
        return cls(namespaces, tuple(pods[k] for k in sorted(pods)))

    def pod(self, key: str) -> Pod:
        """The pod named ``namespace/name``.

        Raises
        ------
        KeyError
            If there is no such pod.
        """
        for pod in self.pods:
            if pod.key == key:
                return pod
        raise KeyError(key)

    def endpoint(self, text: str) -> Pod | Endpoint:
        """A pod for ``namespace/name``, an :class:`Endpoint` for an IP address."""
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return self.pod(text)
        return Endpoint(text)


def read_cluster(paths: str | Path | Iterable[str | Path]) -> Cluster:
    """Read a cluster's topology from YAML files and folders (see :meth:`Cluster.from_manifests`).

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files, or folders searched recursively for ``*.yaml``, ``*.yml`` and ``*.json``.

    Returns
    -------
    Cluster
        The namespaces and pods found (``List`` kinds are unpacked).

    Raises
    ------
    InputError
        If a path is missing, a file is not YAML, or a manifest has no name.
    """
    return Cluster.from_manifests(doc for _, doc in iter_manifests(paths))


def _labels(raw: object) -> dict[str, str]:
    """A labels mapping with string values."""
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _pods(kind: str, name: str, namespace: str, doc: Mapping[str, Any]) -> list[Pod]:
    """The pods of a Pod or workload manifest."""
    spec = doc.get("spec") or {}
    if kind == "Pod":
        metadata = doc.get("metadata") or {}
        ip = (doc.get("status") or {}).get("podIP")
        return [Pod(namespace, name, _labels(metadata.get("labels")), ip, _ports(spec))]
    replicas = spec.get("parallelism", 1) if kind == "Job" else spec.get("replicas", 1)
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        replicas = spec.get("parallelism", 1)
    template = spec.get("template") or {}
    labels = _labels((template.get("metadata") or {}).get("labels"))
    ports = _ports(template.get("spec") or {})
    return [Pod(namespace, f"{name}-{i}", labels, None, ports) for i in range(1, replicas + 1)]


def _ports(pod_spec: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """Named container ports of a pod spec: name to (protocol, number)."""
    ports: dict[str, tuple[str, int]] = {}
    for container in pod_spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name"):
                protocol = str(port.get("protocol") or "TCP").upper()
                ports[str(port["name"])] = (protocol, int(port["containerPort"]))
    return ports


@dataclass(frozen=True)
class Verdict:
    """Whether a connection is allowed, and why, per direction.

    Parameters
    ----------
    allowed : bool
        Egress allowed at the source and ingress allowed at the destination.
    egress, ingress : str
        Why each direction allows or denies: ``"not a pod"``, ``"not isolated"``,
        ``"loopback"``, ``"allowed by ns/name egress rule 0"`` or
        ``"isolated by ns/a, ns/b; no rule matches"``.
    policies : tuple of str
        ``namespace/name`` of every policy with a rule that allows the connection in either
        direction, sorted.
    """

    allowed: bool
    egress: str
    ingress: str
    policies: tuple[str, ...] = ()


def evaluate(
    policy_set: PolicySet,
    cluster: Cluster,
    src: Pod | Endpoint | str,
    dst: Pod | Endpoint | str,
    protocol: str,
    port: int | None,
    *,
    ipblock_matches_pods: bool = False,
) -> Verdict:
    """Whether Kubernetes NetworkPolicies allow ``src`` to reach ``dst`` on ``protocol``/``port``.

    Parameters
    ----------
    policy_set : PolicySet
        The Kubernetes NetworkPolicies (allow rules, ``pods`` and ``cidr`` peers).
    cluster : Cluster
        The namespaces and pods.
    src, dst : Pod, Endpoint or str
        The endpoints; a string is ``namespace/pod`` or an IP address.
    protocol : str
        ``TCP``, ``UDP``, ``SCTP`` (any case).
    port : int or None
        The destination port; None (a protocol without ports) matches only rules that allow
        every port of the protocol.
    ipblock_matches_pods : bool, default False
        Whether an ipBlock matches a pod whose IP lies in it. False agrees with NCA and with
        CNIs that apply ipBlocks to cluster-external traffic only; True follows the Kubernetes
        e2e test "should allow egress access to server in CIDR block".

    Returns
    -------
    Verdict
        The decision with a reason per direction and the policies that allowed it.

    Raises
    ------
    KeyError
        If a ``namespace/pod`` string names no pod of ``cluster``.
    UnsupportedDialectError
        If a policy holds a deny or pass rule, an entity peer or a tier.

    Examples
    --------
    >>> from recommender.policy.model import LabelSelector, Policy, PolicySet
    >>> cluster = Cluster({}, (Pod("shop", "web"), Pod("shop", "db")))
    >>> deny = PolicySet((Policy("deny", "shop", LabelSelector(), ("ingress",)),))
    >>> evaluate(deny, cluster, "shop/web", "shop/db", "TCP", 5432)
    Verdict(allowed=False, egress='not isolated', ingress='isolated by shop/deny; no rule matches', policies=())
    """  # noqa: E501
    source = cluster.endpoint(src) if isinstance(src, str) else src
    target = cluster.endpoint(dst) if isinstance(dst, str) else dst
    proto = protocol.upper()
    if isinstance(source, Pod) and isinstance(target, Pod) and source.key == target.key:
        return Verdict(True, "loopback", "loopback")
    check = _Check(cluster, source, target, proto, port, ipblock_matches_pods)
    egress_ok, egress, out_by = check.direction(policy_set, "egress")
    ingress_ok, ingress, in_by = check.direction(policy_set, "ingress")
    return Verdict(egress_ok and ingress_ok, egress, ingress, tuple(sorted(set(out_by + in_by))))


@dataclass(slots=True)
class _Check:
    """One connection, checked against the policies of one direction at a time (never
    changed once made; not frozen, so that making one per edge stays cheap)."""

    cluster: Cluster
    src: Pod | Endpoint
    dst: Pod | Endpoint
    protocol: str
    port: int | None
    ipblock_matches_pods: bool

    def direction(self, policy_set: PolicySet, direction: Direction) -> tuple[bool, str, list[str]]:
        """(allowed, reason, allowing policies) at the source (egress) or destination."""
        pod = self.src if direction == "egress" else self.dst
        if not isinstance(pod, Pod):
            return True, "not a pod", []
        isolating = []
        for policy in policy_set.in_namespace(pod.namespace):
            _supported(policy)
            if direction in policy.policy_types and policy.selector.matches(pod.labels):
                isolating.append(policy)
        return self.judge_isolated(isolating, direction)

    def judge_isolated(
        self,
        isolating: list[Policy],
        direction: Direction,
        hits: list[tuple[Policy, int]] | None = None,
    ) -> tuple[bool, str, list[str]]:
        """:meth:`direction` given the policies that isolate the pod for ``direction`` (in
        policy-set order, already checked as supported): the replay finds them from its own
        index and judges with this. With ``hits``, every rule of those policies is tried and
        each matching one appended as (policy, index): the replay's rule use, found in the
        same pass (the verdict is the same)."""
        pod, peer = (self.src, self.dst) if direction == "egress" else (self.dst, self.src)
        if not isinstance(pod, Pod):
            return True, "not a pod", []
        if not isolating:
            return True, "not isolated", []
        reason = ""
        allowed_by: list[str] = []
        for policy in isolating:
            rules = policy.egress if direction == "egress" else policy.ingress
            matched = False
            for index, rule in enumerate(rules):
                if self._rule_matches(policy, rule, peer):
                    if hits is not None:
                        hits.append((policy, index))
                    if not matched:
                        key = f"{policy.namespace}/{policy.name}"
                        reason = reason or f"allowed by {key} {direction} rule {index}"
                        allowed_by.append(key)
                        matched = True
                    if hits is None:
                        break
        if reason:
            return True, reason, allowed_by
        names = ", ".join(f"{p.namespace}/{p.name}" for p in isolating)
        return False, f"isolated by {names}; no rule matches", []

    def _rule_matches(self, policy: Policy, rule: Rule, peer: Pod | Endpoint) -> bool:
        """Some peer and some port of the rule match (none listed = all)."""
        if rule.peers:
            for candidate in rule.peers:
                if self._peer_matches(policy, candidate, peer):
                    break
            else:
                return False
        if not rule.ports:
            return True
        for spec in rule.ports:  # noqa: SIM110 (a loop, not any(): no generator per rule)
            if self._port_matches(spec):
                return True
        return False

    def _peer_matches(self, policy: Policy, peer: Peer, other: Pod | Endpoint) -> bool:
        """Whether ``other`` is one of the rule peer's endpoints."""
        if peer.kind == "pods":
            if not isinstance(other, Pod):
                return False
            if peer.namespace_selector is None:
                in_namespace = other.namespace == policy.namespace
            else:
                labels = self.cluster.namespaces[other.namespace].labels
                in_namespace = peer.namespace_selector.matches(labels)
            return in_namespace and (
                peer.pod_selector is None or peer.pod_selector.matches(other.labels)
            )
        if peer.kind == "entity":  # Cilium entities and DNS names (never plain Kubernetes)
            return entity_matches(peer, other)
        if isinstance(other, Pod):
            if not self.ipblock_matches_pods or other.ip is None:
                return False
            address = other.ip
        else:
            address = other.ip
        return _in_block(address, peer)

    def _port_matches(self, spec: PortSpec) -> bool:
        """Whether the connection's protocol and port fall in ``spec``."""
        if spec.name is None:
            return spec.contains(self.protocol, self.port)
        if not isinstance(self.dst, Pod) or spec.protocol != self.protocol:
            return False
        resolved = self.dst.ports.get(spec.name)
        return resolved is not None and resolved == (self.protocol, self.port)


#: Endpoint kinds inside the cluster (Cilium's ``cluster`` entity), besides pods.
_CLUSTER_KINDS: Final = ("host", "remote-node", "cluster-entity")


def entity_matches(peer: Peer, other: Pod | Endpoint) -> bool:
    """Whether ``other`` is the Cilium entity ``peer.entity`` (``all``, ``world``, ``cluster``,
    ``host``, ``remote-node``, ``kube-apiserver``), or, for entity ``fqdn``, an address the
    flows resolved from a name that one of ``peer.dns_names`` (names or ``*`` patterns)
    matches."""
    entity = peer.entity or ""
    if entity == "all":
        return True
    if isinstance(other, Pod):
        return entity == "cluster"
    if entity == "fqdn":
        return any(dns_matches(p, n) for p in peer.dns_names for n in other.dns_names)
    if entity == "world":
        return other.kind not in _CLUSTER_KINDS and other.name != "kube-apiserver"
    if entity == "cluster":
        return other.kind in _CLUSTER_KINDS
    if entity == "kube-apiserver":
        return other.name == "kube-apiserver"
    if entity in ("host", "remote-node"):
        return other.kind == entity
    return False


def dns_matches(pattern: str, name: str) -> bool:
    """A DNS name against a Cilium ``matchName``/``matchPattern`` (``*`` alone: every name;
    else ``*`` stands for any characters of one label) or a Calico domain (same wildcard)."""
    import re

    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern == "*":
        return True
    regex = "".join("[-a-z0-9_]*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def _in_block(address: str, peer: Peer) -> bool:
    """``address`` in the peer's CIDR and in none of its exceptions."""
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(peer.cidr or "", strict=False)
    if ip.version != network.version or ip not in network:
        return False
    return not any(ip in ipaddress.ip_network(e, strict=False) for e in peer.except_)


def _supported(policy: Policy) -> None:
    """Raise unless the policy is plain Kubernetes NetworkPolicy."""
    where = f"Policy {policy.name!r} in namespace {policy.namespace!r}"
    if policy.tier is not None:
        raise UnsupportedDialectError(
            f"{where} has tier {policy.tier!r}; tiers are not Kubernetes NetworkPolicy semantics."
        )
    for rule in policy.rules:
        if rule.action != "allow":
            raise UnsupportedDialectError(
                f"{where} has a {rule.action} rule; Kubernetes NetworkPolicy only allows."
            )
        for peer in rule.peers:
            if peer.kind not in ("pods", "cidr"):
                raise UnsupportedDialectError(
                    f"{where} has a {peer.kind} peer; convert it to a CIDR peer first."
                )
