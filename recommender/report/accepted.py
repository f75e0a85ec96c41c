"""Flagged rules a reviewer accepted: ``accept`` entries of the decisions file, read back.

A rule is flagged when it rests on little evidence or is generalised (``rare``,
``broad:...``); the verdict then asks for review. A reviewer who has looked and agrees writes
``accept`` entries (the review page does it per rule): one per edge the rule allows, with the
flags accepted. On every later run a flagged rule whose edges are all covered by active
``accept`` entries, and whose flags are all among the accepted ones, is marked
``accepted`` in ``report["rules"]`` and ``report["flagged"]`` and no longer counts in the
verdict. A rule that allows a new edge, or gains a flag, asks for review again.

Each ``accept`` entry's status in ``report["decisions"]`` is ``applied`` when it covers an
edge of a flagged rule this run, else ``stale``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..synthesis.decisions import Decision, parse_endpoint
from .rule_entries import rule_decisions

__all__ = ["apply_accepts"]


def _end_covers(accepted: str, end: str) -> bool:
    if accepted == end or accepted == "*":
        return True
    try:
        a = parse_endpoint(accepted)
    except ValueError:
        return False
    if a.kind == "workload" and a.workload == "*":
        return end.partition("/")[0] == a.namespace and "/" in end
    return False


def _covers(accept: Mapping[str, Any], entry: Decision) -> bool:
    """Whether one ``accept`` item of the report covers one edge entry of a rule."""
    if not (_end_covers(str(accept.get("from")), str(entry.from_))
            and _end_covers(str(accept.get("to")), str(entry.to))):  # fmt: skip
        return False
    port, protocol = accept.get("port"), accept.get("protocol")
    if protocol is not None and protocol != entry.protocol:
        return False
    return port is None or port == entry.port


def _flags_accepted(accept: Mapping[str, Any], flags: frozenset[str]) -> bool:
    accepted = accept.get("flags")
    return accepted is None or flags <= set(accepted)


def _same_rule(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(
        a.get(k) == b.get(k) for k in ("namespace", "policy", "direction", "peers", "ports")
    )


def apply_accepts(report: dict[str, Any]) -> int:
    """Mark the flagged rules the decisions' ``accept`` entries cover (see the module
    docstring); update those entries' status in ``report["decisions"]``. Returns how many
    rules were accepted."""
    decisions = report.get("decisions")
    if not isinstance(decisions, dict):
        return 0
    items: Sequence[dict[str, Any]] = [
        item for item in decisions.get("items") or []
        if item.get("action") == "accept" and item.get("status") != "expired"
    ]  # fmt: skip
    if not items:
        return 0
    # Entries naming both ends exactly are found by their ends; the few with a wildcard end
    # (``*``, ``namespace/*``) are tried on every edge.
    exact: dict[tuple[str, str], list[int]] = {}
    wild: list[int] = []
    for i, item in enumerate(items):
        ends = (str(item.get("from")), str(item.get("to")))
        if any(end == "*" or end.endswith("/*") for end in ends):
            wild.append(i)
        else:
            exact.setdefault(ends, []).append(i)
    accepted_rules = []
    for rule in report.get("rules") or []:
        flags = frozenset(rule.get("flags") or ())
        if not flags:
            continue
        entries = rule_decisions(rule, report, "accept")
        hits: set[int] = set()
        covered = 0
        flags_ok = True
        for entry in entries:
            near = exact.get((str(entry.from_), str(entry.to)), [])
            found = [i for i in (*near, *wild) if _covers(items[i], entry)]
            hits.update(found)
            covered += bool(found)
            flags_ok = flags_ok and any(_flags_accepted(items[i], flags) for i in found)
        for i in hits:
            items[i]["status"] = "applied"
            items[i]["edges"] = int(items[i].get("edges") or 0) + 1
            items[i]["note"] = ""
        if entries and covered == len(entries) and flags_ok:
            rule["accepted"] = True
            accepted_rules.append(rule)
            continue
        why = (
            f"the rule now allows {len(entries) - covered} edge(s) not accepted"
            if covered < len(entries)
            else f"the rule now carries flags not accepted ({', '.join(sorted(flags))})"
        )
        for i in hits:
            items[i]["note"] = f"{why}; review it again"
    for entry in report.get("flagged") or []:
        if any(_same_rule(entry, rule) for rule in accepted_rules):
            entry["accepted"] = True
    for status in ("applied", "stale", "expired"):
        decisions[status] = sum(1 for x in decisions.get("items") or [] if x["status"] == status)
    decisions["accepted_rules"] = len(accepted_rules)
    return len(accepted_rules)
