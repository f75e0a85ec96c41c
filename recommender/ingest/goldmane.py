"""Calico OSS Goldmane emitter NDJSON and Whisker API JSON. Placeholder: being written."""

from __future__ import annotations

from ._base import FlowReader

__all__ = ["GoldmaneReader", "WhiskerReader"]


class GoldmaneReader(FlowReader):
    name = "goldmane"


class WhiskerReader(FlowReader):
    name = "whisker"
