"""Render a :class:`~recommender.policy.model.PolicySet` as Istio ``security.istio.io/v1`` objects.

AuthorizationPolicies authorise requests at the destination's proxy, by workload identity:

* per namespace, the model's namespace-wide deny becomes an **allow-nothing** policy
  (``spec: {}``): once it exists, every workload of the namespace refuses what no ALLOW policy
  allows;
* per workload with ingress rules, one **ALLOW** policy selecting it by the model's (stable)
  labels, with one rule per source identity and the ports it used in ``to.operation.ports``;
  with ``l7``, the HTTP methods and paths observed on a port (ids in paths templated as
  ``{*}``);
* a source workload is named by its **principal** ``<trust domain>/ns/<namespace>/sa/<service
  account>`` when the flows carried its service account, else by its namespace (flagged);
  addresses outside the mesh (the internet, nodes) by ``ipBlocks`` with ``notPrincipals: ["*"]``,
  so that no mesh workload with those addresses matches (flagged);
* with ``mtls="strict"``, a PeerAuthentication per namespace requires mutual TLS (principals
  only exist over mTLS).

AuthorizationPolicies govern what reaches a workload (ingress) over TCP: egress rules, UDP
ports and Istio's own ports (:mod:`recommender.policy.mesh`) are left to the NetworkPolicy
dialects, which is why ``-d kubernetes,istio`` is the usual pair. Flagged rules are listed in
the policy's ``recommender.io/review`` annotation. See ``docs/dialects.md``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import SynthesisError
from ._names import is_dns1123_label, is_dns1123_subdomain, is_label_key, is_label_value, safe_name
from .mesh import MESH_PORTS, MESH_PORTS_ANNOTATION, mesh_port
from .model import HttpRule, Peer, Policy, PolicySet, Rule

__all__ = [
    "API_VERSION",
    "DEFAULT_TRUST_DOMAIN",
    "REVIEW_ANNOTATION",
    "ROOT_NAMESPACE",
    "IstioOptions",
    "is_trust_domain",
    "principal",
    "render_istio",
    "template_path",
]

API_VERSION: Final = "security.istio.io/v1"
DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
#: Istio's default root namespace, whose policies apply to the whole mesh.
ROOT_NAMESPACE: Final = "istio-system"
#: The annotation listing the rules of a policy that need a human eye, and why.
REVIEW_ANNOTATION: Final = "recommender.io/review"
_NAMESPACE_LABEL: Final = "kubernetes.io/metadata.name"
_HTTP_METHOD: Final = re.compile(r"[A-Z]{1,20}")
#: A trust domain: DNS-like labels (letters, digits, '-', '_'), dots between them.
_TRUST_DOMAIN: Final = re.compile(r"(?=.{1,255}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
#: Path segments taken for ids: numbers, UUIDs, long hexadecimal strings with a digit.
_ID_SEGMENT: Final = re.compile(
    r"[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{16,}"
)
#: Characters Istio reads as wildcards or template operators in a path.
_PATH_SPECIAL: Final = re.compile(r"[*{}]")
#: Istio's HBONE port (ambient mode's tunnel).
_HBONE: Final = MESH_PORTS[15008]
#: Most ports one port range may expand to (Istio lists ports one by one).
_MAX_RANGE: Final = 1024


@dataclass(frozen=True)
class IstioOptions:
    """How the Istio dialect renders.

    Attributes
    ----------
    trust_domain
        The mesh's trust domain, the first part of every principal.
    l7
        Operations name the HTTP methods and paths observed on a port.
    mtls
        ``"strict"``: a PeerAuthentication per namespace with mode STRICT; None: none.
    root_namespace
        The mesh's root namespace: nothing is written there, since its policies would apply
        to every namespace (an allow-nothing there denies the whole mesh).
    """

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    l7: bool = False
    mtls: str | None = None
    root_namespace: str = ROOT_NAMESPACE

    def __post_init__(self) -> None:
        if not is_trust_domain(self.trust_domain):
            raise SynthesisError(
                f"trust domain {self.trust_domain!r} is not a domain name (letters, digits, "
                "'-', '_' and dots)."
            )
        if self.mtls not in (None, "strict"):
            raise SynthesisError(f"mtls must be 'strict' or unset, not {self.mtls!r}.")


def is_trust_domain(text: str) -> bool:
    """Whether ``text`` can be a trust domain (letters, digits, '-', '_', dot-separated).

    Examples
    --------
    >>> is_trust_domain("cluster.local"), is_trust_domain("a/b")
    (True, False)
    """
    return _TRUST_DOMAIN.fullmatch(text) is not None


def principal(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE-style principal Istio gives a workload's certificate.

    Examples
    --------
    >>> principal("cluster.local", "shop", "web")
    'cluster.local/ns/shop/sa/web'
    """
    return f"{trust_domain}/ns/{namespace}/sa/{service_account}"


def template_path(path: str) -> str | None:
    """``path`` with id-like segments (numbers, UUIDs, long hex) as Istio's ``{*}`` template;
    None when Istio cannot match the path exactly (it holds ``*``, ``{`` or ``}``).

    Examples
    --------
    >>> template_path("/orders/1234/items"), template_path("/health"), template_path("/a*")
    ('/orders/{*}/items', '/health', None)
    """
    if _PATH_SPECIAL.search(path):
        return None
    return "/".join("{*}" if _ID_SEGMENT.fullmatch(s) else s for s in path.split("/"))


def render_istio(
    policy_set: PolicySet, options: IstioOptions | None = None
) -> list[dict[str, Any]]:
    """Render ``policy_set`` as Istio AuthorizationPolicies (and PeerAuthentications).

    Parameters
    ----------
    policy_set : PolicySet
        The policies; host policies are not rendered (Istio has none).
    options : IstioOptions, optional
        Trust domain, L7 and mutual TLS.

    Returns
    -------
    list of dict
        Per namespace (sorted): the PeerAuthentication (with ``mtls``), then the
        AuthorizationPolicies in PolicySet order.

    Raises
    ------
    SynthesisError
        If a name, selector or value cannot be expressed, or two objects collide.

    Examples
    --------
    >>> deny = Policy("default-deny", "shop", LabelSelector())
    >>> render_istio(PolicySet((deny,)))[0]["spec"]
    {}
    """
    options = options or IstioOptions()
    out: list[dict[str, Any]] = []
    for namespace in policy_set.namespaces:
        if namespace == options.root_namespace:
            continue  # mesh-wide there: see IstioOptions.root_namespace
        where = f"Namespace {namespace!r}"
        if not is_dns1123_label(namespace):
            raise SynthesisError(f"{where} is not a DNS-1123 label.")
        policies = policy_set.in_namespace(namespace)
        rendered: list[dict[str, Any]] = []
        if options.mtls == "strict":
            labels = next((p.labels for p in policies if _namespace_wide(p)), ())
            rendered.append(_peer_authentication(namespace, labels, where))
        for policy in policies:
            rendered.extend(_render_policy(policy, options))
        names: set[tuple[str, str]] = set()
        for manifest in rendered:
            key = (manifest["kind"], manifest["metadata"]["name"])
            if key in names:
                raise SynthesisError(f"{where}: two {key[0]} objects are named {key[1]!r}.")
            names.add(key)
        out.extend(rendered)
    return out


def _namespace_wide(policy: Policy) -> bool:
    return policy.selector.is_empty


def _peer_authentication(
    namespace: str, labels: tuple[tuple[str, str], ...], where: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "default", "namespace": namespace}
    if labels:
        metadata["labels"] = _pairs(labels, where)
    return {
        "apiVersion": API_VERSION,
        "kind": "PeerAuthentication",
        "metadata": metadata,
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def _pairs(pairs: Iterable[tuple[str, str]], where: str, values: bool = True) -> dict[str, str]:
    out = {}
    for key, value in sorted(pairs):
        if not is_label_key(key):
            raise SynthesisError(f"{where}: key {key!r} is not a valid label key.")
        if values and not is_label_value(value):
            raise SynthesisError(f"{where}: {value!r} is not a valid label value.")
        out[key] = value
    return out


def _selectors(policy: Policy, where: str) -> list[tuple[str, dict[str, str]]]:
    """(name, matchLabels) per AuthorizationPolicy: Istio selects by labels only, so an ``In``
    expression becomes one policy per value."""
    labels = dict(policy.selector.match_labels)
    out = [(policy.name, labels)]
    for key, op, values in policy.selector.match_expressions:
        if op != "In" or not values:
            raise SynthesisError(
                f"{where}: selector {key} {op} cannot be written as Istio matchLabels."
            )
        out = [
            (safe_name(f"{name}-{value}"), {**sel, key: value})
            for name, sel in out
            for value in values
        ]
    return out


def _render_policy(policy: Policy, options: IstioOptions) -> list[dict[str, Any]]:
    where = f"Policy {policy.name!r} in namespace {policy.namespace!r}"
    if not is_dns1123_subdomain(policy.name):
        raise SynthesisError(f"{where}: the name is not a DNS-1123 subdomain.")
    if _namespace_wide(policy) and not policy.ingress:
        if "ingress" not in policy.policy_types:
            return []  # isolates egress only: nothing for Istio
        return [_manifest(policy.name, policy, {}, [], where)]
    rules, review = _rules(policy, options, where)
    if not rules:
        return []  # no ingress the proxy authorises: the namespace's allow-nothing covers it
    out = []
    for name, labels in _selectors(policy, where):
        spec: dict[str, Any] = {}
        if labels:
            spec["selector"] = {"matchLabels": _pairs(labels.items(), where)}
        spec["action"] = "ALLOW"
        spec["rules"] = rules
        out.append(_manifest(name, policy, spec, review, where))
    return out


def _manifest(
    name: str, policy: Policy, spec: dict[str, Any], review: list[str], where: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": policy.namespace}
    if policy.labels:
        metadata["labels"] = _pairs(policy.labels, where)
    annotations = dict(policy.annotations)
    annotations.pop(MESH_PORTS_ANNOTATION, None)  # no AuthorizationPolicy rule for those ports
    if review:
        annotations[REVIEW_ANNOTATION] = "; ".join(review)
    if annotations:
        metadata["annotations"] = _pairs(annotations.items(), where, values=False)
    return {
        "apiVersion": API_VERSION,
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": spec,
    }


@dataclass
class _Identity:
    """What one source identity may do: plain ports (None: every port) and HTTP requests."""

    source: dict[str, Any] | None
    ports: set[int] | None = field(default_factory=set)
    http: dict[int, dict[str, set[str | None]]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    tunnelled: bool = False


#: Source kinds in rule order: principals, namespaces, addresses, any source.
_ORDER: Final = {"principal": 0, "namespace": 1, "ip": 2, "any": 3}


def _rules(
    policy: Policy, options: IstioOptions, where: str
) -> tuple[list[dict[str, Any]], list[str]]:
    identities: dict[tuple[str, ...], _Identity] = {}
    tunnelled: list[Peer] = []  # sources seen only through HBONE (ambient): port unknown
    for rule in policy.ingress:
        if rule.action != "allow":
            raise SynthesisError(
                f"{where} has a {rule.action} rule; the Istio dialect writes ALLOW policies only."
            )
        ports, skipped = _tcp_ports(rule, where)
        if ports == set():
            if any(mesh_port(p.protocol, p.port) == _HBONE for p in rule.ports):
                tunnelled.extend(rule.peers)
            continue  # UDP/SCTP or Istio's own ports only: nothing the proxy authorises
        for peer in rule.peers or (None,):
            key, source, flag = _source(peer, policy, options, where)
            identity = identities.setdefault(key, _Identity(source))
            if flag:
                identity.flags.add(flag)
            if skipped:
                identity.flags.add(skipped)
            http = peer.http if options.l7 and peer is not None else ()
            _add(identity, ports, http, where)
    for peer in tunnelled:
        key, source, flag = _source(peer, policy, options, where)
        if key in identities and not identities[key].tunnelled:
            continue  # its application ports are known from other flows
        identity = identities.setdefault(key, _Identity(source, tunnelled=True))
        identity.ports = None
        identity.flags.update(
            f for f in (flag, "seen only through the HBONE tunnel (ambient): any port") if f
        )
    # Addresses outside the mesh with the same operations share one rule (one source listing
    # their ipBlocks; those with exceptions get a source each).
    merged: dict[tuple[str, ...], tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]] = {}
    order: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for key in sorted(identities, key=lambda k: (_ORDER[k[0]], k[1:])):
        identity = identities[key]
        operations = _operations(identity)
        if key[0] == "ip":
            group = ("ip", repr(operations))
            if group not in merged:
                merged[group] = ([], operations, set())
                order.append((group, group))
            sources, _, flags = merged[group]
            sources.append(identity.source or {})
            flags.update(identity.flags)
            continue
        merged[key] = ([identity.source] if identity.source is not None else [], operations,
                       set(identity.flags))
        order.append((key, key))
    rules: list[dict[str, Any]] = []
    review: list[str] = []
    for key, _ in order:
        sources, operations, flags = merged[key]
        if key[0] == "ip":
            sources = _merge_blocks(sources)
        rule_out: dict[str, Any] = {}
        if sources:
            rule_out["from"] = [{"source": source} for source in sources]
        if operations:
            rule_out["to"] = [{"operation": op} for op in operations]
        if flags:
            review.append(f"rule {len(rules)}: {'; '.join(sorted(flags))}")
        rules.append(rule_out)
    return rules, review


def _merge_blocks(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Address sources without exceptions as one source listing all their blocks."""
    plain = [s for s in sources if "notIpBlocks" not in s]
    out = [s for s in sources if "notIpBlocks" in s]
    if plain:
        blocks = [b for s in plain for b in s["ipBlocks"]]
        out.insert(0, {"ipBlocks": blocks, "notPrincipals": ["*"]})
    return out


def _tcp_ports(rule: Rule, where: str) -> tuple[set[int] | None, str]:
    """The rule's TCP application ports (None: every port), and a flag for what was left out."""
    if not rule.ports:
        return None, ""
    numbers: set[int] = set()
    every = False
    left_out: set[str] = set()
    for spec in rule.ports:
        protocol = spec.protocol.upper()
        if protocol != "TCP":
            left_out.add(protocol)
            continue
        if spec.name is not None:
            raise SynthesisError(f"{where}: named port {spec.name!r} cannot be an Istio port.")
        if spec.port is None:
            every = True
            continue
        end = spec.end_port or spec.port
        if not 1 <= spec.port <= end <= 65535 or end - spec.port >= _MAX_RANGE:
            raise SynthesisError(f"{where}: port range {spec.port}-{end} cannot be listed.")
        numbers.update(p for p in range(spec.port, end + 1) if mesh_port("TCP", p) is None)
    flag = f"{'/'.join(sorted(left_out))} ports left out (not proxied)" if left_out else ""
    return (None if every else numbers), flag


def _source(
    peer: Peer | None, policy: Policy, options: IstioOptions, where: str
) -> tuple[tuple[str, ...], dict[str, Any] | None, str]:
    """(identity key, ``source`` or None for any source, flag)."""
    if peer is None:
        return ("any",), None, "any source"
    if peer.kind == "pods":
        namespace = policy.namespace
        if peer.namespace_selector is not None:
            labels = dict(peer.namespace_selector.match_labels)
            named = labels.get(_NAMESPACE_LABEL)
            if named is None or len(labels) != 1 or peer.namespace_selector.match_expressions:
                raise SynthesisError(
                    f"{where}: a peer selects namespaces by labels, which Istio sources cannot "
                    "express (they name namespaces)."
                )
            namespace = named
        if not is_dns1123_label(namespace):
            raise SynthesisError(f"{where}: namespace {namespace!r} is not a DNS-1123 label.")
        account = peer.mesh_account or peer.service_account
        if account is not None and is_dns1123_subdomain(account):
            name = principal(options.trust_domain, namespace, account)
            return ("principal", name), {"principals": [name]}, ""
        who = f"{namespace}/{peer.workload}" if peer.workload else f"pods of {namespace}"
        flag = f"service account of {who} unknown: any workload of namespace {namespace}"
        return ("namespace", namespace), {"namespaces": [namespace]}, flag
    if peer.kind == "cidr":
        if peer.cidr is None:
            raise SynthesisError(f"{where} has a CIDR peer without a CIDR.")
        try:
            network = ipaddress.ip_network(peer.cidr, strict=False)
            excepted = [str(ipaddress.ip_network(e, strict=False)) for e in peer.except_]
        except ValueError:
            raise SynthesisError(f"{where}: {peer.cidr!r} is not a CIDR.") from None
        source: dict[str, Any] = {"ipBlocks": [str(network)]}
        if excepted:
            source["notIpBlocks"] = excepted
        source["notPrincipals"] = ["*"]
        nodes = set(peer.entities) & {"host", "remote-node", "kube-apiserver"}
        what = "nodes" if nodes else "outside the mesh"
        flag = f"sources by address ({what}, plain text only)"
        return ("ip", str(network), *excepted), source, flag
    if peer.kind == "entity" and peer.entity in ("world", "all"):
        return ("any",), None, f"entity {peer.entity}: any source"
    raise SynthesisError(f"{where} has a {peer.kind} peer Istio cannot name.")


def _add(
    identity: _Identity, ports: set[int] | None, http: tuple[HttpRule, ...], where: str
) -> None:
    if ports is None or identity.ports is None:
        identity.ports = None
        identity.http.clear()
        return
    requests: dict[int, dict[str, set[str | None]]] = {}
    for item in http:
        if item.protocol.upper() != "TCP" or item.port not in ports:
            continue
        if not _HTTP_METHOD.fullmatch(item.method):
            raise SynthesisError(f"{where}: {item.method!r} is not an HTTP method.")
        path = None if item.path is None else template_path(item.path)
        if item.path is not None and path is None:
            identity.flags.add("a path Istio cannot match exactly: method only")
        requests.setdefault(item.port, {}).setdefault(item.method, set()).add(path)
    for port in sorted(ports):
        if port in requests and port not in identity.ports:
            merged = identity.http.setdefault(port, {})
            for method, paths in requests[port].items():
                merged.setdefault(method, set()).update(paths)
        else:  # plain TCP for this peer: any request on the port
            identity.ports.add(port)
            identity.http.pop(port, None)


def _operations(identity: _Identity) -> list[dict[str, Any]]:
    if identity.ports is None:
        return []
    out: list[dict[str, Any]] = []
    if identity.ports:
        out.append({"ports": [str(p) for p in sorted(identity.ports)]})
    for port in sorted(identity.http):
        by_paths: dict[tuple[str, ...], list[str]] = {}
        for method, seen in identity.http[port].items():
            key = () if None in seen else tuple(sorted(p for p in seen if p is not None))
            by_paths.setdefault(key, []).append(method)
        for listed, methods in sorted(by_paths.items(), key=lambda kv: (sorted(kv[1]), kv[0])):
            operation: dict[str, Any] = {"ports": [str(port)], "methods": sorted(methods)}
            if listed:
                operation["paths"] = list(listed)
            out.append(operation)
    return out
