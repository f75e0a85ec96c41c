"""Writing the canonical table to Parquet, streaming, with an atomic rename at the end."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .ledger import IngestLedger
from .schema import FLOW_SCHEMA

__all__ = ["ROW_GROUP_ROWS", "write_flows_parquet"]

#: Schema metadata key of the ingest ledger (JSON).
LEDGER_KEY = "recommender.ledger"

#: Rows per Parquet row group: large enough for fast scans, small enough for bounded memory.
ROW_GROUP_ROWS = 131072


def write_flows_parquet(
    batches: Iterable[pa.RecordBatch],
    output: str | os.PathLike[str],
    *,
    ledger: IngestLedger | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Write canonical batches to a zstd-compressed Parquet file; return the row count.

    The file appears only when complete (written beside it, then renamed). The schema metadata
    carries ``recommender.schema_version`` and, when ``ledger`` is given, the ingest ledger.
    """
    target = Path(output)
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give a file name such as flows.parquet.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{parent}: the output folder does not exist.")
    # Not tempfile.mkstemp: its file is private (0600) and the rename would keep that mode;
    # the output gets the usual mode (0666 less the umask) like any file the user writes.
    while True:
        tmp_name = str(parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"{target}: cannot be written: {exc.strerror or exc}.") from None
        os.close(fd)
        break
    rows = 0
    try:
        schema = FLOW_SCHEMA
        with pq.ParquetWriter(tmp_name, schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for batch in batches:
                pending.append(batch)
                pending_rows += batch.num_rows
                rows += batch.num_rows
                if on_batch is not None:
                    on_batch(batch.num_rows)
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(
                        pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS
                    )
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(
                    pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS
                )
            if ledger is not None:
                # The ledger is complete only now. Readers take the schema metadata from the
                # stored Arrow schema (ARROW:schema), not from the file's other keys: store it
                # again with the ledger so that pq.read_table(...).schema.metadata has it.
                text = json.dumps(ledger.to_dict(), sort_keys=True)
                final = schema.with_metadata({**(schema.metadata or {}), LEDGER_KEY: text})
                stored = base64.b64encode(final.serialize().to_pybytes()).decode("ascii")
                writer.add_key_value_metadata({LEDGER_KEY: text, "ARROW:schema": stored})
        os.replace(tmp_name, target)
    except OSError as exc:
        raise InputError(f"{target}: cannot be written: {exc.strerror or exc}.") from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return rows


#: What ``recommend ingest -o FILE`` writes, by the file's extension.
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


def output_format(output: str | os.PathLike[str]) -> str:
    """The format the extension of ``output`` asks for (``parquet``, ``csv``, ``jsonl``).

    Raises
    ------
    InputError
        For any other extension.
    """
    suffix = Path(output).suffix.lower()
    found = OUTPUT_FORMATS.get(suffix)
    if found is None:
        raise InputError(
            f"{output}: the extension {suffix or '(none)'} names no output format; use .parquet "
            "(canonical Parquet), .csv (canonical CSV) or .jsonl (canonical rows as JSON lines)."
        )
    return found


def _text_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Map and list columns as JSON text (the canonical CSV's cells)."""
    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_map(field.type) or pa.types.is_list(field.type):
            values = [
                None if v is None else json.dumps(dict(v) if pa.types.is_map(field.type) else v,
                                                  sort_keys=True)
                for v in column.to_pylist()
            ]
            columns.append(pa.array(values, pa.string()))
        else:
            columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def convert_parquet(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Write the canonical Parquet file ``source`` as ``output`` in the format its extension
    names (:func:`output_format`), atomically (a hidden file beside it, then a rename)."""
    import pyarrow.csv as pacsv

    fmt = output_format(output)
    target = Path(output)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        parquet = pq.ParquetFile(source)
        if fmt == "parquet":
            os.replace(source, tmp)
        elif fmt == "csv":
            writer = None
            with tmp.open("wb") as sink:
                for batch in parquet.iter_batches(batch_size=65536):
                    text = _text_columns(batch)
                    if writer is None:
                        writer = pacsv.CSVWriter(sink, text.schema)
                    writer.write_batch(text)
                if writer is None:
                    text = _text_columns(
                        pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
                    )
                    writer = pacsv.CSVWriter(sink, text.schema)
                writer.close()
        else:
            with tmp.open("w", encoding="utf-8") as sink:
                for batch in parquet.iter_batches(batch_size=65536):
                    maps = [f.name for f in batch.schema if pa.types.is_map(f.type)]
                    for row in batch.to_pylist():
                        for name in maps:
                            if row[name] is not None:
                                row[name] = dict(row[name])
                        sink.write(json.dumps(row, sort_keys=True, default=_json_default))
                        sink.write("\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"{target}: cannot be written: {exc.strerror or exc}.") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if isoformat is not None else str(value)
