"""Render a :class:`~recommender.policy.model.PolicySet` as Calico ``projectcalico.org/v3`` objects.

One Calico NetworkPolicy (or StagedNetworkPolicy) per model policy, in a recommendations
:class:`Tier` emitted first, with ``order``; a GlobalNetworkSet per address group (inventory
entry) that rules reference by selector; host policies as GlobalNetworkPolicy over
HostEndpoint labels. Model semantics are kept exactly: a Calico tier whose policies select an
endpoint ends in a deny, so the per-namespace ``default-deny`` (selector ``all()``, no rules)
isolates every pod of the namespace just as the Kubernetes default deny does, and allow rules
come from the same peers and ports.

Calico selectors are expressions (``app == 'web' && has(tier)``); values are quoted with single
quotes, or double quotes when they hold a single quote; a value holding both, or a key outside
Calico's key syntax, raises :class:`~recommender.errors.SynthesisError` (Calico has no escapes).

See ``docs/dialects.md`` for the mapping table and the options.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import SynthesisError
from ._names import is_dns1123_label, is_label_key
from .model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = [
    "ADDRESS_GROUP_LABEL",
    "API_VERSION",
    "CalicoOptions",
    "calico_selector",
    "quote_value",
    "render_calico",
]

API_VERSION: Final = "projectcalico.org/v3"
#: The label every GlobalNetworkSet written here carries; rules select the set by it.
ADDRESS_GROUP_LABEL: Final = "recommender.io/address-group"
#: Calico's label keys in selectors (its lexer): letters, digits, ``_``, ``.``, ``/``, ``-``.
_CALICO_KEY: Final = re.compile(r"[A-Za-z0-9_./-]{1,512}")
_ACTIONS: Final = {"allow": "Allow", "deny": "Deny", "pass": "Pass"}
_TYPES: Final = {"ingress": "Ingress", "egress": "Egress"}
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP", "UDPLite", "ICMP", "ICMPv6")
_PORT_PROTOCOLS: Final = ("TCP", "UDP", "SCTP", "UDPLite")
#: Control characters never reach a selector (no Kubernetes label holds one).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class CalicoOptions:
    """How the Calico dialect renders.

    Attributes
    ----------
    tier
        The tier of the recommended policies (emitted as a Tier object); None puts them in the
        ``default`` tier with no Tier object and no ``spec.tier`` (what network-config-analyzer
        reads).
    tier_order
        The tier's ``order``: after ``kube-admin`` (1000) and before ``default``.
    policy_order
        ``order`` of the per-workload policies; the default deny gets ``policy_order * 10``.
    staged
        StagedNetworkPolicy and StagedGlobalNetworkPolicy instead (``stagedAction: Set``): a
        safe rollout that only records what the policies would do.
    domains
        Egress to external addresses with observed DNS names uses ``destination.domains``
        instead of ``nets`` (Calico Enterprise and Calico Cloud only).
    service_accounts
        Select workloads by their service account where it is known
        (``serviceAccountSelector`` and rule ``serviceAccounts``) instead of by labels.
    group_labels
        Extra labels of each address group's GlobalNetworkSet (from the inventory).
    network_sets
        The plain external CIDRs of each rule of a namespaced policy go to a NetworkSet in the
        policy's namespace (named ``<policy>-<direction>-<n>``) that the rule selects by its
        ``recommender.io/address-group`` label, instead of inline ``nets``.
    """

    tier: str | None = "recommendations"
    tier_order: int = 5000
    policy_order: int = 100
    staged: bool = False
    domains: bool = False
    service_accounts: bool = False
    group_labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    network_sets: bool = False


def quote_value(value: str, where: str = "selector") -> str:
    """A Calico selector string literal for ``value``.

    Single-quoted, or double-quoted when the value holds a single quote; Calico's selector
    language has no escapes, so a value with both quotes (or a control character) is refused.

    Raises
    ------
    SynthesisError
        If ``value`` cannot be written as a Calico string literal.

    Examples
    --------
    >>> quote_value("web"), quote_value("it's")
    ("'web'", '"it\\'s"')
    """
    if _CONTROL.search(value):
        raise SynthesisError(f"{where}: label value {value!r} holds a control character.")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SynthesisError(
        f"{where}: label value {value!r} holds both quote characters, which a Calico selector "
        "cannot express."
    )


def _key(key: str, where: str) -> str:
    if not _CALICO_KEY.fullmatch(key):
        raise SynthesisError(
            f"{where}: label key {key!r} cannot be written in a Calico selector (letters, "
            "digits, '_', '.', '/' and '-' only)."
        )
    return key


def calico_selector(selector: LabelSelector, where: str = "selector") -> str:
    """A label selector as a Calico selector expression; the empty selector is ``all()``.

    Examples
    --------
    >>> calico_selector(LabelSelector((("app", "web"),), (("tier", "Exists", ()),)))
    "app == 'web' && has(tier)"
    >>> calico_selector(LabelSelector())
    'all()'
    """
    terms: list[str] = []
    for key, value in selector.match_labels:
        terms.append(f"{_key(key, where)} == {quote_value(value, where)}")
    for key, op, values in selector.match_expressions:
        k = _key(key, where)
        listed = ", ".join(quote_value(v, where) for v in values)
        if op == "In" and values:
            terms.append(f"{k} in {{{listed}}}")
        elif op == "NotIn" and values:
            terms.append(f"{k} not in {{{listed}}}")
        elif op == "Exists" and not values:
            terms.append(f"has({k})")
        elif op == "DoesNotExist" and not values:
            terms.append(f"!has({k})")
        else:
            raise SynthesisError(f"{where}: selector operator {op} on {key!r} is not valid here.")
    return " && ".join(terms) if terms else "all()"


def render_calico(
    policy_set: PolicySet, options: CalicoOptions | None = None
) -> list[dict[str, Any]]:
    """Render ``policy_set`` as Calico objects.

    Parameters
    ----------
    policy_set : PolicySet
        The policies (and host policies).
    options : CalicoOptions, optional
        Tier, order, staging, domains, service accounts.

    Returns
    -------
    list of dict
        The Tier (when ``options.tier`` is set), GlobalNetworkSets of the address groups,
        NetworkSets (with ``network_sets``), GlobalNetworkPolicies of the host policies, then
        one NetworkPolicy per policy in PolicySet order. Cluster-scoped objects have no
        ``metadata.namespace``.

    Raises
    ------
    SynthesisError
        If a name, selector or value cannot be expressed in Calico, or two policies collide.

    Examples
    --------
    >>> deny = Policy("default-deny", "shop", LabelSelector())
    >>> render_calico(PolicySet((deny,)), CalicoOptions(tier=None))[0]["spec"]
    {'order': 1000, 'selector': 'all()', 'types': ['Ingress', 'Egress']}
    """
    options = options or CalicoOptions()
    if options.tier is not None and (
        not is_dns1123_label(options.tier) or options.tier == "default"
    ):
        raise SynthesisError(
            f"Calico tier {options.tier!r} must be a DNS-1123 label other than 'default'."
        )
    out: list[dict[str, Any]] = []
    if options.tier is not None:
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Tier",
                "metadata": {"name": options.tier},
                "spec": {"defaultAction": "Deny", "order": options.tier_order},
            }
        )
    out.extend(_network_sets(policy_set, dict(options.group_labels)))
    seen: set[tuple[str, str]] = set()
    hosts: list[dict[str, Any]] = []
    for policy in policy_set.host_policies:
        manifest = _render_policy(policy, options, host=True)
        key = ("", manifest["metadata"]["name"])
        if key in seen:
            raise SynthesisError(f"Two host policies are named {policy.name!r}.")
        seen.add(key)
        hosts.append(manifest)
    sets: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    for policy in policy_set.policies:
        key = (policy.namespace, policy.name)
        if key in seen:
            raise SynthesisError(
                f"Two policies are named {policy.name!r} in namespace {policy.namespace!r}."
            )
        seen.add(key)
        policies.append(_render_policy(policy, options, host=False, sets=sets))
    names = [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in sets]
    if len(set(names)) != len(names):
        raise SynthesisError("Two network sets of one namespace would share a name.")
    return out + sets + hosts + policies


def _network_sets(
    policy_set: PolicySet, labels: dict[str, tuple[tuple[str, str], ...]]
) -> list[dict[str, Any]]:
    """One GlobalNetworkSet per address group: the union of its peers' CIDRs."""
    groups: dict[str, set[str]] = {}
    for policy in (*policy_set.host_policies, *policy_set.policies):
        for rule in policy.rules:
            for peer in rule.peers:
                if peer.kind == "cidr" and peer.group is not None and peer.cidr is not None:
                    if peer.except_:
                        raise SynthesisError(
                            f"Address group {peer.group!r} has a CIDR with exceptions, which a "
                            "network set cannot hold."
                        )
                    groups.setdefault(peer.group, set()).add(peer.cidr)
    out = []
    for name in sorted(groups):
        if not is_dns1123_label(name):
            raise SynthesisError(f"Address group name {name!r} is not a DNS-1123 label.")
        nets = sorted(groups[name], key=_net_key)
        out.append(
            {
                "apiVersion": API_VERSION,
                "kind": "GlobalNetworkSet",
                "metadata": {
                    "name": name,
                    "labels": dict(
                        sorted({**dict(labels.get(name, ())), ADDRESS_GROUP_LABEL: name}.items())
                    ),
                },
                "spec": {"nets": nets},
            }
        )
    return out


def _net_key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def _render_policy(
    policy: Policy,
    options: CalicoOptions,
    *,
    host: bool,
    sets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One (Staged)(Global)NetworkPolicy."""
    where = f"Policy {policy.name!r}" + ("" if host else f" in namespace {policy.namespace!r}")
    if not is_dns1123_label(policy.name):
        raise SynthesisError(f"{where}: the name is not a DNS-1123 label.")
    if not host and not is_dns1123_label(policy.namespace):
        raise SynthesisError(f"{where}: the namespace is not a DNS-1123 label.")
    tier = policy.tier or options.tier
    if tier is not None and tier != "default" and not is_dns1123_label(tier):
        raise SynthesisError(f"{where}: tier {tier!r} is not a DNS-1123 label.")
    name = policy.name if tier in (None, "default") else f"{tier}.{policy.name}"
    kind = ("Staged" if options.staged else "") + ("Global" if host else "") + "NetworkPolicy"
    metadata: dict[str, Any] = {"name": name}
    if not host:
        metadata["namespace"] = policy.namespace
    if policy.labels:
        metadata["labels"] = _metadata(policy.labels, where, "label")
    if policy.annotations:
        metadata["annotations"] = _metadata(policy.annotations, where, "annotation")
    spec: dict[str, Any] = {}
    if tier is not None and tier != "default":
        spec["tier"] = tier
    if options.staged:
        spec["stagedAction"] = "Set"
    default_order = options.policy_order * 10 if _is_default_deny(policy) else options.policy_order
    spec["order"] = policy.precedence if policy.precedence is not None else default_order
    if options.service_accounts and policy.service_account is not None and not host:
        spec["selector"] = "all()"
        spec["serviceAccountSelector"] = (
            f"projectcalico.org/name == {quote_value(policy.service_account, where)}"
        )
    else:
        spec["selector"] = calico_selector(policy.selector, where)
    unknown = sorted(set(policy.policy_types) - set(_TYPES))
    if unknown or not policy.policy_types:
        raise SynthesisError(f"{where} has policy types {list(policy.policy_types)}.")
    spec["types"] = [v for k, v in _TYPES.items() if k in policy.policy_types]
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        if not rules:
            continue
        if direction not in policy.policy_types:
            raise SynthesisError(
                f"{where} has {direction} rules but does not list {direction} in its types."
            )
        rendered: list[dict[str, Any]] = []
        for i, rule in enumerate(rules, 1):
            if rule.direction != direction:
                raise SynthesisError(f"{where} has a {rule.direction} rule among {direction}.")
            network_set = None
            if options.network_sets and sets is not None and not host:
                network_set = (policy.namespace, f"{policy.name}-{direction}-{i}", sets)
            rendered.extend(_rules(rule, options, where, host=host, network_set=network_set))
        spec[direction] = rendered
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _is_default_deny(policy: Policy) -> bool:
    return policy.selector.is_empty and not policy.ingress and not policy.egress


def _metadata(pairs: Iterable[tuple[str, str]], where: str, what: str) -> dict[str, str]:
    for key, _value in pairs:
        if not is_label_key(key):
            raise SynthesisError(f"{where}: metadata {what} key {key!r} is not valid.")
    return dict(sorted(pairs))


def _rules(
    rule: Rule,
    options: CalicoOptions,
    where: str,
    *,
    host: bool,
    network_set: tuple[str, str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """A model rule as Calico rules: one per peer entity and protocol (a Calico rule names one
    protocol and one source/destination entity; plain CIDR peers of one IP version share one)."""
    action = _ACTIONS.get(rule.action)
    if action is None:
        raise SynthesisError(f"{where} has a rule with unknown action {rule.action!r}.")
    entities: list[dict[str, Any]] = []
    plain_nets: dict[int, list[str]] = {}
    for peer in rule.peers:
        if (
            peer.kind == "cidr"
            and not peer.except_
            and peer.group is None
            and not (options.domains and peer.dns_names and rule.direction == "egress")
        ):
            net = _network(peer.cidr, where)
            plain_nets.setdefault(net.version, []).append(peer.cidr or "")
            continue
        entity = _entity(peer, rule, options, where, host=host)
        if entity not in entities:  # the CIDRs of one address group select one network set
            entities.append(entity)
    if plain_nets and network_set is not None:
        namespace, name, sets = network_set
        nets = [n for version in sorted(plain_nets) for n in plain_nets[version]]
        sets.append(
            {
                "apiVersion": API_VERSION,
                "kind": "NetworkSet",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {ADDRESS_GROUP_LABEL: name},
                },
                "spec": {"nets": nets},
            }
        )
        entities.append({"selector": f"{ADDRESS_GROUP_LABEL} == {quote_value(name, where)}"})
        plain_nets = {}
    for version in sorted(plain_nets):
        entities.append({"nets": plain_nets[version]})
    if not rule.peers:
        entities.append({})
    out: list[dict[str, Any]] = []
    for protocol, ports in _protocol_groups(rule.ports, where):
        for entity in entities:
            calico_rule: dict[str, Any] = {"action": action}
            if protocol is not None:
                calico_rule["protocol"] = protocol
            if rule.direction == "ingress":
                if entity:
                    calico_rule["source"] = dict(entity)
                if ports:
                    calico_rule["destination"] = {"ports": ports}
            else:
                destination = dict(entity)
                if ports:
                    destination["ports"] = ports
                if destination:
                    calico_rule["destination"] = destination
            out.append(calico_rule)
    return out


def _entity(
    peer: Peer, rule: Rule, options: CalicoOptions, where: str, *, host: bool
) -> dict[str, Any]:
    """The source (ingress) or destination (egress) of a Calico rule for one peer."""
    if peer.kind == "pods":
        if peer.cidr is not None or peer.except_ or peer.entity is not None:
            raise SynthesisError(f"{where} has a pods peer that also sets a CIDR or entity.")
        out: dict[str, Any] = {}
        use_sa = options.service_accounts and peer.service_account is not None
        if use_sa:
            out["serviceAccounts"] = {"names": [peer.service_account]}
            if peer.namespace_selector is None:
                out["selector"] = "all()"
        else:
            out["selector"] = calico_selector(peer.pod_selector or LabelSelector(), where)
        if peer.namespace_selector is not None:
            out["namespaceSelector"] = calico_selector(peer.namespace_selector, where)
        elif host:
            raise SynthesisError(
                f"{where}: a host policy's pod peer needs a namespace selector (a global policy "
                "has no namespace of its own)."
            )
        return out
    if peer.kind == "cidr":
        if peer.namespace_selector is not None or peer.pod_selector is not None:
            raise SynthesisError(f"{where} has a CIDR peer that also sets a selector.")
        network = _network(peer.cidr, where)
        if peer.group is not None:
            return {
                "selector": f"{ADDRESS_GROUP_LABEL} == {quote_value(peer.group, where)}",
                "namespaceSelector": "global()",
            }
        if options.domains and peer.dns_names and rule.direction == "egress":
            return {"domains": list(peer.dns_names)}
        out = {"nets": [peer.cidr]}
        if peer.except_:
            for item in peer.except_:
                inner = _network(item, where)
                if inner.version != network.version or not inner.subnet_of(network):  # type: ignore[arg-type]
                    raise SynthesisError(
                        f"{where}: except CIDR {item!r} is not inside {peer.cidr!r}."
                    )
            out["notNets"] = list(peer.except_)
        return out
    if peer.kind == "entity":
        raise SynthesisError(
            f"{where} has an entity peer {peer.entity!r}, which Calico cannot express; convert "
            "entities to CIDR peers first."
        )
    raise SynthesisError(f"{where} has a peer of unknown kind {peer.kind!r}.")


def _network(text: str | None, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if text is None:
        raise SynthesisError(f"{where} has a CIDR peer without a CIDR.")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SynthesisError(f"{where}: {text!r} is not a CIDR.") from None


def _protocol_groups(
    ports: tuple[PortSpec, ...], where: str
) -> list[tuple[str | None, list[int | str]]]:
    """Ports grouped by protocol in first-seen order; ``[(None, [])]`` for every protocol."""
    if not ports:
        return [(None, [])]
    groups: dict[str, list[int | str]] = {}
    whole: set[str] = set()
    for port in ports:
        protocol = _protocol(port.protocol, where)
        groups.setdefault(protocol, [])
        if port.name is not None:
            if port.port is not None or port.end_port is not None:
                raise SynthesisError(f"{where}: named port {port.name!r} also has a number.")
            groups[protocol].append(port.name)
        elif port.port is None:
            if port.end_port is not None:
                raise SynthesisError(f"{where}: end port {port.end_port} has no start port.")
            whole.add(protocol)
        else:
            if not 1 <= port.port <= 65535 or (
                port.end_port is not None and not port.port <= port.end_port <= 65535
            ):
                raise SynthesisError(f"{where}: {protocol} port {port.port} is not in 1..65535.")
            if protocol not in _PORT_PROTOCOLS:
                raise SynthesisError(f"{where}: protocol {protocol} takes no ports.")
            groups[protocol].append(
                port.port if port.end_port is None else f"{port.port}:{port.end_port}"
            )
    return [(p, [] if p in whole else values) for p, values in groups.items()]


def _protocol(protocol: str, where: str) -> str:
    for known in _PROTOCOLS:
        if protocol.upper() == known.upper():
            return known
    raise SynthesisError(f"{where}: protocol {protocol!r} is not one Calico knows.")
