"""Calico Open Source flows: Goldmane emitter NDJSON and the Whisker ``/flows`` API JSON.

Both come from Goldmane's ``Flow`` message (``goldmane/proto/api.proto``): the emitter writes the
Go struct with ``encoding/json`` (snake_case keys, a capitalised ``Key``, integer enums, zero
values omitted); gRPC tooling prints protojson (lowerCamelCase keys, enum names, int64 as
strings); Whisker's backend flattens the key, names the enums and joins each label list into one
string. Like Calico Enterprise, Goldmane keeps one flow per reporter, so the ``src`` and ``dst``
flows of a connection are merged as in :mod:`.calico`. See ``docs/formats/goldmane.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ._common import BadValue, norm_port, norm_protocol
from ._flowlog import (
    MISSING_COUNTERS,
    OUTCOME_NOTE,
    TRACE_NOTE,
    Row,
    add_counts,
    count_or_none,
    counters_outcome,
    endpoint_columns,
    labels_from_any,
    micros_of,
    policy_string_ok,
    reporter_of,
    text_or_none,
)
from ._records import JsonRecordReader
from .schema import PENDING_PREFIX

__all__ = ["GoldmaneReader", "WhiskerReader", "render_policy_hit"]

_ACTIONS: Final[dict[Any, str]] = {
    1: "allowed",
    2: "denied",
    3: "pass",
    "allow": "allowed",
    "deny": "denied",
    "pass": "pass",
    0: "unknown",
    "actionunspecified": "unknown",
    "unknown": "unknown",
}
_HIT_ACTIONS: Final[dict[Any, str]] = {1: "allow", 2: "deny", 3: "pass"}
_REPORTER_ENUM: Final = {1: "src", 2: "dst"}
_STAGED_KINDS: Final = {
    3,
    4,
    5,
    "stagednetworkpolicy",
    "stagedglobalnetworkpolicy",
    "stagedkubernetesnetworkpolicy",
}
_PROFILE_KINDS: Final = {9, "profile"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_SNAKE_CACHE: dict[str, str] = {}


def _snake(name: str) -> str:
    hit = _SNAKE_CACHE.get(name)
    if hit is None:
        hit = "Key" if name in ("Key", "key") else _CAMEL.sub(r"_\1", name).lower()
        if len(_SNAKE_CACHE) < 10_000:
            _SNAKE_CACHE[name] = hit
    return hit


def _snake_keys(obj: Any) -> Any:
    """protojson's lowerCamelCase keys as the proto's snake_case names (recursively)."""
    if isinstance(obj, dict):
        return {_snake(k) if isinstance(k, str) else k: _snake_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snake_keys(v) for v in obj]
    return obj


def _enum_key(value: Any) -> Any:
    """An enum value as an int (also from a numeric string) or a lower-case name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.isdigit() else value.lower()
    return value if isinstance(value, int) else None


def _verdict(value: Any) -> str:
    if value is None:  # omitted zero value: ActionUnspecified
        return "unknown"
    verdict = _ACTIONS.get(_enum_key(value))
    if verdict is None:
        raise BadValue("invalid-action", f"action {value!r} is not Allow, Deny or Pass")
    return verdict


def _reporter(value: Any) -> str | None:
    key = _enum_key(value)
    if isinstance(key, int):
        return _REPORTER_ENUM.get(key)
    return reporter_of(key)


def render_policy_hit(hit: Any) -> str | None:
    """A ``PolicyHit`` as Calico's policy string ``index|tier|namespace/name|action|rule``.

    Staged kinds get Calico's ``staged:`` name prefix; a ``Profile`` hit is written as Calico
    writes profiles (tier ``__PROFILE__``, name ``__PROFILE__.<name>``). Non-objects give None.
    """
    if not isinstance(hit, Mapping):
        return None
    kind = _enum_key(hit.get("kind"))
    name = str(hit.get("name") or "")
    tier = str(hit.get("tier") or "")
    if kind in _STAGED_KINDS and "staged:" not in name:
        name = f"staged:{name}"
    if kind in _PROFILE_KINDS:
        tier = tier or "__PROFILE__"
        if not name.startswith("__PROFILE__."):
            name = f"__PROFILE__.{name}"
    namespace = hit.get("namespace")
    if namespace and isinstance(namespace, str):
        name = f"{namespace}/{name}"
    action = _enum_key(hit.get("action"))
    action_text = _HIT_ACTIONS.get(action, str(action) if action is not None else "")
    index = _int_or_zero(hit.get("policy_index"))
    rule = _int_or_zero(hit.get("rule_index"))
    return f"{index}|{tier}|{name}|{action_text}|{rule}"


def _int_or_zero(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return 0


def _named(hit: Any) -> bool:
    name = hit.get("name") if isinstance(hit, Mapping) else None
    return isinstance(name, str) and bool(name.strip())


def _policies(trace: Any, *names: str) -> tuple[list[str] | None, str | None]:
    """The enforced trace (the first of ``names`` present), then the pending trace
    (``pending_policies``, Whisker's ``pending``), each of its entries prefixed
    :data:`~recommender.ingest.schema.PENDING_PREFIX`; and the name of the pending trace's
    field when it is malformed (not a list, or a hit that is not a ``PolicyHit`` with a name and
    an allow, deny or pass action), for the ledger, else None. Hits that are not objects are
    left out, as before."""
    if not isinstance(trace, Mapping):
        return None, None
    out: list[str] = []
    for name in names:
        hits = trace.get(name)
        if isinstance(hits, list) and hits:
            out = [p for p in map(render_policy_hit, hits) if p is not None]
            break
    note = None
    for name in ("pending_policies", "pending"):
        hits = trace.get(name)
        if hits is None or hits == []:
            continue
        if not isinstance(hits, list):
            note = name
            break
        pending = [render_policy_hit(hit) for hit in hits]
        out += [PENDING_PREFIX + p for p in pending if p is not None]
        if not all(map(policy_string_ok, pending)) or not all(_named(hit) for hit in hits):
            note = name
        break
    return out or None, note


def _namespace(value: Any) -> str | None:
    ns = text_or_none(value)
    return None if ns == "Global" else ns  # Whisker's stand-in for "no namespace"


def _connections(rec: Mapping[str, Any]) -> int:
    for name in ("num_connections_started", "num_connections_completed", "num_connections_live"):
        count = count_or_none(rec.get(name), name)
        if count:
            return count
    return 1


def _times(rec: Mapping[str, Any]) -> tuple[int, int]:
    start = micros_of(rec.get("start_time"), "start_time")
    end = micros_of(rec.get("end_time"), "end_time")
    if start is None and end is None:
        raise BadValue("missing-time", "no start_time or end_time")
    start = end if start is None else start
    end = start if end is None else end
    assert start is not None and end is not None
    return (start, end) if start <= end else (end, start)


def _dst_port(protocol: str, value: Any) -> int | None:
    if protocol in ("ICMP", "ICMPv6"):
        return None
    port = norm_port(value, "dest_port")
    return port or None  # an omitted zero value is no port


def _counters(rec: Mapping[str, Any], protocol: str, reporter: str | None) -> Row:
    """Packets and bytes (both directions) and the outcome the reporting end's counters give
    (:func:`~recommender.ingest._flowlog.counters_outcome`). Goldmane's encoder leaves zero
    values out, so a counter missing beside others is 0; with none at all nothing is known."""
    values = [
        count_or_none(rec.get(name), name)
        for name in ("packets_in", "packets_out", "bytes_in", "bytes_out")
    ]
    row: Row = {
        "packets": add_counts(values[0], values[1]),
        "bytes": add_counts(values[2], values[3]),
    }
    if all(v is None for v in values):
        row["outcome"], row[OUTCOME_NOTE] = "unknown", MISSING_COUNTERS
        return row
    outcome, note = counters_outcome(protocol, reporter, *(v or 0 for v in values))
    row["outcome"] = outcome
    if note is not None:
        row[OUTCOME_NOTE] = note
    return row


class GoldmaneReader(JsonRecordReader):
    """Goldmane flows: emitter NDJSON (``{"Key": {...}, "start_time": ...}``, integer enums).

    Also reads protojson (lowerCamelCase keys, enum names, int64 as strings) and
    ``FlowResult`` wrappers (``{"id": ..., "flow": {...}}``), as lines or in one document.
    """

    name = "goldmane"
    title = "a Goldmane flow"

    def unwrap(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            flow = obj.get("flow")
            if isinstance(flow, dict) and ("Key" in flow or "key" in flow):
                obj = flow
            if "key" in obj or "startTime" in obj or "endTime" in obj:
                obj = _snake_keys(obj)
        return obj

    def looks_like(self, obj: Any) -> bool:
        return isinstance(obj, dict) and isinstance(obj.get("Key"), dict)

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        key: dict[str, Any] = rec["Key"]
        if any(isinstance(k, str) and k != k.lower() for k in key):
            key = _snake_keys(key)
        start, end = _times(rec)
        proto = key.get("proto")
        if proto is None:
            raise BadValue("invalid-protocol", "the flow key has no proto")
        protocol = norm_protocol(proto)
        service_port = text_or_none(key.get("dest_service_port_name"))
        if service_port is None and key.get("dest_service_port"):
            service_port = text_or_none(key.get("dest_service_port"))
        policies, trace_note = _policies(key.get("policies"), "enforced_policies")
        out: Row = {
            "start_time": start,
            "end_time": end,
            **self._endpoint(key, rec, "source", "src"),
            **self._endpoint(key, rec, "dest", "dst"),
            "dst_port": _dst_port(protocol, key.get("dest_port")),
            "protocol": protocol,
            "verdict": _verdict(key.get("action")),
            "reporter": _reporter(key.get("reporter")),
            "policies": policies,
            "dst_service_namespace": _namespace(key.get("dest_service_namespace")),
            "dst_service_name": text_or_none(key.get("dest_service_name")),
            "dst_service_port": service_port,
            "is_reply": False,
            "connections": _connections(rec),
            "source_format": self.name,
            "source_file": file,
            "source_row": row,
        }
        out.update(_counters(rec, protocol, out["reporter"]))
        if trace_note is not None:
            out[TRACE_NOTE] = trace_note
        return out

    @staticmethod
    def _endpoint(key: Mapping[str, Any], rec: Mapping[str, Any], side: str, prefix: str) -> Row:
        return endpoint_columns(
            prefix,
            key.get(f"{side}_type"),
            _namespace(key.get(f"{side}_namespace")),
            None,  # Goldmane names are always aggregated (the pods' GenerateName)
            text_or_none(key.get(f"{side}_name")),
            labels_from_any(rec.get(f"{side}_labels")),
        )


class WhiskerReader(JsonRecordReader):
    """Whisker ``/flows`` API records: RFC 3339 times, named enums, labels as one string.

    A file can be JSON lines, one JSON array or ``{"items": [...]}`` (the API's list response).
    """

    name = "whisker"
    title = "a Whisker flow"

    def looks_like(self, obj: Any) -> bool:
        return (
            isinstance(obj, dict)
            and "action" in obj
            and ("protocol" in obj or "proto" in obj)
            and any(
                k in obj for k in ("source_name", "dest_name", "source_namespace", "dest_namespace")
            )
        )

    def convert(self, rec: dict[str, Any], file: str, row: int) -> Row:
        start, end = _times(rec)
        protocol = norm_protocol(rec.get("protocol", rec.get("proto")))
        policies, trace_note = _policies(rec.get("policies"), "enforced", "enforced_policies")
        out: Row = {
            "start_time": start,
            "end_time": end,
            **self._endpoint(rec, "source", "src"),
            **self._endpoint(rec, "dest", "dst"),
            "dst_port": _dst_port(protocol, rec.get("dest_port")),
            "protocol": protocol,
            "verdict": _verdict(rec.get("action")),
            "reporter": _reporter(rec.get("reporter")),
            "policies": policies,
            "dst_service_namespace": _namespace(rec.get("dest_service_namespace")),
            "dst_service_name": text_or_none(rec.get("dest_service_name")),
            "dst_service_port": text_or_none(
                rec.get("dest_service_port_name", rec.get("dest_service_port"))
            ),
            "is_reply": False,
            "connections": _connections(rec),
            "source_format": self.name,
            "source_file": file,
            "source_row": row,
        }
        out.update(_counters(rec, protocol, out["reporter"]))
        if trace_note is not None:
            out[TRACE_NOTE] = trace_note
        return out

    @staticmethod
    def _endpoint(rec: Mapping[str, Any], side: str, prefix: str) -> Row:
        return endpoint_columns(
            prefix,
            rec.get(f"{side}_type"),
            _namespace(rec.get(f"{side}_namespace")),
            None,
            text_or_none(rec.get(f"{side}_name")),
            labels_from_any(rec.get(f"{side}_labels")),
        )
