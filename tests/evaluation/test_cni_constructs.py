"""Truth tables, one per construct, of what issue 18 made `evaluate` judge: the whole Calico
selector language in policies and rules, notSelector, namespace and service-account scopes,
nets/notNets, ports/notPorts on both sides, ipVersion, http; Cilium fromRequires/toRequires,
toServices, CIDR groups, endPort. Verdicts follow Felix's rule conversion
(libcalico-go updateprocessors/rules.go) and Cilium's policy documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recommender.errors import InputError, UnsupportedDialectError
from recommender.evaluation.evaluator import Cluster, Endpoint, Namespace, Pod
from recommender.evaluation.services import ServiceMap
from recommender.evaluation.stack import read_policy_tree

NS = {
    "x": Namespace("x", {"env": "prod", "team": "shop"}),
    "y": Namespace("y", {"env": "dev"}),
    "z": Namespace("z", {"env": "prod-eu"}),
}
SA = "projectcalico.org/serviceaccount"
WEB = Pod("x", "web", {"app": "web", "tier": "front", SA: "web-sa"})
API = Pod("x", "api", {"app": "api", "tier": "back", "version": "v2-beta", SA: "api-sa"})
DB = Pod("x", "db", {"app": "db", "tier": "back"})
DEV = Pod("y", "dev", {"app": "web", "tier": "front"})
EU = Pod("z", "eu", {"app": "web", "tier": "front"})
CLUSTER = Cluster(NS, (WEB, API, DB, DEV, EU))
OUT = Endpoint("203.0.113.7", "external")
OUT_OTHER = Endpoint("198.51.100.9", "external")
OUT6 = Endpoint("2001:db8::7", "external")


def _tree(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    return read_policy_tree(path)


def _calico_db(ingress: str, extra: str = "", selector: str = "app == 'db'") -> str:
    """A Calico NetworkPolicy on x/db (ingress only) with the given rule list."""
    return f"""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: p, namespace: x}}
spec:
  selector: "{selector}"
  types: [Ingress]
  ingress: {ingress}
{extra}"""


def _allowed(tree: Any, src: Any, dst: Any = DB, port: int = 5432, **kw: Any) -> bool:
    return bool(tree.verdict(CLUSTER, src, dst, "TCP", port, **kw).allowed)


# --- Calico policy selectors: the whole language -----------------------------------------------


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ("app == 'db' || app == 'api'", {"x/db", "x/api"}),
        ("tier == 'back' && !(app == 'api')", {"x/db"}),
        ("version starts with 'v2'", {"x/api"}),
        ("version ends with 'beta' || app contains 'eb'", {"x/api", "x/web"}),
        ("!has(version) && tier in {'back', 'x'}", {"x/db"}),
        ("app not in {'web', 'db'}", {"x/api"}),
        ("all()", {"x/web", "x/api", "x/db"}),  # a namespaced policy: its namespace only
        ("projectcalico.org/namespace == 'y'", set()),  # ... even when asked for another
        ("projectcalico.org/serviceaccount == 'web-sa'", {"x/web"}),
        ("pcns.team == 'shop' && tier == 'front'", {"x/web"}),  # namespace labels, pcns.
    ],
)
def test_calico_policy_selector_language(tmp_path: Path, selector: str, selected: set[str]
                                         ) -> None:
    tree = _tree(tmp_path, _calico_db("[]", selector=selector))
    isolated = {
        pod.key for pod in CLUSTER.pods
        if not tree.verdict(CLUSTER, EU if pod is not EU else DEV, pod, "TCP", 80).allowed
    }
    assert isolated == selected


def test_calico_global_policy_namespace_selector_language(tmp_path: Path) -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  namespaceSelector: "env starts with 'prod' && !(env ends with 'eu')"
  selector: tier == 'front'
  types: [Ingress]
"""
    tree = _tree(tmp_path, text)
    assert not _allowed(tree, DB, WEB, 80)  # x: prod, front
    assert _allowed(tree, DB, EU, 80)  # z: prod-eu
    assert _allowed(tree, DB, DEV, 80)  # y: dev


# --- Calico rule entities ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        # selector || in a rule; the policy's namespace scopes it
        ("{selector: app == 'web' || app == 'api'}", {"x/web", "x/api"}),
        # notSelector alone: the policy's namespace, less the endpoints it matches
        ("{notSelector: app == 'web'}", {"x/api"}),
        # notSelector is not namespace-scoped: it excludes web everywhere, dev matches selector
        ("{namespaceSelector: all(), notSelector: app == 'web'}", {"x/api"}),
        ("{namespaceSelector: all(), notSelector: env == 'prod'}",
         {"x/web", "x/api", "y/dev", "z/eu"}),
        # namespaceSelector with the language, and projectcalico.org/name
        ("{namespaceSelector: \"env == 'dev' || projectcalico.org/name == 'z'\"}",
         {"y/dev", "z/eu"}),
        ("{namespaceSelector: \"env contains 'prod'\", selector: tier == 'front'}",
         {"x/web", "z/eu"}),
        # global(): no workload endpoint
        ("{namespaceSelector: global()}", set()),
        # service accounts: names and the name in a selector
        ("{serviceAccounts: {names: [api-sa, other]}}", {"x/api"}),
        ("{serviceAccounts: {selector: \"projectcalico.org/name starts with 'web'\"}}",
         {"x/web"}),
        ("{serviceAccounts: {names: [web-sa]}, selector: app == 'api'}", set()),
        # nothing: every source, outside the cluster too
        ("{}", {"x/web", "x/api", "y/dev", "z/eu", "203.0.113.7", "198.51.100.9"}),
        # nets and notNets: addresses outside the cluster
        ("{nets: [203.0.113.0/24]}", {"203.0.113.7"}),
        ("{notNets: [203.0.113.0/24]}", {"x/web", "x/api", "y/dev", "z/eu", "198.51.100.9"}),
        ("{nets: [0.0.0.0/0], notNets: [203.0.113.0/24]}", {"198.51.100.9"}),
    ],
)
def test_calico_rule_entities(tmp_path: Path, source: str, allowed: set[str]) -> None:
    tree = _tree(tmp_path, _calico_db(f"[{{action: Allow, source: {source}}}]"))
    sources = [p for p in CLUSTER.pods if p is not DB] + [OUT, OUT_OTHER]
    got = {s.key if isinstance(s, Pod) else s.ip for s in sources if _allowed(tree, s)}
    assert got == allowed


def test_calico_network_sets_by_selector_and_not_selector(tmp_path: Path) -> None:
    sets = """---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: x, labels: {kind: partner, tier: gold}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: bad, labels: {kind: blocked}}
spec: {nets: [198.51.100.0/24]}
"""
    rules = ("[{action: Deny, source: {namespaceSelector: global(), selector: kind == 'blocked'}},"
             " {action: Allow, source: {selector: \"kind == 'partner' && tier in {'gold'}\"}},"
             " {action: Allow, source: {nets: [198.51.100.0/24]}}]")
    tree = _tree(tmp_path, _calico_db(rules, sets))
    assert _allowed(tree, OUT)  # the namespaced set, by a selector with in {}
    assert not _allowed(tree, OUT_OTHER)  # the global set, denied before the nets allow
    # notSelector in a namespaced policy also scopes the rule to the policy's namespace (Felix:
    # "as soon as any of the selector fields are used, including NotSelector"): the global set
    # is out of scope, the namespaced one is excluded by the notSelector.
    tree = _tree(tmp_path, _calico_db(
        "[{action: Allow, source: {nets: [0.0.0.0/0], notSelector: kind == 'partner'}}]", sets))
    assert not _allowed(tree, OUT) and not _allowed(tree, OUT_OTHER)
    assert _allowed(tree, WEB) is False  # a pod: nets never hold one
    tree = _tree(tmp_path, _calico_db(
        "[{action: Allow, source: {nets: [0.0.0.0/0], notSelector: kind == 'partner', "
        "namespaceSelector: global()}}]", sets))
    assert not _allowed(tree, OUT) and _allowed(tree, OUT_OTHER)


@pytest.mark.parametrize(
    ("rule", "port", "allowed"),
    [
        ("{action: Allow, protocol: TCP, destination: {ports: [5432, '6000:6010']}}", 6005, True),
        ("{action: Allow, protocol: TCP, destination: {notPorts: [5432]}}", 5432, False),
        ("{action: Allow, protocol: TCP, destination: {notPorts: [5432]}}", 5433, True),
        ("{action: Allow, notProtocol: TCP}", 5432, False),
        ("{action: Allow, notProtocol: UDP}", 5432, True),
        # source ports: the client's ephemeral port (32768-60999)
        ("{action: Allow, protocol: TCP, source: {ports: ['1024:65535']}}", 5432, True),
        ("{action: Allow, protocol: TCP, source: {ports: [53, '1:1023']}}", 5432, False),
        ("{action: Allow, protocol: TCP, source: {notPorts: ['1:1023']}}", 5432, True),
        ("{action: Allow, protocol: TCP, source: {notPorts: ['30000:61000']}}", 5432, False),
        # a rule narrowing the policy's own endpoints (destination of an ingress rule)
        ("{action: Allow, destination: {selector: app == 'api'}}", 5432, False),
        ("{action: Allow, destination: {selector: \"app == 'db' || app == 'api'\"}}", 5432,
         True),
        ("{action: Allow, destination: {notSelector: app == 'db'}}", 5432, False),
        # icmp rules match ICMP only
        ("{action: Allow, protocol: ICMP, icmp: {type: 8}}", 5432, False),
    ],
)
def test_calico_rule_ports_and_own_side(tmp_path: Path, rule: str, port: int, allowed: bool
                                        ) -> None:
    tree = _tree(tmp_path, _calico_db(f"[{rule}]"))
    assert _allowed(tree, WEB, DB, port) == allowed


def test_calico_ip_version(tmp_path: Path) -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  selector: app == 'db'
  types: [Egress]
  egress: [{action: Allow, ipVersion: 6}]
"""
    tree = _tree(tmp_path, text)
    assert _allowed(tree, DB, OUT6, 443)
    assert not _allowed(tree, DB, OUT, 443)
    assert not _allowed(tree, DB, WEB, 443, family=4)  # pods: the family of their addresses
    assert _allowed(tree, DB, WEB, 443, family=6)
    assert _allowed(tree, DB, WEB, 443)  # unknown: the clause matches


def test_calico_http_match_request_by_request(tmp_path: Path) -> None:
    rules = ("[{action: Allow, protocol: TCP, http: {methods: [GET], paths: [{exact: /health}, "
             "{prefix: /api/}]}}]")
    tree = _tree(tmp_path, _calico_db(rules))
    assert tree.matches_requests
    assert _allowed(tree, WEB, requests=("GET /api/v1/items", "GET /health"))
    assert not _allowed(tree, WEB, requests=("GET /api/v1/items", "POST /api/v1/items"))
    assert not _allowed(tree, WEB, requests=("GET /healthz",))
    assert _allowed(tree, WEB)  # no L7 records: judged at L4
    assert any("http" in n for n in tree.notes)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (_calico_db("[]", selector="app == db"), InputError, "not a Calico selector"),
        (_calico_db("[{action: Allow, source: {selector: 'a in {b}'}}]"), InputError,
         "not a Calico selector"),
        (_calico_db("[{action: Allow, source: {ports: [80]}}]"), InputError, "need protocol"),
        (_calico_db("[{action: Allow, ipVersion: 5}]"), InputError, "ipVersion"),
        (_calico_db("[{action: Allow, source: {services: {name: s}, selector: a == 'b'}}]"),
         InputError, "services cannot go with selectors"),
        (_calico_db("[{action: Allow, protocol: GRE}]"), UnsupportedDialectError,
         "protocol 'GRE' is not evaluated"),
        (_calico_db("[{action: Allow, protocol: TCP, source: {ports: ['40000:70000']}}]"),
         UnsupportedDialectError, "part of the ephemeral range"),
    ],
)
def test_calico_refusals_say_what_and_why(tmp_path: Path, text: str, error: type, message: str
                                          ) -> None:
    with pytest.raises(error, match=message):
        _tree(tmp_path, text)


# --- Cilium --------------------------------------------------------------------------------------


def _cilium(spec: str, extra: str = "") -> str:
    return f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: p, namespace: x}}
spec:
{spec}
{extra}"""


def test_cilium_from_requires_narrows_every_rule_of_the_endpoint(tmp_path: Path) -> None:
    """fromRequires of one policy narrows the fromEndpoints of another selecting the same
    endpoint; it grants nothing and leaves CIDR peers alone."""
    text = _cilium("""  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: front, "k8s:io.kubernetes.pod.namespace": x}},
                    {matchLabels: {"k8s:io.kubernetes.pod.namespace": y}}]
  - fromCIDR: [203.0.113.0/24]""", """---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: prod-only}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromRequires: [{matchLabels: {"io.cilium.k8s.namespace.labels.env": prod}}]
""")
    tree = _tree(tmp_path, text)
    assert _allowed(tree, WEB)  # x is prod
    assert not _allowed(tree, DEV)  # y is dev: the requirement fails
    assert not _allowed(tree, API)  # not tier front, the requirement grants nothing
    assert _allowed(tree, OUT)  # CIDR peers are not narrowed


def test_cilium_to_requires_and_deny_requirements_stay_apart(tmp_path: Path) -> None:
    text = _cilium("""  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{}]
    toRequires: [{matchExpressions: [{key: tier, operator: In, values: [back]}]}]
  egressDeny:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "22"}]}]""")
    tree = _tree(tmp_path, text)
    assert _allowed(tree, WEB, DB, 5432) and _allowed(tree, WEB, API, 80)
    assert not _allowed(tree, WEB, API, 22)  # the deny is not narrowed by toRequires
    assert not _allowed(tree, WEB, Pod("x", "web2", {"app": "x", "tier": "front"}), 80)


#: What the flows show: x/db reached through Service x/db on 5432, z/eu through z/search,
#: 203.0.113.7 through a selectorless Service "search", and x/api through z/search's namesake
#: in x (a different Service).
SERVICES = ServiceMap({
    ("x", "db"): {"x/db": frozenset({("TCP", 5432)})},
    ("z", "search"): {"z/eu": frozenset({("TCP", 9200)})},
    ("x", "search"): {"x/api": frozenset({("TCP", 9200)})},
    ("*", "search"): {"203.0.113.7": frozenset({("TCP", 9200)})},
})


def test_cilium_to_services_by_the_endpoints_the_flows_show(tmp_path: Path) -> None:
    text = _cilium("""  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toServices: [{k8sService: {serviceName: db}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - toServices: [{k8sService: {serviceName: search, namespace: z}}]""")
    tree = _tree(tmp_path, text)
    assert _allowed(tree, WEB, DB, 5432, services=SERVICES)
    assert not _allowed(tree, WEB, DB, 5433, services=SERVICES)  # toPorts
    assert not _allowed(tree, WEB, DB, 5432)  # no Service endpoints known
    assert not _allowed(tree, WEB, API, 5432, services=SERVICES)  # not an endpoint of db
    assert _allowed(tree, WEB, EU, 80, services=SERVICES)  # any port: no toPorts
    assert not _allowed(tree, WEB, API, 9200, services=SERVICES)  # x/search is another one
    assert _allowed(tree, WEB, OUT, 9200, services=SERVICES)  # selectorless: by name
    assert any("toServices" in n for n in tree.notes)


def test_calico_services_source_and_destination(tmp_path: Path) -> None:
    """A destination Service matches its endpoints on the ports they serve it on (Felix's
    IP-and-port set); a source Service its endpoints (Felix's IP set)."""
    text = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  selector: app == 'web'
  egress: [{action: Allow, destination: {services: {name: db}}},
           {action: Allow, destination: {services: {name: search, namespace: z}}}]
  ingress: [{action: Allow, source: {services: {name: db}}}]
"""
    tree = _tree(tmp_path, text)
    assert _allowed(tree, WEB, DB, 5432, services=SERVICES)
    assert not _allowed(tree, WEB, DB, 5433, services=SERVICES)  # not a port it serves db on
    assert _allowed(tree, WEB, EU, 9200, services=SERVICES)
    assert not _allowed(tree, WEB, API, 9200, services=SERVICES)
    assert not _allowed(tree, WEB, DB, 5432)  # nothing known
    assert _allowed(tree, DB, WEB, 8080, services=SERVICES)  # source: any port
    assert not _allowed(tree, API, WEB, 8080, services=SERVICES)


def test_cilium_cidr_groups_and_end_port(tmp_path: Path) -> None:
    text = _cilium("""  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidrGroupRef: partners, except: [203.0.113.128/25]}]
    toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
  - toCIDRSet: [{cidrGroupSelector: {matchLabels: {role: blocked}}}]""", """---
apiVersion: cilium.io/v2alpha1
kind: CiliumCIDRGroup
metadata: {name: partners}
spec: {externalCIDRs: [203.0.113.0/24]}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumCIDRGroup
metadata: {name: other, labels: {role: blocked}}
spec: {externalCIDRs: ["2001:db8::/32"]}
""")
    tree = _tree(tmp_path, text)
    assert _allowed(tree, WEB, OUT, 8050)
    assert not _allowed(tree, WEB, OUT, 8101)  # beyond endPort
    assert not _allowed(tree, WEB, Endpoint("203.0.113.200"), 8050)  # except
    assert not _allowed(tree, WEB, OUT_OTHER, 8050)
    assert _allowed(tree, WEB, OUT6, 1)  # the group selected by its labels


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        ("toGroups: [{aws: {securityGroupsIds: [sg-1]}}]", UnsupportedDialectError,
         "cloud provider"),
        ("toNodes: [{matchLabels: {a: b}}]", UnsupportedDialectError, "node labels"),
        ("toServices: [{k8sServiceSelector: {selector: {matchLabels: {a: b}}}}]",
         UnsupportedDialectError, "Service labels|by their labels"),
        ("toCIDRSet: [{cidrGroupRef: missing}]", InputError, "names no CiliumCIDRGroup"),
    ],
)
def test_cilium_refusals_say_what_and_why(tmp_path: Path, rule: str, error: type, message: str
                                          ) -> None:
    text = _cilium(f"  endpointSelector: {{}}\n  egress:\n  - {rule}")
    with pytest.raises(error, match=message):
        _tree(tmp_path, text)


def test_calico_global_policy_service_account_selector_all(tmp_path: Path) -> None:
    """Felix rewrites all() in a GlobalNetworkPolicy's serviceAccountSelector as
    has(projectcalico.org/serviceaccount): only pods with a (known) service account."""
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec:
  serviceAccountSelector: all()
  types: [Ingress]
"""
    tree = _tree(tmp_path, text)
    assert not _allowed(tree, DB, WEB, 80) and not _allowed(tree, DB, API, 80)
    assert _allowed(tree, WEB, DB, 80) and _allowed(tree, WEB, DEV, 80)
    text = text.replace("all()", "\"projectcalico.org/name in {'api-sa'}\"")
    tree = _tree(tmp_path, text)
    assert not _allowed(tree, DB, API, 80) and _allowed(tree, DB, WEB, 80)


def test_calico_http_and_services_through_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `recommend evaluate` on the bundled Hubble sample: an http rule is judged on
    the edges' recorded requests (frontend -> catalog only GETs /api/products...: allowed;
    frontend -> cart also POSTs: denied), and a destination Service match on the Service
    endpoints the flows show (frontend reaches checkout through Service checkout)."""
    import json

    from recommender.cli import main

    sample = Path(__file__).resolve().parents[2] / "sample_flows" / "hubble.jsonl.gz"
    (tmp_path / "p.yaml").write_text("""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: backends, namespace: shop}
spec:
  selector: "app == 'cart' || app.kubernetes.io/name in {'catalog', 'checkout'}"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    http: {methods: [GET], paths: [{prefix: /api/products}, {exact: /api/cart}]}
  - action: Allow
    protocol: TCP
    destination: {services: {name: checkout}}
""")
    status = main(["evaluate", str(tmp_path / "p.yaml"), str(sample), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    denied = {(e["source"], e["destination"]) for e in report["false_denies"]}
    assert denied == {("shop/frontend", "shop/cart")}, report["false_denies"]
    assert any("http" in n for n in report["notes"])
    assert any("services" in n for n in report["notes"])


def test_cilium_reserved_label_alone_is_its_entity(tmp_path: Path) -> None:
    text = _cilium("""  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {"reserved:host": ""}}, {matchLabels: {"reserved:world": ""}}]""")
    tree = _tree(tmp_path, text)
    assert _allowed(tree, Endpoint("172.18.0.3", "host"))
    assert _allowed(tree, OUT)
    assert not _allowed(tree, WEB)
    mixed = _cilium("""  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {"reserved:host": "", app: web}}]""")
    with pytest.raises(UnsupportedDialectError, match="reserved"):
        _tree(tmp_path, mixed)


def test_calico_alp_tutorial_yaobank(shared: Path) -> None:
    """Calico Enterprise's application-layer policy tutorial (shared/datasets/calico-yaobank):
    customer takes GETs only, summary only the customer service account, database only the
    summary one; each workload runs as the service account of its name (10-yaobank.yaml)."""
    base = shared / "datasets" / "calico-yaobank"
    tree = read_policy_tree(base / "alp-tutorial.globalnetworkpolicies.yaml")
    pods = {
        name: Pod("default", name, {"app": name, SA: name}) for name in ("customer", "summary",
                                                                          "database")
    }
    cluster = Cluster({}, tuple(pods.values()))
    outside = Endpoint("198.51.100.20", "external")

    def allowed(src: Any, dst: str, requests: tuple[str, ...] = ()) -> bool:
        return bool(tree.verdict(cluster, src, pods[dst], "TCP", 80, requests=requests).allowed)

    assert allowed(outside, "customer", ("GET /",))
    assert not allowed(outside, "customer", ("POST /",))
    assert allowed(pods["customer"], "summary") and allowed(pods["summary"], "database")
    assert not allowed(pods["customer"], "database")
    assert not allowed(outside, "summary") and not allowed(pods["database"], "summary")


def test_service_map_from_edges() -> None:
    """Destinations reached through a Service are its endpoints, on the ports reached; an
    outside address is recorded by the Service's name alone; edges naming no Service add
    nothing."""
    import pyarrow as pa

    from recommender.evaluation.services import service_map

    edges = pa.table({
        "dst_service": ["db", "db", None, "search", "kubernetes"],
        "dst_kind": ["workload", "workload", "workload", "workload", "cluster-entity"],
        "dst_namespace": ["x", "x", "x", "z", None],
        "dst_id": ["db", "db", "api", "eu", "172.18.0.2"],
        "protocol": ["TCP", "UDP", "TCP", "TCP", "TCP"],
        "dst_port": [5432, 5432, 80, 9200, 6443],
    })
    found = service_map(edges)
    assert found.ports("x", "db", DB) == {("TCP", 5432), ("UDP", 5432)}
    assert not found.backs("x", "db", API) and not found.backs("y", "db", DB)
    assert found.backs("*", "search", EU) and not found.backs("x", "search", EU)
    assert found.backs("default", "kubernetes", Endpoint("172.18.0.2"))
    assert len(service_map(edges.drop_columns(["dst_service"]))) == 0
