"""Reading NetworkPolicy manifests into the model: defaults, round trips, real policy sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recommender.errors import InputError, UnsupportedDialectError
from recommender.policy._yaml import dump_yaml, load_yaml_documents
from recommender.policy.kubernetes import render_kubernetes
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from recommender.policy.reader import parse_networkpolicy, read_policies

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def netpol(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", **metadata},
        "spec": spec,
    }


def test_defaults_namespace_and_policy_types() -> None:
    policy = parse_networkpolicy(netpol({"podSelector": {}}))
    assert policy == Policy("p", "default", LabelSelector(), ("ingress",))


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({"egress": [{}]}, ("ingress", "egress")),
        # the API server adds Egress only when egress holds rules (len(spec.Egress) != 0)
        ({"egress": []}, ("ingress",)),
        ({"policyTypes": ["Egress"]}, ("egress",)),
        ({"policyTypes": [], "ingress": [{}]}, ("ingress",)),
        ({"policyTypes": ["Egress", "Ingress"]}, ("ingress", "egress")),
    ],
)
def test_policy_types_inference(spec: dict[str, Any], types: tuple[str, ...]) -> None:
    assert parse_networkpolicy(netpol({"podSelector": {}, **spec})).policy_types == types


def test_allow_all_rule_versus_no_rule() -> None:
    allow = parse_networkpolicy(netpol({"podSelector": {}, "ingress": [{}]}))
    deny = parse_networkpolicy(netpol({"podSelector": {}, "ingress": []}))
    assert allow.ingress == (Rule("ingress", ()),)
    assert deny.ingress == ()


def test_rules_outside_policy_types_are_dropped() -> None:
    policy = parse_networkpolicy(
        netpol({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}], "egress": [{}]})
    )
    assert policy.ingress == ()
    assert policy.egress == (Rule("egress", ()),)


def test_peers_ports_and_selectors() -> None:
    policy = parse_networkpolicy(
        netpol(
            {
                "podSelector": {"matchLabels": {"app": "db", "tier": "back"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "web"}}},
                            {"namespaceSelector": {}},
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "team", "operator": "In", "values": ["b", "a"]},
                                        {"key": "tmp", "operator": "DoesNotExist"},
                                    ]
                                },
                                "podSelector": {},
                            },
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                        ],
                        "ports": [
                            {"port": 80},
                            {"protocol": "udp"},
                            {"port": 8000, "endPort": 8100},
                            {"protocol": "UDP", "port": "dns"},
                        ],
                    }
                ],
            },
            namespace="shop",
            labels={"owner": "me"},
        )
    )
    rule = policy.ingress[0]
    assert policy.selector == LabelSelector((("app", "db"), ("tier", "back")))
    assert policy.labels == (("owner", "me"),)
    assert rule.peers == (
        Peer("pods", pod_selector=LabelSelector((("app", "web"),))),
        Peer("pods", namespace_selector=LabelSelector()),
        Peer(
            "pods",
            namespace_selector=LabelSelector(
                (), (("team", "In", ("a", "b")), ("tmp", "DoesNotExist", ()))
            ),
            pod_selector=LabelSelector(),
        ),
        Peer("cidr", cidr="10.0.0.0/8", except_=("10.1.0.0/16",)),
    )
    assert rule.ports == (
        PortSpec("TCP", 80),
        PortSpec("UDP"),
        PortSpec("TCP", 8000, 8100),
        PortSpec("UDP", name="dns"),
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {}, "ingress": [{"from": [{}]}]},
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": "1.0.0.0/8"}, "podSelector": {}}]}],
        },
        {"podSelector": {}, "policyTypes": ["Sideways"]},
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
        {"podSelector": {}, "ingress": [{"ports": [{"port": 1.5}]}]},
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        {"podSelector": {}, "ingress": {"from": []}},
    ],
)
def test_malformed_policies_raise(spec: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        parse_networkpolicy(netpol(spec))


def test_named_port_renders_and_round_trips() -> None:
    policy = Policy(
        "p",
        "x",
        LabelSelector(),
        ("ingress",),
        ingress=(Rule("ingress", (), (PortSpec("UDP", name="dns"),)),),
    )
    manifests = render_kubernetes(PolicySet((policy,)))
    assert manifests[0]["spec"]["ingress"] == [{"ports": [{"protocol": "UDP", "port": "dns"}]}]
    assert parse_networkpolicy(manifests[0]) == policy
    assert not PortSpec("UDP", name="dns").contains("UDP", 53)


def test_lists_are_unpacked_and_other_kinds_skipped(tmp_path: Path) -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                netpol({"podSelector": {}}, namespace="x"),
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicyList",
                    "items": [netpol({"podSelector": {}}, name="q", namespace="x")],
                },
            ],
        },
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "all.yaml").write_text(dump_yaml(docs))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert [p.name for p in read_policies(tmp_path).policies] == ["p", "q"]


@pytest.mark.parametrize(
    ("api", "kind"),
    [
        ("projectcalico.org/v3", "NetworkPolicy"),
        ("cilium.io/v2", "CiliumNetworkPolicy"),
        ("policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"),
    ],
)
def test_other_policy_kinds_are_refused(tmp_path: Path, api: str, kind: str) -> None:
    (tmp_path / "p.yaml").write_text(
        dump_yaml([{"apiVersion": api, "kind": kind, "metadata": {"name": "p"}}])
    )
    with pytest.raises(UnsupportedDialectError, match="cannot evaluate"):
        read_policies(tmp_path / "p.yaml")


def test_duplicates_and_missing_paths_raise(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(dump_yaml([netpol({"podSelector": {}})] * 2))
    with pytest.raises(InputError, match="defined twice"):
        read_policies(tmp_path / "a.yaml")
    with pytest.raises(InputError, match="does not exist"):
        read_policies([tmp_path / "nope.yaml"])


GOLDEN_FILES = sorted((GOLDEN / "kubernetes").glob("*.yaml")) + sorted(
    (GOLDEN / "recommend").glob("*.yaml")
)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_files_round_trip(path: Path) -> None:
    manifests = load_yaml_documents(path.read_text(encoding="utf-8"))
    assert render_kubernetes(read_policies(path)) == manifests


@pytest.mark.parametrize(
    "folder",
    ["k8s-network-policy-recipes", "sock-shop/manifests-policy", "cyclonus/networkpolicies"],
)
def test_real_policy_sets_parse(shared: Path, folder: str) -> None:
    # one file at a time: the recipes hold two variants of the same policy (11-foo-deny-egress)
    files = sorted(
        f
        for f in (shared / "datasets" / folder).rglob("*")
        if f.suffix in (".yaml", ".yml", ".json")
    )
    count = sum(len(read_policies(f)) for f in files)
    assert count >= 10
    for f in files:
        for policy in read_policies(f).policies:
            # what was read renders again (the model holds nothing Kubernetes cannot express)
            assert parse_networkpolicy(render_kubernetes(PolicySet((policy,)))[0]) == policy
