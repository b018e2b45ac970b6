"""Helpers for running fasttcp against the Linux kernel's TCP: a TUN link in a private
network namespace, a veth pair between two namespaces (the kernel-to-kernel baseline), and
small kernel-side programs that run inside a namespace.

Used by ``tests/test_interop.py`` and ``benchmarks/bench_tun.py``. Every namespace is made
by :func:`netns_util.temp_netns` (unique name, removed on exit even after a failure); the
only addresses in play are 10.77.x.0/24 inside those namespaces.

Run as a script, this file is the kernel side of a benchmark or test in a namespace of its
own process (no GIL shared with the fasttcp event loop)::

    python interop_util.py --netns NS send   --connect IP:PORT --bytes N [--cc cubic]
    python interop_util.py --netns NS get    --connect IP:PORT --bytes N   # HTTP GET
    python interop_util.py --netns NS sink   --listen IP:PORT --count K    # discard server
    python interop_util.py --netns NS aio-sink --listen IP:PORT --count K  # ... on asyncio
    python interop_util.py --netns NS aio-http --listen IP:PORT --bytes N  # HttpServer
    python interop_util.py --netns NS source --listen IP:PORT --count K --bytes N  # HTTP
    python interop_util.py --netns NS gets   --connect IP:PORT --bytes N --count K  # K GETs
    python interop_util.py --netns NS exec -- PROGRAM ARGS...              # e.g. curl

``source --stats`` prints, after its ``--count`` connections, one JSON line of what the
kernel's sender did (:func:`net_counters`, :func:`tcp_info`); ``gets`` prints one JSON
line with each GET's seconds (connect to EOF, one after another).

``send`` and ``get`` print one JSON line: ``{"bytes": ..., "seconds": ..., "cpu": ...}``
with the time from just before ``connect()`` to the peer's EOF (so every byte was
delivered) and the client's own CPU time over that span. The
servers print ``ready`` once listening and stop after ``--count`` connections.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import socket
import sys
import time
from contextlib import contextmanager
from typing import Any, Awaitable, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:                     # benchmarks import us from tests/
    sys.path.insert(0, HERE)

KERNEL = "10.77.0.1"       # the kernel's address on the TUN device
US = "10.77.0.2"           # fasttcp's address
VETH_A, VETH_B = "10.77.1.1", "10.77.1.2"
CHUNK = 1 << 20
#: The fixed first line of an HTTP response from :func:`serve_source`.
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"


# ==========================================================================================
# Namespaces, links, hosts (test-process side)
# ==========================================================================================

@contextmanager
def tun_netns(offload: bool = True, mtu: int = 1500, **link_kw: Any) -> Iterator[Tuple[str, Any]]:
    """A private namespace with a TUN link in it: yields ``(netns, link)``; the kernel is
    KERNEL/24 on the device, fasttcp is US. Link and namespace are gone afterwards.

    Usable inside a running event loop too (TunLink does its netlink work in a helper
    thread there), though it blocks the loop while it sets up."""
    from netns_util import temp_netns, unique_ifname

    from fasttcp.link.tun import TunLink

    with temp_netns() as ns:
        link = TunLink(unique_ifname("fti"), address=US, prefix=24, mtu=mtu, netns=ns,
                       offload=offload, **link_kw)
        try:
            yield ns, link
        finally:
            link.close()


def make_host(link: Any, **settings: Any) -> Any:
    """A fasttcp Host on US that fits ``link`` (MTU, TSO super-segments if offloaded)."""
    from fasttcp import Host

    settings.setdefault("mtu", link.mtu)
    settings.setdefault("gso_max", 65000 if link.offload else 0)
    return Host(US, **settings)


@contextmanager
def veth_netns(mtu: int = 1500) -> Iterator[Tuple[str, str]]:
    """Two namespaces joined by a veth pair (pyroute2): yields ``(ns_a, ns_b)``; ns_a has
    VETH_A/24, ns_b has VETH_B/24. Both are removed afterwards (the pair goes with them)."""
    from netns_util import temp_netns

    from fasttcp.link import netns as ns

    with temp_netns() as a, temp_netns() as b:
        with ns.iproute(a) as ipr:
            ipr.link("add", ifname="veth-a", kind="veth",
                     peer={"ifname": "veth-b", "net_ns_fd": b})
            idx = ipr.link_lookup(ifname="veth-a")[0]
            ipr.link("set", index=idx, mtu=mtu)
            ipr.addr("add", index=idx, address=VETH_A, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with ns.iproute(b) as ipr:
            idx = ipr.link_lookup(ifname="veth-b")[0]
            ipr.link("set", index=idx, mtu=mtu)
            ipr.addr("add", index=idx, address=VETH_B, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        yield a, b


def run_async(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    """``asyncio.run`` with an overall time limit (no test can hang on the loop)."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def script_cmd(netns: str, *args: str) -> List[str]:
    """argv that runs this file as the kernel side inside ``netns``."""
    return [sys.executable, os.path.abspath(__file__), "--netns", netns, *args]


def sha256_file(path: str) -> Tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


# ==========================================================================================
# Kernel-side socket work (blocking; run in a thread or in the script below)
# ==========================================================================================

def recv_to_eof(sock: socket.socket, hasher: Any = None, limit: int = 1 << 34) -> int:
    """Read until EOF; returns the byte count (optionally hashing). Bounded by ``limit``."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    while total <= limit:
        n = sock.recv_into(buf)
        if not n:
            return total
        if hasher is not None:
            hasher.update(view[:n])
        total += n
    raise AssertionError(f"more than {limit} bytes received")


def send_blocks(sock: socket.socket, size: int, block: Optional[bytes] = None) -> None:
    """Send ``size`` bytes: ``block`` repeated (default: zeros), 1 MiB per sendall."""
    view = memoryview(block if block is not None else bytes(CHUNK))
    left = size
    while left:
        n = min(left, len(view))
        sock.sendall(view[:n])
        left -= n


def read_http_head(sock: socket.socket, limit: int = 1 << 16) -> Tuple[bytes, bytes]:
    """Read up to the end of an HTTP head: ``(head, bytes already read past it)``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"EOF inside the HTTP head: {data[:200]!r}")
        data += chunk
        if len(data) > limit:
            raise ValueError("HTTP head too long")
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system, every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def hrtimer_softirqs() -> Optional[int]:
    """HRTIMER softirqs so far, all CPUs (``/proc/softirqs``; None where unreadable).
    During a bulk send from a bbr socket nearly all of them are its pacing timer: without
    an fq qdisc, TCP paces each burst with an hrtimer of its own. An idle second of this
    machine raises none."""
    try:
        with open("/proc/softirqs") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "HRTIMER:":
                    return sum(int(x) for x in fields[1:])
    except (OSError, ValueError):
        pass
    return None


def client_send(addr: Tuple[str, int], size: int, cc: Optional[str] = None) -> dict:
    """Connect, send ``size`` bytes, half-close, wait for the peer's EOF. ``cpu`` is this
    process's CPU time over the same span (user + system, which includes the kernel's
    TCP work done in its context). ``cc`` picks the socket's congestion control
    (TCP_CONGESTION, e.g. "cubic"); by default the namespace's default (sysctl)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(60)
    if cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    try:
        c0 = cpu_seconds()
        h0 = hrtimer_softirqs()
        t0 = time.perf_counter()
        s.connect(addr)
        send_blocks(s, size)
        s.shutdown(socket.SHUT_WR)
        recv_to_eof(s, limit=1 << 20)
        res = {"bytes": size, "seconds": time.perf_counter() - t0, "cpu": cpu_seconds() - c0}
        h1 = hrtimer_softirqs()
        if h0 is not None and h1 is not None:
            res["hrtimer_softirqs"] = h1 - h0
        return res
    finally:
        s.close()


def client_get(addr: Tuple[str, int], size: int) -> dict:
    """HTTP GET; read the body to EOF; checks its length is ``size``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        s.connect(addr)
        s.sendall(f"GET /bench HTTP/1.1\r\nHost: {addr[0]}\r\nConnection: close\r\n\r\n"
                  .encode())
        head, rest = read_http_head(s)
        got = len(rest) + recv_to_eof(s, limit=size)
        dt = time.perf_counter() - t0
        if not head.startswith(b"HTTP/1.1 200") or got != size:
            raise RuntimeError(f"bad response: {head[:100]!r}, {got} of {size} bytes")
        return {"bytes": got, "seconds": dt, "cpu": cpu_seconds() - c0}
    finally:
        s.close()


#: The namespace's TCP counters a sender's loss recovery moves: (file, prefix, name).
_NET_COUNTERS = (("snmp", "Tcp", "RetransSegs"), ("netstat", "TcpExt", "TCPTimeouts"),
                 ("netstat", "TcpExt", "TCPLossProbes"), ("netstat", "TcpExt", "TCPSpuriousRTOs"),
                 ("netstat", "TcpExt", "TCPLossUndo"), ("netstat", "TcpExt", "TCPSackRecovery"),
                 ("netstat", "TcpExt", "TCPFullUndo"), ("netstat", "TcpExt", "TCPPartialUndo"),
                 ("netstat", "TcpExt", "TCPDSACKUndo"), ("netstat", "TcpExt", "TCPDSACKRecv"))


def net_counters() -> dict:
    """The TCP counters of this process's network namespace (``/proc/self/net/snmp`` and
    ``netstat``: what ``nstat`` shows), by name; missing ones are left out."""
    tables: dict = {}
    for fname in ("snmp", "netstat"):
        try:
            with open(f"/proc/self/net/{fname}") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for head, vals in zip(lines[::2], lines[1::2]):
            prefix, names = head.split(":", 1)
            tables[(fname, prefix)] = dict(zip(names.split(), vals.split(":", 1)[1].split()))
    out = {}
    for fname, prefix, name in _NET_COUNTERS:
        v = tables.get((fname, prefix), {}).get(name)
        if v is not None:
            out[name] = int(v)
    return out


def tcp_info(sock: socket.socket) -> dict:
    """A few fields of the kernel's TCP_INFO for ``sock`` (linux/tcp.h struct tcp_info):
    ``total_retrans`` (segments retransmitted), the congestion window and slow-start
    threshold (segments), the smoothed RTT (us), the reordering degree and, from Linux
    6.7, ``total_rto``."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    u32 = lambda off: int.from_bytes(raw[off:off + 4], sys.byteorder)    # noqa: E731
    out = {"total_retrans": u32(100), "snd_cwnd": u32(80), "snd_ssthresh": u32(76),
           "rtt_us": u32(68), "reordering": u32(88)}
    if len(raw) >= 244:
        out["total_rto"] = int.from_bytes(raw[240:242], sys.byteorder)
    return out


def _serve(addr: Tuple[str, int], count: int, handle) -> None:
    """Accept ``count`` connections one after another, run ``handle(conn)`` on each, close
    it; prints "ready" once listening."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(addr)
    ls.listen(16)
    ls.settimeout(120)
    print("ready", flush=True)
    for _ in range(count):
        c, _peer = ls.accept()
        c.settimeout(60)
        try:
            handle(c)
        finally:
            c.close()
    ls.close()


def serve_sink(addr: Tuple[str, int], count: int) -> None:
    """Accept ``count`` connections one after another; read each to EOF, then close."""
    _serve(addr, count, recv_to_eof)


def serve_aio_sink(addr: Tuple[str, int], count: int) -> None:
    """``sink`` in Python asyncio on the kernel's sockets: fasttcp's own ``discard``
    handler on ``asyncio.start_server`` (StreamReader and all), for ``count`` connections.
    What a Python program gets from the kernel's TCP with the same code."""
    try:
        from fasttcp.cli.servers import discard
    except ImportError:                      # run as a script from a source checkout
        sys.path.insert(0, os.path.dirname(HERE))
        from fasttcp.cli.servers import discard

    async def main() -> None:
        done = asyncio.Event()
        served = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            await discard(reader, writer)
            served += 1
            if served >= count:
                done.set()

        server = await asyncio.start_server(handle, addr[0], addr[1], reuse_address=True)
        print("ready", flush=True)
        try:
            await asyncio.wait_for(done.wait(), 120)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def serve_aio_http(addr: Tuple[str, int], size: int, seconds: float = 120.0) -> None:
    """fasttcp's ``HttpServer`` (``fasttcp serve http --size N``'s handler) on
    ``asyncio.start_server``, the kernel's sockets, until SIGTERM or ``seconds``."""
    import signal

    try:
        from fasttcp.cli.servers import HttpServer
    except ImportError:                      # run as a script from a source checkout
        sys.path.insert(0, os.path.dirname(HERE))
        from fasttcp.cli.servers import HttpServer

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(HttpServer(size=size), addr[0], addr[1],
                                            reuse_address=True, backlog=1024)
        print("ready", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            server.close()

    asyncio.run(main())


def serve_source(addr: Tuple[str, int], count: int, size: int, stats: bool = False,
                 cc: Optional[str] = None) -> None:
    """Accept ``count`` connections; answer each HTTP request with ``size`` bytes. ``cc``
    picks the sending sockets' congestion control (TCP_CONGESTION; by default the
    namespace's). With ``stats``, print afterwards what the kernel's sender did: the
    namespace's counters' change (:func:`net_counters`) and TCP_INFO summed over the
    connections, each read once its peer has read everything (its EOF after ours)."""
    info: dict = {"total_retrans": 0}
    before = net_counters()

    def answer(c: socket.socket) -> None:
        if cc:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        info["cc"] = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16) \
            .rstrip(b"\0").decode()
        read_http_head(c)
        c.sendall(HTTP_OK % size)
        send_blocks(c, size)
        if stats:
            c.shutdown(socket.SHUT_WR)
            recv_to_eof(c, limit=1 << 16)           # every byte acknowledged
            for k, v in tcp_info(c).items():
                info[k] = info.get(k, 0) + v if k == "total_retrans" else v
    _serve(addr, count, answer)
    if stats:
        after = net_counters()
        info.update({k: after[k] - before.get(k, 0) for k in after})
        print(json.dumps(info), flush=True)


def client_gets(addr: Tuple[str, int], size: int, count: int,
                seconds: float = 300.0) -> dict:
    """``count`` HTTP GETs of ``size`` bytes one after another, each on a new connection;
    the seconds of each (connect to EOF). Stops early after ``seconds`` in all."""
    times = []
    end = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > end:
            break
        times.append(client_get(addr, size)["seconds"])
    return {"bytes": size, "seconds": times}


def _hostport(text: str) -> Tuple[str, int]:
    h, p = text.rsplit(":", 1)
    return h, int(p)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--netns", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("send", "get"):
        p = sub.add_parser(mode)
        p.add_argument("--connect", type=_hostport, required=True)
        p.add_argument("--bytes", type=int, required=True)
        if mode == "send":
            p.add_argument("--cc", default=None, help="congestion control (TCP_CONGESTION)")
    p = sub.add_parser("gets")
    p.add_argument("--connect", type=_hostport, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seconds", type=float, default=300.0)
    for mode in ("sink", "source", "aio-sink", "aio-http"):
        p = sub.add_parser(mode)
        p.add_argument("--listen", type=_hostport, required=True)
        p.add_argument("--count", type=int, default=1)
        p.add_argument("--bytes", type=int, default=0)
        if mode == "source":
            p.add_argument("--stats", action="store_true",
                           help="print the kernel sender's counters at the end")
            p.add_argument("--cc", default=None, help="congestion control (TCP_CONGESTION)")
    p = sub.add_parser("exec")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)

    from pyroute2 import netns as pnetns
    pnetns.setns(args.netns, flags=0)      # the whole (single-threaded) process moves

    if args.mode == "exec":
        argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        os.execv(argv_[0], argv_)
    if args.mode == "send":
        print(json.dumps(client_send(args.connect, args.bytes, args.cc)), flush=True)
    elif args.mode == "get":
        print(json.dumps(client_get(args.connect, args.bytes)), flush=True)
    elif args.mode == "sink":
        serve_sink(args.listen, args.count)
    elif args.mode == "aio-sink":
        serve_aio_sink(args.listen, args.count)
    elif args.mode == "source":
        serve_source(args.listen, args.count, args.bytes, args.stats, args.cc)
    elif args.mode == "gets":
        print(json.dumps(client_gets(args.connect, args.bytes, args.count, args.seconds)),
              flush=True)
    elif args.mode == "aio-http":
        serve_aio_http(args.listen, args.bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
