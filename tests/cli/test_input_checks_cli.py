"""Every command that reads flows goes through the same input checks: copies of one traffic in
several formats counted once (``ingest``, ``graph``, ``evaluate``, ``diff``, ``run``), several
clusters named, and ``--since``/``--until``/``--last`` with one meaning everywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _flowlogs import hubble_line

from recommender.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"
HUBBLE = str(SAMPLES / "hubble.jsonl.gz")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _json(capsys: pytest.CaptureFixture[str], *args: str, ok: tuple[int, ...] = (0,)) -> Any:
    status, out, err = _run(capsys, *args, "--json")
    assert status in ok, err
    return json.loads(out)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("policies")
    assert main([HUBBLE, "-o", str(out), "-q"]) == 0
    return out


def test_every_command_counts_copies_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policies: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sample_flows/ holds the same traffic as Hubble, Calico and canonical Parquet: each
    command gives what it gives for the Hubble file alone, and says what it left out."""
    every = str(SAMPLES)
    with caplog.at_level("WARNING", logger="recommender"):
        one = _json(capsys, "ingest", HUBBLE, "-o", str(tmp_path / "one.parquet"))
        both = _json(capsys, "ingest", every, "-o", str(tmp_path / "all.parquet"))
    assert both["rows"] == one["rows"] == one["ledger"]["used"] == both["ledger"]["used"]
    assert both["ledger"]["overlap_dropped"] > 0 and both["ledger"]["balanced"]
    assert len(both["ledger"]["warnings"]) == 2
    assert any("holds the same connections" in r.getMessage() for r in caplog.records)
    graph = [
        _json(capsys, "graph", flows, "-o", str(tmp_path / f"g{i}.json"))
        for i, flows in enumerate((HUBBLE, every))
    ]
    assert graph[0]["edges"] == graph[1]["edges"] and graph[0]["nodes"] == graph[1]["nodes"]
    judged = [_json(capsys, "evaluate", str(policies), flows) for flows in (HUBBLE, every)]
    for key in ("observed_connections", "allowed_connections", "observed_edges", "rules"):
        assert judged[0][key] == judged[1][key], key
    diffs = [
        _json(capsys, "diff", str(policies), str(policies), flows)["summary"]
        for flows in (HUBBLE, every)
    ]
    assert diffs[0] == diffs[1]


def test_ingest_prints_the_copies_in_the_ledger_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = _run(capsys, "ingest", str(SAMPLES), "-o", str(tmp_path / "f.parquet"))
    assert status == 0, err
    assert "overlap copies dropped: 5,341" in out


def _latest(path: Path) -> datetime:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    value = pc.max(pq.read_table(path, columns=["start_time"]).column("start_time")).as_py()
    assert isinstance(value, datetime)
    return value


def test_last_means_the_same_for_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policies: Path
) -> None:
    """--last 1h keeps the flows of the input's last hour: ingest writes exactly those, and
    graph, evaluate, diff and run on the whole input give what they give on that file."""
    whole, cut = tmp_path / "whole.parquet", tmp_path / "cut.parquet"
    assert _json(capsys, "ingest", HUBBLE, "-o", str(whole))["rows"] > 0
    kept = _json(capsys, "ingest", HUBBLE, "-o", str(cut), "--last", "1h")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    latest = _latest(whole)
    starts = pq.read_table(whole, columns=["start_time"]).column("start_time")
    inside = pc.sum(pc.greater_equal(starts, latest - timedelta(hours=1))).as_py()
    assert kept["rows"] == inside < pq.read_metadata(whole).num_rows
    ledger = kept["ledger"]
    assert ledger["outside_window"] == pq.read_metadata(whole).num_rows - inside
    assert ledger["balanced"]

    graphs = [
        _json(capsys, "graph", flows, "-o", str(tmp_path / f"g{i}.json"), *extra)
        for i, (flows, extra) in enumerate(((HUBBLE, ["--last", "1h"]), (str(cut), [])))
    ]
    assert graphs[0]["edges"] == graphs[1]["edges"]
    judged = [
        _json(capsys, "evaluate", str(policies), flows, *extra)
        for flows, extra in ((HUBBLE, ["--last", "1h"]), (str(cut), []))
    ]
    assert judged[0]["observed_connections"] == judged[1]["observed_connections"]
    whole_judged = _json(capsys, "evaluate", str(policies), HUBBLE)
    assert judged[0]["observed_connections"] < whole_judged["observed_connections"]
    diffs = [
        _json(capsys, "diff", str(policies), str(policies), flows, *extra)["summary"]
        for flows, extra in ((HUBBLE, ["--last", "1h"]), (str(cut), []))
    ]
    assert diffs[0] == diffs[1]
    # run: the same window (the report's first_seen is the first flow of the last hour)
    status, _, err = _run(capsys, HUBBLE, "--last", "1h", "-o", str(tmp_path / "run"), "-q")
    assert status == 0, err
    summary = json.loads((tmp_path / "run" / "report.json").read_text())["summary"]
    first = pc.min(pq.read_table(cut, columns=["start_time"]).column("start_time")).as_py()
    assert datetime.fromisoformat(summary["first_seen"]) == first


def test_since_and_until_on_evaluate_and_diff(
    capsys: pytest.CaptureFixture[str], policies: Path
) -> None:
    assert _json(capsys, "evaluate", str(policies), HUBBLE, "--since", "1000000h")[
        "observed_connections"
    ] == 3852
    nothing = _json(capsys, "evaluate", str(policies), HUBBLE, "--until", "2000-01-01T00:00:00Z")
    assert nothing["observed_connections"] == 0
    status, _, err = _run(capsys, "diff", str(policies), str(policies), HUBBLE, "--last", "1x")
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err


def test_two_clusters_reach_the_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A capture mixing two clusters: one warning line naming both with their rows, in the
    report's input section, report.json and the verdict's reasons."""
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    capture = tmp_path / "mesh.json"
    lines = [hubble_line(t0 + timedelta(seconds=i), 40000 + i, cluster="east",
                         node="east/worker-1") for i in range(3)]
    lines += [hubble_line(t0 + timedelta(seconds=i), 41000 + i, cluster="west",
                          node="west/worker-9", src="batch", dst="db", port=5432)
              for i in range(2)]
    capture.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    status, _, err = _run(capsys, str(capture), "-o", str(out))
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["ingest"]["clusters"] == {"east": 3, "west": 2}
    [warning] = report["ingest"]["warnings"]
    assert "the input mixes 2 clusters: east (3 rows), west (2 rows)" in warning
    assert "mixes 2 clusters: east (3 rows), west (2 rows)" in (out / "report.md").read_text()
    reasons = [r["text"] for r in report["verdict"]["reasons"]]
    assert any("mixes 2 clusters (east, west)" in r for r in reasons)
    ingest = _json(capsys, "ingest", str(capture), "-o", str(tmp_path / "x.parquet"))
    assert ingest["ledger"]["clusters"] == {"east": 3, "west": 2}


def test_holdout_reads_each_connection_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Held-out validation reads the kept rows, not the copies left out."""
    reports = []
    for name, flows in (("one", HUBBLE), ("all", str(SAMPLES))):
        status, _, err = _run(capsys, flows, "--holdout", "0.2", "-o", str(tmp_path / name), "-q")
        assert status == 0, err
        reports.append(json.loads((tmp_path / name / "report.json").read_text())["holdout"])
    assert reports[0] == reports[1]


@pytest.mark.parametrize("same_pods", [False, True])
def test_the_parquet_scan_path_names_the_clusters_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    same_pods: bool,
) -> None:
    """A canonical Parquet file is scanned by DuckDB, not streamed: its clusters and far-apart
    windows are still told, with the same rows as the stream gives; also when one pod name is
    in both clusters (then the labels are read once more)."""
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    capture = tmp_path / "mesh.json"
    west = {} if same_pods else {"src": "batch", "dst": "db", "port": 5432}
    lines = [hubble_line(t0 + timedelta(seconds=i), 40000 + i, cluster="east",
                         node="worker-1") for i in range(3)]
    lines += [hubble_line(t0 + timedelta(days=60, seconds=i), 41000 + i, cluster="west",
                          node="worker-9", **west)
              for i in range(2)]
    capture.write_text("\n".join(lines) + "\n")
    canonical = tmp_path / "mesh.parquet"
    assert main(["ingest", str(capture), "-o", str(canonical), "-q"]) == 0
    from recommender.aggregate import parquet_scan

    scans: list[Any] = []
    again: list[Any] = []
    counted, parts = parquet_scan._check_counts, parquet_scan.parquet_input_parts
    monkeypatch.setattr(parquet_scan, "_check_counts",
                        lambda *a: scans.append(counted(*a)) or scans[-1])
    monkeypatch.setattr(parquet_scan, "parquet_input_parts",
                        lambda paths: again.append(paths) or parts(paths))
    reports = []
    for name, flows in (("stream", capture), ("scan", canonical)):
        status, _, err = _run(capsys, str(flows), "-o", str(tmp_path / name), "-q")
        assert status == 0, err
        reports.append(json.loads((tmp_path / name / "report.json").read_text())["ingest"])
    for ingest in reports:
        assert ingest["clusters"] == {"east": 3, "west": 2}
        assert [w.split(":")[0] for w in ingest["warnings"]] == [
            "the flows fall in 2 windows far apart", "the input mixes 2 clusters"
        ]
    assert reports[0]["warnings"] == reports[1]["warnings"]
    assert len(scans) == 1  # the Parquet file went the DuckDB way
    assert (scans[0] is None) == same_pods and len(again) == same_pods
