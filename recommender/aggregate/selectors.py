"""Choosing stable label selectors that single out each workload.

Labels that change on every rollout or are injected by the CNI never reach a selector
(:data:`VOLATILE_LABELS`, :data:`VOLATILE_PREFIXES`). Of the stable labels, the conventional
identity keys come first (:data:`PREFERRED_KEYS`); more labels are added only while the
selector still matches another workload observed in the same namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ..policy.model import LabelSelector

__all__ = [
    "PREFERRED_KEYS",
    "VOLATILE_LABELS",
    "VOLATILE_PREFIXES",
    "SelectorChoice",
    "choose_selectors",
    "stable_labels",
]

#: Labels set per pod or per rollout by controllers: never in a selector.
VOLATILE_LABELS: Final = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
        "batch.kubernetes.io/job-completion-index",
        "io.kubernetes.pod.namespace",
    }
)
#: Label key prefixes injected by a controller, the CNI or the mesh rather than set by the
#: workload's owner: every ``batch.kubernetes.io/`` label is per Job run (``job-name``,
#: ``controller-uid``, ``job-completion-index``).
VOLATILE_PREFIXES: Final = ("io.cilium.", "io.cilium/", "io.kubernetes.", "batch.kubernetes.io/")

#: Identity keys in order of preference.
PREFERRED_KEYS: Final = (
    "app.kubernetes.io/name",
    "app",
    "k8s-app",
    "name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "component",
    "tier",
    "role",
    "version",
    "app.kubernetes.io/version",
)


_PREFERRED: Final = frozenset(PREFERRED_KEYS)


def stable_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` without the volatile ones."""
    return {
        k: v
        for k, v in labels.items()
        if k not in VOLATILE_LABELS and not k.startswith(VOLATILE_PREFIXES)
    }


def common_labels(label_sets: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The stable labels every one of ``label_sets`` carries with the same value.

    A map given several times (one object per distinct map, as synthesis shares them) is
    looked at once.
    """
    common: dict[str, str] | None = None
    seen: dict[int, Mapping[str, str]] = {}  # id -> map (kept, so no id is reused meanwhile)
    for labels in label_sets:
        if id(labels) in seen:
            continue
        seen[id(labels)] = labels
        if common is None:
            common = stable_labels(labels)
        elif common:
            common = {k: v for k, v in common.items() if labels.get(k) == v}
    return common or {}



@dataclass(frozen=True)
class SelectorChoice:
    """The selector chosen for one workload and how sure we are of it.

    ``source`` is ``labels`` (from observed labels), or ``fallback`` (no labels were observed;
    the selector assumes the conventional ``app=<workload>`` label and says so in the report).
    ``ambiguous`` is True when even all stable labels also match another observed workload.
    """

    selector: LabelSelector
    source: str
    ambiguous: bool = False


def choose_selectors(
    workloads: Mapping[tuple[str, str], Mapping[str, str]],
    *,
    stable: bool = False,
) -> dict[tuple[str, str], SelectorChoice]:
    """Choose a selector for each ``(namespace, workload)`` from its common stable labels.

    Parameters
    ----------
    workloads
        For every workload, the labels all its observed pods share (see :func:`common_labels`);
        an empty mapping when no labels were observed.
    stable
        The labels hold no volatile label already (as :func:`common_labels` gives them): they
        are not filtered again.

    Returns
    -------
    dict
        The :class:`SelectorChoice` of every workload. The result is deterministic: it depends
        on the labels only, not on the order of ``workloads``.

    Examples
    --------
    >>> choices = choose_selectors({
    ...     ("shop", "reviews-v1"): {"app": "reviews", "version": "v1"},
    ...     ("shop", "reviews-v2"): {"app": "reviews", "version": "v2"},
    ... })
    >>> choices[("shop", "reviews-v1")].selector.match_labels
    (('app', 'reviews'), ('version', 'v1'))
    """
    by_namespace: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for (namespace, name), labels in sorted(workloads.items()):
        kept = dict(labels) if stable else stable_labels(labels)
        by_namespace.setdefault(namespace, []).append((name, kept))
    result: dict[tuple[str, str], SelectorChoice] = {}
    for namespace, members in by_namespace.items():
        # (key, value) -> members carrying it: the others a one-label selector would also
        # select, narrowed key by key (linear per workload instead of scanning every other).
        index: dict[tuple[str, str], list[int]] = {}
        for position, (_, labels) in enumerate(members):
            for pair in labels.items():
                index.setdefault(pair, []).append(position)
        for position, (name, labels) in enumerate(members):
            if not labels:
                result[(namespace, name)] = SelectorChoice(
                    LabelSelector.of({"app": name}), "fallback"
                )
                continue
            chosen: dict[str, str] = {}
            also: list[int] = []  # other members the chosen labels also select
            # The preferred keys in order, then the others sorted (only when the preferred
            # ones do not single the workload out: most workloads stop at the first key).
            for phase in range(2):
                if phase == 0:
                    order: list[str] = [k for k in PREFERRED_KEYS if k in labels]
                elif chosen and not also:
                    break
                else:
                    order = sorted(k for k in labels if k not in _PREFERRED)
                for key in order:
                    chosen[key] = labels[key]
                    if len(chosen) == 1:
                        also = [j for j in index[(key, labels[key])] if j != position]
                    else:
                        also = [j for j in also if members[j][1].get(key) == labels[key]]
                    if not also:
                        break
            result[(namespace, name)] = SelectorChoice(
                LabelSelector.of(chosen), "labels", bool(also)
            )
    return result
