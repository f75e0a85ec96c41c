"""Read Calico ``projectcalico.org/v3`` policies into the tiers :mod:`.precedence` judges.

Kinds: Tier, NetworkPolicy, GlobalNetworkPolicy, their staged forms (StagedNetworkPolicy,
StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy: judged as if enforced, which is what
a staged rollout previews; ``stagedAction: Delete`` removes nothing and is skipped),
NetworkSet and GlobalNetworkSet (rules that select them match their ``nets``). Calico's
semantics, as in its documentation, Felix's rule conversion and
``shared/tools/examples/semantics`` case T:

* tiers by ascending ``order`` (none: last), policies in a tier by ``order`` (none: last),
  rules in order; the first Allow or Deny decides, Pass jumps to the next tier, and a tier
  that selects the endpoint but matches nothing ends with its ``defaultAction`` (Deny unless
  Pass); Kubernetes NetworkPolicies sit in the ``default`` tier (order 1,000,000) with order
  1000; no tier applying (or every tier passing) leaves the namespace profile: allow;
* a policy without ``types`` applies to Ingress, to Egress when it has only egress rules, and
  to both when it has both;
* a policy selects the endpoints its ``selector`` (the whole selector language,
  :mod:`.calico_selector`), ``serviceAccountSelector`` and, for a global policy,
  ``namespaceSelector`` match; a namespaced policy only those of its namespace;
* rules match as Felix matches them (:mod:`.calico_rules`): ``selector``, ``notSelector``,
  ``namespaceSelector``, ``serviceAccounts``, ``nets``, ``notNets``, ``ports``, ``notPorts``
  on either side, ``protocol``, ``notProtocol``, ``ipVersion``, ``icmp``/``notICMP`` (ICMP
  connections are not judged), ``domains`` (the DNS names the flows resolved) and ``http``.

``services`` (source or destination) is judged on the Service endpoints the flows show
(:mod:`.services`).

Refused with :class:`~recommender.errors.UnsupportedDialectError` (exit 2), saying why: source
ports covering part of the ephemeral range or named,
service-account selectors on labels other than the name (the flows carry names only),
``domains`` beside a selector or nets, and host-endpoint options (``doNotTrack``, ``preDNAT``,
``applyOnForward``). A selector Calico would reject is an :class:`~recommender.errors.InputError`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ..guardrails.model import Guardrails
from ..policy.model import Direction, PolicySet, PortSpec
from ..policy.reader import parse_networkpolicy
from .calico_rules import (
    ACCOUNT_KEY,
    NAMESPACE_KEY,
    SA_PREFIX,
    CalicoRule,
    EntityMatch,
    NetworkSet,
    namespace_scope,
    replace_all,
    source_ports_match,
)
from .calico_selector import And, Has, LabelOp, Selector, SelectorError, parse_selector
from .precedence import (
    DEFAULT_TIER_ORDER,
    NETWORK_POLICY_ORDER,
    CalicoPolicy,
    CalicoTier,
    guardrail_tiers,
)

__all__ = ["CALICO_GROUP", "read_calico_tiers"]

CALICO_GROUP: Final = "projectcalico.org"
_ACTIONS: Final = {"Allow": "allow", "Deny": "deny", "Pass": "pass"}
_PROTOCOLS: Final = {
    "tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPv6",
    "udplite": "UDPLite", "6": "TCP", "17": "UDP", "132": "SCTP", "1": "ICMP", "58": "ICMPv6",
}
_NOTE_HTTP: Final = (
    "Calico http matches judged on each HTTP request the flows recorded; a connection "
    "without L7 records is judged at L4 (the http clause matches)."
)
_NOTE_SOURCE_PORTS: Final = (
    "Calico source ports judged on the client's ephemeral port (32768-60999): the flows' edges "
    "keep no source port."
)
_NOTE_SERVICES: Final = (
    "Calico services judged on the Service endpoints the flows show (destinations reached "
    "through the Service, on those ports); an endpoint never reached through it is not known "
    "to back it."
)
_NOTE_NETS: Final = (
    "Calico nets/notNets judged on addresses outside the cluster: the flows give no address per "
    "pod, so nets never hold a pod and notNets never exclude one."
)


def _selector(text: Any, where: str) -> Selector:
    try:
        return parse_selector(str(text))
    except SelectorError as exc:
        raise InputError(
            f"{where}: {text!r} is not a Calico selector ({exc}); Calico would reject it."
        ) from None


def _and(*parts: Selector | None) -> Selector | None:
    kept = tuple(p for p in parts if p is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(kept)


def _accounts(raw: Any, where: str) -> Selector | None:
    """``serviceAccounts`` (names and selector) as Felix writes it: ``pcsa.``-prefixed selector
    AND ``projectcalico.org/serviceaccount in {names}``."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise InputError(f"{where}: serviceAccounts is not a mapping.")
    text = raw.get("selector")
    selector = None
    if text:
        parsed = _selector(text, f"{where} service account selector")
        others = sorted(set(parsed.keys()) - {"projectcalico.org/name"})
        if others:
            raise UnsupportedDialectError(
                f"{where}: the service account selector reads {', '.join(others)}; the flows "
                "carry service-account names only (projectcalico.org/name is judged)."
            )
        selector = parsed.prefixed(SA_PREFIX)
    names = tuple(str(n) for n in raw.get("names") or ())
    by_name = LabelOp(ACCOUNT_KEY, "in", values=frozenset(names)) if names else None
    return _and(selector, by_name)


def read_calico_tiers(
    docs: Iterable[tuple[str, Mapping[str, Any]]],
    network_policies: PolicySet | None = None,
    guardrails: Guardrails | None = None,
) -> tuple[tuple[CalicoTier, ...], tuple[str, ...]]:
    """The Calico tiers of ``docs`` (with the Kubernetes NetworkPolicies in the default tier
    and cluster network policies as guardrail tiers), and notes on what was assumed.

    Raises
    ------
    InputError
        If a manifest is malformed or names a tier that is not defined.
    UnsupportedDialectError
        For what the tiers cannot judge faithfully (see the module docstring).
    """
    docs = list(docs)
    tiers: dict[str, tuple[float, str]] = {"default": (DEFAULT_TIER_ORDER, "deny")}
    sets: list[NetworkSet] = []
    notes: list[str] = []
    for where, doc in docs:
        kind = doc.get("kind")
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        if kind == "Tier":
            name = str(meta.get("name") or "")
            order = spec.get("order")
            action = str(spec.get("defaultAction") or "Deny")
            if action not in ("Deny", "Pass"):
                raise InputError(f"{where}: Tier {name!r} defaultAction must be Deny or Pass.")
            tiers[name] = (math.inf if order is None else float(order), action.lower())
        elif kind in ("NetworkSet", "GlobalNetworkSet"):
            nets = tuple(_network(str(n), where) for n in spec.get("nets") or ())
            labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            namespace = str(meta.get("namespace") or "default") if kind == "NetworkSet" else None
            sets.append(NetworkSet(namespace, labels, nets))
    members: dict[str, list[CalicoPolicy]] = {name: [] for name in tiers}
    staged = 0
    for where, doc in docs:
        kind = str(doc.get("kind"))
        if kind not in (
            "NetworkPolicy", "GlobalNetworkPolicy", "StagedNetworkPolicy",
            "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy",
        ):
            continue
        spec = doc.get("spec") or {}
        if kind.startswith("Staged"):
            if spec.get("stagedAction", "Set") == "Delete":
                notes.append(f"{where}: a staged deletion, skipped.")
                continue
            staged += 1
        if kind == "StagedKubernetesNetworkPolicy":
            policy = parse_networkpolicy({**doc, "kind": "NetworkPolicy"})
            members["default"].append(_knp(policy))
            continue
        policy_obj = _policy(where, doc, tuple(sets), notes)
        tier = str(spec.get("tier") or "default")
        if tier not in members:
            raise InputError(
                f"{where}: tier {tier!r} is not defined; add its Tier manifest to POLICIES."
            )
        members[tier].append(policy_obj)
    for policy in (network_policies or PolicySet()).policies:
        members["default"].append(_knp(policy))
    out = [
        CalicoTier(name, tiers[name][0], tuple(members[name]), tiers[name][1])  # type: ignore[arg-type]
        for name in tiers
    ]
    if guardrails is not None and len(guardrails):
        admin, _, baseline = guardrail_tiers(guardrails, PolicySet())
        out += [t for t in (admin, baseline) if t.policies]
    if staged:
        notes.append(f"{staged} staged policies judged as if enforced (what they would do).")
    return tuple(out), tuple(notes)


def _knp(policy: Any) -> CalicoPolicy:
    return CalicoPolicy(
        f"{policy.namespace}/{policy.name}",
        NETWORK_POLICY_ORDER,
        policy.policy_types,
        policy.ingress,
        policy.egress,
        namespace=policy.namespace,
        selector=policy.selector,
    )




def _policy(
    where: str, doc: Mapping[str, Any], sets: tuple[NetworkSet, ...], notes: list[str]
) -> CalicoPolicy:
    kind = str(doc.get("kind"))
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: a {kind} has no metadata.name.")
    is_global = "Global" in kind
    namespace = None if is_global else str(meta.get("namespace") or "default")
    where = f"{where}: {kind} {name!r}"
    for unsupported in ("doNotTrack", "preDNAT", "applyOnForward"):
        if spec.get(unsupported):
            raise UnsupportedDialectError(
                f"{where} sets {unsupported}, which applies to host endpoints; those are not "
                "evaluated."
            )
    selector = _selector(spec.get("selector") or "", f"{where} selector")
    accounts = (
        _selector(spec["serviceAccountSelector"], f"{where} serviceAccountSelector")
        if spec.get("serviceAccountSelector")
        else None
    )
    if accounts is not None:
        others = sorted(set(accounts.keys()) - {"projectcalico.org/name"})
        if others:
            raise UnsupportedDialectError(
                f"{where}: serviceAccountSelector reads {', '.join(others)}; the flows carry "
                "service-account names only (projectcalico.org/name is judged)."
            )
        accounts = accounts.prefixed(SA_PREFIX)
    if is_global:
        # Felix (globalnetworkpolicyprocessor.go): append the pcns.-prefixed namespace
        # selector and replace every all() with has(projectcalico.org/namespace), then the
        # pcsa.-prefixed service-account selector, its all() meaning has(.../serviceaccount)
        ns_text = spec.get("namespaceSelector")
        endpoint_selector: Selector = selector
        if ns_text:
            scope = _selector(ns_text, f"{where} namespaceSelector").prefixed("pcns.")
            endpoint_selector = replace_all(And((selector, scope)), Has(NAMESPACE_KEY))
        if accounts is not None:
            endpoint_selector = And(
                (endpoint_selector, replace_all(accounts, Has(ACCOUNT_KEY)))
            )
    else:
        endpoint_selector = And(
            tuple(s for s in (selector, LabelOp(NAMESPACE_KEY, "==", str(namespace)), accounts)
                  if s is not None)
        )
    ingress_raw = list(spec.get("ingress") or [])
    egress_raw = list(spec.get("egress") or [])
    raw_types = spec.get("types")
    types: tuple[Direction, ...]
    if raw_types:
        types = tuple(d for d in ("ingress", "egress") if d.capitalize() in raw_types)
    elif egress_raw and ingress_raw:
        types = ("ingress", "egress")
    elif egress_raw:
        types = ("egress",)
    else:
        types = ("ingress",)
    order = spec.get("order")
    rules: dict[Direction, tuple[CalicoRule, ...]] = {}
    sides: tuple[tuple[Direction, list[Any]], ...] = (
        ("ingress", ingress_raw), ("egress", egress_raw)
    )
    for direction, raw in sides:
        out: list[CalicoRule] = []
        for index, item in enumerate(raw):
            rule = _rule(
                item, direction, namespace, sets, f"{where} {direction} rule {index}", notes
            )
            if rule is not None:
                out.append(rule)
        rules[direction] = tuple(out)
    key = name if is_global else f"{namespace}/{name}"
    return CalicoPolicy(
        key,
        math.inf if order is None else float(order),
        types,
        rules["ingress"],
        rules["egress"],
        namespace=namespace,
        endpoint_selector=endpoint_selector,
    )


def _rule(
    raw: Any,
    direction: Direction,
    namespace: str | None,
    sets: tuple[NetworkSet, ...],
    where: str,
    notes: list[str],
) -> CalicoRule | None:
    if not isinstance(raw, dict):
        raise InputError(f"{where} is not a mapping.")
    action = raw.get("action")
    if action == "Log":
        return None  # logs, decides nothing
    if action not in _ACTIONS:
        raise InputError(f"{where}: action {action!r} is not Allow, Deny, Pass or Log.")
    proto = _protocol(raw.get("protocol"), where)
    not_proto = _protocol(raw.get("notProtocol"), where)
    version = raw.get("ipVersion")
    if version is not None and version not in (4, 6, "4", "6"):
        raise InputError(f"{where}: ipVersion must be 4 or 6, not {version!r}.")
    if (raw.get("icmp") or raw.get("notICMP")) and proto not in ("ICMP", "ICMPv6"):
        raise InputError(f"{where}: icmp and notICMP need protocol ICMP or ICMPv6.")
    source = raw.get("source") or {}
    destination = raw.get("destination") or {}
    for side, entity in (("source", source), ("destination", destination)):
        if not isinstance(entity, dict):
            raise InputError(f"{where}: {side} is not a mapping.")
        if entity.get("services") and any(
            entity.get(k) for k in ("selector", "notSelector", "namespaceSelector", "nets",
                                    "notNets", "serviceAccounts")
        ):
            raise InputError(
                f"{where}: {side}.services cannot go with selectors, nets or service accounts "
                "(Calico refuses it)."
            )
    src_ports = _ports(source.get("ports"), proto, where)
    src_not_ports = _ports(source.get("notPorts"), proto, where)
    ports_ok = source_ports_match(src_ports, src_not_ports)
    if isinstance(ports_ok, str):
        raise UnsupportedDialectError(f"{where}: {ports_ok}.")
    if src_ports or src_not_ports:
        _note(notes, _NOTE_SOURCE_PORTS)
    http = raw.get("http")
    methods: tuple[str, ...] = ()
    paths: list[tuple[str, str]] = []
    if http:
        if not isinstance(http, dict):
            raise InputError(f"{where}: http is not a mapping.")
        methods = tuple(str(m).upper() for m in http.get("methods") or ())
        for item in http.get("paths") or ():
            if not isinstance(item, dict) or len(item) != 1 or not (
                set(item) <= {"exact", "prefix"}
            ):
                raise InputError(f"{where}: an http path is one of exact or prefix.")
            kind, value = next(iter(item.items()))
            paths.append((str(kind), str(value)))
        _note(notes, _NOTE_HTTP)
    src = _entity(source, direction, "source", namespace, sets, proto, where, notes)
    dst = _entity(destination, direction, "destination", namespace, sets, proto, where, notes)
    return CalicoRule(
        direction,
        _ACTIONS[action],  # type: ignore[arg-type]
        src,
        dst,
        proto,
        not_proto,
        None if version is None else int(version),
        ports_ok,
        methods,
        tuple(paths),
        bool(http),
    )


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _protocol(raw: Any, where: str) -> str | None:
    if raw is None:
        return None
    proto = _PROTOCOLS.get(str(raw).lower())
    if proto is None:
        raise UnsupportedDialectError(f"{where}: protocol {raw!r} is not evaluated.")
    return proto


def _entity(
    entity: Mapping[str, Any],
    direction: Direction,
    side: str,
    namespace: str | None,
    sets: tuple[NetworkSet, ...],
    proto: str | None,
    where: str,
    notes: list[str],
) -> EntityMatch:
    """One side of a rule, as Felix's ``getEndpointSelector`` builds it."""
    here = f"{where} {side}"
    domains = tuple(str(d) for d in entity.get("domains") or ())
    if domains and (
        side != "destination" or direction != "egress" or entity.get("selector")
        or entity.get("namespaceSelector") or entity.get("nets")
    ):
        raise UnsupportedDialectError(f"{where}: domains go alone in an egress destination.")
    nets = tuple(_network(str(n), here) for n in entity.get("nets") or ())
    not_nets = tuple(_network(str(n), here) for n in entity.get("notNets") or ())
    if nets or not_nets:
        _note(notes, _NOTE_NETS)
    ns_text = entity.get("namespaceSelector")
    sel_text = entity.get("selector")
    not_text = entity.get("notSelector")
    accounts = _accounts(entity.get("serviceAccounts"), here)
    pods = _selector(sel_text, f"{here} selector") if sel_text else None
    not_selector = _selector(not_text, f"{here} notSelector") if not_text else None
    scope: Selector | None = None
    if ns_text:
        scope = namespace_scope(_selector(ns_text, f"{here} namespaceSelector"))
    elif namespace is not None:
        scope = LabelOp(NAMESPACE_KEY, "==", namespace)
    selector = _and(accounts, pods)
    if scope is not None and (selector is not None or not_text or ns_text):
        selector = _and(scope, selector)
    ports = _ports(entity.get("ports"), proto, here) if side == "destination" else ()
    not_ports = _ports(entity.get("notPorts"), proto, here) if side == "destination" else ()
    service = None
    raw_service = entity.get("services")
    if raw_service:
        if not isinstance(raw_service, dict) or not raw_service.get("name"):
            raise InputError(f"{here}: services needs a name.")
        service_ns = raw_service.get("namespace") or namespace
        if service_ns is None:
            raise InputError(f"{here}: services in a global policy needs a namespace.")
        service = (str(service_ns), str(raw_service["name"]))
        _note(notes, _NOTE_SERVICES)
    return EntityMatch(
        selector, not_selector, nets, not_nets, ports, not_ports, domains, sets, service
    )


def _ports(raw: Any, proto: str | None, where: str) -> tuple[PortSpec, ...]:
    if not raw:
        return ()
    if proto not in ("TCP", "UDP", "SCTP"):
        raise InputError(
            f"{where}: ports need protocol TCP, UDP or SCTP (Calico refuses them otherwise)."
        )
    out = []
    for item in raw:
        text = str(item)
        if isinstance(item, int) or text.isdigit():
            out.append(PortSpec(proto, int(text)))
        elif re.fullmatch(r"\d+:\d+", text):
            low, high = (int(x) for x in text.split(":"))
            out.append(PortSpec(proto, low, high))
        else:
            out.append(PortSpec(proto, name=text))
    return tuple(out)


def _network(text: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a CIDR.") from None
