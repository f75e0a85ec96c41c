"""The latest verdict wins: an edge denied after its last allowed connection gets no rule.

A learning window is recorded before anything is enforced, but not always: a team that spots a
compromised pod adds a deny mid-window, a demo toggles a policy. When the same edge (source,
destination, protocol, port) was both allowed and denied in the window, the order tells what
the cluster wants now:

* denied **after** its last allowed connection: the policy in force at the end of the window
  refuses it. Learning the earlier connections would open again what someone closed, so the
  edge moves to ``excluded`` with reason ``denied-later`` (and stays in ``denied``);
* allowed after its last denial: the denial was lifted. The edge stays evidence; the
  self-check lists it under ``mixed_verdicts`` and the verdict asks for review.

:func:`latest_verdicts` costs O(edges + denied edges).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import numpy as np
import pyarrow as pa

from .edges import EDGE_KEY, EdgeTables

__all__ = ["DENIED_LATER", "latest_verdicts"]

#: The ``excluded`` reason of an edge denied after its last allowed connection.
DENIED_LATER: Final = "denied-later"


def latest_verdicts(tables: EdgeTables) -> EdgeTables:
    """``tables`` with every evidence edge denied after its last allowed connection moved to
    ``excluded`` (reason :data:`DENIED_LATER`); see the module docstring."""
    if tables.edges.num_rows == 0 or tables.denied.num_rows == 0:
        return tables
    if not all("last_seen" in t.column_names for t in (tables.denied, tables.edges)):
        return tables
    denied_last = {
        key: last
        for *key_values, last in zip(
            *(tables.denied.column(c).to_pylist() for c in (*EDGE_KEY, "last_seen")), strict=True
        )
        for key in [tuple(key_values)]
    }
    mask = np.zeros(tables.edges.num_rows, dtype=bool)
    rows = zip(*(tables.edges.column(c).to_pylist() for c in (*EDGE_KEY, "last_seen")), strict=True)
    for i, (*key_values, last) in enumerate(rows):
        denied_at = denied_last.get(tuple(key_values))
        if denied_at is not None and last is not None and denied_at > last:
            mask[i] = True
    if not mask.any():
        return tables
    moved = tables.edges.filter(pa.array(mask))
    moved = moved.append_column("reason", pa.array([DENIED_LATER] * moved.num_rows, pa.string()))
    excluded = moved.select(tables.excluded.column_names).cast(tables.excluded.schema)
    if tables.excluded.num_rows:
        excluded = pa.concat_tables([tables.excluded, excluded])
    return replace(tables, edges=tables.edges.filter(pa.array(~mask)), excluded=excluded)
