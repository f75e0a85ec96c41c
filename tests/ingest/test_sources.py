"""Finding and opening flow files: folders, globs, compression, line endings, format choice."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recommender import FORMATS, FlowSourceError, IngestLedger, detect_format, read_flows

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"

_HUBBLE_LINES: list[bytes] = []


def hubble_lines(n: int = 40) -> list[bytes]:
    """The first ``n`` events of the sample Hubble capture (plain JSON lines, no terminator)."""
    if not _HUBBLE_LINES:
        with gzip.open(SAMPLES / "hubble.jsonl.gz", "rb") as fh:
            for _ in range(200):
                _HUBBLE_LINES.append(fh.readline().rstrip(b"\n"))
    return _HUBBLE_LINES[:n]


def write_lines(path: Path, lines: list[bytes], eol: bytes = b"\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(eol.join(lines) + eol)
    return path


def without_provenance(table: pa.Table) -> pa.Table:
    """The rows without the columns naming the input file (and without schema metadata)."""
    return table.drop_columns(["source_file"]).replace_schema_metadata(None)


def one_line(message: str) -> bool:
    return "\n" not in message.strip()


@pytest.fixture
def flow_folder(tmp_path: Path) -> Path:
    """A folder of Hubble files, nested, with hidden entries and files that are no flow log."""
    lines = hubble_lines(60)
    folder = tmp_path / "flows"
    write_lines(folder / "b" / "late.json", lines[40:])
    write_lines(folder / "a.log", lines[:20])
    write_lines(folder / "a" / "mid.jsonl", lines[20:40])
    write_lines(folder / ".hidden.json", lines[:20])  # hidden file: not read, not reported
    write_lines(folder / ".cache" / "old.json", lines[:20])  # hidden folder: likewise
    (folder / "README.txt").write_text("Flows captured on kind-worker, 5 January.\n")
    (folder / "empty.json").write_bytes(b"")
    return folder


def test_folder_is_read_recursively_in_sorted_order(flow_folder: Path) -> None:
    ledger = IngestLedger()
    table = read_flows(flow_folder, ledger=ledger)

    read_order = pc.unique(table["source_file"]).to_pylist()
    expected = [str(flow_folder / "a" / "mid.jsonl"), str(flow_folder / "a.log"),
                str(flow_folder / "b" / "late.json")]
    assert read_order == sorted(expected, key=lambda s: Path(s).parts)
    assert sorted(ledger.files) == sorted(expected)
    # Every event of the three files is accounted for, nothing from the hidden copies.
    assert ledger.read == 60
    assert ledger.balanced


def test_hidden_entries_are_neither_read_nor_reported(flow_folder: Path) -> None:
    ledger = IngestLedger()
    read_flows(flow_folder, ledger=ledger)
    everything = list(ledger.files) + list(ledger.ignored_files)
    assert not any("/." in name for name in everything), everything


def test_non_flow_files_in_a_folder_are_passed_over_and_named(flow_folder: Path) -> None:
    ledger = IngestLedger()
    table = read_flows(flow_folder, ledger=ledger)
    assert table.num_rows > 0
    assert sorted(ledger.ignored_files) == [
        str(flow_folder / "README.txt"),
        str(flow_folder / "empty.json"),
    ]
    assert "empty" in ledger.ignored_files[str(flow_folder / "empty.json")]
    # ... and the list travels with the table.
    assert str(flow_folder / "README.txt") in table.schema.metadata[b"recommender.ledger"].decode()


def test_a_folder_of_only_non_flow_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here\n")
    with pytest.raises(FlowSourceError, match="known format"):
        read_flows(tmp_path)


def test_a_non_flow_file_named_directly_is_an_error_naming_it(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("to do: capture flows on kind-worker2\n")
    with pytest.raises(FlowSourceError) as info:
        read_flows([notes])
    assert str(notes) in str(info.value)
    assert "--format" in str(info.value)
    assert one_line(str(info.value))


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "flows" / "h.json", hubble_lines(20))
    once = read_flows(path)
    ledger = IngestLedger()
    twice = read_flows([path, tmp_path / "flows", str(path)], ledger=ledger)
    assert twice.num_rows == once.num_rows
    assert ledger.read == 20


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.json", "no such file or folder"),
        ("*.nothing", "matches no file"),
    ],
)
def test_missing_paths_are_one_line_errors_naming_them(
    tmp_path: Path, name: str, expected: str
) -> None:
    write_lines(tmp_path / "real.json", hubble_lines(4))
    target = str(tmp_path / name)
    with pytest.raises(FlowSourceError) as info:
        read_flows([tmp_path / "real.json", target])
    message = str(info.value)
    assert target in message
    assert expected in message
    assert one_line(message)


def test_an_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "flows.json"
    empty.write_bytes(b"")
    with pytest.raises(FlowSourceError) as info:
        read_flows(empty)
    assert str(empty) in str(info.value)
    assert "empty" in str(info.value)
    assert one_line(str(info.value))


def test_an_empty_gzip_file_is_an_error_too(tmp_path: Path) -> None:
    empty = tmp_path / "flows.json.gz"
    empty.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(FlowSourceError, match="empty"):
        read_flows(empty)


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FlowSourceError, match="no files"):
        read_flows(tmp_path / "nothing")


def test_glob_patterns_expand_sorted_and_recursively(tmp_path: Path) -> None:
    lines = hubble_lines(30)
    write_lines(tmp_path / "node-b.json", lines[10:20])
    write_lines(tmp_path / "node-a.json", lines[:10])
    write_lines(tmp_path / "deep" / "node-c.json", lines[20:])
    (tmp_path / "node-a.txt").write_text("not matched by the pattern\n")

    ledger = IngestLedger()
    table = read_flows(str(tmp_path / "node-*.json"), ledger=ledger)
    assert pc.unique(table["source_file"]).to_pylist() == [
        str(tmp_path / "node-a.json"),
        str(tmp_path / "node-b.json"),
    ]
    assert ledger.read == 20

    everything = read_flows(str(tmp_path / "**" / "*.json"))
    assert len(pc.unique(everything["source_file"])) == 3


def test_gzip_and_zstd_are_detected_by_magic_bytes_not_by_name(tmp_path: Path) -> None:
    lines = hubble_lines(40)
    plain = write_lines(tmp_path / "plain.json", lines)
    gz = tmp_path / "capture.parquet"  # a misleading extension
    gz.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    zst = tmp_path / "capture.log"
    with pa.output_stream(str(zst), compression="zstd") as out:
        out.write(b"\n".join(lines) + b"\n")
    assert zst.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"

    expected = read_flows(plain)
    assert expected.num_rows > 0
    for path in (gz, zst):
        assert detect_format(path) == "hubble"
        got = read_flows(path)
        assert without_provenance(got).equals(without_provenance(expected)), path


def test_crlf_line_endings_read_like_lf(tmp_path: Path) -> None:
    lines = hubble_lines(40)
    lf = read_flows(write_lines(tmp_path / "lf.json", lines))
    ledger = IngestLedger()
    crlf = read_flows(write_lines(tmp_path / "crlf.json", lines, eol=b"\r\n"), ledger=ledger)
    assert without_provenance(crlf).equals(without_provenance(lf))
    assert ledger.skipped_total == 0


def test_crlf_gzip_with_no_final_newline(tmp_path: Path) -> None:
    lines = hubble_lines(40)
    lf = read_flows(write_lines(tmp_path / "lf.json", lines))
    path = tmp_path / "crlf.json.gz"
    path.write_bytes(gzip.compress(b"\r\n".join(lines)))
    assert without_provenance(read_flows(path)).equals(without_provenance(lf))


def test_format_override_reads_a_file_detection_would_refuse(tmp_path: Path) -> None:
    lines = hubble_lines(20)
    # A leading line that is no JSON record hides the format from detection.
    path = write_lines(tmp_path / "export.txt", [b"hubble observe --since 1h -o json", *lines])
    with pytest.raises(FlowSourceError):
        read_flows(path)

    ledger = IngestLedger()
    table = read_flows(path, format="hubble", ledger=ledger)
    plain = read_flows(write_lines(tmp_path / "plain.json", lines))
    # The same rows; each one's line number is one more (the command line came first).
    assert without_provenance(table.drop_columns(["source_row"])).equals(
        without_provenance(plain.drop_columns(["source_row"]))
    )
    assert pc.subtract(table["source_row"], plain["source_row"]).unique().to_pylist() == [1]
    assert ledger.files[str(path)]["format"] == "hubble"
    assert ledger.skipped["malformed-json"] == 1  # the command line, counted, not fatal


def test_format_override_applies_to_files_in_folders_too(flow_folder: Path) -> None:
    ledger = IngestLedger()
    read_flows(flow_folder, format="hubble", ledger=ledger)
    # Nothing is passed over: every file is read as Hubble, the README's line is skipped.
    assert not ledger.ignored_files
    assert ledger.files[str(flow_folder / "README.txt")]["format"] == "hubble"
    assert ledger.balanced


def test_unknown_format_name_lists_the_formats(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "h.json", hubble_lines(4))
    with pytest.raises(FlowSourceError) as info:
        read_flows(path, format="cilium")
    message = str(info.value)
    assert "'cilium'" in message
    for name in FORMATS:
        assert name in message
    assert one_line(message)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("flows.parquet", "parquet"), ("hubble.jsonl.gz", "hubble"), ("calico.jsonl.gz", "calico")],
)
def test_detect_format_of_the_sample_files(name: str, fmt: str) -> None:
    assert detect_format(SAMPLES / name) == fmt
    assert fmt in FORMATS


def test_detect_format_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(FlowSourceError, match="not a flow log"):
        detect_format(path)
