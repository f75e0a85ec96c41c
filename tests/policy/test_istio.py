"""The Istio dialect end to end: a small known graph with mesh ports (golden files for the
Istio and Kubernetes renderings), Istio's semantics over what is written (every observed call
allowed, nothing else), identities, mTLS, the CLI, and the shared manifest validator.

Regenerate the golden files after an intended change with::

    UPDATE_GOLDEN=1 python -m pytest tests/policy/test_istio.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from conftest import flow_row, make_table
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import recommend
from recommender.aggregate.edges import EdgeTables, aggregate_edges
from recommender.cli import main
from recommender.evaluation.istio import Identity, Request, authorize
from recommender.policy._yaml import dump_yaml
from recommender.policy.authz import IstioPolicies
from recommender.policy.istio import IstioOptions, principal, render_istio, template_path
from recommender.policy.mesh import mesh_port
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from recommender.policy.reader import (
    parse_authorization_policy,
    parse_peer_authentication,
    read_istio_policies,
    read_policies,
)
from recommender.report.model import report_markdown
from recommender.synthesis.enrich import service_accounts

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "istio"
HUBBLE = ROOT / "sample_flows" / "hubble.jsonl.gz"
VALIDATOR = ROOT.parent / "shared" / "tools" / "validate_manifests.py"
SA = "io.cilium.k8s.policy.serviceaccount"
WORLD = "203.0.113.7"

needs_validator = pytest.mark.skipif(
    not VALIDATOR.is_file(), reason=f"the shared manifest validator {VALIDATOR} is absent"
)


def _labels(app: str, account: str | None = None) -> dict[str, str]:
    return {"app": app, **({SA: account} if account else {})}


def mesh_graph() -> pa.Table:
    """shop/web -> shop/api (HTTP: GET /items, GET /items/42, POST /orders) -> shop/db 5432;
    monitoring/prometheus -> api 9090; the internet -> web 8443; and Istio's own traffic:
    HBONE web -> api 15008, prometheus -> api 15020 (agent metrics), api -> istiod 15012, the
    node -> api 15021 (health), a capture-port record web -> api 15006; plus a denied web -> db
    (an attack the policies must keep out)."""
    web, api, db = _labels("web", "web"), _labels("api", "api-sa"), _labels("db", "db")
    prom = _labels("prometheus", "prometheus")
    rows: list[dict[str, Any]] = []

    def call(src: tuple[str, str, dict[str, str]], dst: tuple[str, str, dict[str, str]],
             port: int, n: int = 3, **extra: Any) -> None:  # fmt: skip
        for _ in range(n):
            rows.append(flow_row(
                src_namespace=src[0], src_workload=src[1], src_labels=src[2],
                dst_namespace=dst[0], dst_workload=dst[1], dst_labels=dst[2],
                dst_port=port, **extra,
            ))  # fmt: skip

    w, a, d = ("shop", "web", web), ("shop", "api", api), ("shop", "db", db)
    p = ("monitoring", "prometheus", prom)
    for method, path in (("GET", "/items"), ("GET", "/items/42"), ("POST", "/orders")):
        call(w, a, 8080, n=1, l7_protocol="http", http_method=method, http_path=path)
    call(a, d, 5432)
    call(p, a, 9090)
    call(w, a, 15008)
    call(p, a, 15020)
    call(w, a, 15006)
    call(a, ("istio-system", "istiod", _labels("istiod", "istiod")), 15012)
    for _ in range(3):
        rows.append(flow_row(src_kind="external", src_ip=WORLD, src_name="world",
                             dst_namespace="shop", dst_workload="web", dst_labels=web,
                             dst_port=8443))  # fmt: skip
        rows.append(flow_row(src_kind="host", src_ip="10.0.0.5", src_name="host",
                             dst_namespace="shop", dst_workload="api", dst_labels=api,
                             dst_port=15021))  # fmt: skip
    call(w, d, 5432, n=1, verdict="denied")
    return make_table(rows)


def _recommend(flows: Any, **options: Any) -> Any:
    options.setdefault("exclude_namespaces", ("istio-system",))
    return recommend(flows, dialects=("kubernetes", "istio"), **options)


def _golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text()


def test_golden_istio_and_kubernetes_with_mesh_ports() -> None:
    rec = _recommend(mesh_graph(), l7=True)
    _golden("mesh-graph-istio-l7.yaml", rec.to_yaml("istio"))
    _golden("mesh-graph-kubernetes.yaml", rec.to_yaml("kubernetes"))


def test_exact_policies_for_the_known_graph() -> None:
    """The golden file's content, said in words: one rule per identity, ports and requests."""
    docs = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
            for d in _recommend(mesh_graph(), l7=True).manifests("istio")}  # fmt: skip
    assert sorted(docs) == [
        ("monitoring", "default-deny"),
        ("shop", "allow-api"),
        ("shop", "allow-db"),
        ("shop", "allow-web"),
        ("shop", "default-deny"),
    ]
    assert docs[("shop", "default-deny")]["spec"] == {}
    api = docs[("shop", "allow-api")]["spec"]
    assert api["selector"] == {"matchLabels": {"app": "api"}} and api["action"] == "ALLOW"
    assert api["rules"] == [
        {
            "from": [{"source": {"principals": ["cluster.local/ns/monitoring/sa/prometheus"]}}],
            "to": [{"operation": {"ports": ["9090"]}}],
        },
        {
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
            "to": [
                {"operation": {"ports": ["8080"], "methods": ["GET"],
                               "paths": ["/items", "/items/{*}"]}},
                {"operation": {"ports": ["8080"], "methods": ["POST"], "paths": ["/orders"]}},
            ],
        },
    ]  # fmt: skip
    assert docs[("shop", "allow-db")]["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/api-sa"]}}],
            "to": [{"operation": {"ports": ["5432"]}}],
        }
    ]
    web = docs[("shop", "allow-web")]
    assert web["spec"]["rules"] == [
        {
            "from": [{"source": {"ipBlocks": [f"{WORLD}/32"], "notPrincipals": ["*"]}}],
            "to": [{"operation": {"ports": ["8443"]}}],
        }
    ]
    assert "outside the mesh" in web["metadata"]["annotations"]["recommender.io/review"]
    # Istio's own ports get no AuthorizationPolicy rule; the annotation listing them is dropped.
    text = dump_yaml(list(docs.values()))
    for port in ("15006", "15008", "15012", "15020", "15021"):
        assert f"'{port}'" not in text
    assert "recommender.io/mesh-ports" not in text


def test_kubernetes_renders_mesh_ports_as_rules_of_their_own() -> None:
    rec = _recommend(mesh_graph())
    api = next(p for p in rec.policy_set.policies if p.name == "allow-api")
    by_port = {tuple(p.port for p in r.ports): r for r in api.rules}
    # Never merged with an application port: one rule per mesh port, flagged with its role.
    assert sorted(by_port) == [(5432,), (8080,), (9090,), (15008,), (15012,), (15020,)]
    assert "mesh:hbone" in by_port[(15008,)].evidence.flags
    assert "mesh:telemetry" in by_port[(15020,)].evidence.flags
    assert "mesh:control-plane" in by_port[(15012,)].evidence.flags
    assert not any(f.startswith("mesh:") for f in by_port[(8080,)].evidence.flags)
    assert dict(api.annotations)["recommender.io/mesh-ports"] == (
        "ingress TCP/15008 (hbone); ingress TCP/15020 (telemetry); egress TCP/15012 (control-plane)"
    )
    # The capture port is Envoy's redirect inside the pod: left out with its reason.
    excluded = rec.tables.excluded.to_pylist()
    assert [(e["dst_port"], e["reason"]) for e in excluded] == [(15006, "mesh-capture")]
    assert all(p.port != 15006 for pol in rec.policy_set.policies for r in pol.rules
               for p in r.ports)  # fmt: skip
    # Health checks from the node are node-local (no rule), as any kubelet probe.
    assert all(p.port != 15021 for r in api.rules for p in r.ports)


def test_ambient_sources_seen_only_through_hbone_keep_their_identity() -> None:
    """Ambient mode: the flows show web -> api on 15008 only (the application port is inside
    the tunnel): api's AuthorizationPolicy allows web's principal on any port, flagged, and no
    other source; NetworkPolicy allows 15008 from web."""
    rows = [flow_row(src_namespace="a", src_workload="web", src_labels=_labels("web", "web"),
                     dst_namespace="a", dst_workload="api", dst_labels=_labels("api", "api"),
                     dst_port=15008),
            flow_row(src_namespace="a", src_workload="db-client", dst_namespace="a",
                     dst_workload="db", dst_labels=_labels("db", "db"), dst_port=5432)]
    rec = recommend(make_table(rows), dialects=("kubernetes", "istio"))
    api = next(d for d in rec.manifests("istio") if d["metadata"]["name"] == "allow-api")
    assert api["spec"]["rules"] == [
        {"from": [{"source": {"principals": ["cluster.local/ns/a/sa/web"]}}]}
    ]
    assert "HBONE" in api["metadata"]["annotations"]["recommender.io/review"]
    istio = _istio(rec.manifests("istio"))
    labels = {"app": "api", SA: "api"}
    web = Identity("cluster.local/ns/a/sa/web", "a", None, mtls=True)
    other = Identity("cluster.local/ns/a/sa/db", "a", None, mtls=True)
    assert authorize(istio, Request("a", labels, 9000, web)).allowed
    assert not authorize(istio, Request("a", labels, 9000, other)).allowed
    k8s = next(p for p in rec.policy_set.policies if p.name == "allow-api")
    assert [(r.ports[0].port, r.evidence.flags) for r in k8s.ingress] == [
        (15008, ("mesh:hbone", "rare"))
    ]


def test_port_range_budget_never_joins_mesh_and_application_ports() -> None:
    rows = [flow_row(src_namespace="a", src_workload="c", dst_namespace="a", dst_workload="s",
                     dst_port=port) for port in (15005, 15007, 15008)]  # fmt: skip
    rec = recommend(make_table(rows), port_range_budget=10)
    server = next(p for p in rec.policy_set.policies if p.name == "allow-s")
    assert [[(p.port, p.end_port) for p in r.ports] for r in server.ingress] == [
        [(15005, 15007)],
        [(15008, None)],
    ]


# --- Istio semantics over the output ------------------------------------------------------------


def _istio(manifests: list[dict[str, Any]]) -> IstioPolicies:
    authz = tuple(parse_authorization_policy(d) for d in manifests
                  if d["kind"] == "AuthorizationPolicy")  # fmt: skip
    peers = tuple(parse_peer_authentication(d) for d in manifests
                  if d["kind"] == "PeerAuthentication")  # fmt: skip
    return IstioPolicies(authz, peers)


def _verdicts(flows: Any, manifests: list[dict[str, Any]], namespaces: set[str]) -> dict[str, Any]:
    """Judge every observed call, every denied one, and every other (source, destination
    workload, port) triple in ``namespaces`` under Istio's semantics, each workload's service
    account its principal and the internet a plain-text source by address."""
    tables = flows if isinstance(flows, EdgeTables) else aggregate_edges(flows)
    istio = _istio(manifests)
    accounts = service_accounts(tables, partial=True)
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for row in tables.workload_labels.to_pylist():
        labels.setdefault((row["namespace"], row["workload"]), dict(row["labels"] or ()))

    def source(kind: str, ns: str | None, ident: str, ips: list[str]) -> Identity | None:
        if kind == "workload":
            account = accounts.get((ns or "", ident))
            name = principal("cluster.local", ns or "", account) if account else None
            return Identity(name, ns, None, mtls=True)
        if kind == "external":
            return Identity(ip=ips[0])
        return None  # the node: kubelet probes, not the proxy's to judge

    def allowed(src: Identity, dst: tuple[str, str], port: int, method: str | None = None,
                path: str | None = None) -> bool:  # fmt: skip
        request = Request(dst[0], labels[dst], port, src, method, path)
        return authorize(istio, request).allowed

    out: dict[str, Any] = {"observed": [], "denied": [], "other": []}
    observed: set[tuple[str, tuple[str, str], int]] = set()
    sources: dict[str, Identity] = {}
    ports: set[int] = set()
    for kind, table in (("observed", tables.edges), ("denied", tables.denied)):
        for e in table.to_pylist():
            if e["dst_kind"] != "workload" or e["dst_namespace"] not in namespaces:
                continue
            if e["protocol"] != "TCP" or mesh_port("TCP", e["dst_port"]):
                continue  # Istio's proxies do not intercept UDP; their own ports are theirs
            src = source(e["src_kind"], e["src_namespace"], e["src_id"], e["src_ips"] or [])
            if src is None:
                continue
            dst = (e["dst_namespace"], e["dst_id"])
            name = f"{e['src_namespace']}/{e['src_id']}" if e["src_kind"] == "workload" else (
                f"{e['src_kind']}:{e['src_id']}")  # fmt: skip
            sources[name] = src
            if kind == "observed":
                observed.add((name, dst, e["dst_port"]))
                ports.add(e["dst_port"])
            calls = [r.partition(" ") for r in e["http_requests"] or ()] or [(None, "", None)]
            for method, _, path in calls:
                out[kind].append((name, dst, e["dst_port"], method,
                                  allowed(src, dst, e["dst_port"], method, path or None)))
    for (ns, wl), _ in sorted(labels.items()):
        if ns not in namespaces:
            continue
        for name, src in sorted(sources.items()):
            for port in sorted(ports):
                if (name, (ns, wl), port) in observed or name == f"{ns}/{wl}":
                    continue
                out["other"].append((name, (ns, wl), port, allowed(src, (ns, wl), port)))
    return out


def test_known_graph_allows_every_observed_call_and_nothing_else() -> None:
    flows = mesh_graph()
    for l7 in (False, True):
        rec = _recommend(flows, l7=l7)
        judged = _verdicts(flows, rec.manifests("istio"), {"shop", "monitoring"})
        app_calls = judged["observed"]
        assert len(app_calls) == 6  # three HTTP requests web -> api, three other calls
        assert all(c[-1] for c in app_calls), app_calls
        assert (f"external:{WORLD}", ("shop", "web"), 8443, None, True) in judged["observed"]
        assert judged["denied"] and not any(c[-1] for c in judged["denied"])
        others = judged["other"]
        assert others and not any(c[-1] for c in others), [c for c in others if c[-1]]


def test_sample_allows_every_observed_call_and_no_other_pair_port_or_attack() -> None:
    """The bundled Hubble sample (service accounts in its labels): every observed TCP call
    into the namespaces in scope, world ingress to the frontend included, is allowed; no
    other (source, workload, port) and no flow denied in the input is."""
    for l7 in (False, True):
        rec = recommend(HUBBLE, dialects=("istio",), l7=l7)
        scope = set(rec.findings.namespaces_in_scope)
        judged = _verdicts(rec.tables, rec.manifests("istio"), scope)
        assert judged["observed"] and all(c[-1] for c in judged["observed"])
        assert any(c[0].startswith("external:") and c[1] == ("shop", "frontend") and c[-1]
                   for c in judged["observed"])  # fmt: skip
        assert judged["denied"] and not any(c[-1] for c in judged["denied"])
        assert judged["other"] and not any(c[-1] for c in judged["other"]), [
            c for c in judged["other"] if c[-1]
        ]


def test_real_bookinfo_capture_allows_exactly_what_was_observed(shared: Path) -> None:
    """A real Hubble capture of Istio's Bookinfo (GKE), where some records carry only part of
    an endpoint's labels: the service accounts the others name still make the principals."""
    flows = shared / "datasets" / "hubble-otel-testdata"
    if not flows.is_dir():
        pytest.skip(f"{flows} is absent")
    for l7 in (False, True):
        rec = recommend(flows, dialects=("istio",), l7=l7, namespaces=("bookinfo",))
        text = rec.to_yaml("istio")
        assert "cluster.local/ns/bookinfo/sa/bookinfo-productpage" in text
        assert "namespaces:" not in text
        judged = _verdicts(rec.tables, rec.manifests("istio"), {"bookinfo"})
        assert judged["observed"] and all(c[-1] for c in judged["observed"])
        assert judged["other"] and not any(c[-1] for c in judged["other"])


def test_replay_judges_the_written_tree_with_istio(tmp_path: Path) -> None:
    rec = recommend(HUBBLE, dialects=("kubernetes", "istio"), l7=True)
    rec.write(tmp_path / "out")
    assert main(["evaluate", str(tmp_path / "out"), str(HUBBLE)]) == 0
    check = rec.report["istio"]["self_check"]
    assert check["coverage"] == 1.0 and check["false_denies"] == 0
    assert check["denied_in_input_but_allowed"] == 0
    strict = recommend(HUBBLE, dialects=("kubernetes", "istio"), mtls="strict")
    strict.write(tmp_path / "strict")
    # STRICT refuses the internet's plain-text connections to the frontend: false denies...
    assert main(["evaluate", str(tmp_path / "strict"), str(HUBBLE)]) == 1
    # ... which the diff reports as traffic the STRICT tree would break.
    assert main(["diff", str(tmp_path / "out"), str(tmp_path / "strict"), str(HUBBLE)]) == 1
    # And the report said so beforehand: its self-check and its Mutual TLS section.
    assert strict.report["istio"]["self_check"]["false_denies"] == 6
    mesh = strict.report["mesh"]
    assert mesh["mtls"] == "STRICT"
    assert {c["destination"] for c in mesh["plain_text"] if c["source"].startswith("external:")
            } == {"shop/frontend"}  # fmt: skip


def test_diff_lists_authorization_rules_that_change(tmp_path: Path) -> None:
    from recommender.evaluation.diff import diff_policies

    for name, l7 in (("l4", False), ("l7", True)):
        recommend(HUBBLE, dialects=("kubernetes", "istio"), l7=l7).write(tmp_path / name)
    result = diff_policies(
        read_policies(tmp_path / "l4"), read_policies(tmp_path / "l7"), HUBBLE,
        existing_istio=read_istio_policies(tmp_path / "l4"),
        new_istio=read_istio_policies(tmp_path / "l7"),
    )  # fmt: skip
    assert not result.breaks_observed_traffic and not result.newly_allowed
    added = {(k[0], k[1]) for k in result.rules_added}
    assert added == {(k[0], k[1]) for k in result.rules_removed} == {
        ("shop", "AuthorizationPolicy/allow-cart"),
        ("shop", "AuthorizationPolicy/allow-catalog"),
        ("shop", "AuthorizationPolicy/allow-checkout"),
    }
    assert any("methods=GET" in op for k in result.rules_added for op in k[4])


def test_strict_report_names_plain_text_peers_and_workloads_without_proxy() -> None:
    rec = _recommend(mesh_graph(), mtls="strict")
    mesh = rec.report["mesh"]
    # web and api tunnel HBONE and api reaches istiod: in the mesh; nothing shows a proxy on
    # prometheus (its 15020 scrape is no sign) nor on db.
    assert mesh["workloads_in_mesh"] == ["shop/api", "shop/web"]
    assert mesh["workloads_without_proxy"] == ["monitoring/prometheus", "shop/db"]
    assert [(c["source"], c["destination"], c["port"]) for c in mesh["plain_text"]] == [
        (f"external:{WORLD}", "shop/web", 8443),
        ("monitoring/prometheus", "shop/api", 9090),
    ]
    assert "## Mutual TLS (STRICT)" in report_markdown(rec.report)
    # With the injection label, prometheus is in the mesh and its scrape is mutual TLS.
    rows = [flow_row(src_namespace="monitoring", src_workload="prometheus",
                     src_labels={**_labels("prometheus", "prometheus"),
                                 "security.istio.io/tlsMode": "istio"},
                     dst_namespace="shop", dst_workload="api", dst_port=9090)]  # fmt: skip
    labelled = recommend(make_table(rows), dialects=("istio",), mtls="strict").report["mesh"]
    assert labelled["plain_text"] == [] and labelled["workloads_without_proxy"] == ["shop/api"]
    assert "mesh" not in _recommend(mesh_graph()).report


# --- identities -------------------------------------------------------------------------------


def test_unknown_service_account_falls_back_to_the_namespace_and_is_flagged() -> None:
    rows = [flow_row(src_namespace="a", src_workload="batch", dst_namespace="b",
                     dst_workload="db", dst_labels=_labels("db", "db"), dst_port=5432)]
    rec = recommend(make_table(rows), dialects=("istio",))
    docs = rec.manifests("istio")
    db = next(d for d in docs if d["metadata"]["name"] == "allow-db")
    assert db["spec"]["rules"] == [
        {"from": [{"source": {"namespaces": ["a"]}}], "to": [{"operation": {"ports": ["5432"]}}]}
    ]
    review = db["metadata"]["annotations"]["recommender.io/review"]
    assert review == "rule 0: service account of a/batch unknown: any workload of namespace a"
    # ... and the report lists it.
    assert rec.report["istio"]["flagged_rules"] == [
        {"namespace": "b", "policy": "allow-db", "rule": 0, "flags": review[len("rule 0: "):]}
    ]
    assert rec.report["istio"]["objects"] == {"AuthorizationPolicy": 3}
    assert "## Istio" in report_markdown(rec.report)
    assert "istio" not in recommend(make_table(rows)).report


def test_trust_domain_names_the_principals(tmp_path: Path) -> None:
    rows = [flow_row(src_namespace="a", src_workload="web", src_labels=_labels("web", "web-sa"),
                     dst_namespace="a", dst_workload="api", dst_port=80)]  # fmt: skip
    docs = recommend(make_table(rows), dialects=("istio",), trust_domain="prod.example.com")
    text = docs.to_yaml("istio")
    assert "prod.example.com/ns/a/sa/web-sa" in text
    assert docs.report["config"]["trust_domain"] == "prod.example.com"
    assert "trust_domain" not in recommend(make_table(rows)).report["config"]


def test_udp_is_left_to_networkpolicy_and_any_source_is_flagged() -> None:
    any_source = Rule("ingress", (), (PortSpec("TCP", 80), PortSpec("UDP", 53)))
    policy = Policy("allow-dns", "a", LabelSelector.of({"app": "dns"}), ingress=(any_source,))
    udp_only = Rule("ingress", (), (PortSpec("UDP", 53),))
    quiet = Policy("allow-q", "a", LabelSelector.of({"app": "q"}), ingress=(udp_only,))
    docs = render_istio(PolicySet((policy, quiet)))
    assert [d["metadata"]["name"] for d in docs] == ["allow-dns"]
    assert docs[0]["spec"]["rules"] == [{"to": [{"operation": {"ports": ["80"]}}]}]
    assert docs[0]["metadata"]["annotations"]["recommender.io/review"] == (
        "rule 0: UDP ports left out (not proxied); any source"
    )


def test_root_namespace_gets_nothing_and_in_selectors_split() -> None:
    deny = Policy("default-deny", "istio-system", LabelSelector())
    peer = Peer("pods", pod_selector=LabelSelector.of({"app": "x"}), service_account="x")
    both = Policy(
        "allow-shared", "a", LabelSelector((("tier", "web"),), (("app", "In", ("one", "two")),)),
        ingress=(Rule("ingress", (peer,), (PortSpec("TCP", 80),)),),
    )  # fmt: skip
    docs = render_istio(PolicySet((deny, both)))
    assert [(d["metadata"]["name"], d["spec"]["selector"]["matchLabels"]) for d in docs] == [
        ("allow-shared-one", {"app": "one", "tier": "web"}),
        ("allow-shared-two", {"app": "two", "tier": "web"}),
    ]


def test_template_path() -> None:
    assert template_path("/users/123/orders/9f1c2b3a-1d2e-4f50-8a9b-0c1d2e3f4a5b") == (
        "/users/{*}/orders/{*}"
    )
    assert template_path("/blobs/0123456789abcdef0") == "/blobs/{*}"
    assert template_path("/v2/api") == "/v2/api"  # "v2" is a name, not an id
    assert template_path("/a/{id}") is None


def test_options_are_checked() -> None:
    assert main(["run", str(HUBBLE), "--dry-run", "--mtls", "strict"]) == 2
    assert main(["run", str(HUBBLE), "--dry-run", "-d", "istio", "--mtls", "lax"]) == 2
    assert main(["run", str(HUBBLE), "--dry-run", "-d", "istio", "--trust-domain", "a/b"]) == 2
    with pytest.raises(Exception, match="trust domain"):
        IstioOptions(trust_domain="bad domain")


# --- reading and the tree ---------------------------------------------------------------------


def test_reader_keeps_istio_apart_from_networkpolicies(tmp_path: Path) -> None:
    rec = _recommend(mesh_graph(), l7=True, mtls="strict")
    rec.write(tmp_path / "out")
    assert (tmp_path / "out/istio/shop/default.yaml").is_file()
    network = read_policies(tmp_path / "out")
    assert {p.name for p in network.policies} >= {"allow-api", "default-deny"}
    istio = read_istio_policies(tmp_path / "out/istio")
    assert len(istio.authorization) == 5
    assert [p.key for p in istio.peer_authentication] == ["monitoring/default", "shop/default"]
    assert not read_istio_policies(tmp_path / "out/kubernetes")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "security.istio.io/v1",
                                   "kind": "AuthorizationPolicy", "metadata": {"name": "x"},
                                   "spec": {"action": "MAYBE"}}))  # fmt: skip
    assert main(["evaluate", str(bad), str(HUBBLE)]) == 2


@needs_validator
def test_written_trees_pass_the_shared_validator(tmp_path: Path) -> None:
    _recommend(mesh_graph(), l7=True, mtls="strict").write(tmp_path / "graph")
    recommend(HUBBLE, dialects=("kubernetes", "calico", "cilium", "istio"), l7=True,
              mtls="strict").write(tmp_path / "sample")  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(tmp_path / "graph"), str(tmp_path / "sample")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout
    assert "AuthorizationPolicy" in subprocess.run(
        [sys.executable, str(VALIDATOR), "-v", str(tmp_path / "graph/istio")],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


# --- invariant ---------------------------------------------------------------------------------

_APPS = ("web", "api", "db", "cache")


@settings(max_examples=12, deadline=None)
@given(
    calls=st.sets(
        st.tuples(
            st.sampled_from(_APPS), st.sampled_from(_APPS), st.sampled_from((80, 443, 5432))
        ).filter(lambda c: c[0] != c[1]),
        min_size=1,
        max_size=6,
    ),
    world=st.sets(st.sampled_from(_APPS), max_size=2),
)
def test_allowed_is_exactly_observed_for_any_small_graph(
    calls: set[tuple[str, str, int]], world: set[str]
) -> None:
    """Invariant: for any graph of workloads with service accounts (and internet clients on
    port 443), the Istio output allows every observed (source, destination, port) and no other,
    under Istio's semantics."""
    rows = [
        flow_row(src_namespace="ns", src_workload=s, src_labels=_labels(s, f"{s}-sa"),
                 dst_namespace="ns", dst_workload=d, dst_labels=_labels(d, f"{d}-sa"),
                 dst_port=port)
        for s, d, port in sorted(calls)
    ] + [
        flow_row(src_kind="external", src_ip=WORLD, src_name="world", dst_namespace="ns",
                 dst_workload=d, dst_labels=_labels(d, f"{d}-sa"), dst_port=443)
        for d in sorted(world)
    ]  # fmt: skip
    rec = recommend(make_table(rows), dialects=("istio",))
    istio = _istio(rec.manifests("istio"))
    seen = {w for c in calls for w in c[:2]} | world
    observed = set(calls) | {("world", d, 443) for d in world}
    for src in sorted(seen | {"world"}):
        ident = (Identity(ip=WORLD) if src == "world"
                 else Identity(principal("cluster.local", "ns", f"{src}-sa"), "ns", None, True))
        for dst in sorted(seen):
            for port in (80, 443, 5432):
                if src == dst:
                    continue
                request = Request("ns", _labels(dst, f"{dst}-sa"), port, ident)
                assert authorize(istio, request).allowed is ((src, dst, port) in observed), (
                    src, dst, port
                )  # fmt: skip
