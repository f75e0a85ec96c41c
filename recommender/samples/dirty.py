"""A dirty learning window as Hubble events: ordinary traffic plus the traps of issue 21.

Everything was recorded before any policy was enforced, so every event is ``FORWARDED``:

- ordinary traffic: ``shop/web`` (3 replicas) calls ``shop/api`` (2 replicas) on 8080, which
  calls ``shop/db`` on 5432; every pod resolves names at ``kube-system/coredns`` (UDP 53, with
  the answer); ``monitoring/prometheus`` scrapes web, api and db on 9090;
- a **forwarded port scan**: ``shop/debug`` (a bare pod) probes web, api and db on ten ports in
  one minute; closed ports answer with RST-ACK, open ones (the ports others use) with SYN-ACK.
  Its own DNS and its steady call to ``shop/api`` are ordinary;
- a **service retrying a wrong port**: ``shop/api`` tries ``shop/db:5433`` every few minutes
  and is reset each time;
- **one replica's raw-IP egress**: one web pod opens two connections to a public address with
  no DNS name on port 4444 while its siblings do nothing of the kind;
- a **CronJob**: ``shop/nightly-report``'s runs (one pod per run, ``<cronjob>-<minutes>-xxxxx``,
  Hubble ``workloads`` kind CronJob) read ``shop/db`` and resolve names, one run after the
  other.

What a recommender should make of it: rules for the ordinary traffic and the CronJob (one
policy, whatever the run), none for the scan's targets, the wrong port or the raw-IP egress.
:func:`write_dirty_window` writes the events as ``hubble observe -o json`` lines; the output is
the same bytes for the same seed.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

__all__ = ["DIRTY_START", "EXFIL_ADDRESS", "dirty_window_events", "write_dirty_window"]

#: When the window starts.
DIRTY_START: Final = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
#: The public address one web replica sends data to (no DNS name, port 4444).
EXFIL_ADDRESS: Final = "93.184.216.34"
_SCAN_PORTS: Final = (21, 22, 23, 25, 80, 443, 3306, 5432, 6379, 8080)


@dataclass(frozen=True)
class _Pod:
    namespace: str
    name: str
    workload: str
    kind: str
    ip: str
    node: str
    labels: tuple[tuple[str, str], ...]

    def endpoint(self) -> dict[str, Any]:
        labels = [f"k8s:{k}={v}" for k, v in self.labels]
        labels += [f"k8s:io.kubernetes.pod.namespace={self.namespace}"]
        return {
            "identity": 10000 + sum(map(ord, self.workload)),
            "namespace": self.namespace,
            "labels": sorted(labels),
            "pod_name": self.name,
            "workloads": [{"name": self.workload, "kind": self.kind}],
        }


def _pod(ns: str, name: str, workload: str, kind: str, ip: str, node: str,
         **labels: str) -> _Pod:  # fmt: skip
    return _Pod(ns, name, workload, kind, ip, node, tuple(sorted(labels.items())))


def _cluster() -> dict[str, list[_Pod]]:
    web = [_pod("shop", f"web-7d9f8c6b5-{s}", "web", "Deployment", f"10.244.1.{10 + i}",
                "worker-1", app="web") for i, s in enumerate(("k2mqz", "p8x4d", "t7wq2"))]
    api = [_pod("shop", f"api-5c8d7f9b4-{s}", "api", "Deployment", f"10.244.2.{10 + i}",
                "worker-2", app="api") for i, s in enumerate(("b6n2c", "r4m8s"))]
    return {
        "web": web,
        "api": api,
        "db": [_pod("shop", "db-0", "db", "StatefulSet", "10.244.2.30", "worker-2", app="db")],
        "debug": [_pod("shop", "debug", "debug", "Pod", "10.244.1.40", "worker-1", run="debug")],
        "dns": [_pod("kube-system", "coredns-6f6b679f8f-x2x7q", "coredns", "Deployment",
                     "10.244.0.5", "control-plane", **{"k8s-app": "kube-dns"})],
        "prometheus": [_pod("monitoring", "prometheus-8b7c6d5f4-q9w8e", "prometheus",
                            "Deployment", "10.244.0.20", "control-plane", app="prometheus")],
    }  # fmt: skip


def _micros(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Events:
    """Collects events in time order, with ephemeral ports that never repeat."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.events: list[tuple[datetime, int, dict[str, Any]]] = []
        self.port = 40000

    def _add(self, t: datetime, node: str, flow: dict[str, Any]) -> None:
        flow["time"] = _micros(t)
        flow["node_name"] = node
        flow["verdict"] = "FORWARDED"
        self.events.append((t, len(self.events), {"flow": flow, "node_name": node,
                                                  "time": flow["time"]}))  # fmt: skip

    def _l4(self, proto: str, sport: int, dport: int, flags: dict[str, bool] | None) -> Any:
        ports: dict[str, Any] = {"source_port": sport, "destination_port": dport}
        if flags is not None:
            ports["flags"] = flags
        return {proto: ports}

    def connection(self, t: datetime, src: _Pod, dst: _Pod | str, port: int, *,
                   answer: str = "open", proto: str = "TCP") -> None:  # fmt: skip
        """One connection: the request at the client (and at the server for a pod), then the
        answer (SYN-ACK and the client's ACK, an RST-ACK, or a UDP reply)."""
        self.port = 40000 + (self.port - 39999) % 25000
        sport = self.port
        dst_ip = dst if isinstance(dst, str) else dst.ip
        dst_ep: dict[str, Any] = (
            {"identity": 2, "labels": ["reserved:world"]} if isinstance(dst, str)
            else dst.endpoint()
        )  # fmt: skip
        tcp = proto == "TCP"

        def flow(at: datetime, node: str, reply: bool, flags: Any, direction: str) -> None:
            a, b = (src.endpoint(), dst_ep) if not reply else (dst_ep, src.endpoint())
            ips = (src.ip, dst_ip) if not reply else (dst_ip, src.ip)
            ports = (sport, port) if not reply else (port, sport)
            self._add(at, node, {
                "IP": {"source": ips[0], "destination": ips[1], "ipVersion": "IPv4"},
                "l4": self._l4(proto, *ports, flags if tcp else None),
                "source": a, "destination": b, "Type": "L3_L4", "is_reply": reply,
                "traffic_direction": direction,
                "trace_observation_point": "TO_STACK" if direction == "EGRESS" else "TO_ENDPOINT",
            })  # fmt: skip

        ms = timedelta(milliseconds=1)
        flow(t, src.node, False, {"SYN": True}, "EGRESS")
        if not isinstance(dst, str):
            flow(t + ms, dst.node, False, {"SYN": True}, "INGRESS")
        if answer == "open":
            flow(t + 2 * ms, src.node, True, {"SYN": True, "ACK": True}, "EGRESS")
            if tcp:
                flow(t + 3 * ms, src.node, False, {"ACK": True}, "EGRESS")
        elif answer == "reset":
            flow(t + 2 * ms, src.node, True, {"RST": True, "ACK": True}, "EGRESS")

    def lines(self) -> Iterator[bytes]:
        for _, _, event in sorted(self.events, key=lambda e: (e[0], e[1])):
            yield json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def dirty_window_events(seed: int = 0, hours: int = 3) -> Iterator[bytes]:
    """The window's Hubble events as JSON lines (see the module docstring)."""
    pods = _cluster()
    ev = _Events(seed)
    rng = ev.rng
    start = DIRTY_START
    dns, db = pods["dns"][0], pods["db"][0]
    everyone = [*pods["web"], *pods["api"], db, *pods["debug"], *pods["prometheus"]]
    for minute in range(0, hours * 60, 2):
        t = start + timedelta(minutes=minute, seconds=rng.uniform(0, 50))
        for pod in everyone:
            ev.connection(t + timedelta(seconds=rng.uniform(0, 60)), pod, dns, 53, proto="UDP")
        for web in pods["web"]:
            for _ in range(2):
                api = rng.choice(pods["api"])
                ev.connection(t + timedelta(seconds=rng.uniform(0, 60)), web, api, 8080)
        for api in pods["api"]:
            ev.connection(t + timedelta(seconds=rng.uniform(0, 60)), api, db, 5432)
        if minute % 10 == 0:
            for target in (*pods["web"], *pods["api"], db):
                ev.connection(t + timedelta(seconds=rng.uniform(0, 60)), pods["prometheus"][0],
                              target, 9090)  # fmt: skip
            ev.connection(t + timedelta(seconds=rng.uniform(0, 60)), pods["debug"][0],
                          pods["api"][0], 8080)  # fmt: skip
        if minute % 20 == 4:  # the wrong port, reset every time
            ev.connection(t, pods["api"][1], db, 5433, answer="reset")
    # The forwarded scan, one minute at 13:00.
    debug = pods["debug"][0]
    scan_at = start + timedelta(hours=1)
    open_ports = {("web", 8080), ("api", 8080), ("db", 5432)}
    k = 0
    for name in ("web", "api", "db"):
        peer = pods[name][0]
        for port in _SCAN_PORTS:
            answer = "open" if (name, port) in open_ports else "reset"
            ev.connection(scan_at + timedelta(seconds=k * 2), debug, peer, port, answer=answer)
            k += 1
    # One web replica's raw-IP egress, twice, half an hour apart.
    for at in (75, 105):
        ev.connection(start + timedelta(minutes=at, seconds=13), pods["web"][1], EXFIL_ADDRESS,
                      4444)  # fmt: skip
    # The CronJob: one pod per run, every 30 minutes, a minute each.
    for run in range(0, hours * 60, 30):
        when = start + timedelta(minutes=run)
        minutes = int(when.timestamp() // 60)
        suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        pod = _pod("shop", f"nightly-report-{minutes}-{suffix}", "nightly-report", "CronJob",
                   f"10.244.1.{100 + run // 30}", "worker-1", app="nightly-report",
                   **{"batch.kubernetes.io/job-name": f"nightly-report-{minutes}",
                      "job-name": f"nightly-report-{minutes}"})  # fmt: skip
        ev.connection(when + timedelta(seconds=2), pod, dns, 53, proto="UDP")
        for s in (5, 20, 40):
            ev.connection(when + timedelta(seconds=s), pod, db, 5432)
    yield from ev.lines()


def write_dirty_window(path: str | os.PathLike[str], *, seed: int = 0, hours: int = 3) -> int:
    """Write the window as gzip JSON lines (no time stamp in the gzip header: the same bytes for
    the same seed); return the number of events."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                filename="", compresslevel=9) as out:  # fmt: skip
        for line in dirty_window_events(seed, hours):
            out.write(line)
            count += 1
    return count


if __name__ == "__main__":  # pragma: no cover - python -m recommender.samples.dirty FILE
    import sys

    default = "sample_flows/.dirty-window/hubble.jsonl.gz"
    target = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"{write_dirty_window(target)} events written to {target}")
