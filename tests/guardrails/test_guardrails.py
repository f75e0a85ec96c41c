"""The guardrails file format, its renderers and the pipeline under guardrails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recommender import recommend
from recommender.cli import main
from recommender.errors import ConfigError, UnsupportedDialectError
from recommender.evaluation.evaluator import evaluate
from recommender.evaluation.replay import cluster_from_flows
from recommender.guardrails import load_guardrails, parse_guardrails
from recommender.guardrails.render import FORMATS, render_guardrails
from recommender.policy._yaml import dump_yaml
from recommender.policy.model import LabelSelector, Peer, PolicySet, PortSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "guardrails.yaml"
SAMPLES = ROOT / "sample_flows" / "flows.parquet"
#: Every sample format: the Calico one adds aggregated "pub" destinations.
ALL_SAMPLES = ROOT / "sample_flows"
VALIDATOR = ROOT.parent / "shared" / "tools" / "validate_manifests.py"

needs_validator = pytest.mark.skipif(
    not VALIDATOR.is_file(), reason=f"the shared manifest validator {VALIDATOR} is absent"
)


def validate(folder: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(folder)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 invalid" in result.stdout and "0 failure(s)" in result.stdout


# --------------------------------------------------------------------------- the loader


def test_the_documented_example_loads_into_the_expected_guardrails() -> None:
    g = load_guardrails(EXAMPLE)
    assert g.name == "acme"
    assert [(x.name, x.priority) for x in g.guardrails] == [
        ("no-cloud-metadata", 10),
        ("monitoring-scrape", 20),
        ("pci-ingress", 30),
        ("cde-no-internet", 35),
        ("no-cross-env-prod", 40),
        ("no-cross-env-staging", 40),
    ]
    pci = g.guardrails[2]
    assert pci.subject.namespaces == LabelSelector((("pci", "true"),))
    assert [(r.action, r.comment) for r in pci.ingress] == [
        ("pass", "from-named-peers"),
        ("deny", "from-anything-else"),
    ]
    assert pci.ingress[0].peers == (
        Peer("pods", namespace_selector=LabelSelector(
            (), (("kubernetes.io/metadata.name", "In", ("payments", "shop")),))),
    )
    # separateBy: deny to and from namespaces whose env label is set and differs
    prod = g.guardrails[4]
    assert prod.subject.namespaces == LabelSelector((("env", "prod"),))
    assert prod.ingress[0].peers[0].namespace_selector == LabelSelector(
        (), (("env", "Exists", ()), ("env", "NotIn", ("prod",))))
    assert g.labels_of("payments") == {
        "pci": "true", "env": "prod", "kubernetes.io/metadata.name": "payments"}
    assert g.scope == LabelSelector((("pci", "true"),))
    assert load_guardrails(EXAMPLE) == g  # deterministic


def test_ports_forms() -> None:
    g = parse_guardrails("""
guardrails:
  - name: p
    priority: 1
    ingress:
      - action: deny
        from: [{namespaces: {}}]
        ports: [TCP/80, UDP/53, TCP/8000-8999, name:metrics, SCTP/name:sig]
""")
    assert g.guardrails[0].ingress[0].ports == (
        PortSpec("SCTP", name="sig"), PortSpec("TCP", 80), PortSpec("TCP", 8000, 8999),
        PortSpec("TCP", name="metrics"), PortSpec("UDP", 53),
    )


BAD = [
    ("guardrails: [{name: a, priority: 1}]", "line 1, guardrails[a]: needs ingress or egress"),
    ("guardrails:\n  - name: a\n    priority: 2000\n    egress: []",
     "line 3, guardrails[a].priority: must be a whole number 0..1000"),
    ("guardrails:\n  - name: Bad_Name\n    priority: 1",
     "line 2, guardrails[0].name: 'Bad_Name' must be a DNS-1123 label"),
    ("guardrails:\n  - name: a\n    priority: 1\n    egress:\n      - action: drop\n"
     "        to: [{namespaces: {}}]",
     "line 5, guardrails[a].egress[0].action: must be allow, deny or pass"),
    ("guardrails:\n  - name: a\n    priority: 1\n    ingress:\n      - action: deny\n"
     "        from: [{networks: [10.0.0.0/8]}]",
     "guardrails[a].ingress[0].from[0].networks: networks are egress peers only"),
    ("guardrails:\n  - name: a\n    priority: 1\n    egress:\n      - action: deny\n"
     "        to: [{networks: [10.0.0.1/8]}]", "is not a CIDR with its host bits zero"),
    ("guardrails:\n  - name: a\n    priority: 1\n    egress:\n      - action: deny\n"
     "        to: [{namespaces: {}}]\n        ports: [TCP/0]", "ports are 1..65535"),
    ("guardrails:\n  - name: a\n    priority: 1\n    egress:\n      - action: deny\n"
     "        to: [{namespaces: {}}]\n        ports: [http]", "is not PROTOCOL/PORT"),
    ("guardrails:\n  - {name: a, priority: 1, egress: [{action: deny, to: [{namespaces: {}}]}]}\n"
     "  - {name: b, priority: 1, egress: [{action: deny, to: [{namespaces: {}}]}]}",
     "line 3, guardrails[1].priority: admin priority 1 is already used by 'a'"),
    ("guardrails:\n  - name: a\n    priority: 1\n    tier: baseline\n    egress:\n"
     "      - {action: pass, to: [{namespaces: {}}]}", "pass has no tier below"),
    ("guardrails:\n  - name: a\n    priority: 1\n    subject: {namespaces: {matchLabels: {a: b}},"
     " namespaceNames: [x]}\n    egress: [{action: deny, to: [{namespaces: {}}]}]",
     "give exactly one of namespaces or namespaceNames"),
    ("guardrails:\n  - name: a\n    priority: 1\n    colour: red",
     "guardrails[0].colour: unknown field"),
    ("guardrails: [{name: a, priority: 1, separateBy: {label: env, values: [prod]}}]",
     "needs at least two distinct values"),
    ("name: x\n", "guardrails: is required"),
    ("guardrails: [\n", "not valid YAML"),
    ("a: &x [1]\nguardrails: *x\n", "refers to a mapping or a list"),
    ("guardrails: !!python/object:os.system {}\n", "guardrails: expected a list"),
    ("", "the file is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_get_one_clear_error_with_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_guardrails(text, "g.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("g.yaml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_guardrails(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- renderers


def test_cluster_network_policy_is_exact() -> None:
    g = load_guardrails(EXAMPLE)
    docs = {d["metadata"]["name"]: d for d in render_guardrails(g, "cluster-network-policy")}
    assert docs["acme-pci-ingress"] == {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {
            "name": "acme-pci-ingress",
            "labels": {"app.kubernetes.io/managed-by": "recommender"},
            "annotations": {
                "recommender.io/description":
                    "The cardholder data environment is reachable only from the shop.",
                "recommender.io/controls": "PCI DSS 1.3.1, NIST SC-7(21)",
            },
        },
        "spec": {
            "tier": "Admin",
            "priority": 30,
            "subject": {"namespaces": {"matchLabels": {"pci": "true"}}},
            "ingress": [
                {"name": "from-named-peers", "action": "Pass", "from": [{"namespaces": {
                    "matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                          "operator": "In", "values": ["payments", "shop"]}]}}]},
                {"name": "from-anything-else", "action": "Deny", "from": [{"namespaces": {}}]},
            ],
        },
    }
    assert docs["acme-monitoring-scrape"]["spec"]["ingress"][0]["protocols"] == [
        {"tcp": {"destinationPort": {"number": 9090}}}]


def test_calico_rendering_is_a_pass_tier_with_ordered_policies() -> None:
    docs = render_guardrails(load_guardrails(EXAMPLE), "calico")
    assert docs[0] == {
        "apiVersion": "projectcalico.org/v3", "kind": "Tier",
        "metadata": {"name": "acme", "labels": {"app.kubernetes.io/managed-by": "recommender"}},
        "spec": {"order": 100, "defaultAction": "Pass"},
    }
    pci = next(d for d in docs if d["metadata"]["name"] == "acme.pci-ingress")["spec"]
    assert pci["order"] == 30 and pci["tier"] == "acme"
    assert pci["namespaceSelector"] == "pci == 'true'" and pci["selector"] == "all()"
    assert pci["ingress"] == [
        {"action": "Pass", "source": {
            "namespaceSelector": "kubernetes.io/metadata.name in {'payments', 'shop'}"}},
        {"action": "Deny", "source": {"namespaceSelector": "all()"}},
    ]
    meta = next(d for d in docs if d["metadata"]["name"] == "acme.no-cloud-metadata")["spec"]
    assert meta["egress"] == [{"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}}]


def test_cilium_rendering_carves_exceptions_out_of_deny_rules() -> None:
    docs = {d["metadata"]["name"]: d for d in render_guardrails(load_guardrails(EXAMPLE),
                                                                 "cilium")}
    spec = docs["acme-pci-ingress"]["spec"]
    assert spec["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert spec["ingressDeny"] == [{"fromEndpoints": [{"matchExpressions": [
        {"key": "k8s:io.kubernetes.pod.namespace", "operator": "NotIn",
         "values": ["payments", "shop"]}]}]}]
    assert "ingress" not in spec  # pass rules have no Cilium form of their own
    prod = docs["acme-no-cross-env-prod"]["spec"]
    assert prod["endpointSelector"] == {
        "matchLabels": {"k8s:io.cilium.k8s.namespace.labels.env": "prod"}}


def test_formats_refuse_what_they_cannot_express() -> None:
    baseline = parse_guardrails("""
guardrails:
  - {name: a, priority: 1, tier: baseline, subject: {namespaceNames: [x]},
     ingress: [{action: deny, from: [{namespaces: {}}]}]}
  - {name: b, priority: 2, tier: baseline,
     ingress: [{action: deny, from: [{namespaces: {}}]}]}
""")
    with pytest.raises(UnsupportedDialectError, match="single subject"):
        render_guardrails(baseline, "admin-network-policy")
    with pytest.raises(UnsupportedDialectError, match="baseline"):
        render_guardrails(baseline, "cilium")
    named = parse_guardrails("""
guardrails:
  - {name: a, priority: 1, ingress: [{action: deny, from: [{namespaces: {}}], ports: [name:web]}]}
""")
    with pytest.raises(UnsupportedDialectError, match="named port"):
        render_guardrails(named, "admin-network-policy")
    with pytest.raises(UnsupportedDialectError, match="Unknown guardrails format"):
        render_guardrails(named, "iptables")
    two_labels = parse_guardrails("""
guardrails:
  - name: a
    priority: 1
    ingress:
      - {action: pass, from: [{namespaces: {matchLabels: {a: b, c: d}}}]}
      - {action: deny, from: [{namespaces: {}}]}
""")
    with pytest.raises(UnsupportedDialectError, match="more than one namespace label"):
        render_guardrails(two_labels, "cilium")


@needs_validator
def test_every_format_validates_against_the_upstream_schemas(tmp_path: Path) -> None:
    g = load_guardrails(EXAMPLE)
    baseline = parse_guardrails("""
name: base
guardrails:
  - {name: default-deny, priority: 100, tier: baseline,
     ingress: [{action: deny, from: [{namespaces: {}}]}],
     egress: [{action: allow, to: [{namespaces: {}}], ports: [UDP/53, TCP/53]},
              {action: deny, to: [{networks: [0.0.0.0/0]}]}]}
""")
    for fmt in FORMATS:
        docs = render_guardrails(g, fmt)
        if fmt != "cilium":
            docs += render_guardrails(baseline, fmt)
        (tmp_path / f"{fmt}.yaml").write_text(dump_yaml(docs))
    validate(tmp_path)


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def guarded() -> object:
    return recommend(ALL_SAMPLES, guardrails=EXAMPLE)


def test_flows_a_guardrail_denies_get_no_allow_rule_and_are_conflicts(guarded: object) -> None:
    rec = guarded
    section = rec.report["guardrails"]  # type: ignore[attr-defined]
    assert [(c["source"], c["destination"], c["port"], c["guardrail"])
            for c in section["conflicts"]] == [
        # sample_flows/ holds the same traffic three ways; each connection counts once
        # (issue 18), from the Hubble copy: Calico's aggregated `pub` copies are left out
        ("payments/payments-api", "external:52.94.236.248", 443, "acme/cde-no-internet"),
    ]
    # the application policies alone do not allow it either: never re-allowed
    cluster = cluster_from_flows(rec.tables)  # type: ignore[attr-defined]
    for address in ("52.94.236.248", "198.51.100.1"):
        verdict = evaluate(rec.policy_set, cluster,  # type: ignore[attr-defined]
                           "payments/payments-api", address, "TCP", 443)
        assert not verdict.allowed
    # without guardrails the same flows are allowed
    plain = recommend(ALL_SAMPLES)
    assert evaluate(plain.policy_set, cluster, "payments/payments-api", "52.94.236.248",
                    "TCP", 443).allowed
    # the whole stack still allows every other observed flow
    assert rec.report["self_check"]["coverage"] == 1.0  # type: ignore[attr-defined]
    assert rec.report["self_check"]["false_denies"] == 0  # type: ignore[attr-defined]


def test_compliance_checks_pass_with_guardrails_and_fail_without(guarded: object) -> None:
    checks = {c["check"]: c for c in guarded.report["guardrails"]["compliance"]}  # type: ignore[attr-defined]
    assert {k: c["status"] for k, c in checks.items()} == {
        "default-deny": "pass", "egress-restricted": "pass", "segments-isolated": "pass"}
    assert checks["segments-isolated"]["controls"]["nist_800_53"] == ["SC-7", "SC-7(21)"]
    from recommender.evaluation.guardrail_checks import compliance_checks

    # Calico's aggregated `pub` records give payments-api a broad egress rule (read alone: in
    # the whole folder each connection counts once, from the Hubble copy, issue 18)
    plain = recommend(ALL_SAMPLES / "calico.jsonl.gz")
    without = {c["check"]: c for c in compliance_checks(
        None, plain.policy_set, plain.findings.namespaces_in_scope,
        cluster_from_flows(plain.tables))}
    assert without["egress-restricted"]["status"] == "fail"
    assert "payments/payments-api may reach 198.51.100.1:443" in \
        without["egress-restricted"]["evidence"][0]
    assert without["segments-isolated"]["status"] == "not-applicable"


def test_reports_list_conflicts_and_compliance(guarded: object) -> None:
    from recommender.report.model import report_markdown

    text = report_markdown(guarded.report)  # type: ignore[attr-defined]
    assert "## Guardrails" in text and "### Conflicts to resolve" in text
    assert "payments/payments-api" in text and "acme/cde-no-internet" in text
    assert "### Compliance" in text and "SC-7(21)" in text
    from recommender.report.html import report_html

    page = report_html(guarded.report)  # type: ignore[attr-defined]
    assert 'id="guardrails"' in page and "Conflicts to resolve" in page
    assert "acme/cde-no-internet" in page and "SC-7(21)" in page


@needs_validator
def test_cli_writes_guardrails_and_evaluates_the_whole_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(SAMPLES), "-o", str(out), "--guardrails", str(EXAMPLE),
                 "--guardrails-format", "calico"]) == 0
    files = sorted(p.name for p in (out / "_guardrails").iterdir())
    assert files == [
        "acme.cde-no-internet.yaml", "acme.monitoring-scrape.yaml",
        "acme.no-cloud-metadata.yaml", "acme.no-cross-env-prod.yaml",
        "acme.no-cross-env-staging.yaml", "acme.pci-ingress.yaml", "acme.yaml",
        "kustomization.yaml",
    ]
    assert "_guardrails" in (out / "kustomization.yaml").read_text()
    validate(out)
    report = json.loads((out / "report.json").read_text())
    assert report["guardrails"]["format"] == "calico"
    # the tree holds Calico kinds: judged as Calico (issue 18), the rendered guardrail tier
    # denying the same observed flow as the guardrails file does
    assert main(["evaluate", str(out), str(SAMPLES)]) == 1
    # the observed flow the guardrail denies is a false deny of the whole stack
    assert main(["evaluate", str(out), str(SAMPLES), "--guardrails", str(EXAMPLE),
                 "--precedence", "calico"]) == 1


def test_config_key_resolves_next_to_the_config_file(tmp_path: Path) -> None:
    from recommender.config import load_config

    (tmp_path / "g.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "c.yaml").write_text("guardrails: g.yaml\nguardrails_format: cilium\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.guardrails == str(tmp_path / "g.yaml")
    with pytest.raises(ConfigError, match="guardrails_format"):
        config.replace(guardrails_format="iptables")


@pytest.mark.parametrize("fmt", ["cluster-network-policy", "admin-network-policy"])
def test_rendered_cluster_policies_read_back_to_the_same_verdicts(fmt: str) -> None:
    from recommender.evaluation.evaluator import Cluster, Endpoint, Namespace, Pod
    from recommender.evaluation.precedence import evaluate_stack
    from recommender.guardrails.reader import parse_cluster_policies

    g = load_guardrails(EXAMPLE)
    back = parse_cluster_policies(render_guardrails(g, fmt), name="acme")
    assert [x.name for x in back.guardrails] == [f"acme-{x.name}" for x in g.guardrails]
    assert [x.rules for x in back.guardrails] == [
        tuple(r for r in x.rules) for x in g.guardrails
    ]
    namespaces = {n: Namespace(n, g.labels_of(n)) for n in ("payments", "shop", "monitoring",
                                                             "staging", "other")}
    pods = tuple(Pod(n, "p", {"app": n}) for n in namespaces)
    cluster = Cluster(namespaces, pods)
    ends = [*pods, Endpoint("169.254.169.254"), Endpoint("52.94.236.248")]
    for src in ends:
        for dst in ends:
            for port in (443, 9090):
                a = evaluate_stack(g, PolicySet(), cluster, src, dst, "TCP", port)
                b = evaluate_stack(back, PolicySet(), cluster, src, dst, "TCP", port)
                assert a.allowed == b.allowed, (src, dst, port, a, b)


def test_evaluate_reads_cluster_network_policies_beside_network_policies(tmp_path: Path,
                                                                          capsys: object) -> None:
    out = tmp_path / "out"
    assert main(["run", str(SAMPLES), "-o", str(out), "--guardrails", str(EXAMPLE)]) == 0
    capsys.readouterr()  # type: ignore[attr-defined]
    # the written tree holds ClusterNetworkPolicies: evaluate judges the whole stack. The
    # manifests do not carry the file's namespaceLabels (payments is pci=true), so the
    # cde guardrail's subject matches nothing: the payments default deny denies the flow.
    assert main(["evaluate", str(out), str(SAMPLES), "--json"]) == 1
    coverage = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(e["destination"], e["reason"]) for e in coverage["false_denies"]] == [
        ("external:52.94.236.248", "egress: end of tier networkpolicy: no rule matches")]
    # the guardrails file brings the namespace labels: now the guardrail decides
    assert main(["evaluate", str(out), str(SAMPLES), "--json", "--guardrails", str(EXAMPLE)]) == 1
    coverage = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(e["destination"], e["reason"]) for e in coverage["false_denies"]] == [
        ("external:52.94.236.248", "egress: denied by admin/cde-no-internet egress rule 0")]
    # a cluster network policy whose subject matches by name is evaluated from the tree alone
    doc = out / "_guardrails" / "acme-no-cloud-metadata.yaml"
    text = doc.read_text().replace("169.254.169.254/32", "52.94.236.248/32")
    doc.write_text(text)
    assert main(["evaluate", str(out), str(SAMPLES), "--json"]) == 1
    coverage = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(e["destination"], e["reason"]) for e in coverage["false_denies"]] == [
        ("external:52.94.236.248",
         "egress: denied by admin/acme-no-cloud-metadata egress rule 0")]


def test_a_format_that_cannot_express_the_guardrails_fails_before_reading_flows(
    tmp_path: Path,
) -> None:
    baseline = tmp_path / "g.yaml"
    baseline.write_text("guardrails: [{name: b, priority: 1, tier: baseline, "
                        "ingress: [{action: deny, from: [{namespaces: {}}]}]}]\n")
    with pytest.raises(UnsupportedDialectError, match="baseline"):
        recommend(tmp_path / "no-such-flows", guardrails=baseline, guardrails_format="cilium")
    assert main(["run", str(tmp_path / "no-such-flows"), "--guardrails", str(tmp_path / "x.yaml"),
                 "-o", str(tmp_path / "out")]) == 2


def test_each_dialect_tree_gets_its_own_form_of_the_guardrails(tmp_path: Path) -> None:
    rec = recommend(SAMPLES, guardrails=EXAMPLE, dialects=("kubernetes", "calico", "cilium"))
    rec.write(tmp_path / "out")
    kinds = {
        dialect: sorted({json.dumps(d["kind"]) for d in rec.guardrail_manifests(dialect)})
        for dialect in ("kubernetes", "calico", "cilium")
    }
    assert kinds == {
        "kubernetes": ['"ClusterNetworkPolicy"'],
        "calico": ['"GlobalNetworkPolicy"', '"Tier"'],
        "cilium": ['"CiliumClusterwideNetworkPolicy"'],
    }
    for dialect in kinds:
        assert (tmp_path / "out" / dialect / "_guardrails" / "kustomization.yaml").is_file()
    if VALIDATOR.is_file():
        validate(tmp_path / "out")
    assert rec.to_yaml("cilium").startswith("apiVersion: cilium.io/v2\nkind: CiliumClusterwide")
