"""fasttcp on asyncio: real transports, servers and streams over a user-space TCP stack.

A :class:`FastTcpStack` runs a :class:`fasttcp.Host` on the event loop over a link: a
file-descriptor link (a TUN device, :class:`DatagramSocketLink`) or any :class:`PacketIO`
(:class:`QueuePacketIO` for two hosts in one process, :class:`UdpPacketIO` for IPv4 packets
in UDP datagrams, no root needed). It offers the asyncio API you know:
``create_connection`` / ``create_server`` (any :class:`asyncio.Protocol`, unchanged) and
``open_connection`` / ``start_server`` (the standard StreamReader / StreamWriter). Errors are
the usual ConnectionRefusedError / ConnectionResetError / TimeoutError.

An echo server and a client, two hosts joined by an in-process packet pipe::

    import asyncio
    import fasttcp
    from fasttcp.aio import FastTcpStack, QueuePacketIO

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        wire_a, wire_b = QueuePacketIO.pair()
        async with (FastTcpStack(fasttcp.Host("10.0.0.1"), wire_a) as server_side,
                    FastTcpStack(fasttcp.Host("10.0.0.2"), wire_b) as client_side):
            server = await server_side.start_server(echo, 7)
            reader, writer = await client_side.open_connection("10.0.0.1", 7)
            writer.write(b"hello, user-space TCP")
            writer.write_eof()                  # half-close: the server sees EOF
            print(await reader.read())          # b'hello, user-space TCP'
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

    asyncio.run(main())

``stack = await fasttcp.aio.start(host, link)`` is the same as entering the context
manager; ``stack.close()`` resets whatever is still open and detaches from the loop.
"""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, Callable, Optional, Tuple

from fasttcp.aio.driver import Driver
from fasttcp.link import DatagramSocketLink, PacketIO, QueuePacketIO, UdpPacketIO  # moved
from fasttcp.aio.streams import ClientConnectedCb
from fasttcp.aio.streams import open_connection as _open_connection
from fasttcp.aio.streams import start_server as _start_server
from fasttcp.aio.transport import Server, TcpTransport, _Connector
from fasttcp.host.host import Host
from fasttcp.tcp.states import State

__all__ = [
    "DatagramSocketLink", "Driver", "FastTcpStack", "PacketIO", "QueuePacketIO", "Server",
    "TcpTransport", "UdpPacketIO", "start",
]


class FastTcpStack(Driver):
    """A :class:`fasttcp.Host` on the running event loop, with the asyncio socket API.

    ``FastTcpStack(host, link)`` then ``start()`` (or ``async with``, or
    ``await fasttcp.aio.start(host, link)``); the first connect/listen starts it too.
    Keyword arguments tune the driver: ``batch_size`` (packets per link read),
    ``batch_bytes`` (bytes per link read, for links that take a budget: TunLink),
    ``defer_copy`` (received data stays in the link's buffers until it is read or the
    batch is done: Host.receive's ``defer_copy``; default True),
    ``max_batches`` (reads per loop turn), ``max_pending`` (packets kept when the link is
    full).
    """

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str, port: int, *, local_port: Optional[int] = None
                                ) -> Tuple[TcpTransport, asyncio.BaseProtocol]:
        """Open a connection to ``host`` (an IPv4 address) and ``port``; returns
        ``(transport, protocol)`` once established. Raises ConnectionRefusedError (RST or
        ICMP unreachable) or TimeoutError (SYN retries ran out); cancelling resets it."""
        self._ensure_started()
        ip = str(ipaddress.IPv4Address(host))
        # Stamp the host's clock: connect() reads it for the ISN (RFC 6528) and timers.
        self.host.advance_clock(self.loop.time())
        conn = self.host.connect((ip, port), local_port)
        fut = self.loop.create_future()
        self.register(conn, _Connector(conn, fut))
        self.kick()
        try:
            await fut
            protocol = protocol_factory()
        except BaseException:
            self.unregister(conn)
            if conn.state != State.CLOSED:
                conn.abort()
                self.kick()
            raise
        transport = TcpTransport(self, conn, protocol)
        try:
            transport._start()
        except BaseException:
            transport.abort()
            raise
        return transport, protocol

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            port: int, *, backlog: Optional[int] = None,
                            start_serving: bool = True) -> Server:
        """Listen on ``port`` of the host's address; each accepted connection gets
        ``protocol_factory()`` and a :class:`TcpTransport`."""
        self._ensure_started()
        server = Server(self, protocol_factory, port, backlog)
        if start_serving:
            server._start_listening()
        return server

    async def open_connection(self, host: str, port: int, **kwargs: Any
                              ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like :func:`asyncio.open_connection`; ``limit`` and ``local_port`` are accepted."""
        return await _open_connection(self, host, port, **kwargs)

    async def start_server(self, client_connected_cb: ClientConnectedCb, port: int,
                           **kwargs: Any) -> Server:
        """Like :func:`asyncio.start_server`; ``limit``, ``backlog``, ``start_serving``."""
        return await _start_server(self, client_connected_cb, port, **kwargs)

    def close(self) -> None:
        """Close every server, reset every open connection, detach from the loop."""
        if self.closed:
            return
        for handler in list(self._handlers.values()):
            if isinstance(handler, Server):
                handler.close()
            elif isinstance(handler, TcpTransport):
                handler.abort()
            elif isinstance(handler, _Connector):
                handler.conn.abort()
                if not handler.fut.done():
                    handler.fut.set_exception(ConnectionAbortedError("stack closed"))
        super().close()

    async def __aenter__(self) -> "FastTcpStack":
        self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()
        await asyncio.sleep(0)        # let connection_lost callbacks run


async def start(host: Host, link: Any, **kwargs: Any) -> FastTcpStack:
    """Make a :class:`FastTcpStack` for ``host`` over ``link`` and attach it to the loop."""
    stack = FastTcpStack(host, link, **kwargs)
    stack.start()
    return stack
