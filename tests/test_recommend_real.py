"""End to end on the real third-party captures, checked by the independent oracles."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import topology

from recommender import recommend

BOOKINFO_CALLS = {
    ("productpage-v1", "details-v1"),
    ("productpage-v1", "reviews-v1"),
    ("productpage-v1", "reviews-v2"),
    ("productpage-v1", "reviews-v3"),
    ("reviews-v2", "ratings-v1"),
    ("reviews-v3", "ratings-v1"),
    # The Istio docs' traffic generator runs in the ratings pod (reference-apps.md §1): it is
    # observed traffic, so a flow-based recommendation allows it and the report shows it.
    ("ratings-v1", "productpage-v1"),
}


def _bookinfo_topology(shared: Path) -> list[dict]:
    docs = [
        d
        for d in yaml.safe_load_all((shared / "datasets/istio-bookinfo/bookinfo.yaml").read_text())
        if d
    ]
    topo = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["metadata"]["namespace"] = "bookinfo"
            topo.append(doc)
    topo += topology({("kube-system", "coredns"): {"k8s-app": "kube-dns"}})
    topo.append(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "bookinfo", "labels": {"kubernetes.io/metadata.name": "bookinfo"}},
        }
    )
    return topo


def test_bookinfo_hubble_end_to_end(shared: Path, nca_check, tmp_path: Path):
    rec = recommend(shared / "datasets/hubble-otel-testdata", namespaces=("bookinfo",))
    deployments = [
        "details-v1",
        "productpage-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ]
    expect = []
    for src, dst in itertools.permutations(deployments, 2):
        expect.append(
            {
                "src": f"bookinfo/{src}-1",
                "dst": f"bookinfo/{dst}-1",
                "protocol": "TCP",
                "port": 9080,
                "allowed": (src, dst) in BOOKINFO_CALLS,
            }
        )
    for client in ("productpage-v1", "ratings-v1"):
        for proto in ("UDP", "TCP"):
            expect.append(
                {
                    "src": f"bookinfo/{client}-1",
                    "dst": "kube-system/coredns",
                    "protocol": proto,
                    "port": 53,
                    "allowed": True,
                }
            )
    expect.append(
        {
            "src": "bookinfo/details-v1-1",
            "dst": "kube-system/coredns",
            "protocol": "UDP",
            "port": 53,
            "allowed": False,
        }
    )
    expect.append(
        {
            "src": "bookinfo/productpage-v1-1",
            "dst": "8.8.8.8",
            "protocol": "TCP",
            "port": 443,
            "allowed": False,
        }
    )
    passed, failed, out = nca_check(rec.manifests(), _bookinfo_topology(shared), expect)
    assert failed == 0, out
    assert passed == len(expect)

    # No rule for a reply or an ephemeral port; every manifest valid for the API server.
    ports = {p.port for pol in rec.policy_set.policies for r in pol.rules for p in r.ports}
    # 15090: istio-system/prometheus scraping the reviews-v1 sidecar, observed in the GKE capture.
    assert ports == {53, 9080, 15090}
    rec.write(tmp_path / "out")
    check = subprocess.run(
        [sys.executable, str(shared / "tools/validate_manifests.py"), "-q", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 invalid" in check.stdout


def test_bookinfo_policy_shape(shared: Path):
    rec = recommend(shared / "datasets/hubble-otel-testdata", namespaces=("bookinfo",))
    by_name = {p.name: p for p in rec.policy_set.policies}
    assert sorted(by_name) == [
        "allow-details-v1",
        "allow-productpage-v1",
        "allow-ratings-v1",
        "allow-reviews-v1",
        "allow-reviews-v2",
        "allow-reviews-v3",
        "default-deny",
    ]
    ratings = by_name["allow-ratings-v1"]
    sources = sorted(
        dict(p.pod_selector.match_labels)["version"] for r in ratings.ingress for p in r.peers
    )
    assert sources == ["v2", "v3"]  # reviews v1 never calls ratings
    assert by_name["allow-reviews-v1"].egress == ()
    # The kubelet/Istio probe from the node is reported, not allowed by a rule.
    assert any(x["workload"] == "bookinfo/reviews-v1" for x in rec.report["node_local"])


def test_calico_enterprise_records_end_to_end(shared: Path, nca_check):
    rec = recommend(shared / "datasets/calico-enterprise-docs")
    assert rec.policy_set.namespaces == ("policy-demo",)
    workloads = {
        ("policy-demo", "access"): {"app": "access"},
        ("policy-demo", "nginx"): {"app": "nginx"},
    }
    expect = [
        {
            "src": "policy-demo/access",
            "dst": "policy-demo/nginx",
            "protocol": "TCP",
            "port": 80,
            "allowed": True,
        },
        {
            "src": "policy-demo/nginx",
            "dst": "policy-demo/access",
            "protocol": "TCP",
            "port": 80,
            "allowed": False,
        },
        {
            "src": "policy-demo/access",
            "dst": "policy-demo/nginx",
            "protocol": "TCP",
            "port": 81,
            "allowed": False,
        },
    ]
    _passed, failed, out = nca_check(rec.manifests(), topology(workloads), expect)
    assert failed == 0, out
    assert "pod-template-hash" not in rec.to_yaml()


def test_star_wars_denied_flows_allow_nothing(shared: Path):
    rec = recommend(shared / "datasets/cilium-starwars-demo/export.rst.sample-flows.jsonl")
    assert all(not p.rules for p in rec.policy_set.policies)
    assert rec.report["summary"]["denied_edges"] == 2
