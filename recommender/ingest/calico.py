"""Calico Enterprise / Calico Cloud flow logs: the Elasticsearch JSON and the space-delimited text.

Besides the two readers this module holds what the Calico-family readers share (the Goldmane and
Whisker readers in :mod:`.goldmane` build on it):

* :class:`JsonRecordReader`: JSON lines, one JSON array, ``{"items": [...]}`` or an Elasticsearch
  search response (``hits.hits[]._source``), decoded with msgspec; per-record errors go to the
  ledger, a file of the wrong shape as a whole raises :class:`~recommender.errors.FlowFormatError`.
* :class:`CalicoReader` reads JSON lines on a fast path: a typed msgspec decode of the used
  fields, caches for what repeats (endpoints, IPs, policies), rows built as tuples; any line that
  is not a plain record takes the generic path, so every skip reason is the same.
* :class:`ReportMerger`: Calico logs a connection once per end (``reporter`` ``src`` on the
  client's node, ``dst`` on the server's node), often in different files. The merger holds
  unmatched reports in a bounded window and folds the two reports of one connection into one row
  with ``reporter = "both"``.

See ``docs/formats/calico.md`` for the field mapping and the quirks.
"""

from __future__ import annotations

import contextlib
import heapq
import operator
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import msgspec
import pyarrow as pa

from ..errors import FlowFormatError
from ..schema import COLUMNS
from ._base import FlowReader
from ._common import (
    _MAX_US,
    _MIN_US,
    DEFAULT_BATCH_ROWS,
    BadValue,
    BatchBuilder,
    infer_workload,
    norm_ip,
    norm_port,
    norm_protocol,
    parse_label_list,
    to_micros,
)
from ._source import iter_line_chunks, open_decompressed

__all__ = [
    "CalicoReader",
    "CalicoTextReader",
    "JsonRecordReader",
    "ReportMerger",
    "endpoint_columns",
    "labels_from_any",
]

Row = dict[str, Any]

_decode = msgspec.json.decode
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, ValueError)
#: Per-record conversion errors that are the input's fault, never the reader's.
_RECORD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError)

#: Unmatched reports are released once their end is this much older than the newest start seen.
MERGE_HORIZON_US: Final = 15 * 60 * 1_000_000
#: At most this many unmatched reports are held back (the oldest is released first).
MERGE_CAP: Final = 500_000
_MAX_COUNT: Final = 1 << 62
_CACHE_LIMIT: Final = 200_000
#: How many records of a file are looked at to decide that it is not of the format at all.
_SHAPE_PROBE: Final = 20

_VERDICTS: Final = {"allow": "allowed", "deny": "denied", "pass": "pass"}


# --------------------------------------------------------------------------------------------
# Small value helpers
# --------------------------------------------------------------------------------------------


def text_or_none(value: Any) -> str | None:
    """A string field; None for absent, empty and ``-`` (Calico's "not logged / aggregated")."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return None if value in ("", "-") else value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue("invalid-value", f"{value!r} is not a string")
    return str(value)


def count_or_none(value: Any, field: str) -> int | None:
    """A non-negative counter; None when absent or ``-``."""
    if value is None or value == "-" or value == "":
        return None
    if isinstance(value, bool):
        raise BadValue("invalid-counter", f"{field} is {value!r}")
    if isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.strip().isdigit()
    ):
        number = int(value)
    else:
        raise BadValue("invalid-counter", f"{field} is {value!r}")
    if not 0 <= number < _MAX_COUNT:
        raise BadValue("invalid-counter", f"{field} {number} is out of range")
    return number


def add_counts(a: int | None, b: int | None) -> int | None:
    """``a + b`` where an absent counter is 0; None when both are absent."""
    if a is None and b is None:
        return None
    return (a or 0) + (b or 0)


def verdict_of(value: Any) -> str:
    """``allowed``/``denied``/``pass`` from ``allow``/``deny``/``pass`` (any case)."""
    verdict = _VERDICTS.get(value.strip().lower()) if isinstance(value, str) else None
    if verdict is None:
        raise BadValue("invalid-action", f"action {value!r} is not allow, deny or pass")
    return verdict


_REPORTERS: Final = {
    "src": "src",
    "source": "src",
    "out": "src",
    "dst": "dst",
    "dest": "dst",
    "destination": "dst",
    "in": "dst",
    "fwd": "fwd",
}


def reporter_of(value: Any) -> str | None:
    """``src``/``dst``/``fwd``; composite ``"dst, fwd"`` counts as its endpoint part (``dst``).

    A report that names an endpoint side carries that endpoint's policy verdict, so it is merged
    with the other end's report; ``fwd`` alone (a transit host) is never merged.
    """
    if not isinstance(value, str):
        return None
    parts = {_REPORTERS.get(p.strip().lower()) for p in value.split(",")}
    for side in ("src", "dst", "fwd"):
        if side in parts:
            return side
    return None


def micros_of(value: Any, field: str) -> int | None:
    """Microseconds from Unix seconds (or an RFC 3339 string); None when absent."""
    if value is None or value == "" or value == "-":
        return None
    return to_micros(value, field)


# --------------------------------------------------------------------------------------------
# Labels and endpoints (cached: the same few label sets and names repeat on millions of lines)
# --------------------------------------------------------------------------------------------

_LABEL_CACHE: dict[Hashable, dict[str, str]] = {}


def _labels_from_text(text: str) -> dict[str, str]:
    text = text.strip()
    if text in ("", "-", "{}", "[]"):
        return {}
    if text[0] in "{[":
        try:
            obj = _decode(text)
        except _DECODE_ERRORS:
            obj = None
        if obj is not None:
            return _labels_from_obj(obj)
    inner = text.strip("{}[]")
    sep = "|" if "|" in inner else ","
    items = []
    for part in inner.split(sep):
        part = part.strip().replace('"', "")
        if "=" not in part and ":" in part:
            part = part.replace(":", "=", 1)
        items.append(part.strip())
    return parse_label_list(items)


def _labels_from_obj(obj: Any) -> dict[str, str]:
    if obj is None:
        return {}
    if isinstance(obj, str):
        return _labels_from_text(obj)
    if isinstance(obj, list):
        return parse_label_list(obj)
    if isinstance(obj, dict):
        inner = obj.get("labels")
        if isinstance(inner, list):
            return parse_label_list(inner)
        if inner is None and "labels" not in obj:
            return {str(k): str(v) for k, v in obj.items() if isinstance(v, str | int | float)}
    return {}


def labels_from_any(raw: Any) -> dict[str, str]:
    """Labels from Calico's ``{"labels": ["k=v"]}``, a list, a map, ``-``, or one string.

    The string forms are Whisker's ``"k=v | k2=v2"`` and ``"k=v, k2=v2"``, and the text log's
    ``{"k":"v"}`` / ``{k=v,...}`` blobs. Results are cached by the raw value.
    """
    if raw is None:
        return {}
    if isinstance(raw, dict):
        inner = raw.get("labels")
        key: Hashable = ("L", tuple(inner)) if isinstance(inner, list) else None
    elif isinstance(raw, list):
        key = ("L", tuple(raw))
    elif isinstance(raw, str):
        key = raw
    else:
        return {}
    if key is not None:
        try:
            cached = _LABEL_CACHE.get(key)
        except TypeError:  # unhashable items inside the list
            return _labels_from_obj(raw)
        if cached is not None:
            return cached
    labels = _labels_from_obj(raw)
    if key is not None:
        if len(_LABEL_CACHE) >= _CACHE_LIMIT:
            _LABEL_CACHE.clear()
        _LABEL_CACHE[key] = labels
    return labels


_WORKLOAD_CACHE: dict[tuple[str | None, str | None, tuple[tuple[str, str], ...]], Any] = {}


def _workload(
    pod: str | None, labels: Mapping[str, str], prefix: str | None
) -> tuple[str | None, str | None]:
    key = (pod, prefix, tuple(labels.items()))
    hit = _WORKLOAD_CACHE.get(key)
    if hit is None:
        hit = infer_workload(pod, labels, prefix=prefix)
        if len(_WORKLOAD_CACHE) >= _CACHE_LIMIT:
            _WORKLOAD_CACHE.clear()
        _WORKLOAD_CACHE[key] = hit
    return hit


#: Endpoint type spellings of every Calico-family format -> canonical endpoint kind.
KIND_OF_TYPE: Final[dict[Any, str]] = {
    "wep": "workload",
    "workloadendpoint": "workload",
    1: "workload",
    "hep": "host",
    "hostendpoint": "host",
    2: "host",
    "ns": "external",
    "networkset": "external",
    3: "external",
    "net": "external",
    "network": "external",
    4: "external",
    "pub": "external",  # the old text log writes the network kind as the type
    "pvt": "external",
}
NETWORK_NAMES: Final = {
    "pub": "pub",
    "pvt": "pvt",
    "public network": "pub",  # Whisker shows Goldmane's pub/pvt under these names
    "private network": "pvt",
}


def endpoint_columns(
    prefix: str,
    type_raw: Any,
    namespace: str | None,
    pod: str | None,
    aggr: str | None,
    labels: dict[str, str],
) -> Row:
    """The canonical ``<prefix>_*`` columns of one Calico-family endpoint.

    ``pod`` is a full pod name when known, ``aggr`` the aggregated name (``nginx-86c57db685-*``,
    Goldmane's ``nginx-86c57db685-``, a host endpoint, NetworkSet, ``pub`` or ``pvt``).
    """
    values = endpoint_values(type_raw, namespace, pod, aggr, labels)
    return {f"{prefix}_{col}": value for col, value in zip(_ENDPOINT_COLUMNS, values, strict=True)}


#: The columns of :func:`endpoint_values`, in order (``<prefix>_`` left off).
_ENDPOINT_COLUMNS: Final = (
    "kind", "namespace", "workload", "workload_kind", "pod", "labels", "name",
)
#: One endpoint's columns: kind, namespace, workload, workload kind, pod, labels, name.
Endpoint = tuple[str, str | None, str | None, str | None, str | None, dict[str, str] | None,
                 str | None]


def endpoint_values(
    type_raw: Any,
    namespace: str | None,
    pod: str | None,
    aggr: str | None,
    labels: dict[str, str],
) -> Endpoint:
    """:func:`endpoint_columns` as a tuple in :data:`_ENDPOINT_COLUMNS` order."""
    if isinstance(type_raw, str):
        type_key: Any = type_raw.strip().lower()
        if type_key.isdigit():
            type_key = int(type_key)
    else:
        type_key = type_raw
    kind = KIND_OF_TYPE.get(type_key) if isinstance(type_key, str | int) else None
    name = aggr or pod
    network = NETWORK_NAMES.get(name.lower()) if name else None
    if type_key in ("pub", "pvt"):
        network = str(type_key)
    if kind is None:  # no or unknown type: infer from what is there
        if network:
            kind = "external"
        elif namespace and name:
            kind = "workload"
        else:
            kind = "unknown"
    workload = workload_kind = None
    if kind == "workload":
        workload, workload_kind = _workload(pod, labels, aggr)
    else:
        pod = None
        if network and kind == "external" and type_key not in ("ns", "networkset", 3):
            name = network
    return (kind, namespace, workload, workload_kind, pod, labels or None, name)


def strings_of(value: Any) -> list[str] | None:
    """A list of strings from a list or a comma-separated string (``-`` and empty: None)."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = [v.strip() for v in value if isinstance(v, str)]
    else:
        return None
    items = [v for v in items if v and v != "-"]
    return items or None


# --------------------------------------------------------------------------------------------
# Merging the two reports of one connection
# --------------------------------------------------------------------------------------------

#: A canonical row as the merger and the batch builder take it: a tuple in
#: :data:`~recommender.schema.COLUMNS` order.
RowTuple = tuple[Any, ...]

_COL: Final = {name: i for i, name in enumerate(COLUMNS)}
_CONNECTIONS: Final = _COL["connections"]
_KEY_COLUMNS: Final = (
    "start_time",
    "protocol",
    "src_kind",
    "src_namespace",
    "src_name",
    "src_ip",
    "src_port",
    "dst_kind",
    "dst_namespace",
    "dst_name",
    "dst_ip",
    "dst_port",
)
_VERDICT_RANK: Final = {"denied": 3, "allowed": 2, "pass": 1}
_KEY_OF: Final = operator.itemgetter(*(_COL[c] for c in _KEY_COLUMNS))
#: Per endpoint: the labels column and the columns taken with it from the other report.
_LABEL_GROUPS: Final = tuple(
    (_COL[f"{p}_labels"], tuple(_COL[f"{p}_{c}"] for c in ("labels", "workload",
                                                          "workload_kind", "pod")))
    for p in ("src", "dst")
)
_START, _END = _COL["start_time"], _COL["end_time"]
_REPORTER, _VERDICT, _POLICIES = _COL["reporter"], _COL["verdict"], _COL["policies"]
_PACKETS, _BYTES, _NODE = _COL["packets"], _COL["bytes"], _COL["node"]
_SOURCE_FILE, _SOURCE_ROW = _COL["source_file"], _COL["source_row"]
#: The columns merge_reports fills from the dst report where the src report has none: not the
#: key columns (equal in both reports) nor those it sets itself.
_FILLED: Final = tuple(
    i
    for i, name in enumerate(COLUMNS)
    if name not in _KEY_COLUMNS
    and name not in ("end_time", "verdict", "policies", "packets", "bytes", "connections",
                     "reporter", "node", "source_file", "source_row")
)
#: Sequence numbers of held reports stay below this (2**40: a trillion rows per reader).
_SEQ_SPAN: Final = 1 << 40


def row_tuple(row: Row) -> RowTuple:
    """A row given as a dict (missing keys are nulls, ``connections`` defaults to 1) as a tuple
    in column order."""
    values = tuple(row.get(name) for name in COLUMNS)
    if values[_CONNECTIONS] is None:
        values = (*values[:_CONNECTIONS], 1, *values[_CONNECTIONS + 1 :])
    return values


def merge_key(row: RowTuple) -> tuple[Any, ...]:
    """What identifies a connection in both ends' reports.

    ``end_time`` is not part of it: the two nodes flush on their own timers, so the two reports
    of one interval end a few seconds apart (see the real records in the tests).
    """
    key: tuple[Any, ...] = _KEY_OF(row)
    return key


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_reports(first: RowTuple, second: RowTuple) -> RowTuple:
    """One row from a ``src`` and a ``dst`` report of the same connection."""
    src, dst = (first, second) if first[_REPORTER] == "src" else (second, first)
    row = list(src)
    for labels, columns in _LABEL_GROUPS:
        if not src[labels] and dst[labels]:  # that end's labels, workload and pod from dst
            for col in columns:
                row[col] = dst[col]
    for i in _FILLED:  # what the src report lacks, from the dst report
        if row[i] is None:
            row[i] = dst[i]
    row[_START] = min(first[_START], second[_START])
    row[_END] = max(first[_END], second[_END])
    va, vb = first[_VERDICT], second[_VERDICT]
    row[_VERDICT] = va if _VERDICT_RANK.get(va, 0) >= _VERDICT_RANK.get(vb, 0) else vb
    policies = set(first[_POLICIES] or ()) | set(second[_POLICIES] or ())
    row[_POLICIES] = tuple(sorted(policies)) or None  # a tuple: see _frozen
    row[_PACKETS] = _max(first[_PACKETS], second[_PACKETS])
    row[_BYTES] = _max(first[_BYTES], second[_BYTES])
    row[_CONNECTIONS] = max(first[_CONNECTIONS] or 1, second[_CONNECTIONS] or 1)
    row[_REPORTER] = "both"
    row[_NODE] = src[_NODE]
    row[_SOURCE_FILE] = first[_SOURCE_FILE]
    row[_SOURCE_ROW] = first[_SOURCE_ROW]
    return tuple(row)


class ReportMerger:
    """Folds the ``src`` and ``dst`` reports of one connection into one row, in bounded memory.

    Rows are tuples in :data:`~recommender.schema.COLUMNS` order (see :func:`row_tuple`).
    Unmatched ``src``/``dst`` rows are held back, keyed by :func:`merge_key`, and released as
    rows of their own when their end time falls ``horizon_us`` behind the newest start time seen,
    when more than ``cap`` are held (oldest first), or by :meth:`release_all`. Rows with another
    reporter (``fwd``, unknown) pass straight through. A second report with the *same* reporter
    and key is another connection (two nodes, say), so the held one is released and the new one
    held in its place.
    """

    def __init__(
        self, emit: Callable[[RowTuple], None], *, horizon_us: int = MERGE_HORIZON_US,
        cap: int = MERGE_CAP,
    ) -> None:
        self.emit = emit
        self.horizon_us = horizon_us
        self.cap = cap
        self.pending: dict[tuple[Any, ...], tuple[int, RowTuple]] = {}
        # (end_time * _SEQ_SPAN + seq, key): one int orders the heap as (end_time, seq) would.
        self._heap: list[tuple[int, tuple[Any, ...]]] = []
        self._seq = 0
        self._newest = -(1 << 62)

    def offer(self, row: RowTuple) -> bool:
        """Take one row; True when it was merged into a held report (a duplicate)."""
        start = row[_START]
        if start > self._newest:
            self._newest = start
            self._expire()
        reporter = row[_REPORTER]
        if reporter != "src" and reporter != "dst":
            self.emit(row)
            return False
        key = _KEY_OF(row)
        pending = self.pending
        held = pending.pop(key, None)
        if held is not None:
            if held[1][_REPORTER] != reporter:
                self.emit(merge_reports(held[1], row))
                return True
            self.emit(held[1])
        seq = self._seq = self._seq + 1
        pending[key] = (seq, row)
        heapq.heappush(self._heap, (row[_END] * _SEQ_SPAN + seq, key))
        if len(pending) > self.cap:
            oldest = next(iter(pending))
            self.emit(pending.pop(oldest)[1])
        return False

    def _expire(self) -> None:
        limit = (self._newest - self.horizon_us) * _SEQ_SPAN  # end_time < newest - horizon
        heap = self._heap
        while heap and heap[0][0] < limit:
            order, key = heapq.heappop(heap)
            held = self.pending.get(key)
            if held is not None and held[0] == order % _SEQ_SPAN:
                del self.pending[key]
                self.emit(held[1])
        if len(heap) > 2 * len(self.pending) + 4096:
            self._heap = [(r[_END] * _SEQ_SPAN + s, k) for k, (s, r) in self.pending.items()]
            heapq.heapify(self._heap)

    def release_all(self) -> None:
        """Emit every held row (at the end of the run)."""
        for _, row in self.pending.values():
            self.emit(row)
        self.pending.clear()
        self._heap.clear()


# --------------------------------------------------------------------------------------------
# The JSON reader machinery
# --------------------------------------------------------------------------------------------


class JsonRecordReader(FlowReader):
    """A reader of JSON flow records, one per line or in one document, merging double reports.

    Subclasses set :attr:`name`, implement :meth:`looks_like` (is this object a record of the
    format?) and :meth:`convert` (a canonical row, or :class:`BadValue` with the skip reason).
    """

    #: What the format is called in error messages.
    title: ClassVar[str] = ""

    def __init__(self, ledger: Any, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        super().__init__(ledger, batch_rows=batch_rows)
        self.merger = ReportMerger(self.builder.add_tuple)

    # -- format hooks ------------------------------------------------------------------------

    def looks_like(self, obj: Any) -> bool:
        """True when ``obj`` is a record of this format (possibly with bad values)."""
        raise NotImplementedError

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        """The canonical row of one record."""
        raise NotImplementedError

    def unwrap(self, obj: Any) -> Any:
        """The record inside a wrapper object (``FlowResult``, say); ``obj`` by default."""
        return obj

    # -- reading -----------------------------------------------------------------------------

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        file = str(path)
        if self._is_document(path):
            records = self._document_records(path)
            self._check_shape(path, (r for _, r in records[:_SHAPE_PROBE]))
            for row_no, rec in records:
                self._record(rec, file, row_no)
                yield from self._drain()
            return
        self._check_shape(path, self._probe_lines(path))
        for first, lines, error in iter_line_chunks(path):
            self._read_lines(file, first, lines)
            yield from self._drain()
            if error:
                self.ledger.read += 1
                self.ledger.skip(file, first + len(lines), "truncated-file", error)

    def _read_lines(self, file: str, first: int, lines: list[bytes]) -> None:
        """Account for the records of a chunk of lines (``first`` is the first's number)."""
        for i, line in enumerate(lines):
            if line and not line.isspace():
                self._read_line(file, first + i, line)

    def _read_line(self, file: str, line_no: int, line: bytes) -> None:
        """Account for the record(s) of one line: a record, an array or a wrapper of records."""
        try:
            obj = _decode(line)
        except _DECODE_ERRORS as exc:
            self.ledger.read += 1
            self.ledger.skip(file, line_no, "malformed-json", str(exc))
            return
        items = self._expand(obj)
        if items is None:
            self._record(obj, file, line_no)
        else:
            for index, rec in enumerate(items):
                self._record(rec, file, index + 1)

    def finish(self) -> Iterator[pa.RecordBatch]:
        self.merger.release_all()
        yield from self._drain()
        batch = self.builder.flush()
        if batch is not None:
            yield batch

    def _drain(self) -> Iterator[pa.RecordBatch]:
        """Yield full batches; the merger may release many held rows at once."""
        size = self.builder.batch_rows
        while self.builder.full:
            rows = self.builder.rows
            self.builder.rows = rows[size:]
            chunk = BatchBuilder(size)
            chunk.rows = rows[:size]
            batch = chunk.flush()
            if batch is not None:
                yield batch

    def _record(self, obj: Any, file: str, row_no: int) -> None:
        """Account for one decoded record: used, duplicate or skipped."""
        self.ledger.read += 1
        rec = self.unwrap(obj)
        if not self.looks_like(rec):
            self.ledger.skip(file, row_no, "unknown-shape", _shape_detail(obj))
            return
        try:
            row = self.convert(rec, file, row_no)
        except BadValue as exc:
            self.ledger.skip(file, row_no, exc.reason, str(exc))
            return
        except _RECORD_ERRORS as exc:
            self.ledger.skip(file, row_no, "invalid-value", f"{type(exc).__name__}: {exc}")
            return
        if self.merger.offer(row_tuple(row)):
            self.ledger.duplicate += 1
        else:
            self.ledger.used += 1

    # -- file shapes -------------------------------------------------------------------------

    @staticmethod
    def _expand(obj: Any) -> list[Any] | None:
        """The records of a container (array, ``items``, search response), or None for one."""
        if isinstance(obj, list):
            return obj
        if isinstance(obj, dict):
            items = obj.get("items")
            if isinstance(items, list) and len(obj) <= 3:
                return items
            hits = obj.get("hits")
            if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
                return [h.get("_source", h) if isinstance(h, dict) else h for h in hits["hits"]]
        return None

    @staticmethod
    def _is_document(path: Path) -> bool:
        """True for a pretty-printed JSON document (its first line is not a whole record)."""
        for _, lines, _ in iter_line_chunks(path, chunk_bytes=65536):
            for line in lines:
                first = line.strip().lstrip(b"\xef\xbb\xbf").strip()
                if not first:
                    continue
                if first.startswith(b"[") or first == b"{":
                    try:
                        _decode(first)
                    except _DECODE_ERRORS:
                        return True
                return False
            if lines:
                return False
        return False

    def _document_records(self, path: Path) -> list[tuple[int, Any]]:
        try:
            with open_decompressed(path) as fh:
                data = fh.read()
            obj = _decode(data.lstrip(b"\xef\xbb\xbf"))
        except (OSError, pa.ArrowException) as exc:
            raise FlowFormatError(f"{path}: cannot be read as {self.title}: {exc}") from None
        except _DECODE_ERRORS as exc:
            raise FlowFormatError(
                f"{path}: not valid JSON ({exc}); expected {self.title}."
            ) from None
        items = self._expand(obj)
        if items is None:
            items = [obj]
        return [(i + 1, rec) for i, rec in enumerate(items)]

    def _probe_lines(self, path: Path) -> Iterator[Any]:
        seen = 0
        for _, lines, _ in iter_line_chunks(path, chunk_bytes=65536):
            for line in lines:
                if not line.strip():
                    continue
                seen += 1
                if seen > _SHAPE_PROBE:
                    return
                try:
                    obj = _decode(line)
                except _DECODE_ERRORS:
                    yield _MALFORMED
                    continue
                items = self._expand(obj)
                yield from (items[:_SHAPE_PROBE] if items is not None else [obj])
            return

    def _check_shape(self, path: Path, probe: Iterable[Any]) -> None:
        """Raise FlowFormatError when none of the first records fits the format."""
        seen = False
        for obj in probe:
            seen = True
            if obj is not _MALFORMED and self.looks_like(self.unwrap(obj)):
                return
        if seen:
            raise FlowFormatError(
                f"{path}: none of the first records is {self.title}; "
                "check the file or name its format with --format."
            )


_MALFORMED: Final = object()


def _shape_detail(obj: Any) -> str:
    if isinstance(obj, dict):
        return "an object with keys " + ", ".join(sorted(map(str, obj))[:8])
    return f"a JSON {type(obj).__name__}, not an object"


# --------------------------------------------------------------------------------------------
# Calico Enterprise JSON
# --------------------------------------------------------------------------------------------

_CALICO_ENDPOINT_KEYS: Final = (
    "source_type",
    "dest_type",
    "source_name_aggr",
    "dest_name_aggr",
    "source_ip",
    "dest_ip",
    "source_namespace",
    "dest_namespace",
)


def _calico_endpoint(rec: Mapping[str, Any], side: str, prefix: str) -> Row:
    values = _calico_endpoint_values(
        rec.get(f"{side}_type"),
        rec.get(f"{side}_namespace"),
        rec.get(f"{side}_name"),
        rec.get(f"{side}_name_aggr"),
        rec.get(f"{side}_labels"),
    )
    return {f"{prefix}_{col}": value for col, value in zip(_ENDPOINT_COLUMNS, values, strict=True)}


def _calico_endpoint_values(
    type_raw: Any, namespace_raw: Any, name_raw: Any, aggr_raw: Any, labels_raw: Any
) -> Endpoint:
    """One endpoint of a Calico record from its raw fields (``source_*`` or ``dest_*``)."""
    name = text_or_none(name_raw)
    aggr = text_or_none(aggr_raw)
    if name is not None and name.endswith("*"):  # the text log's prefix-aggregated name
        aggr, name = aggr or name, None
    if aggr == "*":  # aggregated by other means: no prefix known
        aggr = None
    return endpoint_values(
        type_raw, text_or_none(namespace_raw), name, aggr, labels_from_any(labels_raw)
    )


def _calico_policies(raw: Any) -> list[str] | None:
    if isinstance(raw, list):  # the text log's policies column
        return strings_of(raw)
    if not isinstance(raw, dict):
        return None
    for name in ("enforced_policies", "all_policies", "transit_policies"):
        value = raw.get(name)
        if value:
            return strings_of(value)
    return None


def _calico_times(start_raw: Any, end_raw: Any, stamp: Any) -> tuple[int, int]:
    """``(start, end)`` in microseconds from a record's ``start_time``, ``end_time`` and
    ``@timestamp`` (used when neither of the others is there)."""
    start = micros_of(start_raw, "start_time")
    end = micros_of(end_raw, "end_time")
    if start is None and end is None:
        if stamp is None:
            raise BadValue("missing-time", "no start_time, end_time or @timestamp")
        if isinstance(stamp, str) and stamp.strip().isdigit():
            stamp = int(stamp)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            stamp = stamp / 1000  # Elasticsearch epoch milliseconds
        start = end = to_micros(stamp, "@timestamp")
    elif start is None:
        start = end
    elif end is None:
        end = start
    assert start is not None and end is not None
    if end < start:
        start, end = end, start
    return start, end


def calico_row(rec: Mapping[str, Any], fmt: str, file: str, row_no: int) -> Row:
    """The canonical row of one Calico Enterprise flow-log record (JSON field names)."""
    start, end = _calico_times(rec.get("start_time"), rec.get("end_time"), rec.get("@timestamp"))
    protocol = norm_protocol(rec["proto"])
    row: Row = {
        "start_time": start,
        "end_time": end,
        **_calico_endpoint(rec, "source", "src"),
        **_calico_endpoint(rec, "dest", "dst"),
        "src_ip": _ip(rec.get("source_ip")),
        "dst_ip": _ip(rec.get("dest_ip")),
        "src_port": norm_port(rec.get("source_port"), "source_port"),
        "dst_port": None
        if protocol in ("ICMP", "ICMPv6")
        else norm_port(rec.get("dest_port"), "dest_port"),
        "protocol": protocol,
        "verdict": verdict_of(rec["action"]),
        "reporter": reporter_of(rec.get("reporter")),
        "policies": _calico_policies(rec.get("policies")),
        "dst_service_namespace": text_or_none(rec.get("dest_service_namespace")),
        "dst_service_name": text_or_none(rec.get("dest_service_name")),
        "dst_service_port": text_or_none(rec.get("dest_service_port")),
        "dst_dns_names": strings_of(rec.get("dest_domains")),
        "node": text_or_none(rec.get("host")),
        "is_reply": False,
        "packets": add_counts(
            count_or_none(rec.get("packets_in"), "packets_in"),
            count_or_none(rec.get("packets_out"), "packets_out"),
        ),
        "bytes": add_counts(
            count_or_none(rec.get("bytes_in"), "bytes_in"),
            count_or_none(rec.get("bytes_out"), "bytes_out"),
        ),
        "source_format": fmt,
        "source_file": file,
        "source_row": row_no,
    }
    started = count_or_none(rec.get("num_flows_started"), "num_flows_started")
    flows = count_or_none(rec.get("num_flows"), "num_flows")
    row["connections"] = started if started else (flows if flows else 1)
    return row


def _ip(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadValue("invalid-ip", f"{value!r} is not an IP address")
    return norm_ip(value)


class CalicoReader(JsonRecordReader):
    """Calico Enterprise / Cloud flow logs as shipped to Elasticsearch (JSON).

    Accepts JSON lines, one JSON array of records, or an Elasticsearch search response
    (``hits.hits[]._source``). The ``src`` and ``dst`` reports of one connection become one row.
    """

    name = "calico"
    title = "a Calico Enterprise flow-log record"

    def looks_like(self, obj: Any) -> bool:
        return (
            isinstance(obj, dict)
            and "proto" in obj
            and "action" in obj
            and any(k in obj for k in _CALICO_ENDPOINT_KEYS)
        )

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        return calico_row(rec, self.name, file, row)

    def __init__(self, ledger: Any, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        super().__init__(ledger, batch_rows=batch_rows)
        # Caches of the fast path. Keys are only strings, None and the bytes of raw JSON:
        # 1, 1.0 and True are equal as keys but give different results.
        self._endpoints: dict[tuple[Any, ...], Endpoint] = {}
        self._protocols: dict[str, str] = {}
        self._ips: dict[str, str] = {}
        self._tails: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _read_lines(self, file: str, first: int, lines: list[bytes]) -> None:
        """The fast path: each line decoded into a :class:`_CalicoRecord`, which reads only the
        fields used; a line that does not decode into one (malformed, not an object, missing
        ``proto``/``action``, a wrapper of records) or has none of the endpoint keys takes the
        generic path, which decides and reports exactly as for any other format."""
        ledger = self.ledger
        decode = _DECODE_RECORD
        offer = self.merger.offer
        row_of = self._fast_row
        generic = self._read_line
        for i, line in enumerate(lines):
            if not line or line.isspace():
                continue
            try:
                rec = decode(line)
            except Exception:  # whatever it is, the generic path reports it as it always has
                generic(file, first + i, line)
                continue
            if rec.items or rec.hits or (rec.source_type is None and _no_endpoint_key(rec)):
                generic(file, first + i, line)
                continue
            ledger.read += 1
            try:
                row = row_of(rec, file, first + i)
            except BadValue as exc:
                ledger.skip(file, first + i, exc.reason, str(exc))
                continue
            except _RECORD_ERRORS as exc:
                ledger.skip(file, first + i, "invalid-value", f"{type(exc).__name__}: {exc}")
                continue
            if offer(row):
                ledger.duplicate += 1
            else:
                ledger.used += 1

    def _fast_row(self, r: _CalicoRecord, file: str, row_no: int) -> RowTuple:
        """:func:`calico_row` of a decoded record, as a tuple, with the same checks in the same
        order (so the same skip reason for a bad record). The usual values (ints, strings) are
        handled inline; repeated strings and raw JSON come from caches; anything else goes
        through the same helpers as :func:`calico_row`."""
        st, et = r.start_time, r.end_time
        if type(st) is int and type(et) is int:
            start, end = st * 1_000_000, et * 1_000_000
            if not (_MIN_US <= start <= _MAX_US and _MIN_US <= end <= _MAX_US):
                start, end = _calico_times(st, et, r.timestamp)
            elif end < start:
                start, end = end, start
        else:
            start, end = _calico_times(st, et, r.timestamp)
        value = r.proto
        protocol = self._protocols.get(value) if type(value) is str else None
        if protocol is None:
            protocol = norm_protocol(value)
            if type(value) is str:
                _remember(self._protocols, value, protocol)
        endpoint = self._endpoint
        s_kind, s_ns, s_wl, s_wk, s_pod, s_labels, s_name = endpoint(
            r.source_type, r.source_namespace, r.source_name, r.source_name_aggr,
            r.source_labels,
        )
        d_kind, d_ns, d_wl, d_wk, d_pod, d_labels, d_name = endpoint(
            r.dest_type, r.dest_namespace, r.dest_name, r.dest_name_aggr, r.dest_labels
        )
        ips = self._ips
        value = r.source_ip
        src_ip = ips.get(value) if type(value) is str else None
        if src_ip is None:
            src_ip = _ip(value)
            if src_ip is not None and type(value) is str:
                _remember(ips, value, src_ip)
        value = r.dest_ip
        dst_ip = ips.get(value) if type(value) is str else None
        if dst_ip is None:
            dst_ip = _ip(value)
            if dst_ip is not None and type(value) is str:
                _remember(ips, value, dst_ip)
        src_port = r.source_port
        if src_port is not None and not (type(src_port) is int and 0 <= src_port <= 65535):
            src_port = norm_port(src_port, "source_port")
        if protocol == "ICMP" or protocol == "ICMPv6":
            dst_port = None
        else:
            dst_port = r.dest_port
            if dst_port is not None and not (type(dst_port) is int and 0 <= dst_port <= 65535):
                dst_port = norm_port(dst_port, "dest_port")
        # verdict, reporter, policies, service, domains and node: one cache lookup when every
        # raw value is a string or null (they repeat together), else one by one
        action, rep, svc_ns, svc_name, svc_port, host = (
            r.action, r.reporter, r.dest_service_namespace, r.dest_service_name,
            r.dest_service_port, r.host,
        )
        policies_raw, domains_raw = bytes(r.policies), bytes(r.dest_domains)
        if (
            type(action) is str
            and type(rep) in _KEYABLE
            and type(svc_ns) in _KEYABLE
            and type(svc_name) in _KEYABLE
            and type(svc_port) in _KEYABLE
            and type(host) in _KEYABLE
        ):
            key = (action, rep, svc_ns, svc_name, svc_port, host, policies_raw, domains_raw)
            tail = self._tails.get(key)
            if tail is None:
                tail = _calico_tail(action, rep, policies_raw, svc_ns, svc_name, svc_port,
                                    domains_raw, host)
                _remember(self._tails, key, tail)
        else:
            tail = _calico_tail(action, rep, policies_raw, svc_ns, svc_name, svc_port,
                                domains_raw, host)
        verdict, reporter, policies, svc_ns, svc_name, svc_port, domains, node = tail
        p_in = r.packets_in
        if p_in is not None and not (type(p_in) is int and 0 <= p_in < _MAX_COUNT):
            p_in = count_or_none(p_in, "packets_in")
        p_out = r.packets_out
        if p_out is not None and not (type(p_out) is int and 0 <= p_out < _MAX_COUNT):
            p_out = count_or_none(p_out, "packets_out")
        b_in = r.bytes_in
        if b_in is not None and not (type(b_in) is int and 0 <= b_in < _MAX_COUNT):
            b_in = count_or_none(b_in, "bytes_in")
        b_out = r.bytes_out
        if b_out is not None and not (type(b_out) is int and 0 <= b_out < _MAX_COUNT):
            b_out = count_or_none(b_out, "bytes_out")
        started = r.num_flows_started
        if started is not None and not (type(started) is int and 0 <= started < _MAX_COUNT):
            started = count_or_none(started, "num_flows_started")
        flows = r.num_flows
        if flows is not None and not (type(flows) is int and 0 <= flows < _MAX_COUNT):
            flows = count_or_none(flows, "num_flows")
        # Column order is recommender.schema.COLUMNS' (checked when this module is imported).
        return (
            start,
            end,
            s_kind,
            s_ns,
            s_wl,
            s_wk,
            s_pod,
            s_labels,
            src_ip,
            src_port,
            s_name,
            d_kind,
            d_ns,
            d_wl,
            d_wk,
            d_pod,
            d_labels,
            dst_ip,
            dst_port,
            d_name,
            protocol,
            None,
            None,
            svc_ns,
            svc_name,
            svc_port,
            domains,
            verdict,
            None,
            policies,
            reporter,
            None,
            None,
            node,
            False,
            started if started else (flows if flows else 1),
            None if p_in is None and p_out is None else (p_in or 0) + (p_out or 0),
            None if b_in is None and b_out is None else (b_in or 0) + (b_out or 0),
            None,
            None,
            None,
            None,
            None,
            self.name,
            file,
            row_no,
        )

    def _endpoint(
        self, type_raw: Any, namespace: Any, name: Any, aggr: Any, labels: msgspec.Raw
    ) -> Endpoint:
        """:func:`_calico_endpoint_values`, cached when every raw value is a string or null."""
        raw = bytes(labels)
        if (
            type(type_raw) in _KEYABLE
            and type(namespace) in _KEYABLE
            and type(name) in _KEYABLE
            and type(aggr) in _KEYABLE
        ):
            key = (type_raw, namespace, name, aggr, raw)
            hit = self._endpoints.get(key)
            if hit is None:
                hit = _calico_endpoint_values(
                    type_raw, namespace, name, aggr, _decode(raw) if raw else None
                )
                _remember(self._endpoints, key, hit)
            return hit
        return _calico_endpoint_values(
            type_raw, namespace, name, aggr, _decode(raw) if raw else None
        )


class _CalicoRecord(msgspec.Struct, gc=False):
    """The fields of a Calico Enterprise record that :func:`calico_row` reads.

    ``proto`` and ``action`` are required: a record without them is not one (``looks_like``).
    Values are ``Any`` so that every JSON value decodes (the checks are the generic path's);
    labels, policies and domains stay raw JSON, the key of their caches. ``items`` and ``hits``
    mark a wrapper of records, which the generic path unpacks.
    """

    proto: Any
    action: Any
    start_time: Any = None
    end_time: Any = None
    timestamp: Any = msgspec.field(default=None, name="@timestamp")
    source_type: Any = None
    source_namespace: Any = None
    source_name: Any = None
    source_name_aggr: Any = None
    source_labels: msgspec.Raw = msgspec.Raw(b"")
    source_ip: Any = None
    source_port: Any = None
    dest_type: Any = None
    dest_namespace: Any = None
    dest_name: Any = None
    dest_name_aggr: Any = None
    dest_labels: msgspec.Raw = msgspec.Raw(b"")
    dest_ip: Any = None
    dest_port: Any = None
    dest_service_namespace: Any = None
    dest_service_name: Any = None
    dest_service_port: Any = None
    dest_domains: msgspec.Raw = msgspec.Raw(b"")
    reporter: Any = None
    policies: msgspec.Raw = msgspec.Raw(b"")
    host: Any = None
    packets_in: Any = None
    packets_out: Any = None
    bytes_in: Any = None
    bytes_out: Any = None
    num_flows: Any = None
    num_flows_started: Any = None
    items: msgspec.Raw = msgspec.Raw(b"")
    hits: msgspec.Raw = msgspec.Raw(b"")


_DECODE_RECORD: Final = msgspec.json.Decoder(_CalicoRecord).decode
_KEYABLE: Final = frozenset({str, type(None)})
_MISSING: Final = object()


def _no_endpoint_key(r: _CalicoRecord) -> bool:
    """True when none of :data:`_CALICO_ENDPOINT_KEYS` is in the record (or all are null, which
    the generic path then tells apart)."""
    return (
        r.source_type is None
        and r.dest_type is None
        and r.source_name_aggr is None
        and r.dest_name_aggr is None
        and r.source_ip is None
        and r.dest_ip is None
        and r.source_namespace is None
        and r.dest_namespace is None
    )


def _calico_tail(
    action: Any, reporter: Any, policies: bytes, svc_ns: Any, svc_name: Any, svc_port: Any,
    domains: bytes, host: Any,
) -> tuple[Any, ...]:
    """Verdict, reporter, policies, service namespace, name and port, domains and node, in
    :func:`calico_row`'s order (policies and domains from their raw JSON, as tuples)."""
    return (
        verdict_of(action),
        reporter_of(reporter),
        _frozen(_calico_policies(_decode(policies) if policies else None)),
        text_or_none(svc_ns),
        text_or_none(svc_name),
        text_or_none(svc_port),
        _frozen(strings_of(_decode(domains) if domains else None)),
        text_or_none(host),
    )


def _frozen(values: list[str] | None) -> tuple[str, ...] | None:
    """A list column's value as a tuple: a row of strings, ints and tuples of strings (label
    dicts of strings are untracked too) leaves the garbage collector's tracking, which would
    otherwise walk every row waiting in the batch builder on each full collection."""
    return tuple(values) if values is not None else None


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


_FAST_LAYOUT: Final = (
    "start_time", "end_time",
    "src_kind", "src_namespace", "src_workload", "src_workload_kind", "src_pod", "src_labels",
    "src_ip", "src_port", "src_name",
    "dst_kind", "dst_namespace", "dst_workload", "dst_workload_kind", "dst_pod", "dst_labels",
    "dst_ip", "dst_port", "dst_name",
    "protocol", "icmp_type", "icmp_code", "dst_service_namespace", "dst_service_name",
    "dst_service_port", "dst_dns_names", "verdict", "drop_reason", "policies", "reporter",
    "traffic_direction", "observation_point", "node", "is_reply", "connections", "packets",
    "bytes", "l7_protocol", "http_method", "http_path", "http_code", "dns_query",
    "source_format", "source_file", "source_row",
)
if tuple(COLUMNS) != _FAST_LAYOUT:  # CalicoReader._fast_row writes rows in this order
    raise ImportError("recommender.schema.COLUMNS changed: update CalicoReader._fast_row")


# --------------------------------------------------------------------------------------------
# Calico Enterprise space-delimited text
# --------------------------------------------------------------------------------------------

_TEXT_TYPES: Final = frozenset({"wep", "hep", "ns", "net", "pub", "pvt"})
_TEXT_FIELDS: Final = (
    "src_ip",
    "dst_ip",
    "proto",
    "source_port",
    "dest_port",
    "num_flows",
    "num_flows_started",
    "num_flows_completed",
    "reporter",
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "action",
)


def _text_tokens(line: str) -> list[str]:
    """Whitespace-separated fields, keeping ``{...}``/``[...]`` blobs with spaces together."""
    tokens: list[str] = []
    depth = 0
    for part in line.split():
        if depth > 0:
            tokens[-1] += " " + part
        else:
            tokens.append(part)
        if depth > 0 or part[0] in "{[":
            depth += part.count("{") + part.count("[") - part.count("}") - part.count("]")
            depth = max(depth, 0)
    return tokens


def text_record(line: str) -> dict[str, Any] | None:
    """A Calico JSON-style record from one text-log line, or None when it is not one.

    Two layouts: the documented 24 fields (``... srcName srcLabels dstType ...``) and the newer
    one with ``srcNameAggr``/``dstNameAggr`` after each name; extra trailing fields (policies,
    original source IPs, services, processes) are read when present.
    """
    parts = _text_tokens(line)
    if len(parts) < 24:
        return None
    if parts[6] in _TEXT_TYPES:
        aggr = False
    elif len(parts) >= 26 and parts[7] in _TEXT_TYPES:
        aggr = True
    else:
        return None
    rec: dict[str, Any] = {"start_time": parts[0], "end_time": parts[1]}
    i = 2
    for side in ("source", "dest"):
        rec[f"{side}_type"] = parts[i]
        rec[f"{side}_namespace"] = parts[i + 1]
        rec[f"{side}_name"] = parts[i + 2]
        if aggr:
            rec[f"{side}_name_aggr"] = parts[i + 3]
            i += 1
        rec[f"{side}_labels"] = parts[i + 3]
        i += 4
    for offset, name in enumerate(_TEXT_FIELDS):
        rec[name] = parts[i + offset]
    rec["source_ip"], rec["dest_ip"] = rec.pop("src_ip"), rec.pop("dst_ip")
    rest = parts[i + len(_TEXT_FIELDS) :]
    if rest and rest[0].startswith("["):
        with contextlib.suppress(*_DECODE_ERRORS):
            rec["policies"] = _decode(rest[0])
    if len(rest) >= 6:
        rec["dest_service_namespace"], rec["dest_service_name"] = rest[3], rest[4]
        rec["dest_service_port"] = rest[5]
    return rec


class CalicoTextReader(JsonRecordReader):
    """Calico Enterprise flow logs in the space-delimited text form (file or syslog output).

    ``proto`` is numeric, ``reporter`` is ``out`` (source) or ``in`` (destination), ``-`` marks
    a field that is not logged or aggregated and a trailing ``*`` an aggregated name prefix.
    """

    name = "calico-text"
    title = "a Calico Enterprise text flow-log line"

    def looks_like(self, obj: Any) -> bool:
        return isinstance(obj, dict)

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        return calico_row(rec, self.name, file, row)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        file = str(path)
        self._check_text_shape(path)
        for first, lines, error in iter_line_chunks(path):
            for i, raw in enumerate(lines):
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                rec = text_record(line)
                if rec is None:
                    self.ledger.read += 1
                    self.ledger.skip(
                        file, first + i, "unknown-shape", "not 24 space-delimited fields"
                    )
                    continue
                self._record(rec, file, first + i)
                yield from self._drain()
            if error:
                self.ledger.read += 1
                self.ledger.skip(file, first + len(lines), "truncated-file", error)

    def _check_text_shape(self, path: Path) -> None:
        seen = 0
        for _, lines, _ in iter_line_chunks(path, chunk_bytes=65536):
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line or line.startswith("#"):
                    continue
                if text_record(line) is not None:
                    return
                seen += 1
                if seen >= _SHAPE_PROBE:
                    break
            break
        if seen:
            raise FlowFormatError(
                f"{path}: none of the first lines is a Calico text flow log "
                "(24 space-delimited fields); check the file or name its format with --format."
            )
