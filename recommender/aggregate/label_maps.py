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

__all__ = ["LabelRow", "label_rows", "map_values", "remember_label_rows"]

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


def remember_label_rows(workload_labels: pa.Table, rows: list[LabelRow]) -> None:
    """Give :func:`label_rows` the Python values of a table just built from them (the
    aggregation has them in hand), so that no consumer converts the table back."""
    key = id(workload_labels)
    _CACHE[key] = (weakref.ref(workload_labels, _forget(key)), rows)


def _convert(table: pa.Table) -> list[LabelRow]:
    namespaces = table.column("namespace").to_pylist()
    workloads = table.column("workload").to_pylist()
    shared: dict[Pairs, Pairs] = {}
    maps = [m for chunk in table.column("labels").chunks for m in map_values(chunk, shared)]
    return list(zip(namespaces, workloads, maps, strict=True))


Pairs = tuple[tuple[str, str], ...]


def map_values(array: pa.Array, shared: dict[Pairs, Pairs] | None = None) -> list[Pairs | None]:
    """A map array's values as ``to_pylist`` gives them, but as tuples of (key, value) pairs,
    equal maps as one tuple (``shared`` keeps them across calls): the keys and values are
    converted in one call each, not map by map."""
    if len(array) == 0:
        return []
    shared = {} if shared is None else shared
    offsets = array.offsets.to_pylist()
    keys = array.keys.to_pylist()
    items = array.items.to_pylist()
    valid = array.is_valid().to_pylist()
    out: list[Pairs | None] = []
    for i in range(len(array)):
        if not valid[i]:
            out.append(None)
            continue
        start, end = offsets[i], offsets[i + 1]
        pairs = tuple(zip(keys[start:end], items[start:end], strict=True))
        out.append(shared.setdefault(pairs, pairs))
    return out
