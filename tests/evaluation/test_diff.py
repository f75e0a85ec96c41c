"""Policy diffs on observed flows: verdict changes, rule changes, and `recommend diff`'s exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import T0, flow_row, make_table

from recommender import recommend
from recommender.cli import main
from recommender.evaluation.diff import diff_policies, rule_key, rule_keys
from recommender.policy.model import PolicySet
from recommender.policy.reader import read_policies

FLOWS = str(Path(__file__).resolve().parents[2] / "sample_flows" / "flows.parquet")

#: The sample's 3,852 observed allowed connections (judged), less cart's 889.
NEW_COVERAGE = (3852 - 889) / 3852

ALLOW_ALL_SHOP = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]
"""


@pytest.fixture(scope="module")
def recommended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's recommended policy tree, written once."""
    out = tmp_path_factory.mktemp("diff") / "recommended"
    recommend(FLOWS).write(out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_rule_keys_survive_writing_and_reading(recommended: Path) -> None:
    rec = recommend(FLOWS)
    assert rule_keys(read_policies(recommended)) == rule_keys(rec.policy_set)
    assert len(rule_keys(rec.policy_set)) == 31
    policy = next(p for p in rec.policy_set.policies if p.name == "allow-checkout")
    keys = {rule_key(policy, r) for r in policy.egress}
    assert ("shop", "allow-checkout", "egress", ("ipBlock 172.18.0.2/32",), ("TCP/6443",)) in keys
    assert (
        "shop",
        "allow-checkout",
        "egress",
        ("ns[kubernetes.io/metadata.name=payments]/app=payments-api",),
        ("TCP/8443",),
    ) in keys


def test_same_policies_change_nothing(recommended: Path, capsys) -> None:
    result = diff_policies(read_policies(recommended), read_policies(recommended), FLOWS)
    assert not result.changed and not result.breaks_observed_traffic
    assert result.rules_unchanged == 31
    assert (result.observed_edges, result.existing_coverage, result.new_coverage) == (53, 1.0, 1.0)
    status, out, _ = run(capsys, "diff", str(recommended), str(recommended), FLOWS)
    assert status == 0
    assert "newly denied: 0 edges" in out and "rules: 0 added, 0 removed, 31 unchanged" in out


def test_removing_a_rule_file_denies_observed_traffic(
    recommended: Path, tmp_path: Path, capsys
) -> None:
    new = _copy(recommended, tmp_path / "new")
    (new / "shop" / "allow-cart.yaml").unlink()
    result = diff_policies(read_policies(recommended), read_policies(new), FLOWS)
    assert result.breaks_observed_traffic
    summary = result.summary()
    assert summary["newly_denied_evidence_edges"] == 6
    assert summary["newly_denied_evidence_connections"] == 889  # all of cart's traffic
    assert summary["newly_allowed_edges"] == 0
    assert (summary["rules_removed"], summary["rules_added"]) == (5, 0)
    assert result.policies_removed == ("shop/allow-cart",)
    first = result.newly_denied[0]
    assert (first.source, first.destination, first.port, first.connections) == (
        "shop/frontend",
        "shop/cart",
        8080,
        395,
    )
    assert first.input_verdict == "allowed"
    assert first.reason.startswith("ingress: isolated by shop/default-deny")
    assert all("shop/cart" in (e.source, e.destination) for e in result.newly_denied)
    assert result.new_coverage == pytest.approx(NEW_COVERAGE)

    status, out, _ = run(capsys, "diff", str(recommended), str(new), FLOWS)
    assert status == 1
    assert "newly denied: 6 edges (6 observed allowed, 889 connections)" in out
    assert "- shop/allow-cart egress peers: app.kubernetes.io/name=redis; ports: TCP/6379" in out
    assert "policy removed: shop/allow-cart" in out
    # the other way round: the old set broke cart's traffic, the new one fixes it (exit 0)
    status, out, _ = run(capsys, "diff", str(new), str(recommended), FLOWS)
    assert status == 0
    assert "newly allowed: 6 edges" in out


def test_adding_allow_all_reports_newly_allowed_flows(
    recommended: Path, tmp_path: Path, capsys
) -> None:
    new = _copy(recommended, tmp_path / "new")
    (new / "allow-all.yaml").write_text(ALLOW_ALL_SHOP)
    result = diff_policies(read_policies(recommended), read_policies(new), FLOWS)
    assert not result.breaks_observed_traffic and not result.newly_denied
    # every edge denied in the input and judged, between shop workloads: debug-shell's scan
    assert len(result.newly_allowed) == 60
    assert {e.input_verdict for e in result.newly_allowed} == {"denied"}
    assert {e.source for e in result.newly_allowed} == {"shop/debug-shell"}
    assert "allowed by shop/allow-all" in result.newly_allowed[0].reason
    assert result.policies_added == ("shop/allow-all",)
    assert result.rules_added == (
        ("shop", "allow-all", "egress", (), ()),
        ("shop", "allow-all", "ingress", (), ()),
    )

    status, out, _ = run(capsys, "diff", str(recommended), str(new), FLOWS, "--json")
    assert status == 0
    data = json.loads(out)
    assert data["summary"]["newly_allowed_edges"] == 60
    assert data["summary"]["breaks_observed_traffic"] is False
    assert data["rules_added"][0] == {
        "direction": "egress",
        "namespace": "shop",
        "peers": [],
        "policy": "allow-all",
        "ports": [],
    }
    assert data["newly_allowed"][0]["input_verdict"] == "denied"
    assert set(data) == {
        "newly_allowed",
        "newly_denied",
        "policies_added",
        "policies_removed",
        "rules_added",
        "rules_removed",
        "summary",
    }


def test_json_of_a_breaking_diff(recommended: Path, tmp_path: Path, capsys) -> None:
    new = _copy(recommended, tmp_path / "new")
    (new / "shop" / "allow-cart.yaml").unlink()
    status, out, _ = run(capsys, "diff", str(recommended), str(new), FLOWS, "--json")
    assert status == 1
    data = json.loads(out)
    assert data["summary"]["breaks_observed_traffic"] is True
    assert len(data["newly_denied"]) == 6


def test_denied_flows_are_judged_by_both_sets() -> None:
    """A flow denied in the input that the old set allowed and the new one denies is newly
    denied, but not observed allowed traffic: exit 0 territory."""
    rows = [
        flow_row(
            start_time=T0,
            end_time=T0,
            src_namespace="shop",
            src_workload="web",
            src_ip="10.0.0.1",
            dst_namespace="shop",
            dst_workload="db",
            dst_ip="10.0.0.2",
            dst_port=5432,
            verdict="denied",
        ),
        flow_row(
            start_time=T0,
            end_time=T0,
            src_namespace="shop",
            src_workload="web",
            src_ip="10.0.0.1",
            dst_namespace="shop",
            dst_workload="api",
            dst_ip="10.0.0.3",
            dst_port=8080,
        ),
    ]
    table = make_table(rows)
    strict = recommend(table).policy_set
    result = diff_policies(PolicySet(), strict, table)
    assert not result.breaks_observed_traffic
    (change,) = result.newly_denied
    assert (change.source, change.destination, change.input_verdict) == (
        "shop/web",
        "shop/db",
        "denied",
    )
    assert change.reason == "egress: not isolated; ingress: not isolated"  # why the old set let it
    assert diff_policies(strict, PolicySet(), table).newly_allowed[0].input_verdict == "denied"


def test_bad_input_exits_2(recommended: Path, tmp_path: Path, capsys) -> None:
    status, _, err = run(capsys, "diff", str(tmp_path / "missing"), str(recommended), FLOWS)
    assert status == 2 and err.startswith("error: ")
    status, out, _ = run(capsys, "diff", "--help")
    assert status == 0 and "CI and GitOps" in out
