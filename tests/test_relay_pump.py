"""The relay's TCP and UDP pumps in one process, without root: a client fasttcp stack and a
relay fasttcp stack over an in-memory packet pipe (``QueuePacketIO``), the relay
intercepting 10.99.0.0/16 and relaying each flow, through an *opener*, to asyncio servers on
this process's loopback. What the three-namespace tests (``test_relay.py``) show with curl
and kernel peers, here with exact control of each side: flow control end to end (a slow
reader on either side stops the other, buffers stay bounded), half-close both ways,
resets both ways, refusal and timeout as RST, the flow limits, UDP both ways, and the
per-flow memory.
"""
from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import time
import tracemalloc
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest

import fasttcp
from fasttcp.aio import FastTcpStack
from fasttcp.link.packet_io import QueuePacketIO
from fasttcp.relay import HIGH_WATER, READ_SIZE, Direct, Flow, Refuse, Relay, Socks5

CLIENT, RELAY = "10.0.0.2", "10.0.0.1"
ROUTE = "10.99.0.0/16"
DEST = "10.99.0.5"
LOOPBACK = "127.0.0.1"


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def to_loopback(port: int, kind: str = "tcp") -> Callable[[Flow], Any]:
    """An upstream callback: every flow goes to LOOPBACK:``port`` through an opener (never
    to the intercepted destination itself, which is no address of this machine)."""
    def upstream(flow: Flow) -> Any:
        loop = asyncio.get_running_loop()

        async def opener(factory: Callable[[], Any]) -> Tuple[Any, Any]:
            if flow.kind == "udp":
                return await loop.create_datagram_endpoint(factory,
                                                           remote_addr=(LOOPBACK, port))
            return await loop.create_connection(factory, LOOPBACK, port)
        return opener
    return upstream


class Pair:
    """A client stack and a relay stack over one in-memory pipe, the relay running."""

    def __init__(self, host_kw: Optional[dict] = None, **relay_kw: Any) -> None:
        self.relay_kw = relay_kw
        self.host_kw = host_kw or {}

    async def __aenter__(self) -> "Pair":
        a, b = QueuePacketIO.pair()
        self.client = FastTcpStack(fasttcp.Host(CLIENT), a)
        self.relay_stack = FastTcpStack(fasttcp.Host(RELAY, **self.host_kw), b)
        self.client.start()
        self.relay_stack.start()
        self.relay = Relay(self.relay_stack, [ROUTE], **self.relay_kw)
        await self.relay.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.relay.close()
        self.client.close()
        self.relay_stack.close()
        await asyncio.sleep(0)


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0,
                   what: Callable[[], Any] = lambda: "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"condition not met {what()}")
        await asyncio.sleep(0.005)


def _linger0(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# ------------------------------------------------------------------------------------------
# TCP
# ------------------------------------------------------------------------------------------

def test_bytes_both_ways_and_destination_seen_by_the_callback():
    seen: List[Tuple[str, Any, Any]] = []

    async def main() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
            w.close()
        server = await asyncio.start_server(echo, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        inner = to_loopback(port)

        def upstream(flow: Flow) -> Any:
            seen.append((flow.kind, flow.client, flow.destination))
            return inner(flow)
        async with Pair(upstream=upstream) as p:
            r, w = await p.client.open_connection(DEST, 8080)
            payload = os.urandom(3 << 20)
            w.write(payload)
            w.write_eof()
            got = await r.read()
            assert got == payload
            local = w.get_extra_info("sockname")
            w.close()
            # Both directions ended (the server closed after our EOF): the flow is gone.
            await wait_for(lambda: not p.relay.flows())
            st = p.relay.stats()
            assert st["tcp_flows_total"] == 1
            assert st["bytes_up"] == st["bytes_down"] == len(payload)
        server.close()
        assert seen == [("tcp", (CLIENT, local[1]), (DEST, 8080))]
    run(main())


def test_half_close_client_first_server_still_sends():
    """The client's FIN reaches the server as EOF (shutdown(SHUT_WR) upstream), and the
    server's reply after it still reaches the client (RFC 9293 3.6)."""
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read()                        # to EOF
            w.write(b"after your EOF: %d" % len(data))
            await w.drain()
            w.close()
        server = await asyncio.start_server(handler, LOOPBACK, 0)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 7)
            w.write(b"x" * 1000)
            w.write_eof()
            assert await r.read() == b"after your EOF: 1000"
            w.close()
        server.close()
    run(main())


def test_half_close_server_first_client_still_sends():
    async def main() -> None:
        got: List[bytes] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello")
            w.write_eof()                                 # FIN first
            got.append(await r.read())                   # and still reads
            w.close()
        server = await asyncio.start_server(handler, LOOPBACK, 0)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 7)
            assert await r.read() == b"hello"            # to EOF: the server's FIN came
            w.write(b"y" * 5000)
            w.write_eof()
            await wait_for(lambda: bool(got))
            assert got == [b"y" * 5000]
            await wait_for(lambda: not p.relay.flows())
            w.close()
        server.close()
    run(main())


def test_slow_client_stops_the_upstream_and_buffers_stay_bounded():
    """The client reads nothing: the relay's fasttcp transport fills to its high-water
    mark, the relay stops reading upstream, and the server's kernel socket backs up.
    Then every byte arrives, in order."""
    size = 32 << 20

    async def main() -> None:
        sent = asyncio.Event()

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            block = bytes(range(256)) * 4096
            for _ in range(size // len(block)):
                w.write(block)
                await w.drain()
            w.close()
            sent.set()
        server = await asyncio.start_server(handler, LOOPBACK, 0)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 80)
            w.transport.pause_reading()
            await asyncio.sleep(1.0)
            [flow] = p.relay.flows()
            ct, ut = flow.ct, flow.ut
            assert not ut.is_reading()                   # the upstream is stopped
            assert ct.get_write_buffer_size() <= HIGH_WATER + READ_SIZE
            assert not sent.is_set()                     # the server is held back
            held = flow.bytes_down
            await asyncio.sleep(0.3)
            assert flow.bytes_down == held               # nothing more read meanwhile
            w.transport.resume_reading()
            data = await asyncio.wait_for(r.read(), 30)
            assert len(data) == size
            assert data == (bytes(range(256)) * 4096) * (size // (1 << 20))
            w.close()
        server.close()
    run(main())


def test_slow_server_stops_the_client_and_buffers_stay_bounded():
    size = 32 << 20

    async def main() -> None:
        readers: List[asyncio.StreamReader] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            readers.append(r)
            await asyncio.sleep(3600)
        server = await asyncio.start_server(handler, LOOPBACK, 0, limit=1 << 16)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 80)
            payload = os.urandom(size)
            w.write(payload)
            await asyncio.sleep(1.5)
            [flow] = p.relay.flows()
            assert not flow.ct.is_reading()              # the client is stopped
            assert flow.ut.get_write_buffer_size() <= HIGH_WATER + READ_SIZE
            assert flow.bytes_up < size // 2
            got = await asyncio.wait_for(readers[0].readexactly(size), 30)
            assert got == payload
            w.close()
        server.close()
    run(main())


def test_upstream_refused_and_timeout_reach_the_client_as_rst():
    async def main() -> None:
        with socket.socket() as s:                       # a port nobody listens on
            s.bind((LOOPBACK, 0))
            closed = s.getsockname()[1]

        async def hang(factory: Callable[[], Any]) -> Tuple[Any, Any]:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        def upstream(flow: Flow) -> Any:
            return hang if flow.destination[1] == 2 else to_loopback(closed)(flow)
        async with Pair(upstream=upstream, connect_timeout=0.3) as p:
            t = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                await p.client.open_connection(DEST, 1)
            assert time.monotonic() - t < 1.0
            t = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                await p.client.open_connection(DEST, 2)
            assert 0.25 < time.monotonic() - t < 1.5
            assert p.relay.stats()["tcp_refused_upstream"] == 2
            assert not p.relay.flows()
    run(main())


def test_refuse_choice_is_rst():
    async def main() -> None:
        async with Pair(upstream=lambda flow: Refuse()) as p:
            with pytest.raises(ConnectionRefusedError):
                await p.client.open_connection(DEST, 80)
            assert p.relay.stats()["tcp_refused_by_choice"] == 1
    run(main())


def test_client_reset_resets_the_upstream():
    async def main() -> None:
        errors: List[BaseException] = []

        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while await r.read(1 << 16):
                    pass
                errors.append(EOFError())
            except ConnectionResetError as e:
                errors.append(e)
        server = await asyncio.start_server(handler, LOOPBACK, 0)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 80)
            w.write(b"data")
            await wait_for(lambda: bool(p.relay.flows()) and p.relay.flows()[0].bytes_up > 0)
            w.transport.abort()                          # RST
            await wait_for(lambda: bool(errors))
            assert isinstance(errors[0], ConnectionResetError)   # RST, not FIN
            assert p.relay.stats()["tcp_client_resets"] == 1
        server.close()
    run(main())


def test_upstream_reset_reaches_the_client():
    async def main() -> None:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readexactly(4)
            _linger0(w)
            w.transport.abort()                          # RST from the server
        server = await asyncio.start_server(handler, LOOPBACK, 0)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            r, w = await p.client.open_connection(DEST, 80)
            w.write(b"ping")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(r.read(), 10)
            assert p.relay.stats()["tcp_upstream_resets"] == 1
        server.close()
    run(main())


def test_max_flows_refuses_and_max_connecting_drops():
    async def main() -> None:
        async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.read()
            except ConnectionResetError:            # the relay's close() resets
                pass
            w.close()
        server = await asyncio.start_server(hold, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        async with Pair(upstream=to_loopback(port), max_flows=2) as p:
            conns = [await p.client.open_connection(DEST, 80) for _ in range(2)]
            with pytest.raises(ConnectionRefusedError):
                await p.client.open_connection(DEST, 80)
            assert p.relay.stats()["tcp_refused_limit"] == 1
            for _, w in conns:
                w.close()
        gate = asyncio.Event()

        def slow(flow: Flow) -> Any:
            async def opener(factory: Callable[[], Any]) -> Tuple[Any, Any]:
                await gate.wait()
                return await asyncio.get_running_loop().create_connection(
                    factory, LOOPBACK, port)
            return opener
        async with Pair(upstream=slow, max_connecting=1) as p:
            first = asyncio.ensure_future(p.client.open_connection(DEST, 80))
            await wait_for(lambda: p.relay.stats()["tcp_connecting"] == 1)
            second = asyncio.ensure_future(p.client.open_connection(DEST, 81))
            await wait_for(lambda: p.relay.stats()["tcp_dropped_limit"] >= 1)
            gate.set()
            # The dropped SYN is retransmitted (after 1 s, RFC 6298 2.1) and then taken.
            (_, w1), (_, w2) = await asyncio.wait_for(asyncio.gather(first, second), 10)
            w1.close()
            w2.close()
        server.close()
    run(main())


def test_host_connection_limit_refuses_the_flow():
    """The relay's host at max_connections: accepting raises (ENOBUFS) and the flow, still
    pending, is refused (RST) instead of left to time out."""
    async def main() -> None:
        async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.read()
            except ConnectionResetError:
                pass
            w.close()
        server = await asyncio.start_server(hold, LOOPBACK, 0)
        async with Pair(host_kw={"max_connections": 1},
                        upstream=to_loopback(server.sockets[0].getsockname()[1])) as p:
            _, w = await p.client.open_connection(DEST, 80)
            t = time.monotonic()
            with pytest.raises(ConnectionRefusedError):
                await p.client.open_connection(DEST, 80)
            assert time.monotonic() - t < 1.0
            await wait_for(lambda: p.relay.stats()["tcp_flows"] == 1)
            assert p.relay.stats()["tcp_refused_limit"] == 1
            w.close()
        server.close()
    run(main())


def test_idle_flow_memory_is_small():
    """Python-heap bytes per idle relayed flow (both transports, both protocols, the
    engine's connection), measured with tracemalloc over 200 flows."""
    n = 200

    async def main() -> float:
        async def hold(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.read()
            except ConnectionResetError:            # the relay's close() resets
                pass
            w.close()
        server = await asyncio.start_server(hold, LOOPBACK, 0, backlog=n)
        async with Pair(upstream=to_loopback(server.sockets[0].getsockname()[1]),
                        max_connecting=2 * n) as p:
            warm = [await p.client.open_connection(DEST, 80) for _ in range(5)]
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            conns = await asyncio.gather(*(p.client.open_connection(DEST, 80)
                                           for _ in range(n)))
            await wait_for(lambda: p.relay.stats()["tcp_flows"] == n + 5, 10, p.relay.stats)
            client_side = sum(1 for _ in conns)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            for _, w in [*warm, *conns]:
                w.close()
        server.close()
        assert client_side == n
        return (after - before) / n
    per = run(main())
    print(f"Python heap per idle relayed flow (client stack, relay, loopback server "
          f"together): {per:,.0f} bytes")
    assert per < 64 << 10


# ------------------------------------------------------------------------------------------
# UDP
# ------------------------------------------------------------------------------------------

class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue = asyncio.Queue()
        self.errors: List[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


def test_udp_both_ways_through_a_flow():
    async def main() -> None:
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t: Any) -> None:
                self.t = t

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.t.sendto(b"re:" + data, addr)
        et, _ = await loop.create_datagram_endpoint(Echo, local_addr=(LOOPBACK, 0))
        port = et.get_extra_info("sockname")[1]
        async with Pair(upstream=to_loopback(port)) as p:
            t, proto = await p.client.create_datagram_endpoint(
                _Collect, remote_addr=(DEST, 53))
            for i in range(100):
                t.sendto(b"q%d" % i)
                assert await asyncio.wait_for(proto.got.get(), 5) == b"re:q%d" % i
            [flow] = p.relay.flows()
            assert flow.kind == "udp" and flow.destination == (DEST, 53)
            assert flow.bytes_up == sum(len(b"q%d" % i) for i in range(100))
            t.close()
        et.close()
    run(main())


def test_udp_port_unreachable_upstream_reaches_the_client():
    """A connected UDP socket gets ECONNREFUSED from an ICMP port unreachable; the relay
    sends the client an ICMP port unreachable for its flow (RFC 1122 4.1.3.1)."""
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            closed = s.getsockname()[1]
        async with Pair(upstream=to_loopback(closed)) as p:
            t, proto = await p.client.create_datagram_endpoint(
                _Collect, remote_addr=(DEST, 9))
            for _ in range(3):
                t.sendto(b"anyone?")
                await asyncio.sleep(0.1)
            await wait_for(lambda: p.relay.stats()["udp_unreachable"] >= 1)
            await wait_for(lambda: bool(proto.errors))
            assert isinstance(proto.errors[0], ConnectionRefusedError)
            t.close()
    run(main())


def test_client_port_unreachable_ends_the_udp_flow():
    """The client's socket goes away and the next datagram the relay sends it draws an ICMP
    port unreachable from the client's host: the flow (and its upstream socket) ends at
    once instead of at its idle timeout; the client's next datagram opens a new flow."""
    async def main() -> None:
        loop = asyncio.get_running_loop()

        class LateEcho(asyncio.DatagramProtocol):
            """Answers at once and again 0.2 s later."""

            def connection_made(self, t: Any) -> None:
                self.t = t

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.t.sendto(b"re:" + data, addr)
                loop.call_later(0.2, self.t.sendto, b"late:" + data, addr)
        et, _ = await loop.create_datagram_endpoint(LateEcho, local_addr=(LOOPBACK, 0))
        port = et.get_extra_info("sockname")[1]
        async with Pair(upstream=to_loopback(port), udp_timeout=60) as p:
            t, proto = await p.client.create_datagram_endpoint(
                _Collect, remote_addr=(DEST, 53))
            t.sendto(b"q")
            assert await asyncio.wait_for(proto.got.get(), 5) == b"re:q"
            [flow] = p.relay.flows()
            t.close()                            # the late answer finds the port closed
            await wait_for(lambda: p.relay.stats()["udp_client_unreachable"] == 1)
            await wait_for(lambda: p.relay.flows() == [])
            assert flow.done
            t2, proto2 = await p.client.create_datagram_endpoint(
                _Collect, remote_addr=(DEST, 53))
            t2.sendto(b"again")
            assert await asyncio.wait_for(proto2.got.get(), 5) == b"re:again"
            assert len(p.relay.flows()) == 1
            t2.close()
        et.close()
    run(main())


def test_relay_arguments_are_checked():
    with pytest.raises(ValueError):
        Relay(object(), [])
    with pytest.raises(ValueError):
        Relay(object(), [ROUTE], max_flows=0)
    with pytest.raises(ValueError):
        Relay(object(), [ROUTE], udp_timeout=0)
    assert repr(Direct()) == "Direct()" and Socks5("h", 1) == Socks5("h", 1)
