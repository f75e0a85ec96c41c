"""Dialects end to end: evidence from flows, the CLI and the tree, the inventory, host
policies, and Calico agreeing with the Kubernetes rendering under network-config-analyzer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import flow_row, make_table, topology
from typer.testing import CliRunner

from recommender import recommend
from recommender.cli import app, main
from recommender.errors import ConfigError
from recommender.policy.calico import CalicoOptions, render_calico
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, Rule
from recommender.synthesis.inventory import apply_inventory, load_inventory, parse_inventory

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"


def _flows() -> Any:
    """web -> api (HTTP), api -> external with a DNS name, api -> a node, a host -> api."""
    sa = {"io.cilium.k8s.policy.serviceaccount": "api-sa"}
    return make_table(
        [
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_labels={"app": "api", **sa},
                dst_port=8080,
                l7_protocol="http",
                http_method="GET",
                http_path="/items",
            ),
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_labels={"app": "api", **sa},
                dst_port=8080,
                l7_protocol="http",
                http_method="POST",
                http_path="/items",
            ),
            flow_row(
                src_namespace="shop",
                src_workload="api",
                src_labels={"app": "api", **sa},
                dst_kind="external",
                dst_ip="203.0.113.10",
                dst_port=443,
                dst_dns_names=["api.example.com."],
            ),
            flow_row(
                src_namespace="shop",
                src_workload="api",
                src_labels={"app": "api", **sa},
                dst_kind="host",
                dst_name="host",
                dst_ip="10.0.0.5",
                dst_port=10250,
            ),
            flow_row(
                src_kind="host",
                src_name="host",
                src_ip="10.0.0.6",
                node="worker-1",
                dst_namespace="shop",
                dst_workload="api",
                dst_labels={"app": "api", **sa},
                dst_port=9100,
            ),
            flow_row(
                src_namespace="shop",
                src_workload="api",
                src_labels={"app": "api", **sa},
                dst_kind="external",
                dst_ip="10.20.0.7",
                dst_port=5432,
            ),
        ]
    )


def test_enrichment_carries_dns_http_entities_and_service_accounts() -> None:
    rec = recommend(_flows(), allow_node_probes=False)
    enriched = rec.dialect_policy_set()
    assert enriched == rec.policy_set  # evidence only: the same policies
    api = next(p for p in enriched.policies if p.name == "allow-api")
    assert api.service_account == "api-sa"
    peers = {p.cidr: p for r in api.egress for p in r.peers}
    assert peers["203.0.113.10/32"].dns_names == ("api.example.com",)
    assert peers["203.0.113.10/32"].entities == ("world",)
    assert peers["10.0.0.5/32"].entities == ("host",)
    assert peers["10.0.0.5/32"].dns_names == ()
    (web_rule,) = [r for r in api.ingress if r.ports[0].port == 8080]
    (web_peer,) = web_rule.peers
    assert [(h.method, h.path) for h in web_peer.http] == [("GET", "/items"), ("POST", "/items")]


def test_recommendation_manifests_per_dialect(tmp_path: Path) -> None:
    rec = recommend(_flows(), dialects=("kubernetes", "calico", "cilium"), domains=True, l7=True)
    kinds = {m["kind"] for m in rec.manifests("calico")}
    assert kinds == {"Tier", "NetworkPolicy"}
    cilium = {m["metadata"]["name"]: m for m in rec.manifests("cilium")}
    egress = cilium["allow-api"]["spec"]["egress"]
    assert [r["toFQDNs"] for r in egress if "toFQDNs" in r] == [[{"matchName": "api.example.com"}]]
    assert any("toEntities" in r and r["toEntities"] == ["host"] for r in egress)
    assert rec.manifests() == rec.manifests("kubernetes")
    again = recommend(_flows(), dialects=("calico", "cilium"), domains=True, l7=True)
    for dialect in ("calico", "cilium"):  # same input, same bytes
        assert again.to_yaml(dialect) == rec.to_yaml(dialect)
    written = rec.write(tmp_path / "out")
    tops = sorted({p.relative_to(tmp_path / "out").parts[0] for p in written})
    assert tops == [
        ".recommender-output",
        "calico",
        "cilium",
        "graph.svg",
        "kubernetes",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert (tmp_path / "out/calico/_cluster/recommendations.yaml").is_file()
    assert not (tmp_path / "out/kustomization.yaml").exists()
    # One dialect keeps today's layout.
    rec.write(tmp_path / "one", dialects="cilium")
    assert (tmp_path / "one/kustomization.yaml").is_file()
    assert (tmp_path / "one/shop/allow-api.yaml").read_text().startswith("apiVersion: cilium.io/v2")


def test_cli_dialects_dry_run_and_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(SAMPLE), "--dry-run", "-d", "calico,cilium"])
    assert result.exit_code == 0, result.output
    assert "# dialect: calico" in result.output and "# dialect: cilium" in result.output
    assert "kind: CiliumNetworkPolicy" in result.output and "kind: Tier" in result.output
    config = tmp_path / "c.yaml"
    config.write_text("dialects: [calico]\nstaged: true\ntier: apps\n")
    result = runner.invoke(app, ["run", str(SAMPLE), "--dry-run", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        "kind: StagedNetworkPolicy" in result.output and "name: apps.default-deny" in result.output
    )
    result = runner.invoke(
        app, ["run", str(SAMPLE), "--dry-run", "-d", "calico", "--tier", "default"]
    )
    assert result.exit_code == 0, result.output
    assert "kind: Tier" not in result.output and "tier:" not in result.output
    assert "name: default-deny" in result.output
    assert main(["run", str(SAMPLE), "--dry-run", "-d", "calico", "--tier", "Apps!"]) == 2
    assert "tier must be a DNS-1123 label" in capsys.readouterr().err
    assert main(["run", str(SAMPLE), "--dry-run", "-d", "linkerd"]) == 2
    assert "unknown dialect 'linkerd'" in capsys.readouterr().err


@pytest.mark.oracle
def test_every_dialect_tree_validates(shared: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("- name: billing-db\n  cidrs: [10.20.0.0/24]\n  labels: {role: db}\n")
    out = tmp_path / "out"
    rec = recommend(
        _flows(),
        dialects=("kubernetes", "calico", "cilium"),
        staged=True,
        l7=True,
        service_accounts=True,
        host_policies=True,
        inventory=str(inventory),
        allow_node_probes=False,
    )
    rec.write(out)
    sample = recommend(
        SAMPLE, dialects=("calico", "cilium"), domains=False, l7=True, host_policies=True
    )
    sample.write(tmp_path / "sample")
    result = subprocess.run(
        [
            sys.executable,
            str(shared / "tools/validate_manifests.py"),
            str(out),
            str(tmp_path / "sample"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout
    text = (out / "calico/_cluster/billing-db.yaml").read_text()
    assert "role: db" in text and "10.20.0.0/24" in text
    assert (out / "calico/_cluster/recommendations.allow-host-worker-1.yaml").is_file()
    assert (out / "cilium/_cluster/allow-host-worker-1.yaml").is_file()
    k8s = (out / "kubernetes/shop/allow-api.yaml").read_text()
    assert "recommender.io/address-groups: billing-db=10.20.0.0/24" in k8s


# --- inventory -------------------------------------------------------------------------------


def test_inventory_errors_are_clear(tmp_path: Path) -> None:
    cases = {
        "{}": "expected a list",
        "- name: Bad_Name\n  cidrs: [10.0.0.0/8]": "DNS-1123 label",
        "- name: a\n  cidrs: [10.0.0.1/24]": "host bits",
        "- name: a\n  cidrs: []": "non-empty list",
        "- name: a\n  cidrs: [10.0.0.0/24]\n- name: b\n  cidrs: [10.0.0.128/25]": "overlaps",
        "- name: a\n  cidrs: [10.0.0.0/24]\n- name: a\n  cidrs: [10.1.0.0/24]": "used twice",
        "- name: a\n  cidrs: [10.0.0.0/24]\n  labels: {role: 5}": "quote numbers",
        "- name: a\n  cidrs: [10.0.0.0/24]\n  owner: me": "unknown key",
        "- name: a\n  cidrs: [10.0.0.0/24": "not valid YAML",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"inv{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_inventory(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_inventory(tmp_path / "missing.yaml")


def test_inventory_names_addresses_inside_an_entry_only() -> None:
    entries = parse_inventory(
        [{"name": "db", "cidrs": ["10.20.0.0/24", "10.21.0.0/24"], "labels": {"role": "db"}}]
    )
    inside, outside = Peer("cidr", cidr="10.20.0.7/32"), Peer("cidr", cidr="10.30.0.1/32")
    policy = Policy(
        "p", "shop", LabelSelector.of({"app": "a"}), egress=(Rule("egress", (inside, outside)),)
    )
    (named,) = apply_inventory(PolicySet((policy,)), entries).policies
    peers = named.egress[0].peers
    assert [(p.cidr, p.group) for p in peers] == [
        ("10.30.0.1/32", None),
        ("10.20.0.0/24", "db"),
        ("10.21.0.0/24", "db"),
    ]
    assert (
        dict(named.annotations)["recommender.io/address-groups"] == "db=10.20.0.0/24,10.21.0.0/24"
    )


# --- host policies ---------------------------------------------------------------------------


def test_host_policy_from_a_host_endpoint_flow() -> None:
    rec = recommend(_flows(), host_policies=True, allow_node_probes=False)
    (host,) = rec.policy_set.host_policies
    assert host.name == "allow-host-worker-1"
    assert dict(host.selector.match_labels) == {"kubernetes.io/hostname": "worker-1"}
    assert host.policy_types == ("egress",)  # only the observed direction is isolated
    (rule,) = host.egress
    assert [p.workload for p in rule.peers] == ["api"]
    assert [(p.protocol, p.port) for p in rule.ports] == [("TCP", 9100)]
    # Kubernetes has no host policies: its rendering is unchanged.
    assert rec.manifests("kubernetes") == recommend(_flows(), allow_node_probes=False).manifests()


def test_host_policy_node_from_a_calico_auto_host_endpoint() -> None:
    flows = make_table(
        [
            flow_row(  # reported by both nodes: the node comes from the host endpoint's name
                src_kind="host",
                src_name="worker-2-auto-hep",
                src_ip="10.0.0.7",
                node="worker-1",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
            ),
            flow_row(
                src_kind="host",
                src_name="worker-2-auto-hep",
                src_ip="10.0.0.7",
                node="worker-2",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
            ),
            flow_row(  # a manual host endpoint seen from two nodes: not pinned, no policy
                src_kind="host",
                src_name="gateway",
                src_ip="10.0.0.9",
                node="worker-1",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=9090,
            ),
            flow_row(
                src_kind="host",
                src_name="gateway",
                src_ip="10.0.0.9",
                node="worker-3",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=9090,
            ),
        ]
    )
    rec = recommend(flows, host_policies=True, allow_node_probes=False)
    (host,) = rec.policy_set.host_policies
    assert dict(host.selector.match_labels) == {"kubernetes.io/hostname": "worker-2"}
    assert [(p.protocol, p.port) for r in host.egress for p in r.ports] == [("TCP", 8080)]


# --- network-config-analyzer: Calico (no tier) agrees with Kubernetes ------------------------


def _nca_map(shared: Path, folder: Path, docs: list[dict[str, Any]]) -> dict[str, Any]:
    folder.mkdir()
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs))
    nca = shutil.which("nca") or str(Path(sys.executable).parent / "nca")
    proc = subprocess.run(
        [sys.executable, str(shared / "tools/nca_connectivity.py"), "--nca", nca, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _agree(
    shared: Path, tmp_path: Path, rec: Any, topo: list[dict[str, Any]], sets: bool = False
) -> None:
    if shutil.which("nca") is None and not (Path(sys.executable).parent / "nca").exists():
        pytest.skip("network-config-analyzer (nca) is not installed")
    k8s = _nca_map(shared, tmp_path / "k8s", rec.manifests("kubernetes") + topo)
    options = CalicoOptions(tier=None, network_sets=sets)
    calico_docs = render_calico(rec.dialect_policy_set(), options)
    assert sets == any(m["kind"] == "NetworkSet" for m in calico_docs)
    calico = _nca_map(shared, tmp_path / "calico", calico_docs + topo)
    assert calico["inputs"]["policies"] == k8s["inputs"]["policies"] == len(rec.policy_set)
    assert k8s["edges"], "NCA found no connectivity at all"
    assert calico["edges"] == k8s["edges"]


@pytest.mark.oracle
def test_calico_agrees_with_kubernetes_on_the_sample(shared: Path, tmp_path: Path) -> None:
    rec = recommend(SAMPLE)
    workloads = {key: dict(c.selector.match_labels) for key, c in rec.findings.selectors.items()}
    _agree(shared, tmp_path, rec, topology(workloads), sets=True)


@pytest.mark.oracle
def test_calico_agrees_with_kubernetes_on_real_hubble_flows(shared: Path, tmp_path: Path) -> None:
    from test_recommend_real import _bookinfo_topology

    rec = recommend(shared / "datasets/hubble-otel-testdata", namespaces=("bookinfo",), l7=True)
    _agree(shared, tmp_path, rec, _bookinfo_topology(shared))
    # The same run in Cilium with --l7: the HTTP requests Hubble saw, on their port only.
    cilium = {m["metadata"]["name"]: m for m in rec.manifests("cilium")}
    to_details = [
        r
        for r in cilium["allow-productpage-v1"]["spec"]["egress"]
        if r.get("toEndpoints") == [{"matchLabels": {"app": "details"}}]
    ]
    assert to_details == [
        {
            "toEndpoints": [{"matchLabels": {"app": "details"}}],
            "toPorts": [
                {
                    "ports": [{"port": "9080", "protocol": "TCP"}],
                    "rules": {"http": [{"method": "GET", "path": "/details/0"}]},
                }
            ],
        }
    ]


@pytest.mark.oracle
def test_calico_agrees_with_kubernetes_on_real_calico_flows(shared: Path, tmp_path: Path) -> None:
    rec = recommend(shared / "datasets/calico-enterprise-docs")
    workloads = {key: dict(c.selector.match_labels) for key, c in rec.findings.selectors.items()}
    _agree(shared, tmp_path, rec, topology(workloads))


@pytest.mark.oracle
def test_calico_network_sets_agree_with_kubernetes_ipblocks(shared: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("- name: billing-db\n  cidrs: [10.20.0.0/24]\n")
    rec = recommend(_flows(), inventory=str(inventory), allow_node_probes=False)
    assert any(m["kind"] == "GlobalNetworkSet" for m in rec.manifests("calico"))
    workloads = {key: dict(c.selector.match_labels) for key, c in rec.findings.selectors.items()}
    _agree(shared, tmp_path, rec, topology(workloads))


def test_hostile_l7_and_dns_evidence_never_reaches_a_manifest() -> None:
    hostile_path = "/x\n- method: DELETE\n  path: .*"
    flows = make_table(
        [
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8080,
                l7_protocol="http",
                http_method="GET",
                http_path=hostile_path,
            ),
            flow_row(
                src_namespace="shop",
                src_workload="web",
                dst_namespace="shop",
                dst_workload="api",
                dst_port=8081,
                l7_protocol="http",
                http_method="get; rm -rf",
                http_path="/",
            ),
            flow_row(
                src_namespace="shop",
                src_workload="api",
                dst_kind="external",
                dst_ip="203.0.113.10",
                dst_port=443,
                dst_dns_names=["evil.example.com\nkind: Secret", "*.example.com"],
            ),
        ]
    )
    rec = recommend(flows, domains=True, l7=True)
    cilium = {m["metadata"]["name"]: m for m in rec.manifests("cilium")}
    ingress = cilium["allow-api"]["spec"]["ingress"]
    ports = {
        entry["ports"][0]["port"]: entry.get("rules")
        for rule in ingress
        for entry in rule["toPorts"]
    }
    # The odd path becomes "any path" for GET; the odd method gives no L7 rule on its port.
    assert ports == {"8080": {"http": [{"method": "GET"}]}, "8081": None}
    # No valid name for the address: no domain rule, the address stays a CIDR.
    text = rec.to_yaml("cilium") + rec.to_yaml("calico")
    assert "toFQDNs" not in text and "domains" not in text and "Secret" not in text
    assert "203.0.113.10/32" in text
    # Istio: the same judgement, method only for GET on 8080, a plain port for 8081.
    istio = {m["metadata"]["name"]: m for m in rec.manifests("istio")}
    assert istio["allow-api"]["spec"]["rules"][0]["to"] == [
        {"operation": {"ports": ["8081"]}},
        {"operation": {"ports": ["8080"], "methods": ["GET"]}},
    ]
    assert "DELETE" not in rec.to_yaml("istio") and "rm -rf" not in rec.to_yaml("istio")


@pytest.mark.parametrize("dialects", [("kubernetes",), ("calico", "cilium", "kubernetes")])
def test_recommend_output_writes_what_write_writes(
    tmp_path: Path, dialects: tuple[str, ...]
) -> None:
    """recommend(output=) writes the policy files while the report is computed: the same
    files and bytes as write() afterwards."""
    options: dict[str, Any] = {"dialects": dialects, "domains": True, "l7": True}
    early = recommend(_flows(), output=tmp_path / "early", **options)
    late = recommend(_flows(), **options)
    written = late.write(tmp_path / "late")
    assert [p.relative_to(tmp_path / "early") for p in early.written] == [
        p.relative_to(tmp_path / "late") for p in written
    ]
    for path in written:
        assert (tmp_path / "early" / path.relative_to(tmp_path / "late")).read_bytes() == (
            path.read_bytes()
        )
    assert set(early.timings) >= {"report", "report_files", "write"}
    assert late.written == [] and recommend(_flows()).written == []


def test_recommend_output_failing_late_keeps_earlier_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the policy files started (here in the report files) leaves the earlier
    tree as it was and no hidden folder behind."""
    import recommender.report.html as html

    out = tmp_path / "out"
    recommend(_flows(), output=out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("report broke")

    monkeypatch.setattr(html, "report_html", broken)
    with pytest.raises(RuntimeError, match="report broke"):
        recommend(_flows(), output=out)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
