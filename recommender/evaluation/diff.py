"""Compare two NetworkPolicy sets against observed flows: which traffic changes verdict?

:func:`diff_policies` replays the same aggregated edges
(:func:`~recommender.aggregate.edges.aggregate_edges`) against an ``existing`` and a ``new`` policy
set with the project's Kubernetes evaluator (:func:`~recommender.evaluation.replay.replay`) and
reports

* **newly denied** edges: allowed by ``existing``, denied by ``new``. An *evidence* edge here
  (allowed in the input) is observed traffic that applying ``new`` would break;
* **newly allowed** edges: denied by ``existing``, allowed by ``new`` (evidence edges the old set
  broke, or edges denied in the input that ``new`` opens);
* the **rules** added and removed, compared by :func:`rule_key` (namespace, policy, direction,
  peers, ports), and the policies added and removed.

``recommend diff EXISTING NEW FLOWS...`` exits 1 when observed allowed traffic becomes denied
(:attr:`PolicyDiff.breaks_observed_traffic`), for CI and GitOps pipelines. See
``docs/validation.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from ..aggregate.edges import EdgeTables, aggregate_edges
from ..config import RecommendConfig
from ..policy.authz import IstioPolicies
from ..policy.istio import DEFAULT_TRUST_DOMAIN
from ..policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from .istio import ROOT_NAMESPACE
from .replay import Coverage, EdgeVerdict, replay
from .stack import PolicyTree

__all__ = [
    "EdgeChange",
    "PolicyDiff",
    "RuleKey",
    "compare_rules",
    "diff_policies",
    "rule_dict",
    "rule_key",
    "rule_keys",
]

PathLike = str | os.PathLike[str]

#: (namespace, policy, direction, peers, ports): peers and ports as sorted descriptions.
RuleKey = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]

#: Most edges and rules listed per list in :meth:`PolicyDiff.to_dict`.
_MAX_LISTED: Final = 200


# --------------------------------------------------------------------------- rule keys


def _selector(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in selector.match_labels]
    for key, op, values in selector.match_expressions:
        parts.append(f"{key} {op} ({','.join(values)})" if values else f"{key} {op}")
    return ",".join(parts) or "*"


def _peer(peer: Peer) -> str:
    if peer.kind == "cidr":
        text = f"ipBlock {peer.cidr}"
        return text + (f" except {','.join(sorted(peer.except_))}" if peer.except_ else "")
    if peer.kind == "entity":
        return f"entity {peer.entity}"
    pods = "*" if peer.pod_selector is None else _selector(peer.pod_selector)
    if peer.namespace_selector is None:
        return pods
    return f"ns[{_selector(peer.namespace_selector)}]/{pods}"


def _port(port: PortSpec) -> str:
    if port.name is not None:
        return f"{port.protocol}/{port.name}"
    if port.port is None:
        return f"{port.protocol}/*"
    if port.end_port:
        return f"{port.protocol}/{port.port}-{port.end_port}"
    return f"{port.protocol}/{port.port}"


def rule_key(policy: Policy, rule: Rule) -> RuleKey:
    """A rule's identity: (namespace, policy, direction, peers, ports).

    Peers and ports are described as text and sorted (peers of a rule are OR-ed, so their order
    means nothing); an empty tuple means every peer or every port. A rule whose ``action`` is not
    ``allow`` has its action in front of the direction (``deny:ingress``).
    """
    direction = rule.direction if rule.action == "allow" else f"{rule.action}:{rule.direction}"
    return (
        policy.namespace,
        policy.name,
        direction,
        tuple(sorted(_peer(p) for p in rule.peers)),
        tuple(sorted(_port(p) for p in rule.ports)),
    )


def rule_keys(policy_set: PolicySet) -> set[RuleKey]:
    """Every rule of ``policy_set`` as a :func:`rule_key` (duplicates collapse)."""
    return {rule_key(p, r) for p in policy_set.policies for r in p.rules}


def rule_dict(key: RuleKey) -> dict[str, Any]:
    """A :data:`RuleKey` as a JSON-ready dict."""
    namespace, policy, direction, peers, ports = key
    return {
        "direction": direction,
        "namespace": namespace,
        "peers": list(peers),
        "policy": policy,
        "ports": list(ports),
    }


def compare_rules(
    before: PolicySet, after: PolicySet
) -> tuple[list[RuleKey], list[RuleKey], list[RuleKey]]:
    """The rules only in ``after`` (added), only in ``before`` (removed), and in both; sorted."""
    old, new = rule_keys(before), rule_keys(after)
    return sorted(new - old), sorted(old - new), sorted(old & new)


# --------------------------------------------------------------------------- the diff


@dataclass(frozen=True)
class EdgeChange:
    """An observed edge whose verdict differs between the two policy sets.

    Parameters
    ----------
    source, destination, protocol, port, connections
        The edge as :class:`~recommender.evaluation.replay.EdgeVerdict` describes it.
    input_verdict : {"allowed", "denied"}
        What the flows recorded: ``allowed`` for evidence (allowed, audit, ... verdicts),
        ``denied`` for flows denied when they were recorded.
    reason : str
        For evidence (``allowed`` in the input), the deny reason of the set that denies it:
        ``new`` for a newly denied edge, ``existing`` for a newly allowed one. For an edge
        ``denied`` in the input, what allows it in the set that allows it: ``existing`` for a
        newly denied edge, ``new`` for a newly allowed one.
    """

    source: str
    destination: str
    protocol: str
    port: int | None
    connections: int
    input_verdict: Literal["allowed", "denied"]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "connections": self.connections,
            "destination": self.destination,
            "input_verdict": self.input_verdict,
            "port": self.port,
            "protocol": self.protocol,
            "reason": self.reason,
            "source": self.source,
        }


@dataclass(frozen=True)
class PolicyDiff:
    """What changes from ``existing`` to ``new`` (see the module docstring).

    Attributes
    ----------
    newly_denied, newly_allowed : tuple of EdgeChange
        Edges whose verdict changes, evidence first, then most connections first.
    rules_added, rules_removed : tuple of RuleKey
        Rules only in ``new`` / only in ``existing``.
    rules_unchanged : int
        Rules in both.
    policies_added, policies_removed : tuple of str
        ``namespace/name`` of policies only in ``new`` / only in ``existing``.
    observed_edges, denied_edges, not_evaluated_edges : int
        Evidence edges and input-denied edges judged, and edges Kubernetes semantics cannot judge
        (the same for both sets; see ``docs/evaluate.md``).
    existing_coverage, new_coverage : float
        Coverage of the observed allowed connections under each set.
    """

    newly_denied: tuple[EdgeChange, ...]
    newly_allowed: tuple[EdgeChange, ...]
    rules_added: tuple[RuleKey, ...]
    rules_removed: tuple[RuleKey, ...]
    rules_unchanged: int
    policies_added: tuple[str, ...]
    policies_removed: tuple[str, ...]
    observed_edges: int
    denied_edges: int
    not_evaluated_edges: int
    existing_coverage: float
    new_coverage: float

    @property
    def newly_denied_evidence(self) -> tuple[EdgeChange, ...]:
        """Observed allowed edges that ``new`` would deny: traffic it would break."""
        return tuple(e for e in self.newly_denied if e.input_verdict == "allowed")

    @property
    def breaks_observed_traffic(self) -> bool:
        """True when observed allowed traffic becomes denied (``recommend diff`` exits 1)."""
        return bool(self.newly_denied_evidence)

    @property
    def changed(self) -> bool:
        """True when any verdict, rule or policy differs."""
        return bool(
            self.newly_denied
            or self.newly_allowed
            or self.rules_added
            or self.rules_removed
            or self.policies_added
            or self.policies_removed
        )

    def summary(self) -> dict[str, Any]:
        """The counts only."""
        evidence = self.newly_denied_evidence
        return {
            "breaks_observed_traffic": self.breaks_observed_traffic,
            "denied_edges": self.denied_edges,
            "existing_coverage": self.existing_coverage,
            "new_coverage": self.new_coverage,
            "newly_allowed_edges": len(self.newly_allowed),
            "newly_denied_connections": sum(e.connections for e in self.newly_denied),
            "newly_denied_edges": len(self.newly_denied),
            "newly_denied_evidence_connections": sum(e.connections for e in evidence),
            "newly_denied_evidence_edges": len(evidence),
            "not_evaluated_edges": self.not_evaluated_edges,
            "observed_edges": self.observed_edges,
            "policies_added": len(self.policies_added),
            "policies_removed": len(self.policies_removed),
            "rules_added": len(self.rules_added),
            "rules_removed": len(self.rules_removed),
            "rules_unchanged": self.rules_unchanged,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: ``summary`` and the lists (at most 200 entries each)."""
        return {
            "newly_allowed": [e.to_dict() for e in self.newly_allowed[:_MAX_LISTED]],
            "newly_denied": [e.to_dict() for e in self.newly_denied[:_MAX_LISTED]],
            "policies_added": list(self.policies_added),
            "policies_removed": list(self.policies_removed),
            "rules_added": [rule_dict(k) for k in self.rules_added[:_MAX_LISTED]],
            "rules_removed": [rule_dict(k) for k in self.rules_removed[:_MAX_LISTED]],
            "summary": self.summary(),
        }


_EdgeId = tuple[str, str, str, int]


def _by_edge(verdicts: Iterable[EdgeVerdict]) -> dict[_EdgeId, EdgeVerdict]:
    """Verdicts keyed by (source, destination, protocol, port); edges that differ only in
    endpoint names the verdict ignores are merged (connections summed)."""
    out: dict[_EdgeId, EdgeVerdict] = {}
    for e in verdicts:
        key = (e.source, e.destination, e.protocol, -1 if e.port is None else e.port)
        found = out.get(key)
        if found is not None:
            e = EdgeVerdict(
                e.source,
                e.destination,
                e.protocol,
                e.port,
                found.connections + e.connections,
                found.reason,
            )
        out[key] = e
    return out


def _changes(
    gained: dict[_EdgeId, EdgeVerdict],
    lost: dict[_EdgeId, EdgeVerdict],
    verdict: Literal["allowed", "denied"],
) -> list[EdgeChange]:
    """Edges in ``gained`` but not in ``lost``, as changes."""
    return [
        EdgeChange(e.source, e.destination, e.protocol, e.port, e.connections, verdict, e.reason)
        for key, e in gained.items()
        if key not in lost
    ]


def _ordered(items: list[EdgeChange]) -> tuple[EdgeChange, ...]:
    return tuple(
        sorted(
            items,
            key=lambda e: (
                e.input_verdict != "allowed",
                -e.connections,
                e.source,
                e.destination,
                e.protocol,
                -1 if e.port is None else e.port,
            ),
        )
    )


def _tables(flows: Any, config: RecommendConfig | None, format: str | None) -> EdgeTables:
    if isinstance(flows, EdgeTables):
        return flows
    if isinstance(flows, pa.Table):
        return aggregate_edges(flows, config)
    from ..aggregate.checked import aggregate_flow_files

    # Streamed through the input checks: copies counted once, the window of --last.
    return aggregate_flow_files(flows, config, format)[0]


def _replay(
    policies: PolicySet | PolicyTree,
    tables: EdgeTables,
    istio: IstioPolicies | None,
    trust_domain: str,
    root_namespace: str,
) -> Coverage:
    """Coverage without over-permissiveness (not part of a diff)."""
    if isinstance(policies, PolicyTree):
        return replay(
            policies.network_policies,
            tables,
            synthetic_limit=0,
            guardrails=policies.guardrails,
            dialect=policies.dialect,
            tree=policies,
            istio=istio,
            trust_domain=trust_domain,
            root_namespace=root_namespace,
        )
    return replay(
        policies, tables, synthetic_limit=0, istio=istio, trust_domain=trust_domain,
        root_namespace=root_namespace,
    )


def _istio_names(istio: IstioPolicies | None) -> set[str]:
    """``namespace/Kind/name`` of each Istio object (kinds apart: names may repeat)."""
    if not istio:
        return set()
    return {f"{p.namespace}/AuthorizationPolicy/{p.name}" for p in istio.authorization} | {
        f"{p.namespace}/PeerAuthentication/{p.name}" for p in istio.peer_authentication
    }


def _istio_rule_keys(istio: IstioPolicies | None) -> set[RuleKey]:
    """One key per AuthorizationPolicy rule: (namespace, ``AuthorizationPolicy/<name>``,
    ``<action> ingress``, its sources, its operations and conditions), as descriptions."""
    if not istio:
        return set()

    def fields(item: object) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in vars(item).items() if v]
        return " ".join(parts) or "*"

    keys: set[RuleKey] = set()
    for policy in istio.authorization:
        for rule in policy.rules:
            keys.add(
                (
                    policy.namespace,
                    f"AuthorizationPolicy/{policy.name}",
                    f"{policy.action} ingress",
                    tuple(sorted(fields(s) for s in rule.sources)),
                    tuple(sorted(fields(o) for o in rule.operations))
                    + tuple(sorted(fields(c) for c in rule.conditions)),
                )
            )
    return keys


def diff_policies(
    existing: PolicySet | PolicyTree,
    new: PolicySet | PolicyTree,
    flows: pa.Table | EdgeTables | PathLike | Iterable[PathLike],
    *,
    config: RecommendConfig | None = None,
    format: str | None = None,
    existing_istio: IstioPolicies | None = None,
    new_istio: IstioPolicies | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    root_namespace: str = ROOT_NAMESPACE,
) -> PolicyDiff:
    """Which observed edges change verdict from ``existing`` to ``new``, and which rules change.

    Parameters
    ----------
    existing, new : PolicySet or PolicyTree
        Kubernetes NetworkPolicy sets (for instance from
        :func:`~recommender.policy.reader.read_policies`), or trees of any dialect from
        :func:`~recommender.evaluation.stack.read_policy_tree` (Calico, Cilium, guardrails),
        each judged with its precedence; rules are compared among NetworkPolicies only.
    flows : pyarrow.Table, EdgeTables, path or paths
        A canonical flow table, its aggregation, or flow files of any supported format. The
        flows are aggregated once and both sets judge the same edges.
    config : RecommendConfig, optional
        Time window and thresholds of the aggregation.
    format : str, optional
        Input format when ``flows`` are paths.
    existing_istio, new_istio : IstioPolicies, optional
        Istio AuthorizationPolicies (and PeerAuthentications) of each side, judged with Istio's
        semantics after the NetworkPolicies (see :func:`~recommender.evaluation.replay.replay`);
        their policies count in ``policies_added`` and ``policies_removed``.
    trust_domain, root_namespace : str
        Istio's trust domain of the principals and root namespace.

    Returns
    -------
    PolicyDiff

    Raises
    ------
    UnsupportedDialectError
        If a policy is not plain Kubernetes NetworkPolicy.
    RecommenderError
        If the flows cannot be read.

    Examples
    --------
    >>> from recommender import read_policies                            # doctest: +SKIP
    >>> d = diff_policies(read_policies("live/"), read_policies("new/"),  # doctest: +SKIP
    ...                   "flows.parquet")
    >>> d.breaks_observed_traffic, len(d.rules_added)                    # doctest: +SKIP
    (False, 3)
    """
    tables = _tables(flows, config, format)
    # synthetic_limit=0: over-permissiveness is not part of a diff.
    before: Coverage = _replay(
        existing, tables, existing_istio or None, trust_domain, root_namespace
    )
    after: Coverage = _replay(new, tables, new_istio or None, trust_domain, root_namespace)
    existing = existing.network_policies if isinstance(existing, PolicyTree) else existing
    new = new.network_policies if isinstance(new, PolicyTree) else new
    denied_before, denied_after = _by_edge(before.false_denies), _by_edge(after.false_denies)
    opened_before = _by_edge(before.denied_but_allowed)
    opened_after = _by_edge(after.denied_but_allowed)
    newly_denied = _changes(denied_after, denied_before, "allowed") + _changes(
        opened_before, opened_after, "denied"
    )
    newly_allowed = _changes(denied_before, denied_after, "allowed") + _changes(
        opened_after, opened_before, "denied"
    )
    added, removed, unchanged = compare_rules(existing, new)
    old_authz, new_authz = _istio_rule_keys(existing_istio), _istio_rule_keys(new_istio)
    added = sorted({*added, *(new_authz - old_authz)})
    removed = sorted({*removed, *(old_authz - new_authz)})
    unchanged = [*unchanged, *(old_authz & new_authz)]
    old_names = {f"{p.namespace}/{p.name}" for p in existing.policies}
    new_names = {f"{p.namespace}/{p.name}" for p in new.policies}
    old_names |= _istio_names(existing_istio)
    new_names |= _istio_names(new_istio)
    return PolicyDiff(
        newly_denied=_ordered(newly_denied),
        newly_allowed=_ordered(newly_allowed),
        rules_added=tuple(added),
        rules_removed=tuple(removed),
        rules_unchanged=len(unchanged),
        policies_added=tuple(sorted(new_names - old_names)),
        policies_removed=tuple(sorted(old_names - new_names)),
        observed_edges=after.observed_edges,
        denied_edges=after.denied_edges,
        not_evaluated_edges=len(after.not_evaluated),
        existing_coverage=before.coverage,
        new_coverage=after.coverage,
    )
