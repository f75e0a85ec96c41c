"""Hand-written flow-log lines in the upstream formats, for tests.

``hubble_line`` follows the field lists of Cilium's ``api/v1/flow/flow.proto`` (``Flow``:
``time``, ``verdict``, ``IP``, ``l4``, ``source``, ``destination``, ``Type``, ``node_name``,
``event_type``, ``traffic_direction``, ``trace_observation_point``, ``is_reply``; ``Endpoint``:
``ID``, ``identity``, ``cluster_name``, ``namespace``, ``labels``, ``pod_name``, ``workloads``)
and of ``GetFlowsResponse`` (``flow``, ``node_name``, ``time``), as ``hubble observe -o json``
prints them. Cilium gives every pod the label ``k8s:io.cilium.k8s.policy.cluster=<cluster>``;
Hubble Relay in a ClusterMesh names nodes ``<cluster>/<node>``. The values are ours.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def _endpoint(ns: str, app: str, cluster: str | None, ident: int) -> dict[str, Any]:
    labels = [f"k8s:app={app}", f"k8s:io.kubernetes.pod.namespace={ns}"]
    if cluster is not None:
        labels.append(f"k8s:io.cilium.k8s.policy.cluster={cluster}")
    out: dict[str, Any] = {
        "ID": ident, "identity": 10000 + ident, "namespace": ns, "labels": sorted(labels),
        "pod_name": f"{app}-7d9f8c6b5-x{ident}", "workloads": [{"name": app, "kind": "Deployment"}],
    }
    if cluster is not None:
        out["cluster_name"] = cluster
    return out


def hubble_line(when: datetime, sport: int, *, cluster: str | None, node: str,
                src: str = "web", dst: str = "api", port: int = 8080) -> str:
    """One ``hubble observe -o json`` line: a new TCP connection (SYN) seen at its source."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
    flow = {
        "time": stamp,
        "verdict": "FORWARDED",
        "IP": {"source": "10.0.1.5", "destination": "10.0.2.7", "ipVersion": "IPv4"},
        "l4": {"TCP": {"source_port": sport, "destination_port": port, "flags": {"SYN": True}}},
        "source": _endpoint("shop", src, cluster, 101),
        "destination": _endpoint("shop", dst, cluster, 202),
        "Type": "L3_L4",
        "node_name": node,
        "event_type": {"type": 4},
        "traffic_direction": "EGRESS",
        "trace_observation_point": "FROM_ENDPOINT",
        "is_reply": False,
    }
    return json.dumps({"flow": flow, "node_name": node, "time": stamp})
