"""Calico and Cilium trees judged with each CNI's precedence: semantics case T, truth tables
from the CNIs' documentation, and the trees ``recommend -d`` writes judged like the Kubernetes
one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from recommender.cli import main
from recommender.errors import InputError, UnsupportedDialectError
from recommender.evaluation.evaluator import Cluster, Endpoint, Namespace, Pod, read_cluster
from recommender.evaluation.stack import read_policy_tree

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_flows"


def _tree(tmp_path: Path, text: str, **kwargs: Any) -> Any:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    return read_policy_tree(path, **kwargs)


# --- Calico ---------------------------------------------------------------------------------


def test_semantics_case_t(shared: Path) -> None:
    """Case T: GNP order 10 Deny beats the NetworkPolicy (order 1000), Pass skips the rest of
    the default tier, a selected endpoint with no matching rule hits the end-of-tier deny."""
    base = shared / "tools" / "examples" / "semantics"
    cluster = read_cluster(base / "topology.yaml")
    tree = read_policy_tree(base / "T-calico-order-deny-pass" / "policies.yaml")
    assert tree.dialect == "calico" and tree.native
    expectations = yaml.safe_load((base / "T-calico-order-deny-pass" / "expect.yaml").read_text())
    assert len(expectations) == 4
    for e in expectations:
        verdict = tree.verdict(cluster, e["src"], e["dst"], e["protocol"], e.get("port"))
        assert verdict.allowed == e["allowed"], (e, verdict)


NS = {"x": Namespace("x", {"env": "prod"}), "y": Namespace("y", {"env": "dev"})}
WEB = Pod("x", "web", {"app": "web"}, ports={"http": ("TCP", 8080)})
DB = Pod("x", "db", {"app": "db"})
DEV = Pod("y", "dev", {"app": "web"})
CLUSTER = Cluster(NS, (WEB, DB, DEV))

CALICO_TIERS = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.no-dev}
spec:
  tier: security
  order: 1
  namespaceSelector: env == 'prod'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {namespaceSelector: env == 'dev'}
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web', namespaceSelector: all()}
    destination: {ports: [22]}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: apps}
spec: {order: 500}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: apps.db, namespace: x}
spec:
  tier: apps
  order: 10
  selector: app == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: ['5432', '6000:6010']}
  egress:
  - action: Allow
    destination: {selector: external == 'api'}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: api, namespace: x, labels: {external: api}}
spec: {nets: [203.0.113.0/24]}
"""


@pytest.mark.parametrize(
    ("src", "dst", "port", "allowed", "why"),
    [
        (DEV, DB, 5432, False, "denied by security/security.no-dev"),  # Deny in a lower order tier
        (WEB, DB, 22, True, "allowed by security/security.no-dev"),  # Allow ends evaluation
        (WEB, DB, 5432, True, "allowed by x/apps.db"),  # Pass (defaultAction) -> next tier
        (WEB, DB, 6005, True, "allowed by x/apps.db"),  # a port range
        (WEB, DB, 80, False, "end of tier apps"),  # end-of-tier deny (default Deny)
        (WEB, DEV, 8080, True, "no tier decides"),  # no tier selects either end
        (DB, WEB, 8080, False, "end of tier apps"),  # db egress: types default to both
    ],
)
def test_calico_tiers_truth_table(
    tmp_path: Path, src: Pod, dst: Pod, port: int, allowed: bool, why: str
) -> None:
    tree = _tree(tmp_path, CALICO_TIERS)
    verdict = tree.verdict(CLUSTER, src, dst, "TCP", port)
    assert verdict.allowed == allowed, verdict
    assert why in verdict.ingress + verdict.egress, verdict


def test_calico_network_set_and_types_default(tmp_path: Path) -> None:
    """A rule selecting a NetworkSet matches its nets; a policy with egress rules and no types
    applies to both directions (ingress and egress rules present)."""
    tree = _tree(tmp_path, CALICO_TIERS)
    assert tree.verdict(CLUSTER, DB, Endpoint("203.0.113.7"), "TCP", 443).allowed
    denied = tree.verdict(CLUSTER, DB, Endpoint("198.51.100.1"), "TCP", 443)
    assert not denied.allowed and "end of tier apps" in denied.egress


def test_calico_staged_policy_judged_as_enforced_and_delete_skipped(tmp_path: Path) -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {stagedAction: Set, selector: all(), types: [Ingress]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: gone, namespace: x}
spec: {stagedAction: Delete, selector: all(), types: [Ingress]}
"""
    tree = _tree(tmp_path, text)
    assert not tree.verdict(CLUSTER, WEB, DB, "TCP", 80).allowed
    assert any("staged" in n for n in tree.notes)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("selector: all()\n  egress: [{action: Allow, protocol: GRE}]",
         "protocol 'GRE' is not evaluated"),
        ("selector: all()\n  ingress: [{action: Allow, protocol: TCP, source: {ports: "
         "['40000:50000']}}]", "part of the ephemeral range"),
        ("selector: all()\n  ingress: [{action: Allow, protocol: TCP, source: {ports: [http]}}]",
         "named source port"),
        ("selector: all()\n  ingress: [{action: Allow, source: {serviceAccounts: "
         "{selector: team == 'a'}}}]", "reads pcsa.team|reads team"),
        ("selector: all()\n  doNotTrack: true", "host endpoints"),
    ],
)
def test_calico_what_cannot_be_judged_is_refused(tmp_path: Path, spec: str, message: str) -> None:
    text = f"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n  {spec}\n"  # noqa: E501
    with pytest.raises(UnsupportedDialectError, match=message):
        _tree(tmp_path, text)


def test_calico_undefined_tier(tmp_path: Path) -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: t.p, namespace: x}
spec: {tier: t, selector: all()}
"""
    with pytest.raises(InputError, match="tier 't' is not defined"):
        _tree(tmp_path, text)


# --- Cilium ---------------------------------------------------------------------------------

CILIUM = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}, {port: "80", protocol: ANY}]}]
  - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": y}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toFQDNs: [{matchPattern: "*.example.com"}]
  - toEntities: [kube-apiserver]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: audit-only}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false, egress: false}
  ingress:
  - fromEntities: [cluster]
"""


@pytest.mark.parametrize(
    ("src", "dst", "protocol", "port", "allowed"),
    [
        (WEB, DB, "TCP", 5432, True),  # allow rule
        (WEB, DB, "TCP", 80, False),  # deny over allow (the allow names 80/ANY)
        (WEB, DB, "UDP", 80, True),  # ANY covers UDP; the deny is TCP only
        (WEB, DB, "TCP", 22, False),  # default deny: no rule matches
        (DEV, DB, "TCP", 22, True),  # another namespace by its namespace label
        (DEV, WEB, "TCP", 8080, True),  # web: enableDefaultDeny false, not isolated
        (DB, Endpoint("198.51.100.1", "external", "world"), "TCP", 443, True),  # world
        (DB, Endpoint("198.51.100.1", "external", "world"), "TCP", 80, False),
        (DB, Endpoint("198.51.100.2", "external", "", ("api.example.com",)), "TCP", 80, True),
        (DB, Endpoint("198.51.100.3", "external", "", ("example.com",)), "TCP", 80, False),
        (DB, Endpoint("172.18.0.2", "cluster-entity", "kube-apiserver"), "TCP", 6443, True),
        (DB, WEB, "TCP", 9999, False),  # egress default deny: a pod is not world
    ],
)
def test_cilium_truth_table(
    tmp_path: Path, src: Pod, dst: Any, protocol: str, port: int, allowed: bool
) -> None:
    tree = _tree(tmp_path, CILIUM)
    assert tree.dialect == "cilium"
    verdict = tree.verdict(CLUSTER, src, dst, protocol, port)
    assert verdict.allowed == allowed, verdict


def test_cilium_empty_rule_only_enables_default_deny(tmp_path: Path) -> None:
    text = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: default-deny, namespace: x}
spec: {endpointSelector: {}, ingress: [{}], egress: [{}]}
"""
    tree = _tree(tmp_path, text)
    assert not tree.verdict(CLUSTER, DEV, WEB, "TCP", 80).allowed  # ingress of x/web
    assert tree.verdict(CLUSTER, DEV, DEV, "TCP", 80).allowed  # loopback
    assert not tree.verdict(CLUSTER, WEB, Endpoint("198.51.100.1"), "TCP", 80).allowed


def test_cilium_with_kubernetes_networkpolicy(tmp_path: Path) -> None:
    """A NetworkPolicy isolates under Cilium too; a Cilium allow rule then also counts."""
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: db}}]}]
"""
    tree = _tree(tmp_path, text)
    assert tree.verdict(CLUSTER, DB, WEB, "TCP", 80).allowed
    assert not tree.verdict(CLUSTER, WEB, DB, "TCP", 80).allowed


def test_mixed_dialects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CILIUM)
    (tmp_path / "b.yaml").write_text(CALICO_TIERS)
    with pytest.raises(UnsupportedDialectError, match="no CNI enforces both"):
        read_policy_tree(tmp_path)
    with pytest.raises(UnsupportedDialectError, match="--precedence cilium"):
        read_policy_tree(tmp_path / "a.yaml", precedence="kubernetes")
    with pytest.raises(UnsupportedDialectError, match="--precedence calico"):
        read_policy_tree(tmp_path / "b.yaml", precedence="cilium")


# --- the trees `recommend -d` writes ----------------------------------------------------------


def _coverage(capsys: pytest.CaptureFixture[str], tree: Path, flows: str) -> dict[str, Any]:
    status = main(["evaluate", str(tree), flows, "--json"])
    out, err = capsys.readouterr()
    assert status in (0, 1), err
    return json.loads(out)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--staged", "--network-sets", "--domains", "--host-policies"],
        ["--domains", "--l7", "--service-accounts"],
    ],
)
def test_written_trees_judged_like_the_kubernetes_tree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str]
) -> None:
    flows = str(SAMPLES / "hubble.jsonl.gz")
    status = main([flows, "-d", "kubernetes,calico,cilium", *options, "-o", str(tmp_path)])
    capsys.readouterr()
    assert status == 0
    results = {d: _coverage(capsys, tmp_path / d, flows) for d in ("kubernetes", "calico",
                                                                     "cilium")}
    keys = ("coverage", "observed_edges", "allowed_edges", "false_deny_connections",
            "denied_edges", "allowed_connections")
    base = {k: results["kubernetes"][k] for k in keys}
    assert base["observed_edges"] > 0
    for dialect in ("calico", "cilium"):
        assert {k: results[dialect][k] for k in keys} == base, dialect
        assert results[dialect]["denied_but_allowed"] == results["kubernetes"][
            "denied_but_allowed"]
        assert results[dialect]["over_permissive"]["allowed_unobserved"] == results[
            "kubernetes"]["over_permissive"]["allowed_unobserved"]


def test_a_calico_tree_that_denies_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not a tautology: drop one allow policy from the Calico tree and evaluate finds the
    false denies (exit 1)."""
    flows = str(SAMPLES / "flows.parquet")
    assert main([flows, "-d", "calico", "-o", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    victim = next((tmp_path / "t").rglob("recommendations.allow-cart.yaml"))
    victim.unlink()
    status = main(["evaluate", str(tmp_path / "t"), flows])
    out, _ = capsys.readouterr()
    assert status == 1
    assert "shop/cart" in out and "end of tier recommendations" in out


# --- the written trees, rewritten with the constructs issue 18 made judged ----------------------

_NEVER = "i18.example/never"


def _de_morgan(selector: str) -> str:
    """``a && b`` as ``!(!(a) || !(b)) || has(never)``: the same endpoints, through ||, !,
    parentheses and has()."""
    if selector.strip() in ("", "all()"):
        return f"all() || has({_NEVER})"
    terms = selector.split(" && ")
    return "!(" + " || ".join(f"!({t})" for t in terms) + f") || has({_NEVER})"


def _rewrite_calico(root: Path) -> int:
    """Rewrite every Calico policy of ``root`` with equivalent selectors, a notSelector that
    excludes nothing and source ports that cover every ephemeral port; the rules rewritten."""
    count = 0
    for path in sorted(root.rglob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        changed = False
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") not in (
                "NetworkPolicy", "GlobalNetworkPolicy"
            ) or not str(doc.get("apiVersion", "")).startswith("projectcalico.org/"):
                continue
            spec = doc["spec"]
            if "selector" in spec:
                spec["selector"] = _de_morgan(spec["selector"])
            for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
                for side in ("source", "destination"):
                    entity = rule.setdefault(side, {})
                    if "selector" in entity:
                        entity["selector"] = _de_morgan(entity["selector"])
                        entity["notSelector"] = f"has({_NEVER})"
                        count += 1
                if rule.get("protocol") in ("TCP", "UDP"):
                    rule["source"]["notPorts"] = ["1:1023"]
                if not rule["source"]:
                    del rule["source"]
            changed = True
        if changed:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=True))
    return count


def _rewrite_cilium(root: Path, requirement: dict[str, Any]) -> int:
    """Move every toCIDRSet cidr into a CiliumCIDRGroup referenced by name, and add a
    clusterwide policy whose fromRequires (``requirement``) narrows every ingress
    fromEndpoints; the CIDR entries moved."""
    groups: dict[str, str] = {}
    for path in sorted(root.rglob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CiliumNetworkPolicy":
                continue
            for rule in doc["spec"].get("egress") or []:
                for item in rule.get("toCIDRSet") or []:
                    if "cidr" in item:
                        name = groups.setdefault(item["cidr"], f"group-{len(groups)}")
                        item["cidrGroupRef"] = name
                        del item["cidr"]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=True))
    if groups:
        (root / "_groups.yaml").write_text(yaml.safe_dump_all([
            {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumCIDRGroup",
             "metadata": {"name": name}, "spec": {"externalCIDRs": [cidr]}}
            for cidr, name in groups.items()
        ], sort_keys=True))
    (root / "_requirements.yaml").write_text(yaml.safe_dump({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "requirements"},
        "spec": {"endpointSelector": {}, "enableDefaultDeny": {"ingress": False},
                 "ingress": [{"fromRequires": [requirement]}]},
    }, sort_keys=True))
    return len(groups)


def test_written_trees_rewritten_with_new_constructs_are_judged_the_same(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Equivalent rewrites through ||, !, parentheses, notSelector, source notPorts,
    cidrGroupRef and an always-met fromRequires keep every measure of the Kubernetes tree;
    a requirement nobody meets (not a tautology) denies what fromEndpoints allowed."""
    flows = str(SAMPLES / "hubble.jsonl.gz")
    assert main([flows, "-d", "kubernetes,calico,cilium", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    shutil.copytree(tmp_path / "calico", tmp_path / "calico-as-written")
    assert _rewrite_calico(tmp_path / "calico") > 10
    met = {"matchExpressions": [{"key": _NEVER, "operator": "DoesNotExist"}]}
    assert _rewrite_cilium(tmp_path / "cilium", met) > 0
    results = {d: _coverage(capsys, tmp_path / d, flows) for d in ("kubernetes", "calico",
                                                                     "cilium")}
    keys = ("coverage", "observed_edges", "allowed_edges", "false_deny_connections",
            "denied_edges", "allowed_connections")
    base = {k: results["kubernetes"][k] for k in keys}
    for dialect in ("calico", "cilium"):
        assert {k: results[dialect][k] for k in keys} == base, dialect
        assert results[dialect]["over_permissive"]["allowed_unobserved"] == results[
            "kubernetes"]["over_permissive"]["allowed_unobserved"]
    assert any("source ports" in n for n in results["calico"]["notes"])
    # diff judges both trees the same way: no observed connection changes verdict
    status = main(["diff", str(tmp_path / "calico-as-written"), str(tmp_path / "calico"), flows,
                   "--json"])
    changes = json.loads(capsys.readouterr().out)
    assert status == 0 and changes["newly_denied"] == changes["newly_allowed"] == [], changes

    never = {"matchLabels": {_NEVER: "yes"}}
    _rewrite_cilium(tmp_path / "cilium", never)
    status = main(["evaluate", str(tmp_path / "cilium"), flows, "--json"])
    narrowed = json.loads(capsys.readouterr().out)
    assert status == 1 and narrowed["false_deny_connections"] > base["false_deny_connections"]
