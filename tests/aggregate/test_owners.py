"""Owner resolution (issue 21, part 4): a Job run, a ReplicaSet or a run-named pod prefix is
written for its controller; names that only look similar are left alone."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from conftest import T0, flow_row, make_table

from recommender.aggregate.edges import aggregate_edges
from recommender.aggregate.owners import CRONJOB_MINUTES_RANGE, resolve_batch_owners, resolve_owner


@pytest.mark.parametrize(
    ("name", "kind", "owner"),
    [
        ("nightly-report-29383920", "Job", ("nightly-report", "CronJob")),
        ("nightly-report-1767261600", "Job", ("nightly-report", "CronJob")),
        ("db-migrate", "Job", ("db-migrate", "Job")),
        ("web-5d8f7c9b6", "ReplicaSet", ("web", "Deployment")),
        ("legacy-rs", "ReplicaSet", ("legacy-rs", "ReplicaSet")),
        ("nightly-report-29383920", "prefix", ("nightly-report", "CronJob")),
        ("nightly-report-29383920", None, ("nightly-report", "CronJob")),
        ("nightly-report-29383920", "Pod", ("nightly-report", "CronJob")),
        # A date in a name is not a schedule (20240101 minutes is 2008).
        ("build-20240101", "prefix", ("build-20240101", "prefix")),
        # A Deployment's or StatefulSet's name is final, digits or not.
        ("report-29383920", "Deployment", ("report-29383920", "Deployment")),
        ("kafka-29383920", "StatefulSet", ("kafka-29383920", "StatefulSet")),
        ("nightly-report", "CronJob", ("nightly-report", "CronJob")),
        ("db-0", "prefix", ("db", "StatefulSet")),
        ("kafka-12", "prefix", ("kafka", "StatefulSet")),
        ("db-0", "Pod", ("db-0", "Pod")),  # a bare Pod's name is its own
        ("db-01", "prefix", ("db-01", "prefix")),  # ordinals have no leading zero
        (None, "Job", (None, "Job")),
    ],
)
def test_resolve_owner(name, kind, owner):
    assert resolve_owner(name, kind) == owner
    assert resolve_owner(*owner) == owner  # idempotent


def test_minutes_range_is_2015_to_2100():
    low, high = CRONJOB_MINUTES_RANGE
    assert (low, high) == (23667840, 68374080)


def test_batch_only_touches_workload_columns():
    table = make_table(
        [
            flow_row(
                src_namespace="shop",
                src_workload="nightly-report-29383920",
                src_workload_kind="Job",
                src_pod="nightly-report-29383920-xk2pq",
                dst_namespace="shop",
                dst_workload="db",
                dst_workload_kind="StatefulSet",
                dst_pod="db-0",
                dst_port=5432,
            ),
            flow_row(src_namespace="shop", src_workload=None, src_pod="x", dst_workload=None),
        ]
    )
    batch = table.to_batches()[0]
    out = resolve_batch_owners(batch)
    assert out.column("src_workload").to_pylist() == ["nightly-report", None]
    assert out.column("src_workload_kind").to_pylist() == ["CronJob", None]
    assert out.column("src_pod").to_pylist() == ["nightly-report-29383920-xk2pq", "x"]
    assert out.column("dst_workload").to_pylist() == ["db", None]
    assert out.schema == batch.schema
    assert resolve_batch_owners(out).equals(out)


def test_runs_of_one_cronjob_are_one_edge():
    """Two days' Jobs of a CronJob, one written by Hubble (Job kind), one by a reader that only
    knew the pod-name prefix: one source endpoint, the CronJob."""
    rows = [
        flow_row(
            src_namespace="shop",
            src_workload=f"nightly-report-{minutes}",
            src_workload_kind=kind,
            src_labels={"app": "nightly-report", "job-name": f"nightly-report-{minutes}"},
            dst_namespace="shop",
            dst_workload="db",
            dst_port=5432,
        )
        for minutes, kind in ((29383920, "Job"), (29385360, "prefix"))
    ]
    tables = aggregate_edges(make_table(rows))
    assert tables.edges.column("src_id").to_pylist() == ["nightly-report"]
    assert tables.edges.column("connections").to_pylist() == [2]
    assert tables.edges.column("src_workload_kind").to_pylist() == ["CronJob"]
    labels = tables.workload_labels.filter(
        pa.compute.equal(tables.workload_labels["namespace"], "shop")
    )
    assert set(labels.column("workload").to_pylist()) == {"nightly-report", "db"}


def test_canonical_parquet_scanned_by_duckdb_resolves_owners_too(tmp_path):
    """Canonical Parquet is aggregated by DuckDB's own reader (no Arrow batches): its Job runs
    and ReplicaSets reach the same owners, and the same policies, as the streamed table."""
    import pyarrow.parquet as pq

    from recommender import recommend
    from recommender.aggregate import parquet_scan

    rows = [
        flow_row(
            src_namespace="shop",
            src_workload=f"nightly-report-{minutes}",
            src_workload_kind="Job",
            src_pod=f"nightly-report-{minutes}-xk2pq",
            src_labels={"app": "nightly-report", "job-name": f"nightly-report-{minutes}"},
            dst_namespace="shop",
            dst_workload="web-5d8f7c9b6",
            dst_workload_kind="ReplicaSet",
            dst_pod="web-5d8f7c9b6-b7mzt",
            dst_labels={"app": "web", "pod-template-hash": "5d8f7c9b6"},
            dst_port=8080,
            start_time=T0 + minutes_delta(i),
            end_time=T0 + minutes_delta(i),
        )
        for i, minutes in enumerate((29383920, 29385360))
    ]
    table = make_table(rows)
    path = tmp_path / "flows.parquet"
    pq.write_table(table, path)
    assert parquet_scan.scannable_parquet([(path, "parquet")]) is not None
    streamed = recommend(table)
    scanned = recommend(path)
    names = sorted(p.name for p in scanned.policy_set.policies)
    assert names == ["allow-nightly-report", "allow-web", "default-deny"]
    assert scanned.to_yaml() == streamed.to_yaml()


def minutes_delta(n: int) -> timedelta:
    return timedelta(minutes=n)
