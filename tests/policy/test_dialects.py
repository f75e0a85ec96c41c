"""Calico and Cilium writers: golden files for a small known graph, the shared schema
validator, determinism, and Calico selector quoting against a reference tokenizer.

Regenerate the golden files after an intended change with::

    UPDATE_GOLDEN=1 python -m pytest tests/policy/test_dialects.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.errors import ConfigError, SynthesisError
from recommender.policy._yaml import dump_yaml
from recommender.policy.calico import CalicoOptions, calico_selector, quote_value, render_calico
from recommender.policy.cilium import CiliumOptions, render_cilium
from recommender.policy.dialects import DialectOptions, parse_dialects, render_dialect
from recommender.policy.istio import IstioOptions, render_istio
from recommender.policy.kubernetes import render_kubernetes
from recommender.policy.model import (
    Evidence,
    HttpRule,
    LabelSelector,
    Peer,
    Policy,
    PolicySet,
    PortSpec,
    Rule,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dialects"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VALIDATOR = SHARED / "tools" / "validate_manifests.py"
MANAGED = (("app.kubernetes.io/managed-by", "recommender"),)
NS = "kubernetes.io/metadata.name"

needs_validator = pytest.mark.skipif(
    not VALIDATOR.is_file(), reason=f"the shared manifest validator {VALIDATOR} is absent"
)


def sel(**labels: str) -> LabelSelector:
    return LabelSelector.of(labels)


def shop_graph() -> PolicySet:
    """web (internet on 443) -> api (8080, HTTP GET/POST) -> kube-dns, api.example.com, the
    billing database group and the kubelet on a node; a node scraped by monitoring."""
    web_peer = Peer("pods", pod_selector=sel(app="web"), service_account="web", workload="web")
    api_peer = Peer("pods", pod_selector=sel(app="api"), service_account="api", workload="api")
    dns_peer = Peer(
        "pods",
        namespace_selector=sel(**{NS: "kube-system"}),
        pod_selector=sel(**{"k8s-app": "kube-dns"}),
    )
    internet = Peer("cidr", cidr="0.0.0.0/0", except_=("10.0.0.0/8", "172.16.0.0/12"))
    external = Peer(
        "cidr", cidr="203.0.113.10/32", dns_names=("api.example.com",), entities=("world",)
    )
    node = Peer("cidr", cidr="10.0.0.5/32", entities=("host",))
    db = Peer("cidr", cidr="10.20.0.0/24", group="billing-db")
    ev = Evidence(connections=5)
    web = Policy(
        "allow-web",
        "shop",
        sel(app="web"),
        ingress=(Rule("ingress", (internet,), (PortSpec("TCP", 443),), evidence=ev),),
        egress=(
            Rule("egress", (api_peer,), (PortSpec("TCP", 8080),), evidence=ev),
            Rule("egress", (dns_peer,), (PortSpec("TCP", 53), PortSpec("UDP", 53))),
        ),
        labels=MANAGED,
        service_account="web",
    )
    web_to_api = Peer(
        "pods",
        pod_selector=sel(app="web"),
        service_account="web",
        http=(
            HttpRule("TCP", 8080, "GET", "/api/items"),
            HttpRule("TCP", 8080, "POST", "/api/items/{id}.json"),
        ),
    )
    api = Policy(
        "allow-api",
        "shop",
        sel(app="api"),
        ingress=(Rule("ingress", (web_to_api,), (PortSpec("TCP", 8080), PortSpec("TCP", 9090))),),
        egress=(
            Rule("egress", (dns_peer,), (PortSpec("TCP", 53), PortSpec("UDP", 53))),
            Rule("egress", (external,), (PortSpec("TCP", 443),)),
            Rule("egress", (db,), (PortSpec("TCP", 5432),)),
            Rule("egress", (node,), (PortSpec("TCP", 10250),)),
        ),
        labels=MANAGED,
        annotations=(("recommender.io/address-groups", "billing-db=10.20.0.0/24"),),
        service_account="api",
    )
    deny = Policy("default-deny", "shop", LabelSelector(), labels=MANAGED)
    host = Policy(
        "allow-host-worker-1",
        "",
        sel(**{"kubernetes.io/hostname": "worker-1"}),
        policy_types=("ingress",),
        ingress=(
            Rule(
                "ingress",
                (
                    Peer(
                        "pods",
                        namespace_selector=sel(**{NS: "monitoring"}),
                        pod_selector=sel(app="prometheus"),
                    ),
                ),
                (PortSpec("TCP", 9100),),
            ),
        ),
        labels=MANAGED,
    )
    del web_peer
    return PolicySet((web, api, deny), (host,))


CASES = {
    "kubernetes": lambda ps: render_kubernetes(ps),
    "calico": lambda ps: render_calico(
        ps, CalicoOptions(group_labels=(("billing-db", (("role", "db"),)),))
    ),
    "calico-default-tier-network-sets": lambda ps: render_calico(
        ps, CalicoOptions(tier=None, network_sets=True)
    ),
    "calico-staged-service-accounts": lambda ps: render_calico(
        ps, CalicoOptions(staged=True, service_accounts=True)
    ),
    "cilium": lambda ps: render_cilium(ps),
    "cilium-fqdn-l7-service-accounts": lambda ps: render_cilium(
        ps, CiliumOptions(fqdn=True, l7=True, service_accounts=True)
    ),
    "istio": lambda ps: render_istio(ps),
    "istio-l7-strict-trust-domain": lambda ps: render_istio(
        ps, IstioOptions(trust_domain="prod.example", l7=True, mtls="strict")
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = dump_yaml(CASES[case](shop_graph()))
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"{golden} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text()


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


@needs_validator
def test_golden_files_pass_the_shared_validator() -> None:
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(GOLDEN)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout
    # Calico (with Tier, network set, staged, global), Cilium (namespaced and clusterwide) and
    # Kubernetes documents were all checked against a schema, none skipped.
    assert "skipped" not in result.stdout or " 0 skipped" in result.stdout


@needs_validator
def test_calico_domains_differ_from_valid_output_only_by_the_enterprise_field(
    tmp_path: Path,
) -> None:
    manifests = render_calico(shop_graph(), CalicoOptions(domains=True))
    api = next(m for m in manifests if m["metadata"]["name"].endswith("allow-api"))
    rule = next(r for r in api["spec"]["egress"] if "domains" in r.get("destination", {}))
    assert rule == {
        "action": "Allow",
        "protocol": "TCP",
        "destination": {"domains": ["api.example.com"], "ports": [443]},
    }
    (tmp_path / "out.yaml").write_text(dump_yaml(manifests))
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(tmp_path)], capture_output=True, text=True, check=False
    )
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1 and "'domains' was unexpected" in failures[0], result.stdout


def test_output_is_deterministic_and_independent_of_input_order() -> None:
    graph = shop_graph()
    shuffled = PolicySet(tuple(reversed(graph.policies)), graph.host_policies)
    for render in CASES.values():
        assert dump_yaml(render(graph)) == dump_yaml(render(shuffled))


# --- Calico specifics ------------------------------------------------------------------------


def _by_name(manifests: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests}


def test_calico_tier_order_and_default_deny() -> None:
    out = _by_name(render_calico(shop_graph()))
    assert out["recommendations"] == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Tier",
        "metadata": {"name": "recommendations"},
        "spec": {"defaultAction": "Deny", "order": 5000},
    }
    deny = out["recommendations.default-deny"]
    assert deny["spec"] == {
        "tier": "recommendations",
        "order": 1000,
        "selector": "all()",
        "types": ["Ingress", "Egress"],
    }
    assert out["recommendations.allow-api"]["spec"]["order"] == 100
    # The network set the rules select by its label, globally.
    assert out["billing-db"]["kind"] == "GlobalNetworkSet"
    db_rule = out["recommendations.allow-api"]["spec"]["egress"][3]
    assert db_rule["destination"] == {
        "selector": "recommender.io/address-group == 'billing-db'",
        "namespaceSelector": "global()",
        "ports": [5432],
    }
    host = out["recommendations.allow-host-worker-1"]
    assert host["kind"] == "GlobalNetworkPolicy"
    assert host["spec"]["selector"] == "kubernetes.io/hostname == 'worker-1'"
    assert host["spec"]["types"] == ["Ingress"]


def test_calico_address_group_with_several_cidrs_is_one_rule_and_one_set() -> None:
    peers = tuple(
        Peer("cidr", cidr=c, group="partner") for c in ("198.51.100.0/24", "2001:db8::/64")
    )
    policy = Policy("p", "shop", sel(app="a"), egress=(Rule("egress", peers),))
    network_set, rendered = render_calico(PolicySet((policy,)), CalicoOptions(tier=None))
    assert network_set["spec"] == {"nets": ["198.51.100.0/24", "2001:db8::/64"]}
    assert rendered["spec"]["egress"] == [
        {
            "action": "Allow",
            "destination": {
                "selector": "recommender.io/address-group == 'partner'",
                "namespaceSelector": "global()",
            },
        }
    ]


def test_calico_staged_kinds() -> None:
    kinds = {m["kind"] for m in render_calico(shop_graph(), CalicoOptions(staged=True))}
    assert kinds == {"Tier", "GlobalNetworkSet", "StagedGlobalNetworkPolicy", "StagedNetworkPolicy"}


def test_calico_deny_and_pass_rules_keep_their_action() -> None:
    rule_deny = Rule("egress", (Peer("cidr", cidr="169.254.169.254/32"),), action="deny")
    rule_pass = Rule("egress", (), action="pass")
    policy = Policy("guard", "shop", LabelSelector(), egress=(rule_deny, rule_pass))
    spec = render_calico(PolicySet((policy,)), CalicoOptions(tier=None))[0]["spec"]
    assert spec["egress"] == [
        {"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}},
        {"action": "Pass"},
    ]


def test_calico_same_namespace_pods_are_limited_to_the_namespace() -> None:
    # A namespaced Calico rule without a selector would match every source anywhere.
    peer = Peer("pods", pod_selector=None)
    policy = Policy("p", "shop", sel(app="a"), ingress=(Rule("ingress", (peer,)),))
    spec = render_calico(PolicySet((policy,)), CalicoOptions(tier=None))[0]["spec"]
    assert spec["ingress"] == [{"action": "Allow", "source": {"selector": "all()"}}]


def test_calico_selector_expressions() -> None:
    selector = LabelSelector(
        (("app", "web"),),
        (
            ("env", "In", ("prod", "staging")),
            ("tier", "NotIn", ("test",)),
            ("canary", "DoesNotExist", ()),
            ("team", "Exists", ()),
        ),
    )
    assert calico_selector(selector) == (
        "app == 'web' && env in {'prod', 'staging'} && tier not in {'test'} && !has(canary) "
        "&& has(team)"
    )


# A reference tokenizer for Calico selectors (projectcalico/calico lib/selector/tokenizer):
# identifiers, operators, and string literals in single or double quotes without escapes.
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'[^']*'|"[^"]*")
    | (?P<op>==|!=|&&|\|\||!|\(|\)|\{|\}|,)
    | (?P<kw>has|all|in|not\s+in)(?=[\s({])
    | (?P<id>[A-Za-z0-9_./-]+)
    )""",
    re.VERBOSE,
)


def _parse_equalities(text: str) -> list[tuple[str, str]]:
    """(key, value) of every ``key == 'value'`` term, via the reference tokens."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match is not None and match.end() > pos, f"untokenisable at {text[pos:]!r}"
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    pairs = []
    for i in range(0, len(tokens), 4):
        (k1, key), (k2, op), (k3, literal) = tokens[i : i + 3]
        assert (k1, k2, k3, op) == ("id", "op", "str", "==")
        pairs.append((key, literal[1:-1]))
        if i + 3 < len(tokens):
            assert tokens[i + 3] == ("op", "&&")
    return pairs


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9./_-]{0,20}", fullmatch=True),
        st.text(max_size=30),
        min_size=1,
        max_size=4,
    )
)
def test_hostile_label_values_are_quoted_safely_or_refused(labels: dict[str, str]) -> None:
    selector = LabelSelector.of(labels)
    try:
        text = calico_selector(selector)
    except SynthesisError as exc:
        # Refused only for what Calico cannot express: both quotes, or a control character.
        assert any(
            ("'" in v and '"' in v) or re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", v)
            for v in labels.values()
        ), exc
        return
    # Read back by the reference tokenizer: exactly the same keys and values, nothing injected.
    assert _parse_equalities(text) == sorted(labels.items())


def test_quote_value_examples() -> None:
    assert quote_value("a' || has(x)") == '"a\' || has(x)"'
    assert quote_value('a" || all()') == "'a\" || all()'"
    with pytest.raises(SynthesisError, match="both quote"):
        quote_value("'\"")
    with pytest.raises(SynthesisError, match="label key"):
        calico_selector(sel(**{"a b": "x"}))


# --- Cilium specifics ------------------------------------------------------------------------


def test_cilium_peers_map_to_endpoints_entities_cidrsets() -> None:
    out = _by_name(render_cilium(shop_graph()))
    api = out["allow-api"]["spec"]
    assert api["endpointSelector"] == {"matchLabels": {"app": "api"}}
    assert api["egress"][0]["toEndpoints"] == [
        {"matchLabels": {"k8s-app": "kube-dns", "k8s:io.kubernetes.pod.namespace": "kube-system"}}
    ]
    assert api["egress"][1] == {
        "toCIDRSet": [{"cidr": "203.0.113.10/32"}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
    }
    # The node's address is matched by entity: Cilium never applies CIDR rules to nodes.
    assert api["egress"][3] == {
        "toEntities": ["host"],
        "toPorts": [{"ports": [{"port": "10250", "protocol": "TCP"}]}],
    }
    web = out["allow-web"]["spec"]
    assert web["ingress"][0]["fromCIDRSet"] == [
        {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12"]}
    ]
    assert out["default-deny"]["spec"] == {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}
    host = out["allow-host-worker-1"]
    assert host["kind"] == "CiliumClusterwideNetworkPolicy"
    assert host["spec"]["nodeSelector"] == {"matchLabels": {"kubernetes.io/hostname": "worker-1"}}
    assert "egress" not in host["spec"]


def test_cilium_fqdn_adds_the_dns_proxy_rule() -> None:
    out = _by_name(render_cilium(shop_graph(), CiliumOptions(fqdn=True)))
    egress = out["allow-api"]["spec"]["egress"]
    assert egress[0]["toPorts"] == [
        {
            "ports": [{"port": "53", "protocol": "TCP"}, {"port": "53", "protocol": "UDP"}],
            "rules": {"dns": [{"matchPattern": "*"}]},
        }
    ]
    assert {"toFQDNs": [{"matchName": "api.example.com"}]}.items() <= egress[1].items()
    # A policy without toFQDNs keeps plain DNS rules.
    web_dns = out["allow-web"]["spec"]["egress"][1]["toPorts"]
    assert "rules" not in web_dns[0]


def test_cilium_fqdn_without_a_dns_rule_gets_kube_dns() -> None:
    peer = Peer("cidr", cidr="198.51.100.7/32", dns_names=("example.org",))
    policy = Policy(
        "p",
        "shop",
        sel(app="a"),
        policy_types=("egress",),
        egress=(Rule("egress", (peer,), (PortSpec("TCP", 443),)),),
    )
    spec = render_cilium(PolicySet((policy,)), CiliumOptions(fqdn=True))[0]["spec"]
    assert spec["egress"][-1]["toEndpoints"] == [
        {
            "matchLabels": {
                "k8s:io.kubernetes.pod.namespace": "kube-system",
                "k8s:k8s-app": "kube-dns",
            }
        }
    ]
    assert spec["egress"][-1]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}


def test_cilium_l7_rules_only_on_the_observed_port() -> None:
    out = _by_name(render_cilium(shop_graph(), CiliumOptions(l7=True)))
    rule = out["allow-api"]["spec"]["ingress"][0]
    assert rule["toPorts"] == [
        {"ports": [{"port": "9090", "protocol": "TCP"}]},
        {
            "ports": [{"port": "8080", "protocol": "TCP"}],
            "rules": {
                "http": [
                    {"method": "GET", "path": "/api/items"},
                    {"method": "POST", "path": r"/api/items/\{id\}\.json"},
                ]
            },
        },
    ]


def test_cilium_deny_rules_and_service_accounts() -> None:
    deny = Rule("egress", (Peer("cidr", cidr="169.254.169.254/32"),), action="deny")
    policy = Policy(
        "p", "shop", sel(app="a"), policy_types=("egress",), egress=(deny,), service_account="sa-a"
    )
    spec = render_cilium(PolicySet((policy,)), CiliumOptions(service_accounts=True))[0]["spec"]
    assert spec["endpointSelector"] == {
        "matchLabels": {"k8s:io.cilium.k8s.policy.serviceaccount": "sa-a"}
    }
    assert spec["egressDeny"] == [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}]}]
    assert spec["egress"] == [{}]
    with pytest.raises(SynthesisError, match="pass"):
        render_cilium(
            PolicySet(
                (Policy("q", "shop", LabelSelector(), egress=(Rule("egress", (), action="pass"),)),)
            )
        )


# --- dialect selection -----------------------------------------------------------------------


def test_parse_dialects() -> None:
    assert parse_dialects(None) == ("kubernetes",)
    assert parse_dialects("Calico") == ("calico",)
    assert parse_dialects(["cilium,calico", "kubernetes"]) == ("kubernetes", "calico", "cilium")
    assert parse_dialects("istio,kubernetes") == ("kubernetes", "istio")
    with pytest.raises(ConfigError, match="unknown dialect 'linkerd'"):
        parse_dialects("calico,linkerd")


def test_render_dialect_dispatch() -> None:
    graph = shop_graph()
    assert render_dialect(graph, "kubernetes") == render_kubernetes(graph)
    assert render_dialect(graph, "calico", DialectOptions(tier=None)) == render_calico(
        graph, CalicoOptions(tier=None)
    )
    assert render_dialect(graph, "cilium", DialectOptions(l7=True)) == render_cilium(
        graph, CiliumOptions(l7=True)
    )
