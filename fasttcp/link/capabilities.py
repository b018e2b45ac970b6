"""The link contract: what a link is, and the capabilities record every link declares.

A link moves whole IP packets (IPv4 or IPv6: the version nibble tells) between a host
and a network. There are two kinds:

- a *batch link* (:class:`BatchLink`): ``recv_batch(max)`` returns the packets that are
  waiting (an empty list when none are), ``send_batch(packets)`` writes a batch without
  blocking and returns how many packets it took, and ``fileno()`` gives a file descriptor
  an event loop can watch for readability (TunLink, DatagramSocketLink). A link without a
  descriptor (MemoryLink) is driven by a loop of its own that polls ``recv_batch``.
- a *packet I/O* (:class:`~fasttcp.link.packet_io.PacketIO`): ``await recv()`` returns the
  next non-empty batch, ``send(packets)`` never blocks and may return an awaitable for
  backpressure (QueuePacketIO, UdpPacketIO).

Besides the calls, a link declares a :class:`LinkCapabilities` record as the class
attribute (or property) ``capabilities``, like smoltcp's ``DeviceCapabilities``. Whoever
drives a host over the link (the asyncio :class:`~fasttcp.aio.Driver`) reads the record
with :func:`capabilities_of` and nothing else: no probing of signatures or attributes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Protocol, runtime_checkable

__all__ = ["BatchLink", "LinkCapabilities", "PARSE_NO_TCP_CSUM", "capabilities_of"]

#: ``SegmentBatch.parse`` flag (fasttcp/wire/_wire.pxd): TCP checksums already verified.
PARSE_NO_TCP_CSUM = 0x01


@dataclass(frozen=True)
class LinkCapabilities:
    """What a link can do and what it needs from the host driving it.

    ``mtu``: the largest IP packet the link carries, in bytes (None: no limit of its own).

    ``rx_checksum_offload``: every received TCP packet's checksum was verified below the
    host (by the kernel or the device), or is a partial one made by the local kernel; the
    host parses with :attr:`parse_flags` and skips the check.
    ``tx_checksum_offload``: the device completes TCP checksums of sent packets.

    ``tso_max_size``: the largest TCP super-packet ``send_batch`` accepts and segments
    itself (TSO/GSO); 0: every packet must fit ``mtu``. ``gro_max_size``: the largest
    super-packet ``recv_batch`` may hand up (GRO/LRO); 0: none.

    ``takes_split_packets``: ``send_batch`` accepts :class:`fasttcp.wire.SplitPacket`
    (headers plus views of a connection's send ring) and is done with them when it returns.
    ``keeps_packets``: the link holds on to sent packet objects after ``send_batch``
    returns (a queue, a delay line); it must get packets nobody will change, so never
    SplitPackets. The host sends SplitPackets only when the first is true and this false.

    ``recv_views``: ``recv_batch(max, copy=False)`` returns views into the link's buffers,
    valid until its next call. ``recv_max_bytes``: ``recv_batch(max, max_bytes=n)`` stops
    a batch once it holds ``n`` bytes.

    ``delays_packets``: sent (or received) packets may wait inside the link (a delay line
    such as :class:`~fasttcp.link.FaultyLink`); the driver must call ``link.flush()`` and
    ``link.recv_batch()`` once ``link.next_arrival()`` (a time on ``link.clock()``) has
    come.

    ``packet_io``: the link is a PacketIO (``await recv()`` / ``send(packets)``), not a
    batch link.
    """

    mtu: Optional[int] = None
    rx_checksum_offload: bool = False
    tx_checksum_offload: bool = False
    tso_max_size: int = 0
    gro_max_size: int = 0
    takes_split_packets: bool = False
    keeps_packets: bool = True
    recv_views: bool = False
    recv_max_bytes: bool = False
    delays_packets: bool = False
    packet_io: bool = False

    def __post_init__(self) -> None:
        if self.mtu is not None and not 68 <= self.mtu <= 65535:     # RFC 791
            raise ValueError(f"mtu must be 68..65535 or None, not {self.mtu!r}")
        if self.tso_max_size < 0 or self.gro_max_size < 0:
            raise ValueError("tso_max_size and gro_max_size must be >= 0")
        if self.packet_io and (self.recv_views or self.recv_max_bytes):
            raise ValueError("recv_views / recv_max_bytes are recv_batch options: "
                             "a packet I/O has none")

    @property
    def parse_flags(self) -> int:
        """The ``parse_flags`` argument of ``Host.receive`` for this link's packets."""
        return PARSE_NO_TCP_CSUM if self.rx_checksum_offload else 0

    @property
    def split_packets(self) -> bool:
        """Whether a host may send SplitPackets on this link (see the class docstring)."""
        return self.takes_split_packets and not self.keeps_packets

    def replace(self, **changes: Any) -> LinkCapabilities:
        """A copy with some fields changed (a wrapper derives its record this way)."""
        return dataclasses.replace(self, **changes)


#: A batch link that declares nothing: plain packets, kept as given, no offloads.
BATCH_LINK_DEFAULTS = LinkCapabilities()
#: A packet I/O that declares nothing.
PACKET_IO_DEFAULTS = LinkCapabilities(packet_io=True)


@runtime_checkable
class BatchLink(Protocol):
    """A batch link (module docstring). ``capabilities`` is expected but not required."""

    def recv_batch(self, max: int = 64) -> List[Any]:  # noqa: A002 - the link interface name
        ...

    def send_batch(self, packets: Iterable[Any]) -> Optional[int]:
        ...

    def fileno(self) -> int:
        ...


def capabilities_of(link: Any) -> LinkCapabilities:
    """The record ``link`` declares, or a conservative default for one that does not.

    The record is looked up on the link's *class*: a wrapper that forwards unknown
    attributes to the link inside (``__getattr__``) does not inherit that link's record,
    because it may well keep or change the packets. A link that declares nothing gets
    :data:`BATCH_LINK_DEFAULTS` or :data:`PACKET_IO_DEFAULTS` (no offloads, no
    SplitPackets, no views); anything that is neither kind raises TypeError.
    """
    declared = getattr(type(link), "capabilities", None)
    if isinstance(declared, LinkCapabilities):
        return declared
    if declared is not None:                 # a property: computed from the open device
        caps = link.capabilities
        if not isinstance(caps, LinkCapabilities):
            raise TypeError(f"{type(link).__name__}.capabilities is not a LinkCapabilities")
        return caps
    from fasttcp.link.packet_io import PacketIO     # (packet_io imports this module)
    if isinstance(link, PacketIO):
        return PACKET_IO_DEFAULTS
    if isinstance(link, BatchLink):
        return BATCH_LINK_DEFAULTS
    raise TypeError(f"{type(link).__name__} is not a link: a batch link has "
                    "recv_batch/send_batch/fileno, a PacketIO async recv()/send(packets)")
