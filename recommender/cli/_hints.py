"""Hints for the commonest mistakes: flows given where policies are expected, and the reverse."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InputError, RecommenderError

__all__ = ["swap_hint"]

_POLICY_SUFFIXES = (".yaml", ".yml", ".json")
#: Files looked at per folder, at most (a hint must stay cheap).
_LOOK = 20


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found: list[Path] = []
        for p in sorted(path.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
                found.append(p)
                if len(found) >= _LOOK:
                    break
        return found
    return [path] if path.is_file() else []


def _is_flow_log(path: Path) -> bool:
    from ..ingest import detect_format

    if path.suffix in (".yaml", ".yml"):
        return False
    try:
        detect_format(path)
    except RecommenderError:
        return False
    return True


def _is_policy_file(path: Path) -> bool:
    if path.suffix not in _POLICY_SUFFIXES:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return b"NetworkPolicy" in head and b"kind" in head


def _looks_like(paths: Iterable[str | os.PathLike[str]], test: object) -> bool:
    for item in paths:
        text = os.fspath(item)
        if text == "-" or "://" in text:
            continue
        if any(test(f) for f in _files(Path(text))):  # type: ignore[operator]
            return True
    return False


@contextlib.contextmanager
def swap_hint(
    policies: Iterable[str | os.PathLike[str]], flows: Iterable[str | os.PathLike[str]]
) -> Iterator[None]:
    """Add "did you swap POLICIES and FLOWS?" to an input error when the policies given look
    like flow logs or the flows given hold policies."""
    policies, flows = list(policies), list(flows)
    try:
        yield
    except RecommenderError as exc:
        if _looks_like(policies, _is_flow_log) or _looks_like(flows, _is_policy_file):
            raise InputError(
                f"{str(exc).rstrip('.')}. The policies given look like flow logs or the flows "
                "like policies: did you swap POLICIES and FLOWS? The policies come first: "
                "recommend evaluate POLICIES FLOWS..., recommend diff EXISTING NEW FLOWS...."
            ) from None
        raise
