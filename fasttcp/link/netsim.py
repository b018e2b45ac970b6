"""NetSim: a virtual-time network of sans-IO hosts joined by fault-injecting pipes.

A host is anything with ``address`` (IPv4 or IPv6 text; a host with ``addresses`` owns them
all) and the three sans-IO calls: ``receive(packets, now)``, ``transmit(now) ->
list[bytes]`` and ``poll_at() -> float | None``. NetSim routes each transmitted packet by
its destination address (IPv4 header bytes 16..20, or all 128 bits of an IPv6 one, bytes
24..40) into the one-way pipe (a :class:`~fasttcp.link.FaultyLink`) from the sender to the host
owning that address. ``connect(a, b, faults_ab, faults_ba)`` sets the faults of the two
directions between two hosts; any other pair of hosts talks through a pipe made on first
use with ``default_faults`` (by default a perfect, zero-delay pipe), as on one segment.

The clock only moves in :meth:`NetSim.step`: to the earliest of every host's ``poll_at()``
and every pipe's next arrival. At that time NetSim hands each host, in one batch, all
packets that have arrived for it, then calls ``transmit(now)`` on every host that received
something or whose timer was due, and pushes the output into the pipes. ``run`` first
calls ``transmit`` on every host once, so output queued between runs goes out.

Pipes deliver packets arriving at the same time in the order they were sent, and hosts
are served in a fixed order, so a simulation is a pure function of its hosts and seeds.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Optional

from fasttcp.link.faults import FaultConfig, FaultyLink
from socket import AF_INET6, inet_pton

from fasttcp.wire import build_icmp_unreachable, build_icmpv6_error

__all__ = ["NetSim", "SimulationDidNotConverge"]


Tap = Callable[[float, Any, bytes], None]

# Steps in a row at one virtual time in which nothing was delivered or sent: a host whose
# poll_at() stays <= now without doing anything would otherwise spin until max_steps.
_MAX_IDLE_SPINS = 1000


class SimulationDidNotConverge(RuntimeError):
    """``run`` hit ``max_steps`` (or a host kept asking for time without doing anything)."""


def _addr_bytes(address: str) -> bytes:
    if ":" in address:
        try:
            return inet_pton(AF_INET6, address.split("%", 1)[0])
        except OSError:
            raise ValueError(f"not an IPv6 address: {address!r}") from None
    parts = address.split(".")
    if len(parts) != 4:
        raise ValueError(f"not a dotted IPv4 address: {address!r}")
    return bytes(int(x) for x in parts)


def _addr_str(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


class NetSim:
    """A virtual-time network. See the module docstring for the model.

    ``taps`` are called as ``tap(time, src_host, packet)`` for every packet a host sends
    (before any fault; ``src_host`` is None for the router's ICMP), ``rx_taps`` as
    ``tap(time, dst_host, packet)`` for every packet delivered. ``router_address``, if set,
    makes every MTU drop of a packet with DF set answer the sender with ICMP "fragmentation
    needed" (type 3 code 4, RFC 792 / 1191) from that address, carrying the pipe's MTU; an
    IPv6 packet (which routers never fragment, RFC 8200 5) gets an ICMPv6 Packet Too Big
    (RFC 4443 3.2) from ``router_address6``.
    ``transmit_all`` calls ``transmit`` on every host at every step instead of only on hosts
    that received something or had a timer due; use it if hosts' apps act on each other
    behind NetSim's back.

    ``drop``, if set, is scripted loss: ``drop(time, src_host, packet)`` is called for every
    packet a host sends, in order, after the taps and before the pipe; True loses it
    (counted in ``scripted_drops``). Tests use it to lose chosen segments.

    ``coalesce`` (seconds, default 0: exact) batches arrivals like a NIC's interrupt
    coalescing: a pipe's packets are delivered ``coalesce`` after the first of them arrived,
    together with every later one that has arrived by then. Behind a rate limit, where every
    packet arrives at its own time, this trades up to ``coalesce`` of extra latency for
    bigger batches and far fewer steps.
    """

    def __init__(
        self,
        default_faults: Optional[FaultConfig] = None,
        *,
        router_address: Optional[str] = None,
        router_address6: Optional[str] = None,
        transmit_all: bool = False,
        coalesce: float = 0.0,
        start: float = 0.0,
        drop: Optional[Callable[[float, Any, bytes], bool]] = None,
    ) -> None:
        if not coalesce >= 0:
            raise ValueError("coalesce must be >= 0 seconds")
        self.now: float = start
        self.coalesce = coalesce
        self.default_faults = default_faults
        self.router_address = router_address
        self.router_address6 = router_address6
        self.transmit_all = transmit_all
        self.hosts: list[Any] = []
        self.taps: list[Tap] = []
        self.rx_taps: list[Tap] = []
        self.drop = drop
        self.scripted_drops = 0
        self.steps = 0                      # steps taken over the simulator's life
        self.packets_sent = 0
        self.packets_delivered = 0
        self.unroutable = 0                 # sent to an address no host owns, or too short
        self.icmp_sent = 0
        self._index: dict[int, int] = {}            # id(host) -> index
        self._owner: dict[bytes, int] = {}          # 4- or 16-byte address -> host index
        self._routes: list[dict[bytes, FaultyLink]] = []   # per sender: dst address -> pipe
        self.pipes: list[FaultyLink] = []
        self._pipe_dst: list[int] = []              # pipe index -> receiving host index
        self._pipe_id: dict[int, int] = {}          # id(pipe) -> pipe index
        self._pipe_heap: list[tuple[float, int]] = []   # (arrival, pipe index), lazily pruned
        self._pipe_next: list[Optional[float]] = []     # what the heap believes per pipe
        self._polls: list[Optional[float]] = []         # cached poll_at() per host
        self._poll_heap: list[tuple[float, int]] = []   # (poll_at, host index), lazily pruned
        self._icmp_out: list[tuple[int, bytes]] = []    # ICMP errors to deliver now

    # ------------------------------------------------------------------ topology

    def add_host(self, host: Any, addresses: Optional[Iterable[str]] = None) -> Any:
        """Attach a host; it owns ``host.addresses`` (``host.address`` for a host without
        that attribute), or the given ``addresses``."""
        if id(host) in self._index:
            raise ValueError("host already added")
        if addresses is None:
            addresses = getattr(host, "addresses", None) or [host.address]
        addrs = list(addresses)
        raws = [_addr_bytes(a) for a in addrs]
        for raw, a in zip(raws, addrs):
            if raw in self._owner:
                raise ValueError(f"address {a} already belongs to another host")
        i = len(self.hosts)
        self.hosts.append(host)
        self._index[id(host)] = i
        for raw in raws:
            self._owner[raw] = i
        self._routes.append({})
        self._polls.append(None)
        self._refresh_poll(i)
        return host

    def connect(
        self,
        host_a: Any,
        host_b: Any,
        faults_ab: Optional[FaultConfig] = None,
        faults_ba: Optional[FaultConfig] = None,
        *,
        on_oversize: Optional[Callable[[bytes, float], None]] = None,
    ) -> tuple[FaultyLink, FaultyLink]:
        """Set the pipes a->b and b->a (hosts are added if new); returns them.

        Each direction gets its own random stream, seeded from its config's seed and the
        direction, so one config may serve both. Packets already in flight on a pipe that
        this replaces still arrive.
        """
        for h in (host_a, host_b):
            if id(h) not in self._index:
                self.add_host(h)
        ia, ib = self._index[id(host_a)], self._index[id(host_b)]
        ab = self._make_pipe(ia, ib, faults_ab, on_oversize)
        ba = self._make_pipe(ib, ia, faults_ba, on_oversize)
        return ab, ba

    def pipe(self, src: Any, dst: Any) -> FaultyLink:
        """The pipe from host ``src`` to host ``dst`` (made with default faults if new)."""
        i, j = self._index[id(src)], self._index[id(dst)]
        raw = _addr_bytes(dst.address)
        p = self._routes[i].get(raw)
        return p if p is not None else self._make_pipe(i, j, self.default_faults, None)

    def _make_pipe(self, src: int, dst: int, faults: Optional[FaultConfig],
                   on_oversize: Optional[Callable[[bytes, float], None]]) -> FaultyLink:
        cfg = faults if faults is not None else FaultConfig()
        srch, dsth = self.hosts[src], self.hosts[dst]
        # A str seed goes through SHA-512 in random.seed: stable across processes.
        seed = f"{cfg.seed!r}|{srch.address}>{dsth.address}"
        pipe = FaultyLink(cfg, seed=seed)
        k = len(self.pipes)
        if cfg.mtu is not None:
            pipe.on_oversize = self._oversize_handler(src, cfg.mtu, on_oversize)
        self.pipes.append(pipe)
        self._pipe_dst.append(dst)
        self._pipe_next.append(None)
        self._pipe_id[id(pipe)] = k
        owned = [raw for raw, owner in self._owner.items() if owner == dst]
        for raw in owned:
            self._routes[src][raw] = pipe
        return pipe

    def _oversize_handler(self, src: int, mtu: int,
                          user: Optional[Callable[[bytes, float], None]]) -> Callable:
        def handler(packet: bytes, now: float) -> None:
            if user is not None:
                user(packet, now)
            # RFC 1191: a router that cannot forward a DF packet says so, with its MTU.
            if len(packet) >= 40 and packet[0] >> 4 == 6:
                if self.router_address6 is not None:
                    icmp = build_icmpv6_error(self.router_address6, bytes(packet[8:24]), 2, 0,
                                              packet, rest=mtu)
                    self._icmp_out.append((src, icmp))
                    self.icmp_sent += 1
                return
            if self.router_address is not None and len(packet) >= 20 and packet[6] & 0x40:
                icmp = build_icmp_unreachable(self.router_address, _addr_str(packet[12:16]),
                                              4, packet, mtu=mtu)
                self._icmp_out.append((src, icmp))
                self.icmp_sent += 1
        return handler

    # ------------------------------------------------------------------ agenda

    def _refresh_poll(self, i: int) -> None:
        t = self.hosts[i].poll_at()
        if t != self._polls[i]:
            self._polls[i] = t
            if t is not None:
                heapq.heappush(self._poll_heap, (t, i))

    def _note_pipe(self, k: int) -> None:
        # The agenda holds when a pipe's packets are *delivered*: arrival + coalesce.
        t = self.pipes[k].next_arrival()
        if t is not None:
            t += self.coalesce
        if t != self._pipe_next[k]:
            self._pipe_next[k] = t
            if t is not None:
                heapq.heappush(self._pipe_heap, (t, k))

    def next_event(self) -> Optional[float]:
        """When something next happens (never earlier than ``now``), or None if idle:
        a host's timer or a pipe's next delivery."""
        if self._icmp_out:
            return self.now
        best = None
        ph = self._poll_heap
        while ph and self._polls[ph[0][1]] != ph[0][0]:
            heapq.heappop(ph)               # stale: that host has moved its timer since
        if ph:
            best = ph[0][0]
        qh = self._pipe_heap
        while qh and self._pipe_next[qh[0][1]] != qh[0][0]:
            heapq.heappop(qh)
        if qh and (best is None or qh[0][0] < best):
            best = qh[0][0]
        if best is not None and best < self.now:
            best = self.now
        return best

    def refresh_timers(self) -> None:
        """Read every host's ``poll_at()`` again: code outside the simulation (an app call
        between steps) may have changed a host's timers without anything being sent."""
        for i in range(len(self.hosts)):
            self._refresh_poll(i)

    def kick(self) -> None:
        """Call ``transmit(now)`` on every host and send what they return (no time passes).

        ``run`` does this first, so output queued by code outside the simulation (an app
        writing between runs) goes out even if a host's ``poll_at`` does not show it.
        """
        self._transmit(range(len(self.hosts)), self.now)
        for i in range(len(self.hosts)):
            self._refresh_poll(i)

    # ------------------------------------------------------------------ the loop

    def step(self, until: Optional[float] = None) -> bool:
        """Advance to the next event (if it is not after ``until``) and process it.

        Returns False, without moving the clock, when nothing is pending or the next event
        is after ``until``. Unlike ``run`` it does not :meth:`kick` the hosts first.
        """
        t = self.next_event()
        if t is None or (until is not None and t > until):
            return False
        self._step_at(t)
        return True

    def _step_at(self, now: float) -> bool:
        """One step at time ``now``; returns whether any packet moved."""
        self.now = now
        self.steps += 1
        hosts = self.hosts
        inbox: dict[int, list] = {}
        # Deliver: every pipe whose next arrival is due, one batch per receiving host.
        qh = self._pipe_heap
        pipe_next = self._pipe_next
        pipes = self.pipes
        pipe_dst = self._pipe_dst
        coalesce = self.coalesce
        heappop, heappush = heapq.heappop, heapq.heappush
        while qh and qh[0][0] <= now:
            k = heappop(qh)[1]
            nk = pipe_next[k]
            if nk is None or nk > now:
                continue                    # stale entry
            pipe = pipes[k]
            pkts = pipe.pop(now)
            nk = pipe.next_arrival()
            if nk is not None:
                nk += coalesce
                heappush(qh, (nk, k))       # > now: not seen again by this loop
            pipe_next[k] = nk
            if pkts:
                dst = pipe_dst[k]
                box = inbox.get(dst)
                if box is None:
                    inbox[dst] = pkts
                else:
                    box.extend(pkts)
        if self._icmp_out:
            for i, pkt in self._icmp_out:
                for tap in self.taps:       # the router "sent" it: no source host
                    tap(now, None, pkt)
                inbox.setdefault(i, []).append(pkt)
            self._icmp_out = []
        moved = bool(inbox)
        rx_taps = self.rx_taps
        for i, pkts in inbox.items():
            self.packets_delivered += len(pkts)
            host = hosts[i]
            if rx_taps:
                for tap in rx_taps:
                    for p in pkts:
                        tap(now, host, p)
            host.receive(pkts, now)
        # Transmit: hosts that received (in delivery order), then hosts whose timer is due.
        if self.transmit_all:
            active: list[int] = list(range(len(hosts)))
        else:
            active = list(inbox)
            ph = self._poll_heap
            polls = self._polls
            while ph and ph[0][0] <= now:
                t, i = heappop(ph)
                if polls[i] == t:
                    polls[i] = None         # forget it: refreshed below
                    if i not in inbox:
                        active.append(i)
        if self._transmit(active, now):
            moved = True
        refresh = self._refresh_poll
        for i in active:
            refresh(i)
        return moved

    def _transmit(self, active: Iterable[int], now: float) -> bool:
        hosts = self.hosts
        taps = self.taps
        sent = False
        for i in active:
            host = hosts[i]
            out = host.transmit(now)
            if not out:
                continue
            sent = True
            self.packets_sent += len(out)
            if taps:
                for tap in taps:
                    for p in out:
                        tap(now, host, p)
            drop = self.drop
            if drop is not None:
                kept = [p for p in out if not drop(now, host, p)]
                self.scripted_drops += len(out) - len(kept)
                out = kept
            routes = self._routes[i]
            # Group by pipe so each pipe gets one push per host per step.
            groups: dict[int, list] = {}
            last_raw = None
            last_group: Optional[list] = None
            for p in out:
                raw = p[24:40] if p and p[0] >> 4 == 6 else p[16:20]
                if raw != last_raw or last_group is None:
                    pipe = routes.get(raw)
                    if pipe is None:
                        owner = self._owner.get(raw)
                        if owner is None or len(p) < 20:
                            self.unroutable += 1
                            last_raw = None
                            continue
                        pipe = self._make_pipe(i, owner, self.default_faults, None)
                    k = self._pipe_id[id(pipe)]
                    last_group = groups.get(k)
                    if last_group is None:
                        last_group = groups[k] = []
                    last_raw = raw
                last_group.append(p)
            for k, pkts in groups.items():
                pipes_k = self.pipes[k]
                pipes_k.push(pkts, now)
                self._note_pipe(k)
        return sent

    def run(
        self,
        until: Optional[float] = None,
        max_steps: int = 1_000_000,
        stop: Optional[Callable[[], bool]] = None,
    ) -> float:
        """Step until ``stop()`` is true, ``until`` is reached, or nothing is pending.

        Returns ``now``. When ``until`` is given and ``stop`` did not fire, the clock ends
        at ``until``. Raises :class:`SimulationDidNotConverge` after ``max_steps`` steps.
        """
        if until is not None and until < self.now:
            raise ValueError(f"until={until} is before now={self.now}")
        if stop is not None and stop():
            return self.now
        self.kick()
        steps = 0
        spins = 0
        while True:
            if stop is not None and stop():
                return self.now
            t = self.next_event()
            if t is None or (until is not None and t > until):
                if until is not None:
                    self.now = until
                return self.now
            if steps >= max_steps:
                raise SimulationDidNotConverge(
                    f"simulation did not converge in {max_steps} steps: now={self.now:.6f}, "
                    f"next event at {t:.6f}, {self._pending_summary()}")
            same_time = t == self.now
            moved = self._step_at(t)
            steps += 1
            if same_time and not moved:
                spins += 1
                if spins >= _MAX_IDLE_SPINS:
                    raise SimulationDidNotConverge(
                        f"time stuck at now={self.now:.6f}: poll_at() stays due but nothing "
                        f"is sent or delivered; {self._pending_summary()}")
            else:
                spins = 0

    def _pending_summary(self) -> str:
        due = [f"{h.address}@{p:.6f}" for h, p in zip(self.hosts, self._polls) if p is not None]
        flying = sum(len(p) for p in self.pipes)
        return f"host timers: {', '.join(due) or 'none'}; packets in flight: {flying}"

    def in_flight(self) -> int:
        """Packets in all pipes, not yet delivered."""
        return sum(len(p) for p in self.pipes) + len(self._icmp_out)

    def stats(self) -> dict:
        """Totals of the simulator and of every pipe's fault counters."""
        totals: dict[str, int] = {}
        for p in self.pipes:
            for k, v in p.stats.as_dict().items():
                totals[k] = max(totals.get(k, 0), v) if k == "queue_peak_bytes" \
                    else totals.get(k, 0) + v
        totals.update(steps=self.steps, packets_sent=self.packets_sent,
                      packets_delivered=self.packets_delivered,
                      unroutable=self.unroutable, icmp_sent=self.icmp_sent,
                      scripted_drops=self.scripted_drops)
        return totals
