"""UDP against the real kernel over TUN (issue 15), both families, in a namespace the test
creates: kernel UDP socket <-> fasttcp endpoint request/response, 10,000 datagrams with
loss counted, a 4,000-byte datagram each way (fragments), ICMP port unreachable as
ECONNREFUSED. Bounded in count and time."""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any, Dict, Optional, Tuple

import pytest
from interop_util import KERNEL, KERNEL6, US, US6, make_host, route_into_tun, tun_netns
from netns_util import TUN_MARKS, Background, sock_in

import fasttcp.aio

pytestmark = TUN_MARKS

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
N = 10_000
WINDOW = 32


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


def kernel_drops(sock: socket.socket) -> Tuple[Optional[bytes], int]:
    """One datagram and the socket's SO_RXQ_OVFL drop count (datagrams the kernel dropped
    for a full receive buffer since the socket was made)."""
    data, anc, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(4))
    drops = 0
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
            drops = struct.unpack("I", value[:4])[0]
    return data, drops


def run_with_stack(family: str, client_fn: Any, timeout: float = 60.0) -> Dict[str, Any]:
    """A fasttcp echo endpoint on port 7 over a TUN; ``client_fn(netns, server_ip)`` runs in
    a thread with kernel sockets in the namespace. Returns its result and fasttcp's
    counters."""
    with tun_netns(family=family) as (ns, link):
        host = make_host(link)
        server_ip = US6 if family == "ipv6" else US

        async def main() -> Dict[str, Any]:
            stack = await fasttcp.aio.start(host, link)
            try:
                await stack.create_datagram_endpoint(Echo, local_addr=(None, 7))
                bg = Background(lambda: client_fn(ns, server_ip))
                end = time.monotonic() + timeout
                while bg.thread.is_alive() and time.monotonic() < end:
                    await asyncio.sleep(0.01)
                result = bg.join(1)
                return {"result": result, "stats": host.stats(), "link": link.stats(),
                        "driver": dict(stack.stats)}
            finally:
                stack.close()

        return asyncio.run(main())


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_request_response_10k(family: str) -> None:
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET

    def client(ns: str, server_ip: str) -> Dict[str, int]:
        s = sock_in(ns, af, socket.SOCK_DGRAM, timeout=0.5)
        s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        s.connect((server_ip, 7))
        assert s.send(b"hello") == 5
        assert s.recv(100) == b"hello"               # the request/response round trip
        got: set = set()
        drops = 0
        deadline = time.monotonic() + 40
        # paced by windows of WINDOW datagrams: what a lossless TUN should deliver whole
        for base in range(0, N, WINDOW):
            if time.monotonic() > deadline:
                break
            for i in range(base, min(base + WINDOW, N)):
                s.send(b"%08d" % i + bytes(56))
            for _ in range(min(WINDOW, N - base)):
                try:
                    data, drops = kernel_drops(s)
                except socket.timeout:
                    break
                got.add(int(data[:8]))
        s.close()
        return {"received": len(got), "kernel_drops": drops}

    out = run_with_stack(family, client)
    res, st = out["result"], out["stats"]
    lost = N - res["received"]
    assert res["received"] >= 0.99 * N
    # every datagram lost is a drop counted somewhere: fasttcp's receive queue, its parse,
    # the link, the driver's send queue, or the kernel socket's buffer
    counted = (st.get("udp_rcvbuf_errors", 0) + res["kernel_drops"]
               + sum(v for k, v in st.items() if k.startswith("drop_"))
               + out["driver"].get("send_dropped", 0)
               + out["link"].get("rx_csum_errors", 0) + out["link"].get("rx_errors", 0))
    assert lost <= counted, (lost, counted, st)
    assert st["udp_datagrams_in"] >= res["received"]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_4000_byte_datagram_each_way(family: str) -> None:
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET

    def client(ns: str, server_ip: str) -> bytes:
        s = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
        s.connect((server_ip, 7))
        big = bytes(range(256)) * 15 + b"x" * 160
        assert len(big) == 4000
        s.send(big)                                   # the kernel fragments it
        back = s.recv(8192)                           # fasttcp fragmented the echo
        s.close()
        assert back == big
        return back

    out = run_with_stack(family, client, timeout=20)
    assert len(out["result"]) == 4000
    assert out["stats"]["datagrams_reassembled"] >= 1
    assert out["stats"]["fragments_in"] >= 3


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_sees_port_unreachable_as_refused(family: str) -> None:
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET

    def client(ns: str, server_ip: str) -> str:
        s = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
        s.connect((server_ip, 9))                    # nothing bound there
        s.send(b"anyone?")
        try:
            s.recv(100)
        except ConnectionRefusedError:
            return "refused"
        finally:
            s.close()
        return "no error"

    out = run_with_stack(family, client, timeout=20)
    assert out["result"] == "refused"
    assert out["stats"]["icmp_port_unreachables_out"] == 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fasttcp_client_to_kernel_server(family: str) -> None:
    """The other direction: a fasttcp endpoint asks a kernel UDP server."""
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
    kernel_ip = KERNEL6 if family == "ipv6" else KERNEL
    with tun_netns(family=family) as (ns, link):
        host = make_host(link)
        srv = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
        srv.bind((kernel_ip, 5300))

        def serve() -> None:
            data, addr = srv.recvfrom(65536)
            srv.sendto(data[::-1], addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(self) -> None:
                self.fut = asyncio.get_running_loop().create_future()

            def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
                if not self.fut.done():
                    self.fut.set_result((data, addr))

        async def main() -> Tuple[bytes, Tuple[Any, ...]]:
            stack = await fasttcp.aio.start(host, link)
            try:
                bg = Background(serve)
                t, p = await stack.create_datagram_endpoint(Client,
                                                            remote_addr=(kernel_ip, 5300))
                t.sendto(b"abc" * 1500)                  # 4,500 bytes: fragments
                got = await asyncio.wait_for(p.fut, 10)
                bg.join(5)
                return got
            finally:
                stack.close()

        try:
            data, addr = asyncio.run(main())
        finally:
            srv.close()
        assert data == (b"abc" * 1500)[::-1] and addr[:2] == (kernel_ip, 5300)


def _intercepted_target(family: str) -> Tuple[int, str, str]:
    """(address family, a destination, the prefix routed into the TUN around it)."""
    if family == "ipv6":
        return socket.AF_INET6, "fd00:99::5", "fd00:99::/64"
    return socket.AF_INET, "10.99.0.5", "10.99.0.0/16"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_client_to_intercepted_flow(family: str) -> None:
    """A destination routed into the TUN (not fasttcp's address) is intercepted: the kernel
    client's datagram becomes a flow, whose reply comes from that destination; a second
    flow answers ICMP unreachable, which the kernel's connected socket reports as
    ECONNREFUSED. The kernel's datagrams come with offloads (partial checksums)."""
    af, dst, prefix = _intercepted_target(family)
    with tun_netns(family=family) as (ns, link):
        route_into_tun(ns, link, [prefix])
        host = make_host(link)
        seen: list = []

        class Flow(asyncio.DatagramProtocol):
            def __init__(self, local: Tuple[Any, ...], remote: Tuple[Any, ...]) -> None:
                self.local = local

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport: Any = transport

            def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
                seen.append((self.local[:2], data))
                if self.local[1] == 53:
                    self.transport.sendto(b"answer to " + data)
                else:
                    self.transport.unreachable(4 if family == "ipv6" else 3)

        def client() -> Tuple[bytes, Tuple[Any, ...], str]:
            s = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
            s.connect((dst, 53))
            s.send(b"query")
            data, addr = s.recvfrom(100)
            s.close()
            r = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
            r.connect((dst, 54))
            r.send(b"knock")
            try:
                r.recv(100)
                outcome = "no error"
            except ConnectionRefusedError:
                outcome = "refused"
            finally:
                r.close()
            return data, addr, outcome

        async def main() -> Tuple[bytes, Tuple[Any, ...], str]:
            stack = await fasttcp.aio.start(host, link)
            try:
                stack.intercept_udp([prefix], Flow)
                bg = Background(client)
                end = time.monotonic() + 20
                while bg.thread.is_alive() and time.monotonic() < end:
                    await asyncio.sleep(0.01)
                return bg.join(1)  # type: ignore[return-value]
            finally:
                stack.close()

        data, addr, outcome = asyncio.run(main())
    assert data == b"answer to query" and addr[:2] == (dst, 53)
    assert outcome == "refused"
    assert seen == [((dst, 53), b"query"), ((dst, 54), b"knock")]
    assert host.stats()["udp_flow_unreachables_out"] == 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_port_unreachable_reaches_flow(family: str) -> None:
    """A kernel client asks an intercepted destination and closes its socket; the flow's
    late reply draws the kernel's port unreachable (to the original destination, quoting
    the reply), which the flow's protocol gets as error_received(ConnectionRefusedError);
    the flow stays open."""
    af, dst, prefix = _intercepted_target(family)
    with tun_netns(family=family) as (ns, link):
        route_into_tun(ns, link, [prefix])
        host = make_host(link)
        flows: list = []

        class Flow(asyncio.DatagramProtocol):
            def __init__(self, local: Tuple[Any, ...], remote: Tuple[Any, ...]) -> None:
                self.got = asyncio.get_running_loop().create_future()
                self.errors: list = []
                self.lost = False
                flows.append(self)

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport: Any = transport

            def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
                if not self.got.done():
                    self.got.set_result(data)

            def error_received(self, exc: Exception) -> None:
                self.errors.append(exc)

            def connection_lost(self, exc: Optional[Exception]) -> None:
                self.lost = True

        def client() -> None:
            s = sock_in(ns, af, socket.SOCK_DGRAM, timeout=5)
            s.connect((dst, 53))
            s.send(b"query")
            s.close()

        async def main() -> Tuple[list, bool, bool]:
            stack = await fasttcp.aio.start(host, link)
            try:
                stack.intercept_udp([prefix], Flow)
                Background(client).join(10)
                end = time.monotonic() + 10
                while not flows and time.monotonic() < end:
                    await asyncio.sleep(0.01)
                flow = flows[0]
                assert await asyncio.wait_for(flow.got, 10) == b"query"
                flow.transport.sendto(b"late answer")       # the client's port is closed
                while not flow.errors and time.monotonic() < end:
                    await asyncio.sleep(0.01)
                return flow.errors, flow.lost, flow.transport.is_closing()
            finally:
                stack.close()

        errors, lost, closing = asyncio.run(main())
    assert len(errors) == 1 and isinstance(errors[0], ConnectionRefusedError)
    assert not lost and not closing
    assert host.stats()["udp_icmp_errors"] == 1
