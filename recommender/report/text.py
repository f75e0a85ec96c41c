"""Words and values as the report forms show them: plurals, durations, times to the second,
label maps and lists without Python's repr, and the meaning of every rule flag.

Shared by ``report.md`` and ``report.html`` so that both say the same thing the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

__all__ = [
    "FLAG_HELP",
    "duration",
    "flag_help",
    "plain",
    "plural",
    "when",
]

#: What each rule flag means (a flag ``entity:kube-apiserver`` is explained by ``entity:``).
FLAG_HELP: Final[Mapping[str, str]] = {
    "rare": "seen fewer times than rare_connections: check the traffic is wanted",
    "internet": "many public clients: the rule allows any public address",
    "merged-cidr": "addresses merged into a block that also holds addresses never seen",
    "node-address": "a node's own address (host network or node port)",
    "entity:": "a cluster component by name (the API server, a node); Cilium names it as such",
    "unknown-endpoint": "the flow log could not name this peer",
    "broad:": "an aggregated peer without addresses (Calico pub/pvt, a NetworkSet): a broad block",
    "all-ports": "the flow had no port, so the rule allows every port of the protocol",
    "address-class:": "an address of a special class (link-local, loopback, documentation...)",
    "decision:allow": "allowed by the decisions file although never observed",
}


def flag_help(flag: str) -> str:
    """What ``flag`` means ("" when unknown)."""
    if flag in FLAG_HELP:
        return FLAG_HELP[flag]
    prefix = flag.split(":", 1)[0] + ":"
    return FLAG_HELP.get(prefix, "")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 policy``, ``2 policies``, ``1,024 rules``.

    >>> plural(1, "policy", "policies"), plural(2, "policy", "policies"), plural(0, "rule")
    ('1 policy', '2 policies', '0 rules')
    """
    word = singular if count == 1 else (plural_form or _plural(singular))
    return f"{count:,} {word}"


def _plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last.endswith("y") and last[-2:-1] not in ("a", "e", "o", "u"):
        return f"{prefix}{last[:-1]}ies"
    if last.endswith(("s", "x", "ch", "sh")):
        return f"{prefix}{last}es"
    return f"{prefix}{last}s"


def duration(seconds: float) -> str:
    """A span in words, to the second: ``5 seconds``, ``2 hours 5 minutes``, ``3 days 4 hours``.

    >>> duration(5.4), duration(7500), duration(3 * 86400 + 4 * 3600)
    ('5 seconds', '2 hours 5 minutes', '3 days 4 hours')
    """
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second")]
    shown = [plural(n, unit) for n, unit in parts if n][:2]
    return " ".join(shown) if shown else "0 seconds"


_ISO: Final = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?")


def when(value: Any) -> str:
    """A time to the second, UTC marked ``Z``: ``2024-05-01 10:00:03Z``; "" for none.

    >>> when("2024-05-01T10:00:03.123456+00:00")
    '2024-05-01 10:00:03Z'
    """
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.isoformat()
    match = _ISO.fullmatch(str(value))
    if not match:
        return str(value)
    zone = match[3] or ""
    zone = "Z" if zone in ("Z", "+00:00", "-00:00") else zone
    return f"{match[1]} {match[2]}{zone}"


def plain(value: Any) -> str:
    """Any report value as text without Python syntax: maps as ``k=v, k=v``, lists joined by
    ``, ``, booleans as yes/no, None as an empty string, times to the second.

    >>> plain({"app": "jaeger"}), plain(True), plain(["a", "b"]), plain(None)
    ('app=jaeger', 'yes', 'a, b', '')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(
            f"{k}={plain(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        )
    if isinstance(value, list | tuple | set | frozenset):
        items: Iterable[Any] = (
            sorted(value, key=str) if isinstance(value, set | frozenset) else value
        )
        return ", ".join(plain(v) for v in items)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO.fullmatch(value)):
        return when(value)
    return str(value)


def ports_text(ports: Iterable[str], limit: int = 8) -> str:
    """Ports as a short list: ``TCP/80, TCP/443 and 12 more``."""
    items = list(ports)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit:,} more" if len(items) > limit else "")
