"""A seeded fault injector: a one-way pipe in virtual time.

:class:`FaultyLink` takes packets with ``push(packets, now)`` and gives back, from
``pop(now)``, those whose arrival time has come. On the way it can drop packets longer than
an MTU, serialise them at a bit rate behind a byte-bounded tail-drop queue (a router's
bottleneck), lose, corrupt, duplicate, delay, jitter and reorder them. Every random choice
comes from one ``random.Random(seed)``, so the same seed and the same input give the same
output, packet for packet.

The stages, in order, for each packet pushed at time ``now``:

1. MTU: a packet longer than ``mtu`` is dropped (``mtu_dropped``) and handed to
   ``on_oversize(packet, now)`` if set, so a simulator can answer with ICMP
   "fragmentation needed" (RFC 1191).
2. Rate: with ``rate`` bits/s the packet starts serialising when the previous one has
   finished and leaves ``8 * len / rate`` seconds later. ``queue_bytes`` bounds the bytes
   waiting for or in serialisation; a packet that does not fit is tail-dropped
   (``queue_dropped``). With ``ce_threshold``, an ECN-capable packet (ECT(0) or ECT(1),
   RFC 3168 section 5) that finds at least that many bytes queued is marked CE instead
   (``ce_marked``; an IPv4 header checksum is updated), as a step-marking AQM does.
3. Loss (``lost``), then corruption: ``corrupt_bits`` distinct random bits flipped
   (``corrupted``). One flipped bit always breaks the Internet checksum (RFC 1071), so the
   receiver must drop the packet.
4. Duplication: a second copy (``duplicated``) travels beside the original, with its own
   jitter and reordering draws; it does not use the rate limiter again.
5. Delay: ``delay + uniform(0, jitter)`` after leaving the rate limiter. Jitter can reorder
   packets (as Linux netem does) unless ``jitter_reorders=False``, which keeps FIFO order.
6. Reordering: with probability ``reorder`` a packet is held back ``uniform(0,
   reorder_delay]`` more, so packets sent after it can overtake it (``reordered``).

A FaultyLink can also wrap a link (e.g. a :class:`~fasttcp.link.MemoryLink` end or a
:class:`~fasttcp.link.TunLink`): then it is a link itself, and impairs what is *sent*
through it; wrap both ends to impair both directions, or give ``rx=FaultConfig(...)`` to
impair what is *received* from the wrapped link too (a second pipe, with its own seed),
when only one end is ours (a TUN device with the kernel on the other side). Its
capabilities record says ``delays_packets``: whoever drives it must call ``flush()`` and
``recv_batch()`` by ``next_arrival()`` (the asyncio driver arms a loop timer for that).
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

from fasttcp.link.capabilities import LinkCapabilities, capabilities_of

__all__ = ["FaultConfig", "FaultStats", "FaultyLink"]

Seed = Union[int, str, bytes]


@dataclass(frozen=True)
class FaultConfig:
    """What a :class:`FaultyLink` does to the packets crossing it. Times are seconds.

    Probabilities are per packet, in [0, 1]. ``rate`` is in bits per second (None: no
    limit); ``queue_bytes`` bounds the rate limiter's queue (None: unbounded); ``mtu`` is the
    largest IPv4 packet, in bytes, that passes (None: any).
    """

    seed: Seed = 0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    delay: float = 0.0
    jitter: float = 0.0
    jitter_reorders: bool = True
    rate: Optional[float] = None
    queue_bytes: Optional[int] = None
    ce_threshold: Optional[int] = None
    mtu: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p!r}")
        for name in ("reorder_delay", "delay", "jitter"):
            v = getattr(self, name)
            if not (v >= 0.0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite time >= 0, not {v!r}")
        if self.reorder > 0 and self.reorder_delay <= 0:
            raise ValueError("reorder needs reorder_delay > 0 (how long a packet is held back)")
        if self.corrupt_bits < 1:
            raise ValueError("corrupt_bits must be at least 1")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate must be a positive number of bits per second, or None")
        if self.queue_bytes is not None:
            if self.rate is None:
                raise ValueError("queue_bytes needs a rate: without one nothing ever queues")
            if self.queue_bytes < 0:
                raise ValueError("queue_bytes must be >= 0")
        if self.ce_threshold is not None:
            if self.rate is None:
                raise ValueError("ce_threshold needs a rate: without one nothing ever queues")
            if self.ce_threshold < 0:
                raise ValueError("ce_threshold must be >= 0")
        if self.mtu is not None and self.mtu < 1:
            raise ValueError("mtu must be positive")

    @property
    def ideal(self) -> bool:
        """True when the pipe changes nothing: every packet arrives the moment it is sent."""
        return (self.loss == 0 and self.duplicate == 0 and self.reorder == 0
                and self.corrupt == 0 and self.delay == 0 and self.jitter == 0
                and self.rate is None and self.mtu is None)

    def replace(self, **changes: Any) -> FaultConfig:
        """A copy with some fields changed, e.g. ``cfg.replace(seed=7)``."""
        return dataclasses.replace(self, **changes)


@dataclass
class FaultStats:
    """Counters of everything a :class:`FaultyLink` did. Bytes are IPv4 packet lengths."""

    packets_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    mtu_dropped: int = 0
    queue_dropped: int = 0
    ce_marked: int = 0
    queue_peak_bytes: int = 0

    @property
    def dropped(self) -> int:
        """Packets that will never arrive: lost, too long, or tail-dropped."""
        return self.lost + self.mtu_dropped + self.queue_dropped

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ect(p: Any) -> bool:
    """An IP packet whose ECN field is ECT(0) or ECT(1) (RFC 3168 section 5): the low two
    bits of the IPv4 TOS byte, or of the IPv6 Traffic Class (RFC 8200 7), which straddles
    bytes 0 and 1."""
    if len(p) >= 20 and (p[0] >> 4) == 4:
        return (p[1] & 3) in (1, 2)
    return len(p) >= 40 and (p[0] >> 4) == 6 and (p[1] >> 4 & 3) in (1, 2)


def _mark_ce(p: Any) -> bytes:
    """The packet with its ECN field set to CE (and the IPv4 header checksum redone; IPv6
    has none)."""
    buf = bytearray(p)
    if buf[0] >> 4 == 6:
        buf[1] |= 0x30
        return bytes(buf)
    ihl = (buf[0] & 15) * 4
    buf[1] |= 3
    buf[10:12] = b"\0\0"
    s = sum(int.from_bytes(buf[i:i + 2], "big") for i in range(0, ihl, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    buf[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(buf)


class FaultyLink:
    """A one-way pipe in virtual time that applies a :class:`FaultConfig`.

    Pipe use: ``push(packets, now)``, then ``pop(now)`` returns the packets whose arrival
    time is <= ``now`` in arrival order (packets arriving at the same time keep the order
    they were pushed in); ``next_arrival()`` says when the next one is due. ``now`` must
    not go backwards between calls.

    Link use: ``FaultyLink(config, link=inner, clock=...)`` is a link whose ``send_batch``
    pushes into the pipe and whose due packets are passed to ``inner.send_batch`` on every
    ``send_batch``, ``recv_batch`` or ``flush`` call. ``recv_batch`` reads ``inner`` as is.
    The owner's event loop must call ``flush()`` by ``next_arrival()`` (times on ``clock``,
    by default ``time.monotonic``, the asyncio loop's clock): the record's
    ``delays_packets`` says so.

    ``seed`` overrides ``config.seed`` (a simulator uses this to give the two directions of
    one link independent streams). Packets must be ``bytes`` (they are kept, not copied).

    ``rx`` (link use only): a :class:`FaultConfig` for the packets read from ``inner``.
    ``recv_batch`` then reads ``inner`` into a second pipe (its random stream seeded by
    ``rx.seed``) and returns the packets due from it; delayed ones come out of a later
    ``recv_batch`` call, which the owner makes by ``next_arrival()``.
    """

    def __init__(
        self,
        config: Optional[FaultConfig] = None,
        *,
        seed: Optional[Seed] = None,
        link: Any = None,
        clock: Optional[Callable[[], float]] = None,
        on_oversize: Optional[Callable[[bytes, float], None]] = None,
        rx: Optional[FaultConfig] = None,
    ) -> None:
        cfg = config if config is not None else FaultConfig()
        self.config = cfg
        self.rng = random.Random(cfg.seed if seed is None else seed)
        self.stats = FaultStats()
        self.link = link
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.on_oversize = on_oversize
        self._ideal = cfg.ideal
        # Arrival times only ever grow unless something adds a random extra delay: then a
        # deque in push order is already sorted, and beats a heap.
        self._use_heap = cfg.reorder > 0 or (cfg.jitter > 0 and cfg.jitter_reorders)
        self._fifo: deque = deque()     # (arrival, packet)
        self._heap: list = []           # (arrival, push order, packet)
        self._order = 0
        self._last_arrival = -math.inf
        # Rate limiter: a busy period starts at _anchor; _anchor_bits have been queued in it
        # since. Finish times are anchor + bits / rate, one rounding each, so serialisation
        # times stay exact over long back-to-back trains.
        self._busy_until = -math.inf
        self._anchor = 0.0
        self._anchor_bits = 0
        if rx is not None and link is None:
            raise ValueError("rx impairs what a wrapped link receives: it needs link=")
        self.rx: Optional[FaultyLink] = None if rx is None else FaultyLink(rx)
        self._rx_due: deque = deque()   # arrived received packets beyond a recv_batch's max

    # ------------------------------------------------------------------ pipe interface

    def push(self, packets: Iterable[bytes], now: float) -> None:
        """Send packets into the pipe at time ``now``."""
        st = self.stats
        if self._ideal:
            q = self._fifo
            n = nbytes = 0
            for p in packets:
                q.append((now, p))
                n += 1
                nbytes += len(p)
            st.packets_in += n
            st.bytes_in += nbytes
            if now > self._last_arrival:
                self._last_arrival = now
            return
        cfg = self.config
        rnd = self.rng.random
        mtu = cfg.mtu
        rate = cfg.rate
        qbits = None if cfg.queue_bytes is None else cfg.queue_bytes * 8
        cebits = None if cfg.ce_threshold is None else cfg.ce_threshold * 8
        loss, corrupt, duplicate = cfg.loss, cfg.corrupt, cfg.duplicate
        for p in packets:
            size = len(p)
            st.packets_in += 1
            st.bytes_in += size
            if mtu is not None and size > mtu:
                st.mtu_dropped += 1
                if self.on_oversize is not None:
                    self.on_oversize(p, now)
                continue
            t = now
            if rate is not None:
                if now >= self._busy_until:
                    self._anchor = now
                    self._anchor_bits = 0
                    backlog = 0.0
                else:
                    backlog = self._anchor_bits - (now - self._anchor) * rate
                bits = size * 8
                if qbits is not None and backlog + bits > qbits:
                    st.queue_dropped += 1
                    continue
                if cebits is not None and backlog >= cebits and _ect(p):
                    p = _mark_ce(p)
                    st.ce_marked += 1
                queued = int(backlog + bits + 7) >> 3
                if queued > st.queue_peak_bytes:
                    st.queue_peak_bytes = queued
                self._anchor_bits += bits
                t = self._busy_until = self._anchor + self._anchor_bits / rate
            if loss and rnd() < loss:
                st.lost += 1
                continue
            if corrupt and rnd() < corrupt:
                p = self._corrupt(p)
                st.corrupted += 1
            self._schedule(p, t)
            if duplicate and rnd() < duplicate:
                st.duplicated += 1
                self._schedule(p, t)

    def _schedule(self, p: bytes, t: float) -> None:
        cfg = self.config
        a = t + cfg.delay
        if cfg.jitter:
            a += self.rng.random() * cfg.jitter
        if cfg.reorder and self.rng.random() < cfg.reorder:
            a += (1.0 - self.rng.random()) * cfg.reorder_delay   # in (0, reorder_delay]
            self.stats.reordered += 1
        if self._use_heap:
            heapq.heappush(self._heap, (a, self._order, p))
            self._order += 1
        else:
            if a < self._last_arrival:      # jitter without reordering: wait in line
                a = self._last_arrival
            self._last_arrival = a
            self._fifo.append((a, p))

    def _corrupt(self, p: bytes) -> bytes:
        nbits = len(p) * 8
        if nbits == 0:
            return p
        buf = bytearray(p)
        k = self.config.corrupt_bits
        if k == 1:
            bits = [self.rng.randrange(nbits)]
        else:
            bits = self.rng.sample(range(nbits), min(k, nbits))
        for bit in bits:
            buf[bit >> 3] ^= 0x80 >> (bit & 7)
        return bytes(buf)

    def pop(self, now: float) -> list[bytes]:
        """The packets that have arrived by ``now``, in arrival order."""
        if self._use_heap:
            h = self._heap
            out = []
            while h and h[0][0] <= now:
                out.append(heapq.heappop(h)[2])
        else:
            q = self._fifo
            if not q:
                return []
            if q[-1][0] <= now:
                out = [e[1] for e in q]
                q.clear()
            else:
                out = []
                while q and q[0][0] <= now:
                    out.append(q.popleft()[1])
        if out:
            st = self.stats
            st.delivered += len(out)
            st.bytes_delivered += sum(map(len, out))
        return out

    def next_arrival(self) -> Optional[float]:
        """When the next packet arrives, or None if the pipe is empty (with ``rx``: the
        earlier of the two pipes, or now when received packets wait to be read)."""
        if self._use_heap:
            t = self._heap[0][0] if self._heap else None
        else:
            t = self._fifo[0][0] if self._fifo else None
        rx = self.rx
        if rx is not None:
            r = self.clock() if self._rx_due else rx.next_arrival()
            if r is not None and (t is None or r < t):
                t = r
        return t

    def __len__(self) -> int:
        """Packets in flight (pushed, not yet popped)."""
        return len(self._heap) if self._use_heap else len(self._fifo)

    # ------------------------------------------------------------------ link interface

    @property
    def capabilities(self) -> LinkCapabilities:
        """The wrapped link's record, changed by what the pipe does: packets wait in it
        (kept, so never SplitPackets), they are dropped above the config's MTU, and
        ``recv_batch(max)`` takes no options. A pipe without a link has the defaults."""
        mtu = self.config.mtu
        if self.link is None:
            return LinkCapabilities(mtu=mtu, delays_packets=True)
        inner = capabilities_of(self.link)
        if inner.mtu is not None and (mtu is None or inner.mtu < mtu):
            mtu = inner.mtu
        return inner.replace(mtu=mtu, takes_split_packets=False, keeps_packets=True,
                             recv_views=False, recv_max_bytes=False, delays_packets=True)

    def _inner(self) -> Any:
        if self.link is None:
            raise TypeError("this FaultyLink wraps no link: use push()/pop()")
        return self.link

    def send_batch(self, packets: Iterable[bytes]) -> int:
        """Push packets into the pipe at ``clock()``; returns how many were taken."""
        inner = self._inner()
        now = self.clock()
        before = self.stats.packets_in
        self.push(packets, now)
        due = self.pop(now)
        if due:
            inner.send_batch(due)
        return self.stats.packets_in - before

    def flush(self, now: Optional[float] = None) -> int:
        """Pass every packet due by ``now`` (default ``clock()``) to the inner link."""
        inner = self._inner()
        due = self.pop(self.clock() if now is None else now)
        if due:
            inner.send_batch(due)
        return len(due)

    def recv_batch(self, max: int = 64) -> list[bytes]:  # noqa: A002 - the link interface name
        self.flush()
        rx = self.rx
        if rx is None:
            return self.link.recv_batch(max)
        now = self.clock()
        try:
            got = self.link.recv_batch(max)
        except (BlockingIOError, InterruptedError):
            got = []
        if got:
            rx.push([p if type(p) is bytes else bytes(p) for p in got], now)
        due = self._rx_due
        due.extend(rx.pop(now))
        n = min(max, len(due))
        return [due.popleft() for _ in range(n)]

    def fileno(self) -> int:
        return self._inner().fileno()

    def close(self) -> None:
        if self.link is not None and hasattr(self.link, "close"):
            self.link.close()

    def __repr__(self) -> str:
        return f"<FaultyLink in_flight={len(self)} {self.stats}>"
