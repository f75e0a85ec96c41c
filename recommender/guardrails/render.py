"""Render guardrails as ClusterNetworkPolicy (v1alpha2) or AdminNetworkPolicy (v1alpha1).

Both APIs state guardrails directly: a guardrail is one object with its tier, priority, subject
and ordered rules. ClusterNetworkPolicy (``policy.networking.k8s.io/v1alpha2``) has tiers
``Admin`` and ``Baseline`` and actions ``Accept``/``Deny``/``Pass``; the older
AdminNetworkPolicy (Admin tier, ``Allow``/``Deny``/``Pass``) and the singleton
BaselineAdminNetworkPolicy named ``default`` (``Allow``/``Deny``, one subject) are
``v1alpha1``. :func:`render_guardrails` picks the renderer by format name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from ..config import RecommendConfig
from ..errors import UnsupportedDialectError
from ..policy.kubernetes import _selector
from ..policy.model import LabelSelector, Peer, PortSpec, Rule
from ._common import metadata, object_name
from .model import Guardrails, Subject

__all__ = [
    "FORMATS",
    "guardrails_format",
    "render_admin_network_policies",
    "render_cluster_network_policies",
    "render_guardrails",
]

CNP_API: Final = "policy.networking.k8s.io/v1alpha2"
ANP_API: Final = "policy.networking.k8s.io/v1alpha1"
_CNP_ACTIONS: Final = {"allow": "Accept", "deny": "Deny", "pass": "Pass"}
_ANP_ACTIONS: Final = {"allow": "Allow", "deny": "Deny", "pass": "Pass"}


def render_guardrails(guardrails: Guardrails, format: str = "cluster-network-policy"
                      ) -> list[dict[str, Any]]:
    """Render guardrails in one of :data:`FORMATS`.

    Parameters
    ----------
    guardrails : Guardrails
        The loaded guardrails.
    format : str
        ``cluster-network-policy`` (default), ``admin-network-policy``, ``calico`` or
        ``cilium``.

    Returns
    -------
    list of dict
        Cluster-scoped manifests in a stable order.

    Raises
    ------
    UnsupportedDialectError
        If the format is unknown or cannot express a guardrail (the message says which).
    """
    renderer = _renderers().get(format)
    if renderer is None:
        raise UnsupportedDialectError(
            f"Unknown guardrails format {format!r}; expected one of {', '.join(FORMATS)}."
        )
    return renderer(guardrails)


def _renderers() -> dict[str, Callable[[Guardrails], list[dict[str, Any]]]]:
    from .calico import render_calico_guardrails
    from .cilium import render_cilium_guardrails

    return {
        "cluster-network-policy": render_cluster_network_policies,
        "admin-network-policy": render_admin_network_policies,
        "calico": render_calico_guardrails,
        "cilium": render_cilium_guardrails,
    }


FORMATS: Final = ("cluster-network-policy", "admin-network-policy", "calico", "cilium")


def _subject(subject: Subject, where: str) -> dict[str, Any]:
    if subject.pods is None:
        return {"namespaces": _selector(subject.namespaces, where)}
    return {
        "pods": {
            "namespaceSelector": _selector(subject.namespaces, where),
            "podSelector": _selector(subject.pods, where),
        }
    }


def _peer(peer: Peer, where: str) -> dict[str, Any]:
    if peer.kind == "cidr":
        return {"networks": [peer.cidr]}
    namespaces = peer.namespace_selector or LabelSelector()
    if peer.pod_selector is None:
        return {"namespaces": _selector(namespaces, where)}
    return {
        "pods": {
            "namespaceSelector": _selector(namespaces, where),
            "podSelector": _selector(peer.pod_selector, where),
        }
    }


def _protocols(ports: tuple[PortSpec, ...]) -> list[dict[str, Any]]:
    """ClusterNetworkPolicy ``protocols`` entries."""
    out: list[dict[str, Any]] = []
    for port in ports:
        if port.name is not None:
            out.append({"destinationNamedPort": port.name})
        elif port.end_port:
            out.append(
                {port.protocol.lower(): {"destinationPort": {
                    "range": {"start": port.port, "end": port.end_port}}}}
            )
        else:
            out.append({port.protocol.lower(): {"destinationPort": {"number": port.port}}})
    return out


def _anp_ports(ports: tuple[PortSpec, ...], where: str) -> list[dict[str, Any]]:
    """AdminNetworkPolicy ``ports`` entries (no named ports in v1alpha1's standard channel)."""
    out: list[dict[str, Any]] = []
    for port in ports:
        if port.name is not None:
            raise UnsupportedDialectError(
                f"{where}: named port {port.name!r} cannot be expressed in AdminNetworkPolicy "
                "v1alpha1; use the cluster-network-policy format or a port number."
            )
        if port.end_port:
            out.append({"portRange": {"protocol": port.protocol, "start": port.port,
                                      "end": port.end_port}})
        else:
            out.append({"portNumber": {"protocol": port.protocol, "port": port.port}})
    return out


def _rule(rule: Rule, where: str, actions: dict[str, str], ports_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rule.comment, "action": actions[rule.action]}
    out["from" if rule.direction == "ingress" else "to"] = [_peer(p, where) for p in rule.peers]
    if rule.ports:
        out[ports_key] = (
            _protocols(rule.ports) if ports_key == "protocols" else _anp_ports(rule.ports, where)
        )
    return out


def render_cluster_network_policies(guardrails: Guardrails) -> list[dict[str, Any]]:
    """One ClusterNetworkPolicy (v1alpha2) per guardrail, Admin then Baseline by priority.

    Examples
    --------
    >>> from recommender.guardrails import parse_guardrails
    >>> g = parse_guardrails('''
    ... guardrails:
    ...   - {name: no-metadata, priority: 5,
    ...      egress: [{action: deny, to: [{networks: [169.254.169.254/32]}]}]}''')
    >>> doc = render_cluster_network_policies(g)[0]
    >>> doc["kind"], doc["spec"]["tier"], doc["spec"]["egress"][0]["action"]
    ('ClusterNetworkPolicy', 'Admin', 'Deny')
    """
    out = []
    for guardrail in guardrails.guardrails:
        name = object_name(guardrails, guardrail)
        where = f"Guardrail {guardrail.name!r}"
        spec: dict[str, Any] = {
            "tier": "Admin" if guardrail.tier == "admin" else "Baseline",
            "priority": guardrail.priority,
            "subject": _subject(guardrail.subject, where),
        }
        for direction in ("ingress", "egress"):
            rules = getattr(guardrail, direction)
            if rules:
                spec[direction] = [_rule(r, where, _CNP_ACTIONS, "protocols") for r in rules]
        out.append({"apiVersion": CNP_API, "kind": "ClusterNetworkPolicy",
                    "metadata": metadata(name, guardrail), "spec": spec})
    return out


def render_admin_network_policies(guardrails: Guardrails) -> list[dict[str, Any]]:
    """AdminNetworkPolicies and the BaselineAdminNetworkPolicy ``default`` (v1alpha1).

    Baseline guardrails are merged, by priority, into the single BaselineAdminNetworkPolicy,
    which has one subject: they must all have the same subject.

    Raises
    ------
    UnsupportedDialectError
        If baseline guardrails have different subjects or a rule uses a named port.
    """
    out = []
    for guardrail in guardrails.admin:
        where = f"Guardrail {guardrail.name!r}"
        spec: dict[str, Any] = {
            "priority": guardrail.priority,
            "subject": _subject(guardrail.subject, where),
        }
        for direction in ("ingress", "egress"):
            rules = getattr(guardrail, direction)
            if rules:
                spec[direction] = [_rule(r, where, _ANP_ACTIONS, "ports") for r in rules]
        out.append({"apiVersion": ANP_API, "kind": "AdminNetworkPolicy",
                    "metadata": metadata(object_name(guardrails, guardrail), guardrail),
                    "spec": spec})
    baseline = guardrails.baseline
    if baseline:
        subjects = {g.subject for g in baseline}
        if len(subjects) > 1:
            raise UnsupportedDialectError(
                "BaselineAdminNetworkPolicy has a single subject, but the baseline guardrails "
                f"{', '.join(repr(g.name) for g in baseline)} select different pods; give them "
                "one subject or use the cluster-network-policy format."
            )
        spec = {"subject": _subject(baseline[0].subject, "baseline guardrails")}
        for direction in ("ingress", "egress"):
            rules = [
                _rule(replace(r, comment=f"{g.name}-{r.comment}"[:100]), f"Guardrail {g.name!r}",
                      _ANP_ACTIONS, "ports")
                for g in baseline for r in getattr(g, direction)
            ]
            if rules:
                if len(rules) > 100:
                    raise UnsupportedDialectError(
                        f"The baseline guardrails have {len(rules)} {direction} rules; "
                        "BaselineAdminNetworkPolicy allows 100."
                    )
                spec[direction] = rules
        out.append({"apiVersion": ANP_API, "kind": "BaselineAdminNetworkPolicy",
                    "metadata": metadata("default", None), "spec": spec})
    return out


def guardrails_format(config: RecommendConfig, dialect: str) -> str:
    """How guardrails are rendered in ``dialect``'s tree: ``config.guardrails_format`` when
    set, else the dialect's own form."""
    if config.guardrails_format is not None:
        return config.guardrails_format
    return {"calico": "calico", "cilium": "cilium"}.get(dialect, "cluster-network-policy")
