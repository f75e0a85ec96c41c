"""Decisions in a run on a small known graph: what each action does to the policies, the
status every entry gets, and evaluate / diff / job with a decisions file."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, flow_row, make_table

from recommender import recommend
from recommender.cli import main
from recommender.synthesis.decided import DecisionRun
from recommender.synthesis.decisions import Decision, Decisions, dump_decisions


def _rows(scanner: bool = True) -> list[dict[str, Any]]:
    """web -> api:8080 (often), api -> db:5432 (often), debug -> api:8080 (often), and a
    scanner in ops probing 12 ports of api (denied) with one that got through."""
    rows = []
    for minute in range(0, 180, 3):
        t = T0 + timedelta(minutes=minute)
        for src, dst, port in (("web", "api", 8080), ("api", "db", 5432), ("debug", "api", 8080)):
            rows.append(
                flow_row(
                    src_namespace="shop",
                    src_workload=src,
                    dst_namespace="shop",
                    dst_workload=dst,
                    dst_port=port,
                    start_time=t,
                    end_time=t,
                )
            )
    if not scanner:
        return rows
    for i, port in enumerate([22, 80, 443, 2379, 3306, 5433, 6379, 8443, 9090, 10250, 27017]):
        t = T0 + timedelta(minutes=60, seconds=i)
        rows.append(
            flow_row(
                src_namespace="ops",
                src_workload="scanner",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=port,
                verdict="denied",
                start_time=t,
                end_time=t,
            )
        )
    t = T0 + timedelta(minutes=60, seconds=30)
    rows.append(
        flow_row(
            src_namespace="ops",
            src_workload="scanner",
            dst_namespace="shop",
            dst_workload="api",
            dst_port=8080,
            start_time=t,
            end_time=t,
        )
    )
    return rows


@pytest.fixture(scope="module")
def flows() -> Any:
    return make_table(_rows())


def _grants(rec: Any) -> set[tuple[str, str, str, str]]:
    """(policy, direction, peer, port) of every rule."""
    return {
        (f"{r['namespace']}/{r['policy']}", r["direction"], peer, port)
        for r in rec.report["rules"]
        for peer in r["peers"]
        for port in r["ports"]
    }


def test_reject_removes_exactly_that_edge_from_both_policies(flows: Any) -> None:
    before = recommend(flows)
    after = recommend(
        flows,
        decisions=Decisions(
            (Decision("reject", from_="shop/debug", to="shop/api", port=8080, protocol="TCP"),)
        ),
    )
    assert _grants(before) - _grants(after) == {
        ("shop/allow-api", "ingress", "app=debug", "TCP/8080"),
        ("shop/allow-debug", "egress", "app=api", "TCP/8080"),
    }
    assert _grants(after) <= _grants(before)
    excluded = [x for x in after.report["excluded"] if x["reason"] == "decision:reject"]
    assert [(x["src_id"], x["dst_id"], x["dst_port"]) for x in excluded] == [("debug", "api", 8080)]
    assert after.report["self_check"]["decisions"]["rejected_still_allowed"] == 0


def test_allow_adds_an_unobserved_edge_flagged_as_decided(flows: Any) -> None:
    before = recommend(flows)
    after = recommend(
        flows,
        decisions=Decisions(
            (
                Decision("allow", from_="shop/web", to="shop/db", port=5432, protocol="TCP"),
                Decision("allow", from_="shop/api", to="10.20.0.0/16", port=443, protocol="TCP"),
            )
        ),
    )
    assert _grants(after) - _grants(before) == {
        ("shop/allow-db", "ingress", "app=web", "TCP/5432"),
        ("shop/allow-web", "egress", "app=db", "TCP/5432"),
        ("shop/allow-api", "egress", "ipBlock 10.20.0.0/16", "TCP/443"),
    }
    decided = [r for r in after.report["rules"] if "decision:allow" in r["flags"]]
    assert len(decided) == 3 and all("rare" not in r["flags"] for r in decided)
    # observed coverage is measured on observed traffic only
    assert after.report["self_check"]["coverage"] == 1.0
    assert after.report["self_check"]["decisions"]["allowed_not_allowed"] == 0


def test_trust_keeps_an_edge_anomaly_screening_left_out(flows: Any) -> None:
    before = recommend(flows)
    assert any(
        x["reason"].startswith("anomaly:scan") and x["src_id"] == "scanner"
        for x in before.report["excluded"]
    )
    after = recommend(flows, decisions=Decisions((Decision("trust", from_="ops/scanner", to="*"),)))
    assert _grants(after) - _grants(before) == {
        ("shop/allow-api", "ingress", "ops/app=scanner", "TCP/8080"),
        ("ops/allow-scanner", "egress", "shop/app=api", "TCP/8080"),
    }
    item = after.report["decisions"]["items"][0]
    assert (item["status"], item["edges"]) == ("applied", 1)


def test_exclude_a_workload_and_a_namespace(flows: Any) -> None:
    after = recommend(
        flows,
        decisions=Decisions(
            (
                Decision("exclude", workload="shop/debug"),
                Decision("exclude", namespace="ops"),
            )
        ),
    )
    policies = {(p.namespace, p.name) for p in after.policy_set.policies}
    assert ("shop", "allow-debug") not in policies
    assert ("shop", "default-deny") in policies  # the namespace stays managed
    assert not any(ns == "ops" for ns, _ in policies)
    assert after.report["summary"]["namespaces_out_of_scope"] == ["ops"]
    assert not any("debug" in peer for _, _, peer, _ in _grants(after))
    assert [x["status"] for x in after.report["decisions"]["items"]] == ["applied", "applied"]


def test_every_entry_gets_a_status(flows: Any) -> None:
    decisions = Decisions(
        (
            Decision("reject", from_="shop/web", to="shop/api"),
            Decision("reject", from_="shop/nobody", to="*"),
            Decision("exclude", namespace="gone", expires=date(2026, 1, 1)),
            Decision("reject", from_="shop/api", to="shop/db", expires=date(2026, 1, 2)),
        )
    )
    run = DecisionRun.start(decisions, today=date(2026, 1, 1))
    rec = recommend(flows, decisions=decisions)
    rec_expiry = recommend(flows, decisions=Decisions(decisions.entries[2:]))
    statuses = [x["status"] for x in rec.report["decisions"]["items"]]
    assert statuses[:2] == ["applied", "stale"]
    assert statuses[2] == "expired"  # expired in the past, whatever today is
    assert run.status(2) == "expired" and run.status(3) != "expired"
    # an expired reject changes nothing
    assert _grants(rec_expiry) == _grants(recommend(flows))
    counts = {k: rec.report["decisions"][k] for k in ("applied", "stale", "expired", "total")}
    assert counts == {"applied": 1, "stale": 1, "expired": 2, "total": 4}


def test_evaluate_and_diff_treat_rejected_denies_as_intended(tmp_path: Path, capsys: Any) -> None:
    import pyarrow.parquet as pq

    flow_file = tmp_path / "flows.parquet"
    pq.write_table(make_table(_rows(scanner=False)), flow_file)
    decisions = tmp_path / "decisions.yaml"
    decisions.write_text(
        dump_decisions(
            Decisions(
                (Decision("reject", from_="shop/debug", to="shop/api", port=8080, protocol="TCP"),)
            )
        )
    )
    assert main(["run", str(flow_file), "-o", str(tmp_path / "base")]) == 0
    assert (
        main(["run", str(flow_file), "-o", str(tmp_path / "new"), "--decisions", str(decisions)])
        == 0
    )
    out = capsys.readouterr().out
    assert "decisions: 1 applied, 0 matched nothing, 0 expired" in out
    new = str(tmp_path / "new")
    assert main(["evaluate", new, str(flow_file)]) == 1  # a false deny without the decisions
    assert main(["evaluate", new, str(flow_file), "--decisions", str(decisions)]) == 0
    assert "1 of the false denies are edges the decisions reject" in capsys.readouterr().out
    base = str(tmp_path / "base")
    assert main(["diff", base, new, str(flow_file)]) == 1
    assert main(["diff", base, new, str(flow_file), "--decisions", str(decisions)]) == 0


def test_a_bad_decisions_file_exits_2_naming_the_entry(
    flows: Any, tmp_path: Path, capsys: Any
) -> None:
    import pyarrow.parquet as pq

    flow_file = tmp_path / "flows.parquet"
    pq.write_table(flows, flow_file)
    bad = tmp_path / "decisions.yaml"
    bad.write_text(
        "apiVersion: recommender.io/v1\nkind: Decisions\ndecisions:\n"
        "- action: reject\n  from: shop/web\n  to: shop/api\n  port: http\n"
    )
    assert main(["run", str(flow_file), "-o", str(tmp_path / "o"), "--decisions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "decisions[0].port" in err and "Traceback" not in err


def _dns_flows(tcp_seen: bool) -> Any:
    rows = []
    for minute in range(0, 120, 5):
        t = T0 + timedelta(minutes=minute)
        for protocol in ("UDP", "TCP") if tcp_seen else ("UDP",):
            rows.append(
                flow_row(
                    src_namespace="shop",
                    src_workload="web",
                    dst_namespace="kube-system",
                    dst_workload="coredns",
                    dst_port=53,
                    protocol=protocol,
                    start_time=t,
                    end_time=t,
                )
            )
        rows.append(
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
                start_time=t,
                end_time=t,
            )
        )
    return make_table(rows)


DNS = "kube-system/app=coredns"


@pytest.mark.parametrize("tcp_seen", [False, True])
def test_rejecting_dns_on_one_protocol_leaves_the_other(tcp_seen: bool) -> None:
    flows = _dns_flows(tcp_seen)
    before = recommend(flows)
    reject = Decision("reject", from_="shop/web", to="kube-system/coredns", port=53, protocol="UDP")
    after = recommend(flows, decisions=Decisions((reject,)))
    assert _grants(before) - _grants(after) == {
        ("shop/allow-web", "egress", "kube-system/app=coredns", "UDP/53")
    }
    assert _grants(after) - _grants(before) == set()
    assert after.report["self_check"]["decisions"]["rejected_still_allowed"] == 0
    assert after.report["self_check"]["coverage"] == 1.0


@pytest.mark.parametrize(
    ("reject", "lost"),
    [
        (Decision("reject", from_="shop/web", to="kube-system/coredns"), {"UDP/53", "TCP/53"}),
        (
            Decision("reject", from_="shop/web", to="kube-system/coredns", port=53, protocol="TCP"),
            {"TCP/53"},
        ),
    ],
)
def test_a_reject_also_names_the_dns_companion_nobody_observed(
    reject: Decision, lost: set[str]
) -> None:
    flows = _dns_flows(tcp_seen=False)  # only UDP/53 observed; TCP/53 allowed as companion
    before = recommend(flows)
    after = recommend(flows, decisions=Decisions((reject,)))
    assert _grants(before) - _grants(after) == {
        ("shop/allow-web", "egress", DNS, port) for port in lost
    }
    assert after.report["decisions"]["items"][0]["status"] == "applied"


def test_rejecting_one_public_client_of_an_internet_rule_makes_it_an_exception() -> None:
    clients = [f"81.2.69.{i}" for i in range(1, 21)]  # 20 > internet_ingress_sources
    rows = []
    for i, ip in enumerate(clients):
        for k in range(3):
            t = T0 + timedelta(minutes=7 * i + k)
            rows.append(
                flow_row(
                    src_kind="external",
                    src_ip=ip,
                    dst_namespace="shop",
                    dst_workload="web",
                    dst_port=443,
                    start_time=t,
                    end_time=t,
                )
            )
    flows = make_table(rows)
    before = recommend(flows)
    assert any("ipBlock 0.0.0.0/0" in p for _, _, p, _ in _grants(before))
    after = recommend(
        flows,
        decisions=Decisions(
            (Decision("reject", from_="81.2.69.7", to="shop/web", port=443, protocol="TCP"),)
        ),
    )
    (peer,) = {p for _, _, p, _ in _grants(after) if p.startswith("ipBlock 0.0.0.0/0")}
    assert "81.2.69.7/32" in peer.split(" except ", 1)[1].split(",")
    check = after.report["self_check"]
    assert check["decisions"] == {
        "rejected_edges": 1,
        "rejected_still_allowed": 0,
        "allowed_edges": 0,
        "allowed_not_allowed": 0,
    }
    assert check["coverage"] == 1.0 and after.report["decisions"]["applied"] == 1
