"""The job's policy trees: every configured dialect, staged or enforcing per namespace.

Without a staged rollout every namespace is written in its enforcing form, as ``recommend run``
writes it (one dialect: the tree at the top; several: one sub-folder per dialect). With one
(:class:`~recommender.job.state.RolloutOptions`), a namespace that is not yet ``enforcing`` is
written in a form the cluster evaluates without enforcing:

- Calico: ``StagedNetworkPolicy`` (``StagedGlobalNetworkPolicy`` for hosts) in the tree itself:
  Calico records what they would do in every flow (``pending_policies``);
- Kubernetes and Cilium: the policies under ``_staged/`` (:data:`STAGED_FOLDER`), a tree the
  top kustomization does not list. Cilium evaluates them without enforcing once the selected
  endpoints are in policy audit mode (``cilium-dbg endpoint config ID PolicyAuditMode=Enabled``,
  docs/deployment.md); plain Kubernetes has no staged mode, so ``_staged/`` is for review (or a
  staging cluster).

Cluster-scoped manifests (host policies) are enforcing only when every namespace is. The
guardrails (``_guardrails/``) are the organisation's own rules, not a proposal: they are written
as ``recommend run`` writes them, enforcing, whatever the rollout.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from ..pipeline import Recommendation, dialect_options
from ..policy.dialects import CLUSTER_SCOPED, group_by_namespace, render_dialect

__all__ = ["render_trees"]

Tree = dict[str, list[dict[str, Any]]]


def render_trees(
    rec: Recommendation, staged_namespaces: Collection[str] | None
) -> tuple[dict[str, Tree], dict[str, Tree]]:
    """Per dialect, the manifests by namespace of the tree and of its ``_staged/`` folder.

    ``staged_namespaces``: namespaces to write staged (None: no staged rollout, everything
    enforcing and no staged folder).
    """
    trees: dict[str, Tree] = {}
    staged: dict[str, Tree] = {}
    for dialect in rec.config.dialects:
        enforcing = rec.trees([dialect])[dialect]  # as `recommend run` writes it
        if staged_namespaces is None:
            trees[dialect] = enforcing
            continue
        waiting = set(staged_namespaces)
        hold_cluster = bool(waiting)  # host policies wait until every namespace enforces
        if dialect == "calico":
            options = replace(dialect_options(rec.config), staged=True)
            as_staged = group_by_namespace(
                render_dialect(rec.dialect_policy_set(), "calico", options)
            )
            tree: Tree = {}
            for ns, manifests in enforcing.items():
                held = ns in waiting or (ns == CLUSTER_SCOPED and hold_cluster)
                tree[ns] = as_staged.get(ns, []) if held else manifests
            trees[dialect] = tree
            continue
        trees[dialect] = {
            ns: m for ns, m in enforcing.items()
            if not (ns in waiting or (ns == CLUSTER_SCOPED and hold_cluster))
        }
        staged[dialect] = {
            ns: m for ns, m in enforcing.items()
            if ns in waiting or (ns == CLUSTER_SCOPED and hold_cluster)
        }
    return trees, staged
