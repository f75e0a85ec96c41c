"""Over-permissiveness counted per selector class, not per workload pair.

The replay's synthetic negatives (:class:`~recommender.evaluation.replay.OverPermissive`) ask,
for every ordered pair of distinct pods and every observed protocol/port, whether Kubernetes
NetworkPolicies allow it. Judging each triple costs pods² x ports evaluations. Here each pod's
isolating policies are found through a label index
(:class:`~recommender.policy.index.SelectorIndex`), and each rule peer is a *class*: the pods
its namespace and pod selectors pick, resolved once.
For one port, the sources a destination admits are "every pod" (not isolated for ingress, or a
rule without peers) or the union of its rules' classes; the destinations a source may reach,
likewise for egress. A pair is allowed when each side admits the other, so

    allowed = |in-all| x |out-all| (minus pods in both: no pod talks to itself here)
            + sum over explicit sources of |their destinations in in-all|
            + sum over explicit destinations of |their sources in out-all|
            + pairs explicit on both sides (each side's set looked up in the other's)

which costs the size of the explicit sets, i.e. the pairs least-privilege rules name, not
pods². When those sets would exceed ``budget`` members, the count is replaced by an upper
bound computed from the class sizes alone (for each port, the smaller of the two sides' summed
set sizes), and flagged as an estimate.

Only plain Kubernetes NetworkPolicy semantics as the replay uses them: pods without named
container ports (a named port then matches no pod) and ipBlocks that never match pods.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ..policy.index import SelectorIndex
from ..policy.model import Direction, LabelSelector, Peer, Policy, PolicySet, Rule
from .evaluator import Cluster, Pod

__all__ = ["PAIR_BUDGET", "PairCount", "count_allowed_pairs"]

#: Most workloads listed in allowed peer sets (summed over ports) before the count becomes a
#: bound: a few seconds of set operations.
PAIR_BUDGET: Final = 2_000_000

#: A class: (namespace the peer is limited to, or None; namespace selector; pod selector).
_ClassKey = tuple[str | None, LabelSelector | None, LabelSelector | None]


@dataclass(frozen=True)
class PairCount:
    """Allowed unobserved (source, destination, port) triples.

    ``allowed`` is exact when ``exact``; otherwise an upper bound. ``examples`` are the first
    allowed unobserved triples in (source, destination, port) order (none for a bound).
    """

    allowed: int
    examples: tuple[str, ...]
    exact: bool


class _Classes:
    """Rule peers resolved to sets of pod indices, once per distinct peer (a *class*: the
    namespace the peer is limited to or its namespace selector, and its pod selector), through
    indexes of the pods by namespace and label pair and of the namespaces by label pair."""

    def __init__(self, cluster: Cluster, pods: Sequence[Pod]) -> None:
        self.pods = pods
        self._rules: dict[tuple[int, str], tuple[Rule, tuple[int, ...]]] = {}
        self.labels = [p.labels for p in pods]
        self.ns_labels = {
            name: dict(ns.labels) for name, ns in cluster.namespaces.items()
        }
        self.by_ns: dict[str, list[int]] = {}
        self.by_pair: dict[tuple[str, str, str], list[int]] = {}
        for i, pod in enumerate(pods):
            self.by_ns.setdefault(pod.namespace, []).append(i)
            for pair in pod.labels.items():
                self.by_pair.setdefault((pod.namespace, *pair), []).append(i)
        # Namespaces with pods, by label pair: a namespace selector's candidates are those
        # carrying its rarest matchLabels pair, not every namespace.
        self.ns_by_pair: dict[tuple[str, str], list[str]] = {}
        for name in self.by_ns:
            for pair in self.ns_labels[name].items():
                self.ns_by_pair.setdefault(pair, []).append(name)
        self.ids: dict[tuple[object, ...], int] = {}
        self.keys: list[_ClassKey] = []
        self.sets: list[frozenset[int] | None] = []

    def class_id(self, policy: Policy, peer: Peer) -> int:
        ns_selector, pod_selector = peer.namespace_selector, peer.pod_selector
        own = policy.namespace if ns_selector is None else None
        # Keyed by the selectors' fields (tuples hash in C; a selector's dataclass hash does
        # not): equal selectors, one class.
        content = (
            own,
            None if ns_selector is None else ns_selector.match_labels,
            None if ns_selector is None else ns_selector.match_expressions,
            None if pod_selector is None else pod_selector.match_labels,
            None if pod_selector is None else pod_selector.match_expressions,
        )
        found = self.ids.get(content)
        if found is None:
            found = self.ids[content] = len(self.keys)
            self.keys.append((own, ns_selector, pod_selector))
            self.sets.append(None)
        return found

    def members(self, cid: int) -> frozenset[int]:
        found = self.sets[cid]
        if found is None:
            found = self.sets[cid] = frozenset(self._resolve(self.keys[cid]))
        return found

    def pod_classes(self, policy: Policy, rule: Rule) -> tuple[int, ...]:
        """The class ids of the rule's ``pods`` peers (in ``policy``), once per rule object
        and namespace."""
        key = (id(rule), policy.namespace)
        found = self._rules.get(key)
        if found is None or found[0] is not rule:
            ids = tuple(dict.fromkeys(
                self.class_id(policy, p) for p in rule.peers if p.kind == "pods"
            ))
            found = self._rules[key] = (rule, ids)
        return found[1]

    def contains(self, cid: int, i: int) -> bool:
        own, ns_selector, pod_selector = self.keys[cid]
        pod = self.pods[i]
        if own is not None:
            if pod.namespace != own:
                return False
        elif not ns_selector.matches(self.ns_labels[pod.namespace]):  # type: ignore[union-attr]
            return False
        return pod_selector is None or pod_selector.matches(self.labels[i])

    def _resolve(self, key: _ClassKey) -> Iterable[int]:
        own, ns_selector, pod_selector = key
        if own is not None:
            namespaces = [own] if own in self.by_ns else []
        else:
            assert ns_selector is not None
            if ns_selector.match_labels:
                candidates: list[str] = min(
                    (self.ns_by_pair.get(pair, []) for pair in ns_selector.match_labels), key=len
                )
            else:
                candidates = list(self.by_ns)
            namespaces = [n for n in candidates if ns_selector.matches(self.ns_labels[n])]
        for ns in namespaces:
            if pod_selector is None or pod_selector.is_empty:
                yield from self.by_ns[ns]
            elif len(pod_selector.match_labels) == 1 and not pod_selector.match_expressions:
                yield from self.by_pair.get((ns, *pod_selector.match_labels[0]), ())
            elif pod_selector.match_labels:
                rarest = min(
                    (self.by_pair.get((ns, *pair), []) for pair in pod_selector.match_labels),
                    key=len,
                )
                for i in rarest:
                    if pod_selector.matches(self.labels[i]):
                        yield i
            else:
                for i in self.by_ns[ns]:
                    if pod_selector.matches(self.labels[i]):
                        yield i


def _contribution(
    policy: Policy,
    ports: Sequence[tuple[str, int]],
    classes: _Classes,
    direction: Direction,
    rule_ports: dict[tuple[object, ...], list[int]],
) -> dict[int, set[int] | None]:
    """What one policy's rules of ``direction`` admit, per port index: None (every peer) or
    class ids (absent: nothing)."""
    side: dict[int, set[int] | None] = {}
    rules: tuple[Rule, ...] = policy.ingress if direction == "ingress" else policy.egress
    for rule in rules:
        matched = rule_ports.get(rule.ports)
        if matched is None:
            matched = rule_ports[rule.ports] = [
                k for k, (proto, port) in enumerate(ports)
                if not rule.ports or any(s.contains(proto, port) for s in rule.ports)
            ]
        if not matched:
            continue
        ids = classes.pod_classes(policy, rule)
        for k in matched:
            if not rule.peers:
                side[k] = None
            elif ids and (k not in side or side[k] is not None):
                side.setdefault(k, set()).update(ids)  # type: ignore[union-attr]
    return side


def _sides(
    policy_set: PolicySet,
    pods: Sequence[Pod],
    ports: Sequence[tuple[str, int]],
    classes: _Classes,
    direction: Direction,
    isolating: Callable[[int, Direction], Sequence[Policy]] | None = None,
) -> list[dict[int, set[int] | None]]:
    """Per pod, per port index: None (every peer) or the class ids it admits (absent: none).

    A pod's side is the union of its isolating policies' sides, each computed once per policy
    (pods selected by the same one policy share its dict: read-only)."""
    if isolating is None:
        index: dict[str, SelectorIndex[Policy]] = {}
        for policy in policy_set.policies:
            if direction in policy.policy_types:
                index.setdefault(policy.namespace, SelectorIndex()).add(policy.selector, policy)

        def by_index(i: int, _direction: Direction) -> Sequence[Policy]:
            found = index.get(pods[i].namespace)
            return found.matching(classes.labels[i]) if found is not None else []

        isolating = by_index

    every = dict.fromkeys(range(len(ports)))
    rule_ports: dict[tuple[object, ...], list[int]] = {}
    by_policy: dict[int, dict[int, set[int] | None]] = {}
    out: list[dict[int, set[int] | None]] = []
    for i in range(len(pods)):
        policies = isolating(i, direction)
        if not policies:
            out.append(every)
            continue
        parts = []
        for policy in policies:
            part = by_policy.get(id(policy))
            if part is None:
                part = by_policy[id(policy)] = _contribution(
                    policy, ports, classes, direction, rule_ports
                )
            if part:  # a policy admitting nothing on these ports adds nothing
                parts.append(part)
        if len(parts) <= 1:
            out.append(parts[0] if parts else {})
            continue
        side: dict[int, set[int] | None] = {}
        for part in parts:
            for k, ids in part.items():
                if ids is None:
                    side[k] = None
                elif k not in side:
                    side[k] = set(ids)
                elif side[k] is not None:
                    side[k].update(ids)  # type: ignore[union-attr]
        out.append(side)
    return out


def count_allowed_pairs(
    policy_set: PolicySet,
    cluster: Cluster,
    pods: Sequence[Pod],
    ports: Sequence[tuple[str, int]],
    observed: set[tuple[int, int, int]],
    *,
    budget: int,
    examples: int = 20,
    isolating: Callable[[int, Direction], Sequence[Policy]] | None = None,
    observed_allowed: int | None = None,
) -> PairCount:
    """Allowed (source, destination, port) triples of distinct ``pods`` not in ``observed``.

    Parameters
    ----------
    policy_set : PolicySet
        Plain Kubernetes NetworkPolicies.
    cluster : Cluster
        Their namespaces (labels); ``pods`` must have no named ports.
    pods : sequence of Pod
        The pods, in the order examples follow.
    ports : sequence of (protocol, port)
        The ports, in the order examples follow.
    observed : set of (source index, destination index, port index)
        Triples left out of the count (observed ones).
    budget : int
        Most set members materialised for an exact count; beyond, a bound.
    examples : int, default 20
        How many examples to give.
    isolating : callable, optional
        ``isolating(i, direction)``: the policies of ``policy_set`` that select ``pods[i]``
        with ``direction`` in their types (any order), when the caller already knows them
        (the replay's judge does); by default found through a label index.
    observed_allowed : int, optional
        How many of ``observed`` the policies allow, when the caller has judged them (the
        replay has: they are its evidence); by default counted here.
    """
    classes = _Classes(cluster, pods)
    egress = _sides(policy_set, pods, ports, classes, "egress", isolating)
    ingress = _sides(policy_set, pods, ports, classes, "ingress", isolating)

    def allowed(i: int, j: int, k: int, contains: Callable[[int, int], bool]) -> bool:
        if k not in egress[i] or k not in ingress[j]:
            return False
        out_ids, in_ids = egress[i][k], ingress[j][k]
        return (out_ids is None or any(contains(c, j) for c in out_ids)) and (
            in_ids is None or any(contains(c, i) for c in in_ids)
        )

    try:
        total, found = _exact(egress, ingress, classes, len(pods), len(ports), observed,
                              budget, examples)
    except _OverBudget:
        if observed_allowed is None:
            observed_allowed = sum(1 for t in observed if allowed(*t, classes.contains))
        bound = _bound(egress, ingress, classes, len(pods), len(ports))
        return PairCount(max(bound - observed_allowed, 0), (), False)

    def member(c: int, i: int) -> bool:  # every class an explicit side names is resolved now
        return i in classes.members(c)

    if observed_allowed is None:
        observed_allowed = sum(1 for t in observed if allowed(*t, member))
    texts = tuple(
        f"{pods[i].key} -> {pods[j].key} {ports[k][0]}/{ports[k][1]}" for i, j, k in found
    )
    return PairCount(total - observed_allowed, texts, True)


class _OverBudget(Exception):
    pass


def _exact(
    egress: list[dict[int, set[int] | None]],
    ingress: list[dict[int, set[int] | None]],
    classes: _Classes,
    n: int,
    n_ports: int,
    observed: set[tuple[int, int, int]],
    budget: int,
    examples: int,
) -> tuple[int, list[tuple[int, int, int]]]:
    work = 0
    unions: dict[frozenset[int], frozenset[int]] = {}

    def members(ids: set[int]) -> frozenset[int]:
        nonlocal work
        key = frozenset(ids)
        known = unions.get(key)
        if known is not None:
            return known
        if len(key) == 1:
            found = classes.members(next(iter(key)))
        else:
            found = frozenset().union(*(classes.members(c) for c in key))
        work += len(found)
        if work > budget:
            raise _OverBudget
        unions[key] = found
        return found

    best: list[tuple[int, int, int]] = []  # a max-heap (negated) of the smallest examples

    def offer(i: int, j: int, k: int) -> None:
        if (i, j, k) in observed:
            return
        item = (-i, -j, -k)
        if len(best) < examples:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)

    # Each side's pods bucketed per port once: "every peer" or explicit class ids, in pod order.
    out_all: list[list[int]] = [[] for _ in range(n_ports)]
    out_explicit: list[list[tuple[int, set[int]]]] = [[] for _ in range(n_ports)]
    in_all: list[list[int]] = [[] for _ in range(n_ports)]
    in_explicit: list[list[tuple[int, set[int]]]] = [[] for _ in range(n_ports)]
    for sides, every, explicit in ((egress, out_all, out_explicit), (ingress, in_all, in_explicit)):
        for i, side in enumerate(sides):
            for k, ids in side.items():
                if ids is None:
                    every[k].append(i)
                else:
                    explicit[k].append((i, ids))
    total = 0
    for k in range(n_ports):
        out_all_set, in_all_set = set(out_all[k]), set(in_all[k])
        both = len(out_all_set & in_all_set)
        total += len(out_all[k]) * len(in_all[k]) - both
        if examples:  # the smallest pairs of the "every pod" block
            taken = 0
            for i in out_all[k]:
                for j in in_all[k]:
                    if i != j and (i, j, k) not in observed:
                        offer(i, j, k)
                        taken += 1
                        if taken >= examples:
                            break
                else:
                    continue
                break
        outs: dict[int, frozenset[int]] = {}
        for i, out_ids in out_explicit[k]:
            reach = outs[i] = members(out_ids)
            hit = reach & in_all_set
            total += len(hit) - (i in hit)
            for j in hit:
                if j != i:
                    offer(i, j, k)
        for j, in_ids in in_explicit[k]:
            admits = members(in_ids)
            for i in admits:
                if i == j:
                    continue
                if i in out_all_set:
                    total += 1
                    offer(i, j, k)
                else:
                    targets = outs.get(i)
                    if targets is not None and j in targets:
                        total += 1
                        offer(i, j, k)
    return total, sorted((-i, -j, -k) for i, j, k in best)


def _bound(
    egress: list[dict[int, set[int] | None]],
    ingress: list[dict[int, set[int] | None]],
    classes: _Classes,
    n: int,
    n_ports: int,
) -> int:
    sizes: dict[int, int] = {}

    def size(ids: set[int] | None) -> int:
        if ids is None:
            return n - 1
        total = 0
        for c in ids:
            if c not in sizes:
                sizes[c] = len(classes.members(c))
            total += sizes[c]
        return min(total, n - 1)

    bound = 0
    for k in range(n_ports):
        out_sum = sum(size(side[k]) for side in egress if k in side)
        in_sum = sum(size(side[k]) for side in ingress if k in side)
        bound += min(out_sum, in_sum)
    return bound
