"""The canonical schema itself, as Parquet or CSV (as written by ``recommend ingest``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pyarrow as pa

from ..errors import FlowFormatError, SchemaError
from ._base import FlowReader
from ._source import is_stream, open_decompressed
from .schema import FLOW_SCHEMA, PROTOCOLS, VERDICTS, conform_table

__all__ = [
    "INVALID_DETAIL",
    "INVALID_REASON",
    "CsvReader",
    "ParquetReader",
    "reads_as_is",
    "valid_row_sql",
]

_KINDS = ("workload", "host", "remote-node", "external", "cluster-entity", "unknown")

#: The ledger's reason and detail for a canonical row with an impossible value (it is skipped).
INVALID_REASON: Final = "invalid-value"
INVALID_DETAIL: Final = "protocol, verdict, endpoint kind or port out of its value set"


def valid_row_sql() -> str:
    """A SQL (DuckDB) condition that is true exactly for the rows the readers here keep: the
    same value sets as :meth:`ParquetReader._checked`, a missing value counting as invalid for
    the protocol, verdict and endpoint kinds and as valid for the ports."""

    def one_of(column: str, values: tuple[str, ...]) -> str:
        listed = ", ".join(f"'{v}'" for v in values)
        return f"coalesce({column} IN ({listed}), false)"

    ports = " AND ".join(
        f"NOT coalesce({c} < 0 OR {c} > 65535, false)" for c in ("src_port", "dst_port")
    )
    return (
        f"({one_of('protocol', PROTOCOLS)} AND {one_of('verdict', VERDICTS)} AND "
        f"{one_of('src_kind', _KINDS)} AND {one_of('dst_kind', _KINDS)} AND {ports})"
    )


def reads_as_is(path: Path) -> bool:
    """Whether the Parquet file at ``path`` holds canonical columns with nothing to convert:
    every column of :data:`~recommender.ingest.schema.FLOW_SCHEMA` it has is of its canonical
    type, and every required one is there (what ``recommend ingest`` writes). Then other
    readers (DuckDB's) see the values :class:`ParquetReader` gives. False for anything else,
    an unreadable file included (:class:`ParquetReader` then reads it, or says what is wrong).
    """
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return False
    names = schema.names
    if len(set(names)) != len(names):
        return False
    for field in FLOW_SCHEMA:
        if field.name in names:
            if schema.field(field.name).type != field.type:
                return False
        elif not field.nullable:
            return False
    return True


class ParquetReader(FlowReader):
    """Canonical Parquet files, read one row group at a time."""

    name = "parquet"

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        if is_stream(path):  # Parquet needs random access: keep the stream in a file first
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory(prefix="recommender-") as folder:
                copy = Path(folder) / "stdin.parquet"
                with open_decompressed(path) as fh, copy.open("wb") as out:
                    shutil.copyfileobj(fh, out, 1 << 20)
                yield from self._read_file(copy, str(path))
            return
        yield from self._read_file(path, str(path))

    def _read_file(self, path: Path, name: str) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq  # here: importing the readers loads no more than they use

        try:
            # No pre-buffering: with it, pyarrow keeps every row group read so far (memory
            # grew with the file, 1 GB at 20M rows); without it, memory stays flat.
            parquet = pq.ParquetFile(path, pre_buffer=False)
            columns = [c for c in FLOW_SCHEMA.names if c in parquet.schema_arrow.names]
            batches = parquet.iter_batches(batch_size=self.builder.batch_rows, columns=columns)
            row = 0
            for batch in batches:
                yield self._checked(pa.Table.from_batches([batch]), Path(name), row)
                row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise FlowFormatError(f"{name}: not a readable Parquet file: {exc}") from None

    def _checked(self, table: pa.Table, path: Path, first_row: int) -> pa.RecordBatch:
        """Conform one chunk to the schema; rows with impossible values are skipped."""
        import pyarrow.compute as pc

        table = conform_table(table, origin=str(path))
        n = table.num_rows
        self.ledger.read += n
        bad = pc.invert(
            pc.and_(
                pc.and_(
                    pc.is_in(table["protocol"], value_set=pa.array(PROTOCOLS)),
                    pc.is_in(table["verdict"], value_set=pa.array(VERDICTS)),
                ),
                pc.and_(
                    pc.is_in(table["src_kind"], value_set=pa.array(_KINDS, pa.string())),
                    pc.is_in(table["dst_kind"], value_set=pa.array(_KINDS, pa.string())),
                ),
            )
        )
        bad = pc.fill_null(bad, True)
        for name in ("src_port", "dst_port"):
            out_of_range = pc.or_(pc.less(table[name], 0), pc.greater(table[name], 65535))
            bad = pc.or_(bad, pc.fill_null(out_of_range, False))
        bad_rows = pc.indices_nonzero(bad).to_pylist()
        for i in bad_rows:
            self.ledger.skip(str(path), first_row + i + 1, INVALID_REASON, INVALID_DETAIL)
        if bad_rows:
            table = table.filter(pc.invert(bad))
        # Provenance of re-read canonical rows stays that of the original input.
        self.ledger.used += table.num_rows
        if not table.num_rows:
            return pa.RecordBatch.from_pylist([], schema=FLOW_SCHEMA)
        return table.combine_chunks().to_batches(max_chunksize=n)[0]


class CsvReader(ParquetReader):
    """Canonical CSV files; map columns (labels) as JSON objects, list columns as JSON arrays."""

    name = "csv"

    def read(self, path: Path) -> Iterator[pa.RecordBatch]:
        import json

        text_types = {
            f.name: pa.string()
            for f in FLOW_SCHEMA
            if pa.types.is_map(f.type) or pa.types.is_list(f.type)
        }
        # Every column's type is fixed up front: the streaming reader infers types from the
        # first block only, so a column empty there (null type) would fail on the first value
        # in a later block. Whole numbers are read as float64 (a pandas-written "8080.0" too)
        # and cast exactly by conform_table; times keep their inferred type (zone or not).
        column_types = {
            f.name: pa.float64() if pa.types.is_integer(f.type) else f.type
            for f in FLOW_SCHEMA
            if not pa.types.is_timestamp(f.type)
        }
        column_types.update(text_types)
        import pyarrow.csv as pacsv

        try:
            with open_decompressed(path) as fh:
                reader = pacsv.open_csv(
                    fh,
                    read_options=pacsv.ReadOptions(block_size=1 << 22),
                    # An empty cell is a null; a quoted empty cell ("") the empty string.
                    convert_options=pacsv.ConvertOptions(
                        column_types=column_types,
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
                row = 0
                for batch in reader:
                    table = pa.Table.from_batches([batch])
                    for name in text_types:
                        if name not in table.column_names:
                            continue
                        target = FLOW_SCHEMA.field(name).type
                        values = []
                        for cell in table[name].to_pylist():
                            try:
                                parsed = json.loads(cell) if cell else None
                            except ValueError:
                                parsed = None
                            if pa.types.is_map(target) and isinstance(parsed, dict):
                                parsed = {str(k): str(v) for k, v in parsed.items()}
                            elif pa.types.is_list(target) and isinstance(parsed, list):
                                parsed = [str(v) for v in parsed]
                            else:
                                parsed = None
                            values.append(parsed)
                        idx = table.column_names.index(name)
                        table = table.set_column(idx, name, pa.array(values, type=target))
                    yield self._checked(table, path, row)
                    row += batch.num_rows
        except SchemaError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise FlowFormatError(f"{path}: not a readable canonical CSV file: {exc}") from None
