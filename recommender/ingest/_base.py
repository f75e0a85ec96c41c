"""The reader contract: one stateful reader per format, fed every file of that format in turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from ._common import DEFAULT_BATCH_ROWS, BatchBuilder
from .ledger import IngestLedger

__all__ = ["FlowReader"]


class FlowReader:
    """Base class of the per-format readers.

    A reader is created once per run and format. :meth:`read` is called for each file of its
    format, in order, and yields record batches in the canonical schema; state that spans files
    (the other end's report of a connection, say, which another node wrote to another file) is
    kept on the instance and released by :meth:`finish`. Every record read is counted in
    ``ledger`` with exactly one outcome.
    """

    #: The ``--format`` name.
    name: ClassVar[str] = ""

    def __init__(self, ledger: IngestLedger, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.ledger = ledger
        self.builder = BatchBuilder(batch_rows)

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        """Yield the canonical batches of one file."""
        raise NotImplementedError

    def finish(self) -> Iterator[pa.RecordBatch]:
        """Yield whatever is still held back once every file has been read."""
        batch = self.builder.flush()
        if batch is not None:
            yield batch

    def _drain(self) -> Iterator[pa.RecordBatch]:
        """Yield a batch when one is full (call after adding rows)."""
        if self.builder.full:
            batch = self.builder.flush()
            if batch is not None:
                yield batch
