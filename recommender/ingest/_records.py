"""The JSON machinery of the Calico-family readers: JSON lines, one JSON array,
``{"items": [...]}`` or an Elasticsearch search response (``hits.hits[]._source``), decoded with
msgspec; per-record errors go to the ledger, a file of the wrong shape as a whole raises
:class:`~recommender.errors.FlowFormatError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Final

import pyarrow as pa

from ..errors import FlowFormatError
from ._base import FlowReader
from ._common import DEFAULT_BATCH_ROWS, BadValue, BatchBuilder
from ._flowlog import (
    _DECODE_ERRORS,
    _RECORD_ERRORS,
    _SHAPE_PROBE,
    OUTCOME_NOTE,
    TRACE_NOTE,
    ReportMerger,
    Row,
    _decode,
    row_tuple,
)
from ._source import iter_line_chunks, open_decompressed

__all__ = ["JsonRecordReader"]


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
        note = row.get(OUTCOME_NOTE)
        if note is not None:
            self.ledger.unknown_outcome(note)
        trace = row.get(TRACE_NOTE)
        if trace is not None:
            self.ledger.malformed_trace(trace)

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
