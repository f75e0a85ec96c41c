"""One flow input read through the input checks: what every command that reads flows shares.

:class:`CheckedFlows` wraps :func:`~recommender.ingest.iter_flow_batches` for ``run``,
``ingest``, ``graph``, ``evaluate``, ``diff`` and ``job``:

- **overlap**: the same connections in files of different formats (a Hubble capture and the
  Calico flow logs of the same traffic, a canonical Parquet copy next to its source) are counted
  once, from the most detailed copy; the rows of the coarser copies are left out and counted in
  the ledger as ``overlap_dropped`` (not ``used``);
- **clusters**: rows of several clusters in one input (one file or several) are named with
  their row counts, in one warning;
- **far-apart windows**: flows in windows weeks apart, within one file or across files, are
  named with their row counts;
- **--last**: the latest part of the input's own window, that long.

The input is read once. It is kept in a temporary canonical Parquet file (the *spill*) when it
must be read again: ``--last`` (the window ends at the input's latest flow), inputs of several
formats (copies are known only once everything was read), or when the caller asks for it
(``run``: held-out validation, or a pipe, which can be read once, for the anomaly screen).
Each warning is logged and also kept in the ledger (``warnings``, ``clusters``), so that
reports and ``--json`` outputs carry it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from .ledger import IngestLedger
from .overlap import InputCheck, InputFindings

__all__ = ["CheckedFlows"]

_log = logging.getLogger("recommender.ingest")

T = TypeVar("T")


class CheckedFlows:
    """A flow input read once through the input checks (see the module docstring).

    Use as a context manager (it owns the temporary spill file)::

        with CheckedFlows(paths, format, last=timedelta(hours=6)) as flows:
            tables = flows.consume(lambda rows: aggregate_edges(rows, config))
            flows.ledger, flows.findings, flows.since

    Parameters
    ----------
    paths, format, workers
        As for :func:`~recommender.ingest.iter_flow_batches`.
    last
        Keep only flows starting at or after the input's latest flow start (before ``until``)
        less ``last``; :attr:`since` holds that time (or ``since``, when later).
    since, until
        The window asked for besides; with ``filter_window`` the rows outside ``[since, until)``
        are left out here (and counted in the ledger as ``outside_window``), otherwise the
        caller applies them (the aggregation does).
    keep_rows
        Keep the spill even when no check needs it (the caller reads the rows again).
    filter_window
        Apply the window to the rows given to the consumer (``ingest``); otherwise only
        ``last`` is resolved into :attr:`since`.
    """

    def __init__(
        self,
        paths: Any,
        format: str | None = None,
        *,
        workers: int | None = None,
        last: timedelta | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        keep_rows: bool = False,
        filter_window: bool = False,
        batches: Any = None,
    ) -> None:
        if batches is None:
            from . import iter_flow_batches

            batches = iter_flow_batches(paths, format, workers=workers)
        self.batches = batches
        self.ledger: IngestLedger = batches.ledger
        self.files: list[tuple[Path, str]] = batches.files
        self.last = last
        self.since = since
        self.until = until
        self.filter_window = filter_window
        formats = {fmt for _, fmt in self.files}
        #: Copies can only be told once everything was read: several formats, read first.
        self.read_first = len(formats) > 1 or last is not None
        self.needs_spill = keep_rows or self.read_first
        self.findings = InputFindings((), (), {})
        self._check = InputCheck(connections=len(formats) > 1)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.spill: Path | None = None
        self._consumed = False
        self._finished = False
        #: The input file of each batch read, in order (the spill's row groups): one name, or
        #: one per row when a batch holds rows of several files.
        self._origins: list[str | pa.Array] = []

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> CheckedFlows:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spill."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # -- reading ---------------------------------------------------------------------------

    def consume(self, fn: Callable[[Iterable[pa.RecordBatch]], T]) -> T:
        """``fn`` of the checked rows: each connection once, in the window of ``last``.

        When nothing has to be known first, ``fn`` reads the input as it arrives and the
        checks watch it pass; otherwise the input is read into the spill first."""
        if self._consumed:
            raise RuntimeError("CheckedFlows.consume() reads the input once.")
        self._consumed = True
        source: Iterable[pa.RecordBatch] = self._watched()
        if self.needs_spill:
            source = self._spilled(source)
        if self.read_first:
            for _ in source:
                pass
            self._finish()
            return fn(self.rows())
        result = fn(self._finishing(self._windowed(source) if self.filter_window else source))
        if not self._finished:  # fn stopped early
            self._finish()
        return result

    def _finishing(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``batches``, then the findings (before the consumer sees the end: a Parquet
        writer's ledger, written at the end, holds them)."""
        yield from batches
        self._finish()

    def _watched(self) -> Iterator[pa.RecordBatch]:
        """The input's batches as read, noted by the checks per input file (:attr:`_origins`
        in step)."""
        formats = {str(path): fmt for path, fmt in self.files}
        batches = self.batches
        for batch in batches:
            # A row names its input file (a reader may give a file's last rows while reading
            # the next one), except a canonical file's, whose rows name their own origin (which
            # may be another input: a copy next to its source): those are the file's read.
            reading = getattr(batches, "reading", None)
            column = batch.column("source_file")
            names = pc.unique(column).to_pylist()
            owners: dict[str, list[str]] = {}
            canonical = formats.get(reading or "") in ("parquet", "csv")
            for name in names:
                owner = (
                    reading if reading is not None and (canonical or name not in formats)
                    else name
                )
                owners.setdefault(str(owner), []).append(name)
            if len(owners) == 1:
                owner = next(iter(owners))
                self._check.observe(batch, owner, formats.get(owner))
                self._origins.append(owner)
                yield batch
                continue
            # Rows of several input files: noted per file; the batch passes in its order.
            per_row = pa.array(
                [owner for owner, mine in owners.items() for _ in mine], pa.string()
            ).take(pc.index_in(column, value_set=pa.array(
                [name for mine in owners.values() for name in mine], pa.string()
            )))
            for owner in sorted(owners):
                part = batch.filter(pc.equal(per_row, owner))
                self._check.observe(part, owner, formats.get(owner))
            self._origins.append(per_row)
            yield batch

    def _spilled(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Pass ``batches`` through while writing them to the spill, one row group each."""
        import pyarrow.parquet as pq

        from .schema import FLOW_SCHEMA

        with pq.ParquetWriter(self._spill_path(), FLOW_SCHEMA, compression="zstd") as writer:
            for batch in batches:
                writer.write_table(
                    pa.Table.from_batches([batch], schema=FLOW_SCHEMA),
                    row_group_size=max(batch.num_rows, 1),
                )
                yield batch

    def add_counts(self, counts: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Instead of :meth:`consume`: the input was read elsewhere (DuckDB scans canonical
        Parquet files itself); the checks take its counts per file (see
        :meth:`~recommender.ingest.overlap.InputCheck.add_counts`) and give their findings."""
        self._consumed = True
        for name, rows in counts:
            self._check.add_counts(name, rows)
        self._finish()

    def rows(self, *, window: bool | None = None) -> Iterator[pa.RecordBatch]:
        """The kept rows again, from the spill (after :meth:`consume`): the copies left out,
        the window applied when ``window`` (default: ``filter_window``)."""
        use_window = self.filter_window if window is None else window
        batches = self._kept()
        return self._windowed(batches) if use_window else batches

    def kept_file(self) -> Path:
        """A canonical Parquet file of the kept rows (the spill itself when no copy was left
        out), for a stage that reads a file (held-out validation)."""
        if self.spill is None:
            raise RuntimeError("the input was not kept; ask for keep_rows.")
        if not self.findings.dropped:
            return self.spill
        import pyarrow.parquet as pq

        from .schema import FLOW_SCHEMA

        kept = self.spill.with_name("kept.parquet")
        if not kept.exists():
            with pq.ParquetWriter(kept, FLOW_SCHEMA, compression="zstd") as writer:
                for batch in self._kept():
                    writer.write_batch(batch)
        return kept

    def _kept(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        if self.spill is None:
            raise RuntimeError("the input was not kept; ask for keep_rows.")
        import pyarrow.parquet as pq

        dropped = set(self.findings.dropped)
        if not dropped:
            yield from pq.ParquetFile(self.spill).iter_batches(batch_size=65536, columns=columns)
            return
        spill = pq.ParquetFile(self.spill)
        gone = pa.array(sorted(dropped), pa.string())
        for index, origin in enumerate(self._origins):
            if isinstance(origin, str):
                if origin not in dropped:
                    yield from spill.read_row_group(index, columns=columns).to_batches()
                continue
            group = spill.read_row_group(index, columns=columns)
            kept = group.filter(pc.invert(pc.is_in(origin, value_set=gone)))
            yield from kept.to_batches()

    def _spill_path(self) -> Path:
        if self.spill is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="recommender-")
            self.spill = Path(self._scratch.name) / "flows.parquet"
        return self.spill

    def _finish(self) -> None:
        """Findings, the ledger's share of them, ``last`` resolved into :attr:`since`."""
        self._finished = True
        found = self._check.findings()
        self.findings = found
        for name in found.dropped:
            self.ledger.drop_copies(name, self._check.rows_of(name))
        self.ledger.warnings.extend(found.warnings)
        self.ledger.clusters.update(found.clusters)
        for message in found.warnings:
            _log.warning("%s", message)
        if self.last is not None:
            latest = self._latest()
            if latest is not None:
                since = latest - self.last
                if self.since is None or since > self.since:
                    self.since = since

    def _latest(self) -> datetime | None:
        """The latest flow start of the rows kept (before ``until``)."""
        if self.spill is None:
            return None
        latest = None
        for batch in self._kept(["start_time"]):
            starts = batch.column("start_time")
            if self.until is not None:
                starts = starts.filter(pc.less(starts, pa.scalar(self.until, starts.type)))
            value = pc.max(starts).as_py()
            if value is not None and (latest is None or value > latest):
                latest = value
        if latest is not None and latest.tzinfo is None:
            latest = latest.replace(tzinfo=UTC)
        return latest

    def _windowed(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``batches`` inside ``[since, until)``; the rest counted as ``outside_window``."""
        if self.since is None and self.until is None:
            yield from batches
            return
        for batch in batches:
            starts = batch.column("start_time")
            tests = []
            if self.since is not None:
                tests.append(pc.greater_equal(starts, pa.scalar(self.since, starts.type)))
            if self.until is not None:
                tests.append(pc.less(starts, pa.scalar(self.until, starts.type)))
            keep = tests[0] if len(tests) == 1 else pc.and_(tests[0], tests[1])
            kept = batch.filter(keep)
            left = batch.num_rows - kept.num_rows
            if left:
                self.ledger.leave_outside_window(left)
            if kept.num_rows:
                yield kept

