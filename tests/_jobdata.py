"""Small date-partitioned flow sets and job files for the scheduled-job tests."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import flow_row, make_table

#: The edges of the shop: (source, destination, port, protocol).
WEB_DB = ("shop", "web", "shop", "db", 5432, "TCP")
WEB_DNS = ("shop", "web", "kube-system", "coredns", 53, "UDP")
API_WEB = ("pay", "api", "shop", "web", 80, "TCP")
CRON_DB = ("shop", "cron", "shop", "db", 5432, "TCP")


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def parquet_bytes(day: date, edges: list[tuple[Any, ...]]) -> bytes:
    """A canonical Parquet file with one flow per edge at noon of ``day``."""
    rows = [
        flow_row(
            start_time=noon(day) - timedelta(minutes=i + 1),
            end_time=noon(day) - timedelta(minutes=i),
            src_namespace=sns,
            src_workload=swl,
            src_pod=f"{swl}-0",
            dst_namespace=dns,
            dst_workload=dwl,
            dst_pod=f"{dwl}-0",
            dst_port=port,
            protocol=proto,
            connections=5,
        )
        for i, (sns, swl, dns, dwl, port, proto) in enumerate(edges)
    ]
    sink = io.BytesIO()
    pq.write_table(make_table(rows), sink)
    return sink.getvalue()


def write_day(root: Path, day: date, edges: list[tuple[Any, ...]], name: str = "flows") -> Path:
    """``root/date=YYYY-MM-DD/<name>.parquet``."""
    path = root / f"date={day:%Y-%m-%d}" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(parquet_bytes(day, edges))
    return path


def job_file(path: Path, job: dict[str, Any], **options: Any) -> Path:
    path.write_text(yaml.safe_dump({**options, "job": job}, sort_keys=True), encoding="utf-8")
    return path


def moto_s3() -> Iterator[SimpleNamespace]:
    """A real S3 API on loopback (moto's server mode) with test credentials in the environment;
    skips the test when moto is not installed."""
    server_mod = pytest.importorskip("moto.server", reason="moto[s3] + flask are test extras")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        yield SimpleNamespace(url=url, client=client)
    server.stop()
