"""Read Kubernetes NetworkPolicy manifests into the dialect-neutral model.

The inverse of :func:`recommender.policy.kubernetes.render_kubernetes`: a
``networking.k8s.io/v1`` NetworkPolicy becomes a :class:`~recommender.policy.model.Policy`
with the API server's defaults applied, so that the model states the policy's meaning:

* ``policyTypes`` absent or empty: Ingress always, plus Egress iff ``egress`` holds at least one
  rule (the API server's defaulting, ``len(spec.Egress) != 0``; NCA also adds Egress for a
  present but empty ``egress: []``);
* ``metadata.namespace`` absent: ``default``;
* ``from``/``to`` absent or empty: every peer (an empty ``peers`` tuple); ``ports`` absent or
  empty: every port (an empty ``ports`` tuple); ``ingress: [{}]`` is one allow-all rule while an
  absent ``ingress`` is no rule at all;
* a port without ``protocol`` is TCP; a string ``port`` is a named port
  (:attr:`~recommender.policy.model.PortSpec.name`);
* a peer with ``podSelector`` only is a pods peer of the policy's namespace, with
  ``namespaceSelector`` only every pod of the selected namespaces, with both their AND; an
  ``ipBlock`` peer is a ``cidr`` peer with its ``except`` list.

Rules whose direction is missing from an explicit ``policyTypes`` are ignored by Kubernetes;
they are dropped here (with a logged warning), so the model never holds rules without effect.
Selector values, rules, peers and ports keep the manifest's order (``matchLabels`` and
``In``/``NotIn`` values are sorted, as the model requires), which makes
``render_kubernetes(read_policies(f))`` reproduce the manifests this project writes.

:func:`read_policies` reads files and folders. Documents of other kinds (Namespaces, workloads,
Services) are skipped, also inside ``kind: List`` or any ``*List``; but policy kinds the
Kubernetes evaluator cannot honour (Calico, Cilium, AdminNetworkPolicy and friends) raise
:class:`~recommender.errors.UnsupportedDialectError` rather than being dropped silently, the
failure mode that makes NCA report a deny-all as allow-all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from ..errors import InputError, UnsupportedDialectError
from ._yaml import load_yaml_documents
from .authz import (
    AuthorizationPolicy,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    IstioPolicies,
    PeerAuthentication,
)
from .model import Direction, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = [
    "ISTIO_KINDS",
    "iter_manifests",
    "parse_authorization_policy",
    "parse_networkpolicy",
    "parse_peer_authentication",
    "read_istio_policies",
    "read_policies",
]

logger = logging.getLogger(__name__)

_SUFFIXES: Final = (".yaml", ".yml", ".json")
_POLICY_GROUPS: Final = ("cilium.io", "projectcalico.org", "policy.networking.k8s.io")
_TYPES: Final[dict[str, Direction]] = {"Ingress": "ingress", "Egress": "egress"}
_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
#: Istio's security kinds: read by :func:`read_istio_policies`, skipped by :func:`read_policies`.
ISTIO_KINDS: Final = ("AuthorizationPolicy", "PeerAuthentication")
_ISTIO_GROUP: Final = "security.istio.io"
_AUTHZ_ACTIONS: Final = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
_MTLS_MODES: Final = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


def read_policies(
    paths: str | Path | Iterable[str | Path], *, skip_kinds: Iterable[str] = ()
) -> PolicySet:
    """Read every Kubernetes NetworkPolicy in YAML files and folders.

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files, or folders searched recursively for ``*.yaml``, ``*.yml`` and ``*.json``.
    skip_kinds : iterable of str, optional
        Policy kinds to skip instead of refusing (for instance the rendered guardrails in an
        output tree when the guardrails file itself is evaluated with them).

    Returns
    -------
    PolicySet
        One :class:`~recommender.policy.model.Policy` per NetworkPolicy. Documents of
        non-policy kinds are skipped (logged at debug level).

    Raises
    ------
    InputError
        If a path is missing, a file is not YAML, a NetworkPolicy is malformed, or two
        NetworkPolicies share a namespace and name.
    UnsupportedDialectError
        If a document is a policy kind other than ``networking.k8s.io/v1`` NetworkPolicy
        (Calico, Cilium, AdminNetworkPolicy, ...), which Kubernetes semantics cannot evaluate.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "deny.yaml").write_text(
    ...     "apiVersion: networking.k8s.io/v1\\nkind: NetworkPolicy\\n"
    ...     "metadata: {name: deny}\\nspec: {podSelector: {}}\\n")
    >>> policy = read_policies(folder).policies[0]
    >>> policy.namespace, policy.policy_types, policy.ingress
    ('default', ('ingress',), ())
    """
    policies: dict[tuple[str, str], Policy] = {}
    skipped = frozenset(skip_kinds)
    for where, doc in iter_manifests(paths):
        api = str(doc.get("apiVersion", ""))
        kind = str(doc.get("kind", ""))
        group = api.rpartition("/")[0]
        if kind in skipped:
            logger.debug("%s: skipping %s %s as asked", where, api, kind)
        elif group == "networking.k8s.io" and kind == "NetworkPolicy":
            try:
                policy = parse_networkpolicy(doc)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            key = (policy.namespace, policy.name)
            if key in policies:
                raise InputError(
                    f"{where}: NetworkPolicy {policy.name!r} in namespace {policy.namespace!r} "
                    "is defined twice; remove one of them."
                )
            policies[key] = policy
        elif group == _ISTIO_GROUP and kind in ISTIO_KINDS:
            logger.debug("%s: %s %s is read by read_istio_policies", where, api, kind)
        elif group in _POLICY_GROUPS or kind.endswith("NetworkPolicy"):
            raise UnsupportedDialectError(
                f"{where}: {api} {kind} is a policy kind that Kubernetes NetworkPolicy semantics "
                "cannot evaluate; remove it from the input rather than have it ignored."
            )
        else:
            logger.debug("%s: skipping %s %s", where, api, kind)
    return PolicySet(tuple(policies.values()))


def iter_manifests(
    paths: str | Path | Iterable[str | Path],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield every manifest in YAML files and folders, unpacking ``List`` kinds.

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files, or folders searched recursively (sorted) for ``*.yaml``, ``*.yml``, ``*.json``.

    Yields
    ------
    tuple of (str, dict)
        A location (``file (document N)``) and the manifest.

    Raises
    ------
    InputError
        If a path does not exist or a file is not YAML.
    """
    for path in _files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} cannot be read: {exc}") from None
        try:
            docs = load_yaml_documents(text)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        for index, doc in enumerate(docs, 1):
            yield from _unpack(f"{path} (document {index})", doc)


def _files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """The files named or found under the folders named."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(
                f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix in _SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path} does not exist; give a YAML file or a folder of them.")
    return files


def _unpack(where: str, doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The document, or the items of a ``*List`` document (recursively)."""
    items = doc.get("items")
    if str(doc.get("kind", "")).endswith("List") and isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield from _unpack(f"{where} item {index}", item)
    else:
        yield where, doc


def parse_networkpolicy(doc: dict[str, Any]) -> Policy:
    """Turn one ``networking.k8s.io/v1`` NetworkPolicy manifest into a model policy.

    Parameters
    ----------
    doc : dict
        The manifest, as loaded from YAML.

    Returns
    -------
    Policy
        The policy with the API server's defaults applied (see the module docstring).

    Raises
    ------
    InputError
        If the document is not a NetworkPolicy or breaks its schema (no name, a peer with
        neither selector nor ipBlock, an unknown policy type or selector operator, a port
        that is neither a number nor a name).

    Examples
    --------
    >>> policy = parse_networkpolicy({
    ...     "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"},
    ...     "spec": {"podSelector": {"matchLabels": {"app": "web"}},
    ...              "ingress": [{"ports": [{"port": "http"}, {"port": 80, "endPort": 90}]}]}})
    >>> policy.policy_types, policy.ingress[0].peers, policy.ingress[0].ports
    (('ingress',), (), (PortSpec(protocol='TCP', port=None, end_port=None, name='http'), \
PortSpec(protocol='TCP', port=80, end_port=90, name=None)))
    """
    if doc.get("kind") != "NetworkPolicy":
        raise InputError(f"Expected a NetworkPolicy, got kind {doc.get('kind')!r}.")
    metadata = _mapping(doc.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("A NetworkPolicy has no metadata.name.")
    namespace = str(metadata.get("namespace") or "default")
    where = f"NetworkPolicy {name!r} in namespace {namespace!r}"
    spec = _mapping(doc.get("spec"), f"{where}: spec")

    raw_types = _list(spec.get("policyTypes"), f"{where}: policyTypes")
    if raw_types:
        unknown = [t for t in raw_types if t not in _TYPES]
        if unknown:
            raise InputError(f"{where}: unknown policyTypes {unknown}; use Ingress and Egress.")
        types = tuple(d for t, d in _TYPES.items() if t in raw_types)
    else:
        types = ("ingress", "egress") if spec.get("egress") else ("ingress",)

    rules: dict[Direction, tuple[Rule, ...]] = {}
    keys: tuple[tuple[Direction, str], ...] = (("ingress", "from"), ("egress", "to"))
    for direction, key in keys:
        raw_rules = _list(spec.get(direction), f"{where}: {direction}")
        if raw_rules and direction not in types:
            logger.warning(
                "%s: %d %s rule(s) ignored, as Kubernetes does: %s is not in policyTypes",
                where,
                len(raw_rules),
                direction,
                direction.capitalize(),
            )
            raw_rules = []
        rules[direction] = tuple(
            _rule(direction, key, _mapping(r, f"{where}: {direction} rule"), where)
            for r in raw_rules
        )
    return Policy(
        name=name,
        namespace=namespace,
        selector=_selector(spec.get("podSelector"), f"{where}: podSelector"),
        policy_types=types,
        ingress=rules["ingress"],
        egress=rules["egress"],
        labels=_pairs(metadata.get("labels"), f"{where}: metadata.labels"),
        annotations=_pairs(metadata.get("annotations"), f"{where}: metadata.annotations"),
    )


def _rule(direction: Direction, key: str, raw: dict[str, Any], where: str) -> Rule:
    """One ingress or egress rule."""
    peers = tuple(
        _peer(_mapping(p, f"{where}: peer"), where)
        for p in _list(raw.get(key), f"{where}: {direction} {key}")
    )
    ports = tuple(
        _port(_mapping(p, f"{where}: port"), where)
        for p in _list(raw.get("ports"), f"{where}: {direction} ports")
    )
    return Rule(direction, peers, ports)


def _peer(raw: dict[str, Any], where: str) -> Peer:
    """A selector peer or an ipBlock peer."""
    block = raw.get("ipBlock")
    if block is not None:
        if "podSelector" in raw or "namespaceSelector" in raw:
            raise InputError(f"{where}: a peer sets ipBlock together with a selector.")
        block = _mapping(block, f"{where}: ipBlock")
        cidr = block.get("cidr")
        if not isinstance(cidr, str):
            raise InputError(f"{where}: an ipBlock has no cidr.")
        excepts = tuple(str(e) for e in _list(block.get("except"), f"{where}: except"))
        return Peer("cidr", cidr=cidr, except_=excepts)
    if "podSelector" not in raw and "namespaceSelector" not in raw:
        raise InputError(f"{where}: a peer has neither podSelector, namespaceSelector nor ipBlock.")
    ns = raw.get("namespaceSelector")
    pod = raw.get("podSelector")
    return Peer(
        "pods",
        namespace_selector=None if ns is None else _selector(ns, f"{where}: namespaceSelector"),
        pod_selector=None if pod is None else _selector(pod, f"{where}: podSelector"),
    )


def _port(raw: dict[str, Any], where: str) -> PortSpec:
    """A port: protocol (default TCP), number, range or name."""
    protocol = str(raw.get("protocol") or "TCP").upper()
    port = raw.get("port")
    end = raw.get("endPort")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
        raise InputError(f"{where}: endPort {end!r} is not a number.")
    if port is None:
        return PortSpec(protocol, None, end)
    if isinstance(port, str):
        if end is not None:
            raise InputError(f"{where}: endPort cannot go with the named port {port!r}.")
        return PortSpec(protocol, name=port)
    if isinstance(port, bool) or not isinstance(port, int):
        raise InputError(f"{where}: port {port!r} is neither a number nor a name.")
    return PortSpec(protocol, port, end)


def _selector(raw: object, where: str) -> LabelSelector:
    """A label selector; None or ``{}`` is the empty one."""
    if raw is None:
        return LabelSelector()
    data = _mapping(raw, where)
    labels = _pairs(data.get("matchLabels"), where)
    expressions: list[tuple[str, str, tuple[str, ...]]] = []
    for item in _list(data.get("matchExpressions"), where):
        expr = _mapping(item, where)
        op = expr.get("operator")
        if op not in _OPERATORS:
            raise InputError(f"{where}: selector operator {op!r} is not one of {_OPERATORS}.")
        values = tuple(sorted(str(v) for v in _list(expr.get("values"), where)))
        expressions.append((str(expr.get("key", "")), str(op), values))
    return LabelSelector(labels, tuple(expressions))


def _pairs(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    """A string mapping as sorted pairs."""
    if raw is None:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in _mapping(raw, where).items()))


def _mapping(raw: object, where: str) -> dict[str, Any]:
    """``raw`` if a mapping (None as ``{}``), else an InputError."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{where} is a {type(raw).__name__}, not a mapping.")
    return raw


def _list(raw: object, where: str) -> list[Any]:
    """``raw`` if a list (None as ``[]``), else an InputError."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InputError(f"{where} is a {type(raw).__name__}, not a list.")
    return raw


# --------------------------------------------------------------------------- Istio


def read_istio_policies(paths: str | Path | Iterable[str | Path]) -> IstioPolicies:
    """Read every Istio AuthorizationPolicy and PeerAuthentication in YAML files and folders.

    Parameters
    ----------
    paths : str, Path or iterable of them
        Files, or folders searched recursively for ``*.yaml``, ``*.yml`` and ``*.json``.

    Returns
    -------
    IstioPolicies
        The objects found, sorted by namespace and name (none: an empty, false value).

    Raises
    ------
    InputError
        If a path is missing, a file is not YAML, an object is malformed or defined twice.
    """
    authz: dict[tuple[str, str], AuthorizationPolicy] = {}
    peers: dict[tuple[str, str], PeerAuthentication] = {}
    for where, doc in iter_manifests(paths):
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        kind = doc.get("kind")
        if group != _ISTIO_GROUP or kind not in ISTIO_KINDS:
            continue
        try:
            parsed = (
                parse_authorization_policy(doc)
                if kind == "AuthorizationPolicy"
                else parse_peer_authentication(doc)
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        target: dict[tuple[str, str], Any] = authz if kind == "AuthorizationPolicy" else peers
        key = (parsed.namespace, parsed.name)
        if key in target:
            raise InputError(
                f"{where}: {kind} {parsed.name!r} in namespace {parsed.namespace!r} is defined "
                "twice; remove one of them."
            )
        target[key] = parsed
    return IstioPolicies(
        tuple(authz[k] for k in sorted(authz)), tuple(peers[k] for k in sorted(peers))
    )


def _istio_meta(doc: dict[str, Any], kind: str) -> tuple[str, str, str, dict[str, Any]]:
    if doc.get("kind") != kind:
        raise InputError(f"Expected a {kind}, got kind {doc.get('kind')!r}.")
    metadata = _mapping(doc.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"A {kind} has no metadata.name.")
    namespace = str(metadata.get("namespace") or "default")
    where = f"{kind} {name!r} in namespace {namespace!r}"
    return name, namespace, where, _mapping(doc.get("spec"), f"{where}: spec")


def _workload_selector(raw: object, where: str) -> tuple[tuple[str, str], ...] | None:
    """``selector.matchLabels`` (None: no selector, every workload)."""
    if raw is None:
        return None
    data = _mapping(raw, where)
    extra = sorted(set(data) - {"matchLabels"})
    if extra:
        raise InputError(f"{where}: selector has {extra}; Istio selects by matchLabels only.")
    labels = _pairs(data.get("matchLabels"), where)
    return labels or None


def _strings(raw: object, where: str) -> tuple[str, ...]:
    return tuple(str(v) for v in _list(raw, where))


def parse_authorization_policy(doc: dict[str, Any]) -> AuthorizationPolicy:
    """Turn one ``security.istio.io`` AuthorizationPolicy manifest into
    :class:`~recommender.policy.authz.AuthorizationPolicy`.

    Raises
    ------
    InputError
        If the document breaks the schema (unknown action, a rule that is not a mapping...).

    Examples
    --------
    >>> p = parse_authorization_policy({
    ...     "kind": "AuthorizationPolicy", "metadata": {"name": "api", "namespace": "shop"},
    ...     "spec": {"selector": {"matchLabels": {"app": "api"}}, "rules": [
    ...         {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}],
    ...          "to": [{"operation": {"ports": ["8080"]}}]}]}})
    >>> p.action, p.selector, p.rules[0].operations[0].ports
    ('ALLOW', (('app', 'api'),), ('8080',))
    """
    name, namespace, where, spec = _istio_meta(doc, "AuthorizationPolicy")
    action = str(spec.get("action") or "ALLOW")
    if action not in _AUTHZ_ACTIONS:
        raise InputError(f"{where}: action {action!r} is not one of {', '.join(_AUTHZ_ACTIONS)}.")
    provider = spec.get("provider")
    rules = []
    for raw_rule in _list(spec.get("rules"), f"{where}: rules"):
        rule = _mapping(raw_rule, f"{where}: rule")
        sources = tuple(
            _authz_source(_mapping(_mapping(f, f"{where}: from").get("source"), where), where)
            for f in _list(rule.get("from"), f"{where}: from")
        )
        operations = tuple(
            _authz_operation(_mapping(_mapping(t, f"{where}: to").get("operation"), where), where)
            for t in _list(rule.get("to"), f"{where}: to")
        )
        conditions = []
        for raw in _list(rule.get("when"), f"{where}: when"):
            cond = _mapping(raw, f"{where}: when")
            key = cond.get("key")
            if not isinstance(key, str) or not key:
                raise InputError(f"{where}: a when condition has no key.")
            conditions.append(
                AuthzCondition(
                    key,
                    _strings(cond.get("values"), where),
                    _strings(cond.get("notValues"), where),
                )
            )
        rules.append(AuthzRule(sources, operations, tuple(conditions)))
    return AuthorizationPolicy(
        name=name,
        namespace=namespace,
        action=action,
        selector=_workload_selector(spec.get("selector"), f"{where}: selector"),
        rules=tuple(rules),
        provider=str(_mapping(provider, where).get("name")) if provider is not None else None,
        targets=bool(spec.get("targetRef") or spec.get("targetRefs")),
    )


_SOURCE_FIELDS: Final = {
    "principals": "principals",
    "notPrincipals": "not_principals",
    "requestPrincipals": "request_principals",
    "notRequestPrincipals": "not_request_principals",
    "namespaces": "namespaces",
    "notNamespaces": "not_namespaces",
    "serviceAccounts": "service_accounts",
    "notServiceAccounts": "not_service_accounts",
    "ipBlocks": "ip_blocks",
    "notIpBlocks": "not_ip_blocks",
    "remoteIpBlocks": "remote_ip_blocks",
    "notRemoteIpBlocks": "not_remote_ip_blocks",
}
_OPERATION_FIELDS: Final = {
    "hosts": "hosts",
    "notHosts": "not_hosts",
    "ports": "ports",
    "notPorts": "not_ports",
    "methods": "methods",
    "notMethods": "not_methods",
    "paths": "paths",
    "notPaths": "not_paths",
}


def _authz_source(raw: dict[str, Any], where: str) -> AuthzSource:
    unknown = sorted(set(raw) - set(_SOURCE_FIELDS))
    if unknown:
        raise InputError(f"{where}: source field(s) {unknown} are not Istio's.")
    return AuthzSource(**{_SOURCE_FIELDS[k]: _strings(v, where) for k, v in raw.items()})


def _authz_operation(raw: dict[str, Any], where: str) -> AuthzOperation:
    unknown = sorted(set(raw) - set(_OPERATION_FIELDS))
    if unknown:
        raise InputError(f"{where}: operation field(s) {unknown} are not Istio's.")
    return AuthzOperation(**{_OPERATION_FIELDS[k]: _strings(v, where) for k, v in raw.items()})


def parse_peer_authentication(doc: dict[str, Any]) -> PeerAuthentication:
    """Turn one ``security.istio.io`` PeerAuthentication manifest into
    :class:`~recommender.policy.authz.PeerAuthentication`.

    Examples
    --------
    >>> parse_peer_authentication({"kind": "PeerAuthentication",
    ...     "metadata": {"name": "default", "namespace": "shop"},
    ...     "spec": {"mtls": {"mode": "STRICT"}}}).mode
    'STRICT'
    """
    name, namespace, where, spec = _istio_meta(doc, "PeerAuthentication")

    def mode(raw: object) -> str:
        value = str(_mapping(raw, f"{where}: mtls").get("mode") or "UNSET")
        if value not in _MTLS_MODES:
            raise InputError(
                f"{where}: mtls mode {value!r} is not one of {', '.join(_MTLS_MODES)}."
            )
        return value

    ports = []
    for port, raw in _mapping(spec.get("portLevelMtls"), f"{where}: portLevelMtls").items():
        try:
            number = int(port)
        except (TypeError, ValueError):
            raise InputError(f"{where}: portLevelMtls key {port!r} is not a port.") from None
        ports.append((number, mode(raw)))
    return PeerAuthentication(
        name=name,
        namespace=namespace,
        mode=mode(spec.get("mtls")),
        selector=_workload_selector(spec.get("selector"), f"{where}: selector"),
        port_modes=tuple(sorted(ports)),
    )
