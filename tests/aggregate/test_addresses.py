"""Tests of recommender.aggregate.addresses: address classes and class-preserving CIDR merging."""

from __future__ import annotations

import ipaddress
import re
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.aggregate.addresses import (
    ADDRESS_CLASSES,
    address_class_table,
    classify_address,
    classify_network,
    is_host_local,
    is_private_like,
    is_public,
    is_sensitive,
    may_merge,
    merge_cidrs,
    merge_cidrs_by_class,
)
from recommender.errors import InputError

DOC = Path(__file__).resolve().parents[2] / "docs" / "address-classes.md"

TRUTH = [
    # private (RFC 1918) and its edges
    ("9.255.255.255", "public"),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("11.0.0.0", "public"),
    ("172.15.255.255", "public"),
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.0", "public"),
    ("192.167.255.255", "public"),
    ("192.168.0.0", "private"),
    ("192.168.255.255", "private"),
    ("192.169.0.0", "public"),
    # shared (RFC 6598)
    ("100.63.255.255", "public"),
    ("100.64.0.0", "shared"),
    ("100.127.255.255", "shared"),
    ("100.128.0.0", "public"),
    # loopback, this network, unspecified
    ("127.0.0.1", "loopback"),
    ("127.255.255.255", "loopback"),
    ("126.255.255.255", "public"),
    ("0.0.0.0", "unspecified"),
    ("0.0.0.1", "this-network"),
    ("0.255.255.255", "this-network"),
    ("1.0.0.0", "public"),
    # link-local and the metadata service
    ("169.253.255.255", "public"),
    ("169.254.0.0", "link-local"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.253", "link-local"),
    ("169.254.169.254", "cloud-metadata"),
    ("169.254.169.255", "link-local"),
    ("169.254.255.255", "link-local"),
    ("169.255.0.0", "public"),
    # IETF protocol assignments, documentation, 6to4 relay, benchmarking
    ("192.0.0.0", "ietf-protocol"),
    ("192.0.0.170", "ietf-protocol"),
    ("192.0.1.0", "public"),
    ("192.0.2.0", "documentation"),
    ("192.0.2.255", "documentation"),
    ("192.0.3.0", "public"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.255", "documentation"),
    ("203.0.114.0", "public"),
    ("192.88.99.1", "6to4"),
    ("198.17.255.255", "public"),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.20.0.0", "public"),
    # multicast, reserved, broadcast
    ("223.255.255.255", "public"),
    ("224.0.0.0", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.0", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("8.8.8.8", "public"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::2", "reserved"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:8.8.8.8", "public"),
    ("::ffff:169.254.169.254", "cloud-metadata"),
    ("64:ff9b::8.8.8.8", "nat64"),
    ("64:ff9b:1::1", "nat64"),
    ("100::1", "discard"),
    ("100:0:0:1::1", "reserved"),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("2000::", "public"),
    ("2001::1", "teredo"),
    ("2001:1::1", "ietf-protocol"),
    ("2001:2::1", "benchmarking"),
    ("2001:2:1::", "ietf-protocol"),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "ietf-protocol"),
    ("2001:200::", "public"),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "public"),
    ("2001:db8::1", "documentation"),
    ("2001:db9::", "public"),
    ("2002:c000:204::1", "6to4"),
    ("2606:4700:4700::1111", "public"),
    ("3fff::1", "documentation"),
    ("3fff:1000::", "public"),
    ("5f00::1", "segment-routing"),
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("fc00::", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fd00:ec2::253", "unique-local"),
    ("fd00:ec2::254", "cloud-metadata"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"),
    ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"),
    ("fec0::1", "reserved"),
    ("ff02::1", "multicast"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"),
]


@pytest.mark.parametrize(("ip", "expected"), TRUTH)
def test_classify_truth_table(ip, expected):
    assert classify_address(ip) == expected


def test_truth_table_covers_every_returnable_class():
    returned = {cls for _, cls in TRUTH}
    assert returned == set(ADDRESS_CLASSES) - {"ipv4-mapped"}


@pytest.mark.parametrize("bad", ["", "10.0.0", "10.0.0.256", "10.0.0.0/8", "host.example", "::g"])
def test_classify_rejects_non_addresses(bad):
    with pytest.raises(InputError, match="not an IPv4 or IPv6 address"):
        classify_address(bad)


@pytest.mark.parametrize("bad", [None, 167772161, b"\n\0\0\1", ["10.0.0.1"]])
def test_classify_rejects_non_strings(bad):
    with pytest.raises(InputError):
        classify_address(bad)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF:.%/ x", max_size=45),
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda ip: str(ip.exploded).upper()),
    )
)
def test_classify_accepts_exactly_what_ipaddress_accepts(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        with pytest.raises(InputError):
            classify_address(text)
    else:
        assert classify_address(text) in ADDRESS_CLASSES


def test_registry_table_shape():
    table = address_class_table()
    assert table, "the table is empty"
    for row in table:
        assert set(row) == {"class", "cidr", "rfc", "description"}
        assert row["class"] in ADDRESS_CLASSES
        assert str(ipaddress.ip_network(row["cidr"])) == row["cidr"]
        assert row["rfc"].startswith("RFC ") or row["cidr"] in {
            "169.254.169.254/32",
            "fd00:ec2::254/128",
        }
    # every class except public has a row
    assert {row["class"] for row in table} == set(ADDRESS_CLASSES) - {"public"}


def test_each_registry_row_classifies_its_own_first_address():
    """An entry's first address has its class, unless a more specific entry starts there."""
    table = address_class_table()
    nets = [(ipaddress.ip_network(r["cidr"]), r["class"]) for r in table]
    for net, cls in nets:
        more_specific = [
            c
            for other, c in nets
            if other.version == net.version
            and other.prefixlen > net.prefixlen
            and other.network_address == net.network_address
        ]
        if cls == "ipv4-mapped":
            cls = "unspecified"  # ::ffff:0.0.0.0 embeds 0.0.0.0
        expected = more_specific[-1] if more_specific else cls
        assert classify_address(str(net.network_address)) == expected, net


def _oracle(ip):
    """Most specific table row containing ``ip``, by linear scan; public when none."""
    best = None
    for row in address_class_table():
        net = ipaddress.ip_network(row["cidr"])
        inside = net.version == ip.version and ip in net
        if inside and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, row["class"])
    if best is None:
        return "public"
    if best[1] == "ipv4-mapped":
        return _oracle(ip.ipv4_mapped)
    return best[1]


_ROW_NETS = [ipaddress.ip_network(r["cidr"]) for r in address_class_table()]


@st.composite
def near_boundaries(draw):
    """Addresses at, just inside and just outside the edges of registry rows, or anywhere."""
    if draw(st.booleans()):
        return draw(st.ip_addresses())
    net = draw(st.sampled_from(_ROW_NETS))
    if draw(st.booleans()) and net.version == 4:  # the same edge seen through ::ffff:0:0/96
        net = ipaddress.ip_network((0xFFFF << 32 | int(net.network_address), net.prefixlen + 96))
    edge = int(draw(st.sampled_from([net.network_address, net.broadcast_address])))
    value = edge + draw(st.integers(-1, 1))
    bits = net.max_prefixlen
    value = min(max(value, 0), 2**bits - 1)
    return ipaddress.IPv4Address(value) if bits == 32 else ipaddress.IPv6Address(value)


@settings(max_examples=1000, deadline=None)
@given(near_boundaries())
def test_classify_matches_linear_scan_of_table(ip):
    assert classify_address(str(ip)) == _oracle(ip)


def test_classify_network():
    assert classify_network("10.1.0.0/16") == "private"
    assert classify_network("172.16.0.0/12") == "private"
    assert classify_network("172.0.0.0/8") is None
    assert classify_network("169.254.169.0/24") is None  # link-local and cloud-metadata
    assert classify_network("169.254.169.254") == "cloud-metadata"
    assert classify_network("2001:db8::/48") == "documentation"
    assert classify_network("::/0") is None
    with pytest.raises(InputError, match="host bits"):
        classify_network("10.0.0.1/8")


def test_predicates():
    assert is_private_like("private") and is_private_like("shared")
    assert is_private_like("unique-local")
    assert not is_private_like("public") and not is_private_like("link-local")
    assert is_public("public") and not is_public("documentation")
    assert is_host_local("loopback") and is_host_local("cloud-metadata")
    assert not is_host_local("private")
    assert is_sensitive("cloud-metadata") and not is_sensitive("link-local")
    assert may_merge("private", "private")
    assert not may_merge("private", "shared")
    assert not may_merge("link-local", "cloud-metadata")
    with pytest.raises(InputError, match="not an address class"):
        is_private_like("rfc1918")
    with pytest.raises(InputError, match="not an address class"):
        may_merge("private", "Private")


# --- merge_cidrs: examples ------------------------------------------------------------------


def test_merge_exact_collapse():
    assert merge_cidrs(["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]) == ["10.0.0.0/30"]


def test_merge_budget_zero_keeps_gaps():
    assert merge_cidrs(["10.0.0.3", "10.0.0.1"]) == ["10.0.0.1/32", "10.0.0.3/32"]
    assert merge_cidrs(["10.0.0.3", "10.0.0.1"], budget=1) == ["10.0.0.1/32", "10.0.0.3/32"]


def test_merge_budget_two_merges():
    assert merge_cidrs(["10.0.0.1", "10.0.0.3"], budget=2) == ["10.0.0.0/30"]


def test_merge_picks_cheapest_pair_first():
    # .0+.2 -> 10.0.0.0/30 costs 2; .8+.12 -> 10.0.0.8/29 costs 6; .2+.8 -> /28 costs 12,
    # or 4 more once both others are merged.
    addrs = ["10.0.0.0", "10.0.0.2", "10.0.0.8", "10.0.0.12"]
    assert merge_cidrs(addrs, budget=2) == ["10.0.0.0/30", "10.0.0.8/32", "10.0.0.12/32"]
    assert merge_cidrs(addrs, budget=7) == ["10.0.0.0/30", "10.0.0.8/32", "10.0.0.12/32"]
    assert merge_cidrs(addrs, budget=8) == ["10.0.0.0/30", "10.0.0.8/29"]
    # whole /28: 16 addresses for 4 observed
    assert merge_cidrs(addrs, budget=12) == ["10.0.0.0/28"]
    assert merge_cidrs(addrs, budget=11) == ["10.0.0.0/30", "10.0.0.8/29"]


def test_merge_never_crosses_class_boundary():
    for budget in (0, 2, 2**32, 10**50):
        assert merge_cidrs_by_class(["172.15.255.255", "172.16.0.0"], budget) == {
            "public": ["172.15.255.255/32"],
            "private": ["172.16.0.0/32"],
        }
    # The two public neighbours of 172.16.0.0/12 never meet in one block.
    assert merge_cidrs(["172.15.255.255", "172.32.0.0"], budget=10**12) == [
        "172.15.255.255/32",
        "172.32.0.0/32",
    ]
    # link-local around the metadata address stays in pieces.
    merged = merge_cidrs(["169.254.169.253", "169.254.169.255"], budget=10**6)
    assert merged == ["169.254.169.253/32", "169.254.169.255/32"]


def test_merge_rejects_mixed_classes_and_versions():
    with pytest.raises(InputError, match="several classes"):
        merge_cidrs(["172.15.255.255", "172.16.0.0"], budget=100)
    with pytest.raises(InputError, match="IPv4 and IPv6"):
        merge_cidrs(["8.8.8.8", "2001:4860::8888"])
    with pytest.raises(InputError, match="spans several address classes"):
        merge_cidrs(["172.0.0.0/8"])
    with pytest.raises(InputError, match="single string"):
        merge_cidrs("10.0.0.1")
    with pytest.raises(InputError, match="budget"):
        merge_cidrs(["10.0.0.1"], budget=-1)
    with pytest.raises(InputError, match="budget"):
        merge_cidrs(["10.0.0.1"], budget=True)
    with pytest.raises(InputError, match="not an IP address"):
        merge_cidrs(["10.0.0.1", "nope"])


def test_merge_by_class_keeps_versions_apart():
    out = merge_cidrs_by_class(["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888"], 2**128)
    assert out == {"public": ["8.8.0.0/20", "2001:4860:4860::8888/128"]}
    out = merge_cidrs_by_class(["10.0.0.1", "::ffff:10.0.0.2", "fd00::1"], 10)
    assert out == {"private": ["10.0.0.1/32", "::ffff:a00:2/128"], "unique-local": ["fd00::1/128"]}


def test_merge_accepts_cidrs_and_ipv6_budgets():
    assert merge_cidrs(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5"]) == ["10.0.0.0/24"]
    out = merge_cidrs(["2001:4860::1", "2001:4860:0:1::1"], budget=2**65)
    assert out == ["2001:4860::/63"]
    assert merge_cidrs([]) == []


# --- merge_cidrs: properties ----------------------------------------------------------------

# Small windows around class boundaries, so that random sets collide, merge and meet edges.
_WINDOWS = [
    (4, int(ipaddress.ip_address("172.15.255.224")), 64),
    (4, int(ipaddress.ip_address("169.254.169.240")), 32),
    (4, int(ipaddress.ip_address("100.63.255.248")), 16),
    (4, int(ipaddress.ip_address("10.0.0.0")), 256),
    (4, int(ipaddress.ip_address("198.17.255.252")), 8),
    (6, int(ipaddress.ip_address("fd00:ec2::240")), 32),
    (6, int(ipaddress.ip_address("fbff:ffff:ffff:ffff:ffff:ffff:ffff:fff0")), 32),
    (6, int(ipaddress.ip_address("::ffff:172.15.255.248")), 16),
]


@st.composite
def address_sets(draw):
    window = draw(st.sampled_from(_WINDOWS))
    version, base, span = window
    offsets = draw(st.lists(st.integers(0, span - 1), min_size=0, max_size=40))
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    addrs = [str(make(base + off)) for off in offsets]
    if draw(st.booleans()):  # sometimes another window too: classes and versions mixed
        version2, base2, span2 = draw(st.sampled_from(_WINDOWS))
        make2 = ipaddress.IPv4Address if version2 == 4 else ipaddress.IPv6Address
        more = draw(st.lists(st.integers(0, span2 - 1), max_size=10))
        addrs += [str(make2(base2 + off)) for off in more]
    return addrs


budgets = st.one_of(st.integers(0, 8), st.integers(0, 300), st.just(10**40))


def _check_groups(addrs, out, budget):
    nets = {cls: [ipaddress.ip_network(c) for c in cidrs] for cls, cidrs in out.items()}
    # every input address is covered, by a block of its own class
    for a in addrs:
        ip = ipaddress.ip_address(a)
        assert any(ip in n for n in nets[classify_address(a)]), a
    for cls, blocks in nets.items():
        # no block spans two classes
        for n in blocks:
            assert classify_network(str(n)) == cls, n
        for version in (4, 6):
            vblocks = [n for n in blocks if n.version == version]
            # sorted by network address and disjoint
            for left, right in pairwise(vblocks):
                assert int(left.broadcast_address) < int(right.network_address)
            observed = {
                a
                for a in addrs
                if classify_address(a) == cls and ipaddress.ip_address(a).version == version
            }
            covered = sum(n.num_addresses for n in vblocks)
            assert covered - len(observed) <= budget


@settings(max_examples=300, deadline=None)
@given(address_sets(), budgets)
def test_merge_properties(addrs, budget):
    out = merge_cidrs_by_class(addrs, budget)
    _check_groups(addrs, out, budget)


@settings(max_examples=150, deadline=None)
@given(address_sets(), budgets, st.randoms(use_true_random=False))
def test_merge_is_order_independent(addrs, budget, rnd):
    shuffled = list(addrs)
    rnd.shuffle(shuffled)
    assert merge_cidrs_by_class(shuffled, budget) == merge_cidrs_by_class(addrs, budget)


@settings(max_examples=150, deadline=None)
@given(address_sets())
def test_budget_zero_is_exact_collapse(addrs):
    out = merge_cidrs_by_class(addrs, 0)
    for cls, cidrs in out.items():
        group = [a for a in addrs if classify_address(a) == cls]
        for version in (4, 6):
            expected = sorted(
                ipaddress.collapse_addresses(
                    ipaddress.ip_network(a)
                    for a in group
                    if ipaddress.ip_address(a).version == version
                ),
                key=lambda n: int(n.network_address),
            )
            got = [c for c in cidrs if ipaddress.ip_network(c).version == version]
            assert got == [str(n) for n in expected]


def _naive_merge(addrs, budget):
    """The greedy of the spec, done the slow way: rescan every neighbour pair each round."""
    blocks = sorted(
        ipaddress.collapse_addresses(ipaddress.ip_network(a) for a in addrs),
        key=lambda n: int(n.network_address),
    )
    remaining = budget
    while True:
        best = None
        for left, right in pairwise(blocks):
            bits = left.max_prefixlen
            first, last = int(left.network_address), int(right.broadcast_address)
            plen = bits - (first ^ last).bit_length()
            sup = ipaddress.ip_network((first >> (bits - plen) << (bits - plen), plen))
            if classify_network(str(sup)) is None:
                continue
            inside = sum(b.num_addresses for b in blocks if b.subnet_of(sup))
            key = (sup.num_addresses - inside, int(sup.network_address), plen)
            if best is None or key < best[0]:
                best = (key, sup)
        if best is None or best[0][0] > remaining:
            return [str(b) for b in blocks]
        remaining -= best[0][0]
        sup = best[1]
        blocks = sorted(
            [b for b in blocks if not b.subnet_of(sup)] + [sup],
            key=lambda n: int(n.network_address),
        )


@settings(max_examples=300, deadline=None)
@given(address_sets(), budgets)
def test_merge_matches_naive_greedy(addrs, budget):
    for cls_version in {(classify_address(a), ipaddress.ip_address(a).version) for a in addrs}:
        group = [
            a
            for a in addrs
            if (classify_address(a), ipaddress.ip_address(a).version) == cls_version
        ]
        assert merge_cidrs(group, budget=budget) == _naive_merge(group, budget)


def test_merge_many_addresses_is_fast():
    addrs = [str(ipaddress.IPv4Address(0x0A000000 + (i * 7919) % 2**20)) for i in range(20000)]
    out = merge_cidrs(addrs, budget=50000)
    covered = sum(ipaddress.ip_network(c).num_addresses for c in out)
    assert covered - len(set(addrs)) <= 50000
    assert len(out) < len(set(addrs))


# --- the doc stays in sync with the table ---------------------------------------------------


def _doc_rows():
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if match:
            rows.append((match.group(1), match.group(2), match.group(3)))
    return rows


def test_doc_table_matches_registry():
    doc = _doc_rows()
    table = [(r["class"], r["cidr"], r["rfc"]) for r in address_class_table()]
    assert doc == table


def test_doc_names_every_class():
    text = DOC.read_text(encoding="utf-8")
    for cls in ADDRESS_CLASSES:
        assert f"`{cls}`" in text, cls
