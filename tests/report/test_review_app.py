"""``recommend review``'s app without a browser: the token, the Host check and the headers,
every action's entry in the decisions file, a rule's edges, and what a re-run changed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from recommender import recommend
from recommender.report.review_app import (
    CSP,
    ReviewState,
    diff_reports,
    excluded_decision,
    review_app,
    rule_decisions,
    rule_id,
)
from recommender.synthesis.decisions import Decision, load_decisions

pytest.importorskip("starlette")
pytest.importorskip("httpx2")  # Starlette's test client

from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_flows" / "flows.parquet"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review") / "out"
    recommend(SAMPLE).write(out)
    return out


@pytest.fixture
def state(run_dir: Path, tmp_path: Path) -> ReviewState:
    return ReviewState.open(run_dir, tmp_path / "decisions.yaml")


def _rule(report: dict[str, Any], ns: str, wl: str, direction: str, peer: str) -> dict[str, Any]:
    (rule,) = [r for r in report["rules"] if (r["namespace"], r["workload"], r["direction"])
               == (ns, wl, direction) and peer in r["peers"]]  # fmt: skip
    return rule


def test_every_request_needs_the_token_and_a_local_host(state: ReviewState) -> None:
    client = TestClient(review_app(state, allowed_hosts=["testserver"]))
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get(f"/static/graph.js?token={state.token[:-1]}").status_code == 403
    assert client.post("/decide", data={"do": "exclude", "namespace": "shop"}).status_code == 403
    assert not state.decisions_path.exists()
    ok = client.get(f"/?token={state.token}")
    assert ok.status_code == 200
    assert ok.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "default-src 'none'" in CSP
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert ok.headers["referrer-policy"] == "no-referrer"
    # another Host (DNS rebinding) is refused even with the token
    other = TestClient(review_app(state, allowed_hosts=["127.0.0.1:9"]))
    assert other.get(f"/?token={state.token}").status_code == 403


def test_pages_load_nothing_from_outside(state: ReviewState) -> None:
    client = TestClient(review_app(state))
    t = state.token
    for path in ("/", "/graph"):
        page = client.get(f"{path}?token={t}").text
        assert "<script>" not in page  # no inline script: the CSP allows none
        assert "http://" not in page and "https://" not in page
        assert "style=" not in page
    graph = client.get(f"/graph?token={t}").text
    assert f'src="/static/cytoscape.min.js?token={t}"' in graph
    assert client.get(f"/static/cytoscape.min.js?token={t}").status_code == 200
    assert client.get(f"/static/../report.json?token={t}").status_code == 404
    assert client.get(f"/graph.svg?token={t}").headers["content-type"] == "image/svg+xml"


def test_the_graph_draws_one_node_per_address(state: ReviewState) -> None:
    page = TestClient(review_app(state)).get(f"/graph?token={state.token}").text
    data = json.loads(page.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    labels = [n["label"] for n in data["nodes"]]
    # checkout's rule to the API server's address and the denied flows to that node's
    # address are one box, not "172.18.0.2/32" beside "172.18.0.2"
    assert "172.18.0.2/32" not in labels and labels.count("172.18.0.2") == 1
    assert "52.94.236.248" in labels and not any(label.endswith("/32") for label in labels)
    (node,) = [n["id"] for n in data["nodes"] if n["label"] == "172.18.0.2"]
    (checkout,) = [n["id"] for n in data["nodes"] if n["label"] == "checkout"]
    assert any(e["source"] == checkout and e["target"] == node and e["ports"] == ["TCP/6443"]
               and not e["denied"] for e in data["edges"])  # fmt: skip
    assert any(e["target"] == node and e["denied"] for e in data["edges"])


def test_a_rule_stands_for_the_edges_it_allows(state: ReviewState) -> None:
    r = state.report
    # a selector in the rule's namespace resolves to the workload it was made for
    assert rule_decisions(_rule(r, "shop", "cart", "egress", "app.kubernetes.io/name=catalog"),
                          r) == [Decision("reject", from_="shop/cart", to="shop/catalog",
                                          port=9000, protocol="TCP")]  # fmt: skip
    # ingress: the peer is the source; another namespace's selector
    assert rule_decisions(_rule(r, "payments", "ledger-db", "ingress",
                                "monitoring/app.kubernetes.io/name=prometheus"), r) == [
        Decision("reject", from_="monitoring/prometheus", to="payments/ledger-db", port=9090,
                 protocol="TCP")]  # fmt: skip
    # an ipBlock peer is its CIDR; one entry per port
    dns = rule_decisions(_rule(r, "shop", "cart", "egress", "kube-system/k8s-app=kube-dns"), r)
    assert [(d.to, d.protocol, d.port) for d in dns] == [
        ("kube-system/coredns", "TCP", 53), ("kube-system/coredns", "UDP", 53)]  # fmt: skip
    api = rule_decisions(_rule(r, "shop", "checkout", "egress", "ipBlock 172.18.0.2/32"), r)
    assert [(d.from_, d.to, d.port) for d in api] == [("shop/checkout", "172.18.0.2/32", 6443)]
    # a selector the report does not name stands for the namespace's pods
    odd = {"namespace": "shop", "workload": "cart", "direction": "egress",
           "peers": ["tier=unknown"], "ports": ["TCP/1000-2000"]}  # fmt: skip
    assert rule_decisions(odd, r) == [Decision("reject", from_="shop/cart", to="shop/*",
                                               protocol="TCP")]  # fmt: skip


def test_actions_write_the_decisions_file(state: ReviewState) -> None:
    client = TestClient(review_app(state), follow_redirects=False)
    t = state.token
    rule = _rule(state.report, "shop", "cart", "egress", "app.kubernetes.io/name=catalog")
    rid = rule_id(rule)

    def post(**form: str) -> Any:
        response = client.post(f"/decide?token={t}", data=form)
        assert response.status_code == 303
        assert response.headers["location"].startswith(f"/?token={t}")
        return load_decisions(state.decisions_path).entries

    reject = Decision("reject", from_="shop/cart", to="shop/catalog", port=9000, protocol="TCP")
    assert post(do="reject", rule=rid) == (reject,)
    assert post(do="reject", rule=rid) == (reject,)  # not written twice
    page = client.get(f"/?token={t}").text
    assert f'<tr id="r-{rid}" class="rejected"' in page
    assert "not run yet" in page
    assert post(do="exclude", workload="shop/redis") == (
        reject, Decision("exclude", workload="shop/redis"))  # fmt: skip
    allow = Decision("allow", from_="shop/frontend", to="shop/redis", port=6379, protocol="TCP",
                     reason="cache warm-up")  # fmt: skip
    assert post(do="allow", **{"from": "shop/frontend", "to": "shop/redis", "port": "6379",
                               "protocol": "tcp", "reason": "cache warm-up"})[-1] == allow
    # a bad entry writes nothing and says why on the page
    before = state.decisions_path.read_bytes()
    post(do="allow", **{"from": "shop/frontend", "to": "*", "port": "80", "protocol": "TCP"})
    post(do="allow", **{"from": "shop/frontend", "to": "shop/redis", "port": "x"})
    assert state.decisions_path.read_bytes() == before
    assert "Not written" in client.get(f"/?token={t}").text
    # accept takes a reject back and, the rule being flagged (rare), writes its accept entry
    accept = Decision("accept", from_="shop/cart", to="shop/catalog", port=9000,
                      protocol="TCP", flags=("rare",))  # fmt: skip
    assert post(do="accept", rule=rid) == (Decision("exclude", workload="shop/redis"), allow,
                                           accept)  # fmt: skip
    assert f'<tr id="r-{rid}" class="accepted"' in client.get(f"/?token={t}").text
    # undo accept takes it back; remove drops an entry by index
    assert accept not in post(do="unaccept", rule=rid)
    assert post(do="remove", entry="0") == (allow,)
    post(do="reject", rule="no-such-rule")
    assert "Not written: No such rule" in client.get(f"/?token={t}").text


def test_trust_an_excluded_edge(state: ReviewState) -> None:
    row = {"src_kind": "workload", "src_namespace": "shop", "src_id": "debug-shell",
           "dst_kind": "workload", "dst_namespace": "shop", "dst_id": "cart", "dst_port": 6379,
           "protocol": "TCP", "connections": 3, "reason": "anomaly: scan"}  # fmt: skip
    assert excluded_decision(row) == Decision("trust", from_="shop/debug-shell", to="shop/cart",
                                              port=6379, protocol="TCP")  # fmt: skip
    entity = {**row, "dst_kind": "cluster-entity", "dst_id": "kube-apiserver"}
    assert excluded_decision(entity) is None
    state.report = {**state.report, "excluded": [row, entity]}
    client = TestClient(review_app(state), follow_redirects=False)
    page = client.get(f"/?token={state.token}").text
    assert "no decision can name this peer" in page
    client.post(f"/decide?token={state.token}", data={"do": "trust", "excluded": "0"})
    assert load_decisions(state.decisions_path).entries == (excluded_decision(row),)
    assert "trusted" in client.get(f"/?token={state.token}").text


def test_report_values_are_escaped(state: ReviewState) -> None:
    bad = copy.deepcopy(state.report)
    bad["rules"][0].update(workload=HOSTILE, peers=[HOSTILE], flags=[HOSTILE], ports=[HOSTILE])
    bad["verdict"]["reasons"].append({"level": HOSTILE, "section": HOSTILE, "text": HOSTILE})
    bad["namespaces"][HOSTILE] = {"policies": HOSTILE}
    state.report = bad
    page = TestClient(review_app(state)).get(f"/?token={state.token}").text
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_diff_reports_names_removed_and_added_rules(state: ReviewState) -> None:
    before = state.report
    after = copy.deepcopy(before)
    gone = after["rules"].pop(0)
    new = {**gone, "ports": ["TCP/1"]}
    after["rules"].append(new)
    after["verdict"] = {"verdict": "ready", "reasons": []}
    change = diff_reports(before, after)
    assert change.removed == (gone,) and change.added == (new,)
    assert (change.verdict_before, change.verdict_after) == ("review first", "ready")
    assert diff_reports(before, before).removed == ()


def test_rejecting_any_sample_rule_takes_exactly_that_rule_away() -> None:
    """Every rule of the sample (DNS to coredns by selector, ipBlocks, several peers, ingress
    and egress): its reject entries remove it on the next run, and what else changes is the
    same edge seen from its other end (the mirror rule) or a rule that loses that peer."""
    from recommender.synthesis.decisions import Decisions

    report = recommend(SAMPLE).report
    for rule in report["rules"]:
        entries = rule_decisions(rule, report)
        change = diff_reports(report, recommend(SAMPLE, decisions=Decisions(tuple(entries))).report)
        assert rule in change.removed, rule
        ends = {d.from_ for d in entries} | {d.to for d in entries}
        for other in change.removed:
            assert f"{other['namespace']}/{other['workload']}" in ends, (rule, other)
        narrowed = {(r["namespace"], r["workload"], r["direction"]) for r in change.removed}
        for new in change.added:
            assert (new["namespace"], new["workload"], new["direction"]) in narrowed, new
            assert set(new["peers"]) < {p for r in change.removed for p in r["peers"]}


def test_a_failed_rerun_is_said_on_the_page(run_dir: Path, tmp_path: Path) -> None:
    from recommender.errors import InputError

    def broken(path: Path) -> dict[str, Any]:
        raise InputError("no flows in flows.parquet")

    def buggy(path: Path) -> dict[str, Any]:
        raise KeyError("x")

    for rerun, said in ((broken, "The re-run failed: no flows"), (buggy, "internal error")):
        state = ReviewState.open(run_dir, tmp_path / "d.yaml", rerun)
        client = TestClient(review_app(state))
        page = client.post(f"/rerun?token={state.token}").text  # followed to the page
        assert said in page and "Traceback" not in page
