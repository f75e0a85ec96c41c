"""Behavioural clustering: features from edges, exact-signature groups, similarity clusters,
confidence bounds and scikit-learn conventions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
)

from recommender.aggregate.edges import EDGE_KEY
from recommender.analysis.clustering.estimators import BehaviourClustering, SignatureGrouping
from recommender.analysis.clustering.features import communication_features, describe_feature


def edges(rows: list[tuple[str, str, str, str, int]]) -> pa.Table:
    """Edges ``(src ns/wl, dst ns/wl or ip, protocol, port, connections)``."""
    cols: dict[str, list[object]] = {k: [] for k in (*EDGE_KEY, "connections")}
    for src, dst, proto, port, conns in rows:
        for side, end in (("src", src), ("dst", dst)):
            if "/" in end:
                ns, wl = end.split("/")
                cols[f"{side}_kind"].append("workload")
                cols[f"{side}_namespace"].append(ns)
                cols[f"{side}_id"].append(wl)
            else:
                kind, ident = end.split(":")
                cols[f"{side}_kind"].append(kind)
                cols[f"{side}_namespace"].append(None)
                cols[f"{side}_id"].append(ident)
        cols["protocol"].append(proto)
        cols["dst_port"].append(port)
        cols["connections"].append(conns)
    return pa.table(
        {
            **{
                k: pa.array(v, pa.string())
                for k, v in cols.items()
                if k not in ("dst_port", "connections")
            },
            "dst_port": pa.array(cols["dst_port"], pa.int32()),
            "connections": pa.array(cols["connections"], pa.int64()),
        }
    )


#: A small shop: three identical API replicas (separate Deployments), a fourth API that also
#: talks to the cache, two workers, and the database.
SHOP = edges(
    [
        *[(f"shop/api-{i}", "shop/db", "TCP", 5432, 10 + i) for i in (1, 2, 3, 4)],
        *[(f"shop/api-{i}", "kube-system/coredns", "UDP", 53, 5) for i in (1, 2, 3, 4)],
        *[("shop/gateway", f"shop/api-{i}", "TCP", 8080, 50) for i in (1, 2, 3, 4)],
        ("shop/api-4", "shop/cache", "TCP", 6379, 3),
        *[(f"shop/worker-{i}", "external:52.94.236.248", "TCP", 443, 7) for i in (1, 2)],
        *[(f"shop/worker-{i}", "kube-system/coredns", "UDP", 53, 2) for i in (1, 2)],
        ("host:172.18.0.2", "shop/worker-1", "TCP", 8081, 4),
        ("host:172.18.0.3", "shop/worker-2", "TCP", 8081, 4),
    ]
)


def test_features_are_peers_ports_and_directions() -> None:
    f = communication_features(SHOP)
    assert f.row("shop", "api-4") == {
        "egress|shop/db|TCP/5432",
        "egress|kube-system/coredns|UDP/53",
        "egress|shop/cache|TCP/6379",
        "ingress|shop/gateway|TCP/8080",
    }
    # The node is one peer "host" whatever its address: replicas on two nodes look alike.
    assert f.row("shop", "worker-1") == f.row("shop", "worker-2")
    assert "ingress|host|TCP/8081" in f.row("shop", "worker-1")
    assert f.row("shop", "db") == {f"ingress|shop/api-{i}|TCP/5432" for i in (1, 2, 3, 4)}
    assert list(f.workloads) == sorted(f.workloads)
    assert list(f.feature_names) == sorted(f.feature_names)
    assert sp.issparse(f.matrix) and f.matrix.shape == (len(f.workloads), len(f.feature_names))
    # Connection counts are kept.
    i = f.workloads.index(("shop", "api-1"))
    j = f.feature_names.index("egress|shop/db|TCP/5432")
    assert f.matrix[i, j] == 11
    assert describe_feature("egress|shop/db|TCP/5432") == "to shop/db TCP/5432"


def test_exact_clusters_of_a_small_known_graph() -> None:
    f = communication_features(SHOP)
    names = f.row_names
    model = BehaviourClustering(distance_threshold=0.3).fit(f.matrix, groups=f.namespaces)

    def together(a: str, b: str) -> bool:
        return bool(model.labels_[names.index(a)] == model.labels_[names.index(b)])

    def identical(a: str, b: str) -> bool:
        sig = model.signature_labels_
        return bool(sig[names.index(a)] == sig[names.index(b)])

    assert identical("shop/api-1", "shop/api-2") and identical("shop/api-1", "shop/api-3")
    assert not identical("shop/api-1", "shop/api-4")
    # api-4 differs by one feature of four: Jaccard distance 1/4 <= 0.3, same cluster.
    assert together("shop/api-1", "shop/api-4")
    assert identical("shop/worker-1", "shop/worker-2")
    assert not together("shop/api-1", "shop/worker-1")
    clusters = {
        frozenset(n for n, label in zip(names, model.labels_, strict=True) if label == c)
        for c in range(model.n_clusters_)
    }
    assert clusters == {
        frozenset({"shop/api-1", "shop/api-2", "shop/api-3", "shop/api-4"}),
        frozenset({"shop/worker-1", "shop/worker-2"}),
        frozenset({"shop/db"}),
        frozenset({"shop/cache"}),
        frozenset({"shop/gateway"}),
        frozenset({"kube-system/coredns"}),
    }
    # Silhouette by the documented formula: api-1 is at 0 from api-2/3 and 1/4 from api-4,
    # a = 0.25 / 3; no other cluster within reach, b = 1.
    assert model.confidence_[names.index("shop/api-1")] == pytest.approx(1 - 0.25 / 3)
    assert model.confidence_[names.index("shop/api-4")] == pytest.approx(1 - 0.25)
    assert model.confidence_[names.index("shop/worker-1")] == 1.0
    assert model.confidence_[names.index("shop/db")] == 0.0  # a cluster of one

    explained = model.explain(f.matrix, f.feature_names, names)
    apis = explained[0]
    assert apis["size"] == 4 and not apis["identical"]
    assert apis["shared"] == [
        "to kube-system/coredns UDP/53",
        "to shop/db TCP/5432",
        "from shop/gateway TCP/8080",
    ]
    assert apis["distinguishing"] == [
        {"member": "shop/api-4", "extra": ["to shop/cache TCP/6379"], "missing": []}
    ]
    assert explained[1]["identical"]
    assert explained[1]["members"] == ["shop/worker-1", "shop/worker-2"]


def test_groups_keep_clusters_apart() -> None:
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 1]]))
    together = BehaviourClustering().fit(X)
    assert together.labels_.tolist() == [0, 0, 0, 1]
    apart = BehaviourClustering().fit(X, groups=["a", "a", "b", "b"])
    assert apart.labels_.tolist() == [0, 0, 1, 2]
    assert SignatureGrouping().fit(X, groups=["a", "a", "b", "b"]).labels_.tolist() == [0, 0, 1, 2]


def _roles(n_roles: int, per_role: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows of ``n_roles`` disjoint 8-feature templates, each row missing one feature at most."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for role in range(n_roles):
        template = np.arange(role * 8, role * 8 + 8)
        for _ in range(per_role):
            keep = template if rng.random() < 0.5 else np.delete(template, rng.integers(8))
            row = np.zeros(n_roles * 8)
            row[keep] = 1
            rows.append(row)
            truth.append(role)
    return sp.csr_matrix(np.array(rows)), np.array(truth)


def test_lsh_finds_the_same_clusters_as_all_pairs() -> None:
    X, truth = _roles(12, 15, seed=1)
    exact = BehaviourClustering(random_state=0).fit(X)
    lsh = BehaviourClustering(random_state=0, exact_block_size=0).fit(X)
    assert exact.n_clusters_ == 12
    assert (exact.labels_ == lsh.labels_).all()
    # Relabelled, the clusters are the roles.
    assert len(set(zip(exact.labels_, truth, strict=True))) == 12
    assert lsh.n_candidate_pairs_ < exact.n_candidate_pairs_ + 1


def test_large_components_are_split() -> None:
    X, _ = _roles(6, 20, seed=2)
    small = BehaviourClustering(max_component_size=5).fit(X)
    assert small.n_clusters_ >= 6
    assert ((small.confidence_ >= 0) & (small.confidence_ <= 1)).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=25),
    st.sampled_from(["jaccard", "cosine"]),
    st.floats(0.05, 0.8),
)
def test_confidence_bounds(rows: list[list[bool]], metric: str, threshold: float) -> None:
    X = sp.csr_matrix(np.array(rows, dtype=float))
    model = BehaviourClustering(metric=metric, distance_threshold=threshold).fit(X)
    assert ((model.silhouette_ >= -1) & (model.silhouette_ <= 1)).all()
    assert ((model.confidence_ >= 0) & (model.confidence_ <= 1)).all()
    assert ((model.cluster_confidence_ >= 0) & (model.cluster_confidence_ <= 1)).all()
    sizes = np.bincount(model.labels_)
    assert (model.confidence_[sizes[model.labels_] == 1] == 0).all()
    # Identical rows always share a cluster.
    for i in range(len(rows)):
        for j in range(len(rows)):
            if rows[i] == rows[j]:
                assert model.labels_[i] == model.labels_[j]
    assert model.cluster_sizes_.sum() == len(rows)


@pytest.mark.parametrize("estimator", [SignatureGrouping(), BehaviourClustering()])
def test_scikit_learn_conventions(estimator: object) -> None:
    name = type(estimator).__name__
    check_parameters_default_constructible(name, estimator)
    check_no_attributes_set_in_init(name, estimator)
    check_get_params_invariance(name, estimator)
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    X = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 0]]))
    assert copy.fit(X) is copy
    assert not any(k.endswith("_") for k in estimator.get_params())
    assert copy.labels_.shape == (3,)
    assert copy.fit_predict(X).tolist() == copy.labels_.tolist()


def test_bad_parameters_and_input_are_clear_errors() -> None:
    X = [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="metric"):
        BehaviourClustering(metric="euclid").fit(X)
    with pytest.raises(ValueError, match="distance_threshold"):
        BehaviourClustering(distance_threshold=1.5).fit(X)
    with pytest.raises(ValueError, match="negative"):
        BehaviourClustering().fit([[1, -1]])
    with pytest.raises(ValueError, match="groups"):
        BehaviourClustering().fit(X, groups=["a"])


def test_no_edges_no_rows() -> None:
    f = communication_features(SHOP.slice(0, 0))
    assert f.matrix.shape == (0, 0) and f.workloads == ()


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=60)
@given(
    st.integers(2, 14).flatmap(
        lambda n: st.lists(
            st.lists(st.booleans(), min_size=6, max_size=6), min_size=n, max_size=n
        )
    ),
    st.sampled_from(["average", "complete"]),
    st.sampled_from([0.2, 0.3, 0.5, 0.75]),
)
def test_agglomeration_matches_scikit_learn(
    rows: list[list[bool]], linkage: str, threshold: float
) -> None:
    """The agglomerative step (SciPy's tree, cut at the threshold; no scikit-learn import on
    the pipeline's path) partitions exactly as scikit-learn's AgglomerativeClustering does
    with the same precomputed distances, ties at the threshold included (Jaccard distances
    of small binary rows hit 0.5 and 0.75 exactly)."""
    from sklearn.cluster import AgglomerativeClustering

    X = sp.csr_matrix(np.array(rows, dtype=np.float64))
    model = BehaviourClustering(linkage=linkage, distance_threshold=threshold)
    nodes = np.arange(X.shape[0])
    distances = model._dense(X, nodes)
    clusters: list[np.ndarray] = []
    model._agglomerate(nodes, X, np.ones(len(nodes)), clusters, np.zeros(len(nodes)))
    ours = {frozenset(c.tolist()) for c in clusters}
    theirs = AgglomerativeClustering(
        n_clusters=None,
        metric="precomputed",
        linkage=linkage,
        distance_threshold=float(np.nextafter(threshold, 2.0)),
    ).fit_predict(distances)
    assert ours == _partition(theirs)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    edges=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39)), max_size=80),
)
def test_connected_components_group_as_scipy_does(n: int, edges: list[tuple[int, int]]):
    """clustering_core.connected_components (no scipy.sparse.csgraph import) groups nodes
    exactly as SciPy's, numbered by lowest node."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as scipy_components

    from recommender.analysis.clustering.core import connected_components

    pairs = [(a, b) for a, b in edges if a < n and b < n]
    rows = [a for a, _ in pairs]
    cols = [b for _, b in pairs]
    graph = sp.csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(n, n))
    ours = connected_components(graph)
    _, theirs = scipy_components(graph, directed=False)
    assert ours.tolist() == theirs.tolist()


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 14),
    values=st.lists(st.sampled_from([0.0, 0.125, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0]),
                    min_size=91, max_size=91),
    threshold=st.sampled_from([0.0, 0.125, 0.25, 1 / 3, 0.4, 0.5, 0.75, 1.0]),
    method=st.sampled_from(["average", "complete"]),
)
def test_flat_clusters_group_as_scipy_does(
    n: int, values: list[float], threshold: float, method: str
):
    """clustering_core.flat_clusters (SciPy's nearest-neighbour chain, without importing
    scipy.cluster) cuts the tree SciPy builds: the same groups, ties in distances and at the
    threshold included (few distinct distances make many ties)."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from recommender.analysis.clustering.core import flat_clusters

    d = np.zeros((n, n))
    d[np.triu_indices(n, 1)] = values[: n * (n - 1) // 2]
    d = d + d.T
    ours = flat_clusters(d, method, threshold)
    if n == 1:
        assert ours.tolist() == [0]
        return
    theirs = fcluster(linkage(squareform(d, checks=False), method=method), t=threshold,
                      criterion="distance")
    same = {(a, b) for a in range(n) for b in range(n) if theirs[a] == theirs[b]}
    assert same == {(a, b) for a in range(n) for b in range(n) if ours[a] == ours[b]}
    assert ours[0] == 0 and max(ours) < n


class _PerBlockCore:
    """``BehaviourCore`` with the candidate search as it was: one sparse product per block."""

    @staticmethod
    def make(**params: object) -> object:
        from recommender.analysis.clustering.core import BehaviourCore

        class PerBlock(BehaviourCore):
            def _candidates(self, U, V, blocks):  # type: ignore[no-untyped-def]
                pairs_i, pairs_j, dists, large = [], [], [], []
                order = np.argsort(blocks, kind="stable")
                bounds = np.flatnonzero(np.diff(blocks[order])) + 1
                sizes = np.diff(V.indptr).astype(np.float64)
                for members in np.split(order, bounds):
                    if len(members) < 2:
                        continue
                    if len(members) > self.exact_block_size:
                        large.append(members)
                        continue
                    binary = V[members].copy()
                    binary.data = np.ones_like(binary.data)
                    overlap = sp.triu(binary @ binary.T, k=1).tocoo()
                    a, b = members[overlap.row], members[overlap.col]
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

        return PerBlock(**params)


@settings(max_examples=120, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 9), max_size=5), min_size=1, max_size=40),
    groups=st.lists(st.integers(0, 5), min_size=40, max_size=40),
    metric=st.sampled_from(["jaccard", "cosine"]),
    exact=st.sampled_from([2, 5, 2000]),
    threshold=st.sampled_from([0.2, 0.5]),
)
def test_candidates_in_one_product_cluster_as_one_per_block(
    rows: list[list[int]], groups: list[int], metric: str, exact: int, threshold: float
) -> None:
    from recommender.analysis.clustering.core import BehaviourCore

    dense = np.zeros((len(rows), 10))
    for r, cols in enumerate(rows):
        for c in cols:
            dense[r, c] += 1.0 + c
    X = sp.csr_matrix(dense)
    params = dict(metric=metric, distance_threshold=threshold, exact_block_size=exact,
                  random_state=0)  # fmt: skip
    got = BehaviourCore(**params).fit(X, groups=groups[: len(rows)])  # type: ignore[arg-type]
    want = _PerBlockCore.make(**params).fit(X, groups=groups[: len(rows)])  # type: ignore[attr-defined]
    assert got.n_candidate_pairs_ == want.n_candidate_pairs_
    assert np.array_equal(got.labels_, want.labels_)
    assert np.array_equal(got.silhouette_, want.silhouette_)
    assert np.array_equal(got.cluster_confidence_, want.cluster_confidence_)
