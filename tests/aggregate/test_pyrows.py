"""table_rows / column_values against pyarrow's own to_pylist: the same values, the same
datetimes (and tzinfo objects), for every timestamp unit and zone, with nulls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.aggregate.pyrows import column_values, table_rows

_EPOCH = datetime(1970, 1, 1)
_micros = st.one_of(st.none(), st.integers(-(10**15), 10**16))


def _same(got: list, want: list) -> None:
    assert got == want
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b)
        if isinstance(a, datetime):
            assert a.tzinfo is b.tzinfo
            assert (a.isoformat(), a.fold) == (b.isoformat(), b.fold)


@given(
    values=st.lists(_micros, max_size=30),
    unit=st.sampled_from(["s", "ms", "us", "ns"]),
    tz=st.sampled_from([None, "UTC", "+00:00", "Europe/Paris"]),
    chunks=st.integers(1, 3),
)
def test_timestamps_convert_as_pyarrow_does(values, unit, tz, chunks):
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}[unit]
    ints = [None if v is None else v // scale for v in values]
    kind = pa.timestamp(unit, tz=tz)
    size = max(1, len(ints) // chunks)
    parts = [ints[i : i + size] for i in range(0, len(ints), size)] or [[]]
    column = pa.chunked_array([pa.array(p, pa.int64()).cast(kind) for p in parts], kind)
    _same(column_values(column), column.to_pylist())
    _same(column_values(column.combine_chunks()), column.combine_chunks().to_pylist())


@pytest.mark.parametrize("values", [[2**62], [0, 2**62], [None, -(2**62)]])
@pytest.mark.parametrize("tz", [None, "UTC"])
def test_out_of_range_timestamps_raise_as_pyarrow_does(values, tz):
    column = pa.array(values, pa.int64()).cast(pa.timestamp("us", tz=tz))
    with pytest.raises(Exception) as theirs:
        column.to_pylist()
    with pytest.raises(type(theirs.value)):
        column_values(column)


@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=5)),
            st.one_of(st.none(), st.integers(-5, 5)),
            st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3)),
            _micros,
        ),
        max_size=20,
    ),
    columns=st.one_of(st.none(), st.lists(st.sampled_from(["s", "n", "l", "t"]), unique=True)),
)
def test_table_rows_is_to_pylist(rows, columns):
    table = pa.table(
        {
            "s": pa.array([r[0] for r in rows], pa.string()),
            "n": pa.array([r[1] for r in rows], pa.int32()),
            "l": pa.array([r[2] for r in rows], pa.list_(pa.string())),
            "t": pa.array(
                [None if r[3] is None else _EPOCH + timedelta(microseconds=r[3]) for r in rows],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    want = (table if columns is None else table.select(columns)).to_pylist()
    got = table_rows(table, columns)
    assert got == want
    assert [list(r) for r in got] == [list(r) for r in want]  # the same key order
    for a, b in zip(got, want, strict=True):
        if a.get("t") is not None:
            assert a["t"].tzinfo is b["t"].tzinfo
            assert a["t"].tzinfo.utcoffset(None) == UTC.utcoffset(None)


def test_a_table_is_converted_once_and_each_call_gets_its_own_rows():
    table = pa.table({"a": [1, 2], "t": pa.array([0, None], pa.int64()).cast(pa.timestamp("us"))})
    first = table_rows(table, ["a", "t"])
    first[0]["a"] = 99
    again = table_rows(table, ["t", "a"])
    assert again == [{"t": datetime(1970, 1, 1), "a": 1}, {"t": None, "a": 2}]
    assert list(again[0]) == ["t", "a"]
    other = pa.table({"a": [3]})  # another table: its own values
    assert table_rows(other) == [{"a": 3}]
