"""Ephemeral port selection: RFC 6056 3.3.4 (Algorithm 4, double-hash), keyed by the host's
secret, as Linux's __inet_hash_connect. Ports are unpredictable off-path (they differ
between hosts and across a restart), spread over the whole range, and a connect() never
picks a 4-tuple in use, TIME-WAIT included.
"""
from __future__ import annotations

import pytest

from fasttcp import Host, State
from tcp_harness import Net

LO, HI = 49152, 65535


def _ports(host: Host, dests) -> list:
    return [host.connect(d).local_address[1] for d in dests]


def test_ports_differ_between_hosts_and_restarts():
    """Same address, same destinations: hosts with different secrets (or a restart with
    a fresh random one) choose other ports."""
    dests = [("10.0.0.9", 80)] * 5 + [("10.0.0.9", 443), ("10.0.0.8", 80)]
    a = _ports(Host("10.0.0.1", isn_secret=bytes(16)), dests)
    b = _ports(Host("10.0.0.1", isn_secret=bytes(range(16))), dests)
    again = _ports(Host("10.0.0.1", isn_secret=bytes(16)), dests)
    assert a == again                    # deterministic under a secret
    assert a != b and a[0] != b[0]
    fresh = [_ports(Host("10.0.0.1"), dests[:1])[0] for _ in range(4)]
    assert len(set(fresh)) > 1           # a random secret per host (per restart)
    assert all(LO <= p <= HI for p in a + b + fresh)


def test_ports_spread_over_the_range():
    """4,000 connections to 4,000 destinations: every sixteenth of the range gets its
    share (250 expected; a uniform draw stays within 150..350), not a block from 49152."""
    host = Host("10.0.0.1", isn_secret=bytes(range(16)), max_connections=10000)
    ports = _ports(host, [(f"10.1.{i // 250}.{i % 250 + 1}", 80 + i % 7) for i in range(4000)])
    span = HI - LO + 1
    buckets = [0] * 16
    for p in ports:
        assert LO <= p <= HI
        buckets[(p - LO) * 16 // span] += 1
    assert all(150 < n < 350 for n in buckets), buckets


def test_one_destination_gets_distinct_ports():
    """Many connections to one destination never share a port (the table's counter moves
    on), and the ports differ from the ones to another destination."""
    host = Host("10.0.0.1", isn_secret=bytes(16), max_connections=10000)
    ports = _ports(host, [("10.0.0.9", 80)] * 2000)
    assert len(set(ports)) == 2000
    other = _ports(host, [("10.0.0.7", 80)] * 3)
    assert other[0] not in ports[:3]


def test_connect_never_picks_a_tuple_in_time_wait():
    """A client with ten ephemeral ports closes first, so each of its connections holds
    TIME-WAIT: the next connects to that server take the free ports only, then fail with
    EADDRNOTAVAIL; another destination still gets ports."""
    a = Host("10.0.0.1", isn_secret=bytes(16), ephemeral_ports=(50000, 50009))
    b = Host("10.0.0.2", isn_secret=bytes(range(16)))
    net = Net(a, b, latency=0.001)
    lst = b.listen(80)
    used = []
    for i in range(10):
        ca = a.connect(("10.0.0.2", 80))
        assert ca.local_address[1] not in used, (i, used)
        used.append(ca.local_address[1])
        net.run(lambda: len(lst) > 0, deadline=net.now + 1.0, max_steps=1000)
        cb = lst.accept()
        ca.close()                                    # the client closes first
        net.run(lambda c=cb: c.state == State.CLOSE_WAIT, deadline=net.now + 1.0,
                max_steps=1000)
        cb.close()
        net.run(lambda c=ca: c.state == State.TIME_WAIT, deadline=net.now + 1.0,
                max_steps=1000)
        if i == 4:
            assert a.stats()["time_wait"] == 5
    assert sorted(used) == list(range(50000, 50010))
    assert a.stats()["time_wait"] == 10
    with pytest.raises(OSError) as e:
        a.connect(("10.0.0.2", 80))
    assert e.value.errno == 99
    assert 50000 <= a.connect(("10.0.0.2", 81)).local_address[1] <= 50009
