"""Read a guardrails YAML file (``docs/guardrails.md``) into :class:`~.model.Guardrails`.

The file is parsed with the project's safe YAML loader (no tags, no aliases of mappings), every
field is checked, and every problem is a :class:`~recommender.errors.ConfigError` naming the
file, the line and the field (``guardrails[2].ingress[0].action``). Loading is deterministic:
the same text gives equal objects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

import yaml

from ..errors import ConfigError
from ..policy._names import is_dns1123_label, is_label_key, is_label_value
from ..policy._yaml import _Loader, config_yaml_errors
from ..policy.model import Action, Direction, LabelSelector, Peer, PortSpec, Rule
from .model import NAMESPACE_NAME_LABEL, Guardrail, Guardrails, Subject, Tier

__all__ = ["load_guardrails", "parse_guardrails"]

_TOP: Final = ("version", "name", "scope", "namespaceLabels", "guardrails")
_GUARDRAIL: Final = (
    "name",
    "description",
    "controls",
    "tier",
    "priority",
    "subject",
    "ingress",
    "egress",
    "separateBy",
)
_RULE: Final = ("name", "action", "from", "to", "ports")
_ACTIONS: Final[dict[str, Action]] = {"allow": "allow", "deny": "deny", "pass": "pass"}
_TIERS: Final[dict[str, Tier]] = {"admin": "admin", "baseline": "baseline"}
_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
_PORT: Final = re.compile(r"(?P<proto>TCP|UDP|SCTP)/(?P<start>\d{1,5})(?:-(?P<end>\d{1,5}))?")
_NAMED: Final = re.compile(r"(?:(?P<proto>TCP|UDP|SCTP)/)?name:(?P<name>[a-z0-9-]{1,15})")
#: Most guardrails, rules per guardrail and peers per rule (ClusterNetworkPolicy allows 25).
_MAX_ITEMS: Final = 25
_MAX_GUARDRAILS: Final = 1000


def load_guardrails(path: str | Path) -> Guardrails:
    """Read and check a guardrails file.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    Guardrails

    Raises
    ------
    ConfigError
        If the file cannot be read, is not YAML, or a field is missing or wrong; the message
        names the file, line and field.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text.") from None
    return parse_guardrails(text, str(path))


def parse_guardrails(text: str, origin: str = "guardrails") -> Guardrails:
    """Parse guardrails from YAML text (see :func:`load_guardrails`).

    Examples
    --------
    >>> g = parse_guardrails('''
    ... guardrails:
    ...   - name: no-metadata
    ...     priority: 10
    ...     egress:
    ...       - action: deny
    ...         to: [{networks: [169.254.169.254/32]}]
    ... ''')
    >>> g.guardrails[0].egress[0].peers[0].cidr
    '169.254.169.254/32'
    """
    with config_yaml_errors(origin):
        node = yaml.compose(text, Loader=_Loader)  # a SafeLoader: no tags, no object aliases
    return _Parser(origin).file(node)


class _Parser:
    """Turns composed YAML nodes into the model, remembering lines for error messages."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.loader = _Loader("")

    # ------------------------------------------------------------------ plumbing

    def fail(self, node: yaml.Node | None, field: str, message: str) -> NoReturn:
        line = f" line {node.start_mark.line + 1}," if node is not None else ""
        where = f" {field}:" if field else ""
        raise ConfigError(f"{self.origin}:{line}{where} {message}")

    def mapping(
        self, node: yaml.Node | None, field: str, allowed: tuple[str, ...]
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, field, "expected a mapping.")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, field)
            if not isinstance(key, str):
                self.fail(key_node, field, f"key {key!r} is not a string.")
            if key not in allowed:
                self.fail(
                    key_node,
                    f"{field}.{key}" if field else key,
                    f"unknown field; expected one of {', '.join(allowed)}.",
                )
            if key in out:
                self.fail(key_node, f"{field}.{key}" if field else key, "given twice.")
            out[key] = value_node
        return out

    def sequence(self, node: yaml.Node, field: str, limit: int = _MAX_ITEMS) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, field, "expected a list.")
        if len(node.value) > limit:
            self.fail(node, field, f"at most {limit} items are allowed, got {len(node.value)}.")
        return list(node.value)

    def scalar(self, node: yaml.Node, field: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, field, "expected a single value.")
        return self.loader.construct_object(node)

    def text(self, node: yaml.Node, field: str) -> str:
        value = self.scalar(node, field)
        if not isinstance(value, str):
            self.fail(node, field, f"expected a string, got {value!r}.")
        return value

    def name(self, node: yaml.Node, field: str) -> str:
        value = self.text(node, field)
        if not is_dns1123_label(value) or len(value) > 40:
            self.fail(
                node,
                field,
                f"{value[:80]!r} must be a DNS-1123 label of at most 40 characters (lowercase "
                "letters, digits and '-'), because it names the rendered objects.",
            )
        return value

    def label_value(self, node: yaml.Node, field: str) -> str:
        value = self.scalar(node, field)
        if isinstance(value, bool):  # `pci: true` in YAML means the label value "true"
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        if not isinstance(value, str) or not is_label_value(value):
            self.fail(node, field, f"{value!r} is not a valid label value.")
        return value

    # ------------------------------------------------------------------ the file

    def file(self, node: yaml.Node | None) -> Guardrails:
        if node is None:
            self.fail(None, "", "the file is empty; it needs a 'guardrails' list.")
        top = self.mapping(node, "", _TOP)
        if "version" in top and self.scalar(top["version"], "version") != 1:
            self.fail(top["version"], "version", "only version 1 is known.")
        name = self.name(top["name"], "name") if "name" in top else "guardrails"
        scope = None
        if "scope" in top:
            scope_fields = self.mapping(top["scope"], "scope", ("namespaces", "namespaceNames"))
            scope = self.namespaces(top["scope"], scope_fields, "scope")
        labels: dict[str, dict[str, str]] = {}
        if "namespaceLabels" in top:
            raw = top["namespaceLabels"]
            if not isinstance(raw, yaml.MappingNode):
                self.fail(raw, "namespaceLabels", "expected a mapping of namespace to labels.")
            for key_node, value_node in raw.value:
                namespace = self.text(key_node, "namespaceLabels")
                field = f"namespaceLabels.{namespace}"
                if not is_dns1123_label(namespace):
                    self.fail(key_node, field, "is not a namespace name (a DNS-1123 label).")
                labels[namespace] = self.labels(value_node, field)
        if "guardrails" not in top:
            self.fail(node, "guardrails", "is required (a list of guardrails).")
        items = self.sequence(top["guardrails"], "guardrails", _MAX_GUARDRAILS)
        guardrails: list[Guardrail] = []
        seen: dict[str, str] = {}
        priorities: dict[tuple[str, int], str] = {}
        for index, item in enumerate(items):
            field = f"guardrails[{index}]"
            expanded = self.guardrail(item, field)
            first = expanded[0]
            slot = (first.tier, first.priority)
            if slot in priorities:
                self.fail(
                    item,
                    f"{field}.priority",
                    f"{first.tier} priority {first.priority} is already used by "
                    f"{priorities[slot]!r}; guardrails of equal priority have no defined order, "
                    "so give each its own.",
                )
            priorities[slot] = first.name
            for guardrail in expanded:
                if guardrail.name in seen:
                    self.fail(item, f"{field}.name", f"{guardrail.name!r} is used twice.")
                seen[guardrail.name] = field
                guardrails.append(guardrail)
        return Guardrails(name, tuple(guardrails), scope, labels)

    def guardrail(self, node: yaml.Node, field: str) -> list[Guardrail]:
        fields = self.mapping(node, field, _GUARDRAIL)
        for required in ("name", "priority"):
            if required not in fields:
                self.fail(node, f"{field}.{required}", "is required.")
        name = self.name(fields["name"], f"{field}.name")
        field = f"guardrails[{name}]"
        priority = self.scalar(fields["priority"], f"{field}.priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1000:
            self.fail(fields["priority"], f"{field}.priority", "must be a whole number 0..1000.")
        tier_text = self.text(fields["tier"], f"{field}.tier") if "tier" in fields else "admin"
        if tier_text not in _TIERS:
            self.fail(fields["tier"], f"{field}.tier", "must be admin or baseline.")
        tier = _TIERS[tier_text]
        description = (
            self.text(fields["description"], f"{field}.description")
            if "description" in fields
            else ""
        )
        controls: tuple[str, ...] = ()
        if "controls" in fields:
            controls = tuple(
                self.text(c, f"{field}.controls")
                for c in self.sequence(fields["controls"], f"{field}.controls")
            )
        if "separateBy" in fields:
            if any(k in fields for k in ("subject", "ingress", "egress")):
                self.fail(
                    fields["separateBy"],
                    f"{field}.separateBy",
                    "replaces subject, ingress and egress; give it alone.",
                )
            return self.separate(fields["separateBy"], field, name, priority, tier, description,
                                 controls)
        subject = self.subject(fields["subject"], f"{field}.subject") if "subject" in fields \
            else Subject()
        rules: dict[Direction, tuple[Rule, ...]] = {"ingress": (), "egress": ()}
        for direction in ("ingress", "egress"):
            if direction in fields:
                rules[direction] = self.rules(fields[direction], f"{field}.{direction}",
                                              direction, tier)
        if not rules["ingress"] and not rules["egress"]:
            self.fail(node, field, "needs ingress or egress rules (or separateBy).")
        return [
            Guardrail(name, priority, subject, tier, rules["ingress"], rules["egress"],
                      description, controls)
        ]

    def separate(
        self,
        node: yaml.Node,
        field: str,
        name: str,
        priority: int,
        tier: Tier,
        description: str,
        controls: tuple[str, ...],
    ) -> list[Guardrail]:
        """``separateBy: {label, values}``: one deny-across guardrail per value."""
        fields = self.mapping(node, f"{field}.separateBy", ("label", "values"))
        if "label" not in fields or "values" not in fields:
            self.fail(node, f"{field}.separateBy", "needs label and values.")
        key = self.text(fields["label"], f"{field}.separateBy.label")
        if not is_label_key(key):
            self.fail(fields["label"], f"{field}.separateBy.label", f"{key!r} is not a label key.")
        values = [
            self.label_value(v, f"{field}.separateBy.values")
            for v in self.sequence(fields["values"], f"{field}.separateBy.values")
        ]
        if len(values) < 2 or len(set(values)) != len(values):
            self.fail(fields["values"], f"{field}.separateBy.values",
                      "needs at least two distinct values.")
        if tier != "admin":
            self.fail(node, f"{field}.tier", "separateBy guardrails must be in the admin tier.")
        out = []
        for value in sorted(values):
            others = LabelSelector((), ((key, "Exists", ()), (key, "NotIn", (value,))))
            peer = Peer("pods", namespace_selector=others)
            suffix = _suffix(value)
            out.append(
                Guardrail(
                    f"{name}-{suffix}",
                    priority,
                    Subject(LabelSelector(((key, value),))),
                    tier,
                    (Rule("ingress", (peer,), (), "deny", comment=f"from-other-{key}"[:63]),),
                    (Rule("egress", (peer,), (), "deny", comment=f"to-other-{key}"[:63]),),
                    description or f"No traffic between namespaces whose {key} labels differ.",
                    controls,
                )
            )
        return out

    def subject(self, node: yaml.Node, field: str) -> Subject:
        fields = self.mapping(node, field, ("namespaces", "namespaceNames", "pods"))
        if "pods" in fields:
            if len(fields) > 1:
                self.fail(node, field, "give one of namespaces, namespaceNames or pods.")
            namespaces, pods = self.pods(fields["pods"], f"{field}.pods")
            return Subject(namespaces, pods)
        return Subject(self.namespaces(node, fields, field))

    def namespaces(self, node: yaml.Node, fields: dict[str, yaml.Node], field: str
                   ) -> LabelSelector:
        """``namespaces: <selector>`` or ``namespaceNames: [...]`` (one of them)."""
        if ("namespaces" in fields) == ("namespaceNames" in fields):
            self.fail(node, field, "give exactly one of namespaces or namespaceNames.")
        if "namespaces" in fields:
            return self.selector(fields["namespaces"], f"{field}.namespaces")
        names = []
        for item in self.sequence(fields["namespaceNames"], f"{field}.namespaceNames", 100):
            name = self.text(item, f"{field}.namespaceNames")
            if not is_dns1123_label(name):
                self.fail(item, f"{field}.namespaceNames", f"{name[:80]!r} is not a namespace.")
            names.append(name)
        if not names:
            self.fail(fields["namespaceNames"], f"{field}.namespaceNames", "must not be empty.")
        return LabelSelector((), ((NAMESPACE_NAME_LABEL, "In", tuple(sorted(set(names)))),))

    def pods(self, node: yaml.Node, field: str) -> tuple[LabelSelector, LabelSelector]:
        fields = self.mapping(node, field, ("namespaceSelector", "namespaceNames", "podSelector"))
        if "podSelector" not in fields:
            self.fail(node, f"{field}.podSelector", "is required.")
        if "namespaceSelector" in fields or "namespaceNames" in fields:
            renamed = {("namespaces" if k == "namespaceSelector" else k): v
                       for k, v in fields.items() if k != "podSelector"}
            namespaces = self.namespaces(node, renamed, field)
        else:
            namespaces = LabelSelector()
        return namespaces, self.selector(fields["podSelector"], f"{field}.podSelector")

    def selector(self, node: yaml.Node, field: str) -> LabelSelector:
        fields = self.mapping(node, field, ("matchLabels", "matchExpressions"))
        match_labels = (
            tuple(sorted(self.labels(fields["matchLabels"], f"{field}.matchLabels").items()))
            if "matchLabels" in fields
            else ()
        )
        expressions = []
        if "matchExpressions" in fields:
            for i, item in enumerate(
                self.sequence(fields["matchExpressions"], f"{field}.matchExpressions")
            ):
                where = f"{field}.matchExpressions[{i}]"
                expr = self.mapping(item, where, ("key", "operator", "values"))
                if "key" not in expr or "operator" not in expr:
                    self.fail(item, where, "needs key and operator.")
                key = self.text(expr["key"], f"{where}.key")
                if not is_label_key(key):
                    self.fail(expr["key"], f"{where}.key", f"{key!r} is not a label key.")
                op = self.text(expr["operator"], f"{where}.operator")
                if op not in _OPERATORS:
                    self.fail(expr["operator"], f"{where}.operator",
                              f"{op!r} is not one of {', '.join(_OPERATORS)}.")
                values = tuple(
                    sorted({self.label_value(v, f"{where}.values")
                            for v in self.sequence(expr["values"], f"{where}.values", 100)})
                ) if "values" in expr else ()
                if (op in ("In", "NotIn")) != bool(values):
                    self.fail(item, f"{where}.values",
                              "In and NotIn need values; Exists and DoesNotExist take none.")
                expressions.append((key, op, values))
        return LabelSelector(match_labels, tuple(sorted(expressions)))

    def labels(self, node: yaml.Node, field: str) -> dict[str, str]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, field, "expected a mapping of label keys to values.")
        out: dict[str, str] = {}
        for key_node, value_node in node.value:
            key = self.text(key_node, field)
            if not is_label_key(key):
                self.fail(key_node, field, f"{key[:80]!r} is not a valid label key.")
            out[key] = self.label_value(value_node, f"{field}.{key}")
        return out

    def rules(self, node: yaml.Node, field: str, direction: Direction, tier: Tier
              ) -> tuple[Rule, ...]:
        out = []
        names: set[str] = set()
        for index, item in enumerate(self.sequence(node, field)):
            where = f"{field}[{index}]"
            fields = self.mapping(item, where, _RULE)
            peers_key = "from" if direction == "ingress" else "to"
            wrong = "to" if direction == "ingress" else "from"
            if wrong in fields:
                self.fail(fields[wrong], f"{where}.{wrong}",
                          f"{direction} rules name their peers under '{peers_key}'.")
            if "action" not in fields or peers_key not in fields:
                self.fail(item, where, f"needs action and {peers_key}.")
            action_text = self.text(fields["action"], f"{where}.action")
            if action_text not in _ACTIONS:
                self.fail(fields["action"], f"{where}.action", "must be allow, deny or pass.")
            action = _ACTIONS[action_text]
            if tier == "baseline" and action == "pass":
                self.fail(fields["action"], f"{where}.action",
                          "baseline guardrails allow or deny; pass has no tier below to go to.")
            name = self.name(fields["name"], f"{where}.name") if "name" in fields \
                else f"{direction}-{index}"
            if name in names:
                self.fail(item, f"{where}.name", f"{name!r} is used twice.")
            names.add(name)
            peers = tuple(
                self.peer(p, f"{where}.{peers_key}[{i}]", direction)
                for i, p in enumerate(self.sequence(fields[peers_key], f"{where}.{peers_key}"))
            )
            if not peers:
                self.fail(fields[peers_key], f"{where}.{peers_key}", "must not be empty.")
            ports: tuple[PortSpec, ...] = ()
            if "ports" in fields:
                ports = tuple(
                    sorted(
                        {self.port(p, f"{where}.ports")
                         for p in self.sequence(fields["ports"], f"{where}.ports")},
                        key=lambda p: (p.protocol, p.name or "", p.port or 0, p.end_port or 0),
                    )
                )
                if not ports:
                    self.fail(fields["ports"], f"{where}.ports",
                              "must not be empty (leave it out for every port).")
            out.append(Rule(direction, peers, ports, action, comment=name))
        if not out:
            self.fail(node, field, "must not be empty.")
        return tuple(out)

    def peer(self, node: yaml.Node, field: str, direction: Direction) -> Peer:
        fields = self.mapping(node, field, ("namespaces", "namespaceNames", "pods", "networks"))
        if len(fields) != 1:
            self.fail(node, field, "give one of namespaces, namespaceNames, pods, networks.")
        if "pods" in fields:
            namespaces, pods = self.pods(fields["pods"], f"{field}.pods")
            return Peer("pods", namespace_selector=namespaces, pod_selector=pods)
        if "networks" in fields:
            if direction == "ingress":
                self.fail(fields["networks"], f"{field}.networks",
                          "networks are egress peers only (as in ClusterNetworkPolicy).")
            items = self.sequence(fields["networks"], f"{field}.networks")
            if len(items) != 1:
                self.fail(fields["networks"], f"{field}.networks",
                          "give one CIDR per peer (list several peers for several CIDRs).")
            text = self.text(items[0], f"{field}.networks")
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError:
                self.fail(items[0], f"{field}.networks",
                          f"{text[:80]!r} is not a CIDR with its host bits zero.")
            return Peer("cidr", cidr=str(network))
        return Peer("pods", namespace_selector=self.namespaces(node, fields, field))

    def port(self, node: yaml.Node, field: str) -> PortSpec:
        text = self.text(node, field)
        named = _NAMED.fullmatch(text)
        if named:
            return PortSpec(named["proto"] or "TCP", name=named["name"])
        match = _PORT.fullmatch(text)
        if not match:
            self.fail(node, field, f"{text[:80]!r} is not PROTOCOL/PORT, PROTOCOL/START-END or "
                      "name:PORTNAME (protocol TCP, UDP or SCTP).")
        start = int(match["start"])
        end = int(match["end"]) if match["end"] else None
        if not 1 <= start <= 65535 or (end is not None and not start < end <= 65535):
            self.fail(node, field, f"{text!r}: ports are 1..65535 and a range needs start < end.")
        return PortSpec(match["proto"], start, end)


def _suffix(value: str) -> str:
    """A DNS-1123 fragment for a label value."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return cleaned[:20] or "x"


def guardrails_from_mapping(data: Mapping[str, Any], origin: str = "guardrails") -> Guardrails:
    """Guardrails from an already parsed mapping (round-trips it through YAML text)."""
    from ..policy._yaml import dump_yaml

    return parse_guardrails(dump_yaml([dict(data)]), origin)
