"""A policy tree of any dialect, read as the stack one CNI enforces.

:func:`read_policy_tree` reads Kubernetes NetworkPolicies, cluster network policies
(ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy), Calico
(``projectcalico.org/v3``) and Cilium (``cilium.io/v2``) objects from files and folders, and
chooses whose precedence judges them: the ``precedence`` asked for, or the dialect the tree
holds (Calico objects: ``calico``; Cilium objects: ``cilium``; else ``kubernetes``). A tree
mixing Calico and Cilium objects is refused (no CNI enforces both), and so are objects the
chosen precedence does not enforce (Calico objects under ``cilium`` and the reverse).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import InputError, UnsupportedDialectError
from ..guardrails.model import Guardrails
from ..guardrails.reader import CLUSTER_POLICY_KINDS, parse_cluster_policies
from ..policy.model import PolicySet
from ..policy.reader import iter_manifests, parse_networkpolicy
from .calico_policies import CALICO_GROUP, read_calico_tiers
from .calico_rules import CalicoRule, Flow
from .cilium_policies import CILIUM_GROUP, CiliumPolicy, evaluate_cilium, read_cilium_policies
from .evaluator import Cluster, Endpoint, Pod, Verdict
from .precedence import CalicoTier, evaluate_tiers
from .services import ServiceMap

__all__ = ["PolicyTree", "read_policy_tree"]

_KNOWN_GROUPS = ("networking.k8s.io", "policy.networking.k8s.io", CALICO_GROUP, CILIUM_GROUP)


@dataclass(frozen=True)
class PolicyTree:
    """Policies of every dialect found, and whose precedence judges them.

    ``calico`` holds the tiers (with the NetworkPolicies and guardrails in theirs) when the
    dialect is ``calico`` and the tree has Calico objects; ``cilium`` the Cilium policies when
    it is ``cilium`` and the tree has them; otherwise both are empty and
    :func:`~recommender.evaluation.precedence.evaluate_stack` judges ``network_policies`` and
    ``guardrails`` as before.
    """

    network_policies: PolicySet
    guardrails: Guardrails | None
    dialect: str
    calico: tuple[CalicoTier, ...] = ()
    cilium: tuple[CiliumPolicy, ...] = ()
    notes: tuple[str, ...] = ()
    #: Per cluster (by identity), the Calico policies selecting each pod: replay asks about
    #: the same pods thousands of times.
    _selections: dict[int, tuple[Cluster, dict[Any, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def _selection(self, cluster: Cluster) -> dict[Any, Any]:
        found = self._selections.get(id(cluster))
        if found is None or found[0] is not cluster:
            self._selections.clear()
            found = (cluster, {})
            self._selections[id(cluster)] = found
        return found[1]

    @property
    def native(self) -> bool:
        """True when Calico or Cilium objects are judged (not NetworkPolicies alone)."""
        return bool(self.calico or self.cilium)

    @cached_property
    def matches_requests(self) -> bool:
        """Whether some Calico rule matches HTTP requests (the flows' L7 records are then
        judged one by one)."""
        return any(
            isinstance(r, CalicoRule) and r.has_http
            for t in self.calico for p in t.policies for r in p.ingress + p.egress
        )

    @property
    def rules(self) -> int:
        """Rules of the Calico or Cilium policies."""
        if self.calico:
            return sum(len(p.ingress) + len(p.egress) for t in self.calico for p in t.policies)
        return sum(len(p.rules) for p in self.cilium)

    def verdict(
        self,
        cluster: Cluster,
        src: Pod | Endpoint | str,
        dst: Pod | Endpoint | str,
        protocol: str,
        port: int | None,
        *,
        requests: tuple[str, ...] = (),
        family: int | None = None,
        services: ServiceMap | None = None,
    ) -> Verdict:
        """The verdict of the whole tree on one connection.

        ``requests`` (``"METHOD path"``) are the HTTP requests the flows recorded on it: when a
        Calico rule matches on HTTP, each is judged and the connection is allowed when every
        one is. ``family`` is the address family of its pod ends (Calico ``ipVersion``),
        ``services`` the Service endpoints the flows show (Calico ``services``, Cilium
        ``toServices``; None: no endpoint is known to back any Service).
        """
        if self.calico:
            if requests and self.matches_requests:
                verdict = None
                for request in requests:
                    method, _, path = request.partition(" ")
                    verdict = evaluate_tiers(
                        self.calico, cluster, src, dst, protocol, port,
                        flow=Flow((method, path), family, services),
                        selection=self._selection(cluster),
                    )
                    if not verdict.allowed:
                        return verdict
                assert verdict is not None
                return verdict
            return evaluate_tiers(
                self.calico, cluster, src, dst, protocol, port,
                flow=Flow(None, family, services), selection=self._selection(cluster),
            )
        return evaluate_cilium(
            self.cilium, self.network_policies, self.guardrails, cluster, src, dst, protocol,
            port, services=services, selection=self._selection(cluster),
        )


def read_policy_tree(
    paths: str | Path | Iterable[str | Path],
    *,
    precedence: str | None = None,
    guardrails: Guardrails | None = None,
    skip: Iterable[str] = (),
) -> PolicyTree:
    """Read a policy tree of any dialect (see the module docstring).

    Parameters
    ----------
    paths
        YAML files and folders.
    precedence
        ``kubernetes``, ``calico`` or ``cilium``; None: the dialect of the tree.
    guardrails
        Guardrails from a file; they replace the cluster network policies found in the tree.
    skip
        Folder names whose manifests are left out (``_guardrails`` when ``guardrails`` is
        given: the tree's own rendering of them).

    Raises
    ------
    InputError
        If a manifest is malformed.
    UnsupportedDialectError
        If the tree mixes Calico and Cilium objects, holds objects the precedence does not
        enforce, or uses what the evaluator cannot judge.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    skipped = frozenset(skip)
    docs: list[tuple[str, Mapping[str, Any]]] = []
    for location, manifest in iter_manifests(items):
        if skipped and skipped & set(Path(location.split(" (document")[0]).parts):
            continue
        docs.append((location, manifest))
    for where, doc in docs:
        group, kind = _group(doc), str(doc.get("kind", ""))
        if kind.endswith("NetworkPolicy") and group not in _KNOWN_GROUPS:
            raise UnsupportedDialectError(
                f"{where}: {doc.get('apiVersion')} {kind} is a policy kind that is not "
                "evaluated (Kubernetes, Calico v3 and Cilium v2 are); remove it from the input "
                "rather than have it ignored."
            )
    calico = [(w, d) for w, d in docs if _group(d) == CALICO_GROUP]
    cilium = [(w, d) for w, d in docs if _group(d) == CILIUM_GROUP]
    if calico and cilium:
        raise UnsupportedDialectError(
            f"{calico[0][0]} is a Calico object and {cilium[0][0]} a Cilium one: no CNI "
            "enforces both; evaluate each dialect's tree on its own."
        )
    dialect = precedence or ("calico" if calico else "cilium" if cilium else "kubernetes")
    foreign = (calico or cilium) if dialect == "kubernetes" else (
        cilium if dialect == "calico" else calico)
    if foreign:
        where, doc = foreign[0]
        hint = "calico" if foreign is calico else "cilium"
        raise UnsupportedDialectError(
            f"{where}: {doc.get('apiVersion')} {doc.get('kind')} is not enforced under "
            f"--precedence {dialect}; use --precedence {hint} (or leave it out: the tree's "
            "dialect is then used)."
        )
    network_policies = _network_policies(docs)
    if guardrails is None:
        cluster_docs = [
            d for _, d in docs
            if d.get("kind") in CLUSTER_POLICY_KINDS and _group(d) == "policy.networking.k8s.io"
        ]
        guardrails = parse_cluster_policies(cluster_docs) if cluster_docs else None
    if dialect == "calico" and calico:
        tiers, notes = read_calico_tiers(calico, network_policies, guardrails)
        return PolicyTree(network_policies, guardrails, dialect, calico=tiers, notes=notes)
    if dialect == "cilium" and cilium:
        policies, notes = read_cilium_policies(cilium)
        return PolicyTree(network_policies, guardrails, dialect, cilium=policies, notes=notes)
    return PolicyTree(network_policies, guardrails, dialect)


def _network_policies(docs: list[tuple[str, Mapping[str, Any]]]) -> PolicySet:
    """The Kubernetes NetworkPolicies among ``docs`` (as :func:`read_policies` reads them)."""

    out: dict[tuple[str, str], Any] = {}
    for where, doc in docs:
        if doc.get("kind") == "NetworkPolicy" and _group(doc) == "networking.k8s.io":
            try:
                policy = parse_networkpolicy(dict(doc))
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            key = (policy.namespace, policy.name)
            if key in out:
                raise InputError(
                    f"{where}: NetworkPolicy {policy.name!r} in namespace {policy.namespace!r} "
                    "is defined twice; remove one of them."
                )
            out[key] = policy
    return PolicySet(tuple(out.values()))


def _group(doc: Mapping[str, Any]) -> str:
    return str(doc.get("apiVersion", "")).rpartition("/")[0]
