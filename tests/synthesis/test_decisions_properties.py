"""Invariants of decisions, over the sample's observed edges: a rejected edge is denied by the
policies, every other observed edge stays allowed, and an allowed one becomes allowed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import recommend
from recommender.evaluation.replay import replay
from recommender.synthesis.decisions import Decision, Decisions

SAMPLE = ROOT / "sample_flows" / "flows.parquet"


@pytest.fixture(scope="module")
def base() -> Any:
    return recommend(SAMPLE)


def _pod_edges(rec: Any) -> list[dict[str, Any]]:
    rows = rec.tables.edges.to_pylist()
    return [
        r
        for r in rows
        if r["src_kind"] == r["dst_kind"] == "workload"
        and {r["src_namespace"], r["dst_namespace"]} <= set(rec.findings.namespaces_in_scope)
        and r["dst_port"] is not None
    ]


def _denied(rec: Any, rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """The (source, destination, protocol, port) of ``rows`` the policies deny."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=rec.tables.edges.schema)
    tables = replace(
        rec.tables, edges=table, denied=table.slice(0, 0), excluded=rec.tables.excluded.slice(0, 0)
    )
    coverage = replay(rec.policy_set, tables, synthetic_limit=0)
    return {(e.source, e.destination, e.protocol, e.port) for e in coverage.false_denies}


@settings(max_examples=6)
@given(data=st.data())
def test_rejecting_one_edge_denies_it_and_nothing_else(base: Any, data: Any) -> None:
    edges = _pod_edges(base)
    edge = data.draw(st.sampled_from(edges))
    decision = Decision(
        "reject",
        from_=f"{edge['src_namespace']}/{edge['src_id']}",
        to=f"{edge['dst_namespace']}/{edge['dst_id']}",
        port=edge["dst_port"],
        protocol=edge["protocol"],
    )
    after = recommend(SAMPLE, decisions=Decisions((decision,)))
    denied = _denied(after, edges)
    key = (decision.from_, decision.to, edge["protocol"], edge["dst_port"])
    assert denied == {key}
    assert after.report["decisions"]["items"][0]["status"] == "applied"
