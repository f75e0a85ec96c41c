"""User mistakes exit 2 with one ``error:`` line saying what to do next, never a traceback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recommender.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _usage_error(status: int, out: str, err: str, *needles: str) -> None:
    assert status == 2, (out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err and "bug" not in err
    for needle in needles:
        assert needle in err, err


def test_csv_without_the_flow_columns_names_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    status, out, err = _run(capsys, str(path), "-f", "csv", "-o", str(tmp_path / "out"))
    _usage_error(status, out, err, "missing", "dst_kind", "verdict", "docs/flow-schema.md")
    assert not (tmp_path / "out").exists()


def test_parquet_without_the_flow_columns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = pq.read_table(SAMPLES / "flows.parquet").drop_columns(["verdict", "protocol"])
    pq.write_table(table, tmp_path / "x.parquet")
    status, out, err = _run(capsys, "ingest", str(tmp_path / "x.parquet"), "-o",
                            str(tmp_path / "y.parquet"))
    _usage_error(status, out, err, "protocol", "verdict")


@pytest.mark.parametrize("flows", ["flows.parquet", "hubble.jsonl.gz", "."])
def test_swapped_policies_and_flows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flows: str
) -> None:
    status, _, _ = _run(capsys, str(SAMPLES / "flows.parquet"), "-o", str(tmp_path / "pol"))
    assert status == 0
    status, out, err = _run(capsys, "evaluate", str(SAMPLES / flows), str(tmp_path / "pol"))
    _usage_error(status, out, err, "did you swap POLICIES and FLOWS?")
    status, out, err = _run(
        capsys, "diff", str(tmp_path / "pol"), str(SAMPLES / flows), str(tmp_path / "pol")
    )
    _usage_error(status, out, err, "did you swap POLICIES and FLOWS?")


def test_policies_and_flows_in_order_give_no_swap_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\n"
    )
    status, out, err = _run(capsys, "evaluate", str(tmp_path), str(SAMPLES / "flows.parquet"))
    _usage_error(status, out, err, "metadata.name")
    assert "swap" not in err


@pytest.mark.parametrize(("typo", "command"), [("evaluat", "evaluate"), ("ingets", "ingest"),
                                               ("grpah", "graph")])
def test_sub_command_typo(capsys: pytest.CaptureFixture[str], typo: str, command: str) -> None:
    status, out, err = _run(capsys, typo, "x")
    _usage_error(status, out, err, f"did you mean {command}?")


def test_a_file_named_like_a_command_is_still_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("evaluat").write_bytes((SAMPLES / "flows.parquet").read_bytes())
    status, out, err = _run(capsys, "evaluat", "--dry-run")
    assert status == 0, err
    assert "NetworkPolicy" in out


def test_object_store_url_without_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capsys, "s3://bucket/flows/")
    _usage_error(status, out, err, "--engine dask")
    import importlib.util

    if importlib.util.find_spec("s3fs") is None:
        assert "pip install 'recommender[dask]' s3fs" in err


def test_truncated_gzip_keeps_the_complete_records(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A small gzip file cut short: the complete lines are used, the rest counted as
    truncated in the ledger (it used to keep nothing)."""
    data = (SAMPLES / "calico.jsonl.gz").read_bytes()
    whole = gzip.decompress(data).splitlines()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[:30000])
    status, out, err = _run(capsys, "ingest", str(cut), "-o", str(tmp_path / "x.parquet"),
                            "--json")
    assert status == 0, err
    import json

    ledger = json.loads(out)["ledger"]
    assert ledger["skipped"] == {"truncated-file": 1}
    assert 500 < ledger["read"] - 1 < len(whole)
    assert ledger["used"] > 0
    # every complete line was read: the records read are exactly the lines decompressible
    import zlib

    partial = zlib.decompressobj(31).decompress(data[:30000])
    assert ledger["read"] - 1 == partial.count(b"\n")


# --- durations ------------------------------------------------------------------------------


def test_since_accepts_durations_and_huge_ones(capsys: pytest.CaptureFixture[str]) -> None:
    flows = str(SAMPLES / "flows.parquet")
    status, everything, err = _run(capsys, flows, "--dry-run")
    assert status == 0, err
    status, out, err = _run(capsys, flows, "--since", "1000000h", "--dry-run")
    assert status == 0, err
    assert out == everything  # reaches back before the first flow
    status, out, err = _run(capsys, flows, "--since", "30m", "--dry-run")
    assert status == 0, err
    assert "kind: NetworkPolicy" not in out or out != everything  # the sample is older


def test_bad_duration_says_how_to_write_one(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capsys, str(SAMPLES / "flows.parquet"), "--since", "yesterday")
    _usage_error(status, out, err, "ISO 8601", "30m")
    status, out, err = _run(capsys, str(SAMPLES / "flows.parquet"), "--last", "5")
    _usage_error(status, out, err, "30m, 6h, 2d")


def test_last_takes_the_latest_part_of_the_inputs_window(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    hubble = str(SAMPLES / "hubble.jsonl.gz")
    status, _, err = _run(capsys, hubble, "--last", "10m", "-o", str(tmp_path / "last"))
    assert status == 0, err
    status, _, err = _run(capsys, hubble, "-o", str(tmp_path / "all"))
    assert status == 0, err
    last = json.loads((tmp_path / "last" / "report.json").read_text())["summary"]
    whole = json.loads((tmp_path / "all" / "report.json").read_text())["summary"]
    assert last["last_seen"] == whole["last_seen"]
    assert last["first_seen"] > whole["first_seen"]
    from datetime import datetime, timedelta

    span = datetime.fromisoformat(last["last_seen"]) - datetime.fromisoformat(last["first_seen"])
    assert span <= timedelta(minutes=10)
    assert last["rules"] <= whole["rules"]


def test_parse_duration_units() -> None:
    from datetime import timedelta

    from recommender.config import parse_duration

    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("1w") == timedelta(days=7)
    assert parse_duration("1.5h") == timedelta(minutes=90)


# --- ingest -o by extension, --json everywhere ------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_ingest_writes_what_the_extension_says(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    import json

    out = tmp_path / f"flows{suffix}"
    status, text, err = _run(capsys, "ingest", str(SAMPLES / "hubble.jsonl.gz"), "-o", str(out),
                             "--summary", "--json")
    assert status == 0, err
    payload = json.loads(text)
    assert payload["rows"] == 4314 and payload["profile"]
    data = out.read_bytes()
    if suffix == ".parquet":
        assert data[:4] == b"PAR1"
    elif suffix == ".csv":
        assert data.startswith(b'"') and b"src_kind" in data.splitlines()[0]
        status, text, err = _run(capsys, "ingest", str(out), "-f", "csv", "-o",
                                 str(tmp_path / "back.parquet"), "--json")
        assert status == 0, err
        assert json.loads(text)["rows"] == 4314
    else:
        lines = data.decode().splitlines()
        assert len(lines) == 4314
        assert {"src_kind", "dst_port", "start_time"} <= set(json.loads(lines[0]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ingest_refuses_an_unknown_extension(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = _run(capsys, "ingest", str(SAMPLES / "hubble.jsonl.gz"), "-o",
                            str(tmp_path / "flows.txt"))
    _usage_error(status, out, err, ".parquet", ".csv", ".jsonl")
    assert not (tmp_path / "flows.txt").exists()


def test_dry_run_json_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    status, out, err = _run(capsys, str(SAMPLES / "flows.parquet"), "--dry-run", "--json",
                            "-d", "kubernetes,cilium")
    assert status == 0, err
    payload = json.loads(out)
    assert payload["dry_run"] is True
    assert {m["kind"] for m in payload["manifests"]["kubernetes"]} == {"NetworkPolicy"}
    assert {m["kind"] for m in payload["manifests"]["cilium"]} == {"CiliumNetworkPolicy"}


# --- Typer conventions ------------------------------------------------------------------------


def test_short_help_and_usage_metavars(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "-h")
    assert status == 0 and "Usage: recommend" in out and "--install-completion" in out
    status, out, _ = _run(capsys, "evaluate", "-h")
    assert status == 0
    assert "Usage: recommend evaluate [OPTIONS] POLICIES FLOWS..." in out
    assert "{" not in out.splitlines()[0]
    status, out, err = _run(capsys, "diff")
    _usage_error(status, out, err, "'EXISTING'")


def test_quiet_and_verbose(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flows = str(SAMPLES / "flows.parquet")
    status, out, err = _run(capsys, "-q", flows, "-o", str(tmp_path / "q"))
    assert status == 0 and out == "" and err == ""
    assert (tmp_path / "q" / "report.json").is_file()
    status, out, err = _run(capsys, flows, "-o", str(tmp_path / "v"), "-v")
    assert status == 0 and "wrote" in out
    assert "stage" in err and "synthesize" in err and "total" in err
    status, out, err = _run(capsys, "-q", flows, "--dry-run")  # the data asked for is printed
    assert status == 0 and "kind: NetworkPolicy" in out


def test_one_error_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["run", "--bogus"], ["evaluate"], ["nothing-here.json"]):
        status, _, err = _run(capsys, *args)
        assert status == 2
        assert err.startswith("error: ") and "Error:" not in err


# --- input sanity ----------------------------------------------------------------------------


def test_overlapping_inputs_count_each_connection_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """sample_flows/ holds the same traffic three ways: the result is that of the most
    detailed copy (31 rules, as from the Hubble file alone), not the Calico copy's 36."""
    import json

    status, _, err = _run(capsys, str(SAMPLES / "hubble.jsonl.gz"), "-o", str(tmp_path / "one"))
    assert status == 0, err
    with caplog.at_level("WARNING", logger="recommender"):
        status, _, err = _run(capsys, str(SAMPLES), "-o", str(tmp_path / "all"))
    assert status == 0, err
    one = json.loads((tmp_path / "one" / "report.json").read_text())["summary"]
    every = json.loads((tmp_path / "all" / "report.json").read_text())["summary"]
    assert every["rules"] == one["rules"] == 31
    assert any("calico.jsonl.gz (calico) holds the same connections" in r.getMessage()
               for r in caplog.records)


def test_far_apart_windows_are_reported(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from recommender.ingest.overlap import OverlapCheck

    check = OverlapCheck()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name, when, fmt in (("a", start, "hubble"), ("b", start + timedelta(days=150), "calico")):
        check.observe(pa.RecordBatch.from_pylist([{
            "source_file": name, "source_format": fmt, "src_namespace": "x",
            "src_workload": "w", "dst_namespace": "y", "dst_workload": "v",
            "protocol": "TCP", "dst_port": 80, "start_time": when,
        }]))
    found = check.findings()
    assert found.dropped == ()  # same connections, but not in the same window: no copies
    assert len(found.warnings) == 1 and "150 days apart" in found.warnings[0]
