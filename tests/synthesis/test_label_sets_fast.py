"""Synthesis reads each workload's label maps once per map object: the common labels from
the pairs (skipping maps equal to the first) and the dicts only on demand. Both against the
straightforward per-row versions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from recommender.aggregate.label_maps import label_rows
from recommender.aggregate.selectors import common_labels, stable_labels
from recommender.synthesis.synthesizer import _common_of, _LabelSets, _workload_maps

_pairs = st.lists(
    st.tuples(
        st.sampled_from(["app", "tier", "pod-template-hash", "io.cilium.k8s.x", "version"]),
        st.sampled_from(["a", "b", ""]),
    ),
    max_size=5,
).map(tuple)
_maps = st.one_of(st.none(), _pairs)


def _straight_common(maps: list[Any]) -> dict[str, str]:
    """synthesis before: a dict per row with labels, then common_labels."""
    common: dict[str, str] | None = None
    for labels in [dict(m) for m in maps if m]:
        stable = stable_labels(labels)
        common = (
            dict(stable)
            if common is None
            else {k: v for k, v in common.items() if stable.get(k) == v}
        )
    return common or {}


@given(st.lists(_maps, max_size=6))
def test_common_of_is_the_common_labels_of_every_map(maps) -> None:
    assert _common_of(maps) == _straight_common(maps)
    assert list(_common_of(maps)) == list(_straight_common(maps))  # the same key order
    assert common_labels([dict(m) for m in maps if m]) == _straight_common(maps)


@given(st.lists(_maps, max_size=6))
def test_common_labels_looks_at_a_repeated_map_once_with_the_same_result(maps) -> None:
    dicts = [dict(m) for m in maps if m]
    repeated = [d for d in dicts for _ in range(2)]
    assert common_labels(repeated) == _straight_common(maps)
    assert common_labels(iter([dict(d) for d in repeated])) == _straight_common(maps)


@given(
    st.lists(
        st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from(["w1", "w2", "w3"]), _maps),
        max_size=12,
    )
)
def test_label_sets_hold_each_workloads_maps_as_the_rows_do(rows) -> None:
    table = pa.table(
        {
            "namespace": pa.array([r[0] for r in rows], pa.string()),
            "workload": pa.array([r[1] for r in rows], pa.string()),
            "labels": pa.array([r[2] for r in rows], pa.map_(pa.string(), pa.string())),
        }
    )
    maps = _workload_maps(table)
    sets = _LabelSets(maps)
    # straightforward: one list per workload seen, a dict per row with labels
    want: dict[tuple[str, str], list[dict[str, str]]] = {}
    for namespace, workload, labels in label_rows(table):
        want.setdefault((namespace, workload), [])
        if labels:
            want[(namespace, workload)].append(dict(labels))
    assert list(sets) == list(want) == list(maps)
    for key, dicts in want.items():
        got = sets[key]
        # the same maps (each distinct one at least once), the first one first
        assert all(d in dicts for d in got) and all(d in got for d in dicts)
        assert got[:1] == dicts[:1]
        assert _common_of(maps[key]) == _straight_common([tuple(d.items()) for d in dicts])
    assert sets.get(("nowhere", "w")) is None


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from(["w1", "w2", "w3", "w4"])),
        st.dictionaries(
            st.sampled_from(["app", "app.kubernetes.io/name", "tier", "team", "x"]),
            st.sampled_from(["a", "b"]),
            max_size=3,
        ),
    )
)
def test_choosing_among_stable_labels_skips_no_workload(workloads) -> None:
    from recommender.aggregate.selectors import choose_selectors

    assert choose_selectors(workloads, stable=True) == choose_selectors(workloads)
