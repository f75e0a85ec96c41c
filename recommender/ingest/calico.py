"""Calico Enterprise flow logs (JSON and space-delimited text). Placeholder: being written."""

from __future__ import annotations

from ._base import FlowReader

__all__ = ["CalicoReader", "CalicoTextReader"]


class CalicoReader(FlowReader):
    name = "calico"


class CalicoTextReader(FlowReader):
    name = "calico-text"
