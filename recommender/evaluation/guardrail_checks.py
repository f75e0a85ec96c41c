"""Observed flows against guardrails (conflicts), and compliance checks of a policy stack.

:func:`find_conflicts` judges every evidence edge against the **admin** guardrails alone:
an admin deny is final whatever the application's policies say, so an observed connection it
denies is a conflict to resolve (change the guardrail or the application) and must get no
allow rule. Baseline guardrails are not conflicts: application policy may override them.

:func:`compliance_checks` runs three checks and maps each to controls of PCI DSS v4.0
requirement 1, NIST SP 800-53 SC-7, the SOC 2 Trust Services Criteria CC6.1 (logical access
restricted to what is authorised) and CC6.6 (protection against threats from outside the system
boundary), and GDPR Art. 32(1)(b) (ongoing confidentiality and integrity of processing
systems). A passing check is evidence toward a control for an assessor to weigh; it is not an
assessment, and never makes a system "compliant".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from ..aggregate.edges import EdgeTables
from ..guardrails.model import Guardrails
from ..policy.model import PolicySet
from .evaluator import Cluster, Endpoint, Pod

__all__ = ["PUBLIC_PROBE", "Conflict", "compliance_checks", "find_conflicts"]

#: A public address (TEST-NET-2, never routed) used to ask "may this pod reach the internet?".
PUBLIC_PROBE: Final = "198.51.100.1"
#: The port probes use: HTTPS, the most common way out.
_PROBE_PORT: Final = 443
#: A namespace no policy names, standing for "anything outside the segment".
_OUTSIDER: Final = "recommender-outside-probe"

CONTROLS: Final = {
    "default-deny": {
        "pci_dss_v4": ["1.3.1", "1.3.2"],
        "nist_800_53": ["SC-7", "SC-7(5)"],
        "soc2": ["CC6.1", "CC6.6"],
        "gdpr": ["Art. 32(1)(b)"],
        "title": "Default deny in every namespace",
    },
    "egress-restricted": {
        "pci_dss_v4": ["1.3.2", "1.4.2"],
        "nist_800_53": ["SC-7", "SC-7(5)"],
        "soc2": ["CC6.6"],
        "gdpr": ["Art. 32(1)(b)"],
        "title": "Egress to public addresses restricted",
    },
    "segments-isolated": {
        "pci_dss_v4": ["1.2.1", "1.3.1", "1.3.2"],
        "nist_800_53": ["SC-7", "SC-7(21)"],
        "soc2": ["CC6.1", "CC6.6"],
        "gdpr": ["Art. 32(1)(b)"],
        "title": "In-scope segments isolated",
    },
}


@dataclass(frozen=True)
class Conflict:
    """An observed allowed connection that an admin guardrail denies."""

    source: str
    destination: str
    protocol: str
    port: int | None
    connections: int
    guardrail: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def find_conflicts(
    guardrails: Guardrails, tables: EdgeTables, *, dialect: str = "kubernetes"
) -> tuple[list[Conflict], np.ndarray[Any, np.dtype[np.bool_]]]:
    """Evidence edges an admin guardrail denies, and a mask of the edges to keep.

    Parameters
    ----------
    guardrails : Guardrails
        The guardrails (their ``namespaceLabels`` label the namespaces seen in the flows).
    tables : EdgeTables
        The aggregated edges.
    dialect : str, default "kubernetes"
        Whose precedence applies (``cilium``: deny over allow across guardrails).

    Returns
    -------
    (list of Conflict, numpy.ndarray of bool)
        The conflicts, most connections first, and per edge whether it may get allow rules.
    """
    from .precedence import evaluate_stack, guardrail_tiers, with_namespace_labels
    from .replay import _Judge, _judge_table, _key_rows, _Query, cluster_from_flows

    keep = np.ones(tables.edges.num_rows, dtype=bool)
    admin_only = Guardrails(guardrails.name, guardrails.admin, guardrails.scope,
                            guardrails.namespace_labels)
    if not admin_only.guardrails:
        return [], keep
    cluster = with_namespace_labels(cluster_from_flows(tables), guardrails)
    judge = _Judge(PolicySet(), cluster, {(p.namespace, p.name): p for p in cluster.pods})
    queries, weights = _judge_table(judge, tables.edges)
    rows = _key_rows(tables.edges)
    tiers = guardrail_tiers(admin_only, PolicySet())[:1]
    conflicts = []
    aggregates = tables.edges.select(["src_ips", "dst_ips"]).to_pylist()
    for i, query in enumerate(queries):
        if not isinstance(query, _Query):
            query = _aggregate_query(judge, rows[i], aggregates[i])
            if query is None:
                continue
        if dialect == "cilium":
            verdict = evaluate_stack(admin_only, PolicySet(), cluster, query.src, query.dst,
                                     query.protocol, query.port, dialect="cilium")
        else:
            from .precedence import evaluate_tiers

            verdict = evaluate_tiers(tiers, cluster, query.src, query.dst, query.protocol,
                                     query.port)
        denied = [why for why in (verdict.egress, verdict.ingress) if why.startswith("denied")]
        if not denied:
            continue
        keep[i] = False
        row = rows[i]
        guardrail = denied[0].split(" by ", 1)[1].split(" ", 1)[0]
        conflicts.append(
            Conflict(
                _describe(row, "src"),
                _describe(row, "dst"),
                str(row["protocol"]),
                None if row["dst_port"] is None else int(row["dst_port"]),
                int(weights[i]),
                guardrail,
                "; ".join(denied),
            )
        )
    conflicts.sort(key=lambda c: (-c.connections, c.source, c.destination, c.port or -1))
    return conflicts, keep


#: Representative addresses for Calico's aggregated endpoints without addresses.
_AGGREGATES: Final = {"pub": PUBLIC_PROBE, "pvt": "10.255.255.254"}


def _aggregate_query(judge: Any, row: dict[str, Any], ips: dict[str, Any]) -> Any:
    """A query for an edge to or from Calico's ``pub``/``pvt`` aggregate, by a representative
    address (so a guardrail denying public egress also catches ``pub`` edges), else None."""
    from .replay import _endpoint, _Query

    sides: list[Pod | Endpoint | str] = []
    for side in ("src", "dst"):
        name = row[f"{side}_id"]
        if row[f"{side}_kind"] == "external" and not ips[f"{side}_ips"] and name in _AGGREGATES:
            sides.append(Endpoint(_AGGREGATES[name]))
        else:
            sides.append(_endpoint(judge, row[f"{side}_kind"], row[f"{side}_namespace"], name))
    src, dst = sides
    if isinstance(src, str) or isinstance(dst, str) or str(row["protocol"]).upper() not in (
        "TCP", "UDP", "SCTP"
    ):
        return None
    port = row["dst_port"]
    return _Query(src, dst, str(row["protocol"]).upper(),
                  None if port is None else int(port))


def _describe(row: dict[str, Any], side: str) -> str:
    if row[f"{side}_kind"] == "workload":
        return f"{row[f'{side}_namespace']}/{row[f'{side}_id']}"
    return f"{row[f'{side}_kind']}:{row[f'{side}_id']}"


def keep_edges(tables: EdgeTables, keep: np.ndarray[Any, np.dtype[np.bool_]]) -> EdgeTables:
    """``tables`` with only the edges ``keep`` marks."""
    from dataclasses import replace

    if keep.all():
        return tables
    return replace(tables, edges=tables.edges.filter(pa.array(keep)))


def compliance_checks(
    guardrails: Guardrails | None,
    policy_set: PolicySet,
    namespaces_in_scope: list[str],
    cluster: Cluster,
    *,
    dialect: str = "kubernetes",
) -> list[dict[str, Any]]:
    """Three checks, each pass/fail with evidence and the controls it supports.

    * ``default-deny``: every namespace in scope has a policy selecting every pod for ingress
      and egress with no rules (a default deny);
    * ``egress-restricted``: no known pod may open a connection to a public address no rule
      names (the probe :data:`PUBLIC_PROBE`, TCP/443), evaluated on the whole stack;
    * ``segments-isolated``: no pod of an in-scope namespace (the guardrails' ``scope``) can be
      reached from a pod outside every known namespace; ``not-applicable`` without a scope.

    Parameters
    ----------
    guardrails : Guardrails or None
        The guardrails (None: application policy only).
    policy_set : PolicySet
        The application's NetworkPolicies.
    namespaces_in_scope : list of str
        The namespaces the recommendation covers.
    cluster : Cluster
        Namespaces (with labels) and pods, for instance from
        :func:`~recommender.evaluation.replay.cluster_from_flows`.
    dialect : str, default "kubernetes"
        Whose precedence applies.

    Returns
    -------
    list of dict
        ``{"check", "title", "status", "evidence", "controls"}`` per check.
    """
    from .precedence import evaluate_stack, with_namespace_labels

    cluster = with_namespace_labels(cluster, guardrails)

    def verdict(src: Pod | Endpoint, dst: Pod | Endpoint) -> Any:
        return evaluate_stack(guardrails, policy_set, cluster, src, dst, "TCP", _PROBE_PORT,
                              dialect=dialect)  # type: ignore[arg-type]

    checks = []
    missing = [
        ns for ns in namespaces_in_scope
        if not any(
            p.selector.is_empty and set(p.policy_types) == {"ingress", "egress"}
            and not p.ingress and not p.egress
            for p in policy_set.in_namespace(ns)
        )
    ]
    checks.append(_check(
        "default-deny",
        not missing and bool(namespaces_in_scope),
        [f"{ns}: no default-deny policy" for ns in missing]
        or [f"{len(namespaces_in_scope)} namespaces each have a default deny for ingress "
            "and egress"],
    ))
    pods = [p for p in cluster.pods if p.namespace in set(namespaces_in_scope)]
    probe = Endpoint(PUBLIC_PROBE)
    open_out = [
        f"{p.key} may reach {PUBLIC_PROBE}:{_PROBE_PORT} ({verdict(p, probe).egress})"
        for p in pods
        if verdict(p, probe).allowed
    ]
    checks.append(_check(
        "egress-restricted",
        not open_out and bool(pods),
        open_out or [f"none of {len(pods)} pods may reach an arbitrary public address"],
    ))
    if guardrails is None or guardrails.scope is None:
        checks.append({**_check("segments-isolated", False, [
            "no in-scope segment is declared (guardrails 'scope')"]), "status": "not-applicable"})
        return checks
    scope = guardrails.scope
    in_scope = [
        p for p in cluster.pods if scope.matches(dict(cluster.namespaces[p.namespace].labels))
    ]
    outsider = Pod(_OUTSIDER, "probe", {})
    probe_cluster = Cluster({**cluster.namespaces}, (*cluster.pods, outsider))
    reachable = []
    for pod in in_scope:
        found = evaluate_stack(guardrails, policy_set, probe_cluster, outsider, pod, "TCP",
                               _PROBE_PORT, dialect=dialect)  # type: ignore[arg-type]
        if found.allowed:
            reachable.append(f"{pod.key} reachable from outside the segment ({found.ingress})")
    namespaces = sorted({p.namespace for p in in_scope})
    checks.append(_check(
        "segments-isolated",
        bool(in_scope) and not reachable,
        reachable or (
            [f"in-scope namespaces {', '.join(namespaces)}: unreachable from outside"]
            if in_scope else ["no observed pod is in an in-scope namespace"]
        ),
    ))
    return checks


def _check(name: str, passed: bool, evidence: list[str]) -> dict[str, Any]:
    controls = CONTROLS[name]
    return {
        "check": name,
        "title": controls["title"],
        "status": "pass" if passed else "fail",
        "evidence": evidence[:50],
        "controls": {"pci_dss_v4": controls["pci_dss_v4"],
                     "nist_800_53": controls["nist_800_53"],
                     "soc2": controls["soc2"],
                     "gdpr": controls["gdpr"]},
    }
