"""asyncio over IPv6 (issue 14), in process (QueuePacketIO pairs): open_connection /
start_server / create_connection / create_server with IPv6 addresses, peername and sockname
as asyncio gives them for IPv6 (4-tuples), a dual-stack stack serving both families at once,
a server on one address, and a resolver's IPv6 answers."""
from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from typing import Any, Awaitable, Callable, Tuple

import pytest

import fasttcp
import fasttcp.aio
from fasttcp.aio import FastTcpStack, QueuePacketIO

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)
    return asyncio.run(bounded())


async def stacks(a: Any, b: Any) -> Tuple[FastTcpStack, FastTcpStack]:
    wa, wb = QueuePacketIO.pair()
    sa = await fasttcp.aio.start(fasttcp.Host(a), wa)
    sb = await fasttcp.aio.start(fasttcp.Host(b), wb)
    return sa, sb


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _round_trip(client: FastTcpStack, host: str, port: int, n: int) -> tuple:
    reader, writer = await client.open_connection(host, port)
    data = random.Random(n).randbytes(n)
    writer.write(data)
    writer.write_eof()
    got = await reader.read(-1)
    names = (writer.get_extra_info("peername"), writer.get_extra_info("sockname"))
    writer.close()
    await writer.wait_closed()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return names


def test_streams_over_ipv6_with_4_tuple_names() -> None:
    async def main() -> None:
        sa, sb = await stacks(A6, B6)
        server = await sb.start_server(echo, 8080)
        peer, sock = await _round_trip(sa, B6, 8080, 1 << 20)
        assert peer == (B6, 8080, 0, 0)                   # asyncio's IPv6 peername
        assert sock[0] == A6 and len(sock) == 4 and sock[2:] == (0, 0)
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_create_connection_and_create_server_over_ipv6() -> None:
    seen: dict = {}

    class Upper(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            seen["server_peer"] = transport.get_extra_info("peername")
            seen["server_sock"] = transport.get_extra_info("sockname")

        def data_received(self, data: bytes) -> None:
            self.t.write(data.upper())

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.got = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            self.got.set_result(data)

    async def main() -> None:
        sa, sb = await stacks(A6, B6)
        server = await sb.create_server(Upper, 9000)
        transport, proto = await sa.create_connection(Client, B6, 9000)
        assert transport.get_extra_info("peername") == (B6, 9000, 0, 0)
        transport.write(b"hello v6")
        assert await proto.got == b"HELLO V6"
        assert seen["server_sock"] == (B6, 9000, 0, 0)
        assert seen["server_peer"] == transport.get_extra_info("sockname")
        transport.close()
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_dual_stack_stack_serves_both_families_at_once() -> None:
    async def main() -> None:
        sa, sb = await stacks([A4, A6], [B4, B6])
        server = await sb.start_server(echo, 7)
        names = await asyncio.gather(_round_trip(sa, B4, 7, 300_000),
                                     _round_trip(sa, B6, 7, 300_000),
                                     _round_trip(sa, B6, 7, 1000))
        assert names[0][0] == (B4, 7) and names[0][1][0] == A4
        assert names[1][0] == (B6, 7, 0, 0) and names[2][0] == (B6, 7, 0, 0)
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_server_on_one_address() -> None:
    async def main() -> None:
        sa, sb = await stacks([A4, A6], [B4, B6])
        server = await sb.start_server(echo, 7, address=B6)
        assert (await _round_trip(sa, B6, 7, 100))[0] == (B6, 7, 0, 0)
        with pytest.raises(ConnectionRefusedError):
            await sa.open_connection(B4, 7)               # not listening there: RST
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_resolver_ipv6_answers_and_family_choice() -> None:
    asked: list = []

    async def resolver(host: str, port: int, **kw: Any) -> list:
        asked.append((host, kw.get("family")))
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (B6, port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (B4, port))]

    async def main() -> None:
        wa, wb = QueuePacketIO.pair()
        sa = await fasttcp.aio.start(fasttcp.Host(A6), wa, resolver=resolver)
        sb = await fasttcp.aio.start(fasttcp.Host([B4, B6]), wb)
        server = await sb.start_server(echo, 7)
        # The client has only IPv6: the IPv4 answer is skipped.
        assert (await _round_trip(sa, "server.example", 7, 100))[0] == (B6, 7, 0, 0)
        assert asked == [("server.example", socket.AF_INET6)]      # what the host can use
        # An IPv6 literal is never looked up.
        await _round_trip(sa, B6, 7, 10)
        assert len(asked) == 1
        with pytest.raises(ValueError, match="no IPv4 address"):
            await sa.open_connection(B4, 7)
        server.close()
        sa.close()
        sb.close()
    run(main)
