"""Ingest: flow logs of every supported format in, the canonical flow table out.

Takes files, folders or globs (Hubble, Calico Enterprise, Goldmane/Whisker, canonical Parquet or
CSV; plain, gzip or zstd) and gives Arrow batches of :data:`~recommender.ingest.schema.FLOW_SCHEMA`
with an :class:`~recommender.ingest.ledger.IngestLedger` accounting for every record. Public
faces: :func:`read_flows`, :func:`iter_flow_batches`, :func:`detect_format`, the modules
:mod:`.schema`, :mod:`.ledger` and :mod:`.profile`; one reader module per format; private
helpers (``_source``, ``_records``, the Hubble worker and C scanner) start with ``_``.

>>> from recommender import read_flows            # doctest: +SKIP
>>> table = read_flows(["flows/"])                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from ..errors import FlowSourceError
from ._base import FlowReader
from ._common import DEFAULT_BATCH_ROWS
from ._detect import detect_format
from ._source import expand_paths_explicit, is_stream
from .calico import CalicoReader, CalicoTextReader
from .canonical import CsvReader, ParquetReader
from .goldmane import GoldmaneReader, WhiskerReader
from .hubble import HubbleReader
from .ledger import IngestLedger
from .parallel import ParallelHubbleReader, default_workers, take_prestarted
from .schema import FLOW_SCHEMA

__all__ = ["FORMATS", "FlowBatches", "detect_format", "iter_flow_batches", "read_flows"]

_READERS: dict[str, type[FlowReader]] = {
    r.name: r
    for r in (
        HubbleReader,
        CalicoReader,
        CalicoTextReader,
        GoldmaneReader,
        WhiskerReader,
        ParquetReader,
        CsvReader,
    )
}

#: The names ``--format`` accepts.
FORMATS: tuple[str, ...] = tuple(sorted(_READERS))

PathLike = str | os.PathLike[str]


class FlowBatches:
    """An iterator of canonical record batches that keeps the :class:`IngestLedger` of the run.

    Files are read in the order given; each format's reader sees all files of its format, so
    that reports of one connection split over files are merged.
    """

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        format: str | None = None,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        ledger: IngestLedger | None = None,
        workers: int | None = None,
    ) -> None:
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        if format is not None and format not in _READERS:
            raise FlowSourceError(f"Unknown format {format!r}; choose one of {', '.join(FORMATS)}.")
        self.ledger = ledger if ledger is not None else IngestLedger()
        self.files: list[tuple[Path, str]] = []
        for path, explicit in expand_paths_explicit(paths):
            if format is not None:
                self.files.append((path, format))
                continue
            try:
                self.files.append((path, detect_format(path)))
            except FlowSourceError as exc:
                if explicit:
                    raise
                self.ledger.ignore_file(str(path), str(exc))
        if not self.files:
            raise FlowSourceError("None of the given files is a flow log of a known format.")
        self.batch_rows = batch_rows
        hubble = [p for p, fmt in self.files if fmt == "hubble"]
        self.workers = default_workers(hubble) if workers is None else max(int(workers), 1)
        if any(is_stream(p) for p in hubble):
            self.workers = 1  # workers read files themselves; a stream can be read once
        #: The input file being read while a batch is yielded (None for the batches readers
        #: give at the end, whose rows name their file in ``source_file``).
        self.reading: str | None = None
        self._iter = self._generate()

    def _generate(self) -> Iterator[pa.RecordBatch]:
        readers: dict[str, FlowReader] = {}
        for path, fmt in self.files:
            reader = readers.get(fmt)
            if reader is None:
                if fmt == "hubble" and self.workers > 1:
                    warm = take_prestarted(self.workers, self.batch_rows)
                    if warm is not None:
                        warm.adopt(self.ledger)
                    reader = warm or ParallelHubbleReader(
                        self.ledger, batch_rows=self.batch_rows, workers=self.workers
                    )
                else:
                    reader = _READERS[fmt](self.ledger, batch_rows=self.batch_rows)
                readers[fmt] = reader
            self.ledger.open_file(str(path), fmt)
            self.reading = str(path)
            for batch in reader.read(path):
                if batch.num_rows:
                    yield batch
            self.reading = None
            self.ledger.close_file(str(path))
        for fmt in sorted(readers):
            for batch in readers[fmt].finish():
                if batch.num_rows:
                    yield batch

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._iter)


def iter_flow_batches(
    paths: PathLike | Iterable[PathLike],
    format: str | None = None,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    ledger: IngestLedger | None = None,
    workers: int | None = None,
) -> FlowBatches:
    """Stream flow files as canonical record batches with bounded memory.

    Parameters
    ----------
    paths
        Files, folders (read recursively) and glob patterns; plain, gzip or zstd.
    format
        One of :data:`FORMATS`; detected per file when None.
    batch_rows
        Rows per yielded batch, at most.
    ledger
        Filled with the fate of every input record; a new one when None (see ``.ledger``).
    workers
        Processes for Hubble input; None chooses 2 for large inputs on a multi-core machine
        (see :mod:`recommender.ingest.parallel`), 1 reads in this process.

    Raises
    ------
    FlowSourceError
        When a path is missing or unreadable, or a file's format cannot be recognised.
    """
    return FlowBatches(paths, format, batch_rows=batch_rows, ledger=ledger, workers=workers)


def read_flows(
    paths: PathLike | Iterable[PathLike],
    format: str | None = None,
    *,
    ledger: IngestLedger | None = None,
    workers: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    last: timedelta | None = None,
) -> pa.Table:
    """Read flow files into one canonical :class:`pyarrow.Table`.

    The input checks of :mod:`recommender.ingest.checked` apply: files of different formats
    holding the same connections are read once, from the most detailed (the others' rows are
    left out and counted as ``overlap_dropped``); several clusters and far-apart windows are
    warned about. Only flows starting in ``[since, until)`` are kept (``last``: that long
    before the input's latest flow start), the others counted as ``outside_window``. The
    ingest ledger is filled into ``ledger`` when given, and is also stored as
    JSON in the table's schema metadata under ``recommender.ledger``. ``table.to_pandas()``
    gives a DataFrame.

    Examples
    --------
    >>> table = read_flows("sample_flows/flows.parquet")   # doctest: +SKIP
    >>> table.num_rows                                      # doctest: +SKIP
    """
    from .checked import CheckedFlows

    batches = FlowBatches(paths, format, ledger=ledger, workers=workers)
    # Through the input checks: copies of one traffic in several formats counted once (the
    # rows of the coarser copies left out), several clusters and far-apart windows named.
    with CheckedFlows(
        None, batches=batches, since=since, until=until, last=last, filter_window=True
    ) as checked:
        table = checked.consume(
            lambda rows: pa.Table.from_batches(list(rows), schema=FLOW_SCHEMA)
        )
    metadata = dict(table.schema.metadata or {})
    metadata[b"recommender.ledger"] = json.dumps(batches.ledger.to_dict()).encode()
    return table.replace_schema_metadata(metadata)
