"""Widening without special-purpose or refused addresses (issue 21, part 5): carve_block,
special_purpose_blocks and merge_cidrs(forbidden=...)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.aggregate.addresses import (
    address_class_table,
    carve_block,
    classify_address,
    merge_cidrs,
    special_purpose_blocks,
)


def _admitted(address: str, found: tuple[str, tuple[str, ...]] | None) -> bool:
    if found is None:
        return False
    block, excepts = found
    ip = ipaddress.ip_address(address)
    net = ipaddress.ip_network(block)
    if ip.version != net.version or ip not in net:
        return False
    return not any(ip in ipaddress.ip_network(e) for e in excepts)


def test_special_purpose_blocks_cover_every_registry_entry_and_nothing_public():
    for version in (4, 6):
        blocks = [ipaddress.ip_network(b) for b in special_purpose_blocks(version)]
        for row in address_class_table():
            net = ipaddress.ip_network(row["cidr"])
            if net.version == version:
                assert any(net.subnet_of(b) for b in blocks), row  # type: ignore[arg-type]
    for public in ("8.8.8.8", "1.1.1.1", "223.255.255.254", "2a00:1450::1", "2606:4700::1"):
        assert classify_address(public) == "public"
        assert not any(
            ipaddress.ip_address(public) in ipaddress.ip_network(b)
            for b in special_purpose_blocks(ipaddress.ip_address(public).version)
        )


def test_the_internet_blocks():
    v4 = carve_block("0.0.0.0/0")
    assert v4 is not None and v4[0] == "0.0.0.0/0"
    assert "100.64.0.0/10" in v4[1] and "169.254.0.0/16" in v4[1] and "224.0.0.0/3" in v4[1]
    assert carve_block("::/0") == (
        "2000::/3",
        ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20"),
    )
    assert carve_block("10.0.0.0/8") is None  # nothing public is left
    assert carve_block("8.8.8.0/24", ["8.8.8.0/25", "8.8.8.128/25"]) is None
    assert carve_block("8.8.8.0/24", ["8.8.8.0/25"]) == ("8.8.8.128/25", ())
    # An observed address that was also refused once stays admitted.
    assert carve_block("8.8.8.0/30", ["8.8.8.2"], keep=["8.8.8.2"]) == ("8.8.8.0/30", ())


_V4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_NEAR = st.integers(0, 255).map(lambda n: f"81.2.69.{n}")  # merges happen here
_ADDR = st.one_of(_V4, _NEAR)


@settings(max_examples=200)
@given(
    prefix=st.integers(0, 32),
    base=_V4,
    refused=st.lists(_ADDR, max_size=8),
    probes=st.lists(_ADDR, min_size=1, max_size=30),
)
def test_carve_admits_exactly_public_unrefused_addresses(prefix, base, refused, probes):
    block = str(ipaddress.ip_network(f"{base}/{prefix}", strict=False))
    found = carve_block(block, refused)
    if found is not None:
        assert ipaddress.ip_network(found[0]).subnet_of(ipaddress.ip_network(block))
    for probe in probes + refused:
        want = (
            ipaddress.ip_address(probe) in ipaddress.ip_network(block)
            and classify_address(probe) == "public"
            and probe not in refused
        )
        assert _admitted(probe, found) == want, (block, probe, found)


@settings(max_examples=200)
@given(
    addresses=st.sets(_NEAR, min_size=1, max_size=20),
    forbidden=st.sets(_NEAR, max_size=6),
    budget=st.sampled_from([0, 1, 4, 16, 256]),
)
def test_merge_never_grows_over_a_forbidden_address(addresses, forbidden, budget):
    merged = merge_cidrs(sorted(addresses), budget=budget, forbidden=sorted(forbidden))
    nets = [ipaddress.ip_network(c) for c in merged]
    for address in addresses:
        assert sum(ipaddress.ip_address(address) in n for n in nets) == 1
    for address in forbidden - addresses:
        assert not any(ipaddress.ip_address(address) in n for n in nets), (address, merged)
    added = sum(n.num_addresses for n in nets) - len(addresses)
    assert added <= budget
