"""Policy compaction: workloads that behave alike share one policy with a set-based selector.

Workloads of one namespace whose per-workload policies have **identical rules** become one
policy whose selector is the union of theirs (``matchExpressions`` ``In``), but only when that
union **widens nothing**, proved one of two ways:

``equivalent``
    Every member's selector has the same keys and they differ in exactly one key ``k``:
    ``L and k In {v1..vn}`` is logically the same as ``(L and k=v1) or ... or (L and k=vn)``,
    for every pod, known or future.
``known-workloads``
    Otherwise, a label ``k`` every member's pods carry (with labels ``L`` all members share):
    the selector ``L and k In {...}`` is checked against every label map observed for every
    workload of the namespace (and the assumed ``app=<workload>`` of unlabelled ones): it
    selects all members' pods and nothing else.

Members with an ambiguous selector (one that already matched another workload) are never compacted.
With ``compaction_budget`` > 0, workloads of one behavioural cluster
(:class:`~recommender.analysis.clustering.estimators.BehaviourClustering`) whose rules differ are
merged too, with the union of their rules, when the unobserved grants this adds, (workload,
direction, peer, port) triples a member gets from another member's rules, are at most the budget.
See ``docs/clustering.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...aggregate.selectors import SelectorChoice
from ...policy._names import safe_name
from ...policy.model import Evidence, LabelSelector, Peer, Policy, PortSpec, Rule

__all__ = ["Grant", "added_grants", "compact", "grants", "union_rules", "union_selector"]

Owner = tuple[str, str]
Grant = tuple[str, Peer, PortSpec | None]


def grants(policy_rules: Iterable[Rule]) -> set[Grant]:
    """The (direction, peer, port) triples rules allow (``None``: every port)."""
    out: set[Grant] = set()
    for rule in policy_rules:
        for peer in rule.peers:
            for port in rule.ports or (None,):
                out.add((rule.direction, peer, port))
    return out


def _merge_evidence(evidences: Sequence[Evidence]) -> Evidence:
    firsts = [e.first_seen for e in evidences if e.first_seen]
    lasts = [e.last_seen for e in evidences if e.last_seen]
    return Evidence(
        connections=sum(e.connections for e in evidences),
        first_seen=min(firsts) if firsts else None,
        last_seen=max(lasts) if lasts else None,
        windows=max((e.windows for e in evidences), default=0),
        flags=tuple(sorted({f for e in evidences for f in e.flags})),
    )


def union_rules(policies: Sequence[Policy]) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """Ingress and egress rules of all ``policies``, equal rules once with summed evidence,
    in the order of the first policy that has them."""
    out: list[tuple[Rule, ...]] = []
    for direction in ("ingress", "egress"):
        merged: dict[Rule, list[Evidence]] = {}
        for policy in policies:
            for rule in policy.ingress if direction == "ingress" else policy.egress:
                merged.setdefault(rule, []).append(rule.evidence)
        out.append(tuple(replace(r, evidence=_merge_evidence(e)) for r, e in merged.items()))
    return out[0], out[1]


def added_grants(policies: Sequence[Policy]) -> int:
    """Grants members get from a shared policy with the union of the rules, beyond their own."""
    own = [grants(p.rules) for p in policies]
    union = set().union(*own) if own else set()
    return sum(len(union - mine) for mine in own)


def _matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return selector.matches(dict(labels))


def union_selector(
    members: Sequence[Owner],
    choices: Mapping[Owner, SelectorChoice],
    common: Mapping[Owner, Mapping[str, str]],
    observed: Mapping[Owner, Sequence[Mapping[str, str]]],
) -> tuple[LabelSelector, str] | None:
    """A selector for exactly ``members``' pods and how that was proved, or None.

    Parameters
    ----------
    members
        ``(namespace, workload)`` of the workloads to share a policy (one namespace).
    choices
        Every workload's selector (:func:`~recommender.aggregate.selectors.choose_selectors`).
    common
        Every workload's valid stable labels shared by all its pods.
    observed
        Every workload's observed label maps (empty: none observed, ``app=<workload>``
        assumed).
    """
    if len(members) < 2 or any(choices[m].ambiguous for m in members):
        return None
    namespace = members[0][0]
    selectors = [dict(choices[m].selector.match_labels) for m in members]
    if any(choices[m].selector.match_expressions for m in members):
        return None
    keys = set(selectors[0])
    if all(set(s) == keys for s in selectors):
        varying = [k for k in sorted(keys) if len({s[k] for s in selectors}) > 1]
        if len(varying) == 1:
            k = varying[0]
            fixed = {key: v for key, v in selectors[0].items() if key != k}
            values = tuple(sorted({s[k] for s in selectors}))
            return LabelSelector(tuple(sorted(fixed.items())), ((k, "In", values),)), "equivalent"
    # A label every member's pods carry, checked against every known workload of the namespace.
    labels = [
        dict(common[m]) if common.get(m) or observed.get(m) else {"app": m[1]} for m in members
    ]
    shared_keys = set.intersection(*(set(lab) for lab in labels))
    fixed = {k: labels[0][k] for k in shared_keys if all(lab[k] == labels[0][k] for lab in labels)}
    others = [o for o in choices if o[0] == namespace and o not in set(members)]
    candidates = [
        LabelSelector(
            tuple(sorted(fixed.items())), ((k, "In", tuple(sorted({lab[k] for lab in labels}))),)
        )
        for k in sorted(shared_keys - set(fixed))
    ]
    if fixed:
        candidates.append(LabelSelector(tuple(sorted(fixed.items()))))
    for candidate in candidates:
        if not all(_matches(candidate, lab) for lab in labels):
            continue
        clash = False
        for other in others:
            maps = list(observed.get(other, ())) or [{"app": other[1]}]
            if any(_matches(candidate, lab) for lab in maps):
                clash = True
                break
        if not clash:
            return candidate, "known-workloads"
    return None


@dataclass
class _Unit:
    owners: list[Owner]
    policies: list[Policy]


def compact(
    policies: Sequence[Policy],
    owners: Sequence[Owner],
    choices: Mapping[Owner, SelectorChoice],
    common: Mapping[Owner, Mapping[str, str]],
    observed: Mapping[Owner, Sequence[Mapping[str, str]]],
    *,
    prefix: str = "allow-",
    budget: int = 0,
    clusters: Mapping[Owner, int] | None = None,
    admits_refused: Callable[[Owner, set[Grant]], bool] | None = None,
) -> tuple[list[Policy], list[dict[str, Any]]]:
    """Merge the per-workload ``policies`` (``owners[i]`` owns ``policies[i]``).

    ``admits_refused(owner, grants)`` says whether one of ``grants`` (the ones ``owner`` would
    get from the other members only) admits a connection refused to it (denied, failed or
    excluded: :class:`~recommender.synthesis.refused.RefusedSet`). A budgeted merge that would
    is not made; its members are grouped by identical rules only, which adds no grant.

    Returns
    -------
    (policies, records)
        The policies (merged ones replace their members', in the same order otherwise), and
        one record per merged policy: ``namespace``, ``policy``, ``workloads``, ``selector``,
        ``proof`` and ``added_grants``.
    """
    by_key: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, (policy, owner) in enumerate(zip(policies, owners, strict=True)):
        if budget > 0 and clusters is not None and owner in clusters:
            key: tuple[Any, ...] = (owner[0], "cluster", clusters[owner])
        else:
            key = (owner[0], "rules", policy.policy_types, policy.ingress, policy.egress)
        by_key[key].append(i)
    merged_at: dict[int, Policy | None] = {}
    records: list[dict[str, Any]] = []
    names = {(p.namespace, p.name) for p in policies}
    for key, indices in sorted(by_key.items(), key=lambda kv: kv[1][0]):
        groups = [indices]
        cost = 0
        if key[1] == "cluster":
            members = [policies[i] for i in indices]
            cost = added_grants(members)
            if (
                cost > budget
                or len({p.policy_types for p in members}) > 1
                or _admits_refused(members, [owners[i] for i in indices], admits_refused)
            ):
                exact: dict[tuple[Any, ...], list[int]] = defaultdict(list)
                for i in indices:
                    p = policies[i]
                    exact[(p.policy_types, p.ingress, p.egress)].append(i)
                groups = list(exact.values())
                cost = 0
        for group in groups:
            if len(group) < 2:
                continue
            members_owners = [owners[i] for i in group]
            found = union_selector(members_owners, choices, common, observed)
            if found is None:
                continue
            selector, proof = found
            member_policies = [policies[i] for i in group]
            added = added_grants(member_policies)
            ingress, egress = union_rules(member_policies)
            namespace = members_owners[0][0]
            name = safe_name(f"{prefix}group-{members_owners[0][1]}")
            suffix = 2
            while (namespace, name) in names:
                name = safe_name(f"{prefix}group-{members_owners[0][1]}-{suffix}")
                suffix += 1
            names.add((namespace, name))
            workloads = [o[1] for o in members_owners]
            shared = Policy(
                name=name,
                namespace=namespace,
                selector=selector,
                policy_types=member_policies[0].policy_types,
                ingress=ingress,
                egress=egress,
                labels=member_policies[0].labels,
                annotations=(
                    ("recommender.io/compaction", proof if not added else f"budget:{added}"),
                    ("recommender.io/workloads", ",".join(workloads)[:4000]),
                ),
                description=f"Observed traffic of {len(workloads)} workloads of {namespace} "
                f"that behave alike: {', '.join(workloads)}.",
            )
            merged_at[group[0]] = shared
            for i in group[1:]:
                merged_at[i] = None
            records.append(
                {
                    "namespace": namespace,
                    "policy": name,
                    "workloads": workloads,
                    "selector": _selector_text(selector),
                    "proof": proof,
                    "added_grants": added,
                }
            )
    out = []
    for i, policy in enumerate(policies):
        if i in merged_at:
            replacement = merged_at[i]
            if replacement is not None:
                out.append(replacement)
        else:
            out.append(policy)
    return out, records


def _admits_refused(
    members: Sequence[Policy],
    member_owners: Sequence[Owner],
    admits_refused: Callable[[Owner, set[Grant]], bool] | None,
) -> bool:
    if admits_refused is None:
        return False
    own = [grants(p.rules) for p in members]
    union: set[Grant] = set().union(*own)
    return any(
        admits_refused(owner, union - mine)
        for owner, mine in zip(member_owners, own, strict=True)
        if union - mine
    )


def _selector_text(selector: LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in selector.match_labels]
    parts += [f"{k} {op} ({','.join(v)})" for k, op, v in selector.match_expressions]
    return ", ".join(parts)
