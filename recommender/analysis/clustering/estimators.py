"""Behavioural clustering of workloads, with scikit-learn conventions.

Two estimators work on the sparse workload x feature matrix of
:func:`~recommender.analysis.clustering.features.communication_features` (any non-negative sparse or
dense matrix will do; a row's *signature* is the set of its non-zero columns):

* :class:`SignatureGrouping` puts rows with the same signature together: identical behaviour.
* :class:`BehaviourClustering` first groups identical signatures, then clusters the distinct
  signatures by Jaccard (or cosine) distance, never across ``groups`` (namespaces), and gives
  every member a silhouette-like confidence.

Scaling: distances are only computed between *candidate pairs*: all pairs within a block (one
value of ``groups``) of at most ``exact_block_size`` distinct signatures, MinHash LSH buckets in
larger blocks. Pairs closer than ``neighbour_radius`` form a sparse graph; each connected
component (at most ``max_component_size`` signatures, else split again at a smaller radius) is
clustered by agglomerative clustering on its precomputed distance matrix. No dense
n x n matrix of all workloads is ever built. See ``docs/clustering.md``.

>>> import numpy as np
>>> X = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]])
>>> model = BehaviourClustering(distance_threshold=0.4).fit(X)
>>> model.labels_.tolist(), model.signature_labels_.tolist()
([0, 0, 0, 1], [0, 0, 1, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from .core import BehaviourCore, _as_csr, _groups, _signatures
from .features import describe_feature

__all__ = ["BehaviourClustering", "SignatureGrouping"]


class SignatureGrouping(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """Group workloads whose behaviour is identical (the same set of non-zero features).

    Rows in different ``groups`` (namespaces) are never grouped together.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        The group of each row; groups are numbered in order of their first row.
    representatives_ : ndarray of shape (n_groups_,)
        The first row of each group.
    group_sizes_ : ndarray of shape (n_groups_,)
        Rows per group.
    n_groups_ : int
        Number of distinct signatures.

    Examples
    --------
    >>> SignatureGrouping().fit([[1, 0], [2, 0], [0, 1]]).labels_.tolist()
    [0, 0, 1]
    """

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> SignatureGrouping:
        """Group the rows of ``X`` by signature.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Non-negative; only which entries are non-zero matters.
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), optional
            Block of each row (for instance its namespace).

        Returns
        -------
        self : SignatureGrouping
        """
        X = _as_csr(X)
        self.labels_, self.representatives_ = _signatures(X, _groups(groups, X.shape[0]))
        self.group_sizes_ = np.bincount(self.labels_, minlength=len(self.representatives_))
        self.n_groups_ = len(self.representatives_)
        self.n_features_in_ = X.shape[1]
        return self


class BehaviourClustering(BehaviourCore, ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """Cluster workloads by how they communicate, with a confidence per member.

    Parameters
    ----------
    metric : {"jaccard", "cosine"}, default "jaccard"
        Distance between two rows: Jaccard distance of their signatures, or cosine distance
        of their (``weighting``) vectors.
    distance_threshold : float, default 0.3
        Agglomerative clustering merges clusters while their ``linkage`` distance is at most
        this (0 < threshold < 1).
    linkage : {"average", "complete", "single"}, default "average"
        Linkage of the agglomerative step.
    weighting : {"binary", "log"}, default "binary"
        For the cosine metric: presence (1) or ``log1p`` of the connection count. Jaccard
        always uses presence.
    neighbour_radius : float, optional
        Candidate pairs closer than this form the neighbour graph whose components are
        clustered one at a time; also the reach of the confidence's "nearest other
        cluster". Default ``min(2 * distance_threshold, 0.9)``.
    exact_block_size : int, default 2000
        Blocks with at most this many distinct signatures compare all their pairs; larger
        ones use MinHash LSH.
    max_component_size : int, default 1500
        Largest component clustered at once (its distance matrix is dense); larger ones are
        split at a radius 0.7 times smaller, repeatedly.
    n_bands, band_size : int, default 16, 4
        MinHash LSH: ``n_bands * band_size`` hash functions; two signatures become a
        candidate pair when all ``band_size`` values of one band agree (Jaccard similarity
        0.7 gives a pair with probability 0.99, 0.3 with 0.12).
    max_bucket : int, default 64
        An LSH bucket with more signatures pairs each only with its next ``max_bucket``
        neighbours in row order (bounds the pairs of a crowded bucket).
    random_state : int, RandomState instance or None, default None
        Seeds the MinHash functions (only used for blocks above ``exact_block_size``).

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster of each row, numbered in order of their first row.
    signature_labels_ : ndarray of shape (n_samples,)
        Exact-signature group of each row (:class:`SignatureGrouping`).
    confidence_ : ndarray of shape (n_samples,)
        ``max(0, silhouette_)``, in [0, 1].
    silhouette_ : ndarray of shape (n_samples,)
        ``(b - a) / max(a, b)`` in [-1, 1]: ``a`` the mean distance to the other members of
        its cluster, ``b`` the mean distance to the members of the nearest other cluster
        within ``neighbour_radius`` (1.0 when there is none); 0 for a cluster of one. Rows
        count with their multiplicity.
    cluster_confidence_ : ndarray of shape (n_clusters_,)
        Mean member confidence of each cluster.
    cluster_sizes_ : ndarray of shape (n_clusters_,)
        Rows per cluster.
    n_clusters_ : int
        Number of clusters.
    n_signatures_ : int
        Number of distinct signatures.
    n_candidate_pairs_ : int
        Pairs of distinct signatures whose distance was computed.
    n_features_in_ : int
        Columns of ``X``.

    Examples
    --------
    >>> X = [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1]]
    >>> m = BehaviourClustering(distance_threshold=0.5).fit(X)
    >>> m.labels_.tolist(), m.confidence_.round(2).tolist()
    ([0, 0, 0, 1], [0.75, 0.75, 0.25, 0.0])
    """

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> BehaviourClustering:
        """Cluster the rows of ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Non-negative workload x feature matrix (for example
            ``communication_features(tables).matrix``).
        y : None
            Ignored.
        groups : array-like of shape (n_samples,), optional
            Block of each row; rows of different blocks never share a cluster (pass the
            namespaces to keep clusters inside a namespace).

        Returns
        -------
        self : BehaviourClustering
        """
        return super().fit(X, y, groups)

    # ------------------------------------------------------------------ explaining

    def explain(
        self,
        X: Any,
        feature_names: Sequence[str],
        row_names: Sequence[str] | None = None,
        *,
        max_features: int = 10,
        min_size: int = 2,
    ) -> list[dict[str, Any]]:
        """Why each cluster's members belong together, and what sets them apart.

        Parameters
        ----------
        X : {array-like, sparse matrix}
            The matrix the model was fitted on.
        feature_names : sequence of str
            Name of each column (``CommunicationFeatures.feature_names``).
        row_names : sequence of str, optional
            Name of each row (default: the row number).
        max_features : int, default 10
            Features listed per list.
        min_size : int, default 2
            Clusters with fewer rows are left out.

        Returns
        -------
        list of dict
            Per cluster, largest first: ``cluster``, ``size``, ``confidence``, ``members``,
            ``identical`` (whether all members share one signature), ``shared`` (features of
            every member), ``common`` (of at least half, not all), and ``distinguishing``:
            per member with a difference, its ``extra`` features (fewer than half the
            members have them) and ``missing`` ones (every other member has them).
        """
        check_is_fitted(self, "labels_")
        X = _as_csr(X)
        if X.shape[0] != len(self.labels_):
            raise ValueError("X is not the matrix the model was fitted on")
        binary = X.copy()
        binary.data = np.ones_like(binary.data)
        names = list(row_names) if row_names is not None else [str(i) for i in range(X.shape[0])]

        def words(cols: Any) -> list[str]:
            return [describe_feature(str(feature_names[c])) for c in cols[:max_features]]

        out = []
        by_cluster = np.argsort(self.labels_, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.cluster_sizes_)])
        grouped = binary[by_cluster]
        for cluster in np.argsort(-self.cluster_sizes_, kind="stable"):
            size = int(self.cluster_sizes_[cluster])
            if size < min_size:
                continue
            rows = by_cluster[starts[cluster] : starts[cluster + 1]]
            sub = grouped[starts[cluster] : starts[cluster + 1]]
            columns, counts = np.unique(sub.indices, return_counts=True)
            shared = columns[counts == size]
            common = columns[(counts >= size / 2) & (counts < size)]
            almost = columns[counts == size - 1] if size > 2 else columns[:0]
            position = np.searchsorted(columns, sub.indices)
            rare = counts[position] < size / 2
            lengths = np.diff(sub.indptr)
            owner = np.repeat(np.arange(size), lengths)
            n_rare = np.bincount(owner[rare], minlength=size)
            is_almost = counts[position] == size - 1
            n_almost = np.bincount(owner[is_almost], minlength=size) if size > 2 else n_rare * 0
            differs = np.flatnonzero((n_rare > 0) | (n_almost < len(almost)))
            distinguishing = []
            for k in differs[:max_features]:
                have = sub.indices[sub.indptr[k] : sub.indptr[k + 1]]
                extra = have[rare[sub.indptr[k] : sub.indptr[k + 1]]]
                missing = np.setdiff1d(almost, have, assume_unique=True)
                distinguishing.append(
                    {"member": names[rows[k]], "extra": words(extra), "missing": words(missing)}
                )
            out.append(
                {
                    "cluster": int(cluster),
                    "size": size,
                    "confidence": round(float(self.cluster_confidence_[cluster]), 4),
                    "members": [names[r] for r in rows],
                    "identical": len(set(self.signature_labels_[rows].tolist())) == 1,
                    "shared": words(shared),
                    "common": words(common),
                    "distinguishing": distinguishing,
                }
            )
        return out
