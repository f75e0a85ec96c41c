"""The project's own deterministic flow generator: a small cluster, its traffic, and writers.

A :class:`Scenario` describes a realistic cluster as data (namespaces, workloads with their real
labels, Services, nodes) and its traffic as edges with relative rates. :func:`generate_connections`
turns it into a time-ordered stream of :class:`Connection` objects, one per connection, and the
writers render that stream the way real tools log it:

- :func:`write_hubble_jsonl`: several Hubble events per connection, as ``hubble observe -o json``
  prints them (both ends, replies, drops, policy verdicts, some L7 HTTP/DNS events);
- :func:`write_calico_jsonl`: Calico Enterprise flow-log records aggregated per 5-minute window at
  aggregation level 2, reported by the source and by the destination node;
- :func:`write_canonical_parquet` / :func:`write_canonical_csv`: the canonical flow schema straight
  from the scenario, one row per connection: the ground truth the readers are compared with.

Everything is deterministic: one :class:`random.Random` per run, no wall clock, stable ordering,
gzip with ``mtime=0``; the same seed gives byte-identical files. The generator streams: it never
holds more than a few pending connections, whatever ``connections`` is.

>>> conns = list(generate_connections(connections=50, seed=1))
>>> len(conns), conns[0].start_us <= conns[-1].start_us
(50, True)
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import io
import itertools
import json
import os
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..ingest.schema import FLOW_SCHEMA

__all__ = [
    "DEFAULT_SCENARIO",
    "Connection",
    "DnsInfo",
    "EdgeSpec",
    "ExpectedEdge",
    "HttpInfo",
    "NodeSpec",
    "Peer",
    "Pod",
    "Scenario",
    "ScheduledSpec",
    "ServiceRef",
    "WorkloadSpec",
    "default_scenario",
    "expected_edges",
    "generate_connections",
    "scaled_scenario",
    "write_calico_jsonl",
    "write_canonical_csv",
    "write_canonical_parquet",
    "write_hubble_jsonl",
]

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------------------------
# The scenario, as data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """A cluster node; ``legacy_hubble`` nodes run an older Cilium (no ``uuid``/``workloads``)."""

    name: str
    ip: str
    legacy_hubble: bool = False


@dataclass(frozen=True)
class WorkloadSpec:
    """A Deployment, StatefulSet or bare Pod, with its pod labels and named ports.

    ``ports`` maps a port name to ``(port, protocol)``; the names ``metrics`` and ``health`` mark
    what Prometheus scrapes and what the kubelet probes. ``service`` is the Service in front of
    the pods (same namespace), if any. ``rolls`` Deployments are rolled out during the span.
    """

    namespace: str
    name: str
    kind: str  # Deployment, StatefulSet or Pod
    replicas: int
    labels: tuple[tuple[str, str], ...]
    service_account: str
    ports: tuple[tuple[str, int, str], ...]
    service: str | None = None
    rolls: bool = False
    tenant: bool = True  # copied per tenant when the scenario is scaled up

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port(self, name: str) -> tuple[int, str] | None:
        for pname, number, proto in self.ports:
            if pname == name:
                return number, proto
        return None


@dataclass(frozen=True)
class EdgeSpec:
    """Background traffic from ``src`` to ``dst`` with a relative ``weight`` (rate).

    Selectors: ``ns/name`` (a workload), ``world`` (internet clients), ``host`` (the node of the
    destination pod: kubelet probes), ``external`` (the scenario's external API),
    ``kube-apiserver``, ``*`` (every application pod: tenants and monitoring), ``*metrics`` /
    ``*health`` (every pod having that named port). ``port`` is a number or a port name of the
    destination workload.
    """

    name: str
    src: tuple[str, ...]
    dst: tuple[str, ...]
    port: int | str
    protocol: str = "TCP"
    weight: float = 1.0
    verdict: str = "allowed"
    l7: str | None = None  # "http" or "dns": a fraction of connections carry L7 detail
    l7_fraction: float = 0.0
    http: tuple[tuple[str, str], ...] = () # (method, path) choices
    request_bytes: tuple[int, int] = (200, 1200)
    response_bytes: tuple[int, int] = (400, 20000)
    duration_ms: tuple[float, float] = (2.0, 80.0)
    rare: bool = False


@dataclass(frozen=True)
class ScheduledSpec:
    """Connections at fixed moments (fractions of the span), e.g. a rare job or denied probes.

    ``kind="scan"`` makes ``src`` try every port of ``scan_ports`` on every live pod and node.
    ``retransmits`` is how often a denied TCP SYN is sent again.
    """

    edge: EdgeSpec
    at: tuple[float, ...]
    kind: str = "once"
    scan_ports: tuple[int, ...] = ()
    enforced_at: str | None = None  # "ingress" or "egress" for denied traffic
    policy: str | None = None  # the enforcing policy (Calico name form)
    retransmits: int = 0


@dataclass(frozen=True)
class Scenario:
    """A cluster and its traffic. See :func:`default_scenario`."""

    name: str
    start: datetime
    hours: float
    nodes: tuple[NodeSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    edges: tuple[EdgeSpec, ...]
    scheduled: tuple[ScheduledSpec, ...]
    internet_clients: tuple[str, ...]
    external_ip: str
    external_name: str
    apiserver_ip: str
    apiserver_port: int
    default_connections: int = 4000
    rollout_at: float = 0.5  # fraction of the span
    copies: int = 1  # tenant copies (shop, payments, shop-2, payments-2, ...)
    cluster: str = "default"
    service_ips: tuple[tuple[str, str], ...] = ()  # ("ns/svc", ClusterIP), filled by __post_init__

    @property
    def span_us(self) -> int:
        return int(self.hours * 3600 * 1_000_000)

    @property
    def start_us(self) -> int:
        return _to_us(self.start)

    @property
    def rollout_us(self) -> int:
        return self.start_us + int(self.span_us * self.rollout_at)


def _L(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs))


def default_scenario() -> Scenario:
    """The sample cluster: a web shop, a payments service, monitoring and DNS on three nodes.

    See ``sample_flows/README.md`` for the story; :func:`expected_edges` lists the legitimate
    edges.
    """
    n = "app.kubernetes.io/name"
    part = "app.kubernetes.io/part-of"
    wl = (
        WorkloadSpec("shop", "frontend", "Deployment", 2,
                     _L((n, "frontend"), (part, "shop"), ("version", "1.4.2")), "frontend",
                     (("http", 8080, "TCP"), ("health", 8080, "TCP"), ("metrics", 9090, "TCP")),
                     service="frontend", rolls=True),
        WorkloadSpec("shop", "cart", "Deployment", 1,
                     _L(("app", "cart"), ("tier", "backend"), ("version", "2.0.1")), "cart",
                     (("http", 8080, "TCP"), ("health", 8081, "TCP"), ("metrics", 9090, "TCP")),
                     service="cart", rolls=True),
        WorkloadSpec("shop", "catalog", "Deployment", 1,
                     _L((n, "catalog"), (part, "shop"), ("version", "3.2.0")), "catalog",
                     (("http", 8080, "TCP"), ("admin", 9000, "TCP"), ("health", 8081, "TCP"),
                      ("metrics", 9090, "TCP")),
                     service="catalog", rolls=True),
        WorkloadSpec("shop", "checkout", "Deployment", 1,
                     _L((n, "checkout"), (part, "shop"), ("version", "1.9.0")), "checkout",
                     (("http", 8080, "TCP"), ("health", 8081, "TCP"), ("metrics", 9090, "TCP")),
                     service="checkout", rolls=True),
        WorkloadSpec("shop", "redis", "StatefulSet", 1,
                     _L((n, "redis"), ("app.kubernetes.io/instance", "cart-cache"),
                        ("app.kubernetes.io/component", "master"), ("version", "7.2.4")),
                     "redis", (("redis", 6379, "TCP"), ("metrics", 9090, "TCP")),
                     service="redis"),
        WorkloadSpec("shop", "debug-shell", "Pod", 1, _L(("run", "debug-shell")), "default", ()),
        WorkloadSpec("payments", "payments-api", "Deployment", 1,
                     _L(("app", "payments-api"), ("pci", "true"), ("version", "5.1.0")),
                     "payments-api",
                     (("https", 8443, "TCP"), ("health", 8081, "TCP"), ("metrics", 9090, "TCP")),
                     service="payments-api", rolls=True),
        WorkloadSpec("payments", "ledger-db", "StatefulSet", 1,
                     _L((n, "postgresql"), ("app.kubernetes.io/instance", "ledger-db"),
                        ("app.kubernetes.io/component", "primary"), ("version", "16.1")),
                     "ledger-db", (("postgres", 5432, "TCP"), ("metrics", 9090, "TCP")),
                     service="ledger-db"),
        WorkloadSpec("monitoring", "prometheus", "Deployment", 1,
                     _L((n, "prometheus"), ("app.kubernetes.io/instance", "k8s"),
                        ("version", "2.48.1")),
                     "prometheus-k8s", (("web", 9090, "TCP"), ("health", 9090, "TCP")),
                     service="prometheus-k8s", tenant=False),
        WorkloadSpec("kube-system", "coredns", "Deployment", 2, _L(("k8s-app", "kube-dns")),
                     "coredns", (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"),
                                 ("metrics", 9153, "TCP"), ("health", 8080, "TCP")),
                     service="kube-dns", tenant=False),
    )
    get = ("GET", "/api/products"), ("GET", "/api/products/42"), ("GET", "/api/products/7")
    edges = (
        EdgeSpec("internet-frontend", ("world",), ("shop/frontend",), "http", weight=18,
                 request_bytes=(300, 900), response_bytes=(2000, 60000)),
        EdgeSpec("frontend-cart", ("shop/frontend",), ("shop/cart",), "http", weight=9,
                 l7="http", l7_fraction=0.3,
                 http=(("GET", "/api/cart"), ("POST", "/api/cart/items"))),
        EdgeSpec("frontend-catalog", ("shop/frontend",), ("shop/catalog",), "http", weight=14,
                 l7="http", l7_fraction=0.3, http=get),
        EdgeSpec("frontend-checkout", ("shop/frontend",), ("shop/checkout",), "http", weight=3,
                 l7="http", l7_fraction=0.3, http=(("POST", "/api/checkout"),)),
        EdgeSpec("checkout-payments", ("shop/checkout",), ("payments/payments-api",), "https",
                 weight=2.5, duration_ms=(40, 400)),
        EdgeSpec("cart-redis", ("shop/cart",), ("shop/redis",), "redis", weight=8,
                 request_bytes=(40, 300), response_bytes=(20, 2000), duration_ms=(0.5, 8)),
        EdgeSpec("payments-ledger", ("payments/payments-api",), ("payments/ledger-db",),
                 "postgres", weight=2.5, duration_ms=(5, 300)),
        EdgeSpec("payments-external", ("payments/payments-api",), ("external",), 443,
                 weight=1.5, request_bytes=(900, 3000), response_bytes=(3000, 9000),
                 duration_ms=(80, 700)),
        EdgeSpec("dns-udp", ("*",), ("kube-system/coredns",), "dns", "UDP", weight=12,
                 l7="dns", l7_fraction=0.5, request_bytes=(60, 90), response_bytes=(90, 220),
                 duration_ms=(0.2, 3)),
        EdgeSpec("dns-tcp", ("*",), ("kube-system/coredns",), "dns-tcp", weight=1.5,
                 l7="dns", l7_fraction=0.5, request_bytes=(60, 90), response_bytes=(600, 1800),
                 duration_ms=(0.5, 5)),
        EdgeSpec("prometheus-scrape", ("monitoring/prometheus",), ("*metrics",), "metrics",
                 weight=6, request_bytes=(250, 400), response_bytes=(4000, 40000),
                 duration_ms=(5, 60)),
        EdgeSpec("kubelet-probes", ("host",), ("*health",), "health", weight=8,
                 request_bytes=(100, 160), response_bytes=(100, 200), duration_ms=(0.5, 4)),
        EdgeSpec("checkout-apiserver", ("shop/checkout",), ("kube-apiserver",), 6443,
                 weight=0.25, request_bytes=(600, 1500), response_bytes=(1500, 8000)),
    )
    scheduled = (
        ScheduledSpec(EdgeSpec("cart-catalog-admin", ("shop/cart",), ("shop/catalog",), "admin",
                               request_bytes=(2000, 4000), response_bytes=(200000, 400000),
                               duration_ms=(2000, 9000), rare=True),
                      at=(0.24, 0.84)),
        ScheduledSpec(EdgeSpec("frontend-ledger-denied", ("shop/frontend",),
                               ("payments/ledger-db",), "postgres", verdict="denied"),
                      at=(0.15, 0.4, 0.62, 0.9), enforced_at="ingress",
                      policy="payments/knp.default.ledger-db", retransmits=1),
        ScheduledSpec(EdgeSpec("debug-shell-scan", ("shop/debug-shell",), ("*",), 0,
                               verdict="denied"),
                      at=(0.35,), kind="scan",
                      scan_ports=(22, 80, 443, 2379, 3306, 5432, 6379, 8080, 8443, 9090, 10250,
                                  27017),
                      enforced_at="egress", policy="security.quarantine-debug-shell"),
    )
    return Scenario(
        name="shop",
        start=datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC),
        hours=3.0,
        nodes=(NodeSpec("kind-control-plane", "172.18.0.2"), NodeSpec("kind-worker", "172.18.0.3"),
               NodeSpec("kind-worker2", "172.18.0.4", legacy_hubble=True)),
        workloads=wl,
        edges=edges,
        scheduled=scheduled,
        internet_clients=("81.2.69.142", "89.160.20.112", "2.125.160.216", "175.16.199.1",
                          "216.160.83.56", "67.43.156.1"),
        external_ip="52.94.236.248",
        external_name="api.payments.example",
        apiserver_ip="172.18.0.2",
        apiserver_port=6443,
    )


#: The default scenario (see :func:`default_scenario`).
DEFAULT_SCENARIO: Final = default_scenario()

#: Connections per tenant copy before the time span is stretched (see :func:`scaled_scenario`).
_CONNECTIONS_PER_COPY_SPAN: Final = 100_000
#: One more tenant copy per this many connections.
_CONNECTIONS_PER_COPY: Final = 500_000


def scaled_scenario(scenario: Scenario, connections: int) -> Scenario:
    """``scenario`` grown for ``connections`` connections (benchmarks).

    Up to 500k connections the cluster is unchanged and only the time span grows (a busy cluster
    logs at most ~100k connections per 3 hours per tenant here); beyond, one more copy of the
    tenant namespaces (``shop-2``, ``payments-2``, ...) per 500k connections, and one more node
    per 10 copies.
    """
    copies = max(scenario.copies, 1 + connections // _CONNECTIONS_PER_COPY)
    per_span = copies * _CONNECTIONS_PER_COPY_SPAN
    hours = scenario.hours * max(1.0, connections / per_span)
    nodes = list(scenario.nodes)
    for k in range(len(nodes), len(scenario.nodes) + copies // 10):
        nodes.append(NodeSpec(f"kind-worker{k}", f"172.18.{k // 250}.{k % 250 + 2}"))
    return replace(scenario, copies=copies, hours=hours, nodes=tuple(nodes))


# --------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pod:
    """One pod of a workload; ``generation`` is 1 for pods created by the rollout."""

    namespace: str
    name: str
    workload: str
    workload_kind: str
    labels: tuple[tuple[str, str], ...]  # the pod's Kubernetes labels, sorted
    ip: str
    node: str
    node_ip: str
    service_account: str
    generation: int
    identity: int
    endpoint_id: int
    mac: str
    ifindex: int
    iface: str
    spec: WorkloadSpec = field(repr=False, compare=False)

    @property
    def aggregated_name(self) -> str:
        """Calico's aggregation-level-2 name: the pod's generateName plus ``*``."""
        if self.workload_kind == "Pod":
            return self.name
        return self.name.rsplit("-", 1)[0] + "-*"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a connection: a pod, the node (``host``), an external address or the API server.

    ``kind`` uses the canonical endpoint kinds; ``node`` is set for pods and hosts.
    """

    kind: str
    ip: str
    pod: Pod | None = None
    name: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str
    port_name: str


@dataclass(frozen=True, slots=True)
class HttpInfo:
    method: str
    path: str
    code: int
    host: str
    latency_ns: int


@dataclass(frozen=True, slots=True)
class DnsInfo:
    query: str
    qtype: str
    rcode: int
    ips: tuple[str, ...]
    ttl: int


@dataclass(slots=True)
class Connection:
    """One connection (or one denied attempt), as the scenario knows it.

    Times are integer microseconds since the epoch (UTC). ``bytes_sent``/``packets_sent`` flow
    from ``src`` to ``dst``. ``enforced_at`` says which end denied a denied connection.
    """

    index: int
    start_us: int
    duration_us: int
    src: Peer
    dst: Peer
    protocol: str
    src_port: int
    dst_port: int
    verdict: str
    edge: str
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    service: ServiceRef | None = None
    dst_dns_names: tuple[str, ...] = ()
    http: HttpInfo | None = None
    dns: DnsInfo | None = None
    enforced_at: str | None = None
    policy: str | None = None
    retransmits: int = 0

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def time(self) -> datetime:
        """The start as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self.start_us)


@dataclass(frozen=True)
class ExpectedEdge:
    """A legitimate edge of the scenario at workload level (what a policy must allow).

    ``src``/``dst`` are ``namespace/workload`` for pods, else ``world``, ``host``,
    ``kube-apiserver`` or the external IP. ``rare`` edges are seen only a couple of times.
    """

    src_kind: str
    src: str
    dst_kind: str
    dst: str
    protocol: str
    port: int
    rare: bool = False
    dst_dns_name: str | None = None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE: Final = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet


def _to_us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


class _Cluster:
    """The scenario's pods and Services, resolved (names, hashes, IPs, identities)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.workloads: list[WorkloadSpec] = []
        for w in sc.workloads:
            if w.tenant:
                for c in range(sc.copies):
                    ns = w.namespace if c == 0 else f"{w.namespace}-{c + 1}"
                    self.workloads.append(replace(w, namespace=ns))
            else:
                self.workloads.append(w)
        self.by_ref: dict[str, WorkloadSpec] = {w.ref: w for w in self.workloads}
        self.node_ip = {n.name: n.ip for n in sc.nodes}
        self.node_by_ip = {n.ip: n for n in sc.nodes}
        self.legacy = {n.name for n in sc.nodes if n.legacy_hubble}
        self.rollout_us = sc.rollout_us
        self._ip_count: dict[str, int] = {}
        # pods[ref][generation]
        self.pods: dict[str, tuple[tuple[Pod, ...], tuple[Pod, ...]]] = {}
        for i, w in enumerate(self.workloads):
            gen0 = self._make_pods(w, 0, i)
            gen1 = self._make_pods(w, 1, i) if w.rolls else gen0
            self.pods[w.ref] = (gen0, gen1)
        self.service_ip: dict[str, str] = {}
        for i, w in enumerate(self.workloads):
            if w.service:
                q, r = divmod(i * 7 + 1, 250)  # 10.96.0.0/12 holds 4,096 x 250 addresses
                self.service_ip[f"{w.namespace}/{w.service}"] = (
                    f"10.{96 + q // 256}.{q % 256}.{r + 2}"
                )
        self.service_ip["default/kubernetes"] = "10.96.0.1"

    def _make_pods(self, w: WorkloadSpec, gen: int, index: int) -> tuple[Pod, ...]:
        rng = random.Random(f"{w.namespace}/{w.name}/{gen}")
        labels = dict(w.labels)
        if gen and "version" in labels:  # the rollout ships a new version
            major, _, rest = labels["version"].partition(".")
            minor = rest.split(".")[0] if rest else "0"
            labels["version"] = f"{major}.{int(minor) + 1}.0"
        pods = []
        template = "".join(rng.choice(_SAFE) for _ in range(rng.choice((9, 10))))
        revision = "".join(rng.choice(_SAFE) for _ in range(10))
        for r in range(w.replicas):
            pl = dict(labels)
            if w.kind == "Deployment":
                name = f"{w.name}-{template}-{''.join(rng.choice(_SAFE) for _ in range(5))}"
                pl["pod-template-hash"] = template
            elif w.kind == "StatefulSet":
                name = f"{w.name}-{r}"
                pl["controller-revision-hash"] = f"{w.name}-{revision}"
                pl["statefulset.kubernetes.io/pod-name"] = name
                pl["apps.kubernetes.io/pod-index"] = str(r)
            else:
                name = w.name
            nodes = self.sc.nodes
            node = nodes[(index * 2 + r + gen) % len(nodes)]
            k = nodes.index(node)
            c = self._ip_count.get(node.name, 0)
            self._ip_count[node.name] = c + 1
            ip = f"10.244.{k + len(nodes) * (c // 250)}.{c % 250 + 3}"
            idl = _identity_labels(w.namespace, pl.items(), w.service_account, self.sc.cluster)
            mac = ":".join(f"{b:02x}" for b in [0x2 | (_crc(name) & 0xFC)] + [
                (_crc(name + str(j)) & 0xFF) for j in range(5)])
            pods.append(Pod(
                namespace=w.namespace, name=name, workload=w.name, workload_kind=w.kind,
                labels=tuple(sorted(pl.items())), ip=ip, node=node.name, node_ip=node.ip,
                service_account=w.service_account, generation=gen,
                identity=1000 + _crc("\n".join(idl)) % 64000,
                endpoint_id=1 + _crc(f"ep/{w.namespace}/{name}") % 4095,
                mac=mac, ifindex=8 + _crc(f"if/{name}") % 60,
                iface="lxc" + format(_crc(f"lxc/{name}"), "08x")
                + format(_crc(f"lxc2/{name}") & 0xFFFF, "04x")[:3],
                spec=w,
            ))
        return tuple(pods)

    def live(self, ref: str, t_us: int) -> tuple[Pod, ...]:
        gen0, gen1 = self.pods[ref]
        return gen1 if t_us >= self.rollout_us else gen0

    def select(self, selector: str, port: int | str) -> list[str]:
        """Workload refs a selector names (for ``*`` selectors, those with the named port)."""
        if selector == "*":
            return [w.ref for w in self.workloads
                    if (w.tenant or w.namespace == "monitoring") and w.kind != "Pod"]
        if selector.startswith("*"):
            name = selector[1:]
            return [w.ref for w in self.workloads if w.port(name) is not None]
        if "/" in selector:
            return [selector]
        return [selector]


# DNS names each workload looks up (service names resolve to ClusterIPs).
_DNS_TARGETS: Final = {
    "frontend": ("cart", "catalog", "checkout"),
    "cart": ("redis",),
    "catalog": (),
    "checkout": ("payments-api.payments",),
    "payments-api": ("ledger-db", "@external"),
    "redis": (),
    "ledger-db": (),
    "prometheus": ("kubernetes.default",),
}


@dataclass
class _EdgeInst:
    """An edge instantiated for one tenant copy: concrete source and destination workload refs."""

    spec: EdgeSpec
    srcs: list[str]
    dsts: list[str]


class _Generator:
    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc = sc
        self.cl = _Cluster(sc)
        self.rng = random.Random(seed)
        self.insts: list[_EdgeInst] = []
        weights: list[float] = []
        for e in sc.edges:
            for c in self._copies_of(e):
                self.insts.append(self._instantiate(e, c))
                weights.append(e.weight)
        self.cum = list(itertools.accumulate(weights))
        self._peers: dict[str, Peer] = {}
        self._sports: dict[str, int] = {}

    def _copies_of(self, e: EdgeSpec) -> range:
        refs = [s for s in (*e.src, *e.dst) if "/" in s]
        tenant = any(self.cl.by_ref[r].tenant for r in refs)
        return range(self.sc.copies) if tenant else range(1)

    def _rename(self, ref: str, copy: int) -> str:
        if copy == 0 or "/" not in ref:
            return ref
        ns, name = ref.split("/", 1)
        base = self.cl.by_ref.get(ref)
        return f"{ns}-{copy + 1}/{name}" if base is not None and base.tenant else ref

    def _instantiate(self, e: EdgeSpec, copy: int) -> _EdgeInst:
        srcs = [r for s in e.src for r in self.cl.select(self._rename(s, copy), e.port)]
        dsts = [r for d in e.dst for r in self.cl.select(self._rename(d, copy), e.port)]
        return _EdgeInst(e, srcs, dsts)

    # -- peers -----------------------------------------------------------------------------

    def _pod_peer(self, pod: Pod) -> Peer:
        peer = self._peers.get(pod.ip)
        if peer is None:
            peer = self._peers[pod.ip] = Peer("workload", pod.ip, pod=pod, node=pod.node)
        return peer

    def _dst_port(self, e: EdgeSpec, dst: Peer) -> tuple[int, ServiceRef | None]:
        if isinstance(e.port, int):
            if dst.kind == "cluster-entity":
                return e.port, ServiceRef("default", "kubernetes", "https")
            return e.port, None
        assert dst.pod is not None
        spec = dst.pod.spec
        port = spec.port(e.port)
        assert port is not None, (spec.ref, e.port)
        svc = None
        # Services expose the serving ports; metrics and health go to the pod IP directly.
        if spec.service and e.port not in ("metrics", "health"):
            svc = ServiceRef(spec.namespace, spec.service, e.port)
        return port[0], svc

    def _make(self, index: int, t_us: int, inst: _EdgeInst, rng: random.Random,
              src_ref: str | None = None, dst_pod: Pod | None = None, port: int | None = None,
              sched: ScheduledSpec | None = None) -> Connection:
        e = inst.spec
        # destination first (host probes take the destination's node)
        if dst_pod is None:
            dref = inst.dsts[int(rng.random() * len(inst.dsts))]
            if dref == "external":
                dst = Peer("external", self.sc.external_ip, name="world")
            elif dref == "kube-apiserver":
                dst = Peer("cluster-entity", self.sc.apiserver_ip, name="kube-apiserver",
                           node=self.cl.node_by_ip[self.sc.apiserver_ip].name
                           if self.sc.apiserver_ip in self.cl.node_by_ip else None)
            else:
                pods = self.cl.live(dref, t_us)
                dst = self._pod_peer(pods[int(rng.random() * len(pods))])
        elif dst_pod.workload_kind == "Node":
            dst = Peer("host", dst_pod.ip, name="host", node=dst_pod.node)
        else:
            dst = self._pod_peer(dst_pod)
        sref = src_ref or inst.srcs[int(rng.random() * len(inst.srcs))]
        if sref == "world":
            cl = self.sc.internet_clients
            src = Peer("external", cl[int(rng.random() * len(cl))], name="world")
        elif sref == "host":
            assert dst.node is not None
            src = Peer("host", self.cl.node_ip[dst.node], name="host", node=dst.node)
        else:
            pods = self.cl.live(sref, t_us)
            src = self._pod_peer(pods[int(rng.random() * len(pods))])
        if port is None:
            dport, svc = self._dst_port(e, dst)
        else:
            dport, svc = port, None
        if dst.kind == "cluster-entity":
            dport = self.sc.apiserver_port
        proto = e.protocol
        # Linux hands out ephemeral ports near-sequentially per source; no reuse for a while.
        last = self._sports.get(src.ip)
        if last is None:
            last = 32768 + int(rng.random() * 28232)
        sport = last + 1 + int(rng.random() * 8)
        if sport > 60999:
            sport -= 28232
        self._sports[src.ip] = sport
        denied = e.verdict == "denied"
        dns_names = (self.sc.external_name,) if dst.kind == "external" else ()
        if denied:
            tries = 1 + (sched.retransmits if sched else 0)
            pkts = tries if proto == "TCP" else 1
            return Connection(
                index=index, start_us=t_us, duration_us=(tries - 1) * 1_000_000,
                src=src, dst=dst, protocol=proto, src_port=sport, dst_port=dport,
                verdict="denied", edge=e.name, bytes_sent=60 * pkts, bytes_received=0,
                packets_sent=pkts, packets_received=0, service=svc, dst_dns_names=dns_names,
                enforced_at=sched.enforced_at if sched else "ingress",
                policy=sched.policy if sched else None, retransmits=tries - 1,
            )
        lo, hi = e.request_bytes
        req = int(lo + (hi - lo) * rng.random() ** 2)
        lo, hi = e.response_bytes
        resp = int(lo + (hi - lo) * rng.random() ** 2)
        lo_d, hi_d = e.duration_ms
        dur = int((lo_d + (hi_d - lo_d) * rng.random() ** 3) * 1000)
        if proto == "TCP":
            p_out = 3 + req // 1400 + (1 if req % 1400 else 0)
            p_in = 2 + resp // 1400 + (1 if resp % 1400 else 0)
            b_out, b_in = req + 52 * p_out, resp + 52 * p_in
        else:
            p_out = p_in = 1
            b_out, b_in = req + 28, resp + 28
        http = dns = None
        if e.l7 and rng.random() < e.l7_fraction:
            if e.l7 == "http" and dst.pod is not None:
                method, path = e.http[int(rng.random() * len(e.http))]
                code = 200 if rng.random() < 0.97 else 503
                if method == "POST" and code == 200:
                    code = 201
                http = HttpInfo(method, path, code,
                                f"{dst.pod.spec.service}:{dport}" if dst.pod.spec.service
                                else dst.ip, max(1000, dur * 1000 - 200_000))
            elif e.l7 == "dns" and src.pod is not None:
                dns = self._dns_query(src.pod, rng)
        return Connection(
            index=index, start_us=t_us, duration_us=dur, src=src, dst=dst, protocol=proto,
            src_port=sport, dst_port=dport, verdict="allowed", edge=e.name,
            bytes_sent=b_out, bytes_received=b_in, packets_sent=p_out, packets_received=p_in,
            service=svc, dst_dns_names=dns_names, http=http, dns=dns,
        )

    def _dns_query(self, pod: Pod, rng: random.Random) -> DnsInfo:
        targets = _DNS_TARGETS.get(pod.workload, ()) or ("kubernetes.default",)
        target = targets[int(rng.random() * len(targets))]
        ns = pod.namespace
        qtype = "A" if rng.random() < 0.8 else "AAAA"
        if target == "@external":
            name = f"{self.sc.external_name}."
            ips = (self.sc.external_ip,) if qtype == "A" else ()
            return DnsInfo(name, qtype, 0, ips, 60)
        if rng.random() < 0.15:  # a search-path miss
            return DnsInfo(f"{target}.{ns}.svc.cluster.local.", qtype, 3, (), 30)
        svc_ns = target.split(".")[1] if "." in target else ns
        svc = target.split(".")[0]
        ip = self.cl.service_ip.get(f"{svc_ns}/{svc}")
        ips = (ip,) if ip and qtype == "A" else ()
        return DnsInfo(f"{svc}.{svc_ns}.svc.cluster.local.", qtype, 0, ips, 30)

    # -- streams ---------------------------------------------------------------------------

    def background(self, count: int) -> Iterator[tuple[int, int, Connection | None, Any]]:
        """Time-ordered background connections: one in each of ``count`` equal time slots."""
        if count <= 0 or not self.insts:
            return
        rng = self.rng
        span = self.sc.span_us
        start = self.sc.start_us
        cum = self.cum
        total = cum[-1]
        for i in range(count):
            t = start + int((i + rng.random()) * span / count)
            inst = self.insts[bisect.bisect_right(cum, rng.random() * total)]
            yield t, 0, None, inst

    def scheduled(self) -> list[tuple[int, int, Connection | None, Any]]:
        """The scheduled connections (copy 0 only), sorted by time."""
        out: list[tuple[int, int, Connection | None, Any]] = []
        rng = random.Random(f"scheduled/{self.sc.name}")
        seq = 1
        for s in self.sc.scheduled:
            inst = self._instantiate(s.edge, 0)
            for frac in s.at:
                t = self.sc.start_us + int(self.sc.span_us * frac) + int(rng.random() * 1e6)
                if s.kind == "scan":
                    targets: list[Pod] = []
                    for ref in inst.dsts:
                        targets.extend(self.cl.live(ref, t))
                    targets.sort(key=lambda p: tuple(int(x) for x in p.ip.split(".")))
                    nodes = [Pod("", n.name, "", "Node", (), n.ip, n.name, n.ip, "", 0, 0, 0,
                                 "", 0, "", spec=self.cl.workloads[0]) for n in self.sc.nodes]
                    step = 0
                    for target in targets + nodes:
                        for port in s.scan_ports:
                            step += 1
                            out.append((t + step * 20_000, seq, None, (inst, s, target, port)))
                            seq += 1
                else:
                    out.append((t, seq, None, (inst, s, None, None)))
                    seq += 1
        out.sort(key=lambda x: (x[0], x[1]))
        return out


def generate_connections(
    scenario: Scenario | None = None, *, connections: int | None = None, seed: int = 0
) -> Iterator[Connection]:
    """Stream the scenario's connections in time order.

    Parameters
    ----------
    scenario
        The cluster and its traffic; :data:`DEFAULT_SCENARIO` when None.
    connections
        How many connections to produce (exactly); ``scenario.default_connections`` when None.
        Large numbers stretch the time span and add tenant copies (:func:`scaled_scenario`).
    seed
        Seeds the one :class:`random.Random` of the run; the same seed gives the same stream.

    Yields
    ------
    Connection
        Ordered by ``start_us``; ``index`` counts from 1.
    """
    sc = scenario or DEFAULT_SCENARIO
    n = sc.default_connections if connections is None else int(connections)
    if n <= 0:
        return
    sc = scaled_scenario(sc, n)
    gen = _Generator(sc, seed)
    sched = gen.scheduled()
    merged = heapq.merge(sched, gen.background(n - len(sched)), key=lambda x: (x[0], x[1]))
    rng = gen.rng
    for index, (t, _, _, what) in enumerate(itertools.islice(merged, n), start=1):
        if isinstance(what, _EdgeInst):
            yield gen._make(index, t, what, rng)
        else:
            inst, s, target, port = what
            if target is None:
                yield gen._make(index, t, inst, rng, sched=s)
            else:
                yield gen._make(index, t, inst, rng, dst_pod=target, port=port, sched=s)


def expected_edges(scenario: Scenario | None = None, *, include_rare: bool = True
                   ) -> list[ExpectedEdge]:
    """The legitimate (allowed) edges of ``scenario`` at workload level, sorted.

    Every allowed connection the generator makes belongs to one of these edges; denied traffic
    (``frontend -> ledger-db``, the ``debug-shell`` scan) is not listed.
    """
    sc = scenario or DEFAULT_SCENARIO
    cl = _Cluster(sc)
    gen = _Generator(sc, 0)
    out: set[ExpectedEdge] = set()
    insts = list(gen.insts)
    for s in sc.scheduled:
        if s.edge.verdict == "allowed":
            insts.append(gen._instantiate(s.edge, 0))
    for inst in insts:
        e = inst.spec
        if e.verdict != "allowed" or (e.rare and not include_rare):
            continue
        for dref in inst.dsts:
            if dref == "external":
                dkind, dname, port, dns = "external", sc.external_ip, int(e.port), sc.external_name
            elif dref == "kube-apiserver":
                dkind, dname, dns = "cluster-entity", "kube-apiserver", None
                port = sc.apiserver_port
            else:
                dkind, dname, dns = "workload", dref, None
                spec = cl.by_ref[dref]
                named = spec.port(e.port) if isinstance(e.port, str) else (e.port, e.protocol)
                assert named is not None
                port = named[0]
            for sref in inst.srcs:
                if sref == "world":
                    skind, sname = "external", "world"
                elif sref == "host":
                    skind, sname = "host", "host"
                else:
                    skind, sname = "workload", sref
                out.add(ExpectedEdge(skind, sname, dkind, dname, e.protocol, port, e.rare, dns))
    return sorted(out, key=lambda x: (x.src, x.dst, x.protocol, x.port))


# --------------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------------


class _Out:
    """A binary output file, gzip-compressed (``mtime=0``, no name) when the path ends ``.gz``."""

    def __init__(self, path: PathLike, compresslevel: int = 6) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw: BinaryIO = open(self.path, "wb")  # noqa: SIM115
        self.fh: BinaryIO
        if self.path.suffix == ".gz":
            self.fh = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                    compresslevel=compresslevel, mtime=0)  # type: ignore[assignment]
        else:
            self.fh = self._raw
        self.buf: list[bytes] = []
        self.size = 0

    def line(self, data: bytes) -> None:
        self.buf.append(data)
        self.size += len(data)
        if self.size > 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.fh.write(b"\n".join(self.buf) + b"\n")
            self.buf, self.size = [], 0

    def close(self) -> None:
        self.flush()
        if self.fh is not self._raw:
            self.fh.close()
        self._raw.close()


_ENCODE = msgspec.json.Encoder().encode


class _TimeText:
    """RFC 3339 text with nanoseconds, cached per second."""

    def __init__(self) -> None:
        self.cache: dict[int, str] = {}

    def __call__(self, ns: int) -> str:
        sec, frac = divmod(ns, 1_000_000_000)
        head = self.cache.get(sec)
        if head is None:
            if len(self.cache) > 4096:
                self.cache.clear()
            head = self.cache[sec] = (_EPOCH + timedelta(seconds=sec)).strftime(
                "%Y-%m-%dT%H:%M:%S")
        return f"{head}.{frac:09d}Z"


# --------------------------------------------------------------------------------------------
# Hubble
# --------------------------------------------------------------------------------------------

_TRACE = 4
_DROP = 1
_POLICY_VERDICT = 5
_L7 = 129
_SUB = {"TO_ENDPOINT": 0, "TO_PROXY": 1, "TO_HOST": 2, "TO_STACK": 3, "TO_OVERLAY": 4}


class _HubbleWriter:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"hubble/{seed}")
        self.time = _TimeText()
        self.ep_cache: dict[tuple[str, bool, bool], dict[str, Any]] = {}
        self.legacy: set[str] = set()
        self.cluster = "default"

    def endpoint(self, peer: Peer, local_node: str) -> dict[str, Any]:
        pod = peer.pod
        legacy = local_node in self.legacy
        if pod is not None:
            local = pod.node == local_node
            key = (pod.namespace + "/" + pod.name, local, legacy)
            ep = self.ep_cache.get(key)
            if ep is None:
                ep = {}
                if local:
                    ep["ID"] = pod.endpoint_id
                ep["identity"] = pod.identity
                ep["namespace"] = pod.namespace
                ep["labels"] = _identity_labels(pod.namespace, pod.labels, pod.service_account,
                                                self.cluster)
                ep["pod_name"] = pod.name
                if not legacy and pod.workload_kind != "Pod":
                    ep["workloads"] = [{"name": pod.workload, "kind": pod.workload_kind}]
                if len(self.ep_cache) > 100_000:
                    self.ep_cache.clear()
                self.ep_cache[key] = ep
            return ep
        if peer.kind == "host":
            if peer.node == local_node:
                return {"identity": 1, "labels": ["reserved:host"]}
            return {"identity": 6, "labels": ["reserved:remote-node"]}
        if peer.kind == "cluster-entity":
            if peer.node == local_node:
                return {"identity": 1, "labels": ["reserved:host", "reserved:kube-apiserver"]}
            return {"identity": 7, "labels": ["reserved:kube-apiserver", "reserved:remote-node"]}
        return {"identity": 2, "labels": ["reserved:world"]}

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"

    def event(self, ns: int, node: str, c: Connection, *, reply: bool, flags: dict[str, bool]
              | None, direction: str | None, point: str | None = None, verdict: str =
              "FORWARDED", etype: int = _TRACE, sub: int | None = None,
              l7: dict[str, Any] | None = None, drop: bool = False, is_reply: bool | None = None,
              match: int | None = None) -> tuple[int, bytes]:
        legacy = node in self.legacy
        s, d = (c.dst, c.src) if reply else (c.src, c.dst)
        sport, dport = (c.dst_port, c.src_port) if reply else (c.src_port, c.dst_port)
        when = self.time(ns)
        f: dict[str, Any] = {"time": when}
        if not legacy:
            f["uuid"] = self.uuid()
        f["verdict"] = verdict
        if drop:
            f["drop_reason"] = 133
        if l7 is None and s.pod is not None and d.pod is not None and point != "TO_OVERLAY":
            f["ethernet"] = {"source": s.pod.mac, "destination": d.pod.mac}
        f["IP"] = {"source": s.ip, "destination": d.ip, "ipVersion": "IPv4"}
        l4: dict[str, Any] = {"source_port": sport, "destination_port": dport}
        if c.protocol == "TCP" and flags:
            l4["flags"] = flags
        f["l4"] = {c.protocol: l4}
        f["source"] = self.endpoint(s, node)
        f["destination"] = self.endpoint(d, node)
        f["Type"] = "L7" if l7 is not None else "L3_L4"
        f["node_name"] = node
        if c.dst_dns_names and not reply:
            f["destination_names"] = list(c.dst_dns_names)
        elif c.dst_dns_names and reply:
            f["source_names"] = list(c.dst_dns_names)
        if l7 is not None:
            f["l7"] = l7
        if legacy and (reply if is_reply is None else is_reply):
            f["reply"] = True
        et: dict[str, int] = {"type": etype}
        if sub:
            et["sub_type"] = sub
        f["event_type"] = et
        if c.service is not None and not reply and s.pod is not None:
            f["destination_service"] = {"name": c.service.name, "namespace": c.service.namespace}
        if direction:
            f["traffic_direction"] = direction
        if match is not None:
            f["policy_match_type"] = match
        if point:
            f["trace_observation_point"] = point
        if drop:
            f["drop_reason_desc"] = "POLICY_DENIED"
        if not (drop and etype == _DROP):
            f["is_reply"] = reply if is_reply is None else is_reply
        if point == "TO_ENDPOINT":
            p = d.pod
            if p is not None:
                f["interface"] = {"index": p.ifindex, "name": p.iface}
        elif point == "TO_OVERLAY":
            f["interface"] = {"index": 6, "name": "cilium_vxlan"}
        if legacy:
            f["Summary"] = _summary(c, flags, l7)
        return ns, _ENCODE({"flow": f, "node_name": node, "time": when})

    def events(self, c: Connection) -> list[tuple[int, bytes]]:
        rng = self.rng
        t = c.start_us * 1000 + int(rng.random() * 1000)
        src_node = c.src.node if c.src.kind == "workload" else None
        dst_node = c.dst.node if c.dst.kind == "workload" else None
        cross = src_node is not None and dst_node is not None and src_node != dst_node
        out_point = "TO_OVERLAY" if cross else "TO_STACK"
        out: list[tuple[int, bytes]] = []
        ev = self.event
        tcp = c.protocol == "TCP"
        syn = {"SYN": True} if tcp else None
        synack = {"SYN": True, "ACK": True} if tcp else None
        ack = {"ACK": True} if tcp else None
        hop = 40_000 + int(rng.random() * 120_000) if cross else 8_000 + int(rng.random() * 20_000)

        if c.verdict == "denied":
            for k in range(1 + c.retransmits):
                tk = t + k * 1_000_000_000
                if c.enforced_at == "egress" and src_node:
                    if k == 0:
                        out.append(ev(tk, src_node, c, reply=False, flags=syn,
                                      direction="EGRESS", verdict="DROPPED",
                                      etype=_POLICY_VERDICT, drop=True, match=None))
                    out.append(ev(tk + 2_000, src_node, c, reply=False, flags=syn,
                                  direction="EGRESS", verdict="DROPPED", etype=_DROP, sub=133,
                                  drop=True))
                    continue
                if src_node:
                    out.append(ev(tk, src_node, c, reply=False, flags=syn, direction="EGRESS",
                                  point=out_point, sub=_SUB[out_point]))
                if dst_node:
                    if k == 0:
                        out.append(ev(tk + hop, dst_node, c, reply=False, flags=syn,
                                      direction="INGRESS", verdict="DROPPED",
                                      etype=_POLICY_VERDICT, drop=True))
                    out.append(ev(tk + hop + 3_000, dst_node, c, reply=False, flags=syn,
                                  direction="INGRESS", verdict="DROPPED", etype=_DROP, sub=133,
                                  drop=True))
            return out

        # the request (SYN, or the UDP datagram)
        if src_node:
            out.append(ev(t, src_node, c, reply=False, flags=syn, direction="EGRESS",
                          point=out_point, sub=_SUB[out_point]))
        if dst_node:
            if c.dst.pod is not None and c.dst.pod.workload == "ledger-db":
                out.append(ev(t + hop - 1_000, dst_node, c, reply=False, flags=syn,
                              direction="INGRESS", etype=_POLICY_VERDICT, match=3))
            out.append(ev(t + hop, dst_node, c, reply=False, flags=syn, direction="INGRESS",
                          point="TO_ENDPOINT"))
        rtt = 2 * hop + 30_000
        # the answer (SYN-ACK, or the UDP reply), seen where it reaches the client or leaves
        if src_node:
            out.append(ev(t + rtt, src_node, c, reply=True, flags=synack, direction="EGRESS",
                          point="TO_ENDPOINT"))
        elif dst_node:
            out.append(ev(t + hop + 20_000, dst_node, c, reply=True, flags=synack,
                          direction="INGRESS", point="TO_STACK", sub=_SUB["TO_STACK"]))
        if tcp:  # the ACK completing the handshake
            if dst_node:
                out.append(ev(t + rtt + hop, dst_node, c, reply=False, flags=ack,
                              direction="INGRESS", point="TO_ENDPOINT"))
            elif src_node:
                out.append(ev(t + rtt + 5_000, src_node, c, reply=False, flags=ack,
                              direction="EGRESS", point="TO_STACK", sub=_SUB["TO_STACK"]))
        if c.http is not None and dst_node:
            h = c.http
            url = f"http://{h.host}{h.path}"
            req = {"type": "REQUEST", "http": {"method": h.method, "url": url,
                                               "protocol": "HTTP/1.1"}}
            resp = {"type": "RESPONSE", "latency_ns": str(h.latency_ns),
                    "http": {"code": h.code, "method": h.method, "url": url,
                             "protocol": "HTTP/1.1"}}
            tr = t + rtt + hop + 50_000
            out.append(ev(tr, dst_node, c, reply=False, flags=None, direction="INGRESS",
                          etype=_L7, l7=req))
            out.append(ev(tr + h.latency_ns, dst_node, c, reply=True, flags=None,
                          direction="INGRESS", etype=_L7, l7=resp))
        if c.dns is not None and src_node:
            q = c.dns
            dreq: dict[str, Any] = {"type": "REQUEST", "dns": {
                "query": q.query, "observation_source": "proxy", "qtypes": [q.qtype]}}
            dns: dict[str, Any] = {"query": q.query}
            if q.ips:
                dns["ips"] = list(q.ips)
            dns["ttl"] = q.ttl
            dns["observation_source"] = "proxy"
            if q.rcode:
                dns["rcode"] = q.rcode
            dns["qtypes"] = [q.qtype]
            if q.ips:
                dns["rrtypes"] = [q.qtype]
            out.append(ev(t - 20_000, src_node, c, reply=False, flags=None, direction="EGRESS",
                          etype=_L7, l7=dreq))
            out.append(ev(t + rtt + 10_000, src_node, c, reply=True, flags=None,
                          direction="EGRESS", etype=_L7,
                          l7={"type": "RESPONSE", "latency_ns": str(rtt + 30_000), "dns": dns}))
        return out


_NOT_IDENTITY: Final = ("pod-template-hash", "controller-revision-hash",
                        "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index")


def _identity_labels(namespace: str, labels: Iterable[tuple[str, str]], service_account: str,
                     cluster: str) -> list[str]:
    """Cilium's identity labels: pod labels minus hashes plus the injected ones, sorted."""
    out = [f"k8s:{k}={v}" for k, v in labels if k not in _NOT_IDENTITY]
    out += [
        f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={namespace}",
        f"k8s:io.cilium.k8s.policy.cluster={cluster}",
        f"k8s:io.cilium.k8s.policy.serviceaccount={service_account}",
        f"k8s:io.kubernetes.pod.namespace={namespace}",
    ]
    return sorted(out)


def _summary(c: Connection, flags: dict[str, bool] | None, l7: dict[str, Any] | None) -> str:
    if l7 is not None:
        if "http" in l7:
            h = l7["http"]
            if l7["type"] == "REQUEST":
                return f"HTTP/1.1 {h['method']} {h['url']}"
            return f"HTTP/1.1 {h['code']} ({h['method']} {h['url']})"
        d = l7["dns"]
        if l7["type"] == "REQUEST":
            return f"DNS Query {d['query']} {d['qtypes'][0]}"
        return f"DNS Answer (Proxy {d['query']} {d['qtypes'][0]})"
    if c.protocol != "TCP":
        return c.protocol
    names = [k for k in ("SYN", "ACK") if flags and flags.get(k)]
    return "TCP Flags: " + ", ".join(names)


def write_hubble_jsonl(connections: Iterable[Connection], path: PathLike, *, seed: int = 0,
                       compresslevel: int = 6, scenario: Scenario | None = None) -> int:
    """Write the Hubble events of ``connections`` as ``hubble observe -o json`` lines.

    Per TCP connection: the SYN leaving the client (EGRESS, ``TO_OVERLAY`` across nodes,
    ``TO_STACK`` otherwise), the SYN delivered to the server (INGRESS, ``TO_ENDPOINT``), the
    SYN-ACK reply (``is_reply: true``) and the ACK; UDP DNS: the request at both ends and the
    reply. Some connections add L7 HTTP or DNS request/response events; connections into the
    policy-enforced ``ledger-db`` add a policy-verdict event. Denied attempts are ``DROPPED``
    with ``POLICY_DENIED`` (a policy-verdict and a drop event, retransmitted SYNs) and have no
    reply. Nodes marked ``legacy_hubble`` write the older form (no ``uuid``/``workloads``, a
    ``Summary``, the legacy ``reply`` field). Lines are in time order; ``.gz`` paths are
    gzip-compressed deterministically.

    Returns
    -------
    int
        The number of lines written.
    """
    sc = scenario or DEFAULT_SCENARIO
    w = _HubbleWriter(seed)
    w.legacy = {n.name for n in sc.nodes if n.legacy_hubble}
    w.cluster = sc.cluster
    out = _Out(path, compresslevel)
    pending: list[tuple[int, int, bytes]] = []
    seq = 0
    lines = 0
    try:
        for c in connections:
            horizon = c.start_us * 1000
            while pending and pending[0][0] < horizon:
                out.line(heapq.heappop(pending)[2])
                lines += 1
            for ns, data in w.events(c):
                seq += 1
                heapq.heappush(pending, (ns, seq, data))
        while pending:
            out.line(heapq.heappop(pending)[2])
            lines += 1
    finally:
        out.close()
    return lines


# --------------------------------------------------------------------------------------------
# Calico Enterprise
# --------------------------------------------------------------------------------------------

_WINDOW_S: Final = 300
_PRIVATE: Final = ("10.", "172.16.", "172.17.", "172.18.", "172.19.", "172.2", "172.30.",
                   "172.31.", "192.168.")


def _calico_peer(p: Peer) -> tuple[str, str, str, str, tuple[tuple[str, str], ...] | None]:
    """(type, namespace, aggregated name, key, labels) of one end at aggregation level 2."""
    if p.pod is not None:
        return "wep", p.pod.namespace, p.pod.aggregated_name, p.pod.namespace, p.pod.labels
    priv = p.ip.startswith(_PRIVATE)
    return "net", "-", "pvt" if priv else "pub", "-", None


def _profile(ns: str) -> str:
    return f"__PROFILE__|__PROFILE__.kns.{ns}|allow|0"


def _calico_policies(c: Connection, reporter: str) -> list[str]:
    if c.verdict == "denied":
        if c.policy and c.policy.startswith("security."):
            return [f"0|security|{c.policy}|deny|0"]
        return [f"0|default|{c.policy}|deny|-1"]
    end = c.src if reporter == "src" else c.dst
    assert end.pod is not None
    if reporter == "dst" and end.pod.workload == "ledger-db":
        return [f"0|default|{end.pod.namespace}/knp.default.ledger-db|allow|0"]
    return ["0|" + _profile(end.pod.namespace)]


def write_calico_jsonl(connections: Iterable[Connection], path: PathLike, *,
                       compresslevel: int = 6, scenario: Scenario | None = None,
                       aggregation: int = 2) -> int:
    """Write Calico Enterprise flow-log records for ``connections`` (JSON lines).

    Felix's default aggregation level 2 over 5-minute flush windows: pods by controller prefix
    (``source_name: "-"``, ``source_name_aggr: "frontend-7d4b9c8f6b-*"``), IPs and the source
    port null, labels the intersection over the aggregated pods (``pod-template-hash``
    included); non-pod peers are ``net`` with ``pub``/``pvt``. Every window's group is reported by
    each end that is a pod: ``reporter: "src"`` with ``host`` the source's node, and
    ``reporter: "dst"`` with ``host`` the destination's node and mirrored ``bytes_in/out`` and
    ``packets_in/out``. Connections allowed by the source but denied at the destination give an
    ``allow`` record at the source and a ``deny`` record at the destination; denied at the
    source, only the source's ``deny`` record. Windows are written in time order.

    ``aggregation`` 1 keeps pod names and IPs (only the source port is dropped) and 0 keeps the
    full 5-tuple (one record per connection and reporter): Felix's lower levels, used by the
    benchmarks to get many records.

    Returns
    -------
    int
        The number of records written.
    """
    sc = scenario or DEFAULT_SCENARIO
    node_offset = {n.name: i % 7 for i, n in enumerate(sc.nodes)}
    win_us = _WINDOW_S * 1_000_000
    origin = sc.start_us - sc.start_us % win_us
    windows: dict[int, dict[tuple[Any, ...], dict[str, Any]]] = {}
    out = _Out(path, compresslevel)
    records = 0

    def flush_before(limit: int) -> None:
        nonlocal records
        for w in sorted(k for k in windows if k < limit):
            groups = windows.pop(w)
            for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
                out.line(_ENCODE(_calico_record(groups[key], w, origin // 1_000_000, node_offset)))
                records += 1

    try:
        for c in connections:
            w0 = (c.start_us - origin) // win_us
            flush_before(w0)
            w1 = (c.end_us - origin) // win_us
            reports: list[tuple[str, str, str]] = []  # (reporter, host, action)
            if c.src.pod is not None:
                action = "deny" if c.verdict == "denied" and c.enforced_at == "egress" else "allow"
                reports.append(("src", c.src.pod.node, action))
            if c.dst.pod is not None and not (c.verdict == "denied" and c.enforced_at == "egress"):
                reports.append(("dst", c.dst.pod.node, "deny" if c.verdict == "denied"
                                else "allow"))
            s_type, s_ns, s_aggr, _, s_labels = _calico_peer(c.src)
            d_type, d_ns, d_aggr, _, d_labels = _calico_peer(c.dst)
            for reporter, host, action in reports:
                pol = (["0|" + _profile(c.src.pod.namespace)]  # type: ignore[union-attr]
                       if action == "allow" and c.verdict == "denied"
                       else _calico_policies(c, reporter))
                svc = c.service
                key: tuple[Any, ...] = (
                    host, reporter, action, s_type, s_ns, s_aggr, d_type, d_ns, d_aggr,
                    c.dst_port, c.protocol, svc.name if svc else "-",
                    svc.port_name if svc else "-", "|".join(pol))
                if aggregation < 2:
                    key += (c.src.ip, c.dst.ip)
                if aggregation < 1:
                    key += (c.src_port,)
                for w in (w0, w1) if w1 != w0 else (w0,):
                    g = windows.setdefault(w, {}).get(key)
                    if g is None:
                        g = windows[w][key] = {
                            "c": c, "host": host, "reporter": reporter, "action": action,
                            "s": (s_type, s_ns, s_aggr), "d": (d_type, d_ns, d_aggr),
                            "sl": set(s_labels) if s_labels is not None else None,
                            "dl": set(d_labels) if d_labels is not None else None,
                            "pol": pol, "level": aggregation,
                            "out_b": 0, "in_b": 0, "out_p": 0, "in_p": 0,
                            "flows": 0, "started": 0, "completed": 0,
                        }
                    else:
                        if g["sl"] is not None and s_labels is not None:
                            g["sl"] &= set(s_labels)
                        if g["dl"] is not None and d_labels is not None:
                            g["dl"] &= set(d_labels)
                    g["flows"] += 1
                    if w == w0:
                        g["started"] += 1
                        sent, recv = c.bytes_sent, c.bytes_received
                        ps, pr = c.packets_sent, c.packets_received
                        if action == "deny" and reporter == "dst":
                            recv, pr = 0, 0
                        if reporter == "src":
                            g["out_b"] += sent
                            g["in_b"] += recv
                            g["out_p"] += ps
                            g["in_p"] += pr
                        else:
                            g["in_b"] += sent
                            g["out_b"] += recv
                            g["in_p"] += ps
                            g["out_p"] += pr
                    if w == w1:
                        g["completed"] += 1
        flush_before(1 << 62)
    finally:
        out.close()
    return records


def _calico_record(g: dict[str, Any], window: int, origin_s: int, node_offset: dict[str, int]
                   ) -> dict[str, Any]:
    c: Connection = g["c"]
    s_type, s_ns, s_aggr = g["s"]
    d_type, d_ns, d_aggr = g["d"]
    # Felix flushes on each node's own timer: the same start, an end a few seconds apart.
    start = origin_s + window * _WINDOW_S
    end = start + _WINDOW_S + node_offset.get(g["host"], 0)
    svc = c.service

    def labels(ls: set[tuple[str, str]] | None) -> dict[str, list[str]] | None:
        if ls is None:
            return None
        return {"labels": [f"{k}={v}" for k, v in sorted(ls)]}

    pol = g["pol"]
    level = g["level"]
    s_ip = d_ip = s_port = None
    s_name = d_name = "-"
    if level < 2:
        s_ip, d_ip = c.src.ip, c.dst.ip
        s_name = c.src.pod.name if c.src.pod is not None else "-"
        d_name = c.dst.pod.name if c.dst.pod is not None else "-"
    if level < 1:
        s_port = c.src_port
    return {
        "start_time": start, "end_time": end,
        "source_ip": s_ip, "source_name": s_name, "source_name_aggr": s_aggr,
        "source_namespace": s_ns, "source_port": s_port, "source_type": s_type,
        "source_labels": labels(g["sl"]),
        "dest_ip": d_ip, "dest_name": d_name, "dest_name_aggr": d_aggr, "dest_namespace": d_ns,
        "dest_port": c.dst_port, "dest_type": d_type, "dest_labels": labels(g["dl"]),
        "dest_service_namespace": svc.namespace if svc else "-",
        "dest_service_name": svc.name if svc else "-",
        "dest_service_port": svc.port_name if svc else "-",
        "dest_domains": list(c.dst_dns_names) if c.dst_dns_names else None,
        "proto": c.protocol.lower(), "action": g["action"], "reporter": g["reporter"],
        "policies": {"all_policies": pol, "enforced_policies": pol, "pending_policies": pol},
        "bytes_in": g["in_b"], "bytes_out": g["out_b"],
        "num_flows": g["flows"], "num_flows_started": g["started"],
        "num_flows_completed": g["completed"],
        "packets_in": g["in_p"], "packets_out": g["out_p"],
        "http_requests_allowed_in": 0, "http_requests_denied_in": 0,
        "process_name": "-", "process_id": "-", "num_process_names": 0, "num_process_ids": 0,
        "original_source_ips": None, "num_original_source_ips": 0,
        "host": g["host"], "@timestamp": end * 1000,
    }


# --------------------------------------------------------------------------------------------
# Canonical Parquet / CSV
# --------------------------------------------------------------------------------------------

_ROW_GROUP: Final = 128 * 1024


_END_COLS: Final = ("kind", "namespace", "workload", "workload_kind", "pod", "labels", "ip",
                     "port", "name")


def _canonical_batches(connections: Iterable[Connection], source: str,
                       schema: pa.Schema = FLOW_SCHEMA, json_text: bool = False
                       ) -> Iterator[pa.RecordBatch]:
    """Canonical record batches of ``_ROW_GROUP`` rows, built column by column."""
    names = schema.names
    cols: dict[str, list[Any]] = {n: [] for n in names}
    count = 0

    def end(p: Peer, prefix: str, port: int) -> None:
        pod = p.pod
        cols[prefix + "kind"].append(p.kind)
        if pod is not None:
            cols[prefix + "namespace"].append(pod.namespace)
            cols[prefix + "workload"].append(pod.workload)
            cols[prefix + "workload_kind"].append(pod.workload_kind)
            cols[prefix + "pod"].append(pod.name)
            labels: Any = list(pod.labels)
            if json_text:
                labels = json.dumps(dict(pod.labels), sort_keys=True, separators=(",", ":"))
            cols[prefix + "labels"].append(labels)
            cols[prefix + "name"].append(None)
        else:
            for c in ("namespace", "workload", "workload_kind", "pod", "labels"):
                cols[prefix + c].append(None)
            cols[prefix + "name"].append(p.name)
        cols[prefix + "ip"].append(p.ip)
        cols[prefix + "port"].append(port)

    def flush() -> pa.RecordBatch:
        arrays = []
        for f in schema:
            values = cols[f.name]
            if f.name in ("start_time", "end_time"):
                arrays.append(pa.array(values, type=pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(values, type=f.type))
            cols[f.name] = []
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    nulls = ("icmp_type", "icmp_code", "reporter", "traffic_direction", "observation_point")
    for c in connections:
        cols["start_time"].append(c.start_us)
        cols["end_time"].append(c.end_us)
        end(c.src, "src_", c.src_port)
        end(c.dst, "dst_", c.dst_port)
        cols["protocol"].append(c.protocol)
        for n in nulls:
            cols[n].append(None)
        svc = c.service
        cols["dst_service_namespace"].append(svc.namespace if svc else None)
        cols["dst_service_name"].append(svc.name if svc else None)
        cols["dst_service_port"].append(svc.port_name if svc else None)
        dns_names: Any = list(c.dst_dns_names) if c.dst_dns_names else None
        if json_text and dns_names is not None:
            dns_names = json.dumps(dns_names)
        cols["dst_dns_names"].append(dns_names)
        cols["verdict"].append(c.verdict)
        denied = c.verdict == "denied"
        cols["drop_reason"].append("POLICY_DENIED" if denied else None)
        # The ground truth: a denied connection never established, an allowed one did.
        cols["outcome"].append("failed" if denied else "established")
        policies: Any = [c.policy] if denied and c.policy else None
        if json_text and policies is not None:
            policies = json.dumps(policies)
        cols["policies"].append(policies)
        cols["node"].append(c.src.node if c.src.kind == "workload" else c.dst.node)
        cols["is_reply"].append(False)
        cols["connections"].append(1)
        cols["packets"].append(c.packets_sent + c.packets_received)
        cols["bytes"].append(c.bytes_sent + c.bytes_received)
        h, d = c.http, c.dns
        cols["l7_protocol"].append("http" if h else "dns" if d else None)
        cols["http_method"].append(h.method if h else None)
        cols["http_path"].append(h.path if h else None)
        cols["http_code"].append(h.code if h else None)
        cols["dns_query"].append(d.query if d else None)
        cols["source_format"].append("synthetic")
        cols["source_file"].append(source)
        cols["source_row"].append(c.index)
        count += 1
        if count == _ROW_GROUP:
            yield flush()
            count = 0
    if count:
        yield flush()


def write_canonical_parquet(connections: Iterable[Connection], path: PathLike, *,
                            source: str = "recommender.samples") -> int:
    """Write ``connections`` in the canonical schema
    (:data:`~recommender.ingest.schema.FLOW_SCHEMA`).

    One row per connection, straight from the scenario (the readers are not involved), zstd
    compressed, row groups of 128k rows, the schema metadata kept. ``source`` fills
    ``source_file`` (``source_format`` is ``synthetic``; ``source_row`` is the connection index).

    Returns
    -------
    int
        The number of rows written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with pq.ParquetWriter(path, FLOW_SCHEMA, compression="zstd") as writer:
        for batch in _canonical_batches(connections, source):
            writer.write_batch(batch, row_group_size=_ROW_GROUP)
            n += batch.num_rows
        if n == 0:
            writer.write_table(FLOW_SCHEMA.empty_table())
    return n


def write_canonical_csv(connections: Iterable[Connection], path: PathLike, *,
                        source: str = "recommender.samples") -> int:
    """Write ``connections`` as canonical CSV: labels as JSON objects, lists as JSON arrays.

    Gzip-compressed (deterministically) when ``path`` ends ``.gz``. Returns the row count.
    """
    out = _Out(path)
    n = 0
    text_cols = {f.name for f in FLOW_SCHEMA if pa.types.is_map(f.type) or pa.types.is_list(f.type)}
    schema = pa.schema([pa.field(f.name, pa.string()) if f.name in text_cols else f
                        for f in FLOW_SCHEMA])
    try:
        header = True
        for batch in _canonical_batches(connections, source, schema, json_text=True):
            buf = io.BytesIO()
            pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=header))
            header = False
            out.fh.write(buf.getvalue())
            n += batch.num_rows
    finally:
        out.close()
    return n
