"""Render guardrails as Calico tiers (``projectcalico.org/v3``).

Admin guardrails become GlobalNetworkPolicies in a Tier named after the file (order 100,
before Calico's ``kube-admin`` tier at 1,000 and the ``default`` tier at 1,000,000 where
Kubernetes NetworkPolicies live); baseline guardrails go to ``<name>-baseline`` (order
5,000,000, after the default tier). Both tiers have ``defaultAction: Pass``, so a pod a
guardrail selects but no rule matches goes on to the next tier instead of hitting the
end-of-tier deny. A guardrail's ``priority`` is its policy ``order``.

A Calico rule has one protocol and one source or destination selector, so a guardrail rule
with several peers or protocols becomes consecutive Calico rules with the same action, which
means the same. Selectors are written in Calico's expression syntax with quoted values.
"""

from __future__ import annotations

from typing import Any, Final

from ..errors import UnsupportedDialectError
from ..policy.model import LabelSelector, Peer, PortSpec, Rule
from ._common import metadata
from .model import Guardrail, Guardrails

__all__ = ["calico_selector", "render_calico_guardrails"]

API: Final = "projectcalico.org/v3"
ADMIN_ORDER: Final = 100
BASELINE_ORDER: Final = 5_000_000
_ACTIONS: Final = {"allow": "Allow", "deny": "Deny", "pass": "Pass"}


def calico_selector(selector: LabelSelector | None) -> str:
    """A label selector in Calico syntax; the empty selector (or None) is ``all()``.

    Examples
    --------
    >>> calico_selector(LabelSelector((("app", "web"),), (("tier", "In", ("a", "b")),)))
    "app == 'web' && tier in {'a', 'b'}"
    """
    if selector is None or selector.is_empty:
        return "all()"
    terms = [f"{k} == '{v}'" for k, v in selector.match_labels]
    for key, op, values in selector.match_expressions:
        listed = ", ".join(f"'{v}'" for v in values)
        terms.append(
            {
                "In": f"{key} in {{{listed}}}",
                "NotIn": f"{key} not in {{{listed}}}",
                "Exists": f"has({key})",
                "DoesNotExist": f"!has({key})",
            }[op]
        )
    return " && ".join(terms)


def render_calico_guardrails(guardrails: Guardrails) -> list[dict[str, Any]]:
    """The Tiers and one GlobalNetworkPolicy per guardrail.

    Examples
    --------
    >>> from recommender.guardrails import parse_guardrails
    >>> g = parse_guardrails('''
    ... guardrails:
    ...   - {name: no-metadata, priority: 5,
    ...      egress: [{action: deny, to: [{networks: [169.254.169.254/32]}]}]}''')
    >>> [(d["kind"], d["metadata"]["name"]) for d in render_calico_guardrails(g)]
    [('Tier', 'guardrails'), ('GlobalNetworkPolicy', 'guardrails.no-metadata')]
    """
    out: list[dict[str, Any]] = []
    for tier, order, members in (
        (guardrails.name, ADMIN_ORDER, guardrails.admin),
        (f"{guardrails.name}-baseline", BASELINE_ORDER, guardrails.baseline),
    ):
        if not members:
            continue
        out.append({"apiVersion": API, "kind": "Tier", "metadata": metadata(tier, None),
                    "spec": {"order": order, "defaultAction": "Pass"}})
        out.extend(_policy(tier, g) for g in members)
    return out


def _policy(tier: str, guardrail: Guardrail) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tier": tier,
        "order": guardrail.priority,
        "namespaceSelector": calico_selector(guardrail.subject.namespaces),
        "selector": calico_selector(guardrail.subject.pods),
        "types": [d.capitalize() for d in ("ingress", "egress") if getattr(guardrail, d)],
    }
    where = f"Guardrail {guardrail.name!r}"
    for direction in ("ingress", "egress"):
        rules = getattr(guardrail, direction)
        if rules:
            spec[direction] = [r for rule in rules for r in _rules(rule, where)]
    return {"apiVersion": API, "kind": "GlobalNetworkPolicy",
            "metadata": metadata(f"{tier}.{guardrail.name}", guardrail), "spec": spec}


def _rules(rule: Rule, where: str) -> list[dict[str, Any]]:
    """Consecutive Calico rules (same action) for one guardrail rule."""
    side = "source" if rule.direction == "ingress" else "destination"
    cidrs = [p.cidr for p in rule.peers if p.kind == "cidr" and p.cidr]
    matches: list[dict[str, Any]] = [_match(p) for p in rule.peers if p.kind == "pods"]
    if cidrs:
        matches.append({"nets": cidrs})
    by_protocol: dict[str, list[PortSpec]] = {}
    for port in rule.ports:
        by_protocol.setdefault(port.protocol, []).append(port)
    out = []
    for match in matches:
        if not by_protocol:
            out.append({"action": _ACTIONS[rule.action], side: dict(match)})
            continue
        for protocol, ports in sorted(by_protocol.items()):
            entry: dict[str, Any] = {"action": _ACTIONS[rule.action], "protocol": protocol}
            entry[side] = dict(match)
            destination = entry.setdefault("destination", {})
            destination["ports"] = [_port(p) for p in ports]
            out.append(entry)
    if not out:  # pragma: no cover - the loader requires peers
        raise UnsupportedDialectError(f"{where}: a rule without peers.")
    return out


def _match(peer: Peer) -> dict[str, Any]:
    out = {"namespaceSelector": calico_selector(peer.namespace_selector)}
    if peer.pod_selector is not None:
        out["selector"] = calico_selector(peer.pod_selector)
    return out


def _port(port: PortSpec) -> int | str:
    if port.name is not None:
        return port.name
    if port.end_port:
        return f"{port.port}:{port.end_port}"
    return port.port or 0
