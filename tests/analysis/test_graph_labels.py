"""The graph's workload labels read from the Arrow map column equal those read row by row,
for sliced, chunked tables with null and empty label maps."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.analysis.graph import _labels, _labels_of_rows

SCHEMA = pa.schema(
    [
        ("namespace", pa.string()),
        ("workload", pa.string()),
        ("labels", pa.map_(pa.string(), pa.string())),
    ]
)

_label_sets = st.one_of(
    st.none(),
    st.lists(
        st.tuples(st.sampled_from(["app", "tier", "pod-template-hash", "version", "x"]),
                  st.sampled_from(["a", "b", "c"])),
        max_size=4,
    ),
)  # fmt: skip
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "namespace": st.sampled_from(["shop", "db", None]),
            "workload": st.sampled_from(["web", "api", "pg"]),
            "labels": _label_sets,
        }
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(rows=_rows, cut=st.integers(0, 30), start=st.integers(0, 10), length=st.integers(0, 30))
def test_map_column_reading_equals_rows(
    rows: list[dict[str, Any]], cut: int, start: int, length: int
) -> None:
    cut = min(cut, len(rows))
    table = pa.concat_tables(
        [pa.Table.from_pylist(rows[:cut], SCHEMA), pa.Table.from_pylist(rows[cut:], SCHEMA)]
    )
    for t in (table, table.slice(start, length), table.combine_chunks().slice(start, length)):
        assert _labels(t) == _labels_of_rows(t.to_pylist())


def test_common_stable_labels_per_workload() -> None:
    rows = [
        {"namespace": "shop", "workload": "web",
         "labels": [("app", "web"), ("pod-template-hash", "1"), ("tier", "a")]},
        {"namespace": "shop", "workload": "web",
         "labels": [("app", "web"), ("pod-template-hash", "2"), ("tier", "b")]},
        {"namespace": "shop", "workload": "api", "labels": None},
    ]  # fmt: skip
    assert _labels(pa.Table.from_pylist(rows, SCHEMA)) == {("shop", "web"): {"app": "web"}}
