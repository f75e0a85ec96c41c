"""The canonical schema on disk: Parquet written by ``recommend ingest`` and CSV, both read back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import T0, flow_row, make_table

from recommender import (
    SCHEMA_VERSION,
    IngestLedger,
    InputError,
    SchemaError,
    iter_flow_batches,
    read_flows,
)
from recommender.ingest import _write
from recommender.ingest._write import write_flows_parquet
from recommender.ingest.schema import FLOW_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


def plain(table: pa.Table) -> pa.Table:
    """``table`` without schema metadata (the ledger differs between two reads)."""
    return table.replace_schema_metadata(None)


def ingest(source: Path, output: Path, **kwargs: Any) -> tuple[int, IngestLedger]:
    """What ``recommend ingest SOURCE -o OUTPUT`` does, through the library."""
    batches = iter_flow_batches(source, **kwargs)
    rows = write_flows_parquet(batches, output, ledger=batches.ledger)
    return rows, batches.ledger


@pytest.fixture(scope="module")
def hubble_ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, IngestLedger]:
    out = tmp_path_factory.mktemp("ingest") / "hubble.parquet"
    rows, ledger = ingest(SAMPLES / "hubble.jsonl.gz", out)
    return out, rows, ledger


# --- Parquet ------------------------------------------------------------------------------


def test_hubble_round_trip_through_parquet_keeps_every_row(hubble_ingested) -> None:
    out, rows, ledger = hubble_ingested
    direct = read_flows(SAMPLES / "hubble.jsonl.gz")
    assert rows == direct.num_rows == ledger.used > 0

    again = read_flows(out)
    assert again.schema.equals(FLOW_SCHEMA)
    # Same rows, same order, and provenance still names the Hubble capture, not the Parquet.
    assert plain(again).equals(plain(direct))
    assert set(again["source_format"].to_pylist()) == {"hubble"}


def test_parquet_is_zstd_compressed_and_carries_version_and_ledger(hubble_ingested) -> None:
    out, _, ledger = hubble_ingested
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups >= 1
    compressions = {
        meta.row_group(g).column(c).compression
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }
    assert compressions == {"ZSTD"}

    # In the schema metadata, as pyarrow, pandas and DuckDB users see it.
    schema_meta = pq.read_schema(out).metadata
    assert schema_meta[b"recommender.schema_version"].decode() == SCHEMA_VERSION
    stored = json.loads(schema_meta[b"recommender.ledger"])
    assert stored == json.loads(json.dumps(ledger.to_dict()))
    assert stored["read"] == 15310 and stored["balanced"]
    assert pq.read_table(out).schema.metadata[b"recommender.ledger"] == (
        schema_meta[b"recommender.ledger"]
    )


def test_large_inputs_are_split_into_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_write, "ROW_GROUP_ROWS", 1000)
    out = tmp_path / "flows.parquet"
    rows, _ = ingest(SAMPLES / "flows.parquet", out, batch_rows=300)
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(sizes) == rows == 4000
    assert len(sizes) >= 4
    assert max(sizes) <= 1000
    assert plain(read_flows(out)).equals(plain(read_flows(SAMPLES / "flows.parquet")))


def test_rereading_parquet_counts_every_row_as_used(hubble_ingested) -> None:
    out, rows, _ = hubble_ingested
    ledger = IngestLedger()
    read_flows(out, ledger=ledger)
    assert ledger.read == ledger.used == rows
    assert ledger.duplicate == ledger.reply == ledger.skipped_total == 0
    assert ledger.files[str(out)] == {"format": "parquet", "read": rows, "used": rows}


def test_written_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    ingest(SAMPLES / "flows.parquet", out)
    reference = tmp_path / "reference"
    reference.write_text("")  # a file made the ordinary way: 0666 less the umask
    assert out.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def _write_table(table: pa.Table, path: Path, **kwargs: Any) -> Path:
    pq.write_table(table, path, **kwargs)
    return path


def test_parquet_missing_a_required_column_is_a_schema_error(tmp_path: Path) -> None:
    table = make_table([flow_row(src_workload="a", dst_workload="b")]).drop_columns(["verdict"])
    path = _write_table(table, tmp_path / "flows.parquet")
    with pytest.raises(SchemaError) as info:
        read_flows(path)
    assert "verdict" in str(info.value)
    assert str(path) in str(info.value)


def test_parquet_missing_optional_columns_reads_them_as_null(tmp_path: Path) -> None:
    full = make_table([flow_row(src_workload="a", dst_workload="b", dst_port=80)])
    path = _write_table(full.drop_columns(["bytes", "http_path", "src_labels"]), tmp_path / "f.pq")
    got = read_flows(path)
    assert got.num_rows == 1
    assert got["bytes"].null_count == got["src_labels"].null_count == 1
    assert got["dst_port"].to_pylist() == [80]


def test_invalid_values_in_parquet_are_skipped_and_counted(tmp_path: Path) -> None:
    good = {"src_workload": "a", "dst_workload": "b", "dst_port": 8080}
    rows = [
        flow_row(**good),
        flow_row(**{**good, "protocol": "HTTP"}),
        flow_row(**good),
        flow_row(**{**good, "verdict": "maybe"}),
        flow_row(**{**good, "src_kind": "alien"}),
        flow_row(**{**good, "dst_port": 70000}),
        flow_row(**{**good, "src_port": -1}),
        flow_row(**good, start_time=T0 + timedelta(minutes=5)),
    ]
    path = _write_table(make_table(rows), tmp_path / "flows.parquet")
    ledger = IngestLedger()
    # Two rows per batch: the row numbers in the ledger must still be those of the file.
    table = pa.Table.from_batches(list(iter_flow_batches(path, batch_rows=2, ledger=ledger)))
    assert table.num_rows == 3
    assert ledger.read == 8
    assert ledger.used == 3
    assert dict(ledger.skipped) == {"invalid-value": 5}
    assert ledger.balanced
    assert [(e.file, e.row) for e in ledger.examples] == [(str(path), r) for r in (2, 4, 5, 6, 7)]
    assert set(table["protocol"].to_pylist()) == {"TCP"}


def test_a_file_that_is_not_parquet_inside_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(InputError, match=r"broken\.parquet"):
        read_flows(path)


# --- write_flows_parquet -------------------------------------------------------------------


def _failing_batches() -> Iterator[pa.RecordBatch]:
    yield make_table([flow_row(src_workload="a", dst_workload="b")]).to_batches()[0]
    raise RuntimeError("the input broke off")


def test_write_is_atomic_when_the_input_fails(tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    with pytest.raises(RuntimeError, match="broke off"):
        write_flows_parquet(_failing_batches(), out)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "flows.parquet"
    ingest(SAMPLES / "flows.parquet", out)
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        write_flows_parquet(_failing_batches(), out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["flows.parquet"]


def test_write_refuses_a_folder_as_output(tmp_path: Path) -> None:
    batches = make_table([flow_row()]).to_batches()
    with pytest.raises(InputError, match="folder"):
        write_flows_parquet(batches, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        write_flows_parquet(batches, tmp_path / "no" / "such" / "flows.parquet")
    assert list(tmp_path.iterdir()) == []


def test_write_of_no_rows_gives_a_readable_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert write_flows_parquet([], out) == 0
    assert pq.read_table(out).num_rows == 0
    assert pq.read_schema(out).metadata[b"recommender.schema_version"] == SCHEMA_VERSION.encode()


# --- CSV ----------------------------------------------------------------------------------


def to_canonical_csv(table: pa.Table, path: Path) -> Path:
    """Write a canonical table as CSV: label maps as JSON objects, lists as JSON arrays."""
    columns = []
    for field in FLOW_SCHEMA:
        column = table[field.name]
        if pa.types.is_map(field.type) or pa.types.is_list(field.type):
            as_json = [
                None
                if value is None
                else json.dumps(dict(value) if pa.types.is_map(field.type) else value)
                for value in column.to_pylist()
            ]
            column = pa.array(as_json, type=pa.string())
        columns.append(column)
    pacsv.write_csv(pa.table(columns, names=FLOW_SCHEMA.names), path)
    return path


def test_csv_round_trip_of_the_sample_flows(tmp_path: Path) -> None:
    original = read_flows(SAMPLES / "flows.parquet")
    path = to_canonical_csv(original, tmp_path / "flows.csv")
    ledger = IngestLedger()
    back = read_flows(path, ledger=ledger)
    assert ledger.files[str(path)]["format"] == "csv"
    assert ledger.read == ledger.used == original.num_rows
    assert plain(back).equals(plain(original))


def test_csv_keeps_nulls_empty_strings_labels_and_lists_apart(tmp_path: Path) -> None:
    original = make_table(
        [
            flow_row(src_workload="web", dst_workload="db", dst_port=5432,
                     dst_dns_names=["db.internal", "db"], policies=[]),
            flow_row(src_namespace="", src_labels={}, dst_kind="external", dst_ip="1.2.3.4",
                     http_path="", dst_port=None, bytes=None),
            flow_row(src_labels={"app": "a,b", "note": 'say "hi"'}, dst_labels=None,
                     drop_reason=None, is_reply=None, protocol="UDP", dst_port=53),
        ]
    )
    path = to_canonical_csv(original, tmp_path / "flows.csv")
    back = read_flows(path)
    for name in FLOW_SCHEMA.names:
        assert back[name].to_pylist() == original[name].to_pylist(), name
    assert plain(back).equals(original.replace_schema_metadata(None))


def test_csv_column_empty_in_the_first_block_reads_later_values(tmp_path: Path) -> None:
    """The CSV reader streams 4 MiB blocks: a column with no value in the first one (an
    external peer's namespace, say) must still take the values that come later."""
    header = "start_time,end_time,src_kind,dst_kind,protocol,verdict,connections,source_format," \
        "source_file,source_row,src_namespace,src_port,bytes\n"
    padding = "x" * 250
    lines = [header]
    n = 20_000  # about 5.5 MB
    for i in range(n):
        late = i >= n - 10
        lines.append(
            f"2026-01-05 09:00:00.000000Z,2026-01-05 09:00:01.000000Z,external,workload,TCP,"
            f"allowed,1,csv,{padding},{i + 1},{'shop' if late else ''},"
            f"{40000 + i if late else ''},{'12.0' if late else ''}\n"
        )
    path = tmp_path / "flows.csv"
    path.write_text("".join(lines))
    assert path.stat().st_size > 5 << 20
    table = read_flows(path)
    assert table.num_rows == n
    assert table["src_namespace"].to_pylist()[-10:] == ["shop"] * 10
    assert table["src_namespace"].null_count == n - 10
    assert table["src_port"].to_pylist()[-1] == 40000 + n - 1
    assert table["bytes"].to_pylist()[-1] == 12


def test_csv_missing_a_required_column_is_a_schema_error(tmp_path: Path) -> None:
    path = to_canonical_csv(make_table([flow_row()]), tmp_path / "flows.csv")
    header, *rest = path.read_text().splitlines()
    names = [n.strip('"') for n in header.split(",")]
    keep = [i for i, n in enumerate(names) if n != "source_row"]
    text = "\n".join(",".join(line.split(",")[i] for i in keep) for line in [header, *rest])
    # The JSON cells hold no commas here (one row, default labels absent), so the split is safe.
    path.write_text(text + "\n")
    with pytest.raises(SchemaError, match="source_row"):
        read_flows(path, format="csv")


def test_write_flows_parquet_of_csv_input_is_the_same_table(tmp_path: Path) -> None:
    original = read_flows(SAMPLES / "flows.parquet")
    csv_path = to_canonical_csv(original, tmp_path / "flows.csv")
    out = tmp_path / "flows.parquet"
    rows, ledger = ingest(csv_path, out)
    assert rows == 4000 and ledger.balanced
    assert plain(pq.read_table(out)).equals(plain(original))
    assert os.path.getsize(out) < os.path.getsize(csv_path)
