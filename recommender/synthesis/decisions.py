"""The decisions file: a reviewer's verdicts on edges and workloads that survive re-runs.

A decisions file (``docs/decisions.md``) says what the recommendation must do whatever the
flows show::

    apiVersion: recommender.io/v1
    kind: Decisions
    decisions:
    - action: reject            # never allow this observed edge
      from: shop/frontend       # namespace/workload, or a CIDR, or "world"
      to: shop/adservice
      port: 9555
      protocol: TCP
      reason: the ads service is being retired
    - action: allow             # allow it although it was not observed
      from: shop/recommendationservice
      to: shop/currencyservice
      port: 7000
      protocol: TCP
    - action: trust             # learn this edge although anomaly screening excluded it
      from: monitoring/scanner
      to: "*"                   # any peer
    - action: exclude           # no policy for this workload or namespace
      workload: shop/debug      # or namespace: sandbox
    - action: accept            # a flagged rule, reviewed and kept as it is
      from: shop/frontend
      to: shop/cart
      port: 7070
      protocol: TCP
      flags: [rare]             # the flags accepted; a new flag asks for review again

:func:`load_decisions` reads and checks one (every problem is a
:class:`~recommender.errors.ConfigError` naming the entry's index and field),
:func:`dump_decisions` writes one back in exactly this format, and
:func:`write_decisions_atomic` replaces a file so that a reader never sees half of it.
:class:`Decision` and :class:`Decisions` are plain frozen values; how a run applies them is in
:mod:`recommender.synthesis.decided`, and each entry's status after a run (``applied``,
``stale``: matched nothing, ``expired``) is in ``report["decisions"]["items"]``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from ..errors import ConfigError
from ..policy._names import is_dns1123_label
from ..policy._yaml import _Loader, config_yaml_errors, dump_yaml

__all__ = [
    "ACTIONS",
    "ALLOW_FLAG",
    "API_VERSION",
    "KIND",
    "STATUSES",
    "Decision",
    "Decisions",
    "Endpoint",
    "decisions_today",
    "dump_decisions",
    "load_decisions",
    "parse_decisions",
    "write_decisions_atomic",
]

API_VERSION: Final = "recommender.io/v1"
KIND: Final = "Decisions"
#: What a decision may do, in the order the report lists them.
ACTIONS: Final = ("reject", "allow", "trust", "exclude", "accept")
#: The flag on rules that exist because an ``allow`` decision names an unobserved edge.
ALLOW_FLAG: Final = "decision:allow"
#: A decision's status after a run: it changed something, it matched nothing, or it expired.
STATUSES: Final = ("applied", "stale", "expired")
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
#: The fields of an entry in file order (``from`` is ``from_`` in Python).
_FIELDS: Final = (
    "action", "from", "to", "port", "protocol", "flags", "workload", "namespace", "reason",
    "expires",
)  # fmt: skip
#: Which fields each action takes (besides ``action``, ``reason`` and ``expires``).
_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "reject": ("from", "to"),
    "allow": ("from", "to", "port", "protocol"),
    "trust": ("from", "to"),
    "exclude": (),
    "accept": ("from", "to"),
}
_ALLOWED: Final[Mapping[str, tuple[str, ...]]] = {
    "reject": ("from", "to", "port", "protocol"),
    "allow": ("from", "to", "port", "protocol"),
    "trust": ("from", "to", "port", "protocol"),
    "exclude": ("workload", "namespace"),
    "accept": ("from", "to", "port", "protocol", "flags"),
}
#: Most entries in one file (a review, not a policy language).
MAX_DECISIONS: Final = 10_000
_MAX_TEXT: Final = 500
_FLAG: Final = re.compile(r"[a-z0-9][a-z0-9:._/=*-]{0,99}")
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Endpoint:
    """One side of a decision, parsed.

    Attributes
    ----------
    kind : str
        ``workload`` (``namespace/workload``; workload ``*`` means every workload of the
        namespace), ``cidr`` (an address block; one address is a /32 or /128), ``world``
        (anything outside the cluster) or ``any`` (``*``).
    namespace, workload, cidr : str or None
    """

    kind: str
    namespace: str | None = None
    workload: str | None = None
    cidr: str | None = None

    def __str__(self) -> str:
        if self.kind == "workload":
            return f"{self.namespace}/{self.workload}"
        if self.kind == "cidr":
            return str(self.cidr)
        return "world" if self.kind == "world" else "*"


@functools.lru_cache(maxsize=4096)  # matching reads an entry's ends once per edge
def parse_endpoint(text: str) -> Endpoint:
    """Parse ``namespace/workload``, ``namespace/*``, a CIDR or address, ``world`` or ``*``.

    Raises
    ------
    ValueError
        With a sentence saying what is accepted.

    Examples
    --------
    >>> parse_endpoint("shop/frontend")
    Endpoint(kind='workload', namespace='shop', workload='frontend', cidr=None)
    >>> str(parse_endpoint("10.0.0.1"))
    '10.0.0.1/32'
    """
    if text == "*":
        return Endpoint("any")
    if text == "world":
        return Endpoint("world")
    if "/" in text and not text[:1].isdigit() and ":" not in text.split("/", 1)[0]:
        namespace, workload = text.split("/", 1)
        if not is_dns1123_label(namespace):
            raise ValueError(
                f"{text[:80]!r}: {namespace[:80]!r} is not a namespace name (a DNS-1123 label)."
            )
        if not workload or len(workload) > 253 or _UNPRINTABLE.search(workload) or " " in workload:
            raise ValueError(f"{text[:80]!r}: the workload name after '/' is empty or invalid.")
        return Endpoint("workload", namespace, workload)
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise ValueError(
            f"{text[:80]!r} is not 'namespace/workload', 'namespace/*', a CIDR (10.0.0.0/8), "
            "an address, 'world' or '*'."
        ) from None
    return Endpoint("cidr", cidr=str(net))


@dataclass(frozen=True)
class Decision:
    """One entry of a decisions file.

    Attributes
    ----------
    action : str
        One of :data:`ACTIONS`.
    from_, to : str or None
        The edge's ends (``reject``, ``allow``, ``trust``): ``namespace/workload``,
        ``namespace/*``, a CIDR or address, ``world`` or ``*`` (any peer; not for ``allow``).
    port : int or None
        The destination port (required for ``allow``; any port when None).
    protocol : str or None
        ``TCP``, ``UDP`` or ``SCTP`` (required for ``allow``; any protocol when None).
    workload, namespace : str or None
        What ``exclude`` leaves without a policy (``namespace/workload``, or a namespace).
    reason : str or None
        Why, for the next reviewer.
    expires : datetime.date or None
        From this day on (UTC) the entry is reported as expired and ignored.
    flags : tuple of str or None
        For ``accept``: the rule flags the reviewer accepted (``rare``, ``broad:...``). A
        rule that later carries a flag not listed is flagged for review again; None accepts
        whatever flags the rule has.
    """

    action: str
    from_: str | None = None
    to: str | None = None
    port: int | None = None
    protocol: str | None = None
    workload: str | None = None
    namespace: str | None = None
    reason: str | None = None
    expires: date | None = None
    flags: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check(self, None)

    @property
    def source(self) -> Endpoint | None:
        """:attr:`from_` parsed (None for ``exclude``)."""
        return parse_endpoint(self.from_) if self.from_ is not None else None

    @property
    def destination(self) -> Endpoint | None:
        """:attr:`to` parsed (None for ``exclude``)."""
        return parse_endpoint(self.to) if self.to is not None else None

    def is_expired(self, today: date) -> bool:
        """Whether the entry has expired on ``today`` (it expires at the start of the day)."""
        return self.expires is not None and self.expires <= today

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in the file: its set fields in file order (``from``, not
        ``from_``; ``expires`` as ``YYYY-MM-DD``)."""
        values = {
            "action": self.action,
            "from": self.from_,
            "to": self.to,
            "port": self.port,
            "protocol": self.protocol,
            "flags": list(self.flags) if self.flags is not None else None,
            "workload": self.workload,
            "namespace": self.namespace,
            "reason": self.reason,
            "expires": self.expires.isoformat() if self.expires is not None else None,
        }
        return {k: v for k, v in values.items() if v is not None}

    def describe(self) -> str:
        """One line for people: ``reject shop/frontend -> shop/adservice TCP/9555``."""
        if self.action == "exclude":
            what = f"workload {self.workload}" if self.workload else f"namespace {self.namespace}"
            return f"exclude {what}"
        port = (
            ""
            if self.port is None and self.protocol is None
            else (f" {self.protocol or 'any'}/{'*' if self.port is None else self.port}")
        )
        flags = f" [{', '.join(self.flags)}]" if self.flags else ""
        return f"{self.action} {self.from_} -> {self.to}{port}{flags}"


@dataclass(frozen=True)
class Decisions:
    """The entries of a decisions file, in file order.

    Examples
    --------
    >>> d = Decisions((Decision("exclude", namespace="sandbox"),))
    >>> len(d), d.entries[0].describe()
    (1, 'exclude namespace sandbox')
    """

    entries: tuple[Decision, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.entries)

    def active(self, today: date) -> tuple[tuple[int, Decision], ...]:
        """(index, entry) of the entries not expired on ``today``."""
        return tuple((i, d) for i, d in enumerate(self.entries) if not d.is_expired(today))

    def with_entry(self, decision: Decision) -> Decisions:
        """These decisions and ``decision`` (appended; an equal entry is not added twice)."""
        if decision in self.entries:
            return self
        return Decisions((*self.entries, decision))

    def without_entry(self, decision: Decision) -> Decisions:
        """These decisions without any entry equal to ``decision``."""
        return Decisions(tuple(d for d in self.entries if d != decision))


def decisions_today() -> date:
    """The day expiry is judged against: ``SOURCE_DATE_EPOCH`` when set (reproducible
    builds' convention, for reproducible reports), else today in UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return datetime.fromtimestamp(int(epoch), UTC).date()
    return datetime.now(UTC).date()


# --------------------------------------------------------------------------- checking


def _fail(index: int | None, field: str, message: str) -> ConfigError:
    where = f"decisions[{index}]" if index is not None else "decision"
    return ConfigError(f"{where}.{field}: {message}")


def _check(d: Decision, index: int | None) -> None:
    """Check one entry; raise ConfigError naming ``decisions[index].field``."""
    if d.action not in ACTIONS:
        raise _fail(index, "action", f"{str(d.action)[:40]!r} is not one of {', '.join(ACTIONS)}.")
    given = {k for k, v in d.to_dict().items() if k not in ("action", "reason", "expires")}
    for name in sorted(given - set(_ALLOWED[d.action]), key=_FIELDS.index):
        raise _fail(index, name, f"not used by action {d.action!r}; remove it.")
    for name in _REQUIRED[d.action]:
        if name not in given:
            raise _fail(index, name, f"action {d.action!r} needs it.")
    if d.action == "exclude":
        if (d.workload is None) == (d.namespace is None):
            raise _fail(
                index,
                "workload",
                "give either 'workload: namespace/name' or 'namespace: name', not both.",
            )
        if d.workload is not None:
            try:
                end = parse_endpoint(str(d.workload))
            except ValueError as exc:
                raise _fail(index, "workload", str(exc)) from None
            if end.kind != "workload" or end.workload == "*":
                raise _fail(
                    index,
                    "workload",
                    f"{str(d.workload)[:80]!r} is not "
                    "'namespace/workload' (to exclude a namespace, use 'namespace:').",
                )
        if d.namespace is not None and not (
            isinstance(d.namespace, str) and is_dns1123_label(d.namespace)
        ):
            raise _fail(
                index,
                "namespace",
                f"{str(d.namespace)[:80]!r} is not a namespace name (a DNS-1123 label).",
            )
    else:
        ends = {}
        for name, value in (("from", d.from_), ("to", d.to)):
            if not isinstance(value, str):
                raise _fail(index, name, f"expected text, got {value!r:.80}.")
            try:
                ends[name] = parse_endpoint(value)
            except ValueError as exc:
                raise _fail(index, name, str(exc)) from None
        if d.action == "allow":
            for name, end in ends.items():
                if end.kind == "any" or (end.kind == "workload" and end.workload == "*"):
                    raise _fail(
                        index,
                        name,
                        "'allow' needs one workload, address block or "
                        "'world'; '*' would allow far more than one edge.",
                    )
            if not any(e.kind == "workload" for e in ends.values()):
                raise _fail(
                    index,
                    "from",
                    "'allow' needs a workload on at least one side "
                    "(a policy belongs to a workload).",
                )
    if d.port is not None and (
        isinstance(d.port, bool) or not isinstance(d.port, int) or not 1 <= d.port <= 65535
    ):
        raise _fail(index, "port", f"{d.port!r:.40} is not a port number (1-65535).")
    if d.protocol is not None and d.protocol not in _PROTOCOLS:
        raise _fail(
            index, "protocol", f"{str(d.protocol)[:40]!r} is not one of {', '.join(_PROTOCOLS)}."
        )
    if d.port is not None and d.protocol is None:
        raise _fail(index, "protocol", "a port needs its protocol (TCP, UDP or SCTP).")
    if d.reason is not None and (
        not isinstance(d.reason, str) or len(d.reason) > _MAX_TEXT or _UNPRINTABLE.search(d.reason)
    ):
        raise _fail(
            index, "reason", f"expected one line of text of at most {_MAX_TEXT} characters."
        )
    if d.flags is not None and (
        not isinstance(d.flags, tuple)
        or not all(isinstance(f, str) and _FLAG.fullmatch(f) for f in d.flags)
    ):
        raise _fail(
            index, "flags", "expected a list of rule flags as the report names them (rare, ...)."
        )
    if d.expires is not None and (
        isinstance(d.expires, datetime) or not isinstance(d.expires, date)
    ):
        raise _fail(index, "expires", f"{d.expires!r:.40} is not a date (YYYY-MM-DD).")


def _entry(raw: Any, index: int) -> Decision:
    if not isinstance(raw, dict):
        raise _fail(index, "action", "each entry must be a mapping with an 'action'.")
    for key in raw:
        if key not in _FIELDS:
            raise _fail(
                index, str(key)[:40], f"unknown field; expected one of {', '.join(_FIELDS)}."
            )
    if "action" not in raw:
        raise _fail(index, "action", f"missing; one of {', '.join(ACTIONS)}.")
    values: dict[str, Any] = {}
    for key in _FIELDS:
        if key not in raw or raw[key] is None:
            continue
        value = raw[key]
        if key in ("action", "from", "to", "workload", "namespace", "reason", "protocol"):
            if not isinstance(value, str):
                raise _fail(index, key, f"expected text, got {value!r:.80}.")
            if key == "protocol":
                value = value.upper()
        if key == "expires":
            if isinstance(value, str):
                try:
                    value = date.fromisoformat(value)
                except ValueError:
                    raise _fail(index, key, f"{value[:40]!r} is not a date (YYYY-MM-DD).") from None
            elif isinstance(value, datetime):
                value = value.astimezone(UTC).date() if value.tzinfo else value.date()
        if key == "flags":
            if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
                raise _fail(index, key, f"expected a list of flags, got {value!r:.80}.")
            value = tuple(sorted(set(value)))
        values["from_" if key == "from" else key] = value
    decision = Decision.__new__(Decision)
    for name in (
        "action",
        "from_",
        "to",
        "port",
        "protocol",
        "workload",
        "namespace",
        "reason",
        "expires",
        "flags",
    ):
        object.__setattr__(decision, name, values.get(name))
    _check(decision, index)
    return decision


def parse_decisions(text: str, origin: str = "decisions") -> Decisions:
    """Parse a decisions file's text (see :func:`load_decisions`).

    Examples
    --------
    >>> d = parse_decisions('''
    ... apiVersion: recommender.io/v1
    ... kind: Decisions
    ... decisions:
    ... - action: exclude
    ...   namespace: sandbox
    ... ''')
    >>> d.entries[0].namespace
    'sandbox'
    """
    with config_yaml_errors(origin):
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no tags, no object aliases
    if data is None:
        data = {"apiVersion": API_VERSION, "kind": KIND, "decisions": []}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with apiVersion, kind and decisions.")
    unknown = sorted(str(k) for k in data if k not in ("apiVersion", "kind", "decisions"))
    if unknown:
        raise ConfigError(
            f"{origin}: {unknown[0][:40]}: unknown field; expected apiVersion, kind and decisions."
        )
    if data.get("apiVersion") != API_VERSION:
        raise ConfigError(
            f"{origin}: apiVersion: expected {API_VERSION!r}, got {data.get('apiVersion')!r:.60}."
        )
    if data.get("kind") != KIND:
        raise ConfigError(f"{origin}: kind: expected {KIND!r}, got {data.get('kind')!r:.60}.")
    raw = data.get("decisions")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: decisions: expected a list of entries.")
    if len(raw) > MAX_DECISIONS:
        raise ConfigError(
            f"{origin}: decisions: at most {MAX_DECISIONS:,} entries, got {len(raw):,}."
        )
    entries = []
    for index, item in enumerate(raw):
        try:
            entries.append(_entry(item, index))
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    return Decisions(tuple(entries))


def load_decisions(path: str | os.PathLike[str]) -> Decisions:
    """Read and check a decisions file.

    Parameters
    ----------
    path : str or path-like
        The YAML file (``apiVersion: recommender.io/v1``, ``kind: Decisions``). A missing
        file is an error; an empty one holds no decisions.

    Returns
    -------
    Decisions

    Raises
    ------
    ConfigError
        If the file cannot be read or an entry is wrong: the message names the file, the
        entry's index and the field (``decisions.yaml: decisions[2].port: ...``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: the decisions file cannot be read: {exc.strerror or exc}."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text.") from None
    return parse_decisions(text, str(path))


def dump_decisions(decisions: Decisions) -> str:
    """The decisions as YAML in the documented format: ``apiVersion``, ``kind``, then each
    entry's fields in the order ``action, from, to, port, protocol, flags, workload,
    namespace, reason, expires``. The same decisions give the same bytes, and
    ``parse_decisions(dump_decisions(d)) == d``.

    Examples
    --------
    >>> print(dump_decisions(Decisions((Decision("exclude", namespace="sandbox"),))), end="")
    apiVersion: recommender.io/v1
    kind: Decisions
    decisions:
    - action: exclude
      namespace: sandbox
    """
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "decisions": [
            {**d.to_dict(), **({"expires": d.expires} if d.expires is not None else {})}
            for d in decisions.entries
        ],
    }
    return dump_yaml([doc])


def write_decisions_atomic(path: str | os.PathLike[str], decisions: Decisions) -> None:
    """Write ``decisions`` to ``path`` so that a reader sees the old file or the new one,
    never a part: a temporary file in the same folder, flushed to disk, then renamed over.

    Raises
    ------
    ConfigError
        If the folder cannot be written.
    """
    target = Path(path)
    text = dump_decisions(decisions)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(
            f"{target}: the decisions file cannot be written: {exc.strerror or exc}."
        ) from None
