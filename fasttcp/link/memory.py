"""MemoryLink: two in-process packet queues joined back to back, for tests and demos.

A MemoryLink is a batch link (the contract is in :mod:`fasttcp.link.capabilities`):
``send_batch`` puts packets on the wire, ``recv_batch`` takes what arrived. It has no file
descriptor, so ``fileno()`` raises; drive it from a loop that calls ``recv_batch`` when it
wants to.
"""
from __future__ import annotations

import io
from collections import deque
from typing import Iterable, Optional

from fasttcp.link.capabilities import LinkCapabilities

__all__ = ["MemoryLink", "exchange"]


class MemoryLink:
    """One end of an in-process link. Make both ends with :meth:`pair`.

    Each end owns a receive queue of at most ``capacity`` packets. A packet sent while the
    peer's queue is full is dropped, like a full device queue: the sender's ``tx_dropped``
    and the receiver's ``rx_dropped`` both count it, and ``send_batch`` returns how many
    packets were taken.
    """

    #: What waits in the queue is immutable bytes (anything else is copied on the way in).
    capabilities = LinkCapabilities(keeps_packets=False)

    __slots__ = ("capacity", "peer", "closed", "_rx", "tx_packets", "tx_bytes",
                 "tx_dropped", "rx_packets", "rx_bytes", "rx_dropped")

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1 packet")
        self.capacity = capacity
        self.peer: Optional[MemoryLink] = None
        self.closed = False
        self._rx: deque = deque()
        self.tx_packets = 0
        self.tx_bytes = 0
        self.tx_dropped = 0
        self.rx_packets = 0
        self.rx_bytes = 0
        self.rx_dropped = 0

    @classmethod
    def pair(cls, capacity: int = 4096) -> tuple[MemoryLink, MemoryLink]:
        """Two connected ends: what one sends, the other receives."""
        a, b = cls(capacity), cls(capacity)
        a.peer, b.peer = b, a
        return a, b

    def send_batch(self, packets: Iterable[bytes]) -> int:
        """Queue packets at the peer; returns how many were taken (the rest were dropped).

        Packets are stored as immutable ``bytes`` (a bytearray or memoryview is copied), so
        the caller may reuse its buffers at once, as with a real device write.
        """
        if self.closed:
            raise ValueError("send on a closed MemoryLink")
        peer = self.peer
        taken = dropped = nbytes = 0
        if peer is None or peer.closed:
            # A link whose far end is gone swallows packets, like a cable with nobody on it.
            for _ in packets:
                dropped += 1
            self.tx_dropped += dropped
            return 0
        q = peer._rx
        room = peer.capacity - len(q)
        for p in packets:
            if room <= 0:
                dropped += 1
                continue
            if type(p) is not bytes:
                p = bytes(p)
            q.append(p)
            room -= 1
            taken += 1
            nbytes += len(p)
        self.tx_packets += taken
        self.tx_bytes += nbytes
        peer.rx_packets += taken
        peer.rx_bytes += nbytes
        if dropped:
            self.tx_dropped += dropped
            peer.rx_dropped += dropped
        return taken

    def recv_batch(self, max: int = 64) -> list[bytes]:  # noqa: A002 - the link interface name
        """Up to ``max`` queued packets, oldest first; an empty list when none are waiting."""
        q = self._rx
        if len(q) <= max:
            out = list(q)
            q.clear()
            return out
        popleft = q.popleft
        return [popleft() for _ in range(max)]

    def pending(self) -> int:
        """Packets waiting to be received at this end."""
        return len(self._rx)

    def __len__(self) -> int:
        return len(self._rx)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("MemoryLink has no file descriptor; poll recv_batch")

    def close(self) -> None:
        """Drop anything queued here; later sends to this end are dropped."""
        self.closed = True
        self._rx.clear()

    def __repr__(self) -> str:
        return (f"<MemoryLink pending={len(self._rx)} tx={self.tx_packets} "
                f"rx={self.rx_packets} drops={self.tx_dropped}/{self.rx_dropped}>")


def exchange(a, b, now: float, max_rounds: int = 50) -> int:
    """Wire two sans-IO hosts back to back at one instant: hand each one's output to the
    other until both are quiet (or ``max_rounds``). Returns the packets moved.

    This is not a network of its own: it has no clock (the caller gives ``now``) and no
    routing (everything ``a`` sends goes to ``b``). It is what a :class:`NetSim` with
    perfect pipes does within one instant, without building one per call (tests and the
    connection-rate benchmark call it per step). Anything with time, delay, faults or
    capture belongs on :class:`~fasttcp.link.NetSim`."""
    moved = 0
    for _ in range(max_rounds):
        pa, pb = a.transmit(now), b.transmit(now)
        if not pa and not pb:
            break
        moved += len(pa) + len(pb)
        if pa:
            b.receive(pa, now)
        if pb:
            a.receive(pb, now)
    return moved
