"""Address classes of IP addresses, and CIDR merging that never crosses a class.

Every remote address a policy names falls in one *address class*, taken from the IETF/IANA
special-purpose address registries (RFC 6890 and its updates, the IANA IPv4 and IPv6
Special-Purpose Address Registries, the IPv4 multicast registry of RFC 5771 and the IANA IPv6
Address Space registry), plus one class that no RFC defines but every cloud has:
``cloud-metadata`` (169.254.169.254 and fd00:ec2::254, the instance metadata services).

The classes are stable string keys (:data:`ADDRESS_CLASSES`); :func:`address_class_table` lists
the ranges behind them with their RFCs, and ``docs/address-classes.md`` shows the same table.
Where registry entries nest (169.254.169.254/32 inside 169.254.0.0/16, 2001::/32 inside
2001::/23), the most specific entry wins. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) has
the class of the IPv4 address it embeds. Everything in no entry is ``public``.

:func:`merge_cidrs` turns a set of addresses of one class and one IP version into CIDR blocks,
optionally wider than the observed addresses by at most ``budget`` addresses in total, and never
into a block that reaches into a second class: a /8 that would cover both 172.15.255.255 and
172.16.0.0 would turn "this public host" into "this public host and a private network".
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from recommender.errors import InputError

__all__ = [
    "ADDRESS_CLASSES",
    "HOST_LOCAL_CLASSES",
    "PRIVATE_LIKE_CLASSES",
    "address_class_table",
    "carve_block",
    "classify_address",
    "classify_network",
    "is_host_local",
    "is_private_like",
    "is_public",
    "is_sensitive",
    "may_merge",
    "merge_cidrs",
    "merge_cidrs_by_class",
    "public_universe",
    "special_purpose_blocks",
]

# ---------------------------------------------------------------------------------------------
# The registry. One row per registry entry: (class, cidr, rfc, description). Order is the order
# of the table in reports and docs: IPv4 by address, then IPv6 by address.
# ---------------------------------------------------------------------------------------------

_REGISTRY: Final[tuple[tuple[str, str, str, str], ...]] = (
    # IPv4
    ("this-network", "0.0.0.0/8", "RFC 791, RFC 1122", '"This network"; never a destination'),
    ("unspecified", "0.0.0.0/32", "RFC 1122", '"This host on this network"; the any-address'),
    ("private", "10.0.0.0/8", "RFC 1918", "Private-Use"),
    ("shared", "100.64.0.0/10", "RFC 6598", "Shared Address Space (carrier-grade NAT)"),
    ("loopback", "127.0.0.0/8", "RFC 1122", "Loopback"),
    ("link-local", "169.254.0.0/16", "RFC 3927", "Link-Local"),
    (
        "cloud-metadata",
        "169.254.169.254/32",
        "none (de-facto)",
        "Instance metadata service of AWS, GCP, Azure, OpenStack and others (credentials!)",
    ),
    ("private", "172.16.0.0/12", "RFC 1918", "Private-Use"),
    (
        "ietf-protocol",
        "192.0.0.0/24",
        "RFC 6890",
        "IETF Protocol Assignments (incl. 192.0.0.0/29 RFC 7335, 192.0.0.8 RFC 7600, "
        "PCP/TURN anycast 192.0.0.9-10 RFC 7723/8155, 192.0.0.170-171 RFC 7050/8880)",
    ),
    ("documentation", "192.0.2.0/24", "RFC 5737", "Documentation (TEST-NET-1)"),
    ("6to4", "192.88.99.0/24", "RFC 7526", "Deprecated 6to4 Relay Anycast (RFC 3068)"),
    ("private", "192.168.0.0/16", "RFC 1918", "Private-Use"),
    ("benchmarking", "198.18.0.0/15", "RFC 2544", "Benchmarking"),
    ("documentation", "198.51.100.0/24", "RFC 5737", "Documentation (TEST-NET-2)"),
    ("documentation", "203.0.113.0/24", "RFC 5737", "Documentation (TEST-NET-3)"),
    ("multicast", "224.0.0.0/4", "RFC 5771", "Multicast"),
    ("reserved", "240.0.0.0/4", "RFC 1112", "Reserved for future use (former class E)"),
    ("broadcast", "255.255.255.255/32", "RFC 919, RFC 8190", "Limited Broadcast"),
    # IPv6
    (
        "reserved",
        "::/8",
        "RFC 4291",
        "Reserved by the IETF (incl. deprecated IPv4-compatible ::/96)",
    ),
    ("unspecified", "::/128", "RFC 4291", "Unspecified address"),
    ("loopback", "::1/128", "RFC 4291", "Loopback"),
    (
        "ipv4-mapped",
        "::ffff:0:0/96",
        "RFC 4291",
        "IPv4-mapped addresses; classify_address returns the class of the embedded IPv4 address",
    ),
    ("nat64", "64:ff9b::/96", "RFC 6052", "IPv4-IPv6 translation, well-known prefix"),
    ("nat64", "64:ff9b:1::/48", "RFC 8215", "IPv4-IPv6 translation, local-use prefix"),
    ("reserved", "100::/8", "RFC 4291", "Reserved by the IETF"),
    ("discard", "100::/64", "RFC 6666", "Discard-Only (remote-triggered black hole)"),
    ("reserved", "200::/7", "RFC 4048", "Reserved by the IETF (formerly NSAP)"),
    ("reserved", "400::/6", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "800::/5", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "1000::/4", "RFC 4291", "Reserved by the IETF"),
    (
        "ietf-protocol",
        "2001::/23",
        "RFC 2928",
        "IETF Protocol Assignments (incl. PCP/TURN anycast, AMT, AS112-v6, ORCHIDv2, DETs)",
    ),
    ("teredo", "2001::/32", "RFC 4380, RFC 8190", "Teredo tunnelling"),
    ("benchmarking", "2001:2::/48", "RFC 5180", "Benchmarking"),
    ("documentation", "2001:db8::/32", "RFC 3849", "Documentation"),
    ("6to4", "2002::/16", "RFC 3056", "6to4 tunnelling"),
    ("documentation", "3fff::/20", "RFC 9637", "Documentation"),
    ("reserved", "4000::/3", "RFC 4291", "Reserved by the IETF"),
    ("segment-routing", "5f00::/16", "RFC 9602", "Segment Routing (SRv6) SIDs"),
    ("reserved", "6000::/3", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "8000::/3", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "a000::/3", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "c000::/3", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "e000::/4", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "f000::/5", "RFC 4291", "Reserved by the IETF"),
    ("reserved", "f800::/6", "RFC 4291", "Reserved by the IETF"),
    ("unique-local", "fc00::/7", "RFC 4193, RFC 8190", "Unique-Local"),
    (
        "cloud-metadata",
        "fd00:ec2::254/128",
        "none (de-facto)",
        "AWS instance metadata service over IPv6 (credentials!)",
    ),
    ("reserved", "fe00::/9", "RFC 4291", "Reserved by the IETF"),
    ("link-local", "fe80::/10", "RFC 4291", "Link-Local Unicast"),
    ("reserved", "fec0::/10", "RFC 3879", "Reserved by the IETF (deprecated site-local)"),
    ("multicast", "ff00::/8", "RFC 4291", "Multicast"),
)

#: Every class key :func:`classify_address` can return, plus ``ipv4-mapped`` (a registry row
#: only: such addresses take the class of the IPv4 address they embed).
ADDRESS_CLASSES: Final[tuple[str, ...]] = (
    "public",
    "private",
    "shared",
    "unique-local",
    "loopback",
    "link-local",
    "cloud-metadata",
    "unspecified",
    "this-network",
    "multicast",
    "broadcast",
    "documentation",
    "benchmarking",
    "reserved",
    "ietf-protocol",
    "discard",
    "segment-routing",
    "nat64",
    "6to4",
    "teredo",
    "ipv4-mapped",
)

#: Classes routable only inside an organisation or a provider's network.
PRIVATE_LIKE_CLASSES: Final[frozenset[str]] = frozenset({"private", "shared", "unique-local"})

#: Classes whose traffic never leaves the node (or its link): the loopback, link-local (this
#: includes node-local DNS caches on 169.254.x.x), the metadata service, and the any-address.
HOST_LOCAL_CLASSES: Final[frozenset[str]] = frozenset(
    {"loopback", "link-local", "cloud-metadata", "unspecified", "this-network"}
)

_MAPPED_BASE: Final = 0xFFFF << 32  # ::ffff:0.0.0.0 as an integer


# ---------------------------------------------------------------------------------------------
# Flattening the nested registry into sorted, disjoint segments per IP version.
# ---------------------------------------------------------------------------------------------


def _flatten(version: int) -> list[tuple[int, str]]:
    """Disjoint segments ``(start, class)`` covering the whole address space, coalesced.

    Each segment runs up to the next one's start; neighbouring segments always have different
    classes, so a block lies in one class exactly when its first and last address lie in the
    same segment.
    """
    bits = 32 if version == 4 else 128
    entries: list[tuple[int, int, int, str]] = []  # (first, last, prefixlen, class)
    for cls, cidr, _rfc, _desc in _REGISTRY:
        net = ipaddress.ip_network(cidr)
        if net.version == version:
            first = int(net.network_address)
            entries.append((first, first + net.num_addresses - 1, net.prefixlen, cls))
    cuts = {0}
    for first, last, _plen, _cls in entries:
        cuts.add(first)
        if last + 1 < 1 << bits:
            cuts.add(last + 1)
    raw: list[tuple[int, str]] = []
    for start in sorted(cuts):
        best_len, best_cls = -1, "public"
        for first, last, plen, cls in entries:
            if first <= start <= last and plen > best_len:
                best_len, best_cls = plen, cls
        if best_cls == "ipv4-mapped":
            raw.extend((_MAPPED_BASE + s, c) for s, c in _flatten(4))
        else:
            raw.append((start, best_cls))
    segments: list[tuple[int, str]] = []
    for start, cls in raw:
        if not segments or segments[-1][1] != cls:
            segments.append((start, cls))
    return segments


def _build_tables() -> dict[int, tuple[list[int], list[str]]]:
    tables = {}
    for version in (4, 6):
        segments = _flatten(version)
        tables[version] = ([s for s, _ in segments], [c for _, c in segments])
    return tables


_SEGMENTS: Final = _build_tables()


def _segment_index(version: int, value: int) -> int:
    return bisect.bisect_right(_SEGMENTS[version][0], value) - 1


def _segment_class(version: int, index: int) -> str:
    return _SEGMENTS[version][1][index]


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _parse_int(text: str) -> tuple[int, int]:
    """``(version, integer)`` of an address; ValueError when it is none.

    ``socket.inet_pton`` is the fast path (it is strict: no leading zeros, no zone index);
    whatever it refuses goes through :func:`ipaddress.ip_address`, which decides.
    """
    try:
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        addr = ipaddress.ip_address(text)  # an IPv6 zone index is dropped by int()
        return addr.version, int(addr)


@lru_cache(maxsize=65536)
def _classify_cached(ip: str) -> str:
    try:
        version, value = _parse_int(ip)
    except ValueError:
        hint = " (a network? use classify_network)" if "/" in ip else ""
        raise InputError(f"{ip!r} is not an IPv4 or IPv6 address{hint}.") from None
    return _segment_class(version, _segment_index(version, value))


def classify_address(ip: str) -> str:
    """The address class of one IPv4 or IPv6 address.

    Parameters
    ----------
    ip
        An address in any textual form :func:`ipaddress.ip_address` accepts (an IPv6 zone
        index such as ``fe80::1%eth0`` is allowed and ignored).

    Returns
    -------
    str
        One of :data:`ADDRESS_CLASSES` other than ``ipv4-mapped``: an IPv4-mapped IPv6 address
        takes the class of the IPv4 address it embeds (``::ffff:10.0.0.1`` is ``private``).
        ``public`` when no registry entry covers the address.

    Raises
    ------
    InputError
        When ``ip`` is not a string holding an IP address.

    Notes
    -----
    Results are cached per distinct string (``functools.lru_cache``), so classifying every
    flow's remote address costs one dictionary lookup per repeated address.
    """
    if not isinstance(ip, str):
        raise InputError(f"{ip!r} is not an IP address string.")
    return _classify_cached(ip)


# A block is (version, first, last) with integer addresses: ipaddress objects are too slow to
# build by the hundred thousand.
_Block = tuple[int, int, int]


@lru_cache(maxsize=65536)
def _parse_block_cached(text: str) -> _Block:
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=True)
            first = int(net.network_address)
            return net.version, first, first + net.num_addresses - 1
        version, value = _parse_int(text)
    except ValueError as exc:
        raise InputError(f"{text!r} is not an IP address or CIDR block: {exc}.") from None
    return version, value, value


def _parse_block(text: str) -> _Block:
    if not isinstance(text, str):
        raise InputError(f"{text!r} is not an IP address or CIDR string.")
    return _parse_block_cached(text)


def _block_class(version: int, first: int, last: int) -> str | None:
    index = _segment_index(version, first)
    if _segment_index(version, last) != index:
        return None
    return _segment_class(version, index)


def _format_block(version: int, first: int, size: int) -> str:
    if version == 4:
        return (
            f"{socket.inet_ntop(socket.AF_INET, first.to_bytes(4, 'big'))}/{33 - size.bit_length()}"
        )
    # ipaddress, not inet_ntop: the same spelling as the rest of the tool (::ffff:a00:1).
    return f"{ipaddress.IPv6Address(first)}/{129 - size.bit_length()}"


def classify_network(cidr: str) -> str | None:
    """The address class of a whole CIDR block, or None when it spans several classes.

    Parameters
    ----------
    cidr
        A block such as ``"10.1.0.0/16"``; a bare address counts as a /32 or /128. Host bits
        must be zero.

    Returns
    -------
    str or None
        The class every address of the block has; None when the block reaches into two or
        more classes (``"172.0.0.0/8"`` is public and private).

    Raises
    ------
    InputError
        When ``cidr`` is not an address or a CIDR block, or has host bits set.
    """
    return _block_class(*_parse_block(cidr))


def address_class_table() -> list[dict[str, str]]:
    """The registry behind :func:`classify_address`, for reports and docs.

    Returns
    -------
    list of dict
        One dict per registry entry with keys ``class``, ``cidr``, ``rfc`` and
        ``description``; IPv4 entries first, each version in address order. Entries nest (the
        most specific one wins); addresses in no entry are ``public``.
    """
    return [
        {"class": cls, "cidr": cidr, "rfc": rfc, "description": desc}
        for cls, cidr, rfc, desc in _REGISTRY
    ]


# ---------------------------------------------------------------------------------------------
# Predicates for policy synthesis
# ---------------------------------------------------------------------------------------------


def _check_class(cls: str) -> str:
    if cls not in ADDRESS_CLASSES:
        known = ", ".join(ADDRESS_CLASSES)
        raise InputError(f"{cls!r} is not an address class; known classes: {known}.")
    return cls


def is_private_like(cls: str) -> bool:
    """True for classes routed only inside an organisation.

    These are ``private`` (RFC 1918), ``shared`` (RFC 6598) and ``unique-local`` (RFC 4193).

    Raises
    ------
    InputError
        When ``cls`` is not one of :data:`ADDRESS_CLASSES`.
    """
    return _check_class(cls) in PRIVATE_LIKE_CLASSES


def is_public(cls: str) -> bool:
    """True for ``public``, the globally routed unicast addresses of no special registry entry.

    Raises
    ------
    InputError
        When ``cls`` is not one of :data:`ADDRESS_CLASSES`.
    """
    return _check_class(cls) == "public"


def is_host_local(cls: str) -> bool:
    """True for classes whose traffic stays on the node or its link (see HOST_LOCAL_CLASSES).

    Raises
    ------
    InputError
        When ``cls`` is not one of :data:`ADDRESS_CLASSES`.
    """
    return _check_class(cls) in HOST_LOCAL_CLASSES


def is_sensitive(cls: str) -> bool:
    """True for ``cloud-metadata``: allowing it hands out the node's cloud credentials.

    Synthesis should name such an address on its own and flag it for review, never fold it
    into a wider block.

    Raises
    ------
    InputError
        When ``cls`` is not one of :data:`ADDRESS_CLASSES`.
    """
    return _check_class(cls) == "cloud-metadata"


def may_merge(cls_a: str, cls_b: str) -> bool:
    """Whether addresses of two classes may share one CIDR block: only when the classes are equal.

    Merging across classes changes what a rule means (a public host plus a private network,
    link-local plus the metadata service), so no budget ever allows it.

    Raises
    ------
    InputError
        When either argument is not one of :data:`ADDRESS_CLASSES`.
    """
    return _check_class(cls_a) == _check_class(cls_b)


# ---------------------------------------------------------------------------------------------
# CIDR merging
# ---------------------------------------------------------------------------------------------


def _check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise InputError(f"budget must be a whole number of addresses >= 0, not {budget!r}.")
    return budget


def _parse_all(addresses: Iterable[str]) -> list[_Block]:
    if isinstance(addresses, str):
        raise InputError("merge_cidrs takes an iterable of addresses, not a single string.")
    return [_parse_block(item) for item in addresses]


def _collapse(ranges: list[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    """Exact collapse of inclusive ranges into sorted, disjoint, maximal CIDR blocks.

    Returns ``(first, size)`` pairs, like :func:`ipaddress.collapse_addresses` on integers.
    """
    ranges = sorted(ranges)
    joined: list[list[int]] = []
    for first, last in ranges:
        if joined and first <= joined[-1][1] + 1:
            joined[-1][1] = max(joined[-1][1], last)
        else:
            joined.append([first, last])
    blocks: list[tuple[int, int]] = []
    for first, last in joined:
        while first <= last:
            align = first & -first if first else 1 << bits
            fits = 1 << ((last - first + 1).bit_length() - 1)
            size = min(align, fits)
            blocks.append((first, size))
            first += size
    return blocks


def _hits(walls: list[tuple[int, int]], starts: list[int], first: int, last: int) -> bool:
    """Whether ``[first, last]`` overlaps one of the sorted, disjoint ``walls``."""
    i = bisect.bisect_right(starts, last) - 1
    return i >= 0 and walls[i][1] >= first


def _merge_blocks(
    version: int,
    blocks: list[tuple[int, int]],
    budget: int,
    forbidden: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Greedy merging of sorted, exactly collapsed ``(first, size)`` blocks of one class.

    The candidate merges of neighbouring blocks are exactly the branching nodes of the binary
    prefix trie of the blocks: the common supernet of neighbours ``b[i]`` and ``b[i+1]`` is the
    node splitting them. A node's *waste* (its size minus the observed addresses in it) is
    fixed; its *cost* now is its waste minus the waste already spent on merged nodes inside it.
    Merging a node lowers the cost of each ancestor by the merge's cost, so every live node's
    cost is kept exact in a heap, and the cheapest merge is always the one taken. A node that
    reaching into ``forbidden`` (sorted, disjoint inclusive ranges) is never merged, like one
    that crosses a class boundary: its ancestors reach there too.
    """
    walls = forbidden or []
    wall_starts = [a for a, _ in walls]
    n = len(blocks)
    if n < 2 or budget == 0:
        return blocks
    firsts = [f for f, _ in blocks]
    observed_prefix = [0]
    for _, size in blocks:
        observed_prefix.append(observed_prefix[-1] + size)

    # Node i is the common supernet of blocks[i] and blocks[i + 1].
    m = n - 1
    node_first: list[int] = []
    node_size: list[int] = []
    node_lo: list[int] = []  # the blocks inside the node are blocks[lo:hi]
    node_hi: list[int] = []
    cost: list[int] = []
    allowed: list[bool] = []
    for i in range(m):
        span = firsts[i] ^ (firsts[i + 1] + blocks[i + 1][1] - 1)
        size = 1 << span.bit_length()
        first = firsts[i] & ~(size - 1)
        last = first + size - 1
        lo = bisect.bisect_left(firsts, first)
        hi = bisect.bisect_right(firsts, last)
        node_first.append(first)
        node_size.append(size)
        node_lo.append(lo)
        node_hi.append(hi)
        cost.append(size - (observed_prefix[hi] - observed_prefix[lo]))
        allowed.append(
            _segment_index(version, first) == _segment_index(version, last)
            and not _hits(walls, wall_starts, first, last)
        )

    # Parent of each node: the Cartesian tree over node sizes (the largest node is the root).
    parent = [-1] * m
    stack: list[int] = []
    for i in range(m):
        last_popped = -1
        while stack and node_size[stack[-1]] < node_size[i]:
            last_popped = stack.pop()
        if last_popped != -1:
            parent[last_popped] = i
        if stack:
            parent[i] = stack[-1]
        stack.append(i)
    children: list[list[int]] = [[] for _ in range(m)]
    for i in range(m):
        if parent[i] != -1:
            children[parent[i]].append(i)

    # One integer per heap entry (faster to compare than a tuple): the cost, then the lower
    # network address, then the larger supernet, then the node's index.
    index_bits = m.bit_length()
    index_mask = (1 << index_bits) - 1
    tie = [
        ((node_first[i] << 8 | (255 - node_size[i].bit_length())) << index_bits) | i
        for i in range(m)
    ]
    cost_shift = 136 + index_bits

    # A node that does not fit now never will: a merge inside it lowers its cost by exactly
    # what it takes from the budget, and a merge elsewhere only takes from the budget. Costs
    # never fall going up the tree, so the first unfit ancestor ends a walk upwards.
    heap = [cost[i] << cost_shift | tie[i] for i in range(m) if allowed[i] and cost[i] <= budget]
    heapq.heapify(heap)
    alive = [True] * m
    merged = [False] * m
    remaining = budget
    while heap:
        key = heapq.heappop(heap)
        i = key & index_mask
        c = key >> cost_shift
        if not alive[i] or c != cost[i]:
            continue  # a stale entry: the node died, or its cost has since dropped
        if c > remaining:
            break  # the heap holds every fitting node at its exact cost: nothing fits
        remaining -= c
        merged[i] = True
        # Everything below the merged node disappears into it.
        todo = list(children[i])
        while todo:
            j = todo.pop()
            if alive[j]:
                alive[j] = False
                todo.extend(children[j])
        # Every ancestor now has c fewer unobserved addresses left to pay for. An ancestor of
        # a node that crosses a class boundary crosses it too, so the walk stops there.
        j = parent[i]
        while j != -1 and allowed[j] and cost[j] - c <= remaining:
            cost[j] -= c
            heapq.heappush(heap, cost[j] << cost_shift | tie[j])
            j = parent[j]

    # The result: every merged node still alive (none above it was merged), plus the blocks
    # outside all of them, in address order.
    tops = sorted((node_lo[i], i) for i in range(m) if merged[i] and alive[i])
    out: list[tuple[int, int]] = []
    covered_until = 0  # blocks below this index lie inside an emitted merged node
    top = 0
    for b in range(n):
        if top < len(tops) and tops[top][0] == b:
            i = tops[top][1]
            out.append((node_first[i], node_size[i]))
            covered_until = node_hi[i]
            top += 1
        if b >= covered_until:
            out.append(blocks[b])
    return out


def merge_cidrs(
    addresses: Iterable[str], *, budget: int = 0, forbidden: Iterable[str] = ()
) -> list[str]:
    """Merge addresses or CIDR blocks of one class and one IP version into few CIDR blocks.

    Parameters
    ----------
    addresses
        Addresses (``"10.0.0.1"``) or CIDR blocks (``"10.0.0.0/24"``, host bits zero), all of
        one IP version and one address class (see :func:`merge_cidrs_by_class` for mixed
        input). Duplicates and overlaps are fine; an IPv6 zone index is dropped.
    budget
        How many addresses the result may cover *beyond* the input, in total. ``0`` merges
        only exactly: adjacent or contained blocks, like :func:`ipaddress.collapse_addresses`.
        The budget counts addresses for IPv6 too (a /64 is 2**64 addresses); Python integers
        hold any such count.
    forbidden
        Addresses (or blocks) no merged block may reach, whatever the budget: the refused
        peers of the rule being widened (denied, failed or excluded flows). An input address
        that is also forbidden stays (it was observed), but no block grows around it.

    Returns
    -------
    list of str
        Disjoint CIDR blocks (always with a prefix length, ``"10.0.0.1/32"``) sorted by
        network address, covering every input address and at most ``budget`` other addresses,
        each block inside one address class. The result depends only on the set of addresses
        given, not on their order or form.

    Raises
    ------
    InputError
        On an item that is not an address or CIDR block, on mixed IP versions or classes, on a
        block that itself spans two classes, or on a negative or non-integer budget.

    Notes
    -----
    The merge starts from the exactly collapsed blocks, then repeatedly merges the two
    neighbouring blocks whose smallest common supernet adds the fewest unobserved addresses
    (ties: the lowest network address, then the larger supernet), as long as the total added
    stays within ``budget``. A candidate supernet that reaches into another address class (its
    first and last address lie in different class segments of the registry) is never taken,
    whatever the budget; nor is one that holds a ``forbidden`` address.
    """
    budget = _check_budget(budget)
    parsed = _parse_all(addresses)
    if not parsed:
        return []
    versions = {version for version, _, _ in parsed}
    if len(versions) > 1:
        raise InputError(
            "merge_cidrs got both IPv4 and IPv6 input; merge each version on its own "
            "(merge_cidrs_by_class does)."
        )
    version = versions.pop()
    classes: set[str] = set()
    for _, first, last in parsed:
        cls = _block_class(version, first, last)
        if cls is None:
            cidr = _format_block(version, first, last - first + 1)
            raise InputError(f"{cidr} spans several address classes; it cannot be merged.")
        classes.add(cls)
    if len(classes) > 1:
        raise InputError(
            f"merge_cidrs got addresses of several classes ({', '.join(sorted(classes))}); "
            "blocks never cross address classes, group them first (merge_cidrs_by_class)."
        )
    bits = 32 if version == 4 else 128
    collapsed = _collapse([(first, last) for _, first, last in parsed], bits)
    walls = _joined([(f, la) for v, f, la in _parse_all(forbidden) if v == version])
    return [
        _format_block(version, f, size)
        for f, size in _merge_blocks(version, collapsed, budget, walls)
    ]


def merge_cidrs_by_class(addresses: Iterable[str], budget: int = 0) -> dict[str, list[str]]:
    """Group addresses by class and IP version, then :func:`merge_cidrs` each group.

    Parameters
    ----------
    addresses
        Addresses or CIDR blocks of any class and version.
    budget
        The over-permissiveness budget of :func:`merge_cidrs`, applied to each (class, IP
        version) group on its own: an IPv4 count and an IPv6 count are not comparable, and one
        class must not use up another's allowance.

    Returns
    -------
    dict of str to list of str
        Class to its merged blocks, IPv4 blocks before IPv6 blocks; classes in the order of
        :data:`ADDRESS_CLASSES`. IPv4-mapped IPv6 input is grouped under its embedded class and
        stays IPv6.

    Raises
    ------
    InputError
        On an item that is not an address or CIDR block, a block spanning two classes, or a
        bad budget.
    """
    budget = _check_budget(budget)
    groups: dict[tuple[str, int], list[str]] = {}
    if isinstance(addresses, str):
        raise InputError("merge_cidrs_by_class takes an iterable of addresses, not one string.")
    for item in addresses:
        version, first, last = _parse_block(item)
        cls = _block_class(version, first, last)
        if cls is None:
            raise InputError(f"{item} spans several address classes; split it first.")
        groups.setdefault((cls, version), []).append(item)
    order = {cls: k for k, cls in enumerate(ADDRESS_CLASSES)}
    result: dict[str, list[str]] = {}
    for cls, version in sorted(groups, key=lambda key: (order[key[0]], key[1])):
        merged = merge_cidrs(groups[(cls, version)], budget=budget)
        result.setdefault(cls, []).extend(merged)
    return result


# ---------------------------------------------------------------------------------------------
# Widening that never reaches a special-purpose or refused address
# ---------------------------------------------------------------------------------------------


def _registry_blocks(version: int) -> list[tuple[int, int]]:
    bits = 32 if version == 4 else 128
    ranges = []
    for _cls, cidr, _rfc, _desc in _REGISTRY:
        net = ipaddress.ip_network(cidr)
        if net.version == version:
            first = int(net.network_address)
            ranges.append((first, first + net.num_addresses - 1))
    return _collapse(ranges, bits)


_SPECIAL: Final = {v: _registry_blocks(v) for v in (4, 6)}


def _joined(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted inclusive ranges with overlapping and adjacent ones joined."""
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return [(a, b) for a, b in out]


def special_purpose_blocks(version: int) -> tuple[str, ...]:
    """Every registry entry of one IP version (the whole table above), collapsed.

    These are the addresses a widened block may never reach: every IANA special-purpose entry
    (IPv4: 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
    192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4, 240/4 with
    255.255.255.255; IPv6: ::/8 with ::1, :: and ::ffff:0:0/96, 64:ff9b::/96, 100::/64,
    2001::/23, 2001:db8::/32, 2002::/16, 3fff::/20, fc00::/7, fe80::/10, ff00::/8, and the
    ranges the IETF keeps reserved), plus the cloud metadata addresses.

    Examples
    --------
    >>> special_purpose_blocks(6)
    ('::/3', '2001::/23', '2001:db8::/32', '2002::/16', '3fff::/20', '4000::/2', '8000::/1')
    """
    if version not in (4, 6):
        raise InputError(f"IP version must be 4 or 6, not {version!r}.")
    return tuple(_format_block(version, f, size) for f, size in _SPECIAL[version])


def public_universe(version: int) -> str:
    """The whole address space of one IP version: ``0.0.0.0/0`` or ``::/0``."""
    if version not in (4, 6):
        raise InputError(f"IP version must be 4 or 6, not {version!r}.")
    return "0.0.0.0/0" if version == 4 else "::/0"


def carve_block(
    cidr: str, refused: Iterable[str] = (), *, keep: Iterable[str] = ()
) -> tuple[str, tuple[str, ...]] | None:
    """A widened block with every special-purpose and ``refused`` address carved out.

    Parameters
    ----------
    cidr
        The block a widening wants (``0.0.0.0/0`` for "the internet", a merged CIDR).
    refused
        Addresses or blocks it must not admit (denied, failed or excluded peers).
    keep
        Observed addresses that must stay admitted: one that is also refused (the same peer
        allowed once and refused once) is not carved.

    Returns
    -------
    (str, tuple of str) or None
        ``(block, excepts)``: the smallest block inside ``cidr`` that still holds every address
        left (``::/0`` becomes ``2000::/3``, the only IPv6 space outside the registries), and
        the collapsed special-purpose and refused blocks inside it, for an ipBlock's
        ``except``. None when nothing is left to admit.

    Examples
    --------
    >>> carve_block("::/0")
    ('2000::/3', ('2001::/23', '2001:db8::/32', '2002::/16', '3fff::/20'))
    >>> carve_block("198.51.100.0/24") is None
    True
    >>> carve_block("8.8.8.0/30", ["8.8.8.2"])
    ('8.8.8.0/30', ('8.8.8.2/32',))
    """
    version, first, last = _parse_block(cidr)
    bits = 32 if version == 4 else 128
    kept = {_parse_block(k)[1:] for k in keep if _parse_block(k)[0] == version}
    ranges = [(f, f + size - 1) for f, size in _SPECIAL[version]]
    for item in refused:
        v, f, la = _parse_block(item)
        if v == version and (f, la) not in kept:
            ranges.append((f, la))
    holes = _joined(
        [(max(f, first), min(f + n - 1, last)) for f, n in _collapse(ranges, bits)
         if f <= last and f + n - 1 >= first]
    )  # fmt: skip
    starts = [f for f, _ in holes]

    def covered(lo: int, hi: int) -> bool:
        i = bisect.bisect_right(starts, lo) - 1
        return i >= 0 and holes[i][1] >= hi

    if covered(first, last):
        return None
    # Tighten: while one half of the block is all holes, the block is the other half.
    while last > first:
        half = (last - first + 1) // 2
        if covered(first, first + half - 1):
            first += half
        elif covered(first + half, last):
            last = first + half - 1
        else:
            break
    size = last - first + 1
    inside = tuple(
        _format_block(version, f, n)
        for f, n in _collapse([(max(f, first), min(la, last)) for f, la in holes
                               if f <= last and la >= first], bits)
    )  # fmt: skip
    return _format_block(version, first, size), inside
