"""TCP engine throughput and cost: bulk transfer between two in-process hosts, connection
rate, memory per idle connection, and the cyclic-GC pause TIME-WAIT connections cost.

Run: ``pytest benchmarks/bench_engine.py``. Goodput is in each benchmark's extra_info
(``Gbit/s``: bytes moved / wall time for all the work of both ends).
"""
import gc
import os
import time
import tracemalloc

import pytest

from fasttcp.link import exchange
from benchutil import median_seconds

from fasttcp import Host, State
from fasttcp.transfer import bulk_transfer

SIZE = 16 << 20


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mtu", [1500, 9000, 65535])
def test_bulk_transfer(benchmark, mtu, family):
    benchmark.group = "bulk transfer 16 MiB, two hosts in one process"
    results = []

    def run():
        r = bulk_transfer(SIZE, mtu=mtu, ipv6=family == 6)
        assert r.intact
        results.append(r)

    benchmark.pedantic(run, rounds=5, iterations=1)
    # The transfer's own clock (from connect to both ends closed): the round's total also
    # holds making the 16 MiB payload, which is not the stack's work.
    walls = sorted(r.wall_seconds for r in results)
    median = walls[len(walls) // 2]
    benchmark.extra_info["Gbit/s"] = round(SIZE * 8 / median / 1e9, 3)
    benchmark.extra_info["us/packet"] = round(median / results[0].packets * 1e6, 2)


def _connections(n: int, client_ip: str = "10.0.0.1", server_ip: str = "10.0.0.2") -> None:
    """n connections: open, one request/response, close (both sides)."""
    secret = bytes(16)
    # MSL 0.5 ms: the server's TIME-WAIT (2*MSL) ends by the next connection's time
    # step (1 ms), so the tables stay small; every close is a full FIN exchange. (With
    # MSL 0 the orphaned FIN-WAIT-2 timeout, also 2*MSL, would end the server side
    # before the client's FIN, which would then be answered by a RST.)
    client = Host(client_ip, isn_secret=secret, msl=0.0005)
    server = Host(server_ip, isn_secret=secret, msl=0.0005)
    lst = server.listen(80, backlog=n)
    now = 0.0
    for _i in range(n):
        c = client.connect((server_ip, 80))
        exchange(client, server, now)
        s = lst.accept()
        c.send(b"GET / HTTP/1.1\r\n\r\n")
        exchange(client, server, now)
        s.recv()
        s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        s.close()
        exchange(client, server, now)
        c.recv()
        c.close()
        exchange(client, server, now)
        now += 0.001
        for h in (client, server):
            h.transmit(now)
    assert not server.connections() and not client.connections()
    cs, ss = client.stats(), server.stats()
    assert "rst_in" not in cs and "rst_in" not in ss            # graceful closes only
    assert ss.get("state_time_wait") == n                         # the server closed first


@pytest.mark.parametrize("family", [4, 6])
def test_connection_rate(benchmark, family):
    """Open, one request/response, close (both sides): connections per second."""
    benchmark.group = "connections"
    n = 500
    ips = ("10.0.0.1", "10.0.0.2") if family == 4 else ("fd00::1", "fd00::2")
    benchmark.pedantic(_connections, args=(n, *ips), rounds=3, iterations=1)
    if (t := median_seconds(benchmark)) is not None:
        benchmark.extra_info["connections/s"] = round(n / t)


def test_ipv6_vs_ipv4(benchmark):
    """IPv6 against IPv4 on the same work in one run, alternating (issue 14's goal: >=
    0.95x): in-memory bulk transfer (16 MiB, MTU 1500; the transfer's own clock) and
    connections/s (15 turns of 100 each). The ratios (IPv6 speed / IPv4 speed, medians of the
    rounds) are in extra_info; the timed function is one IPv6 bulk transfer."""
    benchmark.group = "IPv6 vs IPv4"
    bulk = {4: [], 6: []}
    conn = {4: [], 6: []}
    # Short turns, many of them, so a slow phase of a shared machine falls on both.
    for _ in range(5):
        for fam in (4, 6):
            r = bulk_transfer(SIZE, mtu=1500, ipv6=fam == 6)
            assert r.intact
            bulk[fam].append(r.wall_seconds)
    for _ in range(15):
        for fam in (4, 6):
            ips = ("10.0.0.1", "10.0.0.2") if fam == 4 else ("fd00::1", "fd00::2")
            t0 = time.perf_counter()
            _connections(100, *ips)
            conn[fam].append(time.perf_counter() - t0)

    def med(xs):
        return sorted(xs)[len(xs) // 2]

    benchmark.pedantic(lambda: bulk_transfer(SIZE, ipv6=True), rounds=1, iterations=1)
    benchmark.extra_info["bulk IPv6/IPv4"] = round(med(bulk[4]) / med(bulk[6]), 3)
    benchmark.extra_info["connections/s IPv6/IPv4"] = round(med(conn[4]) / med(conn[6]), 3)
    benchmark.extra_info["bulk Gbit/s IPv4, IPv6"] = [
        round(SIZE * 8 / med(bulk[f]) / 1e9, 3) for f in (4, 6)]
    benchmark.extra_info["connections/s IPv4, IPv6"] = [round(100 / med(conn[f])) for f in (4, 6)]


def _open_idle(n: int):
    secret = bytes(16)
    client = Host("10.0.0.1", isn_secret=secret, max_connections=4 * n)
    server = Host("10.0.0.2", isn_secret=secret, max_connections=4 * n, syn_backlog=n,
                  backlog=n)
    lst = server.listen(80)
    conns = []
    for i in range(n):
        conns.append(client.connect(("10.0.0.2", 80)))
        if i % 100 == 99:
            exchange(client, server, 0.0)
    exchange(client, server, 0.0)
    accepted = []
    while (c := lst.accept()) is not None:
        accepted.append(c)
    assert len(accepted) == n and all(c.state == State.ESTABLISHED for c in conns)
    return client, server, conns, accepted


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_per_idle_connection(benchmark):
    """10,000 idle ESTABLISHED connections (both ends in this process, so 20,000 TCBs):
    Python heap per connection by tracemalloc, and RSS growth per connection measured in a
    separate pass without tracemalloc. Buffers are allocated on first use, so an idle
    connection holds none."""
    benchmark.group = "connections"
    n = 10_000
    gc.collect()
    rss0 = _rss_bytes()
    keep = benchmark.pedantic(_open_idle, args=(n,), rounds=1, iterations=1)
    gc.collect()
    rss1 = _rss_bytes()
    del keep
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    keep = _open_idle(n)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    benchmark.extra_info["bytes/connection (tracemalloc)"] = round(heap / (2 * n))
    benchmark.extra_info["bytes/connection (RSS)"] = round((rss1 - rss0) / (2 * n))
    del keep


def test_syn_cookie_rate(benchmark):
    """SYN cookies made and validated per second in C (goal >= 1,000,000/s)."""
    from fasttcp.tcp._cookies import SynCookies
    from fasttcp.tcp._isn import IsnGenerator

    cookies = SynCookies(IsnGenerator(bytes(16)))
    n = 200_000
    benchmark.group = "syn cookies"
    assert benchmark(cookies.bench_check, n, 100.0) == n
    if (t := median_seconds(benchmark)) is not None:
        benchmark.extra_info["cookies made+validated/s"] = round(n / t)


def _time_wait_server(n: int):
    """A server host holding ``n`` TIME-WAIT connections (it closed first, as an HTTP
    server with ``Connection: close`` does), and its client."""
    a = Host("10.0.0.1", isn_secret=bytes(16), max_connections=4 * n)
    b = Host("10.0.0.2", isn_secret=bytes(16), max_connections=4 * n, backlog=n,
             max_time_wait=n)
    lst = b.listen(80)
    now = 0.0
    for _ in range(n):
        c = a.connect(("10.0.0.2", 80))
        exchange(a, b, now)
        s = lst.accept()
        s.close()
        exchange(a, b, now)
        c.close()
        exchange(a, b, now)
        now += 0.0001
    assert sum(x.state == State.TIME_WAIT for x in b.connections()) == n
    return a, b


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_gc_pause_per_time_wait_connection(benchmark):
    """A full cyclic-GC collection with 5,000 TIME-WAIT connections held: what a
    ``Connection: close`` server pays in each full collection (the wrk p99 of
    bench_http.py), in µs per TIME-WAIT connection, and the GC-tracked objects each holds
    (goal 0: a closed connection's TIME-WAIT is a record of C fields, tcp/_timewait.pyx, as
    the kernel's is a small inet_timewait_sock), and the bytes each holds."""
    benchmark.group = "connections"
    n = 5_000
    gc.collect()
    before = len(gc.get_objects())
    base = min(_timed(gc.collect) for _ in range(5))    # the process's heap without them
    keep = _time_wait_server(n)
    gc.collect()
    tracked = len(gc.get_objects()) - before
    benchmark.pedantic(gc.collect, rounds=5, iterations=1)
    seconds = median_seconds(benchmark)
    if seconds is not None:
        benchmark.extra_info["full gc ms"] = round(seconds * 1e3, 2)
        benchmark.extra_info["full gc ms without them"] = round(base * 1e3, 2)
        benchmark.extra_info["us per TIME-WAIT connection"] = round(
            (seconds - base) * 1e6 / n, 2)
    benchmark.extra_info["GC-tracked objects per TIME-WAIT connection"] = round(
        tracked / n, 1)
    del keep
    # What each TIME-WAIT connection holds (both hosts, after the client forgot its own).
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    keep = _time_wait_server(2_000)
    keep[0].pop_ready()
    keep[1].pop_ready()
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    benchmark.extra_info["bytes per TIME-WAIT connection (tracemalloc)"] = round(heap / 2_000)
    del keep
