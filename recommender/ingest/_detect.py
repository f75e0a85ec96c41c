"""Recognising a flow file's format from its first bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FlowSourceError
from ._source import read_head

__all__ = ["detect_format", "format_of_record"]

_DECODER = json.JSONDecoder()


def format_of_record(obj: Any) -> str | None:
    """The format a decoded JSON record belongs to, or None when it fits none."""
    if not isinstance(obj, dict):
        return None
    if "flow" in obj and isinstance(obj["flow"], dict):
        inner = obj["flow"]
        return "goldmane" if "Key" in inner or "key" in inner else "hubble"
    if ("Key" in obj and isinstance(obj["Key"], dict)) or (
        "key" in obj and isinstance(obj["key"], dict)
    ):
        return "goldmane"
    hits = obj.get("hits")
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):  # Elasticsearch response
        first = hits["hits"][0] if hits["hits"] else None
        source = first.get("_source") if isinstance(first, dict) else None
        return format_of_record(source) if source is not None else "calico"
    if {"IP", "l4"} & obj.keys() or ("verdict" in obj and ("source" in obj or "Type" in obj)):
        return "hubble"  # a bare Flow object
    if "source_name_aggr" in obj or "dest_name_aggr" in obj:
        return "calico"
    if "reporter" in obj and "proto" in obj and ("dest_port" in obj or "dest_type" in obj):
        return "calico"
    if "protocol" in obj and "action" in obj and ("dest_name" in obj or "source_name" in obj):
        return "whisker"
    if {"node_status", "lost_events"} & obj.keys():
        return "hubble"  # hubble observe prints these between flows
    return None


def _unwrap(obj: Any) -> Any:
    """The first record of an ``{"items": [...]}`` envelope (Whisker), else ``obj``."""
    if isinstance(obj, dict) and "items" in obj and isinstance(obj["items"], list):
        return obj["items"][0] if obj["items"] else None
    return obj


def _first_json_record(head: bytes) -> Any:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        try:  # the first JSON value: a JSON line, or a pretty-printed document
            return _unwrap(_DECODER.raw_decode(text.lstrip())[0])
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            pass
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of records, or of nothing
        start = stripped.find("{")
        if start < 0:
            return None
        stripped = stripped[start:]
    for line in stripped.splitlines()[:50] if not text.lstrip().startswith("[") else [stripped]:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj, _ = _DECODER.raw_decode(line)
        except (ValueError, RecursionError):
            continue
        return _unwrap(obj)
    return None


def detect_format(path: Path) -> str:
    """Detect the format of ``path`` (one of ``recommender.ingest.FORMATS``).

    Raises
    ------
    FlowSourceError
        When the file is empty or fits no known format; the message suggests ``--format``.
    """
    head = read_head(path)
    if head[:4] == b"PAR1":
        return "parquet"
    if not head.strip():
        raise FlowSourceError(f"{path}: the file is empty.")
    lines = [
        ln.strip()
        for ln in head.decode("utf-8", errors="replace").splitlines()[:50]
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    first_line = lines[0] if lines else ""
    if first_line.startswith(("{", "[")):
        fmt = format_of_record(_first_json_record(head))
        if fmt:
            return fmt
    elif "," in first_line and "start_time" in first_line and "src_kind" in first_line:
        return "csv"
    else:
        fields = first_line.split()
        if len(fields) >= 24 and fields[0].isdigit() and fields[1].isdigit():
            return "calico-text"
    raise FlowSourceError(
        f"{path}: not a flow log of any known format (Hubble JSON, Calico flow logs, Goldmane, "
        "Whisker, canonical Parquet or CSV); name the format with --format if it is one."
    )
