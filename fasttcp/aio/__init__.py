"""fasttcp on asyncio: real transports, servers and streams over a user-space TCP stack.

A :class:`FastTcpStack` runs a :class:`fasttcp.Host` on the event loop over a link: a
file-descriptor link (a TUN device, :class:`DatagramSocketLink`) or any :class:`PacketIO`
(:class:`QueuePacketIO` for two hosts in one process, :class:`UdpPacketIO` for IPv4 packets
in UDP datagrams, no root needed). It offers the asyncio API you know:
``create_connection`` / ``create_server`` (any :class:`asyncio.Protocol`, unchanged) and
``open_connection`` / ``start_server`` (the standard StreamReader / StreamWriter). Errors are
the usual ConnectionRefusedError / ConnectionResetError / TimeoutError. TLS (``ssl=`` and
:meth:`FastTcpStack.start_tls`), ``sendfile`` and host names (a resolver) work as asyncio's.

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
import socket
import ssl as _ssl
from typing import Any, Awaitable, Callable, Iterable, List, Optional, Tuple, Union

from fasttcp.aio.driver import Driver
from fasttcp.aio.intercept import AioInterceptor, InterceptedFlow
from fasttcp.link import DatagramSocketLink, PacketIO, QueuePacketIO, UdpPacketIO  # moved
from fasttcp.aio.streams import ClientConnectedCb
from fasttcp.aio.streams import open_connection as _open_connection
from fasttcp.aio.streams import start_server as _start_server
from fasttcp.aio.streams import start_tls as _start_tls_stream
from fasttcp.aio.tls import SslArg, check_ssl_args, make_ssl_protocol
from fasttcp.aio.tls import start_tls as _start_tls
from fasttcp.aio.transport import Server, TcpTransport, _Connector
from fasttcp.aio.transport import sendfile_by_writes as _sendfile_by_writes
from fasttcp.aio import udp as _udp
from fasttcp.aio.udp import AioUdpInterceptor, UdpFlowTransport, UdpTransport
from fasttcp.host.host import Host
from fasttcp.tcp.states import State

__all__ = [
    "AioInterceptor", "AioUdpInterceptor", "DatagramSocketLink", "Driver", "FastTcpStack",
    "InterceptedFlow", "PacketIO", "QueuePacketIO", "Server", "TcpTransport",
    "UdpFlowTransport", "UdpPacketIO", "UdpTransport", "start",
]

#: ``loop.getaddrinfo``'s signature: ``await resolver(host, port, family=..., type=...,
#: proto=...)`` returns ``[(family, type, proto, canonname, sockaddr), ...]``.
Resolver = Callable[..., Awaitable[List[Tuple[Any, ...]]]]


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

    ``resolver`` looks up host names (see :attr:`resolver`); IPv4 and IPv6 literals never
    go to it.
    """

    def __init__(self, host: Host, link: Any, *, resolver: Optional[Resolver] = None,
                 **kwargs: Any) -> None:
        super().__init__(host, link, **kwargs)
        #: Looks up host names that are not IP literals: an async callable with the
        #: signature of ``loop.getaddrinfo`` (None: the running loop's getaddrinfo).
        self.resolver: Optional[Resolver] = resolver

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str, port: int, *, local_port: Optional[int] = None,
                                ssl: SslArg = None, server_hostname: Optional[str] = None,
                                ssl_handshake_timeout: Optional[float] = None,
                                ssl_shutdown_timeout: Optional[float] = None
                                ) -> Tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Open a connection to ``host`` (an IPv4 or IPv6 address, or a name for
        :attr:`resolver`: each address it gives of a family the host has is tried in
        turn) and ``port``; returns
        ``(transport, protocol)`` once established. Raises ConnectionRefusedError (RST or
        ICMP unreachable), TimeoutError (SYN retries ran out) or socket.gaierror (failed
        lookup); cancelling resets it.

        ``ssl`` (True or an :class:`ssl.SSLContext`), ``server_hostname`` (default: ``host``;
        "" skips the name check), ``ssl_handshake_timeout`` and ``ssl_shutdown_timeout`` are
        asyncio's: the transport returned then speaks TLS (module :mod:`fasttcp.aio.tls`)
        and a failed handshake raises ssl.SSLError or, past the timeout,
        ConnectionAbortedError."""
        check_ssl_args(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if ssl and server_hostname is None:
            server_hostname = host
        exceptions: List[OSError] = []
        for ip in await self._resolve(host, port):
            try:
                if not ssl:
                    return await self._open_tcp(protocol_factory, ip, port, local_port)
                return await self._open_tls(protocol_factory, ip, port, local_port, ssl,
                                            server_hostname, ssl_handshake_timeout,
                                            ssl_shutdown_timeout)
            except (ConnectionRefusedError, TimeoutError) as exc:
                exceptions.append(exc)          # the next address, as asyncio does
        if len(exceptions) == 1 or len({str(e) for e in exceptions}) == 1:
            raise exceptions[0]
        raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in exceptions)}")

    async def _resolve(self, host: str, port: int) -> List[str]:
        """``host`` if it is an IPv4 or IPv6 literal (never looked up), else the addresses
        the resolver gives, in its order, of the families the host has addresses of (the
        host asks for AF_INET, AF_INET6 or AF_UNSPEC accordingly)."""
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        versions = {ipaddress.ip_address(a.split("%", 1)[0]).version
                    for a in self.host.addresses}
        family = (socket.AF_UNSPEC if len(versions) == 2
                  else socket.AF_INET6 if 6 in versions else socket.AF_INET)
        wanted = {socket.AF_INET} if family == socket.AF_INET else \
            {socket.AF_INET6} if family == socket.AF_INET6 else {socket.AF_INET, socket.AF_INET6}
        resolver = self.resolver or self.loop.getaddrinfo
        infos = await resolver(host, port, family=family, type=socket.SOCK_STREAM,
                               proto=socket.IPPROTO_TCP)
        ips: List[str] = []
        for fam, *_, sockaddr in infos:
            if fam in wanted and sockaddr[0] not in ips:
                ips.append(sockaddr[0])
        if not ips:
            kind = "IPv4" if family == socket.AF_INET else \
                "IPv6" if family == socket.AF_INET6 else "IPv4 or IPv6"
            raise OSError(f"getaddrinfo({host!r}) returned no {kind} address")
        return ips

    async def _open_tls(self, protocol_factory: Callable[[], asyncio.BaseProtocol], ip: str,
                        port: int, local_port: Optional[int], ssl: SslArg,
                        server_hostname: Optional[str],
                        ssl_handshake_timeout: Optional[float],
                        ssl_shutdown_timeout: Optional[float]
                        ) -> Tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """A connection with asyncio's TLS protocol on it; returns once the handshake is
        done (asyncio's _create_connection_transport)."""
        made: List[Any] = []

        def tls_factory() -> asyncio.BaseProtocol:
            protocol = protocol_factory()
            waiter = self.loop.create_future()
            tls = make_ssl_protocol(self.loop, protocol, ssl, waiter, server_side=False,
                                    server_hostname=server_hostname,
                                    ssl_handshake_timeout=ssl_handshake_timeout,
                                    ssl_shutdown_timeout=ssl_shutdown_timeout)
            made[:] = [protocol, waiter, tls._app_transport]
            return tls

        await self._open_tcp(tls_factory, ip, port, local_port)
        protocol, waiter, app_transport = made
        try:
            await waiter
        except BaseException:
            app_transport.close()
            raise
        return app_transport, protocol

    async def _open_tcp(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                        host: str, port: int, local_port: Optional[int]
                        ) -> Tuple[TcpTransport, asyncio.BaseProtocol]:
        """The TCP connection of create_connection, to an IPv4 or IPv6 address."""
        self._ensure_started()
        ip = str(ipaddress.ip_address(host))
        # Stamp the host's clock: connect() reads it for the ISN (RFC 6528) and timers.
        self.host.advance_clock(self.loop.time())
        conn = self.host.connect((ip, port), local_port)
        return await self._established(conn, protocol_factory)

    async def _established(self, conn: Any, protocol_factory: Callable[[], asyncio.BaseProtocol],
                           ) -> Tuple[TcpTransport, asyncio.BaseProtocol]:
        """Wait until ``conn`` (opening: connect(), or an intercepted flow's accept())
        is established, then give it a transport and a protocol. On any failure, or when
        cancelled, the connection is reset and unregistered."""
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
                            start_serving: bool = True,
                            ssl: Optional[_ssl.SSLContext] = None,
                            ssl_handshake_timeout: Optional[float] = None,
                            ssl_shutdown_timeout: Optional[float] = None,
                            address: Optional[str] = None) -> Server:
        """Listen on ``port`` of every address of the host (``address``: only that one,
        which must be one of ``host.addresses``); each accepted connection gets
        ``protocol_factory()`` and a :class:`TcpTransport`; with ``ssl`` (a server-side
        :class:`ssl.SSLContext`), a TLS transport over it once the handshake is done."""
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(f"ssl argument must be an SSLContext or None, got {ssl!r}")
        check_ssl_args(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        self._ensure_started()
        server = Server(self, protocol_factory, port, backlog, ssl=ssl,
                        ssl_handshake_timeout=ssl_handshake_timeout,
                        ssl_shutdown_timeout=ssl_shutdown_timeout, address=address)
        if start_serving:
            server._start_listening()
        return server

    def intercept(self, prefixes: Union[str, Iterable[str]],
                  on_flow: Callable[[InterceptedFlow], Any], *,
                  backlog: Optional[int] = None) -> AioInterceptor:
        """Take every TCP flow to a destination inside ``prefixes`` (IPv4 and IPv6,
        e.g. ``["10.99.0.0/16", "fd00:99::/64"]``, ``"0.0.0.0/0"`` for all) that is not
        one of the host's own addresses: ``on_flow(flow)`` is called on the loop for each
        new flow (an :class:`InterceptedFlow`) before the handshake completes; at most
        ``backlog`` (default settings.syn_backlog) wait for a decision. Returns the
        handle whose ``close()`` stops it."""
        self._ensure_started()
        return AioInterceptor(self, prefixes, on_flow, backlog)

    async def open_connection(self, host: str, port: int, **kwargs: Any
                              ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Like :func:`asyncio.open_connection`; ``limit`` and the keyword arguments of
        :meth:`create_connection` (``local_port``, ``ssl``, ``server_hostname``, ...)."""
        return await _open_connection(self, host, port, **kwargs)

    async def start_server(self, client_connected_cb: ClientConnectedCb, port: int,
                           **kwargs: Any) -> Server:
        """Like :func:`asyncio.start_server`; ``limit`` and the keyword arguments of
        :meth:`create_server` (``backlog``, ``start_serving``, ``ssl``, ``address``, ...)."""
        return await _start_server(self, client_connected_cb, port, **kwargs)

    async def start_tls(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                        sslcontext: _ssl.SSLContext, *, server_side: bool = False,
                        server_hostname: Optional[str] = None,
                        ssl_handshake_timeout: Optional[float] = None,
                        ssl_shutdown_timeout: Optional[float] = None) -> asyncio.Transport:
        """``loop.start_tls`` for this stack's transports, on any event loop (uvloop's own
        accepts only its own transports): upgrade ``transport`` (whose protocol is
        ``protocol``) to TLS and return the new transport for ``protocol``."""
        return await _start_tls(transport, protocol, sslcontext, server_side=server_side,
                                server_hostname=server_hostname,
                                ssl_handshake_timeout=ssl_handshake_timeout,
                                ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def start_tls_stream(self, writer: asyncio.StreamWriter,
                               sslcontext: _ssl.SSLContext, *,
                               server_hostname: Optional[str] = None,
                               ssl_handshake_timeout: Optional[float] = None,
                               ssl_shutdown_timeout: Optional[float] = None) -> None:
        """``writer.start_tls(...)`` for streams of this stack, on any event loop: the
        reader and writer go on over TLS."""
        await _start_tls_stream(self, writer, sslcontext, server_hostname=server_hostname,
                                ssl_handshake_timeout=ssl_handshake_timeout,
                                ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def sendfile(self, transport: asyncio.Transport, file: Any, offset: int = 0,
                       count: Optional[int] = None) -> int:
        """``loop.sendfile`` for this stack's transports, on any event loop: a
        :class:`TcpTransport` reads the file straight into its send buffer's free space
        (:meth:`TcpTransport.sendfile`); a TLS transport over one gets the file through
        ``write()`` in chunks, with drain, as asyncio's fallback does."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if isinstance(transport, TcpTransport):
            return await transport.sendfile(file, offset, count)
        return await _sendfile_by_writes(transport, file, offset, count)

    # --- UDP (issue 15): fasttcp/aio/udp.py ----------------------------------------------

    async def create_datagram_endpoint(
            self, protocol_factory: Callable[[], asyncio.DatagramProtocol],
            local_addr: Optional[Tuple[Any, ...]] = None,
            remote_addr: Optional[Tuple[Any, ...]] = None
    ) -> Tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """A UDP endpoint, as ``loop.create_datagram_endpoint``: bound to ``local_addr``
        (``(address, port)``; default an ephemeral port on every address) and, with
        ``remote_addr``, connected (sendto(data) goes there, only its datagrams arrive, and
        an ICMP error from it reaches ``error_received``). A host name in ``remote_addr``
        goes to :attr:`resolver`."""
        self._ensure_started()
        port, address = _udp._bind_args(local_addr)
        ep = self.host.udp_bind(port, address)
        peer = None
        try:
            if remote_addr is not None:
                ip = (await self._resolve(str(remote_addr[0]), int(remote_addr[1])))[0]
                ep.connect((ip, int(remote_addr[1])))
                peer = ep.remote_address
            protocol = protocol_factory()
        except BaseException:
            ep.close()
            raise
        transport = _udp.UdpTransport(self, ep, protocol, peer)
        self.register(ep, transport)
        protocol.connection_made(transport)
        return transport, protocol

    def intercept_udp(self, prefixes: Union[str, Iterable[str]],
                      protocol_factory: _udp.FlowProtocolFactory, *,
                      idle_timeout: Optional[float] = None,
                      max_flows: Optional[int] = None) -> _udp.AioUdpInterceptor:
        """Intercept UDP to addresses inside ``prefixes`` (see ``Host.intercept_udp``):
        each new flow gets ``protocol_factory(flow_local_address, flow_remote_address)``
        and a transport whose ``sendto(data)`` answers the client from the original
        destination (``unreachable(code)`` sends ICMP unreachable); an idle timeout or
        ``close()`` ends it with ``connection_lost(None)``."""
        self._ensure_started()
        ui = self.host.intercept_udp(_udp._prefix_list(prefixes), idle_timeout=idle_timeout,
                                     max_flows=max_flows)
        aui = _udp.AioUdpInterceptor(self, ui, protocol_factory)
        self.register(ui, aui)
        return aui

    def close(self) -> None:
        """Close every server, reset every open connection, detach from the loop."""
        if self.closed:
            return
        for handler in list(self._handlers.values()):
            if isinstance(handler, (Server, AioInterceptor)):
                handler.close()
            elif isinstance(handler, TcpTransport):
                handler.abort()
            elif isinstance(handler, (_udp.UdpTransport, _udp.UdpFlowTransport)):
                handler.close()
            elif isinstance(handler, _udp.AioUdpInterceptor):
                handler.close()
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
