"""Istio AuthorizationPolicies and PeerAuthentications as data, for ``evaluate`` and ``diff``.

The dialect-neutral model (:mod:`recommender.policy.model`) speaks of pods, addresses and ports;
an AuthorizationPolicy also speaks of principals, namespaces of certificates, HTTP methods and
paths, so it has a model of its own. :func:`~recommender.policy.reader.read_istio_policies`
fills it from manifests; :mod:`recommender.evaluation.istio` applies Istio's semantics to it.

Every list field keeps the manifest's values; an absent or empty list is no constraint.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthorizationPolicy",
    "AuthzCondition",
    "AuthzOperation",
    "AuthzRule",
    "AuthzSource",
    "IstioPolicies",
    "PeerAuthentication",
]


@dataclass(frozen=True)
class AuthzSource:
    """``rules[].from[].source``: every non-empty field must match (negative ones must not)."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzOperation:
    """``rules[].to[].operation``: every non-empty field must match (negative ones must not)."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzCondition:
    """``rules[].when[]``: an attribute and the values it may (or may not) have."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """One rule: some source, some operation and every condition must match; an empty
    ``sources`` (or ``operations``) tuple means any."""

    sources: tuple[AuthzSource, ...] = ()
    operations: tuple[AuthzOperation, ...] = ()
    conditions: tuple[AuthzCondition, ...] = ()


@dataclass(frozen=True)
class AuthorizationPolicy:
    """One ``security.istio.io`` AuthorizationPolicy.

    ``selector`` None selects every workload of the namespace (of the mesh, in the root
    namespace); ``rules`` empty never matches (an ALLOW policy without rules allows nothing);
    ``targets`` is true for a policy attached to gateways by ``targetRef(s)``, which never
    applies to workloads.
    """

    name: str
    namespace: str
    action: str = "ALLOW"
    selector: tuple[tuple[str, str], ...] | None = None
    rules: tuple[AuthzRule, ...] = ()
    provider: str | None = None
    targets: bool = False

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PeerAuthentication:
    """One ``security.istio.io`` PeerAuthentication: the mutual TLS mode of the workloads it
    selects (``selector`` None: the namespace; in the root namespace, the mesh), with
    per-port overrides. Modes: ``STRICT``, ``PERMISSIVE``, ``DISABLE``, ``UNSET`` (inherit)."""

    name: str
    namespace: str
    mode: str = "UNSET"
    selector: tuple[tuple[str, str], ...] | None = None
    port_modes: tuple[tuple[int, str], ...] = ()

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class IstioPolicies:
    """The Istio security objects of a policy tree."""

    authorization: tuple[AuthorizationPolicy, ...] = ()
    peer_authentication: tuple[PeerAuthentication, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.authorization or self.peer_authentication)
