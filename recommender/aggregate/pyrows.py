"""Arrow tables as Python rows, the values ``to_pylist`` gives, converted column by column.

``Table.to_pylist`` makes a Python scalar object per cell before its value; for most types
``ChunkedArray.to_pylist`` is just as slow, but a timestamp column is the worst: a datetime
per cell through the scalar (a twentieth of a second per 16,000 edges, and synthesis and the
anomaly screen read two such columns of every edge). :func:`column_values` converts UTC and
naive timestamps from their integers instead, to the very same datetimes (same ``tzinfo``
object as pyarrow's); :func:`table_rows` builds the row dicts from the converted columns,
each column of a table converted once for as long as the table lives (the anomaly screen and
synthesis read the same edges).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import pyarrow as pa

__all__ = ["column_values", "table_rows"]

#: Microseconds per unit.
_UNITS: Final = {"s": 1_000_000, "ms": 1_000, "us": 1}


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """``column.to_pylist()``: timestamps of unit s, ms or us, naive or UTC, without a
    scalar object per value (other types are left to pyarrow)."""
    kind = column.type
    if not pa.types.is_timestamp(kind) or kind.unit not in _UNITS or kind.tz not in (None, "UTC"):
        return column.to_pylist()  # type: ignore[no-any-return]
    ints: list[Any] = column.cast(pa.int64()).to_pylist()
    epoch = datetime(1970, 1, 1)  # naive, as pyarrow gives a naive column
    if kind.tz is not None:
        found = next((i for i, v in enumerate(ints) if v is not None), None)
        if found is None:
            return ints
        tzinfo = column[found].as_py().tzinfo  # pyarrow's own UTC object
        epoch = epoch.replace(tzinfo=tzinfo)
    scale = _UNITS[kind.unit]
    try:
        if scale == 1:
            return [None if v is None else epoch + timedelta(microseconds=v) for v in ints]
        return [None if v is None else epoch + timedelta(microseconds=v * scale) for v in ints]
    except OverflowError:  # beyond datetime's range: pyarrow's own message
        return column.to_pylist()  # type: ignore[no-any-return]


#: id(table) -> (a weak reference to it, column name -> its values): each column converted
#: once per table object, the entry dropped with the table.
_CACHE: dict[int, tuple[weakref.ref[pa.Table], dict[str, list[Any]]]] = {}


def _forget(key: int) -> Any:
    return lambda _ref: _CACHE.pop(key, None)


def _columns(table: pa.Table) -> dict[str, list[Any]]:
    """The converted columns of ``table`` so far (read-only lists)."""
    key = id(table)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is table:
        return hit[1]
    found: dict[str, list[Any]] = {}
    _CACHE[key] = (weakref.ref(table, _forget(key)), found)
    return found


def table_rows(table: pa.Table, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``table.select(columns).to_pylist()`` (every column by default), converted by
    :func:`column_values`; new dicts each call, each column converted once per table (so a
    list value, such as an edge's addresses, is one object for every caller: read-only)."""
    names = list(table.column_names if columns is None else columns)
    if not names:
        return table.select([]).to_pylist()  # type: ignore[no-any-return]
    known = _columns(table)
    values = []
    for name in names:
        found = known.get(name)
        if found is None:
            found = known[name] = column_values(table.column(name))
        values.append(found)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
