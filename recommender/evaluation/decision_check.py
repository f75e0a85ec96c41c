"""Judging policies against a decisions file (``recommend evaluate`` and ``diff --decisions``).

A reviewer who rejected an observed edge expects the policies to deny it: such a deny is
intended, not a false deny, and must not fail a CI check. An edge the decisions allow must be
allowed although no flow shows it. :func:`split_intended` sorts judged edges into the ones a
``reject`` entry names and the rest; :func:`decision_row` turns a judged edge's description
(``namespace/workload`` or ``kind:address``) back into the row the decision matcher reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date
from typing import Any, Protocol, TypeVar

import pyarrow as pa

from ..aggregate.edges import EdgeTables
from ..guardrails.model import Guardrails
from ..policy.model import PolicySet
from ..synthesis.decided import DecisionRun, matches
from ..synthesis.decisions import Decisions, decisions_today
from .replay import replay

__all__ = ["decision_row", "describe", "judge_decided", "split_intended"]


class _Judged(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def port(self) -> int | None: ...


_E = TypeVar("_E", bound=_Judged)


def _side(text: str, side: str) -> dict[str, Any]:
    kind, sep, ident = text.partition(":")
    if sep and "/" not in kind:  # "external:1.2.3.4", "host:10.0.0.7"
        return {f"{side}_kind": kind, f"{side}_namespace": None, f"{side}_id": ident}
    namespace, _, workload = text.partition("/")
    return {f"{side}_kind": "workload", f"{side}_namespace": namespace, f"{side}_id": workload}


def decision_row(source: str, destination: str, protocol: str, port: int | None) -> dict[str, Any]:
    """The edge row :func:`~recommender.synthesis.decided.matches` reads, from the
    descriptions the evaluator gives (``shop/frontend``, ``external:203.0.113.7``).

    Examples
    --------
    >>> decision_row("shop/a", "external:10.0.0.1", "TCP", 443)["dst_id"]
    '10.0.0.1'
    """
    return {
        **_side(source, "src"),
        **_side(destination, "dst"),
        "protocol": protocol,
        "dst_port": port,
    }


def split_intended(
    edges: Iterable[_E], decisions: Decisions, today: date | None = None
) -> tuple[list[_E], list[_E]]:
    """``edges`` (judged denied) split into those an active ``reject`` entry names (intended
    denies) and the others, each list in the given order."""
    rejects = [
        d for _, d in decisions.active(today or decisions_today()) if d.action == "reject"
    ]
    intended: list[_E] = []
    rest: list[_E] = []
    for edge in edges:
        row = decision_row(edge.source, edge.destination, edge.protocol, edge.port)
        (intended if any(matches(d, row) for d in rejects) else rest).append(edge)
    return intended, rest


def judge_decided(
    decided: DecisionRun,
    policy_set: PolicySet,
    evidence: EdgeTables,
    guardrails: Guardrails | None = None,
    dialect: str = "kubernetes",
) -> dict[str, Any]:
    """The decisions, counted apart from the observed evidence: the edges ``reject`` entries
    took out replayed against the policies (each should be denied: ``rejected_still_allowed``
    counts those a broader rule still allows) and the edges ``allow`` entries added (each
    should be allowed: ``allowed_not_allowed``). Edges the evaluator cannot judge (an address
    block without addresses) count in neither."""

    def judged(table: pa.Table | None) -> tuple[int, int, int]:
        if table is None or table.num_rows == 0:
            return 0, 0, 0
        ones = table.set_column(  # each edge weighs one, observed or not
            table.schema.get_field_index("connections"),
            "connections",
            pa.array([1] * table.num_rows, table.schema.field("connections").type),
        )
        tables = replace(
            evidence,
            edges=ones,
            denied=evidence.edges.slice(0, 0),
            excluded=evidence.excluded.slice(0, 0),
            workload_labels=decided.labels or evidence.workload_labels,
        )
        coverage = replay(
            policy_set, tables, synthetic_limit=0, guardrails=guardrails, dialect=dialect,
            rule_findings=False,  # only the verdicts count here
        )
        return table.num_rows, coverage.allowed_edges, len(coverage.false_denies)

    rejected, still, _ = judged(decided.rejected)
    added, _, missing = judged(decided.allowed)
    return {
        "rejected_edges": rejected,
        "rejected_still_allowed": still,
        "allowed_edges": added,
        "allowed_not_allowed": missing,
    }


def describe(edges: Sequence[_Judged], limit: int = 10) -> list[str]:
    """``source -> destination protocol/port`` lines for people."""
    return [
        f"{e.source} -> {e.destination} {e.protocol}/{'*' if e.port is None else e.port}"
        for e in edges[:limit]
    ]
