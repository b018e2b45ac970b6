"""PrefixSet (fasttcp/host/_prefix.pyx): IPv4 and IPv6 prefixes tested in C, validated as
``ip route add`` validates them (host bits set is an error)."""
from __future__ import annotations

import pytest

from fasttcp.host._prefix import PrefixSet


def test_prefix_set_contains_and_validation() -> None:
    p = PrefixSet(["10.99.0.0/16", "fd00:99::/64", "192.0.2.7"])
    assert p.prefixes == ("10.99.0.0/16", "fd00:99::/64", "192.0.2.7/32") and len(p) == 3
    assert "10.99.255.1" in p and "10.99.0.0" in p and "10.98.0.1" not in p
    assert "fd00:99::1" in p and "fd00:99:0:0:ffff::1" in p and "fd00:99:0:1::1" not in p
    assert "192.0.2.7" in p and "192.0.2.8" not in p
    every = PrefixSet(["0.0.0.0/0", "::/0"])
    assert "1.2.3.4" in every and "2001:db8::1" in every
    only4 = PrefixSet("0.0.0.0/0")
    assert "::1" not in only4
    with pytest.raises(ValueError, match="host bits set: the prefix is 10.99.0.0/16"):
        PrefixSet(["10.99.0.5/16"])
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 prefix"):
        PrefixSet(["10.99.0.0/33"])
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 prefix"):
        PrefixSet(["example.com"])
    with pytest.raises(ValueError, match="a prefix is text"):
        PrefixSet([10])
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        p.contains("nope")
