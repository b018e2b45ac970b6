"""TIME-WAIT kept as a compact record (fasttcp/tcp/_timewait.pyx), as Linux keeps an
inet_timewait_sock: a connection the application closed leaves TIME-WAIT to a record of C
fields only, which Python's cyclic GC does not track, and the host drops the Connection.

The record must answer every segment exactly as the TIME-WAIT Connection does (RFC 9293
3.10.7.4 and 3.6.1, RFC 5961, RFC 7323 5.3, RFC 6191; Linux tcp_timewait_state_process).
The differential tests below play one script of segments against two identical hosts, one
of which keeps whole Connections (a state observer is set: every state change of a
connection is then reported, so none is compacted), and require the same packets, byte
for byte, the same timers and the same counters; in both families.
"""
from __future__ import annotations

import gc
import weakref
from typing import Any, Callable, List, Optional, Tuple

import pytest

from fasttcp import Host, State
from fasttcp.tcp._timewait import TimeWait
from fasttcp.tcp.connection import Connection
from fasttcp.wire import TcpOptions, build_tcp, parse
from fasttcp.link import exchange

MASK = 0xFFFFFFFF
SECRET = bytes(range(16))
FAMILIES = {4: ("10.0.0.1", "10.0.0.2"), 6: ("fd00::1", "fd00::2")}
PEER_PORT = 40000
IRS = 1_000_000           # the peer's ISN
A, F, S, R, P = 0x10, 0x01, 0x02, 0x04, 0x08


class Side:
    """One host under test with a hand-played peer; ``observe`` keeps whole Connections
    (a state observer is set) so the two can be compared."""

    def __init__(self, ver: int, observe: bool, timestamps: bool = True, **settings: Any):
        self.lip, self.rip = FAMILIES[ver]
        settings.setdefault("msl", 1.0)
        settings.setdefault("invalid_ack_interval", 0.5)
        self.host = Host(self.lip, isn_secret=SECRET, timestamps=timestamps, sack=True,
                         **settings)
        self.host._raise_internal = True
        if observe:
            self.changes: List[Tuple[State, State]] = []
            self.host.state_observer = lambda c, old, new: self.changes.append((old, new))
        self.ts = timestamps
        self.now = 0.0
        self.host.receive([], 0.0)
        self.lst = self.host.listen(80)
        self.iss = 0
        self.conn: Optional[Connection] = None

    def send(self, flags: int, seq: int, ack: int = 0, tsval: Optional[int] = None,
             data: bytes = b"", at: Optional[float] = None, sport: int = PEER_PORT,
             ecr: int = 0) -> List[bytes]:
        """Inject one segment (timestamps when ``tsval`` is given; a SYN offers SACK) at
        ``at``; run the timers due before it; return what the host sends at once."""
        if at is not None:
            self.advance(at)
        opts = TcpOptions(timestamps=(tsval, ecr)) if tsval is not None else None
        if flags & S:
            opts = TcpOptions(mss=1460, sack_permitted=True,
                              timestamps=None if tsval is None else (tsval, ecr))
        pkt = build_tcp(self.rip, self.lip, sport, 80, seq & MASK, ack & MASK, flags,
                        65535, data, opts)
        self.host.receive([pkt], self.now)
        return [bytes(p) for p in self.host.transmit(self.now)]

    def advance(self, until: float) -> List[bytes]:
        out: List[bytes] = []
        while True:
            t = self.host.poll_at()
            if t is None or t > until:
                break
            self.now = max(self.now, t)
            out += [bytes(p) for p in self.host.transmit(self.now)]
        self.now = until
        out += [bytes(p) for p in self.host.transmit(until)]
        return out

    def to_time_wait(self, simultaneous: bool = False) -> List[bytes]:
        """Handshake (SYN at 0), the host closes first (at 0.1), the peer's FIN,ACK at
        0.11: the host is in TIME-WAIT with RCV.NXT = IRS + 2. ``simultaneous``: the
        peer's FIN does not acknowledge ours (CLOSING) and its ACK of our FIN follows at
        0.12 (RFC 9293 3.6, TIME-WAIT with no ACK owed)."""
        ts = self.ts
        out = self.send(S, IRS, 0, 100 if ts else None, at=0.0)
        self.iss = parse(out[0]).seq
        out += self.send(A, IRS + 1, self.iss + 1, 101 if ts else None, at=0.05)
        self.conn = self.lst.accept()
        assert self.conn is not None
        self.conn.close()
        out += self.advance(0.1)
        if simultaneous:
            out += self.send(F | A, IRS + 1, self.iss + 1, 200 if ts else None, at=0.11)
            assert self.conn.state == State.CLOSING
            out += self.send(A, IRS + 2, self.iss + 2, 201 if ts else None, at=0.12)
        else:
            out += self.send(F | A, IRS + 1, self.iss + 2, 200 if ts else None, at=0.11)
        assert self.conn.state == State.TIME_WAIT
        return out


def _both(ver: int, script: Callable[[Side], List[Any]], simultaneous: bool = False,
          **settings: Any) -> Side:
    """Run ``script`` on a host that keeps TIME-WAIT records and on one that keeps whole
    Connections: every packet, timer and counter must be the same. Returns the record
    side."""
    full, rec = Side(ver, True, **settings), Side(ver, False, **settings)
    results = []
    for side in (full, rec):
        out = side.to_time_wait(simultaneous)
        res = script(side)
        results.append((out, res, side.host.poll_at(), side.host.stats()))
    assert isinstance(full.host.connections()[0] if full.host.connections() else full.conn,
                      Connection)
    assert results[0] == results[1]
    return rec


def _record(side: Side) -> TimeWait:
    rec, = [c for c in side.host.connections() if isinstance(c, TimeWait)]
    return rec


@pytest.mark.parametrize("ver", [4, 6])
def test_record_replaces_the_connection(ver):
    """The closed connection's TIME-WAIT is a record: not GC-tracked, in the demux in
    the Connection's place, and the Connection the application still holds says
    TIME_WAIT (equal to its record in connections()) until the record goes."""
    side = Side(ver, False)
    side.to_time_wait()
    c = side.conn
    rec = _record(side)
    assert not gc.is_tracked(rec)
    assert c._tw is rec and c.state == State.TIME_WAIT and side.host.connections() == [c]
    assert rec.state == State.TIME_WAIT and rec.key == c.key
    assert rec.local_address == c.local_address and rec.remote_address == c.remote_address
    assert rec.info().state == "TIME-WAIT" and rec.info().rcv_nxt == (IRS + 2) & MASK
    st = side.host.stats()
    assert st["time_wait"] == 1 and st["connections"] == 1
    # 2*MSL after the FIN: CLOSED, counted as the connection's change would be.
    assert side.host.poll_at() == pytest.approx(2.11)
    assert side.advance(2.1) == [] and c.state == State.TIME_WAIT
    side.advance(2.12)
    assert c.state == State.CLOSED and rec.state == State.CLOSED and c.error is None
    assert side.host.connections() == [] and side.host.poll_at() is None
    st = side.host.stats()
    assert st["time_wait"] == 0 and st["connections"] == 0 and st["state_closed"] == 1
    c.close()
    c.abort()                                    # nothing to reset any more
    assert side.host.transmit(3.0) == []


@pytest.mark.parametrize("ver", [4, 6])
def test_server_holding_time_wait_keeps_no_connection_objects(ver):
    """A server that closes first holds N TIME-WAIT 4-tuples and no Connection for them:
    nothing the GC tracks per TIME-WAIT connection."""
    lip, rip = {4: ("10.9.0.1", "10.9.0.2"), 6: ("fd09::1", "fd09::2")}[ver]   # this test's
    a = Host(rip, isn_secret=bytes(16))
    b = Host(lip, isn_secret=bytes(16), backlog=64)
    lst = b.listen(80)
    refs = []
    n = 40
    for _ in range(n):
        c = a.connect((lip, 80))
        exchange(a, b, 0.0)
        s = lst.accept()
        s.close()
        exchange(a, b, 0.0)
        c.close()
        exchange(a, b, 0.0)
        refs.append(weakref.ref(s))
        del s, c
    b.pop_ready()
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    tws = b.connections()
    assert len(tws) == n and all(type(t) is TimeWait and not gc.is_tracked(t) for t in tws)
    assert all(t.state == State.TIME_WAIT for t in tws) and b.stats()["time_wait"] == n
    assert not any(isinstance(o, Connection) and o.local_address[0] == lip
                   for o in gc.get_objects())


@pytest.mark.parametrize("ver", [4, 6])
def test_retransmitted_fin_is_acked_and_restarts_2msl(ver):
    """RFC 9293 3.10.7.4 (TIME-WAIT, eighth): a retransmitted FIN is acknowledged and
    2*MSL restarts; the record expires 2*MSL after the last FIN."""
    def script(side: Side):
        out = [side.send(F | A, IRS + 1, side.iss + 2, 300, at=0.5)]
        out.append(side.host.poll_at())
        out.append(side.send(F | A, IRS + 1, side.iss + 2, 301, at=1.5))
        out.append(side.host.poll_at())
        out.append(side.advance(3.49))
        out.append(side.conn.state)
        out.append(side.advance(3.51))
        out.append(side.conn.state)
        return out
    rec_side = _both(ver, script)
    assert rec_side.conn.state == State.CLOSED


def test_retransmitted_fin_answer_is_the_ack():
    side = Side(4, False)
    side.to_time_wait()
    ack, = side.send(F | A, IRS + 1, side.iss + 2, 300, at=0.5)
    d = parse(ack)
    assert d.flags == A and d.seq == (side.iss + 2) & MASK and d.ack == IRS + 2
    # TSecr is TS.Recent: a FIN in TIME-WAIT is answered before TS.Recent would move.
    assert parse(ack).options.timestamps[1] == 200
    assert side.host.poll_at() == pytest.approx(2.5)


@pytest.mark.parametrize("ver", [4, 6])
def test_rst_closes_the_record(ver):
    """An RST at RCV.NXT deletes TIME-WAIT (Linux's default tcp_rfc1337=0); one in the
    window but not at RCV.NXT draws a challenge ACK (RFC 5961 3.2)."""
    def script(side: Side):
        out = [side.send(R | A, IRS + 5, side.iss + 2, at=0.3)]
        out.append(side.conn.state)
        out.append(side.send(R, IRS + 2, at=0.4))
        out.append((side.conn.state, side.host.connections()))
        out.append(side.send(A, IRS + 2, side.iss + 2, 400, at=0.5))    # no connection
        return out
    side = _both(ver, script)
    assert side.conn.state == State.CLOSED and side.host.stats()["rst_in"] == 1


@pytest.mark.parametrize("ver", [4, 6])
def test_paws_and_unacceptable_segments_are_acked_rate_limited(ver):
    """PAWS (RFC 7323 5.3 R1) and unacceptable segments draw an ACK, pure ones at most
    one per invalid_ack_interval (Linux tcp_invalid_ratelimit); old data always, with a
    D-SACK block (RFC 2883); a missing timestamp is dropped (RFC 7323 3.2)."""
    def script(side: Side):
        i = side.iss + 2
        return [
            side.send(A, IRS + 2, i, 150, at=0.3),            # PAWS: ACK
            side.send(A, IRS + 2, i, 150, at=0.4),            # again: suppressed
            side.send(A, IRS - 500, i, 250, at=1.0),          # below the window: ACK
            side.send(A, IRS - 500, i, 250, at=1.1),          # suppressed
            side.send(P | A, IRS - 100, i, 251, b"x" * 10, at=1.2),  # old data: D-SACK
            side.send(P | A, IRS - 10, i, 252, b"x" * 10, at=1.25),
            side.send(A, IRS + 2, i, None, at=1.3),           # no timestamp: dropped
            side.send(A, IRS + 2, i, 260, at=1.4),            # acceptable ACK: nothing
            side.send(A, IRS + 2, i + 10, 261, at=1.5),       # ACK of unsent: challenge
            side.send(A, IRS + 2, i - 10**6, 262, at=2.1),    # too old: challenge
            side.send(S, IRS - 9, 0, 263, at=2.2),            # SYN not beyond: ACK
        ]
    side = _both(ver, script)
    st = side.host.stats()
    assert st["drop_paws"] == 2 and st["invalid_acks_suppressed"] == 2
    assert st["drop_missing_timestamp"] == 1 and st["drop_ack_unsent"] == 1


def test_old_data_is_answered_with_a_dsack_block():
    side = Side(4, False)
    side.to_time_wait()
    ack, = side.send(P | A, IRS - 100, side.iss + 2, 251, b"x" * 10, at=1.2)
    p = parse(ack)
    assert p.ack == IRS + 2 and p.options.sack == ((IRS - 100, IRS - 90),)
    ack, = side.send(A, IRS + 2, side.iss + 2, 150, at=1.3)      # PAWS: an ACK
    assert parse(ack).options.sack == ()             # reported once


@pytest.mark.parametrize("ver", [4, 6])
def test_reopening_syn_goes_to_the_listener(ver):
    """RFC 6191 2 / RFC 1122 4.2.2.13: a SYN with a newer timestamp takes the 4-tuple;
    the listener answers with ISS = old SND.NXT + 65537 (Linux)."""
    def script(side: Side):
        out = side.send(S, IRS - 1000, 0, 201, at=0.2)
        conns = side.host.connections()
        return [out, side.conn.state, [type(c).__name__ for c in conns],
                [c.state for c in conns]]
    side = _both(ver, script)
    assert side.host.stats()["time_wait_reopened"] == 1
    new, = side.host.connections()
    assert isinstance(new, Connection) and new.state == State.SYN_RECEIVED
    assert new.iss == (side.iss + 2 + 65535 + 2) & MASK


@pytest.mark.parametrize("ver", [4, 6])
def test_without_timestamps(ver):
    """Without timestamps: the FIN, an unacceptable segment, and a SYN beyond RCV.NXT
    (RFC 1122 4.2.2.13) as the Connection answers them."""
    def script(side: Side):
        i = side.iss + 2
        return [side.send(F | A, IRS + 1, i, at=0.3),
                side.send(A, IRS - 100, i, at=0.9),
                side.send(S, IRS + 10, at=1.0),
                side.host.stats().get("time_wait_reopened")]
    _both(ver, script, timestamps=False)


@pytest.mark.parametrize("ver", [4, 6])
def test_max_connections_and_connect_see_records(ver):
    """A record holds its 4-tuple: connect() to it is refused as for a TIME-WAIT
    Connection, and it counts in max_connections."""
    side = Side(ver, False, max_connections=2)
    side.to_time_wait()
    with pytest.raises(OSError):
        side.host.connect((side.rip, PEER_PORT), local_port=80)
    side.host.connect((side.rip, 9))
    with pytest.raises(OSError):
        side.host.connect((side.rip, 10))


def test_connection_held_but_only_shut_down_stays_whole():
    """The application shut down its side but did not close: TIME-WAIT stays the whole
    Connection (it may still read it)."""
    side = Side(4, False)
    out = side.send(S, IRS, 0, 100, at=0.0)
    side.iss = parse(out[0]).seq
    side.send(A, IRS + 1, side.iss + 1, 101, at=0.05)
    c = side.lst.accept()
    c.shutdown()
    side.advance(0.1)
    side.send(F | A, IRS + 1, side.iss + 2, 200, at=0.11)
    assert c.state == State.TIME_WAIT and c._tw is None
    assert side.host.connections() == [c] and type(side.host.connections()[0]) is Connection


@pytest.mark.parametrize("ver", [4, 6])
def test_close_after_shutdown_in_time_wait_makes_the_record(ver):
    """Shut down, then TIME-WAIT as a whole Connection, then close(): from then on the
    record, with the same answers and deadline as the Connection would have had."""
    outs = []
    for observe in (True, False):
        side = Side(ver, observe)
        out = side.send(S, IRS, 0, 100, at=0.0)
        side.iss = parse(out[0]).seq
        side.send(A, IRS + 1, side.iss + 1, 101, at=0.05)
        c = side.lst.accept()
        c.shutdown()
        side.advance(0.1)
        res = [side.send(F | A, IRS + 1, side.iss + 2, 200, at=0.11)]
        res.append(side.send(F | A, IRS + 1, side.iss + 2, 300, at=0.5))    # restarts
        side.advance(0.6)
        c.close()
        assert (c._tw is not None) == (not observe)
        res += [side.host.poll_at(), side.send(A, IRS - 50, side.iss + 2, 301, at=0.7),
                side.advance(2.49), c.state, side.advance(2.51), c.state,
                side.host.stats()]
        outs.append(res)
    assert outs[0] == outs[1]
    assert outs[1][2] == pytest.approx(2.5) and outs[1][-2] == State.CLOSED


def test_abort_of_a_held_connection_drops_its_record():
    """abort() on a closed connection in TIME-WAIT resets it (RFC 9293 3.10.5) as
    before: an RST at SND.NXT, and its record goes."""
    full, rec = Side(4, True), Side(4, False)
    outs = []
    for side in (full, rec):
        side.to_time_wait()
        side.conn.abort()
        outs.append((side.advance(0.2), side.conn.state, side.host.connections(),
                     side.host.stats()))
    assert outs[0] == outs[1]
    rst = parse(outs[1][0][0])
    assert rst.flags == R and rst.seq == (rec.iss + 2) & MASK


def test_icmp_error_for_a_record_is_ignored():
    """ICMP errors for a TIME-WAIT 4-tuple are ignored (Linux tcp_v4_err drops them for a
    timewait sock)."""
    from fasttcp.wire import build_icmp
    side = Side(4, False)
    side.to_time_wait()
    seg = build_tcp(side.lip, side.rip, 80, PEER_PORT, side.iss + 2, IRS + 2, A)
    icmp = build_icmp(side.rip, side.lip, 3, 1, data=seg[:28])
    side.host.receive([icmp], 0.5)
    assert side.host.transmit(0.5) == []
    assert side.host.stats()["icmp_ignored"] == 1 and side.conn.state == State.TIME_WAIT


@pytest.mark.parametrize("ver", [4, 6])
def test_simultaneous_close_reaches_a_record(ver):
    """CLOSING -> TIME-WAIT when our FIN is acknowledged (RFC 9293 3.10.7.4 fifth): no
    ACK is owed; the record answers a retransmitted FIN and old segments as the
    Connection does."""
    def script(side: Side):
        i = side.iss + 2
        return [side.send(F | A, IRS + 1, i, 300, at=0.5),
                side.send(A, IRS - 50, i, 301, at=1.2),
                side.advance(3.0), side.conn.state]
    side = _both(ver, script, simultaneous=True)
    assert side.conn.state == State.CLOSED
    side = Side(ver, False)
    side.to_time_wait(simultaneous=True)
    assert type(side.host.connections()[0]) is TimeWait and side.conn._tw is not None


def test_msl_zero_keeps_the_connection():
    """msl=0 (tests): TIME-WAIT ends at the transmit after the FIN's ACK, as before; the
    connection is not made a record."""
    def script(side: Side):
        return [side.conn._tw, side.advance(0.2), side.conn.state,
                side.host.connections()]
    side = _both(4, script, msl=0.0)
    assert side.conn.state == State.CLOSED
