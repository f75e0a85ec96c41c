"""One entry point for every output dialect: Kubernetes, Calico, Cilium and Istio.

All dialects render the same :class:`~recommender.policy.model.PolicySet`; this module names
them, parses a ``--dialect`` value, and groups rendered manifests for the tree writer
(cluster-scoped objects under :data:`CLUSTER_SCOPED`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ..errors import ConfigError
from .calico import CalicoOptions, render_calico
from .cilium import CiliumOptions, render_cilium
from .istio import DEFAULT_TRUST_DOMAIN, IstioOptions, render_istio
from .kubernetes import render_kubernetes
from .model import PolicySet

__all__ = [
    "CLUSTER_SCOPED",
    "DIALECTS",
    "DialectOptions",
    "group_by_namespace",
    "parse_dialects",
    "render_dialect",
]

#: The output dialects, in the order their folders are listed.
DIALECTS: Final = ("kubernetes", "calico", "cilium", "istio")
#: The key (and folder) of cluster-scoped manifests; never a namespace (not a DNS-1123 label).
CLUSTER_SCOPED: Final = "_cluster"


@dataclass(frozen=True)
class DialectOptions:
    """Options of the Calico, Cilium and Istio dialects (Kubernetes has none).

    Attributes
    ----------
    staged
        Calico: StagedNetworkPolicy / StagedGlobalNetworkPolicy.
    tier, tier_order
        Calico: the recommendations tier and its order (``tier`` None: the default tier).
    domains
        Use observed DNS names for egress to external addresses (Calico ``domains``, Cilium
        ``toFQDNs`` with the DNS proxy rule).
    l7
        Cilium and Istio: HTTP method and path rules from observed L7 flows.
    service_accounts
        Select workloads by service account where flows name one.
    group_labels
        Calico: labels of each address group's GlobalNetworkSet (from the inventory).
    network_sets
        Calico: each rule's external CIDRs in a NetworkSet the rule selects.
    trust_domain
        Istio: the trust domain of the principals (``<trust domain>/ns/NS/sa/SA``).
    mtls
        Istio: ``"strict"`` adds a STRICT PeerAuthentication per namespace.
    """

    staged: bool = False
    tier: str | None = "recommendations"
    tier_order: int = 5000
    domains: bool = False
    l7: bool = False
    service_accounts: bool = False
    group_labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    network_sets: bool = False
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    mtls: str | None = None

    def calico(self) -> CalicoOptions:
        """The Calico writer's options."""
        return CalicoOptions(
            tier=self.tier,
            tier_order=self.tier_order,
            staged=self.staged,
            domains=self.domains,
            service_accounts=self.service_accounts,
            group_labels=self.group_labels,
            network_sets=self.network_sets,
        )

    def cilium(self) -> CiliumOptions:
        """The Cilium writer's options."""
        return CiliumOptions(fqdn=self.domains, l7=self.l7, service_accounts=self.service_accounts)

    def istio(self) -> IstioOptions:
        """The Istio writer's options."""
        return IstioOptions(trust_domain=self.trust_domain, l7=self.l7, mtls=self.mtls)


def parse_dialects(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """Dialect names from ``--dialect`` values (repeated or comma-separated), in
    :data:`DIALECTS` order without duplicates; nothing given means ``("kubernetes",)``.

    Raises
    ------
    ConfigError
        For a name that is not a dialect.

    Examples
    --------
    >>> parse_dialects(["cilium,kubernetes", "cilium"])
    ('kubernetes', 'cilium')
    """
    if values is None:
        return ("kubernetes",)
    if isinstance(values, str):
        values = [values]
    names: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"dialects must be names, not {value!r}.")
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in DIALECTS:
                raise ConfigError(
                    f"unknown dialect {part.strip()!r}; choose from {', '.join(DIALECTS)}."
                )
            names.add(name)
    return tuple(d for d in DIALECTS if d in names) or ("kubernetes",)


def render_dialect(
    policy_set: PolicySet, dialect: str, options: DialectOptions | None = None
) -> list[dict[str, Any]]:
    """Render ``policy_set`` in one dialect (see :data:`DIALECTS`).

    Raises
    ------
    ConfigError
        For an unknown dialect.
    SynthesisError
        For what the dialect cannot express.
    """
    options = options or DialectOptions()
    if dialect == "kubernetes":
        return render_kubernetes(policy_set)
    if dialect == "calico":
        return render_calico(policy_set, options.calico())
    if dialect == "cilium":
        return render_cilium(policy_set, options.cilium())
    if dialect == "istio":
        return render_istio(policy_set, options.istio())
    raise ConfigError(f"unknown dialect {dialect!r}; choose from {', '.join(DIALECTS)}.")


def group_by_namespace(manifests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Manifests keyed by ``metadata.namespace``; cluster-scoped ones under
    :data:`CLUSTER_SCOPED`, order kept."""
    out: dict[str, list[dict[str, Any]]] = {}
    for manifest in manifests:
        namespace = manifest.get("metadata", {}).get("namespace") or CLUSTER_SCOPED
        out.setdefault(namespace, []).append(manifest)
    return out
