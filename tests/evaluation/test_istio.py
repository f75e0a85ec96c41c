"""Istio's authorization semantics (recommender.evaluation.istio): truth tables for the
decision order, sources, operations, conditions, missing HTTP attributes and mutual TLS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.evaluation.istio import Identity, Request, authorize, mtls_mode
from recommender.policy.authz import (
    AuthorizationPolicy,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    IstioPolicies,
    PeerAuthentication,
)
from recommender.policy.reader import parse_authorization_policy

WEB = Identity("cluster.local/ns/shop/sa/web", "shop", "10.1.0.5", mtls=True)
OTHER = Identity("cluster.local/ns/dev/sa/tool", "dev", "10.1.0.9", mtls=True)
UNKNOWN = Identity(None, "shop", "10.1.0.7", mtls=True)  # in the mesh, account unknown
WORLD = Identity(ip="203.0.113.7")
API = {"app": "api"}


def req(source: Identity, port: int = 8080, method: str | None = None, path: str | None = None,
        labels: dict[str, str] | None = None, namespace: str = "shop") -> Request:  # fmt: skip
    return Request(namespace, labels or API, port, source, method, path)


def allow(*rules: AuthzRule, name: str = "allow", namespace: str = "shop",
          selector: tuple[tuple[str, str], ...] | None = (("app", "api"),),
          action: str = "ALLOW") -> AuthorizationPolicy:  # fmt: skip
    return AuthorizationPolicy(name, namespace, action, selector, rules)


def frm(**fields: tuple[str, ...]) -> AuthzRule:
    return AuthzRule(sources=(AuthzSource(**fields),))


def to(**fields: tuple[str, ...]) -> AuthzRule:
    return AuthzRule(operations=(AuthzOperation(**fields),))


def test_decision_order() -> None:
    only_web = allow(frm(principals=(WEB.principal or "",)))
    deny_get = allow(to(methods=("GET",)), name="deny", action="DENY")
    nothing = allow(selector=None, name="allow-nothing")
    custom = allow(frm(principals=("x",)), name="ext", action="CUSTOM")
    audit = allow(AuthzRule(), name="audit", action="AUDIT")
    cases = [
        ([], req(OTHER), True, "no ALLOW policy selects the workload"),
        ([custom, audit], req(OTHER), True, "no ALLOW policy"),
        ([only_web], req(WEB), True, "allowed by shop/allow rule 0"),
        ([only_web], req(OTHER), False, "no rule matches"),
        ([only_web, deny_get], req(WEB, method="GET", path="/"), False, "denied by shop/deny"),
        ([only_web, deny_get], req(WEB, method="POST", path="/"), True, "allowed"),
        # A DENY rule with HTTP fields ignores them on TCP: the connection is denied.
        ([only_web, deny_get], req(WEB), False, "denied by shop/deny"),
        ([nothing], req(WEB), False, "no rule matches"),
        ([nothing, only_web], req(WEB), True, "allowed by shop/allow"),
    ]
    for policies, request, allowed, reason in cases:
        verdict = authorize(policies, request)
        assert verdict.allowed is allowed, (policies, request, verdict)
        assert reason in verdict.reason
    assert authorize([custom], req(OTHER)).custom == ("shop/ext",)


def test_scope_namespace_selector_and_root() -> None:
    elsewhere = allow(frm(principals=("nobody",)), namespace="dev")
    root_nothing = allow(selector=None, namespace="istio-system", name="mesh")
    root_db = allow(frm(principals=("nobody",)), namespace="istio-system",
                    selector=(("app", "db"),))  # fmt: skip
    gateway = AuthorizationPolicy("gw", "shop", "ALLOW", None, (), targets=True)
    assert authorize([elsewhere], req(WEB)).allowed  # another namespace's policy
    assert not authorize([root_nothing], req(WEB)).allowed  # the root namespace: mesh-wide
    assert authorize([root_nothing], req(WEB), root_namespace="mesh-root").allowed
    assert authorize([root_db], req(WEB)).allowed  # selects db, not api
    assert not authorize([root_db], req(WEB, labels={"app": "db"})).allowed
    assert authorize([gateway], req(WEB)).allowed  # targetRef: gateways only


@pytest.mark.parametrize(
    ("rule", "source", "allowed"),
    [
        (frm(principals=("cluster.local/ns/shop/sa/web",)), WEB, True),
        (frm(principals=("cluster.local/ns/shop/*",)), WEB, True),
        (frm(principals=("*/sa/web",)), WEB, True),
        (frm(principals=("*",)), UNKNOWN, True),
        (frm(principals=("cluster.local/ns/shop/*",)), UNKNOWN, False),
        (frm(principals=("*",)), WORLD, False),
        (frm(not_principals=("*",)), WORLD, True),
        (frm(not_principals=("*",)), WEB, False),
        (frm(not_principals=("*",)), UNKNOWN, False),
        (frm(namespaces=("shop",)), UNKNOWN, True),
        (frm(namespaces=("shop",)), OTHER, False),
        (frm(not_namespaces=("dev",)), OTHER, False),
        (frm(ip_blocks=("203.0.113.0/24",)), WORLD, True),
        (frm(ip_blocks=("203.0.113.0/24",), not_ip_blocks=("203.0.113.7",)), WORLD, False),
        (frm(ip_blocks=("0.0.0.0/0",), not_principals=("*",)), WEB, False),
        (frm(remote_ip_blocks=("203.0.113.7/32",)), WORLD, True),
        (frm(service_accounts=("web",)), WEB, True),
        (frm(service_accounts=("shop/web",)), WEB, True),
        (frm(service_accounts=("dev/web",)), WEB, False),
        (frm(request_principals=("*",)), WEB, False),  # no JWT in flows
        (AuthzRule(), WORLD, True),  # an empty rule always matches
    ],
)
def test_sources(rule: AuthzRule, source: Identity, allowed: bool) -> None:
    assert authorize([allow(rule)], req(source)).allowed is allowed


@pytest.mark.parametrize(
    ("rule", "method", "path", "port", "allowed"),
    [
        (to(ports=("8080",)), None, None, 8080, True),
        (to(ports=("8080",)), None, None, 9090, False),
        (to(not_ports=("9090",)), None, None, 8080, True),
        (to(methods=("GET",)), "GET", "/x", 8080, True),
        (to(methods=("GET",)), "POST", "/x", 8080, False),
        (to(methods=("GET",)), None, None, 8080, False),  # ALLOW needs HTTP: TCP never matches
        (to(paths=("/items",)), "GET", "/items", 8080, True),
        (to(paths=("/items",)), "GET", "/items/1", 8080, False),
        (to(paths=("/items/*",)), "GET", "/items/1/2", 8080, True),
        (to(paths=("*.json",)), "GET", "/a/b.json", 8080, True),
        (to(paths=("/items/{*}",)), "GET", "/items/42", 8080, True),
        (to(paths=("/items/{*}",)), "GET", "/items/42/x", 8080, False),
        (to(paths=("/items/{*}/x",)), "GET", "/items/42/x", 8080, True),
        (to(paths=("/files/{**}",)), "GET", "/files/a/b/c", 8080, True),
        (to(not_paths=("/admin*",)), "GET", "/admin/x", 8080, False),
        (to(hosts=("*.example.com",)), "GET", "/", 8080, False),  # no host in the flows
    ],
)
def test_operations(rule: AuthzRule, method: str | None, path: str | None, port: int,
                    allowed: bool) -> None:  # fmt: skip
    assert authorize([allow(rule)], req(WEB, port, method, path)).allowed is allowed


def test_conditions() -> None:
    def when(key: str, values: tuple[str, ...] = (), not_values: tuple[str, ...] = ()) -> AuthzRule:
        return AuthzRule(conditions=(AuthzCondition(key, values, not_values),))

    assert authorize([allow(when("source.namespace", ("shop",)))], req(WEB)).allowed
    assert not authorize([allow(when("source.namespace", ("dev",)))], req(WEB)).allowed
    assert authorize([allow(when("destination.port", ("8080",)))], req(WEB)).allowed
    assert not authorize([allow(when("source.ip", (), ("10.1.0.0/16",)))], req(WEB)).allowed
    assert authorize([allow(when("source.principal", ("*/sa/web",)))], req(WEB)).allowed
    # An attribute the flows do not carry: never matched by ALLOW, ignored by DENY.
    header = when("request.headers[x-user]", ("admin",))
    assert not authorize([allow(header)], req(WEB)).allowed
    deny = allow(header, name="deny", action="DENY")
    assert not authorize([deny], req(WEB)).allowed


def test_strict_mutual_tls_refuses_plain_text() -> None:
    strict = PeerAuthentication("default", "shop", "STRICT")
    permissive_port = PeerAuthentication("api", "shop", "UNSET", (("app", "api"),),
                                         ((8443, "PERMISSIVE"),))  # fmt: skip
    mesh = PeerAuthentication("default", "istio-system", "STRICT")
    policies = IstioPolicies((), (strict,))
    assert not authorize(policies, req(WORLD)).allowed
    assert "STRICT" in authorize(policies, req(WORLD)).reason
    assert authorize(policies, req(WEB)).allowed
    both = IstioPolicies((), (strict, permissive_port))
    assert authorize(both, req(WORLD, port=8443)).allowed
    assert not authorize(both, req(WORLD, port=8080)).allowed
    assert mtls_mode([mesh], "shop", API, 80) == ("STRICT", "istio-system/default")
    assert mtls_mode([], "shop", API, 80) == ("PERMISSIVE", None)


def test_parsed_manifest_matches_the_model() -> None:
    policy = parse_authorization_policy({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
            "to": [{"operation": {"ports": ["8080"], "methods": ["GET"], "paths": ["/i/{*}"]}}],
        }]},
    })  # fmt: skip
    assert authorize([policy], req(WEB, 8080, "GET", "/i/7")).allowed
    assert not authorize([policy], req(WEB, 8080, "GET", "/i/7/8")).allowed
    assert not authorize([policy], req(OTHER, 8080, "GET", "/i/7")).allowed


@given(
    principals=st.lists(st.sampled_from(["web", "api", "db", "tool"]), max_size=3, unique=True),
    caller=st.sampled_from(["web", "api", "db", "tool"]),
    port=st.sampled_from([80, 8080, 9090]),
    ports=st.lists(st.sampled_from(["80", "8080", "9090"]), max_size=2, unique=True),
)
def test_an_allow_policy_allows_exactly_its_principals_and_ports(
    principals: list[str], caller: str, port: int, ports: list[str]
) -> None:
    """Invariant: with one ALLOW policy of one rule, a call passes iff its principal and port
    are listed (an empty list: any), whatever the lists hold."""
    rule = AuthzRule(
        sources=(AuthzSource(principals=tuple(f"td/ns/shop/sa/{p}" for p in principals)),),
        operations=(AuthzOperation(ports=tuple(ports)),),
    )
    source = Identity(f"td/ns/shop/sa/{caller}", "shop", None, mtls=True)
    expected = (not principals or caller in principals) and (not ports or str(port) in ports)
    assert authorize([allow(rule)], req(source, port)).allowed is expected
