"""The algorithm of :class:`~recommender.analysis.clustering.estimators.BehaviourClustering`,
without scikit-learn.

Importing scikit-learn costs about two seconds (it imports scipy.stats); the default pipeline
screens flows for cluster outliers on every run (:mod:`recommender.analysis.anomaly`), so it uses
:class:`BehaviourCore` from here, and only the public estimators in
:mod:`recommender.analysis.clustering.estimators` (scikit-learn base classes, ``clone``,
``get_params``) import scikit-learn. The agglomerative step cuts, at the distance threshold, the
tree SciPy's ``linkage`` builds (and scikit-learn's ``AgglomerativeClustering`` for a precomputed
matrix): :func:`flat_clusters` follows SciPy's algorithm step for step, and
:func:`connected_components` stands in for SciPy's, so that a run imports neither ``scipy.cluster``
nor ``scipy.sparse.csgraph`` (0.6 s together). Tests check both against SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Self

import numpy as np
import scipy.sparse as sp

__all__ = ["BehaviourCore"]

_METRICS: Final = ("jaccard", "cosine")
_LINKAGES: Final = ("average", "complete", "single")
_WEIGHTINGS: Final = ("binary", "log")
#: Pairs whose distances are computed at once (bounds memory).
_PAIR_CHUNK: Final = 200_000
#: Hash functions applied at once by MinHash (bounds memory: chunk x non-zeros x 8 bytes).
_HASH_CHUNK: Final = 8

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def connected_components(graph: sp.spmatrix) -> IntArray:
    """The connected component of each node of an undirected graph (its stored nonzero
    entries are the edges), numbered by their lowest node: the grouping of
    ``scipy.sparse.csgraph.connected_components(graph, directed=False)``, without importing
    ``scipy.sparse.csgraph`` (0.2 s, on every run) for graphs of a few hundred nodes.

    Each node takes the lowest label among its neighbours, then labels jump to their own
    label's label, until nothing changes.
    """
    coo = sp.coo_matrix(graph)
    n = coo.shape[0]
    labels = np.arange(n, dtype=np.int64)
    rows = coo.row[coo.data != 0].astype(np.int64)
    cols = coo.col[coo.data != 0].astype(np.int64)
    while len(rows):
        low = np.minimum(labels[rows], labels[cols])
        new = labels.copy()
        np.minimum.at(new, rows, low)
        np.minimum.at(new, cols, low)
        new = new[new]
        if np.array_equal(new, labels):
            break
        labels = new
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def flat_clusters(distances: FloatArray, method: str, threshold: float) -> IntArray:
    """The flat clusters of average or complete linkage of a symmetric distance matrix, cut at
    ``threshold``: ``fcluster(linkage(squareform(distances), method), threshold, "distance")``
    grouped alike (numbered by lowest member), without importing ``scipy.cluster`` (0.4 s, on
    every run).

    SciPy's nearest-neighbour chain (``scipy/cluster/_hierarchy.pyx``, ``nn_chain``), step for
    step, ties included: follow nearest neighbours (the previous link of the chain first, else
    the lowest index) until two are each other's nearest, merge them into the higher index,
    and update its distances by the Lance-Williams formula of the method. A merge joins its two
    clusters in the cut when the highest merge below it, itself included, is within the
    threshold (fcluster's "distance" criterion).
    """
    n = len(distances)
    big = np.array(distances, dtype=np.float64, copy=True)
    np.fill_diagonal(big, np.inf)
    size = np.ones(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.float64)  # the highest merge within each cluster
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    chain: list[int] = []
    for _ in range(n - 1):
        if not chain:
            chain.append(int(np.flatnonzero(size)[0]))
        while True:
            x = chain[-1]
            row = big[x]
            nearest = float(row.min())
            if len(chain) > 1 and row[chain[-2]] <= nearest:
                y, nearest = chain[-2], float(row[chain[-2]])
                break
            y = int(np.argmin(row))
            chain.append(y)
        del chain[-2:]
        x, y = min(x, y), max(x, y)
        nx, ny = int(size[x]), int(size[y])
        merged = max(nearest, height[x], height[y])
        if merged <= threshold:
            parent[find(x)] = find(y)
        height[y] = merged
        size[x], size[y] = 0, nx + ny
        live = size > 0
        live[y] = False
        if method == "average":
            update = (nx * big[:, x] + ny * big[:, y]) / (nx + ny)
        else:
            update = np.maximum(big[:, x], big[:, y])
        big[live, y] = update[live]
        big[y, live] = update[live]
        big[x, :] = np.inf
        big[:, x] = np.inf
    numbers: dict[int, int] = {}
    return np.array([numbers.setdefault(find(i), len(numbers)) for i in range(n)], dtype=np.int64)


def _as_csr(X: Any) -> sp.csr_matrix:
    """``X`` as a float64 CSR matrix (a copy); ValueError unless it is 2-D, finite and >= 0."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    else:
        dense = np.asarray(X, dtype=np.float64)
        if dense.ndim != 2:
            raise ValueError(f"expected a 2-D feature matrix, got {dense.ndim} dimension(s)")
        X = sp.csr_matrix(dense)
    if X.shape[0] < 1:
        raise ValueError("the feature matrix has no rows (at least 1 is required)")
    if X.nnz and not np.isfinite(X.data).all():
        raise ValueError("the feature matrix must not contain NaN or infinity")
    if X.nnz and X.data.min() < 0:
        raise ValueError("the feature matrix must not have negative entries")
    X.eliminate_zeros()
    X.sum_duplicates()
    X.sort_indices()
    return X


def _groups(groups: Sequence[Any] | np.ndarray[Any, Any] | None, n: int) -> IntArray:
    """Each row's block as a small integer (all 0 without groups)."""
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    values = np.asarray(groups)
    if values.shape != (n,):
        raise ValueError(f"groups has shape {values.shape}, expected ({n},)")
    _, inverse = np.unique(values.astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def _signatures(X: sp.csr_matrix, blocks: IntArray) -> tuple[IntArray, IntArray]:
    """Per row its signature group (numbered by first row), and each group's first row."""
    seen: dict[tuple[int, bytes], int] = {}
    labels = np.empty(X.shape[0], dtype=np.int64)
    first: list[int] = []
    indptr, indices = X.indptr, X.indices
    for i in range(X.shape[0]):
        key = (int(blocks[i]), indices[indptr[i] : indptr[i + 1]].tobytes())
        found = seen.get(key)
        if found is None:
            found = seen[key] = len(first)
            first.append(i)
        labels[i] = found
    return labels, np.asarray(first, dtype=np.int64)


def _random_state(seed: Any) -> np.random.RandomState:
    """A RandomState from None, an int or a RandomState (as scikit-learn's check_random_state)."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, int | np.integer):
        return np.random.RandomState(int(seed))
    raise ValueError(f"random_state must be None, an int or a RandomState, not {seed!r}")


class BehaviourCore:
    """Parameters, fitting and attributes of
    :class:`~recommender.analysis.clustering.estimators.BehaviourClustering` (documented there)."""

    def __init__(
        self,
        *,
        metric: str = "jaccard",
        distance_threshold: float = 0.3,
        linkage: str = "average",
        weighting: str = "binary",
        neighbour_radius: float | None = None,
        exact_block_size: int = 2000,
        max_component_size: int = 1500,
        n_bands: int = 16,
        band_size: int = 4,
        max_bucket: int = 64,
        random_state: Any = None,
    ) -> None:
        self.metric = metric
        self.distance_threshold = distance_threshold
        self.linkage = linkage
        self.weighting = weighting
        self.neighbour_radius = neighbour_radius
        self.exact_block_size = exact_block_size
        self.max_component_size = max_component_size
        self.n_bands = n_bands
        self.band_size = band_size
        self.max_bucket = max_bucket
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> float:
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, not {self.metric!r}")
        if self.linkage not in _LINKAGES:
            raise ValueError(f"linkage must be one of {_LINKAGES}, not {self.linkage!r}")
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, not {self.weighting!r}")
        if not 0 < float(self.distance_threshold) < 1:
            raise ValueError("distance_threshold must be between 0 and 1")
        radius = (
            min(2 * float(self.distance_threshold), 0.9)
            if self.neighbour_radius is None
            else float(self.neighbour_radius)
        )
        if not float(self.distance_threshold) <= radius < 1:
            raise ValueError("neighbour_radius must be in [distance_threshold, 1)")
        for name in ("exact_block_size", "max_component_size", "n_bands", "band_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < (0 if name[0] == "e" else 1):
                raise ValueError(f"{name} must be a positive whole number, not {value!r}")
        if not isinstance(self.max_bucket, int | np.integer) or self.max_bucket < 2:
            raise ValueError("max_bucket must be a whole number >= 2")
        return radius

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> Self:
        """Cluster the rows of ``X`` (parameters: :meth:`BehaviourClustering.fit
        <recommender.analysis.clustering.estimators.BehaviourClustering.fit>`)."""
        radius = self._check_params()
        X = _as_csr(X)
        n = X.shape[0]
        blocks = _groups(groups, n)
        sig_labels, reps = _signatures(X, blocks)
        weights = np.bincount(sig_labels, minlength=len(reps)).astype(np.float64)
        U = X[reps]
        vectors = self._vectors(U)
        ublocks = blocks[reps]
        i, j, d = self._candidates(U, vectors, ublocks)
        self.n_candidate_pairs_ = len(i)
        keep = d <= radius
        graph = sp.csr_matrix(
            (d[keep], (i[keep], j[keep])), shape=(len(reps), len(reps)), dtype=np.float64
        )
        graph = graph.maximum(graph.T).tocsr()
        clusters: list[IntArray] = []
        silhouette = np.zeros(len(reps), dtype=np.float64)
        self._cluster(np.arange(len(reps)), graph, radius, vectors, weights, clusters, silhouette)
        # Number clusters by their first row.
        sig_cluster = np.empty(len(reps), dtype=np.int64)
        for c, members in enumerate(clusters):
            sig_cluster[members] = c
        first_row = np.full(len(clusters), n, dtype=np.int64)
        np.minimum.at(first_row, sig_cluster[sig_labels], np.arange(n))
        order = np.argsort(first_row, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.labels_ = rank[sig_cluster[sig_labels]]
        self.signature_labels_ = sig_labels
        self.silhouette_ = silhouette[sig_labels]
        self.confidence_ = np.maximum(self.silhouette_, 0.0)
        self.n_clusters_ = len(clusters)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters_)
        sums = np.bincount(self.labels_, weights=self.confidence_, minlength=self.n_clusters_)
        self.cluster_confidence_ = sums / np.maximum(self.cluster_sizes_, 1)
        self.n_signatures_ = len(reps)
        self.n_features_in_ = X.shape[1]
        return self

    def _vectors(self, U: sp.csr_matrix) -> sp.csr_matrix:
        """Binary rows (Jaccard), or L2-normalised weighted rows (cosine)."""
        V = U.copy()
        if self.metric == "jaccard" or self.weighting == "binary":
            V.data = np.ones_like(V.data)
        else:
            V.data = np.log1p(V.data)
        if self.metric == "cosine":
            norms = np.sqrt(np.asarray(V.multiply(V).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            V = sp.csr_matrix(sp.diags(1.0 / norms) @ V)
        return V

    def _distance(self, V: sp.csr_matrix, i: IntArray, j: IntArray) -> FloatArray:
        """Distances of the pairs ``(i[k], j[k])``."""
        out = np.empty(len(i), dtype=np.float64)
        sizes = np.diff(V.indptr).astype(np.float64)
        for start in range(0, len(i), _PAIR_CHUNK):
            a, b = i[start : start + _PAIR_CHUNK], j[start : start + _PAIR_CHUNK]
            dot = np.asarray(V[a].multiply(V[b]).sum(axis=1)).ravel()
            out[start : start + len(a)] = self._from_dot(dot, sizes[a], sizes[b])
        return out

    def _from_dot(self, dot: FloatArray, size_a: FloatArray, size_b: FloatArray) -> FloatArray:
        if self.metric == "cosine":
            return np.clip(1.0 - dot, 0.0, 1.0)
        union = size_a + size_b - dot
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(union > 0, 1.0 - dot / np.where(union > 0, union, 1.0), 0.0)
        return np.clip(d, 0.0, 1.0)

    def _candidates(
        self, U: sp.csr_matrix, V: sp.csr_matrix, blocks: IntArray
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """Candidate pairs ``i < j`` of distinct signatures and their distances.

        Blocks of at most ``exact_block_size`` rows are compared all at once: one product of
        the binary rows with features numbered apart per block, so that rows of different
        blocks share none (the pairs a product per block finds, in one sparse product
        instead of one per namespace: the same pairs). Larger blocks go through MinHash.
        """
        pairs_i: list[IntArray] = []
        pairs_j: list[IntArray] = []
        dists: list[FloatArray] = []
        order = np.argsort(blocks, kind="stable")
        bounds = np.flatnonzero(np.diff(blocks[order])) + 1
        large: list[IntArray] = []
        small: list[IntArray] = []
        sizes = np.diff(V.indptr).astype(np.float64)
        for members in np.split(order, bounds):
            if len(members) < 2:
                continue
            (large if len(members) > self.exact_block_size else small).append(members)
        if small:
            rows = np.concatenate(small)
            sub = V[rows]
            # Each block's features numbered apart: rows of different blocks share none.
            block = np.repeat(np.arange(len(small), dtype=np.int64), [len(m) for m in small])
            columns = sub.indices.astype(np.int64) + np.repeat(
                block * V.shape[1], np.diff(sub.indptr)
            )
            binary = sp.csr_matrix(
                (np.ones(len(columns)), columns, sub.indptr.astype(np.int64)),
                shape=(len(rows), len(small) * max(V.shape[1], 1)),
            )
            # Pairs sharing at least one feature; the rest are at distance 1.
            overlap = sp.triu(binary @ binary.T, k=1).tocoo()
            a, b = rows[overlap.row], rows[overlap.col]
            if self.metric == "cosine":
                d = self._distance(V, a, b)
            else:
                d = self._from_dot(overlap.data.astype(np.float64), sizes[a], sizes[b])
            pairs_i.append(np.minimum(a, b))
            pairs_j.append(np.maximum(a, b))
            dists.append(d)
        if large:
            a, b = self._lsh_pairs(U, np.concatenate(large), blocks)
            if len(a):
                pairs_i.append(a)
                pairs_j.append(b)
                dists.append(self._distance(V, a, b))
        if not pairs_i:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float64)
        return np.concatenate(pairs_i), np.concatenate(pairs_j), np.concatenate(dists)

    def _minhash(self, U: sp.csr_matrix, rows: IntArray) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """MinHash signatures ``(len(rows), n_bands * band_size)`` of the rows' supports."""
        rng = _random_state(self.random_state)
        k = self.n_bands * self.band_size
        a = rng.randint(1, 2**62, size=k).astype(np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.randint(0, 2**62, size=k).astype(np.uint64)
        sub = U[rows]
        nonempty = np.diff(sub.indptr) > 0
        out = np.full((len(rows), k), np.uint64(2**32), dtype=np.uint64)
        starts = sub.indptr[:-1][nonempty]
        cols = sub.indices.astype(np.uint64)
        for c in range(0, k, _HASH_CHUNK):
            ac, bc = a[c : c + _HASH_CHUNK, None], b[c : c + _HASH_CHUNK, None]
            with np.errstate(over="ignore"):
                hashed = (ac * cols[None, :] + bc) >> np.uint64(32)
            if len(starts):
                out[nonempty, c : c + _HASH_CHUNK] = np.minimum.reduceat(hashed, starts, axis=1).T
        return out

    def _lsh_pairs(
        self, U: sp.csr_matrix, rows: IntArray, blocks: IntArray
    ) -> tuple[IntArray, IntArray]:
        """Candidate pairs from MinHash bands, within blocks."""
        rows = np.sort(rows)
        signatures = self._minhash(U, rows)
        found: list[IntArray] = []
        n = U.shape[0]
        for band in range(self.n_bands):
            part = signatures[:, band * self.band_size : (band + 1) * self.band_size]
            keyed = np.column_stack([blocks[rows].astype(np.uint64), part])
            keys = np.ascontiguousarray(keyed).view(
                np.dtype((np.void, keyed.dtype.itemsize * keyed.shape[1]))
            )
            _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
            crowded = counts[inverse] > 1
            if not crowded.any():
                continue
            members = rows[crowded]
            bucket = inverse[crowded]
            order = np.lexsort((members, bucket))
            members, bucket = members[order], bucket[order]
            # Pair each member with the next ones of its bucket, at most max_bucket ahead.
            for step in range(1, min(self.max_bucket, len(members))):
                same = bucket[step:] == bucket[:-step]
                if not same.any():
                    break
                found.append(members[:-step][same] * n + members[step:][same])
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        codes = np.unique(np.concatenate(found))
        return codes // n, codes % n

    def _cluster(
        self,
        members: IntArray,
        graph: sp.csr_matrix,
        radius: float,
        V: sp.csr_matrix,
        weights: FloatArray,
        clusters: list[IntArray],
        silhouette: FloatArray,
    ) -> None:
        """Cluster ``members`` component by component of the neighbour graph."""
        sub = graph[members][:, members].tocsr()
        sub.data[sub.data > radius] = 0.0
        sub.eliminate_zeros()
        component = connected_components(sub)
        order = np.argsort(component, kind="stable")
        bounds = np.flatnonzero(np.diff(component[order])) + 1
        for part in np.split(order, bounds):
            nodes = members[part]
            if len(nodes) == 1:
                # Identical rows with nothing else within reach: a = 0, b = 1.
                silhouette[nodes] = 1.0 if weights[nodes[0]] > 1 else 0.0
                clusters.append(nodes)
                continue
            if len(nodes) > self.max_component_size and radius > 1e-6:
                self._cluster(nodes, graph, radius * 0.7, V, weights, clusters, silhouette)
                continue
            self._agglomerate(nodes, V, weights, clusters, silhouette)

    def _dense(self, V: sp.csr_matrix, nodes: IntArray) -> FloatArray:
        sub = V[nodes]
        dot = (sub @ sub.T).toarray()
        if self.metric == "cosine":
            d = np.clip(1.0 - dot, 0.0, 1.0)
        else:
            sizes = np.diff(sub.indptr).astype(np.float64)
            union = sizes[:, None] + sizes[None, :] - dot
            d = 1.0 - dot / np.where(union > 0, union, 1.0)
        np.fill_diagonal(d, 0.0)
        d = np.clip(d, 0.0, 1.0)
        return np.asarray((d + d.T) / 2, dtype=np.float64)

    def _agglomerate(
        self,
        nodes: IntArray,
        V: sp.csr_matrix,
        weights: FloatArray,
        clusters: list[IntArray],
        silhouette: FloatArray,
    ) -> None:
        """Agglomerative clustering of one component, and its members' silhouettes."""
        distances = self._dense(V, nodes)
        if self.linkage == "single":
            # Single linkage on precomputed distances is connected components below the cut.
            labels = connected_components(sp.csr_matrix(distances <= self.distance_threshold))
        else:
            # Merges at heights up to the threshold, as AgglomerativeClustering(n_clusters=None,
            # metric="precomputed", distance_threshold=nextafter(threshold, 2)) cuts the same
            # SciPy tree (average and complete linkage heights never decrease).
            labels = flat_clusters(distances, self.linkage, float(self.distance_threshold))
        k = int(labels.max()) + 1
        onehot = np.zeros((len(nodes), k))
        onehot[np.arange(len(nodes)), labels] = weights[nodes]
        totals = onehot.sum(axis=0)  # rows (with multiplicity) per cluster
        sums = distances @ onehot  # weighted distance from each node to each cluster
        own = totals[labels]
        a = sums[np.arange(len(nodes)), labels] / np.maximum(own - 1, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / totals[None, :]
        means[np.arange(len(nodes)), labels] = np.inf
        b = np.minimum(means.min(axis=1), 1.0) if k > 1 else np.ones(len(nodes))
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(np.maximum(a, b) > 0, (b - a) / np.maximum(a, b), 0.0)
        s[own <= 1] = 0.0
        silhouette[nodes] = s
        for c in range(k):
            clusters.append(nodes[labels == c])
