"""The workloads' observed label maps as Python values, converted once per table.

:attr:`~recommender.aggregate.edges.EdgeTables.workload_labels` holds a row per pod's first and
last labelled row (two sides, so four rows a pod), each with an Arrow map of labels. Synthesis,
the self-check (twice: the evidence and the edges left out on purpose) and the graph each need
them as Python dicts; converting an Arrow map column row by row (``to_pylist``) was a third of
a second per consumer at 8,000 workloads. :func:`label_rows` converts the flattened keys and
values in two calls, shares one tuple per distinct map, and keeps the result for as long as the
table lives, so every consumer after the first gets it for free.
"""

from __future__ import annotations

import weakref
from typing import Any

import pyarrow as pa

__all__ = ["LabelRow", "label_rows"]

#: (namespace, workload, labels as (key, value) pairs in map order, or None for a null map).
LabelRow = tuple[Any, Any, tuple[tuple[str, str], ...] | None]

_CACHE: dict[int, tuple[weakref.ref[pa.Table], list[LabelRow]]] = {}


def _forget(key: int) -> Any:
    return lambda _ref: _CACHE.pop(key, None)


def label_rows(workload_labels: pa.Table) -> list[LabelRow]:
    """Every row of a ``workload_labels`` table as (namespace, workload, labels): the values
    ``to_pylist`` gives (a map as its (key, value) pairs, in order), equal maps as one tuple.

    The list is cached per table object (and dropped with it): treat it as read-only.
    """
    key = id(workload_labels)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is workload_labels:
        return hit[1]
    rows = _convert(workload_labels)
    _CACHE[key] = (weakref.ref(workload_labels, _forget(key)), rows)
    return rows


def _convert(table: pa.Table) -> list[LabelRow]:
    namespaces = table.column("namespace").to_pylist()
    workloads = table.column("workload").to_pylist()
    column = table.column("labels")
    maps: list[tuple[tuple[str, str], ...] | None] = []
    shared: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        offsets = chunk.offsets.to_pylist()
        keys = chunk.keys.to_pylist()
        items = chunk.items.to_pylist()
        valid = chunk.is_valid().to_pylist()
        for i in range(len(chunk)):
            if not valid[i]:
                maps.append(None)
                continue
            start, end = offsets[i], offsets[i + 1]
            pairs = tuple(zip(keys[start:end], items[start:end], strict=True))
            maps.append(shared.setdefault(pairs, pairs))
    return list(zip(namespaces, workloads, maps, strict=True))
