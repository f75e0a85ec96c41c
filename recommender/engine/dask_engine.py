"""Ingest and aggregation as a Dask pipeline: one task per file (or per group of Parquet row
groups), partial aggregates merged in input order on the cluster.

Each task reads its part with the format's own reader into canonical batches and aggregates them
into a :class:`~recommender.aggregate.edges.PartialEdges` on the worker; consecutive partials are
merged pairwise on the cluster (a tree, so no process holds more than two), and the last one is
classified in the calling process with :func:`~recommender.aggregate.edges.finish_edges`. Partials
hold aggregates per edge and per pod, never rows, so what travels between processes is small.

Files are local paths (every worker must see them at the same path: a shared volume) or URIs
that fsspec understands (``s3://bucket/flows/``, ``gs://...``, ``abfs://...``, ``file://...``;
the protocol's package, such as ``s3fs``, must be installed on the workers). A remote file is
copied to the worker's temporary folder and read like a local one.

Canonical Parquet and CSV rows are independent, so the result equals the embedded engine's
exactly. The JSON readers merge the two ends' reports of one connection within a file; across
files they merge only in the embedded engine (one reader sees every file), so logs cut by node
or time may count such a connection twice here (see ``docs/scaling.md``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from ..aggregate.edges import EdgeTables, PartialEdges, finish_edges, merge_partials, partial_edges
from ..config import RecommendConfig
from ..errors import ConfigError, FlowFormatError, FlowSourceError, InputError
from ..ingest.ledger import IngestLedger
from ..ingest.overlap import InputCheck

__all__ = ["Task", "dask_edges", "plan_tasks"]

#: Parquet row groups per task (the canonical writer's groups hold 131,072 rows: ~1M a task).
ROW_GROUPS_PER_TASK: Final = 8
#: Seconds to wait for the scheduler before giving up.
CONNECT_TIMEOUT: Final = 15

PathLike = str | os.PathLike[str]

_log = logging.getLogger("recommender.engine")


@dataclass(frozen=True)
class Task:
    """One unit of work: a file (local path or URI), its format (None: detect on the worker),
    whether it was named directly, and for Parquet the row groups to read (None: all)."""

    source: str
    format: str | None
    explicit: bool = True
    row_groups: tuple[int, int] | None = None


@dataclass
class _Part:
    """What a task returns and merges carry: the partial, its ledger and the time spent."""

    partial: PartialEdges
    ledger: IngestLedger
    seconds: float
    rows: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The input checks' counts (clusters, days) of the part.
    check: InputCheck = field(default_factory=lambda: InputCheck(connections=False))


def _is_uri(text: str) -> bool:
    return "://" in text


def _expand_uri(uri: str) -> list[tuple[str, bool]]:
    """The files under an fsspec URI (a file, a folder searched recursively, or a pattern)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ConfigError(
            f"{uri}: reading URIs needs fsspec: pip install 'recommender[dask]'."
        ) from None
    try:
        fs, path = url_to_fs(uri)
        if any(c in path for c in "*?["):
            found = [(p, True) for p in sorted(fs.glob(path)) if fs.isfile(p)]
        elif fs.isdir(path):
            found = [
                (p, False)
                for p in sorted(fs.find(path))
                if not any(part.startswith(".") for part in p[len(path) :].split("/"))
            ]
        elif fs.isfile(path):
            found = [(path, True)]
        else:
            raise FlowSourceError(f"{uri}: no such file or folder.")
    except ImportError as exc:  # the protocol's package is missing
        package = getattr(exc, "name", None) or "the protocol's package"
        raise ConfigError(
            f"{uri}: cannot be opened: {exc}; install it: pip install {package}."
        ) from None
    except ValueError as exc:  # an unknown protocol
        raise ConfigError(f"{uri}: cannot be opened: {exc}") from None
    except OSError as exc:
        raise FlowSourceError(f"{uri}: cannot be listed: {exc}") from None
    if not found:
        raise FlowSourceError(f"{uri}: matches no file.")
    return [(fs.unstrip_protocol(p), explicit) for p, explicit in found]


def plan_tasks(paths: PathLike | Iterable[PathLike], format: str | None = None) -> list[Task]:
    """Cut the input into tasks, in input order (the order the embedded engine reads).

    Local files are found and their formats detected here, as the embedded engine does (a
    folder's files that are not flow logs are passed over); URIs are listed here and detected
    on the workers. A local canonical Parquet file is cut into groups of
    :data:`ROW_GROUPS_PER_TASK` row groups.
    """
    from ..ingest import FORMATS, detect_format
    from ..ingest._source import expand_paths_explicit

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if format is not None and format not in FORMATS:
        raise FlowSourceError(f"Unknown format {format!r}; choose one of {', '.join(FORMATS)}.")
    tasks: list[Task] = []
    for raw in paths:
        text = os.fspath(raw)
        if _is_uri(text) and not text.startswith("file://"):
            tasks.extend(Task(uri, format, explicit) for uri, explicit in _expand_uri(text))
            continue
        local = text.removeprefix("file://")
        for path, explicit in expand_paths_explicit([local]):
            try:
                fmt = format or detect_format(path)
            except FlowSourceError:
                if explicit:
                    raise
                tasks.append(Task(str(path), None, explicit=False))  # the worker notes it
                continue
            if fmt != "parquet":
                tasks.append(Task(str(path), fmt, explicit))
                continue
            try:
                groups = pq.ParquetFile(path).num_row_groups
            except (OSError, pa.ArrowException) as exc:
                raise FlowFormatError(f"{path}: not a readable Parquet file: {exc}") from None
            for first in range(0, max(groups, 1), ROW_GROUPS_PER_TASK):
                last = min(first + ROW_GROUPS_PER_TASK, groups)
                tasks.append(Task(str(path), fmt, explicit, (first, last)))
    if not tasks:
        raise FlowSourceError("None of the given files is a flow log of a known format.")
    return tasks


def _local_copy(uri: str, folder: str) -> Path:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    target = Path(folder) / Path(path).name
    try:
        fs.get(path, str(target))
    except OSError as exc:
        raise FlowSourceError(f"{uri}: cannot be read: {exc}") from None
    return target


def _batches(task: Task, path: Path, fmt: str, ledger: IngestLedger) -> Iterator[pa.RecordBatch]:
    from ..ingest import _READERS
    from ..ingest.canonical import ParquetReader
    from ..ingest.schema import FLOW_SCHEMA

    reader = _READERS[fmt](ledger)
    if task.row_groups is None or not isinstance(reader, ParquetReader):
        yield from reader.read(path)
        yield from reader.finish()
        return
    try:
        parquet = pq.ParquetFile(path)
        columns = [c for c in FLOW_SCHEMA.names if c in parquet.schema_arrow.names]
        metadata = parquet.metadata
        row = sum(metadata.row_group(i).num_rows for i in range(task.row_groups[0]))
        for group in range(*task.row_groups):
            table = parquet.read_row_group(group, columns=columns)
            yield reader._checked(table, path, row)
            row += table.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise FlowFormatError(f"{path}: not a readable Parquet file: {exc}") from None


def run_task(task: Task, config: RecommendConfig) -> _Part:
    """Read one task's part and aggregate it (runs on a worker)."""
    from ..ingest import detect_format

    started = time.perf_counter()
    ledger = IngestLedger()
    folder = tempfile.mkdtemp(prefix="recommender-") if _is_uri(task.source) else None
    try:
        path = _local_copy(task.source, folder) if folder else Path(task.source)
        fmt = task.format
        if fmt is None:
            try:
                fmt = detect_format(path)
            except FlowSourceError as exc:
                if task.explicit:
                    raise FlowSourceError(str(exc).replace(str(path), task.source)) from None
                ledger.ignore_file(task.source, str(exc).replace(str(path), task.source))
                return _Part(partial_edges([], config), ledger, 0.0, 0)
        ledger.open_file(task.source, fmt)
        rows = 0
        check = InputCheck(connections=False)

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal rows
            for batch in _batches(task, path, fmt, ledger):
                if batch.num_rows:
                    rows += batch.num_rows
                    check.observe(batch, task.source, fmt)
                    yield batch

        partial = partial_edges(counted(), config)
        ledger.close_file(task.source)
        if folder:  # name the URI, not the worker's copy, in the ledger's examples
            from ..ingest.ledger import SkipExample

            ledger.examples = [
                SkipExample(task.source, e.row, e.reason, e.detail) for e in ledger.examples
            ]
        files = {task.source: ledger.files.pop(task.source)}
        return _Part(partial, ledger, time.perf_counter() - started, rows, files, check)
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def merge_parts(*parts: _Part) -> _Part:
    """Merge consecutive parts in order (runs on a worker)."""
    ledger = IngestLedger()
    files: dict[str, dict[str, Any]] = {}
    check = InputCheck(connections=False)
    for part in parts:
        ledger.merge(part.ledger)
        check.merge(part.check)
        for name, entry in part.files.items():
            mine = files.get(name)
            if mine is None:
                files[name] = dict(entry)
            else:  # another row-group chunk of the same file
                mine["read"] += entry["read"]
                mine["used"] += entry["used"]
    return _Part(
        merge_partials(p.partial for p in parts),
        ledger,
        sum(p.seconds for p in parts),
        sum(p.rows for p in parts),
        files,
        check,
    )


def _rows(part: _Part) -> int:
    return part.rows


def _client(scheduler: str | None) -> tuple[Any, Callable[[], None]]:
    """A client of the cluster at ``scheduler``, or of a new local cluster; and its closer."""
    import distributed

    dist: Any = distributed  # untyped package
    Client, LocalCluster = dist.Client, dist.LocalCluster
    if scheduler is None:
        cluster = LocalCluster(processes=True, dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()  # closes its futures first
            cluster.close()

        return client, close
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"cannot reach the Dask scheduler at {scheduler!r}: {exc}. Check the address "
            "(such as tcp://scheduler:8786) and that the scheduler is running."
        ) from None
    return client, client.close


def dask_edges(
    flows: PathLike | Iterable[PathLike],
    config: RecommendConfig,
    *,
    format: str | None = None,
    scheduler: str | None = None,
    client: Any = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[EdgeTables, IngestLedger, float]:
    """The edge tables of ``flows``, ingested and aggregated on a Dask cluster.

    Parameters
    ----------
    flows
        Local paths (folders, patterns) or fsspec URIs.
    config
        The recommendation's options (the time window and edge thresholds apply).
    format
        Input format of every file (detected per file when None).
    scheduler
        Address of a running scheduler (``tcp://host:8786``); None starts a local cluster.
    client
        A ``distributed.Client`` to use instead (``scheduler`` is then ignored).
    on_batch
        Called with each task's row count as it finishes.

    Returns
    -------
    (EdgeTables, IngestLedger, float)
        The same tables :func:`~recommender.aggregate.edges.aggregate_edges` gives for the rows read
        in one process, the merged ledger, and the seconds of the distributed part (wall clock).

    Raises
    ------
    InputError
        When the scheduler cannot be reached, or any task's input is bad.
    """
    import distributed

    as_completed: Any = distributed.as_completed
    tasks = plan_tasks(flows, format)
    close: Callable[[], None] | None = None
    if client is None:
        client, close = _client(scheduler)
    started = time.perf_counter()
    try:
        parts = client.map(run_task, tasks, config=config, pure=False)
        if on_batch is not None:
            for future in as_completed(client.map(_rows, parts, pure=False)):
                on_batch(future.result())
        while len(parts) > 1:
            merged = [
                client.submit(merge_parts, *parts[i : i + 2], pure=False)
                for i in range(0, len(parts), 2)
            ]
            parts = merged
        whole: _Part = parts[0].result()
    finally:
        if close is not None:
            close()
    seconds = time.perf_counter() - started
    ledger = whole.ledger
    ledger.files = {**ledger.files, **whole.files}
    # Several clusters and far-apart windows, as the embedded engine tells them (copies among
    # inputs of several formats are not told here: that needs a second pass over the files).
    found = whole.check.findings()
    ledger.warnings.extend(found.warnings)
    ledger.clusters.update(found.clusters)
    for message in found.warnings:
        _log.warning("%s", message)
    return finish_edges(whole.partial, config), ledger, seconds
