"""Names for machines outside the cluster: the inventory file (``--inventory FILE``).

A YAML list of entries, each naming a group of addresses (VMs, databases, appliances)::

    - name: billing-db              # a DNS-1123 label, unique
      cidrs: [10.20.0.5/32, 10.20.0.6/32]
      labels: {role: database}      # optional Kubernetes labels (Calico network set labels)

Egress or ingress peers whose addresses fall inside an entry become that entry: every CIDR of
the entry, marked with its name (``Peer.group``), so Calico renders a GlobalNetworkSet the rules
select, Kubernetes ipBlocks named in the ``recommender.io/address-groups`` annotation, and
Cilium CIDR sets named the same way. Using the whole entry is a generalisation the user asks
for by naming the machines; see ``docs/dialects.md``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import yaml

from ..errors import ConfigError
from ..policy._names import is_dns1123_label, is_label_key, is_label_value
from ..policy.model import Peer, Policy, PolicySet, Rule

__all__ = ["GROUPS_ANNOTATION", "InventoryEntry", "apply_inventory", "load_inventory"]

#: The policy annotation naming the address groups its ipBlocks stand for.
GROUPS_ANNOTATION: Final = "recommender.io/address-groups"
#: Most entries an inventory may hold.
MAX_ENTRIES: Final = 10_000
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class InventoryEntry:
    """One named group of addresses outside the cluster."""

    name: str
    cidrs: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()

    def networks(self) -> list[_Net]:
        """The CIDRs, parsed."""
        return [ipaddress.ip_network(c) for c in self.cidrs]


def load_inventory(path: str | Path) -> tuple[InventoryEntry, ...]:
    """Read and validate an inventory file.

    Raises
    ------
    ConfigError
        Naming the file, the entry and what is wrong: not a list, a name that is not a unique
        DNS-1123 label, a CIDR that does not parse or has host bits set, CIDRs of two entries
        that overlap, labels that are not Kubernetes labels, unknown keys.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}.") from None
    return parse_inventory(data, str(path))


def parse_inventory(data: Any, origin: str = "inventory") -> tuple[InventoryEntry, ...]:
    """Validate inventory data (a list of mappings); see :func:`load_inventory`."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"{origin}: expected a list of entries (name, cidrs, labels).")
    if len(data) > MAX_ENTRIES:
        raise ConfigError(f"{origin}: more than {MAX_ENTRIES} entries.")
    entries: list[InventoryEntry] = []
    names: set[str] = set()
    owners: list[tuple[_Net, str]] = []
    for i, item in enumerate(data, 1):
        where = f"{origin}: entry {i}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping with name, cidrs and labels.")
        unknown = sorted(set(map(str, item)) - {"name", "cidrs", "labels"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}.")
        name = item.get("name")
        if not isinstance(name, str) or not is_dns1123_label(name):
            raise ConfigError(
                f"{where}: name {name!r} must be a DNS-1123 label (lowercase letters, digits "
                "and '-', at most 63 characters)."
            )
        if name in names:
            raise ConfigError(f"{where}: name {name!r} is used twice.")
        names.add(name)
        where = f"{origin}: entry {name!r}"
        cidrs = item.get("cidrs")
        if isinstance(cidrs, str):
            cidrs = [cidrs]
        if not isinstance(cidrs, list) or not cidrs:
            raise ConfigError(f"{where}: cidrs must be a non-empty list of CIDRs.")
        parsed: list[_Net] = []
        for cidr in cidrs:
            if not isinstance(cidr, str):
                raise ConfigError(f"{where}: {cidr!r} is not a CIDR.")
            try:
                net = ipaddress.ip_network(cidr.strip())
            except ValueError:
                raise ConfigError(
                    f"{where}: {cidr!r} is not a CIDR with its host bits zero (such as "
                    "10.0.0.0/24 or 10.0.0.5/32)."
                ) from None
            for other, owner in owners:
                if net.version == other.version and net.overlaps(other):
                    raise ConfigError(
                        f"{where}: {net} overlaps {other} of entry {owner!r}; an address must "
                        "belong to one entry."
                    )
            owners.append((net, name))
            parsed.append(net)
        labels = item.get("labels") or {}
        if not isinstance(labels, dict):
            raise ConfigError(f"{where}: labels must be a mapping.")
        for key, value in labels.items():
            if not isinstance(key, str) or not is_label_key(key):
                raise ConfigError(f"{where}: label key {key!r} is not a Kubernetes label key.")
            if not isinstance(value, str) or not is_label_value(value):
                raise ConfigError(
                    f"{where}: label {key!r} has value {value!r}, which is not a Kubernetes "
                    "label value (quote numbers and booleans)."
                )
        ordered = sorted(parsed, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        entries.append(
            InventoryEntry(name, tuple(str(n) for n in ordered), tuple(sorted(labels.items())))
        )
    return tuple(sorted(entries, key=lambda e: e.name))


def group_labels(entries: tuple[InventoryEntry, ...]) -> Mapping[str, tuple[tuple[str, str], ...]]:
    """Labels per entry name (for Calico network sets)."""
    return {e.name: e.labels for e in entries}


def apply_inventory(policy_set: PolicySet, entries: tuple[InventoryEntry, ...]) -> PolicySet:
    """Replace CIDR peers inside an inventory entry by the entry's CIDRs, named by the entry.

    A CIDR peer with exceptions, or one not inside a single entry, is left as it is.
    Policies that use a group get the :data:`GROUPS_ANNOTATION` annotation
    (``name=cidr,cidr;name=...``).
    """
    if not entries:
        return policy_set
    nets = [(net, entry) for entry in entries for net in entry.networks()]

    def owner(peer: Peer) -> InventoryEntry | None:
        if peer.kind != "cidr" or peer.cidr is None or peer.except_:
            return None
        network = ipaddress.ip_network(peer.cidr, strict=False)
        for net, entry in nets:
            if network.version == net.version and network.subnet_of(net):  # type: ignore[arg-type]
                return entry
        return None

    def rules(policy_rules: tuple[Rule, ...], used: dict[str, InventoryEntry]) -> tuple[Rule, ...]:
        out = []
        for rule in policy_rules:
            kept: list[Peer] = []
            grouped: dict[str, InventoryEntry] = {}
            for peer in rule.peers:
                entry = owner(peer)
                if entry is None:
                    kept.append(peer)
                else:
                    grouped[entry.name] = entry
            if not grouped:
                out.append(rule)
                continue
            used.update(grouped)
            added = [
                Peer("cidr", cidr=cidr, group=name, note=f"inventory entry {name}")
                for name, entry in sorted(grouped.items())
                for cidr in entry.cidrs
            ]
            out.append(replace(rule, peers=tuple(kept + added)))
        return tuple(out)

    def apply(policy: Policy) -> Policy:
        used: dict[str, InventoryEntry] = {}
        ingress, egress = rules(policy.ingress, used), rules(policy.egress, used)
        if not used:
            return policy
        text = ";".join(f"{n}={','.join(e.cidrs)}" for n, e in sorted(used.items()))
        annotations = dict(policy.annotations)
        annotations[GROUPS_ANNOTATION] = text
        return replace(
            policy, ingress=ingress, egress=egress, annotations=tuple(sorted(annotations.items()))
        )

    return PolicySet(
        tuple(apply(p) for p in policy_set.policies),
        tuple(apply(p) for p in policy_set.host_policies),
    )
