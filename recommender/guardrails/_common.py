"""What every guardrails writer shares: object names and metadata (no writer imports
:mod:`.render`, their dispatcher)."""

from __future__ import annotations

from typing import Any, Final

from ..errors import UnsupportedDialectError
from ..policy._names import is_dns1123_subdomain
from .model import Guardrail, Guardrails

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "recommender"}


def object_name(guardrails: Guardrails, guardrail: Guardrail) -> str:
    """``<file name>-<guardrail name>``, checked to be a valid object name."""
    name = f"{guardrails.name}-{guardrail.name}"
    if not is_dns1123_subdomain(name):  # pragma: no cover - the loader checks both parts
        raise UnsupportedDialectError(f"{name!r} is not a valid object name.")
    return name


def metadata(name: str, guardrail: Guardrail | None) -> dict[str, Any]:
    """Object metadata with the managed-by label and the description/controls annotations."""
    out: dict[str, Any] = {"name": name, "labels": dict(MANAGED_BY)}
    annotations = {}
    if guardrail is not None and guardrail.description:
        annotations["recommender.io/description"] = guardrail.description
    if guardrail is not None and guardrail.controls:
        annotations["recommender.io/controls"] = ", ".join(guardrail.controls)
    if annotations:
        out["annotations"] = annotations
    return out
