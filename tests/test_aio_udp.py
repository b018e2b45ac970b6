"""UDP on asyncio (issue 15): create_datagram_endpoint and intercept_udp between two
fasttcp stacks joined by an in-process packet pipe. Every wait is bounded."""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Tuple

import pytest

import fasttcp
import fasttcp.aio
from fasttcp.aio import FastTcpStack, QueuePacketIO, UdpFlowTransport, UdpTransport

A, B = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"


def run(coro: Any, timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def stacks(**settings: Any) -> Tuple[FastTcpStack, FastTcpStack]:
    wa, wb = QueuePacketIO.pair()
    sa = await fasttcp.aio.start(fasttcp.Host([A, A6], **settings), wa)
    sb = await fasttcp.aio.start(fasttcp.Host([B, B6], **settings), wb)
    return sa, sb


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.got: asyncio.Queue = asyncio.Queue()
        self.errors: List[Exception] = []
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.events: List[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
        self.got.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.got.put_nowait(("error", exc))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(Recorder):
    def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
        assert self.transport is not None
        self.transport.sendto(data.upper(), addr)


@pytest.mark.parametrize("v6", [False, True])
def test_datagram_endpoint_echo(v6: bool) -> None:
    async def main() -> None:
        sa, sb = await stacks()
        server_ip = B6 if v6 else B
        st, sp = await sb.create_datagram_endpoint(Echo, local_addr=(None, 9000))
        assert isinstance(st, asyncio.DatagramTransport) and isinstance(st, UdpTransport)
        ct, cp = await sa.create_datagram_endpoint(Recorder, remote_addr=(server_ip, 9000))
        assert cp.events == ["made"]
        peer = ct.get_extra_info("peername")
        assert peer[:2] == (server_ip, 9000)
        assert ct.get_extra_info("sockname")[1] > 0
        assert ct.get_write_buffer_size() == 0
        for i in range(20):
            ct.sendto(b"ping %d" % i)
        got = sorted([(await cp.got.get())[0] for _ in range(20)])
        assert got == sorted(b"PING %d" % i for i in range(20))
        with pytest.raises(ValueError):
            ct.sendto(b"x", ("10.0.0.9", 1))
        ct.close()
        assert ct.is_closing()
        assert await cp.lost is None and cp.events == ["made", "lost"]
        st.abort()
        await sp.lost
        sa.close()
        sb.close()
    run(main())


def test_connected_endpoint_gets_connection_refused() -> None:
    async def main() -> None:
        sa, sb = await stacks()
        ct, cp = await sa.create_datagram_endpoint(Recorder, remote_addr=(B, 7777))
        ct.sendto(b"anyone?")
        kind, exc = await cp.got.get()
        assert kind == "error" and isinstance(exc, ConnectionRefusedError)
        sa.close()
        sb.close()
        await asyncio.sleep(0)
        assert cp.lost.done()          # closing the stack closes its endpoints
    run(main())


@pytest.mark.parametrize("v6", [False, True])
def test_intercept_udp_flows(v6: bool) -> None:
    async def main() -> None:
        sa, sb = await stacks()
        dst = "fd00:99::53" if v6 else "10.99.0.53"
        made: List[Tuple[Any, Any, Recorder]] = []

        def factory(local: Tuple[Any, ...], remote: Tuple[Any, ...]) -> asyncio.DatagramProtocol:
            proto = Echo()
            made.append((local, remote, proto))
            return proto

        ui = sb.intercept_udp(["10.99.0.0/16", "fd00:99::/64"], factory, idle_timeout=0.3)
        assert ui.prefixes == ("10.99.0.0/16", "fd00:99::/64")
        ct, cp = await sa.create_datagram_endpoint(Recorder, remote_addr=(dst, 53))
        ct.sendto(b"query")
        data, addr = await cp.got.get()
        assert data == b"QUERY" and addr[:2] == (dst, 53)
        (local, remote, proto), = made
        assert local[:2] == (dst, 53)
        assert remote[:2] == ct.get_extra_info("sockname")[:2]
        ft = proto.transport
        assert isinstance(ft, UdpFlowTransport)
        assert ft.get_extra_info("sockname") == local and ft.get_extra_info("peername") == remote
        # idle timeout -> connection_lost(None)
        assert await asyncio.wait_for(proto.lost, 5) is None
        # a new datagram opens a new flow, which answers unreachable
        made.clear()

        class Refuse(Recorder):
            def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
                assert isinstance(self.transport, UdpFlowTransport)
                self.transport.unreachable(4 if v6 else 3)
        ui.close()
        ui2 = sb.intercept_udp(["10.99.0.0/16", "fd00:99::/64"], lambda _local, _remote: Refuse())
        ct.sendto(b"again")
        kind, exc = await cp.got.get()
        assert kind == "error" and isinstance(exc, ConnectionRefusedError)
        ui2.close()
        # closing the stack ends the interceptors it made
        ui3 = sb.intercept_udp("10.98.0.0/16", lambda _local, _remote: Refuse())
        assert ui3.interceptor in sb.host._udp.interceptors
        sa.close()
        sb.close()
        assert ui3.interceptor.closed and not sb.host._udp.interceptors
    run(main())


@pytest.mark.parametrize("v6", [False, True])
def test_flow_gets_client_icmp_error(v6: bool) -> None:
    """The client's port unreachable about a flow's reply comes to the flow's protocol as
    error_received(ConnectionRefusedError), as a connected asyncio datagram transport; the
    flow stays open and serves the client when it comes back."""
    async def main() -> None:
        sa, sb = await stacks()
        dst = "fd00:99::53" if v6 else "10.99.0.53"
        made: List[Recorder] = []

        def factory(local: Tuple[Any, ...], remote: Tuple[Any, ...]) -> asyncio.DatagramProtocol:
            proto = Recorder()
            made.append(proto)
            return proto

        sb.intercept_udp(["10.99.0.0/16", "fd00:99::/64"], factory)
        ct, cp = await sa.create_datagram_endpoint(Recorder, remote_addr=(dst, 53),
                                                   local_addr=(None, 4444))
        ct.sendto(b"query")
        while not made:
            await asyncio.sleep(0.01)
        proto = made[0]
        assert (await proto.got.get())[0] == b"query"
        ct.close()
        await cp.lost                               # the client's port is closed
        ft = proto.transport
        assert isinstance(ft, UdpFlowTransport)
        ft.sendto(b"late")
        kind, exc = await proto.got.get()
        assert kind == "error" and isinstance(exc, ConnectionRefusedError)
        assert not ft.is_closing() and proto.events == ["made"]
        assert sb.host.stats()["udp_icmp_errors"] == 1
        # the client comes back on the same port: the same flow serves it
        ct2, cp2 = await sa.create_datagram_endpoint(Recorder, remote_addr=(dst, 53),
                                                     local_addr=(None, 4444))
        ct2.sendto(b"back")
        assert await proto.got.get() == (b"back", ft.get_extra_info("peername"))
        ft.sendto(b"hello")
        assert (await cp2.got.get())[0] == b"hello"
        assert len(made) == 1 and proto.errors == [exc]
        sa.close()
        sb.close()
    run(main())
