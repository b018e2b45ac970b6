"""tun2socks in Python: relay every TCP and UDP flow a fasttcp stack intercepts to its
original destination, through the kernel's sockets or a SOCKS5 proxy.

::

    link = TunLink("ftun0", addresses=["198.18.0.2/24"], netns="client")
    host = Host(link.addresses[0], mtu=link.mtu, gso_max=65000)
    async with FastTcpStack(host, link) as stack:
        async with Relay(stack, ["10.99.0.0/16"]) as relay:
            ...                                   # relay.flows(), relay.stats()

Per flow, ``upstream(flow)`` (sync or async) picks where it goes: :class:`Direct` (the
default: a kernel socket to ``flow.destination``), :class:`Socks5` (SOCKS5 CONNECT
through ``python-socks`` for TCP, UDP ASSOCIATE for UDP), :class:`Refuse`, or an
*opener*: an async callable taking a protocol factory and returning ``(transport,
protocol)`` the way ``loop.create_connection`` / ``loop.create_datagram_endpoint`` do
(for a UDP flow: a datagram transport whose ``sendto(data)`` reaches the destination).

What the relay keeps between the two sides of a TCP flow (the fasttcp
:class:`~fasttcp.aio.TcpTransport` towards the client and the upstream transport):

- **Flow control end to end.** Each side's protocol pauses reading on the other side when
  its own write buffer passes the high-water mark, and resumes below the low-water mark
  (asyncio's ``pause_writing`` / ``resume_writing``): a slow reader on either side closes
  the other side's TCP window. No buffer grows without bound.
- **Half-close both ways.** An EOF on one side becomes ``write_eof()`` (FIN,
  ``shutdown(SHUT_WR)``) on the other; the other direction stays open, and the flow
  closes once both directions have ended (RFC 9293 3.6: a half-closed connection keeps
  carrying data the other way).
- **Resets both ways.** A reset or error on one side aborts the other: RST to the
  client from fasttcp, and a close with ``SO_LINGER`` 0 upstream, which makes the kernel
  send RST (Linux ``tcp_disconnect``) instead of FIN.
- **Refusal.** The upstream connection is made before the client's handshake completes;
  if it is refused, unreachable or times out, the client gets RST (``flow.refuse()``), so
  ``curl`` says "Connection refused".
- **Limits.** At most ``max_flows`` TCP flows and ``max_connecting`` at once still
  connecting upstream. A SYN beyond ``max_connecting`` is dropped (the client retransmits
  it a second later, when a slot may be free: the same backpressure as a full SYN queue,
  Linux ``tcp_conn_request``); a flow beyond ``max_flows`` is refused (RST: a lasting
  condition, so the client learns it at once rather than retrying for a minute).

UDP: each intercepted flow (``stack.intercept_udp``, ``udp_timeout`` idle timeout,
``max_flows`` flows) gets a connected kernel UDP socket to its destination; replies go
back through the flow, and an ICMP port unreachable from upstream (the connected socket's
ECONNREFUSED) becomes an ICMP (ICMPv6) port unreachable to the client (RFC 1122 4.1.3.1:
UDP passes ICMP errors up; RFC 792 code 3, RFC 4443 3.1 code 4). With :class:`Socks5`,
each UDP flow gets its own UDP association (RFC 1928 7: a TCP control connection and a UDP
socket to the proxy's relay address, each datagram with the destination in a header;
written here, as python-socks implements only CONNECT); SOCKS5 carries no ICMP errors, and
fragmented SOCKS5 datagrams (FRAG != 0) are dropped, which the RFC allows.
Datagrams that arrive while a flow's upstream is being opened are held (up to
``UDP_PENDING_BYTES``); what a datagram upstream cannot take at once beyond
``UDP_QUEUE_BYTES`` is dropped, as a router drops (both counted as ``udp_dropped``).
"""
from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import socket
import struct
import time
from typing import (Any, Awaitable, Callable, Dict, Iterable, List, Optional, Set, Tuple,
                    Type, Union)

__all__ = ["Direct", "Flow", "Opener", "Refuse", "Relay", "Socks5", "UpstreamChoice",
           "check_socks5"]

log = logging.getLogger("fasttcp.relay")

#: Bytes read from the fasttcp side per call (one buffer shared by every flow: its bytes
#: are handed to the upstream transport, which sends or copies them, before the next read).
READ_SIZE = 256 * 1024
#: Write-buffer limits of both transports of a TCP flow (asyncio's are 64 KiB / 16 KiB;
#: more lets one loop turn move more per flow).
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: Bytes of datagrams held per UDP flow while its upstream socket is being opened (about
#: what a kernel socket's default receive buffer holds of small datagrams; more are
#: dropped and counted).
UDP_PENDING_BYTES = 64 * 1024
#: A UDP upstream transport's buffer beyond which datagrams are dropped.
UDP_QUEUE_BYTES = 256 * 1024

_LINGER0 = struct.pack("ii", 1, 0)


class Direct:
    """Relay the flow with a kernel socket to its original destination."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Direct()"


class Refuse:
    """Refuse the flow: RST to a TCP client; a UDP flow is closed (its datagrams get no
    answer)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Refuse()"


class Socks5:
    """Relay through a SOCKS5 proxy: TCP with CONNECT (RFC 1928 4, python-socks), UDP with
    a UDP ASSOCIATE per flow (RFC 1928 7). ``username``/``password``: RFC 1929."""

    __slots__ = ("host", "port", "username", "password")

    def __init__(self, host: str, port: int, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.host, self.port = host, int(port)
        self.username, self.password = username, password

    def __repr__(self) -> str:
        return f"Socks5({self.host!r}, {self.port})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Socks5) and (self.host, self.port, self.username,
                                               self.password)
                == (other.host, other.port, other.username, other.password))

    def __hash__(self) -> int:
        return hash((self.host, self.port))


ProtocolFactory = Callable[[], Any]
#: An async callable that opens the upstream side itself: given a protocol factory, it
#: returns ``(transport, protocol)`` as ``loop.create_connection`` does.
Opener = Callable[[ProtocolFactory], Awaitable[Tuple[Any, Any]]]
UpstreamChoice = Union[Direct, Socks5, Refuse, Opener]


def _hostport(address: Tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class Flow:
    """One relayed flow: what the ``upstream`` callback is given, and what
    :meth:`Relay.flows` lists. ``kind`` is ``"tcp"`` or ``"udp"``; ``client`` and
    ``destination`` are ``(ip, port)`` tuples (the destination is the address the client
    sent to, taken from the intercepted packets); ``via`` says how it is relayed;
    ``bytes_up`` (client to destination) and ``bytes_down`` count payload bytes."""

    __slots__ = ("kind", "client", "destination", "via", "started", "bytes_up", "bytes_down",
                 "relay", "ct", "ut")

    def __init__(self, relay: "Relay", kind: str, client: Tuple[Any, ...],
                 destination: Tuple[Any, ...]) -> None:
        self.relay = relay
        self.kind = kind
        self.client = (client[0], client[1])
        self.destination = (destination[0], destination[1])
        self.via = ""
        self.started = time.monotonic()
        self.bytes_up = 0
        self.bytes_down = 0
        self.ct: Any = None                  # the client side's transport (fasttcp)
        self.ut: Any = None                  # the upstream transport

    @property
    def state(self) -> str:
        if self.ut is None or self.ct is None:
            return "connecting"
        return "open"

    def info(self) -> Dict[str, Any]:
        return {"kind": self.kind, "client": _hostport(self.client),
                "destination": _hostport(self.destination), "via": self.via,
                "state": self.state, "seconds": round(time.monotonic() - self.started, 3),
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}

    def __repr__(self) -> str:
        return (f"<Flow {self.kind} {_hostport(self.client)} -> "
                f"{_hostport(self.destination)} {self.state} via {self.via or '?'}>")


def _reset(transport: Any) -> None:
    """Close ``transport`` with a reset: SO_LINGER 0 first for a kernel socket, so the
    kernel sends RST (not FIN) and drops what is unsent."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        except OSError:
            pass
    transport.abort()


def _refuse(iflow: Any) -> None:
    """RST to a pending flow's client; a flow no longer pending (it expired, or its client
    gave up) raises ConnectionError, and then there is nobody to tell."""
    try:
        iflow.refuse()
    except ConnectionError:
        pass


# ==========================================================================================
# TCP
# ==========================================================================================

class _TcpFlow(Flow, asyncio.BufferedProtocol):
    """A TCP flow, and the protocol of its fasttcp (client-side) transport."""

    __slots__ = ("ceof", "ueof", "done", "copy", "pending")

    def __init__(self, relay: "Relay", client: Tuple[Any, ...],
                 destination: Tuple[Any, ...]) -> None:
        Flow.__init__(self, relay, "tcp", client, destination)
        self.ceof = False            # the client sent FIN
        self.ueof = False            # the upstream sent FIN
        self.done = False            # both sides closed or reset
        self.copy = True             # hand the upstream bytes (not views of the buffer)
        self.pending: Optional[List[bytes]] = None   # upstream data before the client side

    # --- the fasttcp side -----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.ct = transport
        pending, self.pending = self.pending, None
        if pending:
            for data in pending:
                transport.write(data)
        if self.ueof:
            transport.write_eof()
        ut = self.ut
        if ut.is_closing():
            # The upstream failed while the client's handshake was being completed.
            self.relay._count("tcp_upstream_resets")
            transport.abort()
        else:
            ut.resume_reading()

    def get_buffer(self, sizehint: int) -> Any:
        return self.relay._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_up += nbytes
        view = self.relay._rbuf[:nbytes]
        self.ut.write(bytes(view) if self.copy else view)

    def eof_received(self) -> bool:
        self.ceof = True
        ut = self.ut
        if self.ueof:
            self._close()
        elif ut.can_write_eof():
            ut.write_eof()
        else:
            self._close()
        return True

    def pause_writing(self) -> None:
        self.ut.pause_reading()

    def resume_writing(self) -> None:
        ut = self.ut
        if not ut.is_closing():
            ut.resume_reading()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if exc is not None:
            self.relay._count("tcp_client_resets")
            _reset(self.ut)
        elif not self.ut.is_closing():
            self.ut.close()
        self._end()

    # --- both -----------------------------------------------------------------------------

    def _close(self) -> None:
        """Both directions have ended: close both sides (each sends what it still holds)."""
        self.ct.close()
        self.ut.close()

    def _end(self) -> None:
        if not self.done:
            self.done = True
            self.relay._forget(self)


class _TcpUpstream(asyncio.BufferedProtocol):
    """The protocol of a TCP flow's upstream transport. Reads go into one buffer shared by
    every flow (asyncio's socket transport reads with ``recv_into``), and from there into
    the fasttcp connection's send buffer: no bytes object per read (a 256 KiB one would
    be malloc's mmap'ed kind, and cost page faults every time)."""

    __slots__ = ("flow",)

    def __init__(self, flow: _TcpFlow) -> None:
        self.flow = flow

    def connection_made(self, transport: Any) -> None:
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.flow.ut = transport
        # Nothing reaches the client before its handshake is done: the first reads wait.
        transport.pause_reading()

    def get_buffer(self, sizehint: int) -> Any:
        return self.flow.relay._ubuf

    def buffer_updated(self, nbytes: int) -> None:
        flow = self.flow
        flow.bytes_down += nbytes
        view = flow.relay._ubuf[:nbytes]
        ct = flow.ct
        if ct is None:                      # a reader not yet paused (another transport)
            if flow.pending is None:
                flow.pending = []
            flow.pending.append(bytes(view))
            flow.ut.pause_reading()
            return
        ct.write(view)                      # the engine takes it, or the transport copies

    def eof_received(self) -> bool:
        flow = self.flow
        flow.ueof = True
        ct = flow.ct
        if ct is None:
            return True
        if flow.ceof:
            flow._close()
        else:
            ct.write_eof()
        return True

    def pause_writing(self) -> None:
        ct = self.flow.ct
        if ct is not None:
            ct.pause_reading()

    def resume_writing(self) -> None:
        ct = self.flow.ct
        if ct is not None:
            ct.resume_reading()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        flow = self.flow
        ct = flow.ct
        if ct is None:
            return                           # still connecting: the opener sees it
        if exc is not None:
            flow.relay._count("tcp_upstream_resets")
            ct.abort()                       # RST to the client
        elif not ct.is_closing():
            ct.close()
        flow._end()


# ==========================================================================================
# UDP
# ==========================================================================================

class _UdpFlow(Flow, asyncio.DatagramProtocol):
    """A UDP flow, and the protocol of its fasttcp (client-side) datagram transport."""

    __slots__ = ("pending", "held", "opening", "done")

    def __init__(self, relay: "Relay", destination: Tuple[Any, ...],
                 client: Tuple[Any, ...]) -> None:
        Flow.__init__(self, relay, "udp", client, destination)
        self.pending: Optional[List[bytes]] = []
        self.held = 0                        # bytes in pending
        self.opening: Optional[asyncio.Task[None]] = None
        self.done = False

    def connection_made(self, transport: Any) -> None:
        self.ct = transport
        self.opening = self.relay._start_udp(self)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.bytes_up += len(data)
        ut = self.ut
        if ut is not None:
            if ut.get_write_buffer_size() > UDP_QUEUE_BYTES:
                self.relay._count("udp_dropped")
                return
            ut.sendto(data)
        elif self.pending is not None and self.held + len(data) <= UDP_PENDING_BYTES:
            self.pending.append(data)
            self.held += len(data)
        else:
            self.relay._count("udp_dropped")

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Optional[Exception]) -> None:
        """The flow was idle for ``udp_timeout`` or closed: its upstream socket goes."""
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
        ut, self.ut = self.ut, None
        if ut is not None:
            ut.close()
        if not self.done:
            self.done = True
            self.relay._forget(self)


class _UdpUpstream(asyncio.DatagramProtocol):
    __slots__ = ("flow",)

    def __init__(self, flow: _UdpFlow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flow
        flow.bytes_down += len(data)
        ct = flow.ct
        if ct is not None and not ct.is_closing():
            ct.sendto(data)

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports an ICMP port unreachable as ECONNREFUSED
        # (Linux ip_icmp_error / ipv6_icmp_error): tell the client the same way.
        if isinstance(exc, ConnectionRefusedError):
            flow = self.flow
            ct = flow.ct
            if ct is not None and not ct.is_closing():
                # Port unreachable: ICMP code 3 (RFC 792), ICMPv6 code 4 (RFC 4443 3.1).
                try:
                    ct.unreachable(4 if ":" in flow.destination[0] else 3)
                except ValueError:                 # no datagram of the client's to quote
                    return
                flow.relay._count("udp_unreachable")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        pass


# ==========================================================================================
# SOCKS5
# ==========================================================================================

async def _socks5_connect(proxy: Socks5, destination: Tuple[Any, ...],
                          timeout: float) -> socket.socket:
    from python_socks import ProxyType
    from python_socks.async_.asyncio import Proxy

    p = Proxy(ProxyType.SOCKS5, proxy.host, proxy.port, proxy.username, proxy.password,
              loop=asyncio.get_running_loop())
    return await p.connect(destination[0], destination[1], timeout=timeout)


async def check_socks5(proxy: Socks5, timeout: float = 5.0) -> None:
    """Open one connection to the proxy and check it answers SOCKS5's method negotiation
    (RFC 1928 3: version 5, a method we offer); OSError in one line otherwise."""
    where = f"SOCKS5 proxy {_hostport((proxy.host, proxy.port))}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(proxy.host, proxy.port), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{where} does not answer (timed out after {timeout:g} s)") \
            from None
    except OSError as e:
        raise OSError(e.errno, f"{where} is unreachable: {e.strerror or e}") from None
    try:
        methods = b"\x00\x02" if proxy.username is not None else b"\x00"
        writer.write(bytes([5, len(methods)]) + methods)
        try:
            reply = await asyncio.wait_for(reader.readexactly(2), timeout)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            raise OSError(f"{where} did not answer the SOCKS5 greeting") from None
        if reply[0] != 5 or reply[1] not in methods:
            raise OSError(f"{where} is no SOCKS5 proxy that takes us (reply {reply.hex()})")
    finally:
        writer.close()


def _socks5_errors() -> Tuple[Type[BaseException], ...]:
    try:
        from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
    except ImportError:                                         # pragma: no cover
        return ()
    return (ProxyError, ProxyConnectionError, ProxyTimeoutError)


#: What an upstream connection attempt raises when it fails (refused, unreachable, timed
#: out, or the SOCKS5 proxy said no).
_CONNECT_ERRORS: Tuple[Type[BaseException], ...] = (OSError, asyncio.TimeoutError,
                                                    *_socks5_errors())


async def _socks5_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        proxy: Socks5) -> None:
    """Method negotiation (RFC 1928 3) and, if the proxy picks it, username/password
    (RFC 1929)."""
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    writer.write(bytes([5, len(methods)]) + methods)
    ver, method = await reader.readexactly(2)
    if ver != 5 or method not in methods:
        raise ConnectionRefusedError(f"SOCKS5 proxy refused our methods ({method:#x})")
    if method == 2:
        user = (proxy.username or "").encode()
        pw = (proxy.password or "").encode()
        writer.write(bytes([1, len(user)]) + user + bytes([len(pw)]) + pw)
        _, status = await reader.readexactly(2)
        if status != 0:
            raise ConnectionRefusedError("SOCKS5 proxy refused the username/password")


def _socks5_address(address: Tuple[Any, ...]) -> bytes:
    """ATYP, DST.ADDR, DST.PORT (RFC 1928 5) for an IP address."""
    ip = ipaddress.ip_address(address[0])
    atyp = 4 if ip.version == 6 else 1
    return bytes([atyp]) + ip.packed + struct.pack("!H", address[1])


async def _socks5_read_address(reader: asyncio.StreamReader) -> Tuple[str, int]:
    atyp = (await reader.readexactly(1))[0]
    if atyp == 1:
        host = str(ipaddress.ip_address(await reader.readexactly(4)))
    elif atyp == 4:
        host = str(ipaddress.ip_address(await reader.readexactly(16)))
    elif atyp == 3:
        n = (await reader.readexactly(1))[0]
        host = (await reader.readexactly(n)).decode("idna")
    else:
        raise ConnectionError(f"SOCKS5 reply with address type {atyp}")
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    return host, port


def _socks5_udp_payload(data: bytes) -> Optional[memoryview]:
    """The data of a UDP datagram from the proxy, after its RFC 1928 7 header (RSV, FRAG,
    ATYP, DST.ADDR, DST.PORT); None for a fragment (FRAG != 0: we do not reassemble, as
    the RFC allows) or a malformed header."""
    if len(data) < 10 or data[2] != 0:
        return None
    atyp = data[3]
    start = {1: 10, 4: 22}.get(atyp)
    if atyp == 3:
        start = 7 + data[4]
    if start is None or start > len(data):
        return None
    return memoryview(data)[start:]


class _Socks5UdpUpstream(asyncio.DatagramProtocol):
    """A UDP flow's upstream through a SOCKS5 UDP ASSOCIATE (RFC 1928 7): datagrams to
    the proxy's relay address carry the destination in a header, replies carry the
    source. The association lives as long as its TCP control connection."""

    __slots__ = ("flow", "header", "transport", "control")

    def __init__(self, flow: "_UdpFlow") -> None:
        self.flow = flow
        self.header = b"\0\0\0" + _socks5_address(flow.destination)
        self.transport: Any = None
        self.control: Optional[asyncio.StreamWriter] = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        payload = _socks5_udp_payload(data)
        flow = self.flow
        if payload is None:
            flow.relay._count("udp_dropped")
            return
        flow.bytes_down += len(payload)
        ct = flow.ct
        if ct is not None and not ct.is_closing():
            ct.sendto(bytes(payload))

    # --- what _UdpFlow uses of its upstream transport -------------------------------------

    def sendto(self, data: bytes) -> None:
        self.transport.sendto(self.header + data)

    def get_write_buffer_size(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def close(self) -> None:
        self.transport.close()
        if self.control is not None:
            self.control.close()


async def _socks5_udp_associate(proxy: Socks5, flow: "_UdpFlow",
                                timeout: float) -> _Socks5UdpUpstream:
    """Open a UDP association for ``flow`` (RFC 1928 7): a TCP control connection,
    UDP ASSOCIATE with an all-zero address (we do not know our UDP source before the
    reply: the RFC's choice for that case), then a UDP socket connected to the relay
    address the proxy names (the proxy's own address if it names an unspecified one)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(proxy.host, proxy.port),
                                            timeout)
    up = _Socks5UdpUpstream(flow)
    try:
        # DST.ADDR of the request is where our datagrams will come from (not where they
        # go): the zero address of the family we reach the proxy with.
        family6 = ":" in writer.get_extra_info("peername")[0]

        async def negotiate() -> Tuple[str, int]:
            await _socks5_greet(reader, writer, proxy)
            zero = ("::" if family6 else "0.0.0.0", 0)
            writer.write(b"\x05\x03\x00" + _socks5_address(zero))
            ver, rep, _ = await reader.readexactly(3)
            if ver != 5 or rep != 0:
                raise ConnectionRefusedError(f"SOCKS5 UDP ASSOCIATE refused (REP {rep})")
            return await _socks5_read_address(reader)

        host, port = await asyncio.wait_for(negotiate(), timeout)
        if ipaddress.ip_address(host).is_unspecified:
            host = writer.get_extra_info("peername")[0]
        await loop.create_datagram_endpoint(lambda: up, remote_addr=(host, port))
    except BaseException:
        writer.close()
        raise
    up.control = writer

    async def watch() -> None:
        # The association ends when the control connection does (RFC 1928 7).
        try:
            while await reader.read(4096):
                pass
        except OSError:
            pass
        ct = flow.ct
        if ct is not None and not ct.is_closing():
            ct.close()
    loop.create_task(watch())
    return up


# ==========================================================================================
# The relay
# ==========================================================================================

_STAT_KEYS = ("tcp_flows", "tcp_connecting", "udp_flows", "tcp_flows_total",
              "tcp_refused_upstream", "tcp_refused_limit", "tcp_dropped_limit",
              "tcp_refused_by_choice", "tcp_client_gone", "tcp_client_resets",
              "tcp_upstream_resets", "udp_flows_total", "udp_refused", "udp_open_failed",
              "udp_dropped", "udp_unreachable", "bytes_up", "bytes_down")


class Relay:
    """Relay what ``stack`` intercepts in ``routes`` (CIDR prefixes of either family) to
    its original destination; see the module docstring.

    ``upstream(flow)`` (sync or async; None: always :class:`Direct`) returns a
    :class:`Direct`, :class:`Socks5`, :class:`Refuse` or an opener for each new flow.
    ``udp`` False leaves UDP alone. ``udp_timeout``: seconds an idle UDP flow lives.
    ``max_flows``: TCP flows at once (and UDP flows at once); ``max_connecting``: TCP flows
    at once whose upstream connection is still being made; ``connect_timeout``: seconds
    the upstream connection may take before the client is refused.

    ``await relay.start()`` starts intercepting; ``await relay.close()`` stops, and resets
    every flow still open. Also an async context manager.
    """

    def __init__(self, stack: Any, routes: Iterable[str], *,
                 upstream: Optional[Callable[[Flow], Any]] = None, udp: bool = True,
                 udp_timeout: float = 60.0, max_flows: int = 4096, max_connecting: int = 512,
                 connect_timeout: float = 10.0) -> None:
        self.stack = stack
        self.routes: Tuple[str, ...] = tuple(str(r) for r in routes)
        if not self.routes:
            raise ValueError("a relay needs at least one route")
        if max_flows < 1 or max_connecting < 1:
            raise ValueError("max_flows and max_connecting must be at least 1")
        if udp_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("udp_timeout and connect_timeout must be more than 0")
        self.upstream = upstream
        self.udp = udp
        self.udp_timeout = float(udp_timeout)
        self.max_flows = int(max_flows)
        self.max_connecting = int(max_connecting)
        self.connect_timeout = float(connect_timeout)
        self._rbuf = memoryview(bytearray(READ_SIZE))      # fasttcp side -> upstream
        self._ubuf = memoryview(bytearray(READ_SIZE))      # upstream -> fasttcp side
        self._tcp: Set[_TcpFlow] = set()
        self._udp: Set[_UdpFlow] = set()
        self._connecting: Dict[_TcpFlow, Tuple["asyncio.Task[None]", Any]] = {}
        self._counts: Dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._bytes = [0, 0]                 # of flows that have ended
        self._icpt: Any = None
        self._uicpt: Any = None
        self._closed = False

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._icpt is not None:
            raise RuntimeError("relay already started")
        self._icpt = self.stack.intercept(list(self.routes), self._on_tcp)
        if self.udp:
            self._uicpt = self.stack.intercept_udp(list(self.routes), self._udp_factory,
                                                   idle_timeout=self.udp_timeout,
                                                   max_flows=self.max_flows)

    async def close(self) -> None:
        """Stop intercepting; reset every TCP flow (both sides) and close every UDP flow."""
        if self._closed:
            return
        self._closed = True
        for icpt in (self._icpt, self._uicpt):
            if icpt is not None:
                icpt.close()
        for task, _iflow in list(self._connecting.values()):
            task.cancel()
        for flow in list(self._tcp):
            if flow.ct is not None:
                flow.ct.abort()
            _reset(flow.ut)
        for uflow in list(self._udp):
            if uflow.ct is not None:
                uflow.ct.close()
            if uflow.ut is not None:
                uflow.ut.close()
        tasks = [t for t, _ in self._connecting.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await asyncio.sleep(0)               # connection_lost callbacks
        self.stack.kick()

    async def __aenter__(self) -> "Relay":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # --- what is going on -----------------------------------------------------------------

    def flows(self) -> List[Flow]:
        return [*self._tcp, *self._udp]

    def stats(self) -> Dict[str, int]:
        out = dict(self._counts)
        out["tcp_flows"] = len(self._tcp)
        out["tcp_connecting"] = len(self._connecting)
        out["udp_flows"] = len(self._udp)
        up, down = self._bytes
        for f in self._tcp:
            up += f.bytes_up
            down += f.bytes_down
        for u in self._udp:
            up += u.bytes_up
            down += u.bytes_down
        out["bytes_up"], out["bytes_down"] = up, down
        return out

    def _count(self, key: str) -> None:
        self._counts[key] += 1

    def _forget(self, flow: Flow) -> None:
        if isinstance(flow, _TcpFlow):
            self._tcp.discard(flow)
        else:
            self._udp.discard(flow)
        self._bytes[0] += flow.bytes_up
        self._bytes[1] += flow.bytes_down

    async def _choose(self, flow: Flow) -> Any:
        if self.upstream is None:
            return _DIRECT
        choice = self.upstream(flow)
        if inspect.isawaitable(choice):
            choice = await choice
        return _DIRECT if choice is None else choice

    # --- TCP ------------------------------------------------------------------------------

    def _on_tcp(self, iflow: Any) -> None:
        """A new intercepted TCP flow (its SYN, before any answer)."""
        if self._closed:
            _refuse(iflow)
            return
        if len(self._tcp) >= self.max_flows:
            self._count("tcp_refused_limit")
            _refuse(iflow)
            return
        if len(self._connecting) >= self.max_connecting:
            self._count("tcp_dropped_limit")
            try:
                iflow.drop()
            except ConnectionError:
                pass
            return
        flow = _TcpFlow(self, iflow.remote_address, iflow.local_address)
        self._tcp.add(flow)
        self._counts["tcp_flows_total"] += 1
        task = asyncio.get_running_loop().create_task(self._open_tcp(flow, iflow))
        self._connecting[flow] = (task, iflow)

    async def _open_tcp(self, flow: _TcpFlow, iflow: Any) -> None:
        """Connect upstream (within connect_timeout), then complete the client's handshake;
        refuse the client if the upstream cannot be had."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        expired: List[bool] = []

        def expire() -> None:            # a timer, not wait_for: no second task per flow
            expired.append(True)
            if task is not None:
                task.cancel()
        timer = loop.call_later(self.connect_timeout, expire)
        try:
            try:
                up = await self._connect_tcp(flow)
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            if not expired:                  # the relay is closing
                _reset(flow.ut)
                _refuse(iflow)
                flow._end()
                self._connecting.pop(flow, None)
                raise
            up = False
            log.debug("relay: %r: upstream timed out", flow)
        except _CONNECT_ERRORS as e:
            # Refused, unreachable, or the proxy said no (RFC 1928 6 REP != 0).
            log.debug("relay: %r: upstream failed: %r", flow, e)
            up = False
        except BaseException:
            self._connecting.pop(flow, None)
            _reset(flow.ut)
            _refuse(iflow)
            flow._end()
            raise
        self._connecting.pop(flow, None)
        if up is None:                       # Refuse()
            self._count("tcp_refused_by_choice")
            _refuse(iflow)
            flow._end()
            return
        ut = flow.ut
        if not up or ut is None or ut.is_closing():
            # Refused, unreachable, timed out, or connected and reset at once: the client
            # gets RST, as from a closed port.
            self._count("tcp_refused_upstream")
            _reset(ut)
            _refuse(iflow)
            flow._end()
            return
        # asyncio's socket transport sends what it is given or copies the rest at once, so
        # it may be handed views of the shared read buffer; any other transport gets bytes.
        flow.copy = type(ut).__module__ != "asyncio.selector_events"
        try:
            await iflow.accept(lambda: flow)
        except ConnectionError:
            self._count("tcp_client_gone")
            _reset(ut)
            flow._end()
        except OSError:
            # The host holds max_connections already (ENOBUFS): the flow is still
            # pending, and is refused like any other we cannot take.
            self._count("tcp_refused_limit")
            _reset(ut)
            _refuse(iflow)
            flow._end()
        except asyncio.CancelledError:
            _reset(ut)
            flow._end()
            raise

    async def _connect_tcp(self, flow: _TcpFlow) -> Optional[bool]:
        """Open the upstream side as ``upstream(flow)`` says: True once it is connected,
        None for Refuse(); connection errors are raised."""
        loop = asyncio.get_running_loop()
        choice = await self._choose(flow)
        dest = flow.destination
        if isinstance(choice, Refuse):
            return None
        if isinstance(choice, Direct):
            flow.via = "direct"
            await loop.create_connection(lambda: _TcpUpstream(flow), dest[0], dest[1])
        elif isinstance(choice, Socks5):
            flow.via = f"socks5 {_hostport((choice.host, choice.port))}"
            sock = await _socks5_connect(choice, dest, self.connect_timeout)
            try:
                await loop.create_connection(lambda: _TcpUpstream(flow), sock=sock)
            except BaseException:
                sock.close()
                raise
        elif callable(choice):
            flow.via = getattr(choice, "__name__", "opener")
            await choice(lambda: _TcpUpstream(flow))
        else:
            raise TypeError(f"upstream() returned {choice!r}: not Direct, Socks5, Refuse "
                            "or an opener")
        return True

    # --- UDP ------------------------------------------------------------------------------

    def _udp_factory(self, destination: Tuple[Any, ...], client: Tuple[Any, ...]) -> _UdpFlow:
        flow = _UdpFlow(self, destination, client)
        self._udp.add(flow)
        self._counts["udp_flows_total"] += 1
        return flow

    def _start_udp(self, flow: _UdpFlow) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self._open_udp(flow))

    async def _open_udp(self, flow: _UdpFlow) -> None:
        loop = asyncio.get_running_loop()
        ut: Any = None
        try:
            choice = await self._choose(flow)
            if isinstance(choice, Refuse):
                self._count("udp_refused")
                flow.ct.close()
                return
            if isinstance(choice, Socks5):
                flow.via = f"socks5 {_hostport((choice.host, choice.port))}"
                ut = await _socks5_udp_associate(choice, flow, self.connect_timeout)
            elif isinstance(choice, Direct):
                flow.via = "direct"
                dest = flow.destination
                family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
                ut, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpUpstream(flow), remote_addr=(dest[0], dest[1]),
                    family=family)
            elif callable(choice):
                flow.via = getattr(choice, "__name__", "opener")
                ut, _ = await asyncio.wait_for(choice(lambda: _UdpUpstream(flow)),
                                               self.connect_timeout)
            else:
                raise TypeError(f"upstream() returned {choice!r}")
        except (OSError, EOFError, asyncio.TimeoutError) as e:
            log.debug("relay: %r: upstream failed: %r", flow, e)
            self._count("udp_open_failed")
            if flow.ct is not None:
                flow.ct.close()
            return
        if flow.done:
            ut.close()
            return
        flow.ut = ut
        pending, flow.pending = flow.pending, None
        for data in pending or ():
            ut.sendto(data)


_DIRECT = Direct()
