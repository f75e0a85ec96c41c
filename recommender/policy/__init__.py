"""The dialect-neutral policy model, its synthesis from flows, and its writers."""

from __future__ import annotations

from .model import Evidence, LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule

__all__ = ["Evidence", "LabelSelector", "Peer", "Policy", "PolicySet", "PortSpec", "Rule"]
