"""The two sides of one relayed flow: the TCP pump (flow control, half-close, resets)
and the UDP flow with its upstream socket."""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

if TYPE_CHECKING:                                   # pragma: no cover
    from fasttcp.relay.relay import Relay


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
        # The client's ICMP port unreachable about a datagram we relayed to it (its socket
        # is gone; the host hands the error to the flow, as Linux to the sending socket):
        # the flow ends now rather than at its idle timeout, and its upstream socket with
        # it. A later datagram from that port opens a new flow. Other ICMP errors (a
        # host or network unreachable) may be transient and leave the flow alone.
        if isinstance(exc, ConnectionRefusedError) and self.ct is not None \
                and not self.ct.is_closing():
            self.relay._count("udp_client_unreachable")
            self.ct.close()

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
