"""Kubernetes NetworkPolicy rendering: golden files, the manifest validator, hostile names.

Golden files live in ``tests/golden/kubernetes/<case>.yaml``. When the renderer changes on
purpose, regenerate them explicitly and review the diff::

    UPDATE_GOLDEN=1 python -m pytest tests/policy/test_kubernetes.py

Regenerated cases are reported as skipped ("golden file regenerated"), never as passed, so a
regeneration cannot go unnoticed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.errors import SynthesisError
from recommender.policy._names import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_label_value,
    safe_name,
)
from recommender.policy._yaml import dump_yaml, load_yaml_documents
from recommender.policy.kubernetes import render_kubernetes, validate_k8s_names
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kubernetes"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VALIDATOR = SHARED / "tools" / "validate_manifests.py"

_skip_without_validator = pytest.mark.skipif(
    not VALIDATOR.is_file(), reason=f"the shared manifest validator {VALIDATOR} is absent"
)


def needs_validator(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test that runs the shared manifest validator (an oracle) as a subprocess."""
    marked: Callable[..., None] = pytest.mark.oracle(_skip_without_validator(test))
    return marked


MANAGED = (("app.kubernetes.io/managed-by", "recommender"),)


def sel(**labels: str) -> LabelSelector:
    return LabelSelector.of(labels)


def ns_sel(name: str) -> LabelSelector:
    return LabelSelector.of({"kubernetes.io/metadata.name": name})


# --- golden cases ----------------------------------------------------------------------------


def case_default_deny() -> PolicySet:
    return PolicySet(
        (
            Policy(
                "default-deny",
                "shop",
                LabelSelector(),
                labels=MANAGED,
                annotations=(("recommender.io/reason", "deny everything not allowed below"),),
            ),
        )
    )


def case_workload() -> PolicySet:
    ingress = (
        Rule(
            "ingress", (Peer("pods", pod_selector=sel(app="frontend")),), (PortSpec("TCP", 8080),)
        ),
        Rule(
            "ingress",
            (Peer("pods", namespace_selector=ns_sel("other"), pod_selector=sel(app="x")),),
            (PortSpec("TCP", 9090), PortSpec("TCP", 9091)),
        ),
    )
    egress = (
        Rule(
            "egress",
            (
                Peer(
                    "pods",
                    namespace_selector=ns_sel("kube-system"),
                    pod_selector=sel(**{"k8s-app": "kube-dns"}),
                ),
            ),
            (PortSpec("TCP", 53), PortSpec("UDP", 53)),
        ),
        Rule("egress", (Peer("cidr", cidr="203.0.113.10/32"),), (PortSpec("TCP", 443),)),
    )
    checkout = Policy(
        "checkout", "shop", sel(app="checkout"), ingress=ingress, egress=egress, labels=MANAGED
    )
    return PolicySet((checkout,))


def case_ranges_and_expressions() -> PolicySet:
    selector = LabelSelector(
        match_labels=(("team", "data"),),
        match_expressions=(
            ("canary", "DoesNotExist", ()),
            ("tier", "In", ("backend", "worker")),
        ),
    )
    ingress = (
        # No peers: from anywhere, on a NodePort-style range.
        Rule("ingress", (), (PortSpec("TCP", 30000, 32767),)),
        Rule(
            "ingress",
            (
                Peer(
                    "pods",
                    namespace_selector=LabelSelector(
                        match_expressions=(("env", "NotIn", ("dev", "test")),)
                    ),
                ),
            ),
            (PortSpec("SCTP", 3868), PortSpec("UDP")),
        ),
    )
    egress = (
        # No ports: every port and protocol to these blocks.
        Rule(
            "egress",
            (
                Peer("cidr", cidr="10.0.0.0/8", except_=("10.1.0.0/16", "10.2.0.0/16")),
                Peer("cidr", cidr="2001:db8::/32"),
            ),
        ),
    )
    batch = Policy(
        "batch.workers",
        "jobs",
        selector,
        ingress=ingress,
        egress=egress,
        # Values that a YAML parser would read as other types unless quoted.
        labels=(("build", "80"), ("enabled", "true"), ("switch", "on"), ("version", "1e3")),
    )
    egress_only = Policy(
        "egress-only",
        "jobs",
        sel(app="cron"),
        policy_types=("egress",),
        egress=(Rule("egress", (Peer("pods"),)),),
    )
    return PolicySet((egress_only, batch))


def case_multi_namespace() -> PolicySet:
    policies = (
        Policy(
            "web",
            "zeta",
            sel(app="web"),
            policy_types=("ingress",),
            ingress=(
                # Every pod of every namespace, and every pod of this namespace.
                Rule("ingress", (Peer("pods", namespace_selector=LabelSelector()),)),
                Rule("ingress", (Peer("pods", pod_selector=LabelSelector()),)),
            ),
        ),
        Policy("default-deny", "zeta", LabelSelector()),
        Policy("default-deny", "alpha", LabelSelector(), policy_types=("egress",)),
        Policy(
            "api",
            "alpha",
            sel(app="api"),
            policy_types=("egress", "ingress"),  # order of the tuple does not matter
            ingress=(
                Rule(
                    "ingress",
                    (Peer("pods", namespace_selector=ns_sel("zeta"), pod_selector=sel(app="web")),),
                    (PortSpec("TCP", 8443),),
                ),
            ),
            egress=(Rule("egress", (), (PortSpec("TCP", 5432),)),),
        ),
    )
    return PolicySet(policies)


CASES: dict[str, Callable[[], PolicySet]] = {
    "default-deny": case_default_deny,
    "workload": case_workload,
    "ranges-and-expressions": case_ranges_and_expressions,
    "multi-namespace": case_multi_namespace,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    manifests = render_kubernetes(CASES[case]())
    text = dump_yaml(manifests)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8", newline="\n")
        pytest.skip(f"golden file regenerated: {golden}")
    assert golden.is_file(), f"{golden} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(encoding="utf-8")
    assert load_yaml_documents(text) == manifests


def test_golden_folder_has_no_stray_files() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


def test_workload_shape() -> None:
    [manifest] = render_kubernetes(case_workload())
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]
    assert manifest["apiVersion"] == "networking.k8s.io/v1"
    assert manifest["kind"] == "NetworkPolicy"
    spec = manifest["spec"]
    assert list(spec) == ["podSelector", "policyTypes", "ingress", "egress"]
    assert spec["ingress"][0] == {
        "from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }
    assert spec["ingress"][1]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}},
            "podSelector": {"matchLabels": {"app": "x"}},
        }
    ]
    assert spec["egress"][1] == {
        "to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }


def test_peer_and_port_mapping() -> None:
    [batch, _] = render_kubernetes(case_ranges_and_expressions())
    ingress = batch["spec"]["ingress"]
    assert ingress[0] == {"ports": [{"protocol": "TCP", "port": 30000, "endPort": 32767}]}
    assert ingress[1]["from"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev", "test"]}]
            }
        }
    ]
    assert ingress[1]["ports"][1] == {"protocol": "UDP"}
    assert batch["spec"]["podSelector"]["matchExpressions"][0] == {
        "key": "canary",
        "operator": "DoesNotExist",
    }
    assert batch["spec"]["egress"] == [
        {
            "to": [
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
                {"ipBlock": {"cidr": "2001:db8::/32"}},
            ]
        }
    ]
    assert batch["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_policy_set_order_and_types() -> None:
    manifests = render_kubernetes(case_multi_namespace())
    assert [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests] == [
        ("alpha", "api"),
        ("alpha", "default-deny"),
        ("zeta", "default-deny"),
        ("zeta", "web"),
    ]
    assert manifests[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert manifests[1]["spec"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    assert manifests[3]["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {}}]},
        {"from": [{"podSelector": {}}]},
    ]


def test_bare_pods_peer_means_all_pods_of_own_namespace() -> None:
    [manifest] = render_kubernetes(
        PolicySet(
            (Policy("p", "ns", LabelSelector(), ingress=(Rule("ingress", (Peer("pods"),)),)),)
        )
    )
    assert manifest["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]


def test_empty_policy_set() -> None:
    assert render_kubernetes(PolicySet()) == []


# --- the independent manifest validator --------------------------------------------------------


def run_validator(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VALIDATOR), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@needs_validator
def test_golden_files_pass_validator() -> None:
    result = run_validator(GOLDEN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout


def random_policy(rng: random.Random, index: int) -> Policy:
    """A random but well-formed policy, for the validator oracle."""

    def selector() -> LabelSelector:
        labels = {rng.choice(["app", "tier", "x.io/role"]): rng.choice(["a", "b-1", "80", ""])}
        expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
        if rng.random() < 0.3:
            expressions = (("env", rng.choice(["In", "NotIn"]), ("prod", "stage")),)
        elif rng.random() < 0.2:
            expressions = (("canary", rng.choice(["Exists", "DoesNotExist"]), ()),)
        return LabelSelector(tuple(sorted(labels.items())), expressions)

    def peer() -> Peer:
        roll = rng.random()
        if roll < 0.25:
            return Peer("cidr", cidr="10.0.0.0/8", except_=("10.9.0.0/16",))
        if roll < 0.35:
            return Peer("cidr", cidr="fd00::/8")
        ns = rng.choice([None, LabelSelector(), ns_sel("other")])
        pod = rng.choice([None, LabelSelector(), selector()])
        return Peer("pods", namespace_selector=ns, pod_selector=pod)

    def port() -> PortSpec:
        protocol = rng.choice(["TCP", "UDP", "SCTP"])
        roll = rng.random()
        if roll < 0.2:
            return PortSpec(protocol)
        start = rng.randint(1, 65000)
        if roll < 0.4:
            return PortSpec(protocol, start, start + rng.randint(0, 535))
        return PortSpec(protocol, start)

    def rules(direction: str) -> tuple[Rule, ...]:
        return tuple(
            Rule(
                direction,  # type: ignore[arg-type]
                tuple(peer() for _ in range(rng.randint(0, 3))),
                tuple(port() for _ in range(rng.randint(0, 3))),
            )
            for _ in range(rng.randint(0, 3))
        )

    types = rng.choice([("ingress",), ("egress",), ("ingress", "egress")])
    return Policy(
        f"policy-{index}",
        rng.choice(["alpha", "beta"]),
        selector() if rng.random() < 0.8 else LabelSelector(),
        policy_types=types,  # type: ignore[arg-type]
        ingress=rules("ingress") if "ingress" in types else (),
        egress=rules("egress") if "egress" in types else (),
        labels=MANAGED,
    )


@needs_validator
def test_random_policies_pass_validator(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    policy_set = PolicySet(tuple(random_policy(rng, i) for i in range(60)))
    (tmp_path / "random.yaml").write_text(dump_yaml(render_kubernetes(policy_set)))
    result = run_validator(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "60 valid" in result.stdout


# --- what Kubernetes cannot express ----------------------------------------------------------


def one(policy: Policy) -> PolicySet:
    return PolicySet((policy,))


def ingress_policy(*rules: Rule, name: str = "p") -> Policy:
    return Policy(name, "ns", LabelSelector(), ingress=rules)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            ingress_policy(Rule("ingress", (Peer("entity", entity="kube-apiserver"),))),
            "entity peer 'kube-apiserver'",
        ),
        (ingress_policy(Rule("ingress", (Peer("pods"),), action="deny")), "'deny'"),
        (ingress_policy(Rule("ingress", (Peer("pods"),), action="pass")), "'pass'"),
        (ingress_policy(Rule("ingress", (), (PortSpec("ICMP"),))), "'ICMP'"),
        (ingress_policy(Rule("ingress", (), (PortSpec("TCP", 0),))), "not in 1..65535"),
        (ingress_policy(Rule("ingress", (), (PortSpec("TCP", 70000),))), "not in 1..65535"),
        (ingress_policy(Rule("ingress", (), (PortSpec("TCP", 90, 80),))), "port range 90-80"),
        (ingress_policy(Rule("ingress", (), (PortSpec("TCP", None, 80),))), "no start port"),
        (ingress_policy(Rule("egress", ())), "direction 'egress' among its ingress"),
        (
            ingress_policy(
                Rule("ingress", (Peer("cidr", cidr="10.0.0.0/8", except_=("10.0.0.0/8",)),))
            ),
            "not a strict subset",
        ),
        (
            ingress_policy(
                Rule("ingress", (Peer("cidr", cidr="10.0.0.0/8", except_=("fd00::/8",)),))
            ),
            "not a strict subset",
        ),
        (ingress_policy(Rule("ingress", (Peer("cidr", cidr="10.0.0.300/8"),))), "not a CIDR"),
        (ingress_policy(Rule("ingress", (Peer("cidr"),))), "without a CIDR"),
        (
            ingress_policy(Rule("ingress", (Peer("cidr", cidr="10.0.0.0/8", pod_selector=sel()),))),
            "also sets a selector",
        ),
        (
            ingress_policy(Rule("ingress", (Peer("pods", cidr="10.0.0.0/8"),))),
            "also sets a CIDR",
        ),
        (
            Policy(
                "p", "ns", LabelSelector(), policy_types=("egress",), ingress=(Rule("ingress", ()),)
            ),
            "does not list ingress",
        ),
        (Policy("p", "ns", LabelSelector(), policy_types=()), "isolates no direction"),
        (
            Policy("p", "ns", LabelSelector(match_expressions=(("a", "In", ()),))),
            "needs values",
        ),
        (
            Policy("p", "ns", LabelSelector(match_expressions=(("a", "Exists", ("x",)),))),
            "takes no values",
        ),
        (
            Policy("p", "ns", LabelSelector(match_expressions=(("a", "Gt", ("1",)),))),
            "not one of In",
        ),
    ],
)
def test_inexpressible_raises(policy: Policy, message: str) -> None:
    with pytest.raises(SynthesisError, match="'p' in namespace 'ns'") as info:
        render_kubernetes(one(policy))
    assert message in str(info.value)


def test_duplicate_names_raise() -> None:
    a = Policy("p", "ns", LabelSelector())
    b = Policy("p", "ns", sel(app="x"))
    with pytest.raises(SynthesisError, match="Two policies are named 'p'"):
        render_kubernetes(PolicySet((a, b)))


# --- names and labels --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (Policy("web", "../etc", LabelSelector()), "namespace '../etc'"),
        (Policy("web", "Shop", LabelSelector()), "namespace 'Shop'"),
        (Policy("web", "a" * 64, LabelSelector()), "not a DNS-1123 label"),
        (Policy("../../x", "ns", LabelSelector()), "name '../../x'"),
        (Policy("web\n", "ns", LabelSelector()), "not a DNS-1123 subdomain"),
        (Policy("a" * 254, "ns", LabelSelector()), "not a DNS-1123 subdomain"),
        (Policy("web", "ns", LabelSelector(), labels=(("app", "a\nb"),)), "value 'a\\nb'"),
        (Policy("web", "ns", LabelSelector(), labels=(("bad key", "x"),)), "key 'bad key'"),
        (Policy("web", "ns", LabelSelector(), labels=(("app", "x" * 64),)), "label value"),
        (Policy("web", "ns", LabelSelector(), annotations=(("a/b/c", "x"),)), "key 'a/b/c'"),
        (Policy("web", "ns", sel(app="x: y")), "value 'x: y'"),
        (
            Policy("web", "ns", LabelSelector(match_expressions=(("k", "In", ("ok", "-no")),))),
            "value '-no'",
        ),
        (
            ingress_policy(Rule("ingress", (Peer("pods", namespace_selector=sel(x="\u00e9")),))),
            "ingress peer",
        ),
        (
            ingress_policy(Rule("ingress", (Peer("pods", pod_selector=sel(x="a b")),))),
            "ingress peer",
        ),
    ],
)
def test_bad_names_raise_before_rendering(policy: Policy, fragment: str) -> None:
    with pytest.raises(SynthesisError) as info:
        validate_k8s_names(policy)
    assert fragment in str(info.value)
    with pytest.raises(SynthesisError):
        render_kubernetes(one(policy))


def test_annotation_values_are_free_text() -> None:
    policy = Policy("web", "ns", LabelSelector(), annotations=(("note", "a: b\n- c {}"),))
    validate_k8s_names(policy)
    [manifest] = render_kubernetes(one(policy))
    assert load_yaml_documents(dump_yaml([manifest])) == [manifest]


@pytest.mark.parametrize(
    ("text", "label", "subdomain"),
    [
        ("a", True, True),
        ("kube-system", True, True),
        ("0abc9", True, True),
        ("a.b", False, True),
        ("a..b", False, False),
        ("-a", False, False),
        ("a-", False, False),
        ("A", False, False),
        ("", False, False),
        ("a\n", False, False),
        ("a_b", False, False),
        ("\u00e9", False, False),
        ("a" * 63, True, True),
        ("a" * 64, False, True),
        (".".join(["a" * 63] * 4), False, False),  # 255 characters
        (".".join(["a" * 63] * 3 + ["a" * 61]), False, True),  # 253 characters
    ],
)
def test_dns1123(text: str, label: bool, subdomain: bool) -> None:
    assert is_dns1123_label(text) is label
    assert is_dns1123_subdomain(text) is subdomain


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("app", True),
        ("App_1.x", True),
        ("kubernetes.io/metadata.name", True),
        ("app.kubernetes.io/managed-by", True),
        ("a/b/c", False),
        ("/app", False),
        ("Example.com/app", False),
        ("app/", False),
        ("-app", False),
        ("a" * 63, True),
        ("a" * 64, False),
        ("app\n", False),
        ("", False),
    ],
)
def test_label_key(text: str, ok: bool) -> None:
    assert is_label_key(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [("", True), ("x", True), ("v1.2_3-a", True), ("-a", False), ("a b", False), ("a\n", False)],
)
def test_label_value(text: str, ok: bool) -> None:
    assert is_label_value(text) is ok


# --- safe_name -------------------------------------------------------------------------------


@given(st.text(), st.integers(min_value=11, max_value=63))
def test_safe_name_is_a_deterministic_valid_label(text: str, max_len: int) -> None:
    name = safe_name(text, max_len)
    assert is_dns1123_label(name)
    assert len(name) <= max_len
    assert safe_name(text, max_len) == name


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True))
def test_safe_name_keeps_valid_labels(text: str) -> None:
    assert safe_name(text) == text


@given(
    st.lists(
        st.one_of(
            st.text(max_size=80),
            st.text(alphabet="aA-._/ ", max_size=12),
            st.from_regex(r"[a-z]{60,70}", fullmatch=True),
        ),
        unique=True,
        max_size=40,
    )
)
def test_safe_name_is_injective(texts: list[str]) -> None:
    assert len({safe_name(text) for text in texts}) == len(texts)


def test_safe_name_examples() -> None:
    assert safe_name("frontend") == "frontend"
    assert safe_name("App") != safe_name("app") == "app"
    assert safe_name("a.b").startswith("a-b-")
    assert safe_name("a_b") != safe_name("a.b")
    long = safe_name("x" * 100)
    assert len(long) == 63 and long.startswith("x" * 52 + "-")
    assert is_dns1123_label(safe_name(""))
    assert is_dns1123_label(safe_name("---"))
    with pytest.raises(ValueError, match="max_len"):
        safe_name("x", 10)
