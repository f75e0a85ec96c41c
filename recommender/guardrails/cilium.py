"""Render admin guardrails as Cilium CiliumClusterwideNetworkPolicies (``cilium.io/v2``).

Cilium has no order between policies: a deny rule (``ingressDeny``/``egressDeny``) wins over
every allow rule, whatever policy holds it. So a guardrail's deny rules are rendered as deny
rules, and the allow or pass rules that precede a deny rule (earlier in the same guardrail, or
in a guardrail of lower priority that governs every pod) become exceptions carved out of it
(``NotIn`` on the namespace, ``except`` on a CIDR) when they cover all its ports; an exception
on only some of its ports cannot be carved out, so there the deny wins (stricter). Allow rules
are rendered as allow rules; pass rules have no Cilium form of their own (NetworkPolicy
decides anyway). Every policy sets ``enableDefaultDeny: false`` for both directions, so a
guardrail never puts pods into default-deny mode: only the application's policies do.

Not expressible, and refused with :class:`~recommender.errors.UnsupportedDialectError`:
baseline guardrails (a deny would override the application's allows) and exceptions that are
not a namespace list or label (or a CIDR inside the denied CIDR).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from ..errors import UnsupportedDialectError
from ..policy.model import LabelSelector, Peer, PortSpec, Rule
from ._common import metadata, object_name
from .model import NAMESPACE_NAME_LABEL, Guardrail, Guardrails, Subject

__all__ = ["cilium_selector", "deny_exceptions", "render_cilium_guardrails"]

API: Final = "cilium.io/v2"
#: How Cilium names a pod's namespace and the namespace's labels in endpoint selectors.
NAMESPACE_KEY: Final = "k8s:io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX: Final = "k8s:io.cilium.k8s.namespace.labels."


def _namespace_key(key: str) -> str:
    return NAMESPACE_KEY if key == NAMESPACE_NAME_LABEL else NAMESPACE_LABELS_PREFIX + key


def cilium_selector(
    namespaces: LabelSelector | None,
    pods: LabelSelector | None,
    extra: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
) -> dict[str, Any]:
    """An endpoint selector for pods matching ``pods`` in namespaces matching ``namespaces``.

    Examples
    --------
    >>> cilium_selector(LabelSelector((("env", "prod"),)), LabelSelector((("app", "db"),)))
    {'matchLabels': {'app': 'db', 'k8s:io.cilium.k8s.namespace.labels.env': 'prod'}}
    """
    labels: dict[str, str] = {}
    expressions: list[tuple[str, str, tuple[str, ...]]] = []
    if namespaces is not None:
        labels.update({_namespace_key(k): v for k, v in namespaces.match_labels})
        expressions += [(_namespace_key(k), op, vs) for k, op, vs in namespaces.match_expressions]
    if pods is not None:
        labels.update(dict(pods.match_labels))
        expressions += list(pods.match_expressions)
    expressions += list(extra)
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = dict(sorted(labels.items()))
    if expressions:
        out["matchExpressions"] = [
            {"key": k, "operator": op, **({"values": list(vs)} if vs else {})}
            for k, op, vs in sorted(expressions)
        ]
    return out


def render_cilium_guardrails(guardrails: Guardrails) -> list[dict[str, Any]]:
    """One CiliumClusterwideNetworkPolicy per admin guardrail with deny or allow rules.

    Raises
    ------
    UnsupportedDialectError
        For baseline guardrails and exceptions Cilium cannot express (see the module doc).

    Examples
    --------
    >>> from recommender.guardrails import parse_guardrails
    >>> g = parse_guardrails('''
    ... guardrails:
    ...   - {name: no-metadata, priority: 5,
    ...      egress: [{action: deny, to: [{networks: [169.254.169.254/32]}]}]}''')
    >>> render_cilium_guardrails(g)[0]["spec"]["egressDeny"]
    [{'toCIDRSet': [{'cidr': '169.254.169.254/32'}]}]
    """
    if guardrails.baseline:
        raise UnsupportedDialectError(
            f"Guardrail {guardrails.baseline[0].name!r} is in the baseline tier, which Cilium "
            "cannot express (its deny rules would override the application's allow rules); "
            "render baseline guardrails as cluster-network-policy or calico."
        )
    out = []
    for guardrail in guardrails.admin:
        spec: dict[str, Any] = {
            "endpointSelector": cilium_selector(guardrail.subject.namespaces,
                                                guardrail.subject.pods),
            "enableDefaultDeny": {"egress": False, "ingress": False},
        }
        if guardrail.description:
            spec["description"] = guardrail.description
        for direction in ("ingress", "egress"):
            rules: tuple[Rule, ...] = getattr(guardrail, direction)
            allow = [_rule(r, []) for r in rules if r.action == "allow"]
            deny = [
                _rule(r, deny_exceptions(guardrails, guardrail, r), guardrail)
                for r in rules
                if r.action == "deny"
            ]
            if allow:
                spec[direction] = allow
            if deny:
                spec[f"{direction}Deny"] = deny
        if len(spec) > 2 + bool(guardrail.description):
            out.append({"apiVersion": API, "kind": "CiliumClusterwideNetworkPolicy",
                        "metadata": metadata(object_name(guardrails, guardrail), guardrail),
                        "spec": spec})
    return out


def deny_exceptions(guardrails: Guardrails, guardrail: Guardrail, rule: Rule) -> list[Rule]:
    """The allow and pass rules that take precedence over deny rule ``rule`` in Cilium form.

    They are the allow/pass rules of the same direction placed before it in its guardrail, and
    those of admin guardrails of lower priority that govern every pod (an empty subject), when
    they cover all of the deny rule's ports (an exception on some ports only cannot be carved
    out of a Cilium deny rule: the deny then wins, which is stricter).
    """
    direction = rule.direction
    rules: tuple[Rule, ...] = getattr(guardrail, direction)
    before = list(rules[: rules.index(rule)])
    for other in guardrails.admin:
        if other is guardrail:
            break
        if other.subject == Subject() and other.priority < guardrail.priority:
            before = list(getattr(other, direction)) + before
    return [
        r for r in before
        if r.action in ("allow", "pass")
        and (not r.ports or (bool(rule.ports) and set(rule.ports) <= set(r.ports)))
    ]


def _rule(rule: Rule, exceptions: list[Rule], guardrail: Guardrail | None = None
          ) -> dict[str, Any]:
    """A Cilium rule, with ``exceptions`` (peers of earlier allow/pass rules) carved out."""
    where = f"Guardrail {guardrail.name!r} rule {rule.comment!r}" if guardrail else ""
    pod_exempt = _pod_exceptions([p for r in exceptions for p in r.peers if p.kind == "pods"],
                                 where)
    cidr_exempt = [p.cidr for r in exceptions for p in r.peers if p.kind == "cidr" and p.cidr]
    endpoints = [
        cilium_selector(p.namespace_selector, p.pod_selector, pod_exempt)
        for p in rule.peers if p.kind == "pods"
    ]
    cidrs = [_cidr_set(p, cidr_exempt, where) for p in rule.peers if p.kind == "cidr"]
    out: dict[str, Any] = {}
    ingress = rule.direction == "ingress"
    if endpoints:
        out["fromEndpoints" if ingress else "toEndpoints"] = endpoints
    if cidrs:
        out["toCIDRSet"] = cidrs  # networks are egress peers only (the loader checks)
    if rule.ports:
        out["toPorts"] = [{"ports": [_port(p) for p in rule.ports]}]
    return out


def _pod_exceptions(peers: list[Peer], where: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """NotIn requirements that leave out every exception peer (one namespace term each)."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    for peer in peers:
        selector = peer.namespace_selector or LabelSelector()
        terms = list(selector.match_labels) + list(selector.match_expressions)
        if peer.pod_selector is not None or len(terms) != 1:
            raise UnsupportedDialectError(
                f"{where}: an exception for pods selected by more than one namespace label "
                "cannot be carved out of a Cilium deny rule; name the namespaces "
                "(namespaceNames) or select them by one label."
            )
        term = terms[0]
        if len(term) == 2:
            key, value = term[0], term[1]
            out.append((_namespace_key(key), "NotIn", (str(value),)))
        else:
            key, op, values = term
            if op != "In":
                raise UnsupportedDialectError(
                    f"{where}: only In or equality namespace selectors can be exceptions."
                )
            out.append((_namespace_key(key), "NotIn", values))
    return tuple(sorted(set(out)))


def _cidr_set(peer: Peer, exempt: list[str], where: str) -> dict[str, Any]:
    network = ipaddress.ip_network(peer.cidr or "")
    inside = sorted(
        e for e in exempt
        if ipaddress.ip_network(e).version == network.version
        and ipaddress.ip_network(e).subnet_of(network)  # type: ignore[arg-type,unused-ignore]
        and ipaddress.ip_network(e) != network
    )
    overlapping = [e for e in exempt if e not in inside
                   and ipaddress.ip_network(e).overlaps(network)]
    if overlapping:
        raise UnsupportedDialectError(
            f"{where}: exception {overlapping[0]} is not strictly inside {peer.cidr}; Cilium "
            "cannot express it."
        )
    out: dict[str, Any] = {"cidr": str(network)}
    if inside:
        out["except"] = inside
    return out


def _port(port: PortSpec) -> dict[str, Any]:
    if port.name is not None:
        return {"port": port.name, "protocol": port.protocol}
    out: dict[str, Any] = {"port": str(port.port), "protocol": port.protocol}
    if port.end_port:
        out["endPort"] = port.end_port
    return out
