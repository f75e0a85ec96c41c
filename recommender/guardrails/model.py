"""The guardrail model: cluster-wide rules that application policy may never override.

A :class:`Guardrails` file holds :class:`Guardrail` objects. A guardrail selects the pods it
governs by a :class:`Subject` (namespaces by label, optionally pods by label) and carries
ordered ingress and egress rules, the same :class:`~recommender.policy.model.Rule` objects as
application policy, with action ``allow``, ``deny`` or ``pass``. Its ``tier`` says where it sits
relative to the application's NetworkPolicies:

* ``admin`` guardrails are evaluated first, lowest ``priority`` first, rules in order, and the
  first rule that matches decides (``allow`` and ``deny`` are final; ``pass`` hands the
  connection to the NetworkPolicies);
* ``baseline`` guardrails apply only where no NetworkPolicy isolates the pod.

In guardrail rules, a ``pods`` peer always has a namespace selector (the empty selector: every
namespace), because a guardrail belongs to no namespace. The meaning is that of
ClusterNetworkPolicy (``policy.networking.k8s.io/v1alpha2``); ``docs/guardrails.md`` has the
file format and how each dialect expresses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..policy.model import LabelSelector, Rule

__all__ = ["NAMESPACE_NAME_LABEL", "Guardrail", "Guardrails", "Subject", "Tier"]

Tier = Literal["admin", "baseline"]

#: The label the API server puts on every namespace.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, order=True)
class Subject:
    """The pods a guardrail governs: pods matching ``pods`` in namespaces matching ``namespaces``.

    ``namespaces`` empty selects every namespace; ``pods`` None selects every pod of them.
    """

    namespaces: LabelSelector = field(default_factory=LabelSelector)
    pods: LabelSelector | None = None

    def matches(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        """Whether a pod with these labels, in a namespace with these labels, is governed."""
        if not self.namespaces.matches(dict(namespace_labels)):
            return False
        return self.pods is None or self.pods.matches(dict(pod_labels))


@dataclass(frozen=True)
class Guardrail:
    """One cluster-wide policy: a subject, a tier, a priority and ordered rules.

    Parameters
    ----------
    name : str
        A DNS-1123 label, unique in the file.
    priority : int
        0 to 1000; lower is evaluated first within the tier.
    subject : Subject
        The pods governed.
    tier : {"admin", "baseline"}
        Before (admin) or after (baseline) the application's NetworkPolicies.
    ingress, egress : tuple of Rule
        Ordered rules; the first that matches decides. A rule's ``comment`` is its name.
    description : str
        Why the guardrail exists (rendered as an annotation).
    controls : tuple of str
        Controls it supports, for instance ``PCI DSS 1.3.1`` (rendered as an annotation).
    """

    name: str
    priority: int
    subject: Subject = field(default_factory=Subject)
    tier: Tier = "admin"
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    description: str = field(default="", compare=False)
    controls: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Ingress then egress rules."""
        return self.ingress + self.egress


@dataclass(frozen=True)
class Guardrails:
    """A set of guardrails with the facts needed to judge flows against them.

    Parameters
    ----------
    name : str
        A DNS-1123 label that prefixes every rendered object's name.
    guardrails : tuple of Guardrail
        Sorted: admin before baseline, then by priority and name.
    scope : LabelSelector or None
        The in-scope namespaces (a PCI cardholder data environment, say) for the compliance
        checks; None means no segment is declared in scope.
    namespace_labels : mapping of str to mapping of str to str
        Labels of namespaces, which flow logs do not carry, so that namespace selectors can be
        judged against observed flows. ``kubernetes.io/metadata.name`` is always implied.
    """

    name: str = "guardrails"
    guardrails: tuple[Guardrail, ...] = ()
    scope: LabelSelector | None = None
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ordered = tuple(
            sorted(self.guardrails, key=lambda g: (g.tier != "admin", g.priority, g.name))
        )
        object.__setattr__(self, "guardrails", ordered)

    @property
    def admin(self) -> tuple[Guardrail, ...]:
        """Admin-tier guardrails, in evaluation order."""
        return tuple(g for g in self.guardrails if g.tier == "admin")

    @property
    def baseline(self) -> tuple[Guardrail, ...]:
        """Baseline-tier guardrails, in evaluation order."""
        return tuple(g for g in self.guardrails if g.tier == "baseline")

    def labels_of(self, namespace: str) -> dict[str, str]:
        """The declared labels of ``namespace`` plus ``kubernetes.io/metadata.name``."""
        return {**dict(self.namespace_labels.get(namespace, {})), NAMESPACE_NAME_LABEL: namespace}

    def __len__(self) -> int:
        return len(self.guardrails)
