"""A report's rules as decision entries: the edges each rule allows, named as a decisions
file names them (``namespace/workload``, ``namespace/*``, a CIDR), and a stable id per rule.

The review page writes these entries (``reject`` takes a rule away, ``accept`` keeps it as
reviewed) and :mod:`recommender.report.accepted` reads ``accept`` entries back on the next run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..synthesis.decisions import Decision

__all__ = ["rule_decisions", "rule_id"]


def rule_id(rule: Mapping[str, Any]) -> str:
    """A short stable id of a rule (its workload, direction, peers and ports)."""
    key = json.dumps(
        [rule.get("namespace"), rule.get("workload"), rule.get("direction"),
         list(rule.get("peers") or []), list(rule.get("ports") or [])],
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _rule_key(rule: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        rule.get("namespace"),
        rule.get("workload"),
        rule.get("direction"),
        tuple(rule.get("peers") or ()),
        tuple(rule.get("ports") or ()),
    )


def _peer_ends(peer: str, namespace: str, report: Mapping[str, Any]) -> list[str]:
    """The decision endpoints a rule's peer stands for: the workloads its selector was made
    for (``report["selectors"]``), ``namespace/*`` when it selects a whole namespace or pods
    the report does not name, or the CIDR of an ipBlock."""
    if peer.startswith("ipBlock "):
        return [peer[len("ipBlock ") :].split(" ", 1)[0]]
    head, slash, rest = peer.partition("/")
    if slash and not any(c in head for c in ".=,"):
        peer_ns, pods = head, rest
    else:
        peer_ns, pods = namespace, peer
    wanted = ",".join(sorted(p for p in pods.split(",") if p and p != "*"))
    found = []
    for sel in report.get("selectors") or []:
        labels = sel.get("selector") or {}
        text = ",".join(sorted(f"{k}={v}" for k, v in labels.items()))
        if str(sel.get("namespace")) == peer_ns and text == wanted:
            found.append(f"{peer_ns}/{sel.get('workload')}")
    return sorted(set(found)) or [f"{peer_ns}/*"]


def _port(text: str) -> tuple[int | None, str | None]:
    """``TCP/8080`` -> (8080, "TCP"); a range or ``TCP/*`` -> (None, "TCP")."""
    protocol, _, port = str(text).partition("/")
    protocol = protocol.upper() if protocol.upper() in ("TCP", "UDP", "SCTP") else ""
    return (int(port) if port.isdigit() else None), (protocol or None)


def rule_decisions(
    rule: Mapping[str, Any], report: Mapping[str, Any], action: str = "reject"
) -> list[Decision]:
    """The ``reject`` entries that take ``rule`` away (or, with ``action="accept"``, the
    ``accept`` entries that keep it as reviewed, carrying the rule's flags): one per peer and
    port.

    A peer selector stands for the workloads it was made for, a peer selecting every pod of a
    namespace for ``namespace/*``; a port range or a rule for every port rejects the protocol
    (any port) between the same ends. Ends no decision can name are left out.
    """
    namespace = str(rule.get("namespace"))
    owner = f"{namespace}/{rule.get('workload')}"
    ports = [_port(p) for p in rule.get("ports") or []] or [(None, None)]
    flags = tuple(sorted(set(rule.get("flags") or ()))) if action == "accept" else None
    out: list[Decision] = []
    for peer in rule.get("peers") or []:
        for end in _peer_ends(str(peer), namespace, report):
            src, dst = (end, owner) if rule.get("direction") == "ingress" else (owner, end)
            for port, protocol in ports:
                try:
                    d = Decision(
                        action, from_=src, to=dst, port=port, protocol=protocol, flags=flags
                    )
                except ConfigError:  # a name no decision can hold (not a namespace name...)
                    continue
                if d not in out:
                    out.append(d)
    return out
