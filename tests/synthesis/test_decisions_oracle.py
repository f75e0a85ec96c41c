"""A reject and an allow decision change exactly those two edges, in every dialect.

Kubernetes and Calico output are judged by network-config-analyzer (an independent connectivity
oracle, through ../shared/tools/nca_connectivity.py); Cilium, which NCA cannot read, by its
rendered peers: the rules that differ are exactly the two edges' rules.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, topology

from recommender import recommend
from recommender.policy.calico import CalicoOptions, render_calico
from recommender.synthesis.decisions import Decision, Decisions

SAMPLE = ROOT / "sample_flows" / "flows.parquet"
REJECT = Decision(
    "reject",
    from_="shop/frontend",
    to="shop/cart",
    port=8080,
    protocol="TCP",
    reason="cart moves behind the checkout",
)
ALLOW = Decision(
    "allow",
    from_="shop/cart",
    to="payments/payments-api",
    port=8443,
    protocol="TCP",
    reason="next release",
)
#: Every (protocol, port) the sample's traffic uses, the two decided ones among them.
PROBES = [
    ("TCP", p) for p in (22, 53, 443, 5432, 6379, 6443, 8080, 8081, 8443, 9000, 9090, 9153)
] + [("UDP", 53)]


def _nca_tool(shared: Path) -> tuple[Path, str, Any]:
    tool = shared / "tools" / "nca_connectivity.py"
    if not tool.is_file():
        pytest.skip("shared/tools/nca_connectivity.py is absent")
    nca = shutil.which("nca") or str(Path(sys.executable).parent / "nca")
    if not Path(nca).exists():
        pytest.skip("network-config-analyzer (nca) is not installed")
    spec = importlib.util.spec_from_file_location("nca_connectivity", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nca_connectivity"] = module
    spec.loader.exec_module(module)
    return tool, nca, module


def _allowed(shared: Path, folder: Path, docs: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    """Every (source pod, destination pod, protocol, port) NCA says the manifests allow."""
    tool, nca, module = _nca_tool(shared)
    folder.mkdir()
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(
        [sys.executable, str(tool), "--nca", nca, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    edges = json.loads(proc.stdout)["edges"]
    assert edges, "NCA found no connectivity at all"
    out = set()
    for e in edges:
        if "/" not in e["src"] or "/" not in e["dst"] or e["src"][0].isdigit():
            continue  # pod to pod only: the decisions name workloads
        conn = module.parse_conn(e["conn"])
        src, dst = e["src"].split("[")[0], e["dst"].split("[")[0]
        for protocol, port in PROBES:
            if conn.allows(protocol, port):
                out.add((src, dst, protocol, str(port)))
    return out


@pytest.fixture(scope="module")
def runs() -> tuple[Any, Any]:
    return recommend(SAMPLE), recommend(SAMPLE, decisions=Decisions((REJECT, ALLOW)))


def _topology(rec: Any) -> list[dict[str, Any]]:
    return topology(
        {key: dict(c.selector.match_labels) for key, c in rec.findings.selectors.items()}
    )


EXPECTED_LOST = {("shop/frontend", "shop/cart", "TCP", "8080")}
EXPECTED_GAINED = {("shop/cart", "payments/payments-api", "TCP", "8443")}


@pytest.mark.oracle
def test_kubernetes_output_changes_exactly_the_two_edges(
    shared: Path, tmp_path: Path, runs: tuple[Any, Any]
) -> None:
    before, after = runs
    topo = _topology(before)
    old = _allowed(shared, tmp_path / "before", before.manifests("kubernetes") + topo)
    new = _allowed(shared, tmp_path / "after", after.manifests("kubernetes") + topo)
    assert old - new == EXPECTED_LOST
    assert new - old == EXPECTED_GAINED


@pytest.mark.oracle
def test_calico_output_changes_exactly_the_two_edges(
    shared: Path, tmp_path: Path, runs: tuple[Any, Any]
) -> None:
    before, after = runs
    topo = _topology(before)
    options = CalicoOptions(tier=None)
    old = _allowed(
        shared, tmp_path / "before", render_calico(before.dialect_policy_set(), options) + topo
    )
    new = _allowed(
        shared, tmp_path / "after", render_calico(after.dialect_policy_set(), options) + topo
    )
    assert old - new == EXPECTED_LOST
    assert new - old == EXPECTED_GAINED


def _cilium_grants(manifests: list[dict[str, Any]]) -> set[tuple[str, ...]]:
    """(policy, direction, one peer, one port) for every grant of every Cilium rule."""
    out = set()
    for m in manifests:
        name = f"{m['metadata'].get('namespace')}/{m['metadata']['name']}"
        for direction, peers_key in (("ingress", "fromEndpoints"), ("egress", "toEndpoints")):
            for rule in m["spec"].get(direction) or []:
                peers = [json.dumps(p, sort_keys=True) for p in rule.get(peers_key) or []]
                peers += [
                    json.dumps({k: v}, sort_keys=True)
                    for k, v in rule.items()
                    if k not in (peers_key, "toPorts")
                ]
                ports = [
                    f"{p.get('protocol')}/{p.get('port')}"
                    for tp in rule.get("toPorts") or []
                    for p in tp.get("ports") or []
                ] or ["*"]
                out |= {(name, direction, peer, port) for peer in peers for port in ports}
    return out


def test_cilium_output_changes_exactly_the_two_edges(runs: tuple[Any, Any]) -> None:
    before, after = runs
    old, new = _cilium_grants(before.manifests("cilium")), _cilium_grants(after.manifests("cilium"))
    lost = {
        (
            g[0],
            g[1],
            json.loads(g[2]).get("matchLabels", {}).get("app.kubernetes.io/name")
            or json.loads(g[2]).get("matchLabels", {}).get("app"),
            g[3],
        )
        for g in old - new
    }
    gained = {
        (
            g[0],
            g[1],
            json.loads(g[2]).get("matchLabels", {}).get("app.kubernetes.io/name")
            or json.loads(g[2]).get("matchLabels", {}).get("app"),
            g[3],
        )
        for g in new - old
    }
    assert lost == {
        ("shop/allow-frontend", "egress", "cart", "TCP/8080"),
        ("shop/allow-cart", "ingress", "frontend", "TCP/8080"),
    }
    assert gained == {
        ("shop/allow-cart", "egress", "payments-api", "TCP/8443"),
        ("payments/allow-payments-api", "ingress", "cart", "TCP/8443"),
    }


def test_the_report_lists_both_decisions_as_applied(runs: tuple[Any, Any]) -> None:
    _, after = runs
    d = after.report["decisions"]
    assert [(x["action"], x["status"], x["edges"]) for x in d["items"]] == [
        ("reject", "applied", 1),
        ("allow", "applied", 1),
    ]
    assert after.report["self_check"]["decisions"] == {
        "rejected_edges": 1,
        "rejected_still_allowed": 0,
        "allowed_edges": 1,
        "allowed_not_allowed": 0,
    }
    assert after.report["self_check"]["coverage"] == 1.0  # observed evidence only
