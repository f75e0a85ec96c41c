"""The ``guardrails`` section of the report: conflicts to resolve and compliance checks."""

from __future__ import annotations

from typing import Any

from ..aggregate.edges import EdgeTables
from ..config import RecommendConfig
from ..evaluation.guardrail_checks import Conflict, compliance_checks
from ..guardrails.model import Guardrails
from ..policy.model import PolicySet
from ..synthesis.synthesizer import Findings

__all__ = ["guardrails_report"]

#: Most conflicts listed (the count is always complete).
_MAX_CONFLICTS = 500


def guardrails_report(
    guardrails: Guardrails,
    conflicts: list[Conflict],
    policy_set: PolicySet,
    findings: Findings,
    tables: EdgeTables,
    config: RecommendConfig,
    dialect: str = "kubernetes",
) -> dict[str, Any]:
    """``report["guardrails"]`` (schema in ``docs/report.md``)."""
    from ..evaluation.replay import cluster_from_flows
    from ..guardrails.render import guardrails_format

    checks = compliance_checks(
        guardrails, policy_set, findings.namespaces_in_scope, cluster_from_flows(tables),
        dialect=dialect,
    )
    return {
        "name": guardrails.name,
        "format": guardrails_format(config, config.dialects[0]),
        "guardrails": [
            {
                "name": g.name,
                "tier": g.tier,
                "priority": g.priority,
                "description": g.description,
                "controls": list(g.controls),
            }
            for g in guardrails.guardrails
        ],
        "conflicts_total": len(conflicts),
        "conflict_connections": sum(c.connections for c in conflicts),
        "conflicts": [c.to_dict() for c in conflicts[:_MAX_CONFLICTS]],
        "compliance": checks,
    }
