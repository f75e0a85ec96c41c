"""Flow files aggregated through the input checks: what ``graph``, ``evaluate`` and ``diff``
share with ``run`` (copies of one traffic counted once, ``last`` resolved against the input's
own window, several clusters and far-apart windows named; :mod:`recommender.ingest.checked`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ..config import RecommendConfig
from ..ingest.checked import CheckedFlows
from ..ingest.ledger import IngestLedger
from .edges import EdgeTables, aggregate_edges

__all__ = ["aggregate_flow_files"]


def aggregate_flow_files(
    flows: Any,
    config: RecommendConfig | None = None,
    format: str | None = None,
    *,
    workers: int | None = None,
) -> tuple[EdgeTables, IngestLedger]:
    """The edges of flow files (streamed, never held whole) and the ingest ledger.

    ``config`` gives the window (``since``, ``until``, ``last``) and the aggregation's options;
    None aggregates every row with the defaults."""
    window = config or RecommendConfig()
    with CheckedFlows(
        flows, format, workers=workers, last=window.last, since=window.since, until=window.until
    ) as checked:

        def aggregate(rows: Iterable[pa.RecordBatch]) -> EdgeTables:
            used = config
            if used is not None and used.last is not None:  # the input's window is known now
                used = dataclasses.replace(used, since=checked.since, last=None)
            return aggregate_edges(rows, used)

        return checked.consume(aggregate), checked.ledger
