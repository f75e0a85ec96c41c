"""Read Cilium ``cilium.io/v2`` policies and judge connections with Cilium's precedence.

Kinds: CiliumNetworkPolicy (its endpoints and peers without a namespace label are those of its
own namespace) and CiliumClusterwideNetworkPolicy (every namespace); a ``nodeSelector``
(host) policy selects nodes, which are not evaluated. Semantics, from Cilium's documentation
("Policy Enforcement Modes", "Deny Policies", the ``enableDefaultDeny`` field):

* a matching deny rule (``ingressDeny``/``egressDeny``) of any policy selecting the endpoint
  denies, whatever allows it; deny beats allow, regardless of order;
* an endpoint is in default deny for a direction when a policy selecting it has rules for it
  (``ingress``/``ingressDeny``, even ``[{}]``), unless that policy sets
  ``enableDefaultDeny`` false; a Kubernetes NetworkPolicy isolating it counts too; then some
  allow rule (Cilium's or a NetworkPolicy's) must match;
* in a rule, the L3 peers (``fromEndpoints``, ``fromCIDR``, ``fromCIDRSet``,
  ``fromEntities``, ``toFQDNs``...) are OR-ed and ANDed with ``toPorts``; a rule with ports
  only allows every peer on them; an empty rule ``{}`` allows nothing;
* endpoint selectors use the pods' labels (``k8s:``/``any:`` prefixes dropped), the namespace
  as ``io.kubernetes.pod.namespace`` and namespace labels as
  ``io.cilium.k8s.namespace.labels.<key>``; CIDR rules match addresses outside the cluster
  only; entities ``world``, ``cluster``, ``kube-apiserver``, ``host``, ``remote-node``,
  ``all`` are judged by what the flows saw; ``toFQDNs`` by the DNS names the flows resolved;
* L7 rules (``rules.http``, ``rules.dns``) are judged at L4: the connection is allowed;
* ``fromRequires``/``toRequires`` of every rule of every policy selecting the endpoint are ANDed
  into each ``fromEndpoints``/``toEndpoints`` selector of that endpoint's rules of the same
  kind (allow with allow, deny with deny), as Cilium's
  ``GetSourceEndpointSelectorsWithRequirements`` does; they grant nothing themselves and do not
  narrow entities, CIDRs or a rule with ports only;
* ``toServices`` with ``k8sService`` matches the Service's endpoints as the flows show them
  (:mod:`.services`: every destination reached through the Service, by the name the flows
  give, Hubble ``destination_service``, Calico ``dst_service_name``), in its ``namespace``
  (the policy's when not given; any for a clusterwide policy without one);
* ``cidrGroupRef`` names a CiliumCIDRGroup of the tree (its ``externalCIDRs``, less the rule's
  ``except``), ``cidrGroupSelector`` selects them by their labels;
* ``toPorts`` ``endPort`` is a range.

Refused with :class:`~recommender.errors.UnsupportedDialectError` (exit 2), saying why:
``toGroups``/``fromGroups`` (cloud provider security groups: the flows carry no cloud
metadata), ``toNodes``/``fromNodes`` (node labels are not in the flows), ``k8sServiceSelector``
(the flows carry no Service labels), ``reserved:`` labels other than one
``reserved:<entity>`` alone in a peer selector (judged as that entity).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ..guardrails.model import Guardrails, Subject
from ..policy.model import Direction, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from .evaluator import Cluster, Endpoint, Pod, Verdict, _Check
from .precedence import _CLUSTER_WIDE, _both_ends, _cilium_deny
from .services import ServiceMap

__all__ = ["CILIUM_GROUP", "CiliumPolicy", "evaluate_cilium", "read_cilium_policies"]

CILIUM_GROUP: Final = "cilium.io"
_NAMESPACE: Final = "io.kubernetes.pod.namespace"
_NS_LABELS: Final = "io.cilium.k8s.namespace.labels."
_NAMESPACE_NAME: Final = "kubernetes.io/metadata.name"
_IGNORED_KEYS: Final = ("io.cilium.k8s.policy.cluster",)
_UNSUPPORTED: Final = {
    "toGroups": "cloud provider security groups; the flows carry no cloud metadata",
    "fromGroups": "cloud provider security groups; the flows carry no cloud metadata",
    "fromNodes": "node selectors; the flows carry no node labels",
    "toNodes": "node selectors; the flows carry no node labels",
}
#: A requirement on the peer: (namespace selector or None, pod selector).
Requirement = tuple[LabelSelector | None, LabelSelector]
_ENTITIES: Final = frozenset(
    ("all", "world", "cluster", "host", "remote-node", "kube-apiserver", "health", "init",
     "unmanaged", "ingress")
)


@dataclass(frozen=True)
class CiliumPolicy:
    """One Cilium policy (one ``spec``): who it selects, its allow and deny rules."""

    name: str
    namespace: str | None  # None: clusterwide
    subject: Subject
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    ingress_deny: tuple[Rule, ...] = ()
    egress_deny: tuple[Rule, ...] = ()
    default_deny: tuple[Direction, ...] = ()
    #: fromRequires/toRequires of its rules, by field (``ingress``, ``egressDeny``...).
    requires: tuple[tuple[str, tuple[Requirement, ...]], ...] = ()

    def requirements(self, field_name: str) -> tuple[Requirement, ...]:
        return next((r for f, r in self.requires if f == field_name), ())

    @property
    def key(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.ingress + self.egress + self.ingress_deny + self.egress_deny

    def selects(self, pod: Pod, cluster: Cluster) -> bool:
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        return self.subject.matches(cluster.namespaces[pod.namespace].labels, pod.labels)

    def context(self) -> Policy:
        """The policy whose namespace resolves peers without a namespace selector."""
        if self.namespace is None:
            return _CLUSTER_WIDE
        return Policy(self.name, self.namespace, LabelSelector())


def _key(raw: str, where: str) -> str:
    source, sep, rest = raw.partition(":")
    if not sep or source not in ("k8s", "any", "reserved", "cidr", "fqdn", "unspec"):
        return raw
    if source in ("k8s", "any", "unspec"):
        return rest
    raise UnsupportedDialectError(
        f"{where}: the label {raw!r} ({source} identity) is not evaluated; use entities."
    )


def _split_selector(raw: Any, where: str) -> tuple[LabelSelector | None, LabelSelector]:
    """An endpoint selector as (namespace selector or None when it names no namespace, pod
    selector)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{where}: an endpoint selector is not a mapping.")
    ns_labels: list[tuple[str, str]] = []
    ns_exprs: list[tuple[str, str, tuple[str, ...]]] = []
    pod_labels: list[tuple[str, str]] = []
    pod_exprs: list[tuple[str, str, tuple[str, ...]]] = []
    names_namespace = False

    def place(key: str) -> tuple[str, bool] | None:
        key = _key(key, where)
        if key in _IGNORED_KEYS:
            return None
        if key == _NAMESPACE:
            return _NAMESPACE_NAME, True
        if key.startswith(_NS_LABELS):
            return key[len(_NS_LABELS):], True
        return key, False

    for k, v in (raw.get("matchLabels") or {}).items():
        placed = place(str(k))
        if placed is None:
            continue
        key, on_ns = placed
        names_namespace |= on_ns
        (ns_labels if on_ns else pod_labels).append((key, str(v)))
    for item in raw.get("matchExpressions") or []:
        placed = place(str(item.get("key")))
        if placed is None:
            continue
        key, on_ns = placed
        op = str(item.get("operator"))
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise InputError(f"{where}: selector operator {op!r} is not valid.")
        values = tuple(sorted(str(v) for v in item.get("values") or ()))
        names_namespace |= on_ns
        (ns_exprs if on_ns else pod_exprs).append((key, op, values))
    ns = (
        LabelSelector(tuple(sorted(ns_labels)), tuple(sorted(ns_exprs)))
        if names_namespace
        else None
    )
    return ns, LabelSelector(tuple(sorted(pod_labels)), tuple(sorted(pod_exprs)))


def _reserved(selector: Any) -> str | None:
    """The entity an endpoint selector of one reserved label names (``reserved:host``...),
    None for any other selector."""
    if not isinstance(selector, dict) or selector.get("matchExpressions"):
        return None
    labels = list((selector.get("matchLabels") or {}).keys())
    if len(labels) != 1 or not str(labels[0]).startswith("reserved:"):
        return None
    entity = str(labels[0]).removeprefix("reserved:")
    return entity if entity in _ENTITIES and entity not in ("all", "cluster") else None


def _ports(raw: Any, where: str) -> tuple[PortSpec, ...] | None:
    """The ports of ``toPorts`` (None: the rule has none, every port)."""
    if not raw:
        return None
    out: list[PortSpec] = []
    for entry in raw:
        ports = (entry or {}).get("ports") or [{}]
        for port in ports:
            protocol = str(port.get("protocol") or "ANY").upper()
            protocols = ("TCP", "UDP", "SCTP") if protocol == "ANY" else (protocol,)
            number = str(port.get("port") or "0")
            end = port.get("endPort")
            for proto in protocols:
                if number.isdigit():
                    value = int(number)
                    if value == 0:
                        out.append(PortSpec(proto))
                    else:
                        out.append(PortSpec(proto, value, int(end) if end else None))
                else:
                    out.append(PortSpec(proto, name=number))
    return tuple(out)


def _cidr(text: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_network(str(text), strict=False))
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a CIDR.") from None


def _rule(
    raw: Any,
    direction: Direction,
    action: str,
    clusterwide: bool,
    where: str,
    groups: Mapping[str, tuple[Mapping[str, str], tuple[str, ...]]],
    namespace: str | None,
    requires: list[Requirement],
) -> Rule | None:
    if not isinstance(raw, dict):
        raise InputError(f"{where} is not a mapping.")
    for key, why in _UNSUPPORTED.items():
        if raw.get(key):
            raise UnsupportedDialectError(f"{where} uses {key}, which is not evaluated ({why}).")
    side = "from" if direction == "ingress" else "to"
    for selector in raw.get(f"{side}Requires") or []:
        requires.append(_split_selector(selector, where))
    peers: list[Peer] = []
    has_l3 = False
    for selector in raw.get(f"{side}Endpoints") or []:
        has_l3 = True
        entity = _reserved(selector)
        if entity is not None:
            peers.append(Peer("entity", entity=entity))
            continue
        ns, pods = _split_selector(selector, where)
        if ns is None and clusterwide:
            ns = LabelSelector()
        peers.append(Peer("pods", namespace_selector=ns, pod_selector=pods))
    for cidr in raw.get(f"{side}CIDR") or []:
        has_l3 = True
        peers.append(Peer("cidr", cidr=_cidr(cidr, where)))
    for item in raw.get(f"{side}CIDRSet") or []:
        has_l3 = True
        excepts = tuple(_cidr(e, where) for e in item.get("except") or ())
        for cidr in _cidr_set(item, groups, where):
            peers.append(Peer("cidr", cidr=cidr, except_=excepts))
    for entity in raw.get(f"{side}Entities") or []:
        has_l3 = True
        if entity not in _ENTITIES:
            raise InputError(f"{where}: {entity!r} is not a Cilium entity.")
        peers.append(Peer("entity", entity=str(entity)))
    if direction == "egress" and raw.get("toFQDNs"):
        has_l3 = True
        names = tuple(
            str(item.get("matchName") or item.get("matchPattern") or "")
            for item in raw["toFQDNs"]
        )
        peers.append(Peer("entity", entity="fqdn", dns_names=names))
    if direction == "egress":
        for item in raw.get("toServices") or []:
            has_l3 = True
            peers.append(_service(item, namespace, clusterwide, where))
    ports = _ports(raw.get("toPorts"), where)
    if raw.get("icmps"):
        ports = (ports or ()) + (PortSpec("ICMP"), PortSpec("ICMPv6"))
    if not has_l3 and ports is None:
        return None  # `{}`: selects nothing (it only enables default deny)
    return Rule(direction, tuple(peers), ports or (), action)  # type: ignore[arg-type]


#: The entity name of a toServices peer: ``service:<namespace or *>/<name>``.
_SERVICE: Final = "service:"


def _service(item: Any, namespace: str | None, clusterwide: bool, where: str) -> Peer:
    if not isinstance(item, dict):
        raise InputError(f"{where}: a toServices item is not a mapping.")
    if item.get("k8sServiceSelector") is not None:
        raise UnsupportedDialectError(
            f"{where}: toServices k8sServiceSelector is not evaluated (it selects Services by "
            "their labels, which the flows do not carry); name the Service with k8sService."
        )
    service = item.get("k8sService")
    if not isinstance(service, dict) or not service.get("serviceName"):
        raise InputError(f"{where}: a toServices item needs k8sService.serviceName.")
    ns = service.get("namespace") or namespace
    if ns is None and not clusterwide:
        ns = "default"
    return Peer("entity", entity=f"{_SERVICE}{ns or '*'}/{service['serviceName']}")


def _cidr_set(
    item: Any, groups: Mapping[str, tuple[Mapping[str, str], tuple[str, ...]]], where: str
) -> tuple[str, ...]:
    """The CIDRs of one ``CIDRSet`` entry: its ``cidr``, or those of the CiliumCIDRGroups it
    names (``cidrGroupRef``) or selects (``cidrGroupSelector``)."""
    if not isinstance(item, dict):
        raise InputError(f"{where}: a CIDR set entry is not a mapping.")
    if item.get("cidr"):
        return (_cidr(item["cidr"], where),)
    if item.get("cidrGroupRef"):
        name = str(item["cidrGroupRef"])
        if name not in groups:
            raise InputError(
                f"{where}: cidrGroupRef {name!r} names no CiliumCIDRGroup in POLICIES; add it."
            )
        return groups[name][1]
    if item.get("cidrGroupSelector") is not None:
        ns, selector = _split_selector(item["cidrGroupSelector"], where)
        if ns is not None:
            raise InputError(f"{where}: a cidrGroupSelector has no namespace labels.")
        return tuple(
            cidr for name in sorted(groups)
            if selector.matches(dict(groups[name][0])) for cidr in groups[name][1]
        )
    raise InputError(f"{where}: a CIDR set entry needs cidr, cidrGroupRef or cidrGroupSelector.")


def _groups(
    docs: Iterable[tuple[str, Mapping[str, Any]]],
) -> dict[str, tuple[Mapping[str, str], tuple[str, ...]]]:
    """CiliumCIDRGroups by name: their labels and ``externalCIDRs``."""
    out: dict[str, tuple[Mapping[str, str], tuple[str, ...]]] = {}
    for where, doc in docs:
        if doc.get("kind") != "CiliumCIDRGroup":
            continue
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise InputError(f"{where}: a CiliumCIDRGroup has no metadata.name.")
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        cidrs = tuple(_cidr(c, where) for c in (doc.get("spec") or {}).get("externalCIDRs") or ())
        out[name] = (labels, cidrs)
    return out


def read_cilium_policies(
    docs: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[tuple[CiliumPolicy, ...], tuple[str, ...]]:
    """The Cilium policies of ``docs`` and notes on what was assumed or left out."""
    out: list[CiliumPolicy] = []
    notes: list[str] = []
    docs = list(docs)
    groups = _groups(docs)
    for where, doc in docs:
        kind = doc.get("kind")
        if kind not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
            continue
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: a {kind} has no metadata.name.")
        clusterwide = kind == "CiliumClusterwideNetworkPolicy"
        namespace = None if clusterwide else str(meta.get("namespace") or "default")
        specs = ([doc["spec"]] if doc.get("spec") else []) + list(doc.get("specs") or [])
        for index, spec in enumerate(specs):
            label = name if len(specs) == 1 else f"{name}[{index}]"
            here = f"{where}: {kind} {label!r}"
            if spec.get("nodeSelector") is not None:
                notes.append(f"{here} selects nodes, which are not evaluated.")
                continue
            ns, pods = _split_selector(spec.get("endpointSelector"), here)
            subject = Subject(ns or LabelSelector(), pods)
            rules: dict[str, tuple[Rule, ...]] = {}
            requires: list[tuple[str, tuple[Requirement, ...]]] = []
            for field_name, direction, action in (
                ("ingress", "ingress", "allow"),
                ("egress", "egress", "allow"),
                ("ingressDeny", "ingress", "deny"),
                ("egressDeny", "egress", "deny"),
            ):
                found: list[Requirement] = []
                parsed = [
                    _rule(
                        r, direction, action, clusterwide,  # type: ignore[arg-type]
                        f"{here} {field_name} rule {i}", groups, namespace, found,
                    )
                    for i, r in enumerate(spec.get(field_name) or [])
                ]
                rules[field_name] = tuple(r for r in parsed if r is not None)
                if found:
                    requires.append((field_name, tuple(found)))
                if any(p.entity and p.entity.startswith(_SERVICE) for r in rules[field_name]
                       for p in r.peers) and _NOTE_SERVICES not in notes:
                    notes.append(_NOTE_SERVICES)
            enable = spec.get("enableDefaultDeny") or {}
            default_deny = tuple(
                d
                for d in ("ingress", "egress")
                if (spec.get(d) or spec.get(f"{d}Deny")) and enable.get(d, True) is not False
            )
            out.append(
                CiliumPolicy(
                    label,
                    namespace,
                    subject,
                    rules["ingress"],
                    rules["egress"],
                    rules["ingressDeny"],
                    rules["egressDeny"],
                    default_deny,  # type: ignore[arg-type]
                    tuple(requires),
                )
            )
    return tuple(out), tuple(notes)


_NOTE_SERVICES: Final = (
    "Cilium toServices judged on the Service endpoints the flows show (destinations reached "
    "through the Service); an endpoint never reached through it is not known to back it."
)


def _matches(
    check: _Check,
    policy: CiliumPolicy,
    rule: Rule,
    peer: Pod | Endpoint,
    requires: tuple[Requirement, ...],
    services: ServiceMap | None,
) -> bool:
    """Whether ``rule`` of ``policy`` matches, with the endpoint's requirements ANDed into its
    endpoint selectors and toServices judged on ``services``."""
    if rule.peers and not any(
        _peer_matches(check, policy, p, peer, requires, services) for p in rule.peers
    ):
        return False
    return not rule.ports or any(check._port_matches(p) for p in rule.ports)


def _peer_matches(
    check: _Check,
    policy: CiliumPolicy,
    peer: Peer,
    other: Pod | Endpoint,
    requires: tuple[Requirement, ...],
    services: ServiceMap | None,
) -> bool:
    if peer.kind == "entity" and (peer.entity or "").startswith(_SERVICE):
        namespace, _, name = (peer.entity or "")[len(_SERVICE):].partition("/")
        return services is not None and services.backs(namespace, name, other)
    if not check._peer_matches(policy.context(), peer, other):
        return False
    if peer.kind != "pods" or not requires:
        return True
    assert isinstance(other, Pod)
    ns_labels = dict(check.cluster.namespaces[other.namespace].labels)
    return all(
        (ns is None or ns.matches(ns_labels)) and pods.matches(dict(other.labels))
        for ns, pods in requires
    )


def evaluate_cilium(
    policies: Sequence[CiliumPolicy],
    network_policies: PolicySet,
    guardrails: Guardrails | None,
    cluster: Cluster,
    src: Pod | Endpoint | str,
    dst: Pod | Endpoint | str,
    protocol: str,
    port: int | None,
    *,
    services: ServiceMap | None = None,
    selection: dict[str, tuple[CiliumPolicy, ...]] | None = None,
) -> Verdict:
    """Whether Cilium policies, Kubernetes NetworkPolicies and (admin) guardrails allow a
    connection under Cilium's precedence (see the module docstring); ``services`` are the
    Service endpoints the flows show (toServices); ``selection``, when given, keeps the
    policies selecting each pod (by ``namespace/name``) for these policies and this cluster."""
    guards = guardrails or Guardrails()
    if guards.baseline:
        raise UnsupportedDialectError(
            f"Guardrail {guards.baseline[0].name!r} is in the baseline tier, which Cilium "
            "cannot express."
        )

    def decide(
        check: _Check, pod: Pod, peer: Pod | Endpoint, direction: Direction
    ) -> tuple[bool, str, list[str]]:
        selecting = None if selection is None else selection.get(pod.key)
        if selecting is None:
            selecting = tuple(p for p in policies if p.selects(pod, cluster))
            if selection is not None:
                selection[pod.key] = selecting
        governing = [
            g for g in guards.admin
            if g.subject.matches(cluster.namespaces[pod.namespace].labels, pod.labels)
        ]
        for g in governing:
            reason = _cilium_deny(check, guards, g, peer, direction)
            if reason:
                return False, reason, []
        deny_field = f"{direction}Deny"
        deny_requires = tuple(r for p in selecting for r in p.requirements(deny_field))
        allow_requires = tuple(r for p in selecting for r in p.requirements(direction))
        for p in selecting:
            deny = p.ingress_deny if direction == "ingress" else p.egress_deny
            for index, rule in enumerate(deny):
                if _matches(check, p, rule, peer, deny_requires, services):
                    return False, f"denied by {p.key} {direction}Deny rule {index}", []
        k8s_ok, k8s_reason, k8s_by = check.direction(network_policies, direction)
        enforced = [p.key for p in selecting if direction in p.default_deny]
        if not enforced and k8s_reason.startswith("not isolated"):
            return True, "not isolated", []
        for p in selecting:
            allow = p.ingress if direction == "ingress" else p.egress
            for index, rule in enumerate(allow):
                if _matches(check, p, rule, peer, allow_requires, services):
                    return True, f"allowed by {p.key} {direction} rule {index}", [p.key]
        if k8s_ok and k8s_reason.startswith("allowed"):
            return True, k8s_reason, k8s_by
        for g in governing:
            rules = g.ingress if direction == "ingress" else g.egress
            for index, rule in enumerate(rules):
                if rule.action == "allow" and check._rule_matches(_CLUSTER_WIDE, rule, peer):
                    key = f"{guards.name}/{g.name}"
                    return True, f"allowed by {key} {direction} rule {index}", [key]
        names = ", ".join(enforced) or k8s_reason.removeprefix("isolated by ").split(";")[0]
        return False, f"isolated by {names}; no rule matches", []

    return _both_ends(cluster, src, dst, protocol, port, False, decide)
