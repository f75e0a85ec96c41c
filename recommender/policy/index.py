"""Label selectors indexed by label: which of many selectors match a labels map, without trying
each one.

A :class:`SelectorIndex` holds (selector, payload) pairs. Each selector is filed under one of
its ``matchLabels`` pairs (the first; a selector matches only maps that carry that pair), or,
without ``matchLabels``, in a short list tried for every map. :meth:`SelectorIndex.matching`
then looks at the buckets of the map's own pairs only: for the selectors of a
recommendation (one per workload, each with a label that names it) the cost is the number of
labels, not the number of selectors.

>>> from recommender.policy.model import LabelSelector
>>> index = SelectorIndex()
>>> index.add(LabelSelector.of({"app": "web"}), "web")
>>> index.add(LabelSelector.of({"app": "db", "tier": "data"}), "db")
>>> index.add(LabelSelector(), "everything")
>>> index.matching({"app": "db", "tier": "data"})
['db', 'everything']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from .model import LabelSelector

__all__ = ["SelectorIndex"]

T = TypeVar("T")


class SelectorIndex(Generic[T]):
    """(selector, payload) pairs, found by the labels they match; insertion order is kept."""

    def __init__(self) -> None:
        self._by_pair: dict[tuple[str, str], list[tuple[int, LabelSelector, T]]] = {}
        self._always: list[tuple[int, LabelSelector, T]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, selector: LabelSelector, payload: T) -> None:
        """File ``payload`` under ``selector``."""
        item = (self._count, selector, payload)
        self._count += 1
        if selector.match_labels:
            self._by_pair.setdefault(selector.match_labels[0], []).append(item)
        else:
            self._always.append(item)

    def matching(self, labels: Mapping[str, str]) -> list[T]:
        """The payloads whose selector matches ``labels``, in the order they were added."""
        found = [i for i in self._always if i[1].matches(labels)]
        by_pair = self._by_pair
        for pair in labels.items():
            bucket = by_pair.get(pair)
            if bucket:
                found.extend(i for i in bucket if i[1].matches(labels))
        if len(found) > 1:
            found.sort(key=lambda i: i[0])
        return [i[2] for i in found]
