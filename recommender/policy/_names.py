"""Kubernetes name and label syntax (k8s.io/apimachinery/pkg/util/validation), and safe names.

Every check uses :func:`re.fullmatch` on ASCII-only patterns, so a trailing newline or a
non-ASCII letter never slips through.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_label_key",
    "is_label_value",
    "safe_name",
]

_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL: Final = re.compile(_LABEL)
_DNS1123_SUBDOMAIN: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_QUALIFIED_NAME: Final = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_INVALID_RUN: Final = re.compile(r"[^-a-z0-9]+")

DNS1123_LABEL_MAX: Final = 63
DNS1123_SUBDOMAIN_MAX: Final = 253
LABEL_NAME_MAX: Final = 63
LABEL_VALUE_MAX: Final = 63

#: Hex digits of SHA-256 appended by :func:`safe_name`: 40 bits keep accidental collisions
#: unlikely (about one in a million among 1 500 changed names).
_HASH_LEN: Final = 10


def is_dns1123_label(text: str) -> bool:
    """Whether ``text`` is a DNS-1123 label (a namespace name), at most 63 characters.

    The pattern is ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``.

    Examples
    --------
    >>> is_dns1123_label("kube-system"), is_dns1123_label("a.b"), is_dns1123_label("-a")
    (True, False, False)
    """
    return len(text) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.fullmatch(text) is not None


def is_dns1123_subdomain(text: str) -> bool:
    """Whether ``text`` is a DNS-1123 subdomain (most object names), at most 253 characters.

    A subdomain is DNS-1123 labels joined by dots.

    Examples
    --------
    >>> is_dns1123_subdomain("allow.web-8080"), is_dns1123_subdomain("a..b")
    (True, False)
    """
    return len(text) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(text) is not None


def is_label_key(text: str) -> bool:
    """Whether ``text`` is a label (or annotation) key: ``[prefix/]name``.

    ``name`` has 1 to 63 characters, alphanumeric at both ends with ``-``, ``_`` and ``.``
    inside; the optional ``prefix`` is a DNS-1123 subdomain.

    Examples
    --------
    >>> is_label_key("app"), is_label_key("kubernetes.io/metadata.name"), is_label_key("a/b/c")
    (True, True, False)
    """
    prefix, slash, name = text.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= LABEL_NAME_MAX and _QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(text: str) -> bool:
    """Whether ``text`` is a label value: empty, or a qualified name of at most 63 characters.

    Examples
    --------
    >>> is_label_value(""), is_label_value("v1.2_x"), is_label_value("a b")
    (True, True, False)
    """
    if text == "":
        return True
    return len(text) <= LABEL_VALUE_MAX and _QUALIFIED_NAME.fullmatch(text) is not None


def safe_name(text: str, max_len: int = 63) -> str:
    """A valid DNS-1123 label derived from ``text``, different for different inputs.

    A text that is already a valid label of at most ``max_len`` characters is returned
    unchanged. Any other text is lowercased, every run of characters other than ``[-a-z0-9]``
    becomes ``-``, dashes are trimmed from both ends, the result is cut to leave room, and a
    stable suffix of 10 hex digits of the SHA-256 of the original text is appended, so ``"App"``
    and ``"app"`` stay apart.

    Parameters
    ----------
    text : str
        Any text, such as a workload name with dots or capitals.
    max_len : int, default 63
        The longest result wanted; at least 11 and at most 63.

    Returns
    -------
    str
        A DNS-1123 label of at most ``max_len`` characters.

    Raises
    ------
    ValueError
        If ``max_len`` is outside 11..63.

    Examples
    --------
    >>> safe_name("frontend")
    'frontend'
    >>> safe_name("Front_End.v2")
    'front-end-v2-ee2077bdcf'
    """
    if not _HASH_LEN + 1 <= max_len <= DNS1123_LABEL_MAX:
        raise ValueError(f"max_len must be between {_HASH_LEN + 1} and 63, not {max_len}.")
    if len(text) <= max_len and is_dns1123_label(text):
        return text
    base = _INVALID_RUN.sub("-", text.lower()).strip("-")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    base = base[: max_len - _HASH_LEN - 1].rstrip("-")
    return f"{base}-{digest}" if base else digest
