"""The job against a real S3 API on loopback (moto's server mode): date partitions read through
pyarrow's S3 client, outputs and state in a bucket, a pointer object flipped last."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from _jobdata import API_WEB, CRON_DB, WEB_DB, WEB_DNS, job_file, moto_s3, noon, parquet_bytes

from recommender.cli import main
from recommender.errors import ConfigError, StorageError
from recommender.job.runner import run_job
from recommender.job.storage import (
    StorageOptions,
    fetch,
    list_window,
    open_location,
    read_bytes,
    window_partitions,
)

D1 = date(2026, 1, 5)


@pytest.fixture(scope="module")
def s3():
    yield from moto_s3()


def put_day(s3, bucket: str, day: date, edges, name: str = "flows.parquet") -> str:
    key = f"hubble/date={day:%Y-%m-%d}/{name}"
    s3.client.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(day, edges))
    return key


def get(s3, bucket: str, key: str) -> bytes:
    return s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_window_partitions_and_patterns():
    assert window_partitions("%Y/%m/%d", D1, 2) == [
        (D1 - timedelta(days=1), "2026/01/04"), (D1, "2026/01/05")
    ]
    with pytest.raises(ConfigError):
        window_partitions("../%Y", D1, 1)
    with pytest.raises(ConfigError):
        open_location("gs://bucket/x")
    with pytest.raises(ConfigError):
        open_location("s3:///no-bucket")


def test_list_and_fetch_a_window_through_the_s3_client(s3, tmp_path):
    s3.client.create_bucket(Bucket="listing")
    put_day(s3, "listing", D1, [WEB_DB])
    put_day(s3, "listing", D1 - timedelta(days=3), [WEB_DB], "old.parquet")  # outside
    s3.client.put_object(Bucket="listing", Key=f"hubble/date={D1}/.partial", Body=b"x")
    s3.client.put_object(Bucket="listing", Key=f"hubble/date={D1}/sub/more.parquet", Body=b"y")
    loc = open_location("s3://listing/hubble", StorageOptions(endpoint_url=s3.url))
    files = list_window(loc, "date=%Y-%m-%d", D1, 2)  # D1-1 is missing: an empty day
    assert [p for p, _ in files] == [
        "listing/hubble/date=2026-01-05/flows.parquet",
        "listing/hubble/date=2026-01-05/sub/more.parquet",
    ]
    local = fetch(loc, [p for p, _ in files], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in local] == [
        "date=2026-01-05/flows.parquet", "date=2026-01-05/sub/more.parquet"
    ]
    assert local[1].read_bytes() == b"y"
    assert read_bytes(loc.child("nothing-here")) is None


def test_the_job_reads_s3_partitions_and_keeps_outputs_and_state_in_a_bucket(s3, tmp_path):
    s3.client.create_bucket(Bucket="flows")
    s3.client.create_bucket(Bucket="recs")
    first = put_day(s3, "flows", D1 - timedelta(days=1), [WEB_DB, CRON_DB])
    put_day(s3, "flows", D1, [WEB_DB, WEB_DNS])
    put_day(s3, "flows", D1 - timedelta(days=30), [API_WEB])  # outside the window
    config = job_file(tmp_path / "job.yaml", {
        "input": {"uri": "s3://flows/hubble", "window_days": 2},
        "output": {"uri": "s3://recs/prod", "keep_runs": 1},
        "storage": {"endpoint_url": s3.url},
        "work_dir": str(tmp_path / "work"),
    })
    one = run_job(config, as_of=noon(D1))
    assert one.files == 2
    run1 = f"prod/runs/{one.run_id}"
    assert one.output == f"s3://recs/{run1}"
    stored = keys(s3, "recs")
    assert f"{run1}/shop/allow-web.yaml" in stored and f"{run1}/shop/allow-cron.yaml" in stored
    assert {f"{run1}/state-edges.parquet", f"{run1}/report.json", "prod/current.json"} <= set(
        stored
    )
    pointer = json.loads(get(s3, "recs", "prod/current.json"))
    assert pointer["run"] == one.run_id and pointer["path"] == f"runs/{one.run_id}"
    report = json.loads(get(s3, "recs", f"{run1}/report.json"))
    assert f"s3://flows/{first}" in report["ingest"]["files"]  # object URIs, not scratch paths
    assert all(k.startswith("s3://flows/hubble/date=") for k in report["ingest"]["files"])
    assert list((tmp_path / "work").iterdir()) == []  # the scratch folder is cleaned up

    # The next night: cron -> db is out of the window, its rule comes from the state in S3.
    two = run_job(config, as_of=noon(D1 + timedelta(days=1)))
    assert two.files == 1 and two.changes["first_run"] is False
    assert two.changes["run"]["runs"] == 2
    stored = keys(s3, "recs")
    run2 = f"prod/runs/{two.run_id}"
    assert f"{run2}/shop/allow-cron.yaml" in stored
    assert not any(k.startswith(run1) for k in stored)  # keep_runs: 1
    assert two.changes["rules"]["added"] == [] and two.changes["rules"]["removed"] == []


def test_an_unwritable_bucket_exits_4_and_a_missing_window_exits_3(s3, tmp_path, capsys):
    s3.client.create_bucket(Bucket="flows4")
    put_day(s3, "flows4", D1, [WEB_DB])
    job = {
        "input": {"uri": "s3://flows4/hubble", "window_days": 1},
        "output": {"uri": "s3://no-such-bucket/prod"},
        "storage": {"endpoint_url": s3.url},
    }
    config = job_file(tmp_path / "job.yaml", job)
    assert main(["job", "--config", str(config), "--as-of", f"{D1}T12:00:00Z"]) == 4
    assert "no-such-bucket" in capsys.readouterr().err
    assert main(["job", "--config", str(config), "--as-of", "2027-01-01T00:00:00Z"]) == 3
    # A pointer object that names no run is refused (exit 2), not guessed around.
    s3.client.put_object(Bucket="flows4", Key="out/current.json", Body=b"{not json")
    job["output"]["uri"] = "s3://flows4/out"
    job_file(tmp_path / "job.yaml", job)
    capsys.readouterr()
    assert main(["job", "--config", str(config), "--as-of", f"{D1}T12:00:00Z"]) == 2
    assert "current.json does not name a run" in capsys.readouterr().err
    with pytest.raises(StorageError):
        fetch(open_location("s3://flows4/hubble", StorageOptions(endpoint_url=s3.url)),
              ["flows4/hubble/missing.parquet"], tmp_path)
