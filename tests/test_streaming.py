"""The pipeline streams: files are aggregated batch by batch, never read into one table, with
the same edges, policies and report bytes as from a whole table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import recommender.ingest
from recommender import aggregate_edges, read_flows, recommend
from recommender.report.model import report_json

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_flows"


def test_aggregation_consumes_batches_one_at_a_time() -> None:
    table = read_flows(SAMPLES / "flows.parquet")
    alive = 0
    most = 0

    def one_shot() -> Iterator[pa.RecordBatch]:
        nonlocal alive, most
        for batch in table.to_batches(max_chunksize=500):
            alive += 1
            most = max(most, alive)
            yield batch
            alive -= 1  # resumed: the consumer asks for the next batch

    streamed = aggregate_edges(one_shot())
    whole = aggregate_edges(table)
    assert most == 1
    for name in ("edges", "denied", "excluded", "workload_labels"):
        assert getattr(streamed, name).equals(getattr(whole, name)), name
    assert streamed.rows_used == whole.rows_used == 4000


@pytest.mark.parametrize("name", ["flows.parquet", "calico.jsonl.gz"])
def test_files_are_streamed_with_the_same_report_as_a_table(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = SAMPLES / name
    table = read_flows(path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recommend() must not read the whole flow table")

    monkeypatch.setattr(recommender.ingest, "read_flows", refuse)
    streamed = recommend(path, holdout=0.3)
    whole = recommend(table, holdout=0.3)
    assert streamed.to_yaml() == whole.to_yaml()
    assert report_json(streamed.report) == report_json(whole.report)
    assert streamed.report["holdout"]["test"]["connection_rows"] > 0


def test_timings_name_every_stage(tmp_path: Path) -> None:
    rows: list[int] = []
    result = recommend(SAMPLES / "flows.parquet", on_batch=rows.append)
    assert sum(rows) == 4000
    stages = ["read", "aggregate", "synthesize", "render", "self_check", "report"]
    assert list(result.timings) == stages
    result.write(tmp_path)
    assert list(result.timings) == [*stages, "report_files", "write"]
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert "timings" not in result.report  # wall-clock time would break byte-identical reports


def test_the_collector_is_off_during_a_run_and_back_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cyclic collector would walk every object a run keeps (0.44 CPU s at 8,000
    workloads); it is off while the stages run, and as it was (state, thresholds) after."""
    import gc

    from recommender import pipeline

    seen: list[bool] = []
    real = pipeline.synthesize

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "synthesize", watching)
    before = gc.get_threshold()
    assert gc.isenabled()
    recommend(SAMPLES / "flows.parquet")
    assert seen == [False]
    assert gc.isenabled() and gc.get_threshold() == before
    gc.disable()
    try:  # a caller that keeps it off keeps it off
        recommend(SAMPLES / "flows.parquet")
        assert not gc.isenabled()
    finally:
        gc.enable()
