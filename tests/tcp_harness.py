"""Test harness for the sans-IO TCP engine: virtual time, packet capture, compact segments.

Two ways to drive a :class:`fasttcp.Host`:

* :class:`ManualPeer`: one host and a peer that the test plays by hand. The test builds each
  segment (:meth:`ManualPeer.send`), the host answers, and every packet the host transmits
  is captured with its time as a :class:`Seg`. Timers run only when the test moves the clock
  (:meth:`ManualPeer.advance`, :meth:`ManualPeer.next_timer`).
* :class:`Net`: two hosts joined by a wire with a fixed one-way latency and an optional drop
  filter, run in virtual time by :meth:`Net.run` until a condition holds or nothing is due
  (a scripting face on :class:`fasttcp.link.NetSim`).

Segments compare as compact tuples: ``seg.t`` is ``(flags, seq, ack, win, len)`` and
``seg.ts`` adds the options, ``(flags, seq, ack, win, len, opts)``. Flags are spelled as
scapy and tcpdump do (``"S"``, ``"SA"``, ``"A"``, ``"PA"``, ``"FA"``, ``"FPA"``, ``"R"``,
``"RA"``). Every loop here is bounded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from fasttcp import Host
from fasttcp.link import FaultConfig, NetSim
from fasttcp.wire import Packet, TcpFlags, TcpOptions, build_tcp, parse

MASK = 0xFFFFFFFF
HOST_IP = "10.0.0.1"
PEER_IP = "10.0.0.2"
SECRET = bytes(16)


def seq(x: int) -> int:
    """A 32-bit sequence number (for expected values computed as ``isn + k``)."""
    return x & MASK


@dataclass(frozen=True)
class Seg:
    """One captured TCP segment (or the parse of any packet; ``pkt`` keeps the view)."""

    time: float
    flags: str
    seq: int
    ack: int
    win: int
    data: bytes
    opts: TcpOptions
    sport: int
    dport: int
    pkt: Packet

    @classmethod
    def of(cls, raw: bytes, time: float) -> "Seg":
        p = parse(raw)
        if not p.is_tcp:
            return cls(time, "ICMP", 0, 0, 0, b"", TcpOptions(), 0, 0, p)
        return cls(time, TcpFlags(p.flag_bits).letters(), p.seq, p.ack, p.window,
                   bytes(p.payload), p.options, p.sport, p.dport, p)

    @property
    def t(self) -> Tuple[str, int, int, int, int]:
        return (self.flags, self.seq, self.ack, self.win, len(self.data))

    @property
    def ts(self) -> tuple:
        return self.t + (self.opts,)

    def __repr__(self) -> str:
        o = f" {self.opts!r}" if self.opts else ""
        return (f"<{self.time:g} {self.sport}>{self.dport} {self.flags} seq={self.seq} "
                f"ack={self.ack} win={self.win} len={len(self.data)}{o}>")


def flag_bits(letters: str) -> int:
    """``"FA"`` -> FIN|ACK, in the letters of :meth:`TcpFlags.letters`."""
    bits = 0
    for ch in letters:
        bits |= 1 << "FSRPAUEC".index(ch)
    return bits


def tuples(segs: List[Seg]) -> List[tuple]:
    return [s.t for s in segs]


def opts(mss: Optional[int] = None, wscale: Optional[int] = None) -> TcpOptions:
    return TcpOptions(mss=mss, wscale=wscale)


class ManualPeer:
    """One host under test and a hand-played peer ``PEER_IP:port``.

    ``now`` is the virtual clock; ``log`` holds everything the host ever transmitted.
    """

    def __init__(self, host: Optional[Host] = None, port: int = 40000,
                 host_port: int = 80, now: float = 0.0, **settings) -> None:
        if host is None:
            settings.setdefault("isn_secret", SECRET)
            # The RFC 9293 scenarios assert the classic segment shapes; timestamps and SACK
            # (RFC 7323 / 2018) have their own tests in test_tcp_options.py.
            settings.setdefault("timestamps", False)
            settings.setdefault("sack", False)
            # Each scenario plays several invalid segments within a second: the ACK rate
            # limits (invalid_ack_interval, challenge_ack_limit) have their own tests.
            settings.setdefault("invalid_ack_interval", 0.0)
            host = Host(HOST_IP, **settings)
        host._raise_internal = True          # an internal error must fail the test
        self.host = host
        self.port = port
        self.host_port = host_port
        self.now = now
        self.log: List[Seg] = []
        # The host reads the time only from receive/transmit (connect() uses the last one,
        # e.g. for its RFC 6528 ISN): start its clock at ours.
        host.receive([], now)

    # --- clock and capture -------------------------------------------------------------
    def tick(self, at: Optional[float] = None) -> List[Seg]:
        """Move the clock to ``at`` (not backwards) and collect what the host sends."""
        if at is not None:
            assert at >= self.now, (at, self.now)
            self.now = at
        segs = [Seg.of(p, self.now) for p in self.host.transmit(self.now)]
        self.log.extend(segs)
        return segs

    def next_timer(self, limit: float = 1e6) -> Tuple[Optional[float], List[Seg]]:
        """Jump to the host's next timer (if before ``limit``) and run it."""
        t = self.host.poll_at()
        if t is None or t > limit:
            return None, []
        return t, self.tick(max(t, self.now))

    def advance(self, until: float, max_steps: int = 10000) -> List[Seg]:
        """Run every timer due up to ``until``, then set the clock to ``until``."""
        out: List[Seg] = []
        for _ in range(max_steps):
            t = self.host.poll_at()
            if t is None or t > until:
                break
            out.extend(self.tick(max(t, self.now)))
        else:
            raise AssertionError("advance(): timer loop did not settle")
        out.extend(self.tick(until))
        return out

    # --- injection ---------------------------------------------------------------------
    def packet(self, flags: str, seq: int, ack: int = 0, win: int = 65535, data: bytes = b"",
               opts: Optional[TcpOptions] = None, sport: Optional[int] = None,
               dport: Optional[int] = None) -> bytes:
        bits = flag_bits(flags)
        return build_tcp(PEER_IP, HOST_IP, sport or self.port, dport or self.host_port,
                         seq & MASK, ack & MASK, bits, win, data, opts)

    def send(self, flags: str, seq: int, ack: int = 0, win: int = 65535, data: bytes = b"",
             opts: Optional[TcpOptions] = None, at: Optional[float] = None,
             **kw) -> List[Seg]:
        """Inject one segment at time ``at`` (default: now); return the host's answer."""
        return self.inject([self.packet(flags, seq, ack, win, data, opts, **kw)], at)

    def inject(self, packets: List[bytes], at: Optional[float] = None) -> List[Seg]:
        if at is not None:
            assert at >= self.now
            # Timers due before the arrival run first, as they would in real time.
            pre = self.advance(at) if self.host.poll_at() is not None else self.tick(at)
            assert not pre, f"host sent {pre} before the injected packet at {at}"
        self.host.receive(packets, self.now)
        return self.tick()


class Net:
    """Two hosts on a wire with a one-way ``latency`` (seconds), run in virtual time.

    A scripting face on :class:`fasttcp.link.NetSim` (the one in-process network): its
    clock, its pipes (a fixed delay each way) and its delivery rules; ``net.sim`` is it.
    ``drop(seg, sender)`` returning True loses that packet. ``log`` records every packet
    sent as ``(sender_name, Seg)``, with ``Seg.time`` the send time. ``now`` and
    ``latency`` may be set between runs (packets in flight keep their arrival time).
    """

    def __init__(self, a: Host, b: Host, latency: float = 0.001, now: float = 0.0,
                 drop: Optional[Callable[[Seg, str], bool]] = None) -> None:
        a._raise_internal = b._raise_internal = True
        self.hosts = {"a": a, "b": b}
        self._names = {id(a): "a", id(b): "b"}
        self.drop = drop
        self.log: List[Tuple[str, Seg]] = []
        # Every host transmits at every step: tests act on hosts between steps.
        self.sim = NetSim(transmit_all=True, start=now, drop=self._on_send)
        self.sim.add_host(a)
        self.sim.add_host(b)
        self.latency = latency
        for h in (a, b):                      # start the hosts' clocks (see ManualPeer)
            h.receive([], now)

    @property
    def now(self) -> float:
        return self.sim.now

    @now.setter
    def now(self, t: float) -> None:
        self.sim.now = t

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, latency: float) -> None:
        self._latency = latency
        wire = FaultConfig(delay=latency)
        self.sim.connect(self.hosts["a"], self.hosts["b"], wire, wire)

    def _on_send(self, now: float, host: Host, raw: bytes) -> bool:
        name = self._names[id(host)]
        seg = Seg.of(raw, now)
        self.log.append((name, seg))
        return self.drop is not None and self.drop(seg, name)

    def next_event(self) -> Optional[float]:
        self.sim.refresh_timers()
        return self.sim.next_event()

    def run(self, until: Optional[Callable[[], bool]] = None, deadline: float = 1e6,
            max_steps: int = 200000) -> float:
        """Step events until ``until()`` holds, nothing is due, or ``deadline``; returns now."""
        sim = self.sim
        sim.kick()
        for _ in range(max_steps):
            if until is not None and until():
                return sim.now
            sim.refresh_timers()              # until() may have acted on a host
            if not sim.step(until=deadline):
                return sim.now
        raise AssertionError("Net.run(): step limit reached")

    def sent_by(self, name: str) -> List[Seg]:
        return [s for n, s in self.log if n == name]


# ==========================================================================================
# Timestamps and SACK (test_tcp_options.py, test_tcp_attacks.py)
# ==========================================================================================

class Ctx:
    """An established connection with a manual peer: p (peer), c (connection), iss, irs."""

    def __init__(self, p: ManualPeer, c, iss: int, irs: int) -> None:
        self.p, self.c, self.iss, self.irs = p, c, iss, irs

    def s(self, k: int) -> int:
        """Our sequence number for stream offset k (k=0 is the SYN)."""
        return seq(self.iss + k)

    def r(self, k: int) -> int:
        """The peer's sequence number for its stream offset k."""
        return seq(self.irs + k)


TS_IRS = 5_000_000          # the peer's ISN in ts_passive_open
TS_PEER0 = 100              # the peer's first TSval there (tests send larger ones)


class TsConn(Ctx):
    """An established connection with a hand-played peer that may use timestamps;
    ``tsv(now)`` is our TSval at ``now`` (RFC 7323 5.4: a 1 ms clock plus the connection's
    random offset).
    """

    def tsv(self, now: float) -> int:
        return (int(now * 1000) + self.c.ts_offset) & MASK

    def echo(self) -> int:
        """The TSecr a real peer would send: the last TSval it received from us."""
        for s in reversed(self.p.log):
            if s.opts.timestamps is not None:
                return s.opts.timestamps[0]
        return 0

    def send(self, flags: str, k: int, tsval: Optional[int], data: bytes = b"",
             at: Optional[float] = None, ack: int = 1, sack=(), win: int = 65535) -> List[Seg]:
        """The peer sends from its offset ``k``, acknowledging our offset ``ack``, with a
        timestamps option ``(tsval, echo())`` unless ``tsval`` is None."""
        o = None if tsval is None else TcpOptions(timestamps=(tsval, self.echo()), sack=sack)
        return self.p.send(flags, self.r(k), self.s(ack), win, data=data, opts=o, at=at)


def ts_passive_open(peer_ts0: int = TS_PEER0, irs: int = TS_IRS, **settings) -> TsConn:
    """The peer (MSS 1460, window scale 0, SACK-permitted, TSval ``peer_ts0``) opens to a
    listening host with timestamps and SACK on unless ``settings`` say otherwise; the
    peer's ACK arrives 50 ms after the SYN,ACK. Returns the established connection."""
    settings.setdefault("timestamps", True)
    settings.setdefault("sack", True)
    p = ManualPeer(**settings)
    lst = p.host.listen(p.host_port)
    sa, = p.send("S", irs, 0, 65535, opts=TcpOptions(mss=1460, wscale=0, sack_permitted=True,
                                                    timestamps=(peer_ts0, 0)))
    assert sa.flags == "SA"
    c, = p.host.connections()
    ctx = TsConn(p, c, sa.seq, irs)
    assert ctx.send("A", 1, peer_ts0 + 1 if c.ts_ok else None, at=0.05) == []
    assert lst.accept() is c and c.state.name == "ESTABLISHED"
    return ctx


def two_hosts(latency: float, drop: Optional[Callable[[Seg, str], bool]] = None,
              **settings) -> Tuple[Net, object, object]:
    """Host a (10.0.0.1) connects to b (10.0.0.2):80 over a :class:`Net`; returns
    ``(net, client_conn, server_conn)``, both ESTABLISHED."""
    a = Host("10.0.0.1", isn_secret=bytes(16), **settings)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), **settings)
    net = Net(a, b, latency=latency, drop=drop)
    lst = b.listen(80)
    ca = a.connect(("10.0.0.2", 80))
    net.run(lambda: len(lst) > 0, max_steps=1000)
    cb = lst.accept()
    assert cb is not None and ca.state.name == cb.state.name == "ESTABLISHED"
    return net, ca, cb


def transfer(net: Net, src, dst, data: bytes, deadline: float = 600.0,
             max_steps: int = 500000, step: Optional[Callable[[], None]] = None) -> float:
    """Send ``data`` from connection ``src`` to ``dst`` over ``net`` until all of it was read
    and acknowledged; asserts it arrived intact and returns the virtual time it took.
    ``step()``, if given, runs before every event (e.g. to inject packets)."""
    got = bytearray()
    sent = [0]
    t0 = net.now

    def done() -> bool:
        if step is not None:
            step()
        if sent[0] < len(data):
            sent[0] += src.send(memoryview(data)[sent[0]:])
        got.extend(dst.recv(1 << 20))
        return len(got) == len(data) and src.in_flight == 0

    net.run(done, deadline=deadline, max_steps=max_steps)
    assert len(got) == len(data) and bytes(got) == data
    return net.now - t0
