"""Helpers for running fasttcp against the Linux kernel's TCP: a TUN link in a private
network namespace, a veth pair between two namespaces (the kernel-to-kernel baseline), and
small kernel-side programs that run inside a namespace.

Used by ``tests/test_interop.py`` and ``benchmarks/bench_tun.py``. Every namespace is made
by :func:`netns_util.temp_netns` (unique name, removed on exit even after a failure); the
only addresses in play are 10.77.x.0/24, fd77::/64 (the TUN), fd77:1::/64 (veth) and, in
:func:`router_netns`, fd78::/64 and fd79::/64, inside those namespaces.

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
import struct
import sys
import time
from contextlib import contextmanager
from typing import Any, Awaitable, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:                     # benchmarks import us from tests/
    sys.path.insert(0, HERE)

KERNEL = "10.77.0.1"       # the kernel's address on the TUN device
US = "10.77.0.2"           # fasttcp's address
KERNEL6 = "fd77::1"        # the same over IPv6 (a unique local /64, RFC 4193)
US6 = "fd77::2"
VETH_A, VETH_B = "10.77.1.1", "10.77.1.2"
VETH_A6, VETH_B6 = "fd77:1::1", "fd77:1::2"
#: router_netns: the TUN namespace's and the router's ends of the first veth link, and the
#: router's and the server's ends of the second (the narrow one).
R_TUN6, R_IN6 = "fd78::1", "fd78::2"
R_OUT6, SERVER6 = "fd79::1", "fd79::2"
CHUNK = 1 << 20
#: The fixed first line of an HTTP response from :func:`serve_source`.
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"


# ==========================================================================================
# Namespaces, links, hosts (test-process side)
# ==========================================================================================

#: ``tun_netns(family=...)``: fasttcp's addresses on the TUN link for each choice.
FAMILY_ADDRESSES = {"ipv4": [f"{US}/24"], "ipv6": [f"{US6}/64"],
                    "dual": [f"{US}/24", f"{US6}/64"]}


@contextmanager
def tun_netns(offload: bool = True, mtu: int = 1500, family: str = "ipv4",
              **link_kw: Any) -> Iterator[Tuple[str, Any]]:
    """A private namespace with a TUN link in it: yields ``(netns, link)``; the kernel is
    KERNEL/24 on the device, fasttcp is US - or, with ``family="ipv6"``, KERNEL6/64 and
    US6, or with ``family="dual"`` both (``link.addresses``). Link and namespace are gone
    afterwards. ``addresses=[...]`` in ``link_kw`` overrides ``family``.

    Usable inside a running event loop too (TunLink does its netlink work in a helper
    thread there), though it blocks the loop while it sets up."""
    from netns_util import temp_netns, unique_ifname

    from fasttcp.link.tun import TunLink

    if family not in FAMILY_ADDRESSES:
        raise ValueError(f"family must be one of {sorted(FAMILY_ADDRESSES)}")
    link_kw.setdefault("addresses", FAMILY_ADDRESSES[family])
    with temp_netns() as ns:
        link = TunLink(unique_ifname("fti"), mtu=mtu, netns=ns, offload=offload, **link_kw)
        try:
            yield ns, link
        finally:
            link.close()


def make_host(link: Any, **settings: Any) -> Any:
    """A fasttcp Host on the link's addresses (US by default) that fits ``link`` (MTU, TSO
    super-segments if offloaded). Several addresses (a dual-stack link) go to the Host as
    a list."""
    from fasttcp import Host

    settings.setdefault("mtu", link.mtu)
    settings.setdefault("gso_max", 65000 if link.offload else 0)
    addrs = list(getattr(link, "addresses", ()) or (US,))
    return Host(addrs[0] if len(addrs) == 1 else addrs, **settings)


def family_of(address: str) -> int:
    """AF_INET6 for an IPv6 address, else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def hostport(address: str, port: int) -> str:
    """``10.77.0.2:80`` or ``[fd77::2]:80`` (RFC 3986 3.2.2: IPv6 in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def http_url(address: str, port: int = 80, path: str = "/") -> str:
    """The URL curl takes for ``address``: ``http://[fd77::2]:8080/file`` for IPv6."""
    return f"http://{hostport(address, port)}{path}"


def curl_argv(address: str, port: int = 80, path: str = "/", extra: Tuple[str, ...] = (),
              curl: Optional[str] = None) -> List[str]:
    """curl (by absolute path, for ``exec``) fetching ``http_url(...)``, forced to the
    address's family (-4 / -6) and without URL globbing (brackets are literal)."""
    import shutil

    return [curl or shutil.which("curl") or "/usr/bin/curl", "-sS", "-g",
            "-6" if ":" in address else "-4", *extra, http_url(address, port, path)]


def ping(netns: str, address: str, count: int = 3, payload: bytes = b"fasttcp-ping",
         timeout: float = 2.0, ident: int = 0x4654) -> List[float]:
    """What ``ping`` / ``ping -6`` does, from a raw socket of the kernel in ``netns``:
    ``count`` ICMP (ICMPv6, RFC 4443 4.1) echo requests to ``address``, one at a time.
    Returns the round-trip time of each (seconds); TimeoutError if one goes unanswered
    within ``timeout``. Each reply must carry the request's identifier, sequence number
    and payload."""
    from netns_util import sock_in

    v6 = ":" in address
    if v6:
        s = sock_in(netns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6,
                    timeout=timeout)
        request, reply = 128, 129
    else:
        s = sock_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP,
                    timeout=timeout)
        request, reply = 8, 0
    rtts: List[float] = []
    try:
        for seq in range(1, count + 1):
            msg = bytearray(struct.pack("!BBHHH", request, 0, 0, ident, seq) + payload)
            if not v6:             # ICMPv6 raw sockets get their checksum from the kernel
                msg[2:4] = struct.pack("!H", inet_checksum(bytes(msg)))
            t0 = time.perf_counter()
            s.sendto(bytes(msg), (address, 0))
            end = time.monotonic() + timeout
            for _ in range(1000):
                if time.monotonic() > end:
                    raise TimeoutError(f"no echo reply from {address} (seq {seq})")
                s.settimeout(max(0.001, end - time.monotonic()))
                try:
                    data, _peer = s.recvfrom(65535)
                except socket.timeout:
                    raise TimeoutError(f"no echo reply from {address} (seq {seq})") from None
                if not v6:
                    data = data[(data[0] & 15) * 4:]              # past the IPv4 header
                if len(data) < 8 or data[0] != reply:
                    continue                                       # our own request, ...
                if struct.unpack("!HH", data[4:8]) != (ident, seq):
                    continue
                if data[8:] != payload:
                    raise AssertionError(f"echo reply payload differs: {data[8:]!r}")
                rtts.append(time.perf_counter() - t0)
                break
            else:
                raise TimeoutError(f"no echo reply from {address} (seq {seq})")
    finally:
        s.close()
    return rtts


def route_into_tun(netns: str, link: Any, prefixes: List[str]) -> None:
    """Route each prefix (either family) into the TUN device inside ``netns``, as ``ip
    route add PREFIX dev TUN``: destinations a fasttcp host intercepts."""
    from fasttcp.link import netns as ns_mod

    with ns_mod.iproute(netns) as ipr:
        idx = ipr.link_lookup(ifname=link.name)[0]
        for p in prefixes:
            ipr.route("add", dst=p, oif=idx)


class WhoAmI(asyncio.Protocol):
    """Says the original destination it was reached at ("HOST PORT\\n", from its
    transport's sockname), then echoes to EOF: a server for intercepted flows."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        transport.write(f"{host} {port}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> None:
        self.transport.close()


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071), written out independently of fasttcp.wire."""
    if len(data) % 2:
        data += b"\0"
    acc = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def _add_addr6(ipr: Any, idx: int, address: str, prefix: int = 64) -> None:
    """An IPv6 address without Duplicate Address Detection (usable at once)."""
    ipr.addr("add", index=idx, address=address, prefixlen=prefix, flags=0x02)  # NODAD


def _wait_local6(ns_name: str, addresses: List[str], timeout: float = 5.0) -> None:
    """Until each address has its local route in ``ns_name`` (Linux adds it from a work
    queue, also without DAD)."""
    from netns_util import wait_until

    from fasttcp.link import netns as ns

    def ready() -> bool:
        with ns.iproute(ns_name) as ipr:
            return all(any(r["type"] == 2 for r in ipr.route("get", dst=a))
                       for a in addresses)
    if not wait_until(ready, timeout, 0.005):
        raise TimeoutError(f"IPv6 addresses {addresses} not usable in {ns_name}")


def _wait_carrier(ns_name: str, ifname: str, timeout: float = 5.0) -> None:
    """Until ``ifname`` in ``ns_name`` is operationally up (a veth has its carrier once
    both ends are up; IPv6 sends nothing, neighbour solicitations included, before)."""
    from netns_util import wait_until

    from fasttcp.link import netns as ns

    def up() -> bool:
        with ns.iproute(ns_name) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            return bool(idx) and ipr.get_links(idx[0])[0].get_attr("IFLA_OPERSTATE") == "UP"
    if not wait_until(up, timeout, 0.005):
        raise TimeoutError(f"{ifname} in {ns_name} did not come up")


def _ipv6_ready(ns_name: str, forwarding: bool = False) -> None:
    """IPv6 on in a namespace, no DAD on devices made later, forwarding as asked."""
    from fasttcp.link import netns as ns

    for conf in ("all", "default"):
        ns.write_net_sysctl(ns_name, f"ipv6/conf/{conf}/disable_ipv6", "0")
        ns.write_net_sysctl(ns_name, f"ipv6/conf/{conf}/accept_dad", "0")
    if forwarding:
        ns.write_net_sysctl(ns_name, "ipv6/conf/all/forwarding", "1")


def _veth(a: str, b: str, name_a: str, name_b: str, mtu: int) -> Tuple[int, int]:
    """A veth pair from namespace ``a`` (``name_a``) to ``b`` (``name_b``), both up at
    ``mtu``; returns their interface indexes."""
    from fasttcp.link import netns as ns

    with ns.iproute(a) as ipr:
        ipr.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": b})
        ia = ipr.link_lookup(ifname=name_a)[0]
        ipr.link("set", index=ia, mtu=mtu, state="up")
    with ns.iproute(b) as ipr:
        ib = ipr.link_lookup(ifname=name_b)[0]
        ipr.link("set", index=ib, mtu=mtu, state="up")
    _wait_carrier(a, name_a)
    _wait_carrier(b, name_b)
    return ia, ib


class RouterNet:
    """``router_netns``'s topology (all names and addresses)::

        fasttcp --TUN-- [tun_ns] --veth MTU 1500-- [router_ns] --veth MTU narrow_mtu-- [server_ns]
        US6             KERNEL6   R_TUN6      R_IN6            R_OUT6            SERVER6

    ``tun_ns`` and ``router_ns`` forward IPv6; a packet from fasttcp to SERVER6 larger
    than the narrow link gets an ICMPv6 Packet Too Big (RFC 4443 3.2) from the router
    (source R_IN6), with the narrow link's MTU."""

    def __init__(self, tun_ns: str, link: Any, router_ns: str, server_ns: str,
                 narrow_mtu: int) -> None:
        self.tun_ns, self.link, self.router_ns, self.server_ns = (tun_ns, link, router_ns,
                                                                  server_ns)
        self.narrow_mtu = narrow_mtu
        self.us, self.kernel, self.router, self.server = US6, KERNEL6, R_IN6, SERVER6


@contextmanager
def router_netns(offload: bool = True, mtu: int = 1500, narrow_mtu: int = 1280,
                 **link_kw: Any) -> Iterator[RouterNet]:
    """Three namespaces (see :class:`RouterNet`): the TUN link's, a router's and a
    server's, the router's link to the server ``narrow_mtu`` wide (1280: the IPv6
    minimum). Everything is removed afterwards."""
    from netns_util import temp_netns

    from fasttcp.link import netns as ns

    with temp_netns() as tun_ns, temp_netns() as router, temp_netns() as server:
        _ipv6_ready(tun_ns, forwarding=True)
        _ipv6_ready(router, forwarding=True)
        _ipv6_ready(server)
        ia, ib = _veth(tun_ns, router, "vr0", "vr1", 1500)
        oa, ob = _veth(router, server, "vs0", "vs1", narrow_mtu)
        with ns.iproute(tun_ns) as ipr:
            _add_addr6(ipr, ia, R_TUN6)
            ipr.route("add", dst="fd79::/64", gateway=R_IN6)
        with ns.iproute(router) as ipr:
            _add_addr6(ipr, ib, R_IN6)
            _add_addr6(ipr, oa, R_OUT6)
            ipr.route("add", dst="fd77::/64", gateway=R_TUN6)
        with ns.iproute(server) as ipr:
            _add_addr6(ipr, ob, SERVER6)
            ipr.route("add", dst="::/0", gateway=R_OUT6)
        _wait_local6(tun_ns, [R_TUN6])
        _wait_local6(router, [R_IN6, R_OUT6])
        _wait_local6(server, [SERVER6])
        from netns_util import unique_ifname

        from fasttcp.link.tun import TunLink

        link_kw.setdefault("addresses", FAMILY_ADDRESSES["ipv6"])
        link = TunLink(unique_ifname("ftr"), mtu=mtu, netns=tun_ns, offload=offload,
                       **link_kw)
        try:
            yield RouterNet(tun_ns, link, router, server, narrow_mtu)
        finally:
            link.close()


@contextmanager
def veth_netns(mtu: int = 1500, ipv6: bool = False) -> Iterator[Tuple[str, str]]:
    """Two namespaces joined by a veth pair (pyroute2): yields ``(ns_a, ns_b)``; ns_a has
    VETH_A/24, ns_b has VETH_B/24 (and with ``ipv6`` VETH_A6/64 and VETH_B6/64, usable
    at once). Both are removed afterwards (the pair goes with them)."""
    from netns_util import temp_netns

    from fasttcp.link import netns as ns

    with temp_netns() as a, temp_netns() as b:
        if ipv6:
            _ipv6_ready(a)
            _ipv6_ready(b)
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
            if ipv6:
                _add_addr6(ipr, idx, VETH_B6)
            ipr.link("set", index=idx, state="up")
        if ipv6:
            with ns.iproute(a) as ipr:
                _add_addr6(ipr, ipr.link_lookup(ifname="veth-a")[0], VETH_A6)
            _wait_local6(a, [VETH_A6])
            _wait_local6(b, [VETH_B6])
            _wait_carrier(a, "veth-a")
            _wait_carrier(b, "veth-b")
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

_TCP_INFO_FIELDS = (
    "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
    "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv", "pmtu",
    "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
    "rcv_rtt", "rcv_space", "total_retrans")


def kernel_tcp_info(sock: socket.socket) -> Dict[str, int]:
    """The kernel socket's TCP_INFO (linux/tcp.h struct tcp_info, the stable prefix)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    head = dict(zip(("state", "ca_state", "retransmits", "probes", "backoff", "options",
                     "wscale", "flags"), raw[:8]))
    head.update(zip(_TCP_INFO_FIELDS, struct.unpack_from("=24I", raw, 8)))
    return head


def stall_report(host: Any, sock: Optional[socket.socket] = None) -> str:
    """What a hung transfer looked like: fasttcp's counters and connections, and the
    kernel peer's TCP_INFO. Printed by tests when a transfer times out, so a failure in
    CI says where the bytes stopped."""
    lines = ["fasttcp stats: " + repr({k: v for k, v in host.stats().items() if v})]
    for conn in host.connections():
        try:
            lines.append(f"fasttcp connection {conn!r}: {conn.info()!r}")
        except Exception as e:  # noqa: BLE001 - a report must not hide the real failure
            lines.append(f"fasttcp connection {conn!r}: info() failed: {e!r}")
    if sock is not None:
        try:
            lines.append(f"kernel TCP_INFO: {kernel_tcp_info(sock)!r}")
        except OSError as e:
            lines.append(f"kernel TCP_INFO unavailable: {e!r}")
    return "\n".join(lines)


def send_and_read_to_eof(sock: socket.socket, data: bytes, max_reads: int = 10_000) -> bytes:
    """Send ``data`` on a connected socket, half-close (SHUT_WR), and return everything
    the peer sends until its EOF; AssertionError after ``max_reads`` reads without one."""
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    got = bytearray()
    for _ in range(max_reads):
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(got)
        got += chunk
    raise AssertionError("no EOF")


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
    s = socket.socket(family_of(addr[0]), socket.SOCK_STREAM)
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
    s = socket.socket(family_of(addr[0]), socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        s.connect(addr)
        s.sendall(f"GET /bench HTTP/1.1\r\nHost: {hostport(*addr)}\r\nConnection: "
                  "close\r\n\r\n".encode())
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
    ls = socket.socket(family_of(addr[0]), socket.SOCK_STREAM)
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
    """``IP:PORT``, or ``[IPv6]:PORT``."""
    h, p = text.rsplit(":", 1)
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
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
