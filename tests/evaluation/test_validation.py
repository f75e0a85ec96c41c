"""Held-out validation: the time split, the false-deny rate on the later window, rule churn."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import T0, flow_row, make_table, minutes

from recommender import recommend
from recommender.cli import main
from recommender.errors import ConfigError
from recommender.evaluation.validation import churn, holdout_report, resolve_split, split_flows
from recommender.report.model import report_markdown

FLOWS = Path(__file__).resolve().parents[2] / "sample_flows" / "flows.parquet"


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    return pq.read_table(FLOWS)


def _rare_times(table: pa.Table) -> list[datetime]:
    """Start times of the rare edge shop/cart -> shop/catalog TCP 9000 (seen twice)."""
    mask = pc.and_(pc.equal(table["src_workload"], "cart"), pc.equal(table["dst_port"], 9000))
    return sorted(table.filter(mask)["start_time"].to_pylist())


def _edge(src: str, dst: str, port: int, t: datetime) -> dict[str, Any]:
    return flow_row(
        start_time=t,
        end_time=t,
        src_namespace="shop",
        src_workload=src,
        src_ip=f"10.0.0.{len(src)}",
        dst_namespace="shop",
        dst_workload=dst,
        dst_ip=f"10.0.1.{len(dst)}",
        dst_port=port,
    )


def _timeline() -> pa.Table:
    """web -> api every 10 minutes from T0 to T0+100 (11 rows), in shuffled row order."""
    order = [7, 2, 10, 0, 5, 9, 1, 4, 8, 3, 6]
    return make_table([_edge("web", "api", 8080, T0 + minutes(10 * i)) for i in order])


def _minutes_of(table: pa.Table) -> list[int]:
    return sorted(int((t - T0).total_seconds() // 60) for t in table["start_time"].to_pylist())


# --- the split --------------------------------------------------------------------------------


def test_holdout_splits_by_time_share_not_by_rows() -> None:
    learn, test = split_flows(_timeline(), holdout=0.25)
    # the span is 100 minutes: learn before minute 75, test from minute 75 on
    assert _minutes_of(learn) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert _minutes_of(test) == [80, 90, 100]
    assert resolve_split(_timeline(), holdout=0.25) == T0 + minutes(75)


def test_split_at_puts_the_boundary_row_in_the_test_window() -> None:
    learn, test = split_flows(_timeline(), split_at=T0 + minutes(30))
    assert _minutes_of(learn) == [0, 10, 20]
    assert _minutes_of(test) == [30, 40, 50, 60, 70, 80, 90, 100]
    # an ISO string, and a naive time taken as UTC, give the same split
    for text in ("2026-01-05T09:30:00Z", "2026-01-05T09:30:00"):
        assert _minutes_of(split_flows(_timeline(), split_at=text)[0]) == [0, 10, 20]


def test_split_keeps_schema_and_row_order() -> None:
    table = _timeline()
    learn, test = split_flows(table, holdout=0.5)
    assert learn.schema == table.schema and test.schema == table.schema
    assert learn.num_rows + test.num_rows == table.num_rows
    starts = table["start_time"].to_pylist()
    assert learn["start_time"].to_pylist() == [t for t in starts if t < T0 + minutes(50)]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"holdout": 0}, "holdout must be"),
        ({"holdout": 1}, "holdout must be"),
        ({"holdout": 1.5}, "holdout must be"),
        ({"holdout": -0.2}, "holdout must be"),
        ({"holdout": True}, "holdout must be"),
        ({"holdout": 0.2, "split_at": T0 + minutes(5)}, "not both"),
        ({}, "either holdout or split_at"),
        ({"split_at": T0}, "outside the flows' span"),  # the learning window would be empty
        ({"split_at": T0 - minutes(1)}, "outside the flows' span"),
        ({"split_at": T0 + minutes(101)}, "outside the flows' span"),
        ({"split_at": "yesterday"}, "ISO 8601 time"),
    ],
)
def test_invalid_split_options(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        split_flows(_timeline(), **options)


def test_cannot_split_a_single_instant_or_nothing() -> None:
    same = make_table([_edge("web", "api", 8080, T0), _edge("web", "db", 5432, T0)])
    with pytest.raises(ConfigError, match="same time"):
        split_flows(same, holdout=0.2)
    with pytest.raises(ConfigError, match="empty"):
        split_flows(_timeline().slice(0, 0), holdout=0.2)


def test_recommend_rejects_bad_holdout_before_reading_flows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holdout must be"):
        recommend(tmp_path / "missing.parquet", holdout=2.0)


# --- the report on small tables ---------------------------------------------------------------


def test_edge_new_in_the_later_window_is_a_false_deny() -> None:
    rows = [_edge("web", "api", 8080, T0 + minutes(m)) for m in (0, 10, 20, 30)]
    rows += [_edge("web", "api", 8080, T0 + minutes(m)) for m in (40, 50)]
    rows += [_edge("web", "db", 5432, T0 + minutes(45))]
    result = holdout_report(make_table(rows), split_at=T0 + minutes(40))
    assert result["observed_connections"] == 3
    assert result["false_deny_connections"] == 1
    assert result["false_deny_rate"] == pytest.approx(1 / 3)
    assert result["coverage"] == pytest.approx(2 / 3)
    assert (result["false_deny_edges"], result["observed_edges"]) == (1, 2)
    (denied,) = result["false_denies"]
    assert (denied["source"], denied["destination"], denied["port"]) == (
        "shop/web",
        "shop/db",
        5432,
    )
    # learned: web egress to api, api ingress from web; the later window adds web egress to db
    # and db ingress from web (other ports, so other rules)
    c = result["churn"]
    assert (c["unchanged"], c["added"], c["removed"]) == (2, 2, 0)
    assert c["stability"] == pytest.approx(2 / 4)
    assert result["learn"]["connection_rows"] == 4 and result["test"]["connection_rows"] == 3


def test_holdout_respects_the_configured_window() -> None:
    result = holdout_report(_timeline(), holdout=0.5, config=None)
    assert result["split_at"] == (T0 + minutes(50)).isoformat()
    from recommender import RecommendConfig

    windowed = holdout_report(
        _timeline(), RecommendConfig(since=T0 + minutes(20), until=T0 + minutes(81)), holdout=0.5
    )
    # rows 20..80 in the window: the span is 60 minutes, the split at minute 50
    assert windowed["split_at"] == (T0 + minutes(50)).isoformat()
    assert windowed["learn"]["connection_rows"] == 3  # 20, 30, 40
    assert windowed["test"]["connection_rows"] == 4  # 50, 60, 70, 80


def test_churn_of_identical_windows_is_stable() -> None:
    rec = recommend(make_table([_edge("web", "api", 8080, T0), _edge("api", "db", 5432, T0)]))
    result = churn(rec.policy_set, rec.policy_set)
    assert result["stability"] == 1.0
    assert (result["added"], result["removed"], result["unchanged"]) == (0, 0, 4)
    empty = recommend(make_table([])).policy_set
    assert churn(empty, empty)["stability"] == 1.0


# --- the sample flows: a rollout at 10:30 and a rare edge seen twice --------------------------


def test_recommend_with_holdout_on_the_sample(sample: pa.Table) -> None:
    full = recommend(sample)
    rec = recommend(sample, holdout=0.2)
    assert rec.policy_set == full.policy_set  # the policies still come from every flow
    h = rec.report["holdout"]
    assert h["holdout"] == 0.2
    assert h["split_at"] == "2026-01-05T11:23:58.785647+00:00"  # 80 % of 09:00:02 .. 11:59:57
    assert h["false_deny_rate"] == 0.0
    assert (h["observed_connections"], h["observed_edges"]) == (771, 47)
    assert h["coverage"] == 1.0
    assert h["learn"]["connection_rows"] + h["test"]["connection_rows"] == 4000
    assert h["churn"]["stability"] == 1.0 and h["churn"]["unchanged"] == 31
    md = report_markdown(rec.report)
    assert "## Held-out validation" in md
    assert "false-deny rate on the later window: **0.00%** (0 of 771" in md


def test_rules_survive_the_rollout(sample: pa.Table) -> None:
    """Learned before the 10:30 rollout (new pod hashes, names, IPs, versions), replayed after."""
    h = holdout_report(sample, split_at="2026-01-05T10:30:00Z")
    assert h["false_deny_edges"] == 0 and h["false_deny_rate"] == 0.0
    assert h["observed_connections"] == 1926
    assert h["churn"]["stability"] == 1.0


def test_split_before_the_rare_edges_second_occurrence(sample: pa.Table) -> None:
    """The first occurrence (09:43) is learned, so the second (11:31) is allowed: no false deny.
    The later window lacks the API-server edge (last seen 11:29): one rule fewer there."""
    _, second = _rare_times(sample)
    h = holdout_report(sample, split_at=second)
    assert h["false_deny_edges"] == 0
    assert h["false_deny_connections"] == 0
    c = h["churn"]
    assert (c["unchanged"], c["added"], c["removed"]) == (30, 0, 1)
    assert c["stability"] == pytest.approx(30 / 31)
    (gone,) = c["removed_rules"]
    assert (gone["policy"], gone["direction"], gone["peers"], gone["ports"]) == (
        "allow-checkout",
        "egress",
        ["ipBlock 172.18.0.2/32"],
        ["TCP/6443"],
    )


def test_split_before_the_rare_edges_first_occurrence(sample: pa.Table) -> None:
    """Learned before 09:43 the rare edge is unknown: both occurrences are false denies."""
    first, _ = _rare_times(sample)
    h = holdout_report(sample, split_at=first)
    assert h["false_deny_edges"] == 1
    assert h["false_deny_connections"] == 2
    assert h["observed_connections"] == 2928
    assert h["false_deny_rate"] == pytest.approx(2 / 2928)
    (denied,) = h["false_denies"]
    assert (denied["source"], denied["destination"], denied["protocol"], denied["port"]) == (
        "shop/cart",
        "shop/catalog",
        "TCP",
        9000,
    )
    assert denied["reason"].startswith("egress: isolated by shop/allow-cart")
    c = h["churn"]
    assert (c["unchanged"], c["added"], c["removed"]) == (29, 2, 0)
    assert {(r["policy"], r["direction"]) for r in c["added_rules"]} == {
        ("allow-cart", "egress"),
        ("allow-catalog", "ingress"),
    }
    md = report_markdown(recommend(sample, split_at=first).report)
    assert "| shop/cart | shop/catalog | TCP/9000 | 2 |" in md


# --- the command ------------------------------------------------------------------------------


def test_cli_run_with_holdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "out"
    status = main([str(FLOWS), "-o", str(out), "--holdout", "0.2"])
    text = capsys.readouterr().out
    assert status == 0
    assert "held-out validation (split at 2026-01-05T11:23:58.785647+00:00)" in text
    report = json.loads((out / "report.json").read_text())
    assert report["holdout"]["false_deny_rate"] == 0.0
    assert "## Held-out validation" in (out / "report.md").read_text()

    status = main([str(FLOWS), "-o", str(out), "--split-at", "2026-01-05T10:30:00Z", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["holdout"]["split_at"] == "2026-01-05T10:30:00+00:00"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--holdout", "1.5"], "holdout must be"),
        (["--split-at", "2027-01-01T00:00:00Z"], "outside the flows' span"),
        (["--holdout", "0.2", "--split-at", "2026-01-05T10:30:00Z"], "not both"),
    ],
)
def test_cli_run_bad_holdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    status = main([str(FLOWS), "-o", str(tmp_path / "out"), *args])
    _, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("error: ") and needle in err


def test_timestamps_are_utc() -> None:
    assert resolve_split(_timeline(), split_at="2026-01-05T09:30:00").tzinfo is not None
    assert resolve_split(_timeline(), holdout=0.5) == datetime(2026, 1, 5, 9, 50, tzinfo=UTC)
