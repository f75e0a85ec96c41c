"""Guardrails: organisation-wide network rules that application policy may never override.

Load them with :func:`load_guardrails` (the format is in ``docs/guardrails.md``), render them
with :func:`render_guardrails` (ClusterNetworkPolicy, AdminNetworkPolicy and
BaselineAdminNetworkPolicy, Calico tiers, Cilium clusterwide deny policies), and evaluate them
together with NetworkPolicies with :func:`recommender.evaluation.precedence.evaluate_stack`.
"""

from __future__ import annotations

from .loader import load_guardrails, parse_guardrails
from .model import Guardrail, Guardrails, Subject

__all__ = ["Guardrail", "Guardrails", "Subject", "load_guardrails", "parse_guardrails"]
