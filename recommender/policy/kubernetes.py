"""Render a :class:`~recommender.policy.model.PolicySet` as Kubernetes NetworkPolicy manifests.

One ``networking.k8s.io/v1`` NetworkPolicy per :class:`~recommender.policy.model.Policy`, in
PolicySet order, with keys in the order ``kubectl`` users expect (apiVersion, kind, metadata,
spec; podSelector, policyTypes, ingress, egress). Rules, peers and ports keep the model's order
exactly: the model is sorted by whoever built it, and merging rules is synthesis' job.

What Kubernetes cannot express raises :class:`~recommender.errors.SynthesisError` instead of
being dropped silently: entity peers (synthesis turns them into CIDRs first), deny and pass
rules, and protocols other than TCP, UDP and SCTP.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any, Final

from ..errors import SynthesisError
from ._names import is_dns1123_label, is_dns1123_subdomain, is_label_key, is_label_value
from .model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = ["API_VERSION", "KIND", "render_kubernetes", "validate_k8s_names"]

API_VERSION: Final = "networking.k8s.io/v1"
KIND: Final = "NetworkPolicy"

_POLICY_TYPES: Final = {"ingress": "Ingress", "egress": "Egress"}
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_OPERATORS_WITH_VALUES: Final = ("In", "NotIn")
_OPERATORS_WITHOUT_VALUES: Final = ("Exists", "DoesNotExist")
#: A container port name: 1-15 of [a-z0-9-], at least one letter, alphanumeric at both ends.
_IANA_SVC_NAME: Final = re.compile(r"(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def render_kubernetes(policy_set: PolicySet) -> list[dict[str, Any]]:
    """Render every policy of ``policy_set`` as a Kubernetes NetworkPolicy manifest.

    Parameters
    ----------
    policy_set : PolicySet
        The policies, already sorted by namespace and name.

    Returns
    -------
    list of dict
        One manifest per policy, in PolicySet order, ready for
        :func:`recommender.policy.writer.write_policy_tree` or ``dump_yaml``.

    Raises
    ------
    SynthesisError
        If a name, namespace, label or selector breaks Kubernetes syntax, two policies share a
        namespace and name, or a policy holds something Kubernetes NetworkPolicy cannot express
        (an entity peer, a deny or pass rule, a protocol other than TCP, UDP or SCTP).

    Examples
    --------
    >>> from recommender.policy.model import LabelSelector, Policy, PolicySet
    >>> deny = Policy("default-deny", "shop", LabelSelector())
    >>> render_kubernetes(PolicySet((deny,)))[0]["spec"]
    {'podSelector': {}, 'policyTypes': ['Ingress', 'Egress']}
    """
    seen: set[tuple[str, str]] = set()
    manifests: list[dict[str, Any]] = []
    for policy in policy_set.policies:
        key = (policy.namespace, policy.name)
        if key in seen:
            raise SynthesisError(
                f"Two policies are named {policy.name!r} in namespace {policy.namespace!r}; "
                "policy names must be unique within a namespace."
            )
        seen.add(key)
        manifests.append(_render_policy(policy))
    return manifests


def validate_k8s_names(policy: Policy) -> None:
    """Check a policy's name, namespace, labels, annotation keys and selectors against Kubernetes syntax.

    Parameters
    ----------
    policy : Policy
        The policy to check.

    Raises
    ------
    SynthesisError
        Naming the first bad value and the rule it breaks: the name must be a DNS-1123
        subdomain (at most 253 characters), the namespace a DNS-1123 label (at most 63), label
        and annotation keys ``[prefix/]name`` and label values (in metadata and selectors) at
        most 63 characters of ``[A-Za-z0-9-_.]``, alphanumeric at both ends, or empty.

    Examples
    --------
    >>> from recommender.policy.model import LabelSelector, Policy
    >>> validate_k8s_names(Policy("web", "../etc", LabelSelector()))
    Traceback (most recent call last):
    ...
    recommender.errors.SynthesisError: Policy 'web' has namespace '../etc', which is not a DNS-1123 label (lowercase letters, digits and '-', alphanumeric at both ends, at most 63 characters).
    """  # noqa: E501
    if not is_dns1123_subdomain(policy.name):
        raise SynthesisError(
            f"Policy name {policy.name!r} (namespace {policy.namespace!r}) is not a DNS-1123 "
            "subdomain (lowercase letters, digits, '-' and '.', alphanumeric at both ends of "
            "each dot-separated part, at most 253 characters)."
        )
    where = f"Policy {policy.name!r}"
    if not is_dns1123_label(policy.namespace):
        raise SynthesisError(
            f"{where} has namespace {policy.namespace!r}, which is not a DNS-1123 label "
            "(lowercase letters, digits and '-', alphanumeric at both ends, at most 63 "
            "characters)."
        )
    where = f"Policy {policy.name!r} in namespace {policy.namespace!r}"
    _check_labels(policy.labels, f"{where}: metadata label")
    for key, _value in policy.annotations:
        _check_key(key, f"{where}: metadata annotation")
    _check_selector(policy.selector, f"{where}: pod selector")
    for rule in policy.rules:
        for peer in rule.peers:
            if peer.namespace_selector is not None:
                _check_selector(peer.namespace_selector, f"{where}: {rule.direction} peer")
            if peer.pod_selector is not None:
                _check_selector(peer.pod_selector, f"{where}: {rule.direction} peer")


#: Label keys and values already found valid: a cluster's policies repeat the same few keys
#: and values thousands of times. Bounded: cleared when it grows past :data:`_VALID_MAX`.
_VALID_KEYS: set[str] = set()
_VALID_VALUES: set[str] = set()
_VALID_MAX: Final = 1 << 16


def _check_key(key: str, what: str) -> None:
    """Raise unless ``key`` is a valid label or annotation key."""
    if key in _VALID_KEYS:
        return
    if is_label_key(key):
        if len(_VALID_KEYS) >= _VALID_MAX:
            _VALID_KEYS.clear()
        _VALID_KEYS.add(key)
    else:
        raise SynthesisError(
            f"{what} key {key!r} is not a valid Kubernetes label key ([prefix/]name: the name "
            "at most 63 characters of letters, digits, '-', '_' and '.', alphanumeric at both "
            "ends; the prefix a DNS-1123 subdomain)."
        )


def _check_labels(labels: Iterable[tuple[str, str]], what: str) -> None:
    """Raise unless every key and value is valid label syntax."""
    for key, value in labels:
        _check_key(key, what)
        _check_value(key, value, what)


def _check_value(key: str, value: str, what: str) -> None:
    """Raise unless ``value`` is a valid label value."""
    if value in _VALID_VALUES:
        return
    if is_label_value(value):
        if len(_VALID_VALUES) >= _VALID_MAX:
            _VALID_VALUES.clear()
        _VALID_VALUES.add(value)
    else:
        raise SynthesisError(
            f"{what} {key!r} has value {value!r}, which is not a valid Kubernetes label value "
            "(empty, or at most 63 characters of letters, digits, '-', '_' and '.', "
            "alphanumeric at both ends)."
        )


def _check_selector(selector: LabelSelector, what: str) -> None:
    """Raise unless every key and value of ``selector`` is valid label syntax."""
    _check_labels(selector.match_labels, what)
    for key, _op, values in selector.match_expressions:
        _check_key(key, what)
        for value in values:
            _check_value(key, value, what)


def _render_policy(policy: Policy) -> dict[str, Any]:
    """One NetworkPolicy manifest."""
    validate_k8s_names(policy)
    where = f"Policy {policy.name!r} in namespace {policy.namespace!r}"
    metadata: dict[str, Any] = {"name": policy.name, "namespace": policy.namespace}
    if policy.labels:
        metadata["labels"] = dict(sorted(policy.labels))
    if policy.annotations:
        metadata["annotations"] = dict(sorted(policy.annotations))

    unknown = sorted(set(policy.policy_types) - set(_POLICY_TYPES))
    if unknown:
        raise SynthesisError(f"{where} has unknown policy types {unknown}.")
    if not policy.policy_types:
        raise SynthesisError(
            f"{where} isolates no direction (empty policy_types); Kubernetes would guess one."
        )
    spec: dict[str, Any] = {
        "podSelector": _selector(policy.selector, where),
        "policyTypes": [v for k, v in _POLICY_TYPES.items() if k in policy.policy_types],
    }
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        if not rules:
            continue
        if direction not in policy.policy_types:
            raise SynthesisError(
                f"{where} has {direction} rules but does not list {direction} in its policy "
                "types, so Kubernetes would ignore them."
            )
        spec[direction] = [_rule(rule, direction, where) for rule in rules]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def _selector(selector: LabelSelector, where: str) -> dict[str, Any]:
    """A label selector; ``{}`` matches everything."""
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(sorted(selector.match_labels))
    if selector.match_expressions:
        expressions: list[dict[str, Any]] = []
        for key, op, values in selector.match_expressions:
            if op in _OPERATORS_WITH_VALUES and not values:
                raise SynthesisError(f"{where}: selector operator {op} on {key!r} needs values.")
            if op in _OPERATORS_WITHOUT_VALUES and values:
                raise SynthesisError(
                    f"{where}: selector operator {op} on {key!r} takes no values, got "
                    f"{list(values)}."
                )
            if op not in _OPERATORS_WITH_VALUES + _OPERATORS_WITHOUT_VALUES:
                raise SynthesisError(
                    f"{where}: selector operator {op!r} on {key!r} is not one of In, NotIn, "
                    "Exists, DoesNotExist."
                )
            expression: dict[str, Any] = {"key": key, "operator": op}
            if values:
                expression["values"] = list(values)
            expressions.append(expression)
        out["matchExpressions"] = expressions
    return out


def _rule(rule: Rule, direction: str, where: str) -> dict[str, Any]:
    """One rule: ``from``/``to`` omitted for all peers, ``ports`` omitted for all ports."""
    if rule.direction != direction:
        raise SynthesisError(
            f"{where} has a rule of direction {rule.direction!r} among its {direction} rules."
        )
    if rule.action != "allow":
        raise SynthesisError(
            f"{where} has a {rule.action!r} {direction} rule; Kubernetes NetworkPolicy can only "
            "allow traffic. Use the calico or adminnetworkpolicy dialect for deny and pass rules."
        )
    out: dict[str, Any] = {}
    if rule.peers:
        out["from" if direction == "ingress" else "to"] = [
            _peer(peer, where) for peer in rule.peers
        ]
    if rule.ports:
        out["ports"] = [_port(port, where) for port in rule.ports]
    return out


def _peer(peer: Peer, where: str) -> dict[str, Any]:
    """A ``namespaceSelector``/``podSelector`` peer or an ``ipBlock`` peer."""
    if peer.kind == "pods":
        if peer.cidr is not None or peer.except_ or peer.entity is not None:
            raise SynthesisError(f"{where} has a pods peer that also sets a CIDR or entity.")
        out: dict[str, Any] = {}
        if peer.namespace_selector is not None:
            out["namespaceSelector"] = _selector(peer.namespace_selector, where)
        if peer.pod_selector is not None or peer.namespace_selector is None:
            out["podSelector"] = _selector(peer.pod_selector or LabelSelector(), where)
        return out
    if peer.kind == "cidr":
        if peer.namespace_selector is not None or peer.pod_selector is not None:
            raise SynthesisError(f"{where} has a CIDR peer that also sets a selector.")
        if peer.cidr is None:
            raise SynthesisError(f"{where} has a CIDR peer without a CIDR.")
        block: dict[str, Any] = {"cidr": peer.cidr}
        network = _network(peer.cidr, where)
        if peer.except_:
            for item in peer.except_:
                inner = _network(item, where)
                if (
                    inner.version != network.version
                    or inner == network
                    or not inner.subnet_of(network)  # type: ignore[arg-type]
                ):
                    raise SynthesisError(
                        f"{where}: except CIDR {item!r} is not a strict subset of {peer.cidr!r}."
                    )
            block["except"] = list(peer.except_)
        return {"ipBlock": block}
    if peer.kind == "entity":
        raise SynthesisError(
            f"{where} has an entity peer {peer.entity!r}, which Kubernetes NetworkPolicy cannot "
            "express; convert entities to CIDR peers before rendering the kubernetes dialect."
        )
    raise SynthesisError(f"{where} has a peer of unknown kind {peer.kind!r}.")


def _network(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a CIDR (host bits allowed, as the API server does)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SynthesisError(f"{where}: {text!r} is not a CIDR.") from None


def _port(port: PortSpec, where: str) -> dict[str, Any]:
    """``{protocol, port?, endPort?}``; ``port`` is a name for a named port."""
    protocol = port.protocol.upper()
    if protocol not in _PROTOCOLS:
        raise SynthesisError(
            f"{where}: protocol {port.protocol!r} cannot be expressed in Kubernetes "
            "NetworkPolicy, which knows TCP, UDP and SCTP only."
        )
    out: dict[str, Any] = {"protocol": protocol}
    if port.name is not None:
        if port.port is not None or port.end_port is not None:
            raise SynthesisError(
                f"{where}: {protocol} named port {port.name!r} cannot also carry a number or an "
                "end port."
            )
        if not _IANA_SVC_NAME.fullmatch(port.name) or "--" in port.name:
            raise SynthesisError(
                f"{where}: {protocol} port name {port.name!r} is not an IANA service name (at "
                "most 15 lowercase letters, digits and '-', with a letter, no '--', "
                "alphanumeric at both ends)."
            )
        out["port"] = port.name
        return out
    if port.port is None:
        if port.end_port is not None:
            raise SynthesisError(f"{where}: {protocol} end port {port.end_port} has no start port.")
        return out
    if not _valid_port(port.port):
        raise SynthesisError(f"{where}: {protocol} port {port.port!r} is not in 1..65535.")
    out["port"] = port.port
    if port.end_port is not None:
        if not _valid_port(port.end_port) or port.end_port < port.port:
            raise SynthesisError(
                f"{where}: {protocol} port range {port.port}-{port.end_port!r} is not a range "
                "within 1..65535."
            )
        out["endPort"] = port.end_port
    return out


def _valid_port(value: object) -> bool:
    """A port number (not a bool) in 1..65535."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535
