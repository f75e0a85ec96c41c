"""Render a :class:`~recommender.policy.model.PolicySet` as Cilium ``cilium.io/v2`` policies.

One CiliumNetworkPolicy per model policy (endpointSelector from the policy's selector), host
policies as CiliumClusterwideNetworkPolicy with a ``nodeSelector``. A direction the model
isolates without rules becomes ``[{}]`` (Cilium's default deny for that direction), so the
per-namespace ``default-deny`` keeps its meaning.

Peers map as follows: pods → ``fromEndpoints``/``toEndpoints`` (another namespace through
``k8s:io.kubernetes.pod.namespace``, or namespace labels through
``k8s:io.cilium.k8s.namespace.labels.<key>``); CIDRs → ``fromCIDRSet``/``toCIDRSet`` with
``except``, unless the addresses were observed as the node, another node or the API server,
which Cilium matches only by entity (``host``, ``remote-node``, ``kube-apiserver``); entity
peers → ``toEntities``; with ``fqdn``, external addresses with observed DNS names →
``toFQDNs`` plus the DNS proxy rule FQDN policies need; with ``l7``, observed HTTP requests →
``rules.http`` on their port.

See ``docs/dialects.md`` for the mapping table and the options.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import SynthesisError
from ._names import is_dns1123_label, is_label_key, is_label_value
from .model import HttpRule, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = [
    "API_VERSION",
    "CiliumOptions",
    "NAMESPACE_KEY",
    "SERVICE_ACCOUNT_KEY",
    "render_cilium",
]

API_VERSION: Final = "cilium.io/v2"
#: The label Cilium gives every endpoint for its namespace.
NAMESPACE_KEY: Final = "k8s:io.kubernetes.pod.namespace"
#: The label Cilium gives every endpoint for its service account.
SERVICE_ACCOUNT_KEY: Final = "k8s:io.cilium.k8s.policy.serviceaccount"
_NAMESPACE_LABELS: Final = "k8s:io.cilium.k8s.namespace.labels."
_NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
#: Entities for addresses observed as cluster infrastructure: CIDR rules never match them.
_INFRA_ENTITIES: Final = ("host", "remote-node", "kube-apiserver")
_ENTITIES: Final = frozenset(
    ("all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health")
).union(("kube-apiserver",))
#: Where kube-dns runs, for the DNS proxy rule added when a policy has toFQDNs and no
#: port-53 rule of its own.
KUBE_DNS: Final = {NAMESPACE_KEY: "kube-system", "k8s:k8s-app": "kube-dns"}
_HTTP_METHOD: Final = re.compile(r"[A-Z]{1,20}")
#: POSIX extended regular expression metacharacters (Cilium matches paths as regexes).
_REGEX_SPECIAL: Final = re.compile(r"([\\.^$|?*+()\[\]{}])")


@dataclass(frozen=True)
class CiliumOptions:
    """How the Cilium dialect renders.

    Attributes
    ----------
    fqdn
        Egress to external addresses with observed DNS names uses ``toFQDNs`` (matchName)
        instead of ``toCIDRSet``, and DNS egress gets the proxy rule
        (``rules.dns: [{matchPattern: "*"}]``) that lets Cilium learn the names' addresses.
    l7
        Ports with observed HTTP requests get ``rules.http`` (method and exact path) for the
        peers they were seen from or to.
    service_accounts
        Select workloads by their service account label where it is known.
    """

    fqdn: bool = False
    l7: bool = False
    service_accounts: bool = False


def render_cilium(
    policy_set: PolicySet, options: CiliumOptions | None = None
) -> list[dict[str, Any]]:
    """Render ``policy_set`` as Cilium policies.

    Parameters
    ----------
    policy_set : PolicySet
        The policies (and host policies).
    options : CiliumOptions, optional
        FQDN, L7 and service-account rendering.

    Returns
    -------
    list of dict
        CiliumClusterwideNetworkPolicies of the host policies, then one CiliumNetworkPolicy
        per policy in PolicySet order.

    Raises
    ------
    SynthesisError
        If a name, selector or value cannot be expressed, or two policies collide.

    Examples
    --------
    >>> deny = Policy("default-deny", "shop", LabelSelector())
    >>> render_cilium(PolicySet((deny,)))[0]["spec"]
    {'endpointSelector': {}, 'ingress': [{}], 'egress': [{}]}
    """
    options = options or CiliumOptions()
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for policy in policy_set.host_policies:
        if ("", policy.name) in seen:
            raise SynthesisError(f"Two host policies are named {policy.name!r}.")
        seen.add(("", policy.name))
        out.append(_render_policy(policy, options, host=True))
    for policy in policy_set.policies:
        key = (policy.namespace, policy.name)
        if key in seen:
            raise SynthesisError(
                f"Two policies are named {policy.name!r} in namespace {policy.namespace!r}."
            )
        seen.add(key)
        out.append(_render_policy(policy, options, host=False))
    return out


def _render_policy(policy: Policy, options: CiliumOptions, *, host: bool) -> dict[str, Any]:
    where = f"Policy {policy.name!r}" + ("" if host else f" in namespace {policy.namespace!r}")
    if not is_dns1123_label(policy.name):
        raise SynthesisError(f"{where}: the name is not a DNS-1123 label.")
    if not host and not is_dns1123_label(policy.namespace):
        raise SynthesisError(f"{where}: the namespace is not a DNS-1123 label.")
    metadata: dict[str, Any] = {"name": policy.name}
    if not host:
        metadata["namespace"] = policy.namespace
    if policy.labels:
        metadata["labels"] = _metadata(policy.labels, where)
    if policy.annotations:
        metadata["annotations"] = _metadata(policy.annotations, where)
    spec: dict[str, Any] = {}
    if host:
        spec["nodeSelector"] = _selector(policy.selector, where)
    elif options.service_accounts and policy.service_account is not None:
        spec["endpointSelector"] = {
            "matchLabels": {SERVICE_ACCOUNT_KEY: _value(policy.service_account, where)}
        }
    else:
        spec["endpointSelector"] = _selector(policy.selector, where)
    unknown = sorted(set(policy.policy_types) - {"ingress", "egress"})
    if unknown or not policy.policy_types:
        raise SynthesisError(f"{where} has policy types {list(policy.policy_types)}.")
    fqdn_policy = options.fqdn and any(
        _fqdn_peer(peer, rule) for rule in policy.egress for peer in rule.peers
    )
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        if direction not in policy.policy_types:
            if rules:
                raise SynthesisError(
                    f"{where} has {direction} rules but does not list {direction} in its types."
                )
            continue
        allow: list[dict[str, Any]] = []
        deny: list[dict[str, Any]] = []
        for rule in rules:
            if rule.direction != direction:
                raise SynthesisError(f"{where} has a {rule.direction} rule among {direction}.")
            if rule.action == "pass":
                raise SynthesisError(f"{where} has a pass rule, which Cilium cannot express.")
            target = deny if rule.action == "deny" else allow
            target.extend(_rules(rule, options, where, host=host, dns_proxy=fqdn_policy))
        if direction == "egress" and fqdn_policy and not _has_dns_proxy(allow):
            allow.append(_kube_dns_rule())
        # A direction isolated with no allow rule: ``[{}]`` selects nothing but puts the
        # endpoints in default deny for that direction.
        spec[direction] = allow or [{}]
        if deny:
            spec[f"{direction}Deny"] = deny
    kind = "CiliumClusterwideNetworkPolicy" if host else "CiliumNetworkPolicy"
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _metadata(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    for key, _value in pairs:
        if not is_label_key(key):
            raise SynthesisError(f"{where}: metadata key {key!r} is not valid.")
    return dict(sorted(pairs))


def _value(value: str, where: str) -> str:
    """``value`` after checking it is a Kubernetes label value."""
    if not is_label_value(value):
        raise SynthesisError(f"{where}: {value!r} is not a valid label value.")
    return value


def _selector(
    selector: LabelSelector, where: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Cilium EndpointSelector (a Kubernetes label selector); ``extra`` labels are added."""
    out: dict[str, Any] = {}
    labels = dict(selector.match_labels)
    for key, value in labels.items():
        if not is_label_key(key):
            raise SynthesisError(f"{where}: label key {key!r} is not valid.")
        _value(value, where)
    labels.update(extra or {})
    if labels:
        out["matchLabels"] = dict(sorted(labels.items()))
    if selector.match_expressions:
        expressions = []
        for key, op, values in selector.match_expressions:
            if not is_label_key(key) or op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise SynthesisError(f"{where}: selector expression on {key!r} is not valid.")
            if (op in ("In", "NotIn")) != bool(values):
                raise SynthesisError(f"{where}: selector operator {op} on {key!r} is not valid.")
            expression: dict[str, Any] = {"key": key, "operator": op}
            if values:
                expression["values"] = [_value(v, where) for v in values]
            expressions.append(expression)
        out["matchExpressions"] = expressions
    return out


def _namespace_selector(selector: LabelSelector, where: str) -> LabelSelector:
    """Namespace labels as endpoint labels: the namespace name, or Cilium's namespace labels."""
    labels = []
    for key, value in selector.match_labels:
        labels.append(
            (NAMESPACE_KEY if key == _NAMESPACE_NAME_LABEL else _NAMESPACE_LABELS + key, value)
        )
    expressions = []
    for key, op, values in selector.match_expressions:
        mapped = NAMESPACE_KEY if key == _NAMESPACE_NAME_LABEL else _NAMESPACE_LABELS + key
        expressions.append((mapped, op, values))
    if not labels and not expressions:  # every namespace: any endpoint with a namespace
        expressions.append((NAMESPACE_KEY, "Exists", ()))
    return LabelSelector(tuple(sorted(labels)), tuple(expressions))


def _endpoint(peer: Peer, options: CiliumOptions, where: str, *, host: bool) -> dict[str, Any]:
    """An EndpointSelector for a pods peer."""
    if peer.cidr is not None or peer.except_ or peer.entity is not None:
        raise SynthesisError(f"{where} has a pods peer that also sets a CIDR or entity.")
    if peer.namespace_selector is not None:
        ns = _namespace_selector(peer.namespace_selector, where)
    elif host:
        raise SynthesisError(f"{where}: a host policy's pod peer needs a namespace selector.")
    else:
        ns = LabelSelector()
    extra: dict[str, str] = {}
    if options.service_accounts and peer.service_account is not None:
        pods = LabelSelector()
        extra[SERVICE_ACCOUNT_KEY] = _value(peer.service_account, where)
    else:
        pods = peer.pod_selector or LabelSelector()
    for key in dict(ns.match_labels):
        if key in dict(pods.match_labels):
            raise SynthesisError(f"{where}: pod selector key {key!r} clashes with the namespace.")
    # Cilium's own keys (k8s:...) are not Kubernetes label keys: check pod labels first.
    checked = _selector(pods, where, extra)
    labels = {**checked.get("matchLabels", {}), **dict(ns.match_labels)}
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = dict(sorted(labels.items()))
    expressions = list(checked.get("matchExpressions", []))
    for key, op, values in ns.match_expressions:
        expression: dict[str, Any] = {"key": key, "operator": op}
        if values:
            expression["values"] = [_value(v, where) for v in values]
        expressions.append(expression)
    if expressions:
        out["matchExpressions"] = expressions
    return out


def _fqdn_peer(peer: Peer, rule: Rule) -> bool:
    return peer.kind == "cidr" and bool(peer.dns_names) and rule.direction == "egress"


def _rules(
    rule: Rule, options: CiliumOptions, where: str, *, host: bool, dns_proxy: bool
) -> list[dict[str, Any]]:
    """A model rule as Cilium rules: one per kind of peer (endpoints, CIDRs, entities, FQDNs),
    and one per peer where that peer has L7 rules of its own."""
    ingress = rule.direction == "ingress"
    side = "from" if ingress else "to"
    endpoints: list[dict[str, Any]] = []
    cidrs: list[dict[str, Any]] = []
    entities: set[str] = set()
    fqdns: set[str] = set()
    l7_rules: list[dict[str, Any]] = []
    for peer in rule.peers:
        l3: dict[str, Any]
        if peer.kind == "pods":
            selector = _endpoint(peer, options, where, host=host)
            if options.l7 and peer.http and rule.action == "allow":
                l3 = {f"{side}Endpoints": [selector]}
                l7_rules.append(
                    _with_ports(l3, rule.ports, peer.http, where, dns_proxy and not ingress)
                )
                continue
            endpoints.append(selector)
        elif peer.kind == "cidr":
            if peer.namespace_selector is not None or peer.pod_selector is not None:
                raise SynthesisError(f"{where} has a CIDR peer that also sets a selector.")
            infra = sorted(set(peer.entities) & set(_INFRA_ENTITIES))
            if infra:
                entities.update(infra)
                if set(peer.entities) - set(_INFRA_ENTITIES):  # some addresses were world
                    cidrs.append(_cidr(peer, where))
                continue
            if options.fqdn and _fqdn_peer(peer, rule) and rule.action == "allow":
                fqdns.update(peer.dns_names)
                continue
            cidrs.append(_cidr(peer, where))
        elif peer.kind == "entity":
            if peer.entity not in _ENTITIES:
                raise SynthesisError(f"{where}: {peer.entity!r} is not a Cilium entity.")
            entities.add(peer.entity)
        else:
            raise SynthesisError(f"{where} has a peer of unknown kind {peer.kind!r}.")
    groups: list[dict[str, Any]] = []
    if endpoints:
        groups.append({f"{side}Endpoints": endpoints})
    if cidrs:
        groups.append({f"{side}CIDRSet": cidrs})
    if entities:
        groups.append({f"{side}Entities": sorted(entities)})
    if fqdns:
        groups.append({"toFQDNs": [{"matchName": name} for name in sorted(fqdns)]})
    if not rule.peers:
        groups.append({f"{side}Entities": ["all"]})
    out = [
        _with_ports(g, rule.ports, (), where, dns_proxy and not ingress and "toFQDNs" not in g)
        for g in groups
    ]
    return out + l7_rules


def _cidr(peer: Peer, where: str) -> dict[str, Any]:
    if peer.cidr is None:
        raise SynthesisError(f"{where} has a CIDR peer without a CIDR.")
    try:
        network = ipaddress.ip_network(peer.cidr, strict=False)
    except ValueError:
        raise SynthesisError(f"{where}: {peer.cidr!r} is not a CIDR.") from None
    out: dict[str, Any] = {"cidr": str(network)}
    if peer.except_:
        for item in peer.except_:
            inner = ipaddress.ip_network(item, strict=False)
            if inner.version != network.version or not inner.subnet_of(network):  # type: ignore[arg-type]
                raise SynthesisError(f"{where}: except CIDR {item!r} is not inside {peer.cidr!r}.")
        out["except"] = list(peer.except_)
    return out


def _port(port: PortSpec, where: str) -> dict[str, Any]:
    protocol = port.protocol.upper()
    if protocol not in _PROTOCOLS:
        raise SynthesisError(f"{where}: protocol {port.protocol!r} has no Cilium port rule.")
    if port.name is not None:
        return {"port": port.name, "protocol": protocol}
    if port.port is None:
        return {"port": "0", "protocol": protocol}
    if not 1 <= port.port <= 65535:
        raise SynthesisError(f"{where}: port {port.port} is not in 1..65535.")
    out: dict[str, Any] = {"port": str(port.port), "protocol": protocol}
    if port.end_port is not None:
        if not port.port <= port.end_port <= 65535:
            raise SynthesisError(f"{where}: port range {port.port}-{port.end_port} is not valid.")
        out["endPort"] = port.end_port
    return out


def _is_dns_port(port: PortSpec) -> bool:
    return port.port == 53 and port.end_port is None and port.protocol.upper() in ("UDP", "TCP")


def _path_regex(path: str) -> str:
    """An exact path as a Cilium (POSIX extended) regular expression."""
    return _REGEX_SPECIAL.sub(r"\\\1", path)


def _with_ports(
    l3: dict[str, Any],
    ports: tuple[PortSpec, ...],
    http: tuple[HttpRule, ...],
    where: str,
    dns_proxy: bool,
) -> dict[str, Any]:
    """``l3`` with ``toPorts``: one entry for plain ports, one per port with L7 rules, and the
    DNS ports apart (with the DNS proxy rule) when ``dns_proxy``."""
    if not ports:
        return dict(l3)
    by_port: dict[tuple[str, int], list[HttpRule]] = {}
    for item in http:
        by_port.setdefault((item.protocol.upper(), item.port), []).append(item)
    plain: list[dict[str, Any]] = []
    dns: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for port in ports:
        rendered = _port(port, where)
        key = (port.protocol.upper(), port.port or 0)
        if port.end_port is None and key in by_port:
            rules = []
            for item in sorted(set(by_port[key])):
                if not _HTTP_METHOD.fullmatch(item.method):
                    raise SynthesisError(f"{where}: {item.method!r} is not an HTTP method.")
                entry: dict[str, Any] = {"method": item.method}
                if item.path is not None:
                    entry["path"] = _path_regex(item.path)
                rules.append(entry)
            entries.append({"ports": [rendered], "rules": {"http": rules}})
        elif dns_proxy and _is_dns_port(port):
            dns.append(rendered)
        else:
            plain.append(rendered)
    to_ports: list[dict[str, Any]] = []
    if plain:
        to_ports.append({"ports": plain})
    if dns:
        to_ports.append({"ports": dns, "rules": {"dns": [{"matchPattern": "*"}]}})
    to_ports.extend(entries)
    return {**l3, "toPorts": to_ports}


def _has_dns_proxy(rules: list[dict[str, Any]]) -> bool:
    return any(
        "dns" in (entry.get("rules") or {}) for rule in rules for entry in rule.get("toPorts", [])
    )


def _kube_dns_rule() -> dict[str, Any]:
    """Egress to kube-dns on port 53 with the DNS proxy rule (toFQDNs needs it to learn names)."""
    return {
        "toEndpoints": [{"matchLabels": dict(sorted(KUBE_DNS.items()))}],
        "toPorts": [
            {
                "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                "rules": {"dns": [{"matchPattern": "*"}]},
            }
        ],
    }
