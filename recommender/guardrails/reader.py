"""Read ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy manifests.

The inverse of :func:`~recommender.guardrails.render.render_cluster_network_policies` and
:func:`~recommender.guardrails.render.render_admin_network_policies`: manifests already in a
cluster (or in an output tree) become :class:`~.model.Guardrails` that
:func:`~recommender.evaluation.precedence.evaluate_stack` can evaluate with the NetworkPolicies, so
``recommend evaluate`` judges the whole stack. Accept and Allow both mean ``allow``; a
BaselineAdminNetworkPolicy becomes one baseline guardrail of priority 0. Node and domain-name
peers, which guardrails do not model, raise :class:`~recommender.errors.UnsupportedDialectError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ..policy.model import Action, Direction, LabelSelector, Peer, PolicySet, PortSpec, Rule
from .model import Guardrail, Guardrails, Subject, Tier

__all__ = ["CLUSTER_POLICY_KINDS", "parse_cluster_policies", "read_policy_stack"]

#: The kinds this module reads (all in group policy.networking.k8s.io).
CLUSTER_POLICY_KINDS: Final = (
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
)
_ACTIONS: Final[dict[str, Action]] = {
    "Accept": "allow", "Allow": "allow", "Deny": "deny", "Pass": "pass",
}
_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_cluster_policies(docs: Iterable[Mapping[str, Any]], name: str = "cluster"
                           ) -> Guardrails:
    """Guardrails from ClusterNetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy.

    Parameters
    ----------
    docs : iterable of mapping
        Manifests of those kinds (others are ignored).
    name : str
        The name of the resulting set (prefixes reasons).

    Returns
    -------
    Guardrails

    Raises
    ------
    InputError
        If a manifest is malformed.
    UnsupportedDialectError
        For node or domain-name peers.

    Examples
    --------
    >>> from recommender.guardrails import parse_guardrails
    >>> from recommender.guardrails.render import render_cluster_network_policies
    >>> g = parse_guardrails('''
    ... guardrails:
    ...   - {name: no-metadata, priority: 5,
    ...      egress: [{action: deny, to: [{networks: [169.254.169.254/32]}]}]}''')
    >>> back = parse_cluster_policies(render_cluster_network_policies(g))
    >>> back.guardrails[0].egress == g.guardrails[0].egress
    True
    """
    out = []
    for doc in docs:
        kind = doc.get("kind")
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        if kind not in CLUSTER_POLICY_KINDS or group != "policy.networking.k8s.io":
            continue
        meta = doc.get("metadata") or {}
        object_name = meta.get("name")
        if not isinstance(object_name, str) or not object_name:
            raise InputError(f"A {kind} has no metadata.name.")
        where = f"{kind} {object_name!r}"
        spec = _mapping(doc.get("spec"), f"{where} spec")
        tier: Tier = "admin"
        priority = 0
        if kind == "ClusterNetworkPolicy":
            tier = "baseline" if spec.get("tier") == "Baseline" else "admin"
            if spec.get("tier") not in ("Admin", "Baseline"):
                raise InputError(f"{where}: spec.tier must be Admin or Baseline.")
        if kind == "BaselineAdminNetworkPolicy":
            tier = "baseline"
        else:
            raw_priority = spec.get("priority")
            if isinstance(raw_priority, bool) or not isinstance(raw_priority, int):
                raise InputError(f"{where}: spec.priority must be a whole number.")
            priority = raw_priority
        ports_key = "protocols" if kind == "ClusterNetworkPolicy" else "ports"
        rules: dict[Direction, tuple[Rule, ...]] = {
            direction: tuple(
                _rule(raw, direction, ports_key, f"{where} {direction}[{i}]")
                for i, raw in enumerate(_list(spec.get(direction), f"{where} {direction}"))
            )
            for direction in ("ingress", "egress")
        }
        annotations = meta.get("annotations") or {}
        out.append(
            Guardrail(
                object_name,
                priority,
                _subject(_mapping(spec.get("subject"), f"{where} subject"), where),
                tier,
                rules["ingress"],
                rules["egress"],
                str(annotations.get("recommender.io/description", "")),
            )
        )
    return Guardrails(name, tuple(out))


def read_policy_stack(
    paths: str | Path | Iterable[str | Path],
) -> tuple[PolicySet, Guardrails | None]:
    """NetworkPolicies and cluster network policies (as guardrails) from YAML files and folders.

    Returns
    -------
    (PolicySet, Guardrails or None)
        The NetworkPolicies, and the ClusterNetworkPolicy / AdminNetworkPolicy /
        BaselineAdminNetworkPolicy objects found (None when there are none).

    Raises
    ------
    InputError
        As :func:`~recommender.policy.reader.read_policies`.
    UnsupportedDialectError
        For other policy kinds (Calico, Cilium) or peers guardrails do not model.
    """
    from ..policy.reader import iter_manifests, read_policies

    items = [paths] if isinstance(paths, str | Path) else list(paths)
    policy_set = read_policies(items, skip_kinds=CLUSTER_POLICY_KINDS)
    docs = [doc for _, doc in iter_manifests(items) if doc.get("kind") in CLUSTER_POLICY_KINDS]
    return policy_set, (parse_cluster_policies(docs) if docs else None)


def _mapping(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping.")
    return raw


def _list(raw: object, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"{where}: expected a list.")
    return raw


def _selector(raw: object, where: str) -> LabelSelector:
    data = _mapping(raw if raw is not None else {}, where)
    labels = data.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise InputError(f"{where}: matchLabels must be a mapping.")
    expressions = []
    for item in _list(data.get("matchExpressions"), f"{where} matchExpressions"):
        item = _mapping(item, f"{where} matchExpressions")
        op = item.get("operator")
        if op not in _OPERATORS:
            raise InputError(f"{where}: selector operator {op!r} is not one of In, NotIn, ...")
        values = tuple(sorted(str(v) for v in _list(item.get("values"), where)))
        expressions.append((str(item.get("key")), str(op), values))
    return LabelSelector(
        tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(sorted(expressions))
    )


def _subject(raw: dict[str, Any], where: str) -> Subject:
    if "namespaces" in raw:
        return Subject(_selector(raw["namespaces"], f"{where} subject.namespaces"))
    if "pods" in raw:
        pods = _mapping(raw["pods"], f"{where} subject.pods")
        return Subject(
            _selector(pods.get("namespaceSelector"), f"{where} subject.pods"),
            _selector(pods.get("podSelector"), f"{where} subject.pods"),
        )
    raise InputError(f"{where}: subject needs namespaces or pods.")


def _rule(raw: object, direction: Direction, ports_key: str, where: str) -> Rule:
    data = _mapping(raw, where)
    action = _ACTIONS.get(str(data.get("action")))
    if action is None:
        raise InputError(f"{where}: action {data.get('action')!r} is not Accept, Allow, Deny "
                         "or Pass.")
    peers: list[Peer] = []
    for peer in _list(data.get("from" if direction == "ingress" else "to"), where):
        peers.extend(_peers(_mapping(peer, where), where))
    if not peers:
        raise InputError(f"{where}: a rule needs at least one peer.")
    ports = tuple(
        _port(_mapping(p, where), ports_key, where) for p in _list(data.get(ports_key), where)
    )
    return Rule(direction, tuple(peers), ports, action, comment=str(data.get("name") or ""))


def _peers(raw: dict[str, Any], where: str) -> list[Peer]:
    if "namespaces" in raw:
        return [Peer("pods", namespace_selector=_selector(raw["namespaces"], where))]
    if "pods" in raw:
        pods = _mapping(raw["pods"], where)
        return [Peer("pods", namespace_selector=_selector(pods.get("namespaceSelector"), where),
                     pod_selector=_selector(pods.get("podSelector"), where))]
    if "networks" in raw:
        out = []
        for cidr in _list(raw["networks"], where):
            try:
                out.append(Peer("cidr", cidr=str(ipaddress.ip_network(str(cidr), strict=False))))
            except ValueError:
                raise InputError(f"{where}: {cidr!r} is not a CIDR.") from None
        return out
    raise UnsupportedDialectError(
        f"{where}: peers of kind {', '.join(sorted(raw)) or 'none'} (nodes, domain names) are "
        "not evaluated; only namespaces, pods and networks are."
    )


def _port(raw: dict[str, Any], key: str, where: str) -> PortSpec:
    try:
        if key == "protocols":  # ClusterNetworkPolicy v1alpha2
            if "destinationNamedPort" in raw:
                return PortSpec("TCP", name=str(raw["destinationNamedPort"]))
            (protocol, body), = raw.items()
            port = (body or {}).get("destinationPort") or {}
            if "range" in port:
                return PortSpec(protocol.upper(), int(port["range"]["start"]),
                                int(port["range"]["end"]))
            if "number" in port:
                return PortSpec(protocol.upper(), int(port["number"]))
            return PortSpec(protocol.upper())
        if "portNumber" in raw:  # AdminNetworkPolicy v1alpha1
            return PortSpec(str(raw["portNumber"].get("protocol", "TCP")),
                            int(raw["portNumber"]["port"]))
        if "portRange" in raw:
            r = raw["portRange"]
            return PortSpec(str(r.get("protocol", "TCP")), int(r["start"]), int(r["end"]))
        if "namedPort" in raw:
            return PortSpec("TCP", name=str(raw["namedPort"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    raise InputError(f"{where}: port {raw!r} is not understood.")
