"""Property tests of the TCP engine (hypothesis, virtual time).

1. Interleavings: two hosts run one connection while hypothesis picks the user calls on
   both ends (send / recv of random sizes, shutdown, close, abort, at random points) and
   the fate of every packet (pass, drop, duplicate, delay past later packets, flip a bit),
   from a drawn schedule. Whatever happens: ``receive`` / ``transmit`` never raise (and
   ``Host._raise_internal`` is on, so an internal error would surface), what a side has
   read is always a prefix of what the other side's ``send`` accepted, and every state
   transition is one RFC 9293 allows (:data:`ALLOWED`). When neither side aborts or closes
   early and the faults stop, both sides then finish within a bounded virtual time, with
   the whole stream delivered each way and no connection left.
2. Fuzz: hypothesis-built segments (random flags, sequence and acknowledgment numbers near
   the live ones or anywhere, windows, options, payloads; valid checksums so they reach
   TCP) and mutations of segments really exchanged are injected into a host holding a
   connection in each state (LISTEN, SYN-SENT, SYN-RECEIVED, ESTABLISHED in mid-transfer,
   FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT): nothing escapes
   ``receive``, no ``drop_internal_error`` is counted, transitions stay legal, the send
   variables stay ordered, and the hosts keep running afterwards.
"""
from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fasttcp import Host, State, TcpError
from fasttcp.tcp.errors import ConnectionClosed
from fasttcp.wire import TcpOptions, build_tcp, parse

MASK = 0xFFFFFFFF
CLIENT_IP, SERVER_IP, PORT = "10.0.0.1", "10.0.0.2", 80

# Small buffers and segments, so that short runs still fill windows (zero windows,
# persist), cut many segments and lose some; short timers so virtual time stays short.
# Retries are many so that a finite fault schedule cannot time a connection out (also
# a closed one: orphan_retries).
SETTINGS = dict(mtu=576, rcv_buf=8192, snd_buf=8192, initial_rto=0.2, min_rto=0.05,
                max_rto=1.0, msl=0.05, delayed_ack=0.01, syn_retries=60, max_retries=60,
                orphan_retries=60, isn_secret=bytes(16))
LINK_DELAY = 0.002              # one-way link delay
MAX_STREAM = 64 * 1024
STREAMS = [random.Random(f"stream{i}").randbytes(MAX_STREAM) for i in range(2)]

S = State
# RFC 9293 figure 5, plus what every state may do on RST, abort or a timeout: go to CLOSED.
# A connection object starts in CLOSED; LISTEN belongs to the Listener, so the passive
# open (LISTEN -> SYN-RECEIVED in the figure) starts a new connection in CLOSED.
ALLOWED = {
    (S.CLOSED, S.SYN_SENT),              # active OPEN, snd SYN
    (S.CLOSED, S.SYN_RECEIVED),          # rcv SYN at a listener, snd SYN,ACK
    (S.SYN_SENT, S.SYN_RECEIVED),        # simultaneous open: rcv SYN, snd SYN,ACK
    (S.SYN_SENT, S.ESTABLISHED),         # rcv SYN,ACK, snd ACK
    (S.SYN_RECEIVED, S.ESTABLISHED),     # rcv ACK of SYN
    (S.SYN_RECEIVED, S.FIN_WAIT_1),      # CLOSE, snd FIN
    (S.SYN_RECEIVED, S.CLOSE_WAIT),      # 3.10.7.4 eighth: rcv FIN in SYN-RECEIVED
    (S.ESTABLISHED, S.FIN_WAIT_1),       # CLOSE, snd FIN
    (S.ESTABLISHED, S.CLOSE_WAIT),       # rcv FIN, snd ACK
    (S.FIN_WAIT_1, S.FIN_WAIT_2),        # rcv ACK of FIN
    (S.FIN_WAIT_1, S.CLOSING),           # rcv FIN, snd ACK
    (S.FIN_WAIT_1, S.TIME_WAIT),         # rcv FIN and the ACK of ours at once
    (S.FIN_WAIT_2, S.TIME_WAIT),         # rcv FIN, snd ACK
    (S.CLOSE_WAIT, S.LAST_ACK),          # CLOSE, snd FIN
    (S.CLOSING, S.TIME_WAIT),            # rcv ACK of FIN
} | {(s, S.CLOSED) for s in State if s not in (S.CLOSED, S.LISTEN)}


class Transitions:
    """Records every state change of every connection of the hosts it spies on."""

    def __init__(self) -> None:
        self.seen: List[Tuple[int, State, State]] = []
        self.last: Dict[int, State] = {}

    def spy(self, host: Host) -> None:
        def changed(conn, old, new):
            self.seen.append((id(conn), old, new))
            prev = self.last.get(id(conn), State.CLOSED)
            assert old == prev, f"{conn}: left {old.name}, but was in {prev.name}"
            assert (old, new) in ALLOWED, f"{conn}: illegal {old.name} -> {new.name}"
            self.last[id(conn)] = new

        host.state_observer = changed


def new_host(address: str, transitions: Transitions, **extra) -> Host:
    h = Host(address, **{**SETTINGS, **extra})
    h._raise_internal = True                    # internal errors surface, not counted
    transitions.spy(h)
    return h


# ==========================================================================================
# A two-host network whose every packet has a drawn fate
# ==========================================================================================

PASS, DROP, DUP, DELAY, CORRUPT = "pass", "drop", "dup", "delay", "corrupt"

fault_st = st.one_of(
    st.just((PASS, 0)),
    st.tuples(st.sampled_from([DROP, DUP]), st.just(0)),
    st.tuples(st.just(DELAY), st.integers(1, 60)),            # extra ms: overtaken
    st.tuples(st.just(CORRUPT), st.integers(0, 1 << 20)),     # which bit (mod length)
)


# Beyond the explicit (shrinkable) schedule, a seeded tail of random fates at a drawn
# rate: hypothesis's lists stay short, and a transfer sends hundreds of packets.
noise_st = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3]),
                     st.integers(0, 400))


def schedule(faults: List[Tuple[str, int]], noise: Tuple[int, float, int]):
    seed, rate, n = noise
    rng = random.Random(seed)
    tail = []
    for _ in range(n):
        if rng.random() < rate:
            kind = rng.choice([DROP, DUP, DELAY, CORRUPT])
            tail.append((kind, rng.randrange(1, 61) if kind == DELAY else rng.randrange(1 << 20)))
        else:
            tail.append((PASS, 0))
    return list(faults) + tail


class Net:
    """Client and server hosts; packet k (in sending order, both directions) gets
    ``faults[k]``, and every packet after the schedule passes."""

    def __init__(self, faults: List[Tuple[str, int]], client: Optional[dict] = None,
                 server: Optional[dict] = None) -> None:
        self.tr = Transitions()
        self.client = new_host(CLIENT_IP, self.tr, **(client or {}))
        self.server = new_host(SERVER_IP, self.tr, **(server or {}))
        self.hosts = {CLIENT_IP: self.client, SERVER_IP: self.server}
        self.faults = faults
        self.sent = 0
        self.now = 0.0
        self.wire: List[Tuple[float, int, str, bytes]] = []   # (arrival, order, dst, pkt)
        self.order = itertools.count()
        for h in self.hosts.values():
            h.receive([], 0.0)

    def _route(self, packets: List[bytes]) -> None:
        for p in packets:
            dst = ".".join(str(b) for b in p[16:20])
            kind, arg = self.faults[self.sent] if self.sent < len(self.faults) else (PASS, 0)
            self.sent += 1
            at = self.now + LINK_DELAY
            if kind == DROP:
                continue
            if kind == CORRUPT:
                b = bytearray(p)
                bit = arg % (len(b) * 8)
                b[bit >> 3] ^= 0x80 >> (bit & 7)
                p = bytes(b)
            elif kind == DELAY:
                at += arg / 1000
            heapq.heappush(self.wire, (at, next(self.order), dst, p))
            if kind == DUP:
                heapq.heappush(self.wire, (at, next(self.order), dst, p))

    def flush(self) -> None:
        """Every host transmits what it has now (user calls just made, timers due)."""
        for h in self.hosts.values():
            self._route(h.transmit(self.now))

    @property
    def faults_over(self) -> bool:
        return self.sent >= len(self.faults)

    def step(self) -> bool:
        """Move to the next arrival or timer and process it; False when nothing is due."""
        times = [t for t in (h.poll_at() for h in self.hosts.values()) if t is not None]
        if self.wire:
            times.append(self.wire[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        inbox: Dict[str, List[bytes]] = {}
        while self.wire and self.wire[0][0] <= self.now:
            _, _, dst, p = heapq.heappop(self.wire)
            inbox.setdefault(dst, []).append(p)
        for dst, pkts in inbox.items():
            self.hosts[dst].receive(pkts, self.now)
        self.flush()
        return True


# ==========================================================================================
# The applications at both ends
# ==========================================================================================

@dataclass
class End:
    """One end: sends STREAMS[index] from the start, checks every byte it reads against
    the peer's stream, and remembers what it did."""

    index: int
    conn: object = None
    sent: int = 0                   # bytes send() accepted
    read: int = 0                   # bytes read (all checked)
    shut: bool = False              # shutdown() or close() called
    closed: bool = False            # close() called
    aborted: bool = False
    errors: List[BaseException] = field(default_factory=list)

    def send(self, n: int) -> None:
        c = self.conn
        if c is None or self.sent >= MAX_STREAM:
            return
        try:
            k = c.send(STREAMS[self.index][self.sent:self.sent + n])
        except ConnectionClosed:
            assert self.shut or c.state not in (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED,
                                                S.CLOSE_WAIT), "send refused while open"
            return
        except TcpError as e:
            assert c.error is e, "send raised an error the connection does not hold"
            self.errors.append(e)
            return
        assert 0 <= k <= n
        self.sent += k

    def recv(self, n: int, peer: "End") -> int:
        c = self.conn
        if c is None:
            return 0
        try:
            data = c.recv(n)
        except TcpError as e:
            assert c.error is e, "recv raised an error the connection does not hold"
            self.errors.append(e)
            return 0
        assert len(data) <= n
        # The stream property: what we read continues exactly what we read before, and
        # never runs past what the peer's send() accepted.
        assert self.read + len(data) <= peer.sent, "read bytes the peer never sent"
        assert data == STREAMS[peer.index][self.read:self.read + len(data)], \
            f"stream broken at offset {self.read}"
        self.read += len(data)
        return len(data)

    def drain(self, peer: "End") -> None:
        for _ in range(MAX_STREAM // 512 + 2):
            if not self.recv(65536, peer):
                break


# (steps to wait first, side 0=client 1=server, op, size); sends and reads are the
# common calls, the ones that end a direction rarer.
OPS = ("send",) * 4 + ("recv",) * 3 + ("shutdown", "close", "abort")
GENTLE_OPS = ("send",) * 4 + ("recv",) * 3 + ("shutdown",)
size_st = st.one_of(st.integers(1, 3000), st.sampled_from([536, 8192, 20000, MAX_STREAM]))
op_st = st.tuples(st.integers(0, 8), st.integers(0, 1), st.sampled_from(OPS), size_st)
gentle_op_st = st.tuples(st.integers(0, 8), st.integers(0, 1), st.sampled_from(GENTLE_OPS),
                         size_st)


class Session:
    """A client/server pair driven by a list of user operations."""

    def __init__(self, faults: List[Tuple[str, int]], gentle: bool = False,
                 variants: Tuple[dict, dict] = ({}, {})) -> None:
        # gentle: no call that may lose data, so the whole stream must arrive. That rules
        # out close() and abort(), and shutdown() in SYN-SENT, where CLOSE deletes the TCB
        # with the data queued (RFC 9293 3.10.4).
        self.gentle = gentle
        self.net = Net(faults, *variants)
        self.listener = self.net.server.listen(PORT)
        self.ends = [End(0), End(1)]
        self.ends[0].conn = self.net.client.connect((SERVER_IP, PORT), local_port=40000)
        self.net.flush()

    def accept(self) -> None:
        srv = self.ends[1]
        if srv.conn is None:
            srv.conn = self.listener.accept()

    def apply(self, side: int, op: str, n: int) -> None:
        end, peer = self.ends[side], self.ends[1 - side]
        c = end.conn
        if c is None:
            return
        if op == "send":
            end.send(n)
        elif op == "recv":
            end.recv(n, peer)
        elif op == "shutdown":
            if self.gentle and c.state == S.SYN_SENT:
                return
            c.shutdown()
            end.shut = True
        elif op == "close":
            c.close()
            end.shut = end.closed = True
        elif op == "abort":
            c.abort()
            end.aborted = True
        self.net.flush()                        # NetSim's caveat: user calls need a kick

    def run_ops(self, ops, max_steps: int = 4000) -> None:
        steps = 0
        for wait, side, op, n in ops:
            for _ in range(wait):
                if steps >= max_steps or not self.net.step():
                    break
                steps += 1
                self.accept()
            self.accept()
            self.apply(side, op, n)

    def finish(self, limit: float = 300.0, max_steps: int = 50_000) -> None:
        """Faults are over: each end sends nothing more, shuts down, reads to EOF, closes."""
        net = self.net
        deadline = net.now + limit
        for _ in range(max_steps):
            self.accept()
            acted = False
            for side in (0, 1):
                end, peer = self.ends[side], self.ends[1 - side]
                c = end.conn
                if c is None:
                    continue
                before = end.read
                end.drain(peer)                 # unread data stays readable after CLOSED
                acted |= end.read != before
                if c.state == S.CLOSED:
                    continue
                if not end.shut and c.state in (S.ESTABLISHED, S.CLOSE_WAIT):
                    c.shutdown()
                    end.shut = acted = True
                if end.shut and not end.closed and c.eof:
                    c.close()
                    end.closed = acted = True
            if acted:
                net.flush()
            done = all(e.conn is not None and e.conn.state == S.CLOSED for e in self.ends)
            if done and not net.client.connections() and not net.server.connections():
                return
            if net.now > deadline or not net.step():
                break
        raise AssertionError(
            f"did not finish by t={net.now:.3f}: states "
            f"{[e.conn.state.name if e.conn else None for e in self.ends]}, client "
            f"{net.client.connections()}, server {net.server.connections()}")


# Each host draws its own options, so negotiation mismatches are covered too: timestamps,
# SACK and window scaling off, Nagle off, no delayed ACK, CUBIC.
VARIANTS = [{}, {"timestamps": False}, {"sack": False}, {"window_scaling": False},
            {"timestamps": False, "sack": False, "window_scaling": False},
            {"nodelay": True}, {"delayed_ack": 0.0}, {"congestion": "cubic"}]
variants_st = st.tuples(st.sampled_from(VARIANTS), st.sampled_from(VARIANTS))

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])


@settings(max_examples=800, **HYP)
@given(faults=st.lists(fault_st, max_size=60), noise=noise_st,
       ops=st.lists(op_st, min_size=10, max_size=60), variants=variants_st)
def test_any_interleaving_keeps_the_stream_and_legal_states(faults, noise, ops, variants):
    s = Session(schedule(faults, noise), variants=variants)
    s.run_ops(ops)
    # Let the faults run out and timers fire for a while: nothing may raise, reads stay
    # a prefix, states stay legal (checked as they happen).
    for _ in range(3000):
        s.accept()
        for side in (0, 1):
            s.ends[side].drain(s.ends[1 - side])
        if not s.net.step() or s.net.now > 120:
            break
    for h in (s.net.client, s.net.server):
        assert not h.stats().get("drop_internal_error")
    if not any(e.aborted or e.closed for e in s.ends):
        assert not any(e.errors for e in s.ends), [e.errors for e in s.ends]


@settings(max_examples=800, **HYP)
@given(faults=st.lists(fault_st, max_size=60), noise=noise_st,
       ops=st.lists(gentle_op_st, min_size=10, max_size=60), variants=variants_st)
def test_without_aborts_both_ends_finish_with_the_whole_stream(faults, noise, ops, variants):
    s = Session(schedule(faults, noise), gentle=True, variants=variants)
    s.run_ops(ops)
    s.finish()
    for side in (0, 1):
        end, peer = s.ends[side], s.ends[1 - side]
        assert end.conn.error is None, end.conn.error
        assert end.read == peer.sent, (side, end.read, peer.sent)
        assert not end.errors
    assert s.net.client.connections() == [] and s.net.server.connections() == []
    # Both connections took a path through the diagram from open to CLOSED.
    assert s.net.tr.last and all(v == S.CLOSED for v in s.net.tr.last.values())


def test_allowed_table_is_the_rfc_diagram():
    """Spot checks of the table against RFC 9293 figure 5 (what it must not allow)."""
    assert (S.ESTABLISHED, S.SYN_SENT) not in ALLOWED
    assert (S.TIME_WAIT, S.ESTABLISHED) not in ALLOWED
    assert (S.FIN_WAIT_2, S.CLOSING) not in ALLOWED
    assert (S.CLOSE_WAIT, S.FIN_WAIT_1) not in ALLOWED
    assert (S.LAST_ACK, S.TIME_WAIT) not in ALLOWED
    assert all(b != S.LISTEN for _, b in ALLOWED)
    assert {a for a, b in ALLOWED if b == S.CLOSED} == set(State) - {S.CLOSED, S.LISTEN}


# ==========================================================================================
# Fuzz: garbage and mutated segments into every state
# ==========================================================================================

class Pair:
    """Two hosts joined by a perfect zero-delay wire that the test holds in its hand:
    ``exchange`` delivers until quiet, ``take`` collects a host's output undelivered."""

    def __init__(self, **extra) -> None:
        self.tr = Transitions()
        # A long MSL: TIME-WAIT lasts while the test injects.
        self.client = new_host(CLIENT_IP, self.tr, **{"msl": 30.0, **extra})
        self.server = new_host(SERVER_IP, self.tr, **{"msl": 30.0, **extra})
        self.now = 0.0
        self.log: List[bytes] = []              # every packet either host sent
        for h in (self.client, self.server):
            h.receive([], 0.0)

    def take(self, host: Host) -> List[bytes]:
        out = host.transmit(self.now)
        self.log.extend(out)
        return out

    def give(self, host: Host, packets: List[bytes]) -> None:
        if packets:
            host.receive(packets, self.now)

    def exchange(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            a = self.take(self.client)
            b = self.take(self.server)
            if not a and not b:
                return
            self.give(self.server, a)
            self.give(self.client, b)


def _established(p: Pair, data: int = 0):
    lst = p.server.listen(PORT)
    c = p.client.connect((SERVER_IP, PORT), local_port=40000)
    p.exchange()
    s = lst.accept()
    assert c.state == s.state == S.ESTABLISHED
    if data:
        c.send(STREAMS[0][:data])
        s.send(STREAMS[1][:data])
    return lst, c, s


def setup_state(name: str) -> Tuple[Pair, Host, Optional[object]]:
    """A pair with a connection in state ``name``: (pair, host to inject into, its
    connection or None for LISTEN)."""
    p = Pair()
    if name == "LISTEN":
        p.server.listen(PORT)
        return p, p.server, None
    if name == "SYN-SENT":
        p.server.listen(PORT)
        c = p.client.connect((SERVER_IP, PORT), local_port=40000)
        p.take(p.client)                        # the SYN is lost
        return p, p.client, c
    if name == "SYN-RECEIVED":
        p.server.listen(PORT)
        p.client.connect((SERVER_IP, PORT), local_port=40000)
        p.give(p.server, p.take(p.client))
        p.take(p.server)                        # the SYN,ACK is lost
        (s,) = p.server.connections()
        return p, p.server, s
    if name == "ESTABLISHED":
        _, c, s = _established(p, data=6000)
        # Mid-transfer: a window's worth of data in flight both ways, some delivered.
        a, b = p.take(p.client), p.take(p.server)
        p.give(p.server, a[: len(a) // 2])
        p.give(p.client, b[: len(b) // 2])
        return p, p.client, c
    if name == "FIN-WAIT-1":
        _, c, s = _established(p, data=3000)
        p.exchange()
        c.shutdown()
        p.take(p.client)                        # the FIN is lost
        return p, p.client, c
    _, c, s = _established(p, data=2000)
    p.exchange()
    c.shutdown()
    p.exchange()
    assert c.state == S.FIN_WAIT_2 and s.state == S.CLOSE_WAIT
    if name == "FIN-WAIT-2":
        return p, p.client, c
    if name == "CLOSE-WAIT":
        return p, p.server, s
    if name == "LAST-ACK":
        s.shutdown()
        p.take(p.server)                        # the FIN is lost
        return p, p.server, s
    if name == "TIME-WAIT":
        s.shutdown()
        p.give(p.client, p.take(p.server))
        p.take(p.client)                        # its ACK is lost: the server stays LAST-ACK
        assert c.state == S.TIME_WAIT
        return p, p.client, c
    raise ValueError(name)


def setup_closing() -> Tuple[Pair, Host, object]:
    p = Pair()
    _, c, s = _established(p, data=1000)
    p.exchange()
    c.shutdown()
    s.shutdown()
    fc, fs = p.take(p.client), p.take(p.server)     # the FINs cross
    p.give(p.server, fc)
    p.give(p.client, fs)
    p.take(p.client)
    p.take(p.server)                            # both ACKs of the FINs are lost
    assert c.state == s.state == S.CLOSING
    return p, p.client, c


STATES = ["LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
          "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"]


def make_pair(name: str):
    return setup_closing() if name == "CLOSING" else setup_state(name)


u32 = st.integers(0, MASK)
near = st.one_of(st.integers(-3, 3), st.integers(-70000, 70000), st.just(-(1 << 31)),
                 st.just(1 << 31))
options_st = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 65535),
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(u32, u32),
    sack=st.lists(st.tuples(near, near), max_size=4),    # made relative to the ACK below
)
# Once timestamps are on, a segment without them is dropped first thing (RFC 7323 3.2) and
# an old TSval fails PAWS: to reach the rest of TCP, half the segments carry a TSval near
# the connection's TS.Recent (offset, TSecr).
fresh_ts_st = st.none() | st.tuples(st.integers(-5, 1000), u32)
made_st = st.fixed_dictionaries({
    "kind": st.just("made"),
    "flags": st.integers(0, 255),
    "seq": st.tuples(st.sampled_from(["rcv_nxt", "snd_una", "any"]), near, u32),
    "ack": st.tuples(st.sampled_from(["snd_nxt", "snd_una", "any"]), near, u32),
    "window": st.integers(0, 65535),
    "options": st.none() | options_st,
    "payload": st.binary(max_size=700),
    "port": st.sampled_from(["conn", "conn", "conn", "other"]),
    "ts": fresh_ts_st,
})
mutated_st = st.fixed_dictionaries({
    "kind": st.just("mutated"),
    "pick": st.integers(0, 1 << 16),
    "flags_xor": st.integers(0, 255),
    "seq": near,
    "ack": near,
    "window": st.none() | st.integers(0, 65535),
    "cut": st.none() | st.integers(0, 1500),
    "options": st.none() | options_st,
    "ts": fresh_ts_st,
})
segment_st = st.one_of(made_st, mutated_st)


def _seq_bases(conn) -> Dict[str, int]:
    """The live 32-bit numbers of the target connection (0 for LISTEN)."""
    if conn is None:
        return {"rcv_nxt": 0, "snd_una": 0, "snd_nxt": 0}
    i = conn.info()
    return {"rcv_nxt": i.rcv_nxt, "snd_una": i.snd_una, "snd_nxt": i.snd_nxt}


def build_segment(spec: dict, target: Host, conn, pair: Pair) -> Optional[bytes]:
    """One IPv4+TCP packet from the peer's address to ``target`` (valid checksums)."""
    src = CLIENT_IP if target is pair.server else SERVER_IP
    if conn is not None:
        sport, dport = conn.remote_address[1], conn.local_address[1]
    else:
        sport, dport = 40000, PORT
    bases = _seq_bases(conn)
    if spec["kind"] == "made":
        base, delta, anyv = spec["seq"]
        seq = anyv if base == "any" else (bases[base] + delta) & MASK
        base, delta, anyv = spec["ack"]
        ack = anyv if base == "any" else (bases[base] + delta) & MASK
        opts = _fresh_ts(_sack_near(spec["options"], ack), spec["ts"], conn)
        if spec["port"] == "other":
            sport = 1 + (sport * 7919) % 65535
        return build_tcp(src, target.address, sport, dport, seq, ack, spec["flags"],
                         spec["window"], spec["payload"], opts)
    # A segment really sent towards the target, mutated and rebuilt.
    sent = [p for p in pair.log if p[16:20] == bytes(int(x) for x in target.address.split("."))]
    if not sent:
        return None
    pk = parse(sent[spec["pick"] % len(sent)])
    if not pk.is_tcp:
        return None
    payload = bytes(pk.payload)
    if spec["cut"] is not None:
        payload = payload[:spec["cut"]]
    ack = (pk.ack + spec["ack"]) & MASK
    opts = _sack_near(spec["options"], ack) if spec["options"] is not None else pk.options
    opts = _fresh_ts(opts, spec["ts"], conn)
    return build_tcp(src, target.address, pk.sport, pk.dport, (pk.seq + spec["seq"]) & MASK,
                     ack, pk.flag_bits ^ spec["flags_xor"],
                     pk.window if spec["window"] is None else spec["window"], payload, opts)


def _fresh_ts(opts: Optional[TcpOptions], ts, conn) -> Optional[TcpOptions]:
    if ts is None or conn is None:
        return opts
    tsval = (conn.ts_recent + ts[0]) & MASK
    if opts is None:
        return TcpOptions(timestamps=(tsval, ts[1]))
    return TcpOptions(opts.mss, opts.wscale, opts.sack_permitted, (tsval, ts[1]), opts.sack)


def _sack_near(opts: Optional[TcpOptions], ack: int) -> Optional[TcpOptions]:
    """SACK edges are drawn relative to the segment's ACK: make them sequence numbers."""
    if opts is None or not opts.sack:
        return opts
    return TcpOptions(opts.mss, opts.wscale, opts.sack_permitted, opts.timestamps,
                      [((ack + a) & MASK, (ack + b) & MASK) for a, b in opts.sack])


def check_conn_invariants(conn) -> None:
    # Offsets from ISS/IRS: SND.UNA <= SND.NXT <= SND.MAX (snd_nxt may be rewound for
    # go-back-N, never past what was sent), nothing acknowledged that was never sent.
    assert conn.snd_una <= conn.snd_max, (conn.snd_una, conn.snd_max)
    assert conn.snd_nxt <= conn.snd_max, (conn.snd_nxt, conn.snd_max)


@pytest.mark.parametrize("state", STATES)
@settings(max_examples=200, **HYP)
@given(segments=st.lists(segment_st, min_size=1, max_size=8), batch=st.booleans())
def test_fuzzed_segments_in_every_state(state, segments, batch):
    pair, target, conn = make_pair(state)
    if conn is not None:
        assert conn.state.rfc_name == state
    pkts = [p for p in (build_segment(s, target, conn, pair) for s in segments)
            if p is not None]
    # One batch (fast path and slow path interleaved) or one packet at a time.
    for group in ([pkts] if batch else [[p] for p in pkts]):
        target.receive(group, pair.now)
        pair.take(target)
        if conn is not None:
            check_conn_invariants(conn)
    # Let both hosts run on: timers (retransmissions, TIME-WAIT, keepalive) and whatever
    # the two sides still say to each other. The spy asserts every transition.
    for _ in range(60):
        pair.exchange(rounds=50)
        times = [t for t in (pair.client.poll_at(), pair.server.poll_at()) if t is not None]
        if not times:
            break
        pair.now = max(pair.now, min(times))
    for h in (pair.client, pair.server):
        assert not h.stats().get("drop_internal_error"), h.stats()
        for c in h.connections():
            check_conn_invariants(c)


@settings(max_examples=200, **HYP)
@given(raw=st.lists(st.binary(min_size=20, max_size=120), min_size=1, max_size=6),
       state=st.sampled_from(STATES))
def test_garbage_with_valid_checksums_after_the_header(raw, state):
    """Arbitrary TCP headers and options bytes behind a valid IPv4 header and a valid TCP
    checksum: the parser and TCP must drop or handle them, never raise."""
    pair, target, conn = make_pair(state)
    src = CLIENT_IP if target is pair.server else SERVER_IP
    pkts = []
    for r in raw:
        seg = bytearray(r)
        if conn is not None:                    # aim at the connection's ports mostly
            seg[0:2] = conn.remote_address[1].to_bytes(2, "big")
            seg[2:4] = conn.local_address[1].to_bytes(2, "big")
        seg[16:18] = b"\0\0"
        pkts.append(_ipv4_tcp(src, target.address, bytes(seg)))
    target.receive(pkts, pair.now)
    pair.take(target)
    assert not target.stats().get("drop_internal_error")


def _ipv4_tcp(src: str, dst: str, seg: bytes) -> bytes:
    """IPv4 header + ``seg`` as the TCP segment, with both checksums made valid."""
    import struct

    from fasttcp.wire import checksum, ip_to_int
    s, d = ip_to_int(src), ip_to_int(dst)
    pseudo = struct.pack("!IIBBH", s, d, 0, 6, len(seg))
    seg = bytearray(seg)
    seg[16:18] = b"\0\0"
    seg[16:18] = struct.pack("!H", checksum(pseudo + bytes(seg)))
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(seg), 0, 0x4000, 64, 6, 0,
                                s, d))
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr) + bytes(seg)
