"""`--engine dask`: the same edges, policies and report as the embedded engine, on a real
``distributed.LocalCluster`` with two worker processes (one cluster for the module)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender import ConfigError, InputError, recommend
from recommender.aggregate.edges import aggregate_edges
from recommender.cli import main
from recommender.engine import dask_engine
from recommender.engine.dask_engine import dask_edges, plan_tasks
from recommender.ingest import iter_flow_batches
from recommender.report.model import report_json

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def parquet_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sample_flows/flows.parquet cut into three files, the first with 20 small row groups
    (several tasks for one file), plus a file that is no flow log (passed over)."""
    folder = tmp_path_factory.mktemp("parts")
    table = pq.read_table(SAMPLES / "flows.parquet")
    n = table.num_rows
    pq.write_table(table.slice(0, n // 2), folder / "a.parquet", row_group_size=100)
    pq.write_table(table.slice(n // 2, n // 4), folder / "b.parquet")
    pq.write_table(table.slice(n // 2 + n // 4), folder / "c.parquet")
    (folder / "README.txt").write_text("not flows\n")
    return folder


def _same_tables(a: Any, b: Any) -> None:
    for name in ("edges", "denied", "excluded", "workload_labels"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert (a.rows_used, a.first_seen, a.last_seen) == (b.rows_used, b.first_seen, b.last_seen)


def test_a_parquet_file_is_cut_into_row_group_tasks(parquet_parts: Path) -> None:
    tasks = plan_tasks(parquet_parts)
    a = [t for t in tasks if t.source.endswith("a.parquet")]
    assert [t.row_groups for t in a] == [(0, 8), (8, 16), (16, 20)]
    names = [Path(t.source).name for t in tasks]
    assert names == ["README.txt", "a.parquet", "a.parquet", "a.parquet", "b.parquet", "c.parquet"]
    assert tasks[0].format is None and not tasks[0].explicit  # detected (and passed over) there


def test_dask_gives_the_embedded_edge_tables(cluster: Any, parquet_parts: Path) -> None:
    tables, ledger, _ = dask_edges(parquet_parts, _config(), client=cluster)
    batches = iter_flow_batches(parquet_parts)
    embedded = aggregate_edges(batches, _config())
    _same_tables(tables, embedded)
    assert ledger.to_dict() == batches.ledger.to_dict()
    assert ledger.read == 4000 and ledger.balanced
    assert list(ledger.ignored_files) == [str(parquet_parts / "README.txt")]


def test_dask_with_a_time_window_and_thresholds(cluster: Any, parquet_parts: Path) -> None:
    table = pq.read_table(SAMPLES / "flows.parquet")
    mid = table["start_time"][table.num_rows // 2].as_py()
    config = _config(since=mid, min_connections=2, max_ephemeral_ports=1)
    tables, _, _ = dask_edges(parquet_parts, config, client=cluster)
    _same_tables(tables, aggregate_edges(table, config))
    assert tables.rows_used < table.num_rows


def test_recommend_on_dask_gives_byte_identical_policies_and_report(
    cluster: Any, parquet_parts: Path
) -> None:
    address = cluster.scheduler.address
    rows: list[int] = []
    on_dask = recommend(parquet_parts, engine="dask", scheduler=address, on_batch=rows.append)
    embedded = recommend(parquet_parts)
    assert on_dask.to_yaml() == embedded.to_yaml()
    assert report_json(on_dask.report) == report_json(embedded.report)
    assert sum(rows) == 4000 and len(rows) == 6  # one count per task
    assert on_dask.report["summary"]["policies"] > 5


def test_calico_json_files_on_dask(cluster: Any) -> None:
    path = SAMPLES / "calico.jsonl.gz"
    tables, ledger, _ = dask_edges([path], _config(), client=cluster)
    batches = iter_flow_batches(path)
    _same_tables(tables, aggregate_edges(batches, _config()))
    assert ledger.to_dict() == batches.ledger.to_dict()


def test_fsspec_uris_are_read_on_the_workers(cluster: Any, parquet_parts: Path) -> None:
    uri = f"local://{parquet_parts}"
    tasks = plan_tasks(uri)
    # Listed through fsspec (its canonical URIs), copied and read on the workers.
    assert [t.source for t in tasks][:1] == [f"file://{parquet_parts / 'README.txt'}"]
    assert {t.row_groups for t in tasks} == {None}
    tables, ledger, _ = dask_edges([uri], _config(), client=cluster)
    _same_tables(tables, aggregate_edges(iter_flow_batches(parquet_parts), _config()))
    names = [f"file://{parquet_parts / n}.parquet" for n in "abc"]
    assert sorted(ledger.files) == names
    assert ledger.read == 4000 and ledger.ignored_files.keys() == {tasks[0].source}


def test_cli_run_on_dask_writes_the_same_tree(
    cluster: Any, parquet_parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = cluster.scheduler.address
    a, b = tmp_path / "dask", tmp_path / "embedded"
    assert main([str(parquet_parts), "-o", str(a), "--engine", "dask", "--scheduler", address]) == 0
    assert main([str(parquet_parts), "-o", str(b), "--profile"]) == 0
    err = capsys.readouterr().err
    assert _tree(a) == _tree(b)
    for stage in ("read (ingest)", "aggregate", "synthesize", "render", "self-check", "write"):
        assert stage in err


def test_an_unknown_engine_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown engine 'spark'; choose one of dask, embedded"):
        recommend(SAMPLES / "flows.parquet", engine="spark")
    with pytest.raises(ConfigError, match="needs the Dask engine"):
        recommend(SAMPLES / "flows.parquet", scheduler="tcp://127.0.0.1:8786")
    assert main([str(SAMPLES / "flows.parquet"), "--engine", "spark", "--dry-run"]) == 2
    assert "unknown engine 'spark'" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_an_input_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", 1)
    with pytest.raises(InputError, match=re.escape("cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'")):
        recommend(SAMPLES / "flows.parquet", engine="dask", scheduler="tcp://127.0.0.1:9")
    args = [str(SAMPLES / "flows.parquet"), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"]
    assert main([*args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Dask scheduler") and "Traceback" not in err


def _config(**options: Any) -> Any:
    from recommender import RecommendConfig

    return RecommendConfig(**options)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_partials_of_any_split_merge_into_the_whole() -> None:
    """The algebra under both engines: partials of consecutive slices, merged in order, give
    exactly the aggregation of all rows (labels' first/last rows included)."""
    from recommender.aggregate.edges import finish_edges, merge_partials, partial_edges

    table = pq.read_table(SAMPLES / "flows.parquet")
    whole = aggregate_edges(table)
    for size in (1000, 4000):
        slices = [table.slice(i, size) for i in range(0, table.num_rows, size)]
        parts = [partial_edges(pa.Table.from_batches(s.to_batches(), s.schema)) for s in slices]
        _same_tables(finish_edges(merge_partials(parts)), whole)


def test_dask_names_clusters_and_far_apart_windows_as_embedded(
    cluster: Any, tmp_path: Path
) -> None:
    """A capture of two clusters, two months apart, split over two files: the Dask engine's
    ledger gives the embedded engine's clusters and warnings (docs/conventions.md)."""
    from datetime import UTC, datetime, timedelta

    from _flowlogs import hubble_line

    from recommender import IngestLedger, read_flows

    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    (tmp_path / "east.json").write_text("\n".join(
        hubble_line(t0 + timedelta(seconds=i), 40000 + i, cluster="east", node="w1")
        for i in range(3)) + "\n")
    (tmp_path / "west.json").write_text("\n".join(
        hubble_line(t0 + timedelta(days=60, seconds=i), 41000 + i, cluster="west",
                    node="west/w9", src="batch", dst="db", port=5432)
        for i in range(2)) + "\n")
    _, ledger, _ = dask_edges(tmp_path, _config(), client=cluster)
    embedded = IngestLedger()
    read_flows(tmp_path, ledger=embedded)
    assert ledger.clusters == embedded.clusters == {"east": 3, "west": 2}
    assert ledger.warnings == embedded.warnings and len(ledger.warnings) == 2
