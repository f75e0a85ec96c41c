"""Canonical flow rows in bulk: the sample scenario's traffic drawn with NumPy, for 100M rows.

:func:`recommender.samples.generator.generate_connections` makes one Python object per connection
(about 37 s per million rows on the benchmark machine), which is right for the Hubble and Calico
writers but too slow for a 100M-row Parquet input. This module draws the same cluster's traffic
straight into canonical record batches (:data:`~recommender.ingest.schema.FLOW_SCHEMA`), vectorised:

- the cluster, its pods (with their rollout), Services, edges and their weights are the
  scenario's own (:func:`~recommender.samples.generator.scaled_scenario` and the generator's
  internals), so the namespaces, workloads, labels, DNS to CoreDNS, internet clients, the external
  API, kubelet probes and Prometheus scrapes are those of
  :func:`~recommender.samples.generator.generate_connections`;
- every possible (source peer, destination peer, port) of an edge is a *route* with the
  probability the scalar generator gives it; each row draws its route, its ephemeral source port,
  sizes, duration and L7 detail from one :class:`numpy.random.Generator`;
- a share of rows are the replies of a route (server to client, to the client's ephemeral
  port): ``reply_fraction`` flagged ``is_reply = true``, ``unflagged_reply_fraction`` with
  ``is_reply`` null (what a reader without a direction field gives). The pipeline must turn
  neither into a rule;
- the scheduled connections (the rare admin job, the denied ``frontend -> ledger-db`` attempts
  and the denied ``debug-shell`` port scan) are made by the scalar generator and merged in time
  order, so denied flows are exactly those of the scenario.

Rows are in time order over the scaled span (several hours: one time slot per background row),
``source_row`` counts from 1. The same arguments give the same batches, hence the same Parquet
bytes (with the same pyarrow). Memory holds the route tables and one batch, whatever the row
count.

>>> batches = list(bulk_flow_batches(1000, seed=1))
>>> sum(b.num_rows for b in batches), batches[0].schema.equals(FLOW_SCHEMA)
(1000, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..ingest.schema import FLOW_SCHEMA
from .generator import (
    _DNS_TARGETS,
    _ROW_GROUP,
    DEFAULT_SCENARIO,
    Peer,
    Pod,
    Scenario,
    _canonical_batches,
    _EdgeInst,
    _Generator,
    scaled_scenario,
)

__all__ = ["bulk_flow_batches", "write_bulk_parquet"]

PathLike = str | os.PathLike[str]

#: Rows per batch (and Parquet row group), as
# :func:`~recommender.samples.generator.write_canonical_parquet`.
BATCH_ROWS: Final = _ROW_GROUP

_EPHEMERAL_LO: Final = 32768
_EPHEMERAL_HI: Final = 61000  # Linux's default ip_local_port_range end, exclusive
_ENDPOINT: Final = ("kind", "namespace", "workload", "workload_kind", "pod", "labels", "ip",
                    "name")  # fmt: skip
_LABELS: Final = FLOW_SCHEMA.field("src_labels").type


@dataclass
class _Routes:
    """Every route of one pod generation: forward rows ``[0, m)``, reversed rows ``[m, 2m)``."""

    table: pa.Table  # endpoint, service, DNS-name and node columns, 2m rows
    cum: np.ndarray  # cumulative probability of the m forward routes
    port: np.ndarray  # the server port
    tcp: np.ndarray
    req: np.ndarray  # (m, 2) lo, hi
    resp: np.ndarray
    dur_ms: np.ndarray
    l7: np.ndarray  # 0 none, 1 http, 2 dns
    l7_fraction: np.ndarray
    opt_off: np.ndarray  # offsets into the L7 option arrays
    opt_n: np.ndarray


class _Options:
    """The L7 choices routes draw from: HTTP (method, path) and DNS (query, miss query)."""

    def __init__(self) -> None:
        self.a: list[str] = []
        self.b: list[str] = []
        self.index: dict[tuple[tuple[str, str], ...], tuple[int, int]] = {}

    def add(self, pairs: tuple[tuple[str, str], ...]) -> tuple[int, int]:
        got = self.index.get(pairs)
        if got is None:
            got = self.index[pairs] = (len(self.a), len(pairs))
            for x, y in pairs:
                self.a.append(x)
                self.b.append(y)
        return got


def _dns_options(gen: _Generator, pod: Pod) -> tuple[tuple[str, str], ...]:
    """(query, search-path miss) per name ``pod`` looks up, as the scalar generator's DNS."""
    targets = _DNS_TARGETS.get(pod.workload, ()) or ("kubernetes.default",)
    ns = pod.namespace
    out = []
    for target in targets:
        if target == "@external":
            name = f"{gen.sc.external_name}."
            out.append((name, name))
            continue
        svc_ns = target.split(".")[1] if "." in target else ns
        svc = target.split(".")[0]
        out.append((f"{svc}.{svc_ns}.svc.cluster.local.", f"{target}.{ns}.svc.cluster.local."))
    return tuple(out)


def _routes(gen: _Generator, generation: int, http: _Options, dns: _Options) -> _Routes:
    sc, cl = gen.sc, gen.cl
    weights = np.diff(np.asarray([0.0, *gen.cum]))
    cols: dict[str, list[Any]] = {f"{s}_{c}": [] for s in ("src", "dst") for c in _ENDPOINT}
    for c in ("dst_service_namespace", "dst_service_name", "dst_service_port", "dst_dns_names",
              "node"):
        cols[c] = []
    num: dict[str, list[Any]] = {k: [] for k in ("p", "port", "tcp", "req", "resp", "dur", "l7",
                                                  "l7f", "off", "n")}  # fmt: skip

    def pods(ref: str) -> tuple[Pod, ...]:
        return cl.pods[ref][generation]

    def dst_peers(ref: str) -> list[Peer]:
        if ref == "external":
            return [Peer("external", sc.external_ip, name="world")]
        if ref == "kube-apiserver":
            node = cl.node_by_ip.get(sc.apiserver_ip)
            return [Peer("cluster-entity", sc.apiserver_ip, name="kube-apiserver",
                         node=node.name if node else None)]
        return [gen._pod_peer(p) for p in pods(ref)]

    def src_peers(ref: str, dst: Peer) -> list[Peer]:
        if ref == "world":
            return [Peer("external", ip, name="world") for ip in sc.internet_clients]
        if ref == "host":
            assert dst.node is not None
            return [Peer("host", cl.node_ip[dst.node], name="host", node=dst.node)]
        return [gen._pod_peer(p) for p in pods(ref)]

    def endpoint(prefix: str, p: Peer) -> None:
        pod = p.pod
        cols[prefix + "kind"].append(p.kind)
        cols[prefix + "ip"].append(p.ip)
        if pod is None:
            for c in ("namespace", "workload", "workload_kind", "pod", "labels"):
                cols[prefix + c].append(None)
            cols[prefix + "name"].append(p.name)
        else:
            cols[prefix + "namespace"].append(pod.namespace)
            cols[prefix + "workload"].append(pod.workload)
            cols[prefix + "workload_kind"].append(pod.workload_kind)
            cols[prefix + "pod"].append(pod.name)
            cols[prefix + "labels"].append(list(pod.labels))
            cols[prefix + "name"].append(None)

    inst: _EdgeInst
    for inst, weight in zip(gen.insts, weights, strict=True):
        e = inst.spec
        for dref in inst.dsts:
            dsts = dst_peers(dref)
            for dst in dsts:
                dport, svc = gen._dst_port(e, dst)
                if dst.kind == "cluster-entity":
                    dport = sc.apiserver_port
                for sref in inst.srcs:
                    srcs = src_peers(sref, dst)
                    for src in srcs:
                        num["p"].append(weight / (len(inst.dsts) * len(dsts) * len(inst.srcs)
                                                  * len(srcs)))
                        endpoint("src_", src)
                        endpoint("dst_", dst)
                        cols["dst_service_namespace"].append(svc.namespace if svc else None)
                        cols["dst_service_name"].append(svc.name if svc else None)
                        cols["dst_service_port"].append(svc.port_name if svc else None)
                        cols["dst_dns_names"].append(
                            [sc.external_name] if dst.kind == "external" else None)
                        cols["node"].append(src.node if src.kind == "workload" else dst.node)
                        num["port"].append(dport)
                        num["tcp"].append(e.protocol == "TCP")
                        num["req"].append(e.request_bytes)
                        num["resp"].append(e.response_bytes)
                        num["dur"].append(e.duration_ms)
                        off, n, kind = 0, 0, 0
                        if e.l7 == "http" and dst.pod is not None and e.http:
                            (off, n), kind = http.add(e.http), 1
                        elif e.l7 == "dns" and src.pod is not None:
                            (off, n), kind = dns.add(_dns_options(gen, src.pod)), 2
                        num["l7"].append(kind)
                        num["l7f"].append(e.l7_fraction if kind else 0.0)
                        num["off"].append(off)
                        num["n"].append(n)
    m = len(num["p"])
    # The reversed routes (replies): the two endpoints swapped; no Service, no DNS name.
    for c in _ENDPOINT:
        s, d = cols[f"src_{c}"], cols[f"dst_{c}"]
        cols[f"src_{c}"], cols[f"dst_{c}"] = s + d, d + s
    for c in ("dst_service_namespace", "dst_service_name", "dst_service_port", "dst_dns_names"):
        cols[c] = cols[c] + [None] * m
    cols["node"] = cols["node"] * 2
    table = pa.table({name: pa.array(values, FLOW_SCHEMA.field(name).type)
                      for name, values in cols.items()})
    p = np.asarray(num["p"], dtype=np.float64)
    return _Routes(
        table=table, cum=np.cumsum(p / p.sum()),
        port=np.asarray(num["port"], dtype=np.int32), tcp=np.asarray(num["tcp"], dtype=bool),
        req=np.asarray(num["req"], dtype=np.float64), resp=np.asarray(num["resp"], np.float64),
        dur_ms=np.asarray(num["dur"], dtype=np.float64), l7=np.asarray(num["l7"], np.int8),
        l7_fraction=np.asarray(num["l7f"], dtype=np.float64),
        opt_off=np.asarray(num["off"], dtype=np.int64), opt_n=np.asarray(num["n"], np.int64),
    )


def _const(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    return pa.array([value], type_).take(np.zeros(n, dtype=np.int64))


def _pick(values: list[str], index: np.ndarray, mask: np.ndarray) -> pa.Array:
    """``values[index]`` where ``mask``, else null."""
    idx = pa.array(np.where(mask, index, 0), mask=~mask)
    return pa.array(values or [""], pa.string()).take(idx)


class _Background:
    """Draws the background rows of consecutive time slots."""

    def __init__(self, gen: _Generator, rng: np.random.Generator, source: str) -> None:
        self.http, self.dns = _Options(), _Options()
        self.gens = (_routes(gen, 0, self.http, self.dns), _routes(gen, 1, self.http, self.dns))
        self.http_post = np.asarray([m == "POST" for m in self.http.a] or [False])
        self.rng = rng
        self.rollout_us = gen.sc.rollout_us
        self.source = source

    def rows(self, t: np.ndarray, reply_fraction: float, unflagged: float) -> pa.Table:
        rng = self.rng
        n = len(t)
        later = t >= self.rollout_us
        route = np.empty(n, dtype=np.int64)
        u = rng.random(n)
        for g, mask in ((0, ~later), (1, later)):
            r = self.gens[g]
            route[mask] = np.minimum(np.searchsorted(r.cum, u[mask], side="right"), len(r.cum) - 1)
        v = rng.random(n)
        reply = v < reply_fraction + unflagged
        eph = rng.integers(_EPHEMERAL_LO, _EPHEMERAL_HI, size=n, dtype=np.int32)
        u_req, u_resp, u_dur, u_l7, u_opt, u_code = (rng.random(n) for _ in range(6))
        out: dict[str, Any] = {}
        parts = []
        # Build the rows of each generation separately (their route tables differ), then
        # interleave them back into time order: generation 0 rows all come before generation 1.
        for g, mask in ((0, ~later), (1, later)):
            if not mask.any():
                continue
            r = self.gens[g]
            m = len(r.cum)
            rt = route[mask]
            rep = reply[mask]
            table = r.table.take(pa.array(rt + m * rep))
            port = r.port[rt]
            e = eph[mask]
            tcp = r.tcp[rt]
            req = (r.req[rt, 0] + (r.req[rt, 1] - r.req[rt, 0]) * u_req[mask] ** 2).astype(np.int64)
            resp = (r.resp[rt, 0] + (r.resp[rt, 1] - r.resp[rt, 0]) * u_resp[mask] ** 2
                    ).astype(np.int64)
            dur = ((r.dur_ms[rt, 0] + (r.dur_ms[rt, 1] - r.dur_ms[rt, 0]) * u_dur[mask] ** 3)
                   * 1000).astype(np.int64)
            p_out = np.where(tcp, 3 + -(-req // 1400), 1)
            p_in = np.where(tcp, 2 + -(-resp // 1400), 1)
            b_out = req + np.where(tcp, 52, 28) * p_out
            b_in = resp + np.where(tcp, 52, 28) * p_in
            l7 = np.where(~rep & (u_l7[mask] < r.l7_fraction[rt]), r.l7[rt], 0)
            opt = r.opt_off[rt] + (u_opt[mask] * r.opt_n[rt]).astype(np.int64)
            is_http, is_dns = l7 == 1, l7 == 2
            method = _pick(self.http.a, opt, is_http)
            code = np.where(u_code[mask] < 0.97, 200, 503)
            post = is_http & self.http_post[np.where(is_http, opt, 0)]
            code = np.where(post & (code == 200), 201, code)
            miss = u_code[mask] < 0.15
            query = _pick(self.dns.a, opt, is_dns & ~miss)
            query_miss = _pick(self.dns.b, opt, is_dns & miss)
            tm = t[mask]
            cols = {name: table.column(name) for name in table.column_names}
            cols.update({
                "start_time": pa.array(tm, pa.int64()),
                "end_time": pa.array(tm + np.where(rep, dur // 2, dur), pa.int64()),
                "src_port": pa.array(np.where(rep, port, e), pa.int32()),
                "dst_port": pa.array(np.where(rep, e, port), pa.int32()),
                "protocol": pa.array(["UDP", "TCP"], pa.string()).take(pa.array(tcp.astype(
                    np.int8))),
                "is_reply": pa.array(rep & (v[mask] < reply_fraction),
                                     mask=rep & (v[mask] >= reply_fraction)),
                "packets": pa.array(np.where(rep, p_in, p_out + p_in)),
                "bytes": pa.array(np.where(rep, b_in, b_out + b_in)),
                "l7_protocol": _pick(["http", "dns"], l7 - 1, l7 > 0),
                "http_method": method,
                "http_path": _pick(self.http.b, opt, is_http),
                "http_code": pa.array(code.astype(np.int32), mask=~is_http),
                "dns_query": pc.coalesce(query, query_miss),
            })
            parts.append(cols)
        for name in FLOW_SCHEMA.names:
            f = FLOW_SCHEMA.field(name)
            chunks = [p[name] for p in parts if name in p]
            if name in ("start_time", "end_time"):
                out[name] = pa.concat_arrays(chunks).cast(f.type)
            elif chunks:
                out[name] = pa.concat_arrays([_combine(c).cast(f.type) for c in chunks])
            elif name == "verdict":
                out[name] = _const("allowed", f.type, n)
            elif name == "outcome":  # background traffic is allowed and answered
                out[name] = _const("established", f.type, n)
            elif name == "connections":
                out[name] = _const(1, f.type, n)
            elif name == "source_format":
                out[name] = _const("synthetic", f.type, n)
            elif name == "source_file":
                out[name] = _const(self.source, f.type, n)
            elif name == "source_row":
                out[name] = pa.array(np.zeros(n, dtype=np.int64))  # set after the merge
            else:
                out[name] = pa.nulls(n, f.type)
        return pa.table(out, schema=FLOW_SCHEMA)


def _combine(a: Any) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def bulk_flow_batches(
    connections: int,
    *,
    scenario: Scenario | None = None,
    seed: int = 0,
    reply_fraction: float = 0.0008,
    unflagged_reply_fraction: float = 0.0002,
    batch_rows: int = BATCH_ROWS,
    source: str = "recommender.bulk_samples",
) -> Iterator[pa.RecordBatch]:
    """Canonical record batches of ``connections`` rows of ``scenario``'s traffic, vectorised.

    Parameters
    ----------
    connections
        Rows to produce, exactly. Large numbers stretch the time span and add tenant copies,
        as :func:`~recommender.samples.generator.scaled_scenario` does.
    scenario
        The cluster and its traffic; :data:`~recommender.samples.generator.DEFAULT_SCENARIO` when
        None.
    seed
        Seeds every random draw; the same arguments give the same batches.
    reply_fraction, unflagged_reply_fraction
        Shares of background rows that are replies (server to client ephemeral port), with
        ``is_reply`` true and null respectively.
    batch_rows
        Background rows per batch (a batch also holds the scheduled rows of its time range).
    source
        The ``source_file`` value (``source_format`` is ``synthetic``).

    Yields
    ------
    pyarrow.RecordBatch
        :data:`~recommender.ingest.schema.FLOW_SCHEMA` batches in time order; ``source_row`` counts
        from 1.
    """
    n = int(connections)
    if n <= 0:
        return
    sc = scaled_scenario(scenario or DEFAULT_SCENARIO, n)
    gen = _Generator(sc, seed)
    # The scheduled rows (rare admin job, denied attempts and scan) from the scalar generator.
    sched_items = gen.scheduled()[:n]
    conns = []
    for at, _, _, what in sched_items:
        inst, s, target, port = what
        if target is None:
            conns.append(gen._make(0, at, inst, gen.rng, sched=s))
        else:
            conns.append(gen._make(0, at, inst, gen.rng, dst_pod=target, port=port, sched=s))
    sched = pa.Table.from_batches(list(_canonical_batches(conns, source)), schema=FLOW_SCHEMA)
    sched_t = np.asarray([at for at, *_ in sched_items], dtype=np.int64)
    nb = n - len(sched_items)
    rng = np.random.default_rng(seed)
    background = _Background(gen, rng, source)
    step = sc.span_us / nb if nb > 0 else 0.0
    start = sc.start_us
    index = 1
    taken = 0
    i0 = 0
    while i0 < nb or taken < len(sched_t):
        i1 = min(i0 + batch_rows, nb)
        slots = np.arange(i0, i1, dtype=np.float64)
        t = start + ((slots + rng.random(len(slots))) * step).astype(np.int64)
        upto = len(sched_t) if i1 >= nb else int(np.searchsorted(
            sched_t, start + int(i1 * step), side="left"))
        parts = []
        if len(t):
            parts.append(background.rows(t, reply_fraction, unflagged_reply_fraction))
        if upto > taken:
            parts.append(sched.slice(taken, upto - taken))
        table = pa.concat_tables(parts)
        times = np.concatenate([t, sched_t[taken:upto]])
        order = np.argsort(times, kind="stable")  # background first on equal times
        table = table.take(pa.array(order))
        rows = table.num_rows
        table = table.set_column(FLOW_SCHEMA.get_field_index("source_row"),
                                 FLOW_SCHEMA.field("source_row"),
                                 pa.array(np.arange(index, index + rows, dtype=np.int64)))
        index += rows
        taken = upto
        i0 = i1
        yield from table.combine_chunks().to_batches(max_chunksize=rows)
        if i1 >= nb and taken >= len(sched_t):
            break


def write_bulk_parquet(path: PathLike, connections: int, *, scenario: Scenario | None = None,
                       seed: int = 0, source: str = "recommender.bulk_samples",
                       **options: Any) -> int:
    """Write :func:`bulk_flow_batches` to a canonical Parquet file, streaming.

    zstd compressed, one row group per batch, the schema metadata kept, like
    :func:`~recommender.samples.generator.write_canonical_parquet`; ``options`` go to
    :func:`bulk_flow_batches`. Memory holds one batch. Returns the number of rows written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with pq.ParquetWriter(path, FLOW_SCHEMA, compression="zstd") as writer:
        for batch in bulk_flow_batches(connections, scenario=scenario, seed=seed, source=source,
                                       **options):
            writer.write_batch(batch, row_group_size=max(batch.num_rows, 1))
            n += batch.num_rows
        if n == 0:
            writer.write_table(FLOW_SCHEMA.empty_table())
    return n
