"""Cilium Hubble flows. Placeholder: being written."""

from __future__ import annotations

from ._base import FlowReader

__all__ = ["HubbleReader"]


class HubbleReader(FlowReader):
    name = "hubble"
