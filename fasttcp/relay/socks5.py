"""SOCKS5 upstreams: CONNECT through python-socks, UDP ASSOCIATE (RFC 1928 7, RFC 1929
authentication) written here, as python-socks implements only CONNECT."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, Any, Optional, Tuple, Type

from fasttcp.relay.pump import _hostport
from fasttcp.relay.upstream import Socks5

if TYPE_CHECKING:                                   # pragma: no cover
    from fasttcp.relay.pump import _UdpFlow


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
