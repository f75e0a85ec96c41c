"""Istio's authorization semantics over :mod:`recommender.policy.authz`, one request at a time.

:func:`authorize` answers "do these AuthorizationPolicies let this request reach this
workload?" the way the destination's proxy does (istio.io, Authorization Policy):

0. under a STRICT PeerAuthentication (:func:`mtls_mode`), a plain-text source is refused
   before any AuthorizationPolicy is read;
1. CUSTOM policies are left aside (an external authoriser decides; reported, never guessed);
   AUDIT policies decide nothing;
2. the policies that apply are those of the workload's namespace and of the **root namespace**
   (``istio-system``, mesh-wide) whose ``selector`` matches its labels (no selector: all);
   policies attached to gateways by ``targetRef(s)`` do not apply to workloads;
3. a matching **DENY** policy denies; else, if no ALLOW policy applies, the request is allowed;
   else some rule of an ALLOW policy must match;
4. a rule matches when some source, some operation and every condition match (absent: any);
   a field matches one of its values, a ``not`` field none of its values; strings match
   exactly, by prefix (``abc*``), suffix (``*abc``) or presence (``*``), paths also by
   template (``{*}`` one segment, ``{**}`` the rest), addresses by CIDR;
5. a TCP connection carries no HTTP attributes (methods, paths, hosts, request principals,
   headers): an ALLOW rule that needs one never matches it, a DENY rule ignores them (Istio's
   rule for missing attributes, which also applies to ``when`` keys this module does not know).

Sources are :class:`Identity` values: a mesh workload has a principal (its service account
under the trust domain) and the namespace of its certificate; a source outside the mesh or in
plain text has only an address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ..policy.authz import (
    AuthorizationPolicy,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    IstioPolicies,
    PeerAuthentication,
)
from ..policy.istio import ROOT_NAMESPACE

__all__ = ["ROOT_NAMESPACE", "Identity", "IstioVerdict", "Request", "authorize", "mtls_mode"]



@dataclass(frozen=True)
class Identity:
    """Who sends a request.

    Parameters
    ----------
    principal : str, optional
        The peer certificate's principal (``cluster.local/ns/shop/sa/web``).
    namespace : str, optional
        The certificate's namespace.
    ip : str, optional
        The source address.
    mtls : bool
        Whether the request arrives over mutual TLS (from a mesh workload). A mesh workload
        whose service account is unknown has ``mtls`` but no ``principal``: only the presence
        match ``*`` matches it.
    """

    principal: str | None = None
    namespace: str | None = None
    ip: str | None = None
    mtls: bool = False


@dataclass(frozen=True)
class Request:
    """A connection (``method`` None) or an HTTP request to a workload.

    Parameters
    ----------
    namespace : str
        The destination workload's namespace.
    labels : Mapping of str to str
        Its labels.
    port : int or None
        The destination port.
    source : Identity
        The sender.
    method, path, host : str, optional
        The HTTP request (path without the query).
    """

    namespace: str
    labels: Mapping[str, str]
    port: int | None
    source: Identity
    method: str | None = None
    path: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class IstioVerdict:
    """Whether the request is allowed, why, and the policy that decided (if one did)."""

    allowed: bool
    reason: str
    policy: str | None = None
    custom: tuple[str, ...] = field(default=())


def mtls_mode(
    peer_authentications: Iterable[PeerAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    port: int | None,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> tuple[str, str | None]:
    """The mutual TLS mode a workload's proxy applies on ``port``, and the PeerAuthentication
    that set it: the workload's own (by selector, port-level first), else its namespace's,
    else the root namespace's, else Istio's default PERMISSIVE; UNSET inherits.

    Examples
    --------
    >>> strict = PeerAuthentication("default", "shop", "STRICT")
    >>> mtls_mode([strict], "shop", {}, 8080)
    ('STRICT', 'shop/default')
    """
    items = sorted(peer_authentications, key=lambda p: p.key)
    levels = [
        [p for p in items if p.namespace == namespace and p.selector is not None
         and all(labels.get(k) == v for k, v in p.selector)],
        [p for p in items if p.namespace == namespace and p.selector is None],
        [p for p in items if p.namespace == root_namespace and p.selector is None],
    ]
    for level in levels:
        for item in level:
            by_port = dict(item.port_modes)
            if port is not None and by_port.get(port, "UNSET") != "UNSET":
                return by_port[port], item.key
            if item.mode != "UNSET":
                return item.mode, item.key
    return "PERMISSIVE", None


def authorize(
    policies: IstioPolicies | Iterable[AuthorizationPolicy],
    request: Request,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> IstioVerdict:
    """Istio's decision for ``request`` (see the module docstring).

    Parameters
    ----------
    policies : IstioPolicies or iterable of AuthorizationPolicy
        The AuthorizationPolicies (and PeerAuthentications) of the mesh.
    request : Request
        The connection or HTTP request, with its source.
    root_namespace : str, default "istio-system"
        The namespace whose policies apply to the whole mesh.

    Examples
    --------
    >>> nothing = AuthorizationPolicy("allow-nothing", "shop")
    >>> web = Identity("cluster.local/ns/shop/sa/web", "shop", "10.0.0.1", True)
    >>> authorize([nothing], Request("shop", {"app": "api"}, 8080, web)).allowed
    False
    """
    if isinstance(policies, IstioPolicies):
        authz, peers = policies.authorization, policies.peer_authentication
    else:
        authz, peers = tuple(policies), ()
    if not request.source.mtls and peers:
        mode, by = mtls_mode(
            peers, request.namespace, request.labels, request.port, root_namespace=root_namespace
        )
        if mode == "STRICT":
            return IstioVerdict(False, f"plain-text source refused: STRICT mutual TLS ({by})", by)
    applicable = [
        p
        for p in authz
        if p.namespace in (request.namespace, root_namespace)
        and not p.targets
        and (p.selector is None or all(request.labels.get(k) == v for k, v in p.selector))
    ]
    custom = tuple(sorted(p.key for p in applicable if p.action == "CUSTOM"))
    for policy in sorted(applicable, key=lambda p: p.key):
        if policy.action != "DENY":
            continue
        for index, rule in enumerate(policy.rules):
            if _rule(rule, request, deny=True):
                return IstioVerdict(
                    False, f"denied by {policy.key} rule {index}", policy.key, custom
                )
    allow = sorted((p for p in applicable if p.action == "ALLOW"), key=lambda p: p.key)
    if not allow:
        return IstioVerdict(True, "no ALLOW policy selects the workload", None, custom)
    for policy in allow:
        for index, rule in enumerate(policy.rules):
            if _rule(rule, request, deny=False):
                return IstioVerdict(
                    True, f"allowed by {policy.key} rule {index}", policy.key, custom
                )
    names = ", ".join(p.key for p in allow)
    return IstioVerdict(
        False, f"ALLOW policies {names} select the workload; no rule matches", None, custom
    )


# --------------------------------------------------------------------------- matching


def _rule(rule: AuthzRule, request: Request, *, deny: bool) -> bool:
    if rule.sources and not any(_source(s, request, deny) for s in rule.sources):
        return False
    if rule.operations and not any(_operation(o, request, deny) for o in rule.operations):
        return False
    return all(_condition(c, request, deny) for c in rule.conditions)


def _missing(deny: bool) -> bool:
    """A field whose attribute the request lacks: ignored by DENY, never matched by ALLOW."""
    return deny


def _source(source: AuthzSource, request: Request, deny: bool) -> bool:
    ident = request.source
    checks: list[bool] = []
    if source.principals:
        checks.append(_any_principal(source.principals, ident))
    if source.not_principals:
        checks.append(not _any_principal(source.not_principals, ident))
    if source.namespaces:
        checks.append(_any_string(source.namespaces, ident.namespace))
    if source.not_namespaces:
        checks.append(not _any_string(source.not_namespaces, ident.namespace))
    if source.service_accounts:
        checks.append(_any_account(source.service_accounts, ident, request.namespace))
    if source.not_service_accounts:
        checks.append(not _any_account(source.not_service_accounts, ident, request.namespace))
    if source.ip_blocks:
        checks.append(_any_block(source.ip_blocks, ident.ip))
    if source.not_ip_blocks:
        checks.append(not _any_block(source.not_ip_blocks, ident.ip))
    # remote.ip is the source address when no proxy in front forwards the client's address.
    if source.remote_ip_blocks:
        checks.append(_any_block(source.remote_ip_blocks, ident.ip))
    if source.not_remote_ip_blocks:
        checks.append(not _any_block(source.not_remote_ip_blocks, ident.ip))
    # Request principals come from a JWT, which flows never show: none is present.
    if source.request_principals:
        checks.append(_missing(deny) if request.method is None else False)
    if source.not_request_principals:
        checks.append(_missing(deny) if request.method is None else True)
    return all(checks)


def _operation(operation: AuthzOperation, request: Request, deny: bool) -> bool:
    checks: list[bool] = []
    port = None if request.port is None else str(request.port)
    if operation.ports:
        checks.append(port is not None and port in operation.ports)
    if operation.not_ports:
        checks.append(port is None or port not in operation.not_ports)
    http = request.method is not None
    for values, negative, value, match in (
        (operation.methods, False, request.method, _any_string),
        (operation.not_methods, True, request.method, _any_string),
        (operation.paths, False, request.path, _any_path),
        (operation.not_paths, True, request.path, _any_path),
        (operation.hosts, False, (request.host or "").lower() or None, _any_host),
        (operation.not_hosts, True, (request.host or "").lower() or None, _any_host),
    ):
        if not values:
            continue
        if not http:
            checks.append(_missing(deny))
            continue
        found = match(values, value)
        checks.append(not found if negative else found)
    return all(checks)


def _condition(condition: AuthzCondition, request: Request, deny: bool) -> bool:
    ident = request.source
    key = condition.key
    value: str | None
    matcher: Callable[[tuple[str, ...], str | None], bool]
    if key in ("source.ip", "remote.ip"):
        matcher = _any_block
        value = ident.ip
    elif key == "source.namespace":
        matcher, value = _any_string, ident.namespace
    elif key == "source.principal":
        ok = not condition.values or _any_principal(condition.values, ident)
        return ok and not (condition.not_values and _any_principal(condition.not_values, ident))
    elif key == "destination.port":
        matcher = _any_exact
        value = None if request.port is None else str(request.port)
    else:  # request.headers[...], request.auth.*, destination.ip, ...: not in the flows
        return _missing(deny)
    ok = not condition.values or matcher(condition.values, value)
    return ok and not (condition.not_values and matcher(condition.not_values, value))


def _string(pattern: str, value: str | None) -> bool:
    """Istio's string match: exact, ``prefix*``, ``*suffix`` or ``*`` (any non-empty value)."""
    if value is None or value == "":
        return False
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _any_string(patterns: tuple[str, ...], value: str | None) -> bool:
    return any(_string(p, value) for p in patterns)


def _any_exact(patterns: tuple[str, ...], value: str | None) -> bool:
    return value is not None and value in patterns


def _any_host(patterns: tuple[str, ...], value: str | None) -> bool:
    return any(_string(p.lower(), value) for p in patterns)


def _any_principal(patterns: tuple[str, ...], ident: Identity) -> bool:
    if not ident.mtls:
        return False
    if ident.principal is None:  # a mesh workload whose service account is unknown
        return "*" in patterns
    return any(_string(p, ident.principal) for p in patterns)


def _any_account(patterns: tuple[str, ...], ident: Identity, namespace: str) -> bool:
    """``serviceAccounts`` entries: ``ns/sa``, or ``sa`` in the policy's namespace."""
    if not ident.mtls or ident.principal is None or "/sa/" not in ident.principal:
        return False
    _, _, rest = ident.principal.partition("/ns/")
    ns, _, account = rest.partition("/sa/")
    for pattern in patterns:
        want_ns, _, want = pattern.rpartition("/")
        if (want_ns or namespace) == ns and want == account:
            return True
    return False


def _any_block(blocks: tuple[str, ...], ip: str | None) -> bool:
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for block in blocks:
        try:
            network = ipaddress.ip_network(block, strict=False)
        except ValueError:
            continue
        if network.version == address.version and address in network:
            return True
    return False


_TEMPLATE: Final = re.compile(r"\{\*\*?\}")


def _path(pattern: str, path: str | None) -> bool:
    """A path pattern: a template with ``{*}``/``{**}``, else Istio's string match."""
    if path is None:
        return False
    if not _TEMPLATE.search(pattern):
        return _string(pattern, path)
    parts = [re.escape(part) for part in _TEMPLATE.split(pattern)]
    operators = _TEMPLATE.findall(pattern)
    regex = parts[0]
    for operator, part in zip(operators, parts[1:], strict=True):
        regex += ("[^/]+" if operator == "{*}" else ".*") + part
    return re.fullmatch(regex, path) is not None


def _any_path(patterns: tuple[str, ...], path: str | None) -> bool:
    return any(_path(p, path) for p in patterns)
