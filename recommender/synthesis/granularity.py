"""How many policies and rules, at what over-permissiveness: workload, cluster or namespace?

One policy per workload is least privilege but many policies; one per namespace is few
policies but lets every workload do what any of its neighbours does. :func:`granularity_report`
puts numbers on the choice, from the per-workload policies synthesis made:

``workload``
    One policy per workload (what ``recommend`` emits by default).
``cluster``
    One policy per behavioural cluster
    (:class:`~recommender.analysis.clustering.estimators.BehaviourClustering` within each namespace)
    with the union of its members' rules.
``namespace``
    One policy per namespace with the union of all its workloads' rules.

Each level counts ``policies`` (plus one default deny per namespace in scope), ``rules`` and
``unobserved_grants``: (workload, direction, peer, port) triples a workload would be allowed
only because another member of its group needed them, the over-permissiveness of the level
(0 for ``workload``); ``observed_grants`` is the same count for the workload level, the
baseline. See ``docs/clustering.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from ..aggregate.edges import EdgeTables
from ..config import RecommendConfig
from ..policy.model import Policy
from .synthesizer import Findings

__all__ = ["GranularityLevel", "GranularityReport", "granularity_report"]

Owner = tuple[str, str]


@dataclass(frozen=True)
class GranularityLevel:
    """One granularity's cost and looseness."""

    level: str
    policies: int
    rules: int
    unobserved_grants: int
    observed_grants: int

    @property
    def over_permissiveness(self) -> float:
        """Unobserved grants per observed grant (0.0 when none was observed)."""
        return self.unobserved_grants / self.observed_grants if self.observed_grants else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "level": self.level,
            "observed_grants": self.observed_grants,
            "over_permissiveness": round(self.over_permissiveness, 4),
            "policies": self.policies,
            "rules": self.rules,
            "unobserved_grants": self.unobserved_grants,
        }


@dataclass(frozen=True)
class GranularityReport:
    """The three levels, finest first."""

    levels: tuple[GranularityLevel, ...]

    def level(self, name: str) -> GranularityLevel:
        """The level called ``name`` (``workload``, ``cluster`` or ``namespace``)."""
        for level in self.levels:
            if level.level == name:
                return level
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``granularity`` section."""
        return {"levels": [level.to_dict() for level in self.levels]}


#: A rule as numbers: (direction, its peers' numbers, its ports' numbers, action), equal
#: for equal rules (Rule equality leaves evidence and comment aside).
RuleKey = tuple[str, tuple[int, ...], tuple[int, ...], str]
Numbers = tuple[list[RuleKey], list[RuleKey], set[tuple[str, int, int]]]


class _Numbered:
    """Each policy's rules and grants as numbers (equal rules and grants, equal numbers):
    comparing them costs a hash of a small tuple of ints, not of the peers' selectors.

    Peers and ports are numbered by value, found by the object's identity first so that each
    object is hashed once; the policies must outlive the instance (no id is reused).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, int] = {}  # id of a peer or port -> its number
        self._by_value: dict[Any, int] = {}
        self._policies: dict[int, Numbers] = {}

    def _number(self, obj: Any) -> int:
        found = self._by_id.get(id(obj))
        if found is None:
            found = self._by_value.setdefault(obj, len(self._by_value))
            self._by_id[id(obj)] = found
        return found

    def of(self, policy: Policy) -> Numbers:
        """(ingress rule keys, egress rule keys, grants) of ``policy``, the grants as
        :func:`~recommender.analysis.clustering.compaction.grants`' triples, numbered."""
        found = self._policies.get(id(policy))
        if found is not None:
            return found
        known = self._by_id.get
        grants: set[tuple[str, int, int]] = set()
        sides: tuple[list[RuleKey], list[RuleKey]] = ([], [])
        for side, rules in zip(sides, (policy.ingress, policy.egress), strict=True):
            for rule in rules:
                peers: tuple[int, ...] = tuple(map(known, map(id, rule.peers)))  # type: ignore[arg-type]
                if None in peers:
                    peers = tuple(map(self._number, rule.peers))
                ports: tuple[int, ...] = tuple(map(known, map(id, rule.ports)))  # type: ignore[arg-type]
                if None in ports:
                    ports = tuple(map(self._number, rule.ports))
                direction = rule.direction
                side.append((direction, peers, ports, rule.action))
                for port in ports or (-1,):  # -1: every port
                    grants.update(zip(repeat(direction), peers, repeat(port)))
        found = self._policies[id(policy)] = (sides[0], sides[1], grants)
        return found


def _level(
    name: str,
    groups: Mapping[Any, list[Policy]],
    default_denies: int,
    observed: int,
    numbered: Callable[[Policy], Numbers],
) -> GranularityLevel:
    """The level's counts: per group, the rules of
    :func:`~recommender.analysis.clustering.compaction.union_rules` (equal rules once: only
    their number is needed, so their evidence is not merged) and
    :func:`~recommender.analysis.clustering.compaction.added_grants` (none
    for a group of one), each policy's rules and grants numbered once for all levels."""
    rules = 0
    unobserved = 0
    for members in groups.values():
        if len(members) == 1:
            ingress, egress, _ = numbered(members[0])
            rules += len(set(ingress)) + len(set(egress))
            continue
        sides = [numbered(p) for p in members]
        rules += len({r for side in sides for r in side[0]})
        rules += len({r for side in sides for r in side[1]})
        own = [side[2] for side in sides]
        union = set().union(*own)
        unobserved += sum(len(union) - len(mine) for mine in own)
    return GranularityLevel(name, len(groups) + default_denies, rules, unobserved, observed)


def granularity_report(
    findings: Findings,
    tables: EdgeTables | None = None,
    config: RecommendConfig | None = None,
    *,
    clusters: Mapping[Owner, int] | None = None,
) -> GranularityReport:
    """Compare workload, cluster and namespace granularity.

    Parameters
    ----------
    findings : Findings
        From :func:`~recommender.synthesis.synthesizer.synthesize` (its ``workload_policies``).
    tables : EdgeTables, optional
        The aggregation synthesis used; clustered to form the ``cluster`` level unless
        ``clusters`` is given.
    config : RecommendConfig, optional
        ``cluster_distance`` for the clustering.
    clusters : mapping, optional
        ``(namespace, workload)`` -> cluster number, instead of clustering ``tables``.

    Returns
    -------
    GranularityReport

    Examples
    --------
    >>> from recommender import recommend                          # doctest: +SKIP
    >>> rec = recommend("sample_flows/flows.parquet")              # doctest: +SKIP
    >>> granularity_report(rec.findings, rec.tables).level("namespace").policies  # doctest: +SKIP
    6
    """
    config = config or RecommendConfig()
    policies = findings.workload_policies
    if clusters is None and tables is not None and policies:
        from ..analysis.clustering.core import BehaviourCore
        from ..analysis.clustering.features import communication_features

        features = communication_features(tables)
        if features.workloads:
            model = BehaviourCore(distance_threshold=config.cluster_distance, random_state=0)
            labels = model.fit(features.matrix, groups=features.namespaces).labels_
            clusters = dict(zip(features.workloads, labels.tolist(), strict=True))
    clusters = clusters or {}
    default_denies = len(findings.namespaces_in_scope)
    numbered = _Numbered().of  # (the policies outlive it)
    observed = sum(len(numbered(p)[2]) for p in policies.values())
    per_workload = {owner: [p] for owner, p in policies.items()}
    per_cluster: dict[Any, list[Policy]] = defaultdict(list)
    per_namespace: dict[str, list[Policy]] = defaultdict(list)
    for owner, policy in sorted(policies.items()):
        label = clusters.get(owner)
        per_cluster[(owner[0], label) if label is not None else owner].append(policy)
        per_namespace[owner[0]].append(policy)
    return GranularityReport(
        (
            _level("workload", per_workload, default_denies, observed, numbered),
            _level("cluster", per_cluster, default_denies, observed, numbered),
            _level("namespace", per_namespace, default_denies, observed, numbered),
        )
    )
