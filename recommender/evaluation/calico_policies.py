"""Read Calico ``projectcalico.org/v3`` policies into the tiers :mod:`.precedence` judges.

Kinds: Tier, NetworkPolicy, GlobalNetworkPolicy, their staged forms (StagedNetworkPolicy,
StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy: judged as if enforced, which is what
a staged rollout previews; ``stagedAction: Delete`` removes nothing and is skipped),
NetworkSet and GlobalNetworkSet (rules that select them match their ``nets``). Calico's
semantics, as in its documentation and ``shared/tools/examples/semantics`` case T:

* tiers by ascending ``order`` (none: last), policies in a tier by ``order`` (none: last),
  rules in order; the first Allow or Deny decides, Pass jumps to the next tier, and a tier
  that selects the endpoint but matches nothing ends with its ``defaultAction`` (Deny unless
  Pass); Kubernetes NetworkPolicies sit in the ``default`` tier (order 1,000,000) with order
  1000; no tier applying (or every tier passing) leaves the namespace profile: allow;
* a policy without ``types`` applies to Ingress, to Egress when it has only egress rules, and
  to both when it has both;
* in a rule, ``selector`` without ``namespaceSelector`` means the policy's own namespace
  (every namespace for a global policy), ``namespaceSelector: global()`` the global network
  sets; a selector matches pods and network sets by their labels; ``nets``/``notNets`` match
  addresses; ``domains`` match the DNS names the flows resolved; destination ``ports`` need a
  ``protocol``.

Selectors are Calico expressions joined by ``&&`` (``==``, ``!=``, ``in``, ``not in``,
``has()``, ``!has()``, ``all()``); what the tiers cannot express faithfully (``||``,
``notSelector``, source ports, ``http`` or ``ipVersion`` matches, a rule narrowing the
policy's own endpoints) raises :class:`~recommender.errors.UnsupportedDialectError` rather
than being judged wrongly.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ..guardrails.model import Guardrails, Subject
from ..policy.model import Direction, LabelSelector, Peer, PolicySet, PortSpec, Rule
from ..policy.reader import parse_networkpolicy
from .precedence import (
    DEFAULT_TIER_ORDER,
    NETWORK_POLICY_ORDER,
    CalicoPolicy,
    CalicoTier,
    guardrail_tiers,
)

__all__ = ["CALICO_GROUP", "parse_calico_selector", "read_calico_tiers"]

CALICO_GROUP: Final = "projectcalico.org"
_NAMESPACE_NAME: Final = "kubernetes.io/metadata.name"
_ACTIONS: Final = {"Allow": "allow", "Deny": "deny", "Pass": "pass"}
_PROTOCOLS: Final = {
    "tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMP", "icmpv6": "ICMPv6",
    "udplite": "UDPLite", "6": "TCP", "17": "UDP", "132": "SCTP", "1": "ICMP", "58": "ICMPv6",
}
_TOKEN: Final = re.compile(
    r"\s*(?:(?P<all>all\(\))|(?P<global>global\(\))|(?P<nothas>!\s*has\(\s*(?P<nk>[^)\s]+)\s*\))"
    r"|(?P<has>has\(\s*(?P<hk>[^)\s]+)\s*\))"
    r"|(?P<key>[A-Za-z0-9_./-]+)\s*(?P<op>==|!=|not\s+in|in)\s*"
    r"(?:'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|\{(?P<set>[^}]*)\}))\s*"
)
_SET_ITEM: Final = re.compile(r"\s*(?:'([^']*)'|\"([^\"]*)\")\s*(?:,|$)")


def parse_calico_selector(text: str | None, where: str = "selector") -> LabelSelector | None:
    """A Calico selector expression as a label selector; None for ``global()``.

    Examples
    --------
    >>> parse_calico_selector("app == 'web' && has(tier) && env != 'dev'")
    LabelSelector(match_labels=(('app', 'web'),), match_expressions=(('env', 'NotIn', ('dev',)), ('tier', 'Exists', ())))
    """  # noqa: E501
    text = (text or "").strip()
    if not text:
        return LabelSelector()
    labels: list[tuple[str, str]] = []
    expressions: list[tuple[str, str, tuple[str, ...]]] = []
    is_global = False
    for part in _split_and(text, where):
        match = _TOKEN.fullmatch(part)
        if match is None:
            raise UnsupportedDialectError(
                f"{where}: the Calico selector {text!r} uses {part.strip()!r}, which is not "
                "evaluated (==, !=, in, not in, has(), !has(), all() joined by && are)."
            )
        if match["all"]:
            continue
        if match["global"]:
            is_global = True
        elif match["nothas"]:
            expressions.append((match["nk"], "DoesNotExist", ()))
        elif match["has"]:
            expressions.append((match["hk"], "Exists", ()))
        else:
            key, op = match["key"], " ".join(match["op"].split())
            if match["set"] is not None:
                values = _set_values(match["set"], text, where)
                expressions.append((key, "In" if op == "in" else "NotIn", values))
            else:
                value = match["sq"] if match["sq"] is not None else match["dq"]
                if op == "==":
                    labels.append((key, value))
                elif op == "!=":
                    expressions.append((key, "NotIn", (value,)))
                else:
                    raise UnsupportedDialectError(f"{where}: {op} needs a set in {text!r}.")
    if is_global:
        return None
    return LabelSelector(tuple(sorted(labels)), tuple(sorted(expressions)))


def _split_and(text: str, where: str) -> list[str]:
    """The terms of ``a && b && c`` (quotes respected); ``||`` and parentheses are refused."""
    parts, current, quote = [], [], ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
            current.append(c)
        elif c in "'\"":
            quote = c
            current.append(c)
        elif text.startswith("&&", i):
            parts.append("".join(current))
            current = []
            i += 1
        elif text.startswith("||", i) or (c == "(" and not "".join(current).strip().endswith(
            ("has", "all", "global"))):
            raise UnsupportedDialectError(
                f"{where}: the Calico selector {text!r} uses || or parentheses, which are not "
                "evaluated; write it as several rules."
            )
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def _set_values(body: str, text: str, where: str) -> tuple[str, ...]:
    values, pos = [], 0
    body = body.strip()
    while pos < len(body):
        match = _SET_ITEM.match(body, pos)
        if match is None or match.end() == pos:
            raise UnsupportedDialectError(f"{where}: cannot read the set in {text!r}.")
        values.append(match[1] if match[1] is not None else match[2])
        pos = match.end()
    return tuple(sorted(values))


#: The pod label a service account is judged by (set from the flows' labels: Hubble's
#: ``io.cilium.k8s.policy.serviceaccount``, Calico's own).
SERVICE_ACCOUNT_LABEL: Final = "projectcalico.org/serviceaccount"


def _service_accounts(text: str | None, names: tuple[str, ...], where: str) -> LabelSelector:
    """A service-account selector (``projectcalico.org/name`` terms) and names as a selector
    over the pods' service-account label."""
    terms: list[tuple[str, str, tuple[str, ...]]] = []
    labels: list[tuple[str, str]] = []
    if names:
        terms.append((SERVICE_ACCOUNT_LABEL, "In", tuple(sorted(names))))
    parsed = parse_calico_selector(text, f"{where} service account selector") if text else None
    if parsed is not None:
        for key, value in parsed.match_labels:
            if key != "projectcalico.org/name":
                raise UnsupportedDialectError(
                    f"{where}: service accounts are judged by name only, not by {key!r}."
                )
            labels.append((SERVICE_ACCOUNT_LABEL, value))
        for key, op, values in parsed.match_expressions:
            if key != "projectcalico.org/name":
                raise UnsupportedDialectError(
                    f"{where}: service accounts are judged by name only, not by {key!r}."
                )
            terms.append((SERVICE_ACCOUNT_LABEL, op, values))
    return LabelSelector(tuple(sorted(labels)), tuple(sorted(terms)))


def _and(a: LabelSelector, b: LabelSelector) -> LabelSelector:
    return LabelSelector(
        tuple(sorted(a.match_labels + b.match_labels)),
        tuple(sorted(a.match_expressions + b.match_expressions)),
    )


def _namespace_selector(selector: LabelSelector) -> LabelSelector:
    """Calico names a namespace ``projectcalico.org/name``; Kubernetes labels it by name too."""

    def key(k: str) -> str:
        return _NAMESPACE_NAME if k == "projectcalico.org/name" else k

    return LabelSelector(
        tuple(sorted((key(k), v) for k, v in selector.match_labels)),
        tuple(sorted((key(k), op, vs) for k, op, vs in selector.match_expressions)),
    )


@dataclass(frozen=True)
class _NetworkSet:
    namespace: str | None  # None: a GlobalNetworkSet
    labels: Mapping[str, str]
    nets: tuple[str, ...]


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
    sets: list[_NetworkSet] = []
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
            nets = tuple(str(n) for n in spec.get("nets") or ())
            for net in nets:
                _network(net, where)
            labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            namespace = str(meta.get("namespace") or "default") if kind == "NetworkSet" else None
            sets.append(_NetworkSet(namespace, labels, nets))
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
        policy_obj = _policy(where, doc, sets)
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


def _policy(where: str, doc: Mapping[str, Any], sets: list[_NetworkSet]) -> CalicoPolicy:
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
    selector = parse_calico_selector(spec.get("selector"), f"{where} selector")
    if selector is None:
        raise InputError(f"{where}: global() is not a policy selector.")
    sa_text = spec.get("serviceAccountSelector")
    if sa_text:
        selector = _and(selector, _service_accounts(sa_text, (), where))
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
    rules: dict[Direction, tuple[Rule, ...]] = {}
    sides: tuple[tuple[Direction, list[Any]], ...] = (
        ("ingress", ingress_raw), ("egress", egress_raw)
    )
    for direction, raw in sides:
        out: list[Rule] = []
        for index, item in enumerate(raw):
            rule = _rule(item, direction, namespace, sets, f"{where} {direction} rule {index}")
            if rule is not None:
                out.append(rule)
        rules[direction] = tuple(out)
    subject = None
    if is_global:
        ns = parse_calico_selector(spec.get("namespaceSelector"), f"{where} namespaceSelector")
        subject = Subject(_namespace_selector(ns or LabelSelector()), selector)
    key = name if is_global else f"{namespace}/{name}"
    return CalicoPolicy(
        key,
        math.inf if order is None else float(order),
        types,
        rules["ingress"],
        rules["egress"],
        subject=subject,
        namespace=namespace,
        selector=selector,
    )


def _rule(
    raw: Any, direction: Direction, namespace: str | None, sets: list[_NetworkSet], where: str
) -> Rule | None:
    if not isinstance(raw, dict):
        raise InputError(f"{where} is not a mapping.")
    action = raw.get("action")
    if action == "Log":
        return None  # logs, decides nothing
    if action not in _ACTIONS:
        raise InputError(f"{where}: action {action!r} is not Allow, Deny, Pass or Log.")
    for key in ("http", "ipVersion", "notProtocol", "notICMP"):
        if raw.get(key) is not None:
            raise UnsupportedDialectError(f"{where} matches on {key}, which is not evaluated.")
    protocol = raw.get("protocol")
    proto = None
    if protocol is not None:
        proto = _PROTOCOLS.get(str(protocol).lower())
        if proto is None:
            raise UnsupportedDialectError(f"{where}: protocol {protocol!r} is not evaluated.")
    source = raw.get("source") or {}
    destination = raw.get("destination") or {}
    peer_side, own_side = (source, destination) if direction == "ingress" else (
        destination, source)
    own = {k: v for k, v in own_side.items() if k != "ports" or direction == "egress"}
    if direction == "egress" and own:
        raise UnsupportedDialectError(
            f"{where}: an egress rule with source {sorted(own)} narrows the policy's own "
            "endpoints, which is not evaluated."
        )
    if direction == "ingress" and {k for k in own if k != "ports"}:
        raise UnsupportedDialectError(
            f"{where}: an ingress rule with destination "
            f"{sorted(k for k in own if k != 'ports')} narrows the policy's own endpoints, which "
            "is not evaluated."
        )
    if source.get("ports") or source.get("notPorts") or destination.get("notPorts"):
        raise UnsupportedDialectError(f"{where}: source ports and notPorts are not evaluated.")
    ports = _ports(destination.get("ports"), proto, where)
    peers = _peers(peer_side, direction, namespace, sets, where)
    if peers is None:
        return None  # selects nothing (global() with no network set)
    return Rule(direction, peers, ports, _ACTIONS[action])  # type: ignore[arg-type]


def _ports(raw: Any, proto: str | None, where: str) -> tuple[PortSpec, ...]:
    if not raw:
        return (PortSpec(proto),) if proto is not None else ()
    if proto is None:
        raise InputError(f"{where}: ports need a protocol (Calico refuses them without one).")
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


def _network(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a CIDR.") from None


def _peers(
    entity: Mapping[str, Any],
    direction: Direction,
    namespace: str | None,
    sets: list[_NetworkSet],
    where: str,
) -> tuple[Peer, ...] | None:
    """The rule's peers (() for every peer); None when they select nothing at all."""
    for key in ("notSelector", "services"):
        if entity.get(key):
            raise UnsupportedDialectError(f"{where} matches on {key}, which is not evaluated.")
    accounts = entity.get("serviceAccounts")
    nets = [_network(str(n), where) for n in entity.get("nets") or ()]
    not_nets = tuple(_network(str(n), where) for n in entity.get("notNets") or ())
    selector_text = entity.get("selector")
    ns_text = entity.get("namespaceSelector")
    domains = tuple(str(d) for d in entity.get("domains") or ())
    if domains:
        if direction != "egress" or selector_text or ns_text or nets:
            raise UnsupportedDialectError(f"{where}: domains go alone in an egress destination.")
        return (Peer("entity", entity="fqdn", dns_names=domains),)
    if nets and (selector_text or ns_text):
        raise UnsupportedDialectError(
            f"{where}: a selector together with nets (both must match) is not evaluated."
        )
    if not_nets and not nets:
        raise UnsupportedDialectError(f"{where}: notNets without nets is not evaluated.")
    if nets:
        return tuple(Peer("cidr", cidr=n, except_=not_nets) for n in nets)
    if selector_text is None and ns_text is None and not accounts:
        return ()
    pods = parse_calico_selector(selector_text, f"{where} selector") if selector_text else None
    if selector_text and pods is None:
        raise InputError(f"{where}: global() belongs in namespaceSelector.")
    if accounts:
        if nets:
            raise UnsupportedDialectError(f"{where}: serviceAccounts with nets is not evaluated.")
        by_account = _service_accounts(
            accounts.get("selector"), tuple(str(n) for n in accounts.get("names") or ()), where
        )
        pods = by_account if pods is None else _and(pods, by_account)
    ns_sel = parse_calico_selector(ns_text, f"{where} namespaceSelector") if ns_text else None
    peers: list[Peer] = []
    if ns_text and ns_sel is None:  # global(): the global network sets only
        scope: list[_NetworkSet] = [s for s in sets if s.namespace is None]
    elif ns_sel is not None:
        ns_sel = _namespace_selector(ns_sel)
        peers.append(Peer("pods", namespace_selector=ns_sel, pod_selector=pods))
        scope = [s for s in sets if s.namespace is not None]  # judged by namespace label below
    elif namespace is None:  # a global policy: every namespace, and the global sets
        peers.append(Peer("pods", namespace_selector=LabelSelector(), pod_selector=pods))
        scope = [s for s in sets if s.namespace is None]
    else:
        peers.append(Peer("pods", pod_selector=pods))
        scope = [s for s in sets if s.namespace == namespace]
    for network_set in scope:
        if ns_sel is not None and not ns_sel.matches(
            {_NAMESPACE_NAME: network_set.namespace or ""}
        ):
            continue
        if pods is None or pods.matches(dict(network_set.labels)):
            peers.extend(Peer("cidr", cidr=_network(n, where)) for n in network_set.nets)
    if not peers:
        return None
    return tuple(peers)
