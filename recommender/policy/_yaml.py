"""Deterministic YAML for emitted manifests: block style, no aliases, ambiguous strings quoted.

The renderers build their dicts in Kubernetes-conventional key order, so keys are never
re-sorted here. Strings that a YAML 1.1 or 1.2 parser could read as another type (``"80"``,
``"on"``, ``"y"``, ``"1e3"``, ``"0o17"``, ``""``) are single-quoted, whatever PyYAML alone
would decide, because kubectl (go-yaml) and PyYAML disagree on several of them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, Final

import yaml

from ..errors import ConfigError, InputError

__all__ = ["config_yaml_errors", "dump_yaml", "load_yaml_documents"]

#: Plain scalars that some YAML parser (1.1 or 1.2 core, PyYAML or go-yaml) reads as a
#: null, bool, int, float or merge/value key rather than a string.
_AMBIGUOUS: Final = re.compile(
    r"""
    | ~ | null | Null | NULL
    | y | Y | yes | Yes | YES | n | N | no | No | NO
    | true | True | TRUE | false | False | FALSE
    | on | On | ON | off | Off | OFF
    | [-+]? (?: 0b[01_]+ | 0o?[0-7_]+ | 0x[0-9a-fA-F_]+ | [0-9][0-9_]* (?: :[0-5]?[0-9] )* )
    | [-+]? (?: \.[0-9_]+ | [0-9][0-9_]* (?: \.[0-9_]* )? ) (?: [eE][-+]?[0-9]+ )?
    | [-+]? \. (?: inf | Inf | INF ) | \. (?: nan | NaN | NAN )
    | << | =
    """,
    re.VERBOSE,
)

#: Characters that single-quoted or plain scalars cannot carry faithfully (line breaks fold,
#: NEL is read back as a space): strings with any of them are double-quoted with escapes.
_NEEDS_ESCAPES: Final = re.compile(
    r"[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\x85\u2028\u2029\ufeff]"
)

#: No line wrapping: long values stay on one line so diffs stay readable.
_NO_WRAP: Final = 2**30

#: At most this many aliases (``*name``) in one YAML stream read by :func:`load_yaml_documents`.
MAX_ALIASES: Final = 100


class _Dumper(yaml.SafeDumper):
    """A SafeDumper that never emits anchors or aliases and quotes ambiguous strings."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    """Quote strings that read as another type; leave the rest to PyYAML's own analysis."""
    if _NEEDS_ESCAPES.search(data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
    if _AMBIGUOUS.fullmatch(data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="'")
    return dumper.represent_str(data)


_Dumper.add_representer(str, _represent_str)


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases of mappings and sequences, and many aliases at all.

    PyYAML shares an aliased node instead of copying it, so a "billion laughs" document (each
    anchor a list of ten aliases of the previous one) loads quickly, but anything that walks or
    prints the result (``str()`` of a selector value, say) expands it exponentially. An alias of
    a scalar is one string; of a collection it is refused, as is a stream of more than
    :data:`MAX_ALIASES` aliases. Kubernetes manifests need neither.
    """

    _aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise InputError(
                    f"more than {MAX_ALIASES} YAML aliases (*name) in one file; "
                    "write the manifests out without anchors and aliases."
                )
            target = self.anchors.get(event.anchor)
            if target is not None and not isinstance(target, yaml.ScalarNode):
                raise InputError(
                    f"the YAML alias *{event.anchor} on line {event.start_mark.line + 1} "
                    "refers to a mapping or a list; such aliases are refused (they can expand "
                    "exponentially): write the manifests out without anchors and aliases."
                )
        return super().compose_node(parent, index)


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    """Serialise manifests as one deterministic multi-document YAML stream.

    Parameters
    ----------
    docs : list of dict
        The documents, each a mapping of plain values (dict, list, str, int, bool, None).
        Key order is kept as built.

    Returns
    -------
    str
        The documents separated by ``---`` lines, ending with a newline; ``""`` for no
        documents.

    Examples
    --------
    >>> print(dump_yaml([{"kind": "A", "port": "80"}, {"kind": "B", "on": True}]), end="")
    kind: A
    port: '80'
    ---
    kind: B
    'on': true
    """
    if not docs:
        return ""
    fast = _FastEmitter().dump_all(docs)
    if fast is not None:
        return fast
    return _pyyaml_dump_all(docs)


def _pyyaml_dump_all(docs: list[Any]) -> str:
    """PyYAML's own emitter with the project's settings: the reference the fast path matches."""
    text = yaml.dump_all(
        docs,
        Dumper=_Dumper,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=_NO_WRAP,
        indent=2,
        explicit_start=False,
        explicit_end=False,
        line_break="\n",
    )
    return text if text.endswith("\n") else text + "\n"


#: Strings PyYAML writes plain in every context: a letter first, then only these characters,
#: and no resolver (bool, null, number, timestamp) reads them as another type.
_SAFE_PLAIN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")

#: PyYAML writes a mapping key of this length or longer as a complex key (``? key``).
_SIMPLE_KEY_MAX: Final = 128


class _Unsupported(Exception):
    """A value the fast emitter does not write; the whole stream goes to PyYAML."""


class _FastEmitter:
    """Writes the block-style YAML that :func:`_pyyaml_dump_all` writes, byte for byte, for
    documents made of dicts, lists, strings, ints, bools and None, ten to fifty times faster.

    The layout rules are PyYAML's (indent 2, sequences in a mapping not indented, empty
    collections as ``{}`` / ``[]``, no wrapping). Each distinct string's text is PyYAML's own:
    strings of :data:`_SAFE_PLAIN` are plain, every other string is rendered once by PyYAML in
    the same context (key or value) and cached. Anything else (floats, long or multi-line keys,
    other types) makes :meth:`dump_all` return None so the caller uses PyYAML itself.
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._keys: dict[str, str] = {}

    def dump_all(self, docs: list[Any]) -> str | None:
        out: list[str] = []
        try:
            for index, doc in enumerate(docs):
                if index:
                    out.append("---\n")
                if not isinstance(doc, dict) or not doc:
                    raise _Unsupported
                self._mapping(doc, 0, out)
        except _Unsupported:
            return None
        return "".join(out)

    def _scalar(self, value: Any) -> str:
        if isinstance(value, str):
            text = self._values.get(value)
            if text is None:
                if _SAFE_PLAIN.fullmatch(value) and not _AMBIGUOUS.fullmatch(value):
                    text = value
                else:
                    rendered = _pyyaml_dump_all([{"k": value}])
                    if not rendered.startswith("k: ") or rendered.count("\n") != 1:
                        raise _Unsupported
                    text = rendered[3:-1]
                self._values[value] = text
            return text
        if value is True:
            return "true"
        if value is False:
            return "false"
        if value is None:
            return "null"
        if type(value) is int:
            return str(value)
        raise _Unsupported

    def _key(self, key: Any) -> str:
        if not isinstance(key, str):
            raise _Unsupported
        text = self._keys.get(key)
        if text is None:
            if len(key) >= _SIMPLE_KEY_MAX:
                raise _Unsupported
            if _SAFE_PLAIN.fullmatch(key) and not _AMBIGUOUS.fullmatch(key):
                text = key
            else:
                rendered = _pyyaml_dump_all([{key: 0}])
                if not rendered.endswith(": 0\n") or rendered.count("\n") != 1:
                    raise _Unsupported
                text = rendered[:-4]
                if text.startswith("?"):
                    raise _Unsupported
            self._keys[key] = text
        return text

    def _mapping(
        self, mapping: dict[Any, Any], indent: int, out: list[str], first: str = ""
    ) -> None:
        """Write a non-empty mapping at ``indent``; ``first`` replaces the first key's indent
        (``"- "`` under a sequence item)."""
        pad = " " * indent
        lead = first or pad
        for key, value in mapping.items():
            out.append(lead)
            lead = pad
            out.append(self._key(key))
            if isinstance(value, dict):
                if value:
                    out.append(":\n")
                    self._mapping(value, indent + 2, out)
                else:
                    out.append(": {}\n")
            elif isinstance(value, list):
                if value:
                    out.append(":\n")
                    self._sequence(value, indent, out)
                else:
                    out.append(": []\n")
            else:
                out.append(": ")
                out.append(self._scalar(value))
                out.append("\n")

    def _sequence(self, items: list[Any], indent: int, out: list[str], first: str = "") -> None:
        """Write a non-empty sequence whose dashes sit at ``indent``."""
        pad = " " * indent
        lead = first or pad
        for item in items:
            if isinstance(item, dict):
                if item:
                    self._mapping(item, indent + 2, out, first=lead + "- ")
                else:
                    out.append(lead + "- {}\n")
            elif isinstance(item, list):
                if item:
                    self._sequence(item, indent + 2, out, first=lead + "- ")
                else:
                    out.append(lead + "- []\n")
            else:
                out.append(lead + "- ")
                out.append(self._scalar(item))
                out.append("\n")
            lead = pad


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Parse a multi-document YAML stream (safely) into its mapping documents.

    Empty documents are skipped.

    Parameters
    ----------
    text : str
        YAML text, for instance the output of :func:`dump_yaml`.

    Returns
    -------
    list of dict
        The documents in stream order.

    Raises
    ------
    InputError
        If the text is not valid YAML, is nested too deeply, uses aliases of mappings or
        lists or more than :data:`MAX_ALIASES` aliases, or a document is not a mapping.

    Examples
    --------
    >>> load_yaml_documents(dump_yaml([{"a": "80"}, {"b": [1, 2]}]))
    [{'a': '80'}, {'b': [1, 2]}]
    """
    try:
        loaded = list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise InputError(f"The YAML text cannot be parsed: {exc}") from None
    except RecursionError:
        raise InputError("The YAML text is nested too deeply to be a manifest.") from None
    docs: list[dict[str, Any]] = []
    for index, doc in enumerate(loaded):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InputError(
                f"YAML document {index + 1} is a {type(doc).__name__}, not a mapping; "
                "every manifest must be a mapping."
            )
        docs.append(doc)
    return docs


@contextlib.contextmanager
def config_yaml_errors(origin: str) -> Iterator[None]:
    """Turn what a YAML parser raises inside the block into one-line
    :class:`~recommender.errors.ConfigError` naming ``origin``: ``origin: not valid YAML:
    PROBLEM at line L, column C.`` (PyYAML's own text spans several lines, with a caret), the
    loader's own refusals (aliases, :class:`InputError`) and too deep nesting."""
    try:
        yield
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{origin}: not valid YAML: {problem}{where}.") from None
    except InputError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: the YAML is nested too deeply.") from None
