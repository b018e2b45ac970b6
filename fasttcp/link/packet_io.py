"""Packet sources and sinks for the asyncio driver when the link is not a TUN device.

A :class:`PacketIO` moves whole IPv4 packets: ``await recv()`` returns the next batch (a
non-empty list of packets), ``send(packets)`` hands a batch to the other side. ``send`` must
not block; it may drop packets when its queue is full (TCP retransmits, as over any
network), or it may return an awaitable, which the driver awaits before its next ``send``.

Adapters:

- :class:`QueuePacketIO` - an asyncio.Queue pair: two hosts in one event loop, no sockets.
- :class:`UdpPacketIO` - a UDP datagram endpoint carrying one IPv4 packet per datagram, so
  TCP runs in-process over UDP without root.

(:class:`~fasttcp.link.DatagramSocketLink` is not a PacketIO but a batch link over a
datagram socket; :mod:`fasttcp.link.capabilities` describes both kinds.)
"""
from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, Awaitable, Deque, List, Optional, Protocol, Tuple, runtime_checkable

from fasttcp.link.capabilities import LinkCapabilities

__all__ = ["PacketIO", "QueuePacketIO", "UdpPacketIO"]


@runtime_checkable
class PacketIO(Protocol):
    """An async packet source and sink (see the module docstring)."""

    async def recv(self) -> List[bytes]:
        """The next batch of received packets (waits until there is at least one)."""
        ...

    def send(self, packets: List[bytes]) -> Optional[Awaitable[Any]]:
        """Send a batch; must not block (drop, or return an awaitable to apply backpressure)."""
        ...


# ========================================================================================
# asyncio.Queue pair
# ========================================================================================

class QueuePacketIO:
    """One end of an in-process packet pipe built on two :class:`asyncio.Queue` objects.

    Items on the queues are batches (lists of packets); a single ``bytes`` item is taken as
    a batch of one, so hand-made queues interoperate. ``recv`` merges waiting batches up to
    ``max_batch`` packets. ``send`` drops the batch when the peer's queue already holds
    ``max_queued`` packets (like a full device queue), counted in :attr:`dropped`.
    """

    #: Packets wait in the peer's queue: they are kept (views are copied to bytes first).
    capabilities = LinkCapabilities(packet_io=True, keeps_packets=True)

    def __init__(self, rx: asyncio.Queue, tx: asyncio.Queue, *, max_batch: int = 256,
                 max_queued: int = 16384) -> None:
        self.rx = rx
        self.tx = tx
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.peer: Optional[QueuePacketIO] = None
        self.queued = 0               # packets waiting in rx (kept in step by the peer)
        self.sent = 0
        self.received = 0
        self.dropped = 0

    @classmethod
    def pair(cls, **kwargs: Any) -> Tuple["QueuePacketIO", "QueuePacketIO"]:
        """Two connected ends: what one sends, the other receives."""
        q1: asyncio.Queue = asyncio.Queue()
        q2: asyncio.Queue = asyncio.Queue()
        a, b = cls(q1, q2, **kwargs), cls(q2, q1, **kwargs)
        a.peer, b.peer = b, a
        return a, b

    async def recv(self) -> List[bytes]:
        out = self._take(await self.rx.get())
        while len(out) < self.max_batch and not self.rx.empty():
            out.extend(self._take(self.rx.get_nowait()))
        self.received += len(out)
        return out

    def _take(self, item: Any) -> List[bytes]:
        batch = [item] if isinstance(item, (bytes, bytearray, memoryview)) else list(item)
        self.queued = max(0, self.queued - len(batch))
        return batch

    def send(self, packets: List[bytes]) -> None:
        n = len(packets)
        if not n:
            return
        peer = self.peer
        if peer is not None and peer.queued + n > peer.max_queued:
            self.dropped += n
            return
        # Copy views: the caller may reuse its buffers, as after a device write.
        batch = [p if type(p) is bytes else bytes(p) for p in packets]
        self.tx.put_nowait(batch)
        if peer is not None:
            peer.queued += n
        self.sent += n


# ========================================================================================
# UDP datagram endpoint
# ========================================================================================

class UdpPacketIO(asyncio.DatagramProtocol):
    """IPv4 packets carried one per UDP datagram, on an asyncio datagram endpoint.

    Make one with ``await UdpPacketIO.create(local_addr, remote_addr)``. Without a
    ``remote_addr`` the endpoint learns its peer from the first datagram it receives (a
    server side); datagrams from any other address are dropped. ``send`` drops packets
    while the peer is unknown or the transport's buffer is above ``max_buffer`` bytes.
    """

    #: One packet per datagram: at most 65,507 bytes of UDP payload. The transport may
    #: buffer what it could not send yet, so packets are kept.
    capabilities = LinkCapabilities(mtu=65507, packet_io=True, keeps_packets=True)

    def __init__(self, remote_addr: Optional[Tuple[str, int]] = None, *, max_batch: int = 256,
                 max_buffer: int = 4 << 20) -> None:
        self.peer_addr = remote_addr
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.transport: Optional[asyncio.DatagramTransport] = None
        self._rx: Deque[bytes] = deque()
        self._waiter: Optional[asyncio.Future] = None
        self._exc: Optional[BaseException] = None
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.errors = 0

    @classmethod
    async def create(cls, local_addr: Tuple[str, int] = ("127.0.0.1", 0),
                     remote_addr: Optional[Tuple[str, int]] = None, *,
                     rcvbuf: int = 4 << 20, **kwargs: Any) -> "UdpPacketIO":
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(remote_addr, **kwargs), local_addr=local_addr,
            family=socket.AF_INET)
        sock = proto.transport.get_extra_info("socket")
        if sock is not None and rcvbuf:
            try:      # a burst of a full window must not overflow the default buffer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            except OSError:  # pragma: no cover - clamped by net.core.rmem_max anyway
                pass
        return proto

    @property
    def local_addr(self) -> Tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")

    # --- asyncio.DatagramProtocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Tuple[str, int]) -> None:
        if self.peer_addr is None:
            self.peer_addr = addr
        elif addr != self.peer_addr:
            self.dropped += 1
            return
        self._rx.append(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on a UDP socket (port unreachable while the peer starts): TCP copes.
        self.errors += 1

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._exc = exc or ConnectionAbortedError("UDP endpoint closed")
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # --- PacketIO ---

    async def recv(self) -> List[bytes]:
        rx = self._rx
        while not rx:
            if self._exc is not None:
                raise self._exc
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if len(rx) <= self.max_batch:
            out = list(rx)
            rx.clear()
        else:
            out = [rx.popleft() for _ in range(self.max_batch)]
        self.received += len(out)
        return out

    def send(self, packets: List[bytes]) -> None:
        tr = self.transport
        peer = self.peer_addr
        if tr is None or tr.is_closing() or peer is None:
            self.dropped += len(packets)
            return
        for p in packets:
            if tr.get_write_buffer_size() > self.max_buffer:
                self.dropped += 1
                continue
            tr.sendto(p, peer)
            self.sent += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
