"""``recommend evaluate --staged-verdicts``: the cluster's staged verdicts against ours."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from conftest import flow_row, make_table

from recommender.cli import main

T = datetime(2026, 3, 2, 12, tzinfo=UTC)
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - {port: 5432, protocol: TCP}
"""


def _flows(tmp_path: Path, *entries: tuple[int, str]) -> Path:
    rows = [
        flow_row(
            start_time=T, end_time=T, src_namespace="shop", src_workload="web",
            src_pod="web-1", dst_namespace="shop", dst_workload="db", dst_pod="db-0",
            dst_port=port, policies=[f"pending:0|default|shop/staged:default.allow-db|{a}|0"],
        )
        for port, a in entries
    ]
    sink = io.BytesIO()
    pq.write_table(make_table(rows), sink)
    path = tmp_path / "flows.parquet"
    path.write_bytes(sink.getvalue())
    return path


def test_agreeing_verdicts_exit_0(tmp_path: Path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    flows = _flows(tmp_path, (5432, "allow"), (22, "deny"))
    assert main(["evaluate", str(tmp_path / "p.yaml"), str(flows), "--staged-verdicts"]) == 0
    assert "staged verdicts: 2 flows; 0 disagree" in capsys.readouterr().out


def test_a_disagreement_is_listed_and_exits_1(tmp_path: Path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    flows = _flows(tmp_path, (5432, "deny"), (22, "deny"))
    code = main(["evaluate", str(tmp_path / "p.yaml"), str(flows), "--staged-verdicts", "--json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["flows_with_staged_verdicts"] == 2
    (d,) = out["disagreements"]
    assert (d["source"], d["destination"], d["port"], d["cluster"], d["recommender"]) == (
        "shop/web", "shop/db", 5432, "deny", "allow"
    )
