"""What staged policies would do: the cluster's own verdicts, read back from the flows.

A staged policy is evaluated by the cluster without being enforced, and the flow logs say what
it *would* have done:

- Calico Enterprise and Goldmane/Whisker keep the *pending* trace of each flow (the policies the
  flow would meet if the staged ones were enforced); the readers keep it in the ``policies``
  column, each entry prefixed ``pending:`` (:data:`~recommender.ingest.schema.PENDING_PREFIX`),
  in Calico's ``index|tier|name|action|rule`` form. The last entry decides: ``allow`` or
  ``deny`` (``pass`` hands over to the next tier; a trace ending in ``pass`` decides nothing).
- Cilium in policy audit mode forwards everything and marks a flow that the policies would drop
  with the verdict ``AUDIT`` (``audit`` in the canonical table); the policy is the first one
  Hubble names in ``ingress_denied_by``/``egress_denied_by`` (kept by the reader as
  ``denied-by:<direction>|<kind>|<namespace/name>``), ``""`` when it names none.

:func:`staged_evidence` sums those verdicts per staged policy and rule (flows it would deny,
with examples, flows it would allow, when it was last evaluated) and lists the *would-deny on
wanted traffic*: a flow the policies would deny although the recommendation allows its edge
(the same source, destination, protocol and port among the evidence edges). Traffic that was
screened out, denied or never learned does not count there: a staged policy *should* deny it.
:func:`compare_staged` puts the cluster's verdicts next to this project's own evaluation of the
same policies (``recommend evaluate --staged-verdicts``): every disagreement is a semantics bug on
one side or the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from ..aggregate.owners import resolve_batch_owners
from ..ingest.schema import PENDING_PREFIX

__all__ = [
    "StagedEvidence",
    "StagedRule",
    "WouldDeny",
    "compare_staged",
    "judge_staged",
    "staged_evidence",
    "staged_verdict",
]

#: Examples kept per staged rule and per would-deny edge.
MAX_EXAMPLES: Final = 5
_COLUMNS: Final = (
    "start_time", "end_time", "src_kind", "src_namespace", "src_workload", "src_pod", "src_ip",
    "src_name", "dst_kind", "dst_namespace", "dst_workload", "dst_pod", "dst_ip", "dst_name",
    "protocol", "dst_port", "verdict", "policies", "connections",
)


def _ident(row: Mapping[str, Any], side: str) -> str:
    """An endpoint's identity within its kind, as the edges have it (``src_id``, ``dst_id``)."""
    if row[f"{side}_kind"] == "workload":
        return str(row[f"{side}_workload"] or row[f"{side}_pod"] or row[f"{side}_ip"] or "?")
    return str(row[f"{side}_ip"] or row[f"{side}_name"] or "?")


def staged_verdict(policies: Iterable[str] | None, verdict: str) -> tuple[str, str, int] | None:
    """What the staged policies would do to one flow: ``(action, policy, rule)`` or None.

    ``action`` is ``allow`` or ``deny``; ``policy`` the deciding staged (or pending-trace)
    policy as the cluster names it, ``""`` when the log does not say (a Cilium ``AUDIT``);
    ``rule`` its rule index (``-1``: the end of its tier, ``-2``: unknown).

    >>> staged_verdict(["0|t|a/p|allow|0", "pending:0|t|a/staged:t.p|deny|1"], "allowed")
    ('deny', 'a/staged:t.p', 1)
    >>> staged_verdict(None, "audit")
    ('deny', '', -2)
    >>> staged_verdict(["denied-by:ingress|CiliumNetworkPolicy|shop/db"], "audit")
    ('deny', 'shop/db', -2)
    >>> staged_verdict(["0|t|a/p|allow|0"], "allowed") is None
    True
    """
    pending = [p[len(PENDING_PREFIX):] for p in policies or () if p.startswith(PENDING_PREFIX)]
    if pending:
        parts = pending[-1].split("|")
        if len(parts) == 5 and parts[3] in ("allow", "deny"):
            try:
                rule = int(parts[4])
            except ValueError:
                rule = -2
            return parts[3], parts[2], rule
        return None
    if verdict == "audit":
        named = [p.split("|", 2)[2] for p in policies or () if p.startswith("denied-by:")]
        return "deny", named[0] if named else "", -2
    return None


def _endpoint(row: Mapping[str, Any], side: str) -> str:
    if row[f"{side}_kind"] == "workload" and row[f"{side}_workload"]:
        return f"{row[f'{side}_namespace']}/{row[f'{side}_workload']}"
    return str(row[f"{side}_ip"] or row[f"{side}_kind"])


@dataclass
class StagedRule:
    """One staged policy rule's would-be verdicts."""

    policy: str
    rule: int
    would_deny: int = 0
    would_allow: int = 0
    last_evaluated: datetime | None = None
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "policy": self.policy,
            "rule": self.rule,
            "would_deny": self.would_deny,
            "would_allow": self.would_allow,
            "last_evaluated": self.last_evaluated.isoformat() if self.last_evaluated else None,
            "examples": list(self.examples),
        }


@dataclass
class WouldDeny:
    """Wanted traffic a staged policy would deny: the reason a rollout must wait."""

    source: str
    destination: str
    protocol: str
    port: int | None
    connections: int
    first_seen: datetime
    last_seen: datetime
    policy: str
    namespaces: tuple[str, ...]

    def line(self) -> str:
        """One line for people: ``would break: shop/checkout -> payments/api TCP/8443, ...``."""
        port = f"{self.protocol}/{self.port}" if self.port is not None else self.protocol
        by = f" (by {self.policy})" if self.policy else ""
        return (
            f"would break: {self.source} -> {self.destination} {port}, {self.connections} "
            f"connection{'s' if self.connections != 1 else ''} since "
            f"{self.first_seen:%Y-%m-%d %H:%M:%S}{by}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "source": self.source,
            "destination": self.destination,
            "protocol": self.protocol,
            "port": self.port,
            "connections": self.connections,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "policy": self.policy,
            "namespaces": list(self.namespaces),
            "line": self.line(),
        }


@dataclass
class StagedEvidence:
    """Every staged verdict of a window of flows (see the module docstring)."""

    rules: dict[tuple[str, int], StagedRule] = field(default_factory=dict)
    would_deny: list[WouldDeny] = field(default_factory=list)
    flows: int = 0

    def namespaces_to_reset(self) -> set[str]:
        """Namespaces whose staged policies would break wanted traffic."""
        return {ns for w in self.would_deny for ns in w.namespaces}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: would-deny first, then each rule's counts."""
        return {
            "flows_with_staged_verdicts": self.flows,
            "would_break": [w.to_dict() for w in self.would_deny],
            "rules": [self.rules[k].to_dict() for k in sorted(self.rules)],
        }


def _with_staged_verdicts(flows: pa.Table) -> pa.Table:
    """The rows of ``flows`` that may carry a staged verdict: a pending trace or ``audit``."""
    audit = pc.equal(flows.column("verdict"), "audit")
    text = pc.binary_join(
        pc.fill_null(flows.column("policies"), pa.scalar([], pa.list_(pa.string()))), "\n"
    )
    pending = pc.match_substring(text, PENDING_PREFIX)
    return flows.filter(pc.fill_null(pc.or_(audit, pending), False))


def _policy_namespace(policy: str) -> str | None:
    """``shop`` of ``shop/namespace-isolation.staged:shop-q7x2m``; None for a global policy."""
    head, sep, _ = policy.partition("/")
    return head if sep else None


def staged_evidence(
    flows: pa.Table, wanted: pa.Table | None = None, in_scope: Iterable[str] | None = None
) -> StagedEvidence:
    """Sum the staged verdicts of ``flows`` (see the module docstring).

    Parameters
    ----------
    flows : pyarrow.Table
        Canonical flow rows (only those with a pending trace or an ``audit`` verdict count).
    wanted : pyarrow.Table, optional
        The evidence edges the recommendation allows (``EdgeTables.edges``): a would-deny on one
        of them is wanted traffic. Without it no would-deny counts as wanted.
    in_scope : iterable of str, optional
        Namespaces whose rollout is tracked; a would-deny resets those of its two ends (and of
        its policy) that are in scope. Default: every namespace.

    Returns
    -------
    StagedEvidence
    """
    scope = set(in_scope) if in_scope is not None else None
    staged = _with_staged_verdicts(flows)
    # Owners, not runs or rollouts: the edges name a CronJob's pods by the CronJob and a
    # ReplicaSet's by its Deployment, so the rows must too, or a would-deny on the nightly
    # run of a wanted edge would pass as unwanted traffic.
    staged = pa.Table.from_batches(
        [resolve_batch_owners(b) for b in staged.to_batches()], staged.schema
    )
    rows = staged.select(list(_COLUMNS)).to_pylist()
    keys: set[tuple[str, str, str, str, str, str, str, int | None]] = set()
    if wanted is not None and wanted.num_rows:
        for e in wanted.select(
            ["src_kind", "src_namespace", "src_id", "dst_kind", "dst_namespace", "dst_id",
             "protocol", "dst_port"]
        ).to_pylist():
            keys.add((e["src_kind"], e["src_namespace"] or "", e["src_id"] or "",
                      e["dst_kind"], e["dst_namespace"] or "", e["dst_id"] or "",
                      e["protocol"], e["dst_port"]))
    evidence = StagedEvidence()
    breaking: dict[tuple[str, str, str, int | None, str], WouldDeny] = {}
    for row in rows:
        decided = staged_verdict(row["policies"], row["verdict"])
        if decided is None:
            continue
        action, policy, rule = decided
        evidence.flows += 1
        connections = int(row["connections"] or 1)
        entry = evidence.rules.setdefault((policy, rule), StagedRule(policy, rule))
        when = row["end_time"]
        if entry.last_evaluated is None or when > entry.last_evaluated:
            entry.last_evaluated = when
        source, destination = _endpoint(row, "src"), _endpoint(row, "dst")
        if action == "allow":
            entry.would_allow += connections
            continue
        entry.would_deny += connections
        port = row["dst_port"]
        example = f"{source} -> {destination} {row['protocol']}/{port}"
        if len(entry.examples) < MAX_EXAMPLES and example not in entry.examples:
            entry.examples.append(example)
        key = (row["src_kind"], row["src_namespace"] or "", _ident(row, "src"),
               row["dst_kind"], row["dst_namespace"] or "", _ident(row, "dst"),
               row["protocol"], port)
        if key not in keys:
            continue  # screened, refused or never learned: a staged policy should deny it
        namespaces = {row["src_namespace"], row["dst_namespace"], _policy_namespace(policy)}
        touched = tuple(sorted(
            ns for ns in namespaces if ns and (scope is None or ns in scope)
        ))
        if not touched:
            continue
        group = (source, destination, row["protocol"], port, policy)
        seen = breaking.get(group)
        if seen is None:
            breaking[group] = WouldDeny(
                source, destination, row["protocol"], port, connections,
                row["start_time"], row["end_time"], policy, touched,
            )
        else:
            seen.connections += connections
            seen.first_seen = min(seen.first_seen, row["start_time"])
            seen.last_seen = max(seen.last_seen, row["end_time"])
    evidence.would_deny = sorted(
        breaking.values(), key=lambda w: (-w.connections, w.source, w.destination, w.port or 0)
    )
    return evidence


def compare_staged(
    flows: pa.Table, judge: Any
) -> list[dict[str, Any]]:
    """Flows whose staged verdict (the cluster's) differs from ``judge(row) -> "allow"|"deny"``
    (this project's evaluation of the same staged policies), one dict per disagreement with the
    flow's endpoints, port, both verdicts and the deciding staged policy."""
    out: list[dict[str, Any]] = []
    for row in _with_staged_verdicts(flows).to_pylist():
        decided = staged_verdict(row["policies"], row["verdict"])
        if decided is None:
            continue
        ours = judge(row)
        if ours is None or ours == decided[0]:
            continue
        out.append({
            "source": _endpoint(row, "src"),
            "destination": _endpoint(row, "dst"),
            "protocol": row["protocol"],
            "port": row["dst_port"],
            "cluster": decided[0],
            "recommender": ours,
            "policy": decided[1],
            "rule": decided[2],
            "time": row["end_time"].isoformat() if row["end_time"] else None,
        })
    return out


def judge_staged(policy_set: Any, flows: pa.Table) -> list[dict[str, Any]]:
    """:func:`compare_staged` with this project's Kubernetes NetworkPolicy evaluator as the
    judge: ``policy_set`` (the staged policies, as enforcing NetworkPolicies) is evaluated on
    every flow that carries a staged verdict. Flows the evaluator cannot judge (node
    addresses, ICMP, ...) are left out, as in a replay."""
    from .replay import _Judge, _Query, _query, cluster_from_flows

    cluster = cluster_from_flows(flows)
    judge = _Judge(policy_set, cluster, {(p.namespace, p.name): p for p in cluster.pods})

    def ours(row: Mapping[str, Any]) -> str | None:
        edge = {
            **row,
            "src_id": _ident(row, "src"),
            "dst_id": _ident(row, "dst"),
            "src_ips": [row["src_ip"]] if row.get("src_ip") else [],
            "dst_ips": [row["dst_ip"]] if row.get("dst_ip") else [],
        }
        query = _query(judge, edge)
        if not isinstance(query, _Query):
            return None
        verdict = judge.verdict(query.src, query.dst, query.protocol, query.port)
        return "allow" if verdict.allowed else "deny"

    return compare_staged(flows, ours)
