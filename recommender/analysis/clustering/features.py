"""Each workload's communication as a sparse vector: peers x ports x direction.

A workload's *behaviour* is the set of features ``direction|peer|protocol/port`` of its evidence
edges (:attr:`~recommender.aggregate.edges.EdgeTables.edges`): ``egress|shop/cart|TCP/8080`` for a
connection it opens, ``ingress|monitoring/prometheus|TCP/9090`` for one it accepts. Peers are
``namespace/workload`` for workloads and ``kind:address-or-name`` otherwise; the pod's own node
(kind ``host``, kubelet probes) is one peer ``host`` whatever its address, so that replicas
scheduled on different nodes look alike. The matrix holds connection counts; the estimators in
:mod:`recommender.analysis.clustering.estimators` read only which entries are present
(``weighting="binary"``) unless told otherwise.

See ``docs/clustering.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from ...aggregate.edges import EdgeTables

__all__ = ["CommunicationFeatures", "communication_features", "describe_feature"]


@dataclass(frozen=True)
class CommunicationFeatures:
    """The workload x feature matrix and the names of its rows and columns.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        ``(n_workloads, n_features)`` connection counts (float64); absent features are not
        stored.
    workloads : tuple of (str, str)
        ``(namespace, workload)`` of each row, sorted.
    feature_names : tuple of str
        ``direction|peer|protocol/port`` of each column, sorted.
    """

    matrix: sp.csr_matrix
    workloads: tuple[tuple[str, str], ...]
    feature_names: tuple[str, ...]

    @property
    def namespaces(self) -> np.ndarray[Any, np.dtype[np.str_]]:
        """Each row's namespace: the ``groups`` that keep clusters inside a namespace."""
        return np.array([ns for ns, _ in self.workloads], dtype=str)

    @property
    def row_names(self) -> list[str]:
        """``namespace/workload`` of each row."""
        return [f"{ns}/{wl}" for ns, wl in self.workloads]

    def row(self, namespace: str, workload: str) -> frozenset[str]:
        """The features of one workload (empty when it has none)."""
        try:
            i = self.workloads.index((namespace, workload))
        except ValueError:
            return frozenset()
        start, end = self.matrix.indptr[i], self.matrix.indptr[i + 1]
        return frozenset(self.feature_names[j] for j in self.matrix.indices[start:end])


def describe_feature(name: str) -> str:
    """A feature in words: ``egress|shop/cart|TCP/8080`` -> ``to shop/cart TCP/8080``.

    Examples
    --------
    >>> describe_feature("ingress|monitoring/prometheus|TCP/9090")
    'from monitoring/prometheus TCP/9090'
    """
    direction, rest = name.split("|", 1)
    peer, port = rest.rsplit("|", 1)
    return f"{'to' if direction == 'egress' else 'from'} {peer} {port}"


def _endpoint(edges: pa.Table, side: str) -> pa.Array:
    """``namespace/workload`` for workloads, ``host`` for the node, ``kind:id`` otherwise."""
    kind = edges[f"{side}_kind"]
    ident = pc.fill_null(edges[f"{side}_id"], "?")
    namespace = pc.fill_null(edges[f"{side}_namespace"], "")
    workload = pc.binary_join_element_wise(namespace, ident, "/")
    other = pc.binary_join_element_wise(kind, ident, ":")
    is_workload = pc.equal(kind, "workload")
    is_host = pc.equal(kind, "host")
    return pc.if_else(is_workload, workload, pc.if_else(is_host, pa.scalar("host"), other))


def communication_features(tables: EdgeTables | pa.Table) -> CommunicationFeatures:
    """Build the workload x (direction, peer, port) matrix from evidence edges.

    Parameters
    ----------
    tables : EdgeTables or pyarrow.Table
        The aggregation (its ``edges`` are used), or an edge table with the columns of
        :attr:`EdgeTables.edges <recommender.aggregate.edges.EdgeTables>` (``src_kind``,
        ``src_namespace``, ``src_id``, the same for ``dst``, ``protocol``, ``dst_port``,
        ``connections``).

    Returns
    -------
    CommunicationFeatures
        One row per workload with at least one edge in either direction; rows and columns
        sorted, so the same edges always give the same matrix.

    Examples
    --------
    >>> import pyarrow as pa
    >>> edges = pa.table({
    ...     "src_kind": ["workload"], "src_namespace": ["shop"], "src_id": ["web"],
    ...     "dst_kind": ["workload"], "dst_namespace": ["shop"], "dst_id": ["db"],
    ...     "protocol": ["TCP"], "dst_port": pa.array([5432], pa.int32()),
    ...     "connections": pa.array([7], pa.int64())})
    >>> f = communication_features(edges)
    >>> f.workloads, f.feature_names
    ((('shop', 'db'), ('shop', 'web')), ('egress|shop/db|TCP/5432', 'ingress|shop/web|TCP/5432'))
    """
    edges = tables.edges if isinstance(tables, EdgeTables) else tables
    if edges.num_rows == 0:
        return CommunicationFeatures(sp.csr_matrix((0, 0), dtype=np.float64), (), ())
    src, dst = _endpoint(edges, "src"), _endpoint(edges, "dst")
    port = pc.fill_null(pc.cast(edges["dst_port"], pa.string()), "*")
    service = pc.binary_join_element_wise(pc.fill_null(edges["protocol"], "?"), port, "/")
    weight = pc.fill_null(edges["connections"], 1).to_numpy(zero_copy_only=False)
    weight = np.maximum(weight.astype(np.float64), 1.0)
    owners: list[pa.Array] = []
    names: list[pa.Array] = []
    weights: list[np.ndarray[Any, Any]] = []
    for direction, own, far in (("egress", "src", dst), ("ingress", "dst", src)):
        mask = pc.equal(edges[f"{own}_kind"], "workload").combine_chunks()
        if not pc.any(mask).as_py():
            continue
        ns = pc.fill_null(pc.filter(edges[f"{own}_namespace"], mask), "")
        ident = pc.fill_null(pc.filter(edges[f"{own}_id"], mask), "?")
        owners.append(pc.binary_join_element_wise(ns, ident, "\x00").combine_chunks())
        feature = pc.binary_join_element_wise(
            pa.scalar(direction), pc.filter(far, mask), pc.filter(service, mask), "|"
        )
        names.append(feature.combine_chunks())
        weights.append(weight[mask.to_numpy(zero_copy_only=False)])
    if not owners:
        return CommunicationFeatures(sp.csr_matrix((0, 0), dtype=np.float64), (), ())
    owner_all = pa.concat_arrays(owners)
    name_all = pa.concat_arrays(names)
    row_names, rows = _sorted_codes(owner_all)
    col_names, cols = _sorted_codes(name_all)
    matrix = sp.csr_matrix(
        (np.concatenate(weights), (rows, cols)), shape=(len(row_names), len(col_names))
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    workloads = tuple(tuple(r.split("\x00", 1)) for r in row_names)
    return CommunicationFeatures(
        matrix,
        workloads,  # type: ignore[arg-type]
        tuple(col_names),
    )


def _sorted_codes(values: pa.Array) -> tuple[list[str], np.ndarray[Any, Any]]:
    """The distinct values, sorted, and each value's index among them (in Arrow, not Python)."""
    distinct = pc.unique(values)
    distinct = distinct.take(pc.array_sort_indices(distinct))
    codes = pc.index_in(values, value_set=distinct).to_numpy(zero_copy_only=False)
    return distinct.to_pylist(), codes
