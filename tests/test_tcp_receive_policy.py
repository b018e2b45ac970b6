"""The receive side against a hand-played peer: the receive window's right edge (RFC 9293
3.8.6, RFC 7323 2.4), the smallest send MSS a peer can impose (Linux's tcp_min_snd_mss) and
the ACK policy (RFC 5681 4.2, as Linux's quickack mode).

Conventions as in test_tcp_scenarios.py: the host is 10.0.0.1:80 and connects to the peer
10.0.0.2:40000, which answers SYN,ACK; ``ctx.s(k)`` / ``ctx.r(k)`` are send / receive
sequence numbers.
"""
from __future__ import annotations

import pytest

from fasttcp import State
from tcp_harness import PEER_IP, Ctx, ManualPeer, opts, seq

IRS = 1_000_000
BIG = 1 << 20                     # the default rcv_buf (window scale 5)
NO_WS = opts(1000, None)          # a peer SYN,ACK without window scaling


def connect(peer_opts=opts(1000, 0), **settings) -> Ctx:
    p = ManualPeer(**settings)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    ack, = p.send("SA", IRS, syn.seq + 1, 65535, opts=peer_opts, at=0.1)
    assert ack.t[:3] == ("A", seq(syn.seq + 1), seq(IRS + 1))
    assert c.state == State.ESTABLISHED
    return Ctx(p, c, syn.seq, IRS)


def drops(ctx: Ctx) -> int:
    return ctx.p.host.stats().get("drop_out_of_window", 0)


# ============================================================================================
# The receive window's right edge (issue item 1)
# ============================================================================================

def test_unscaled_window_rcv_wnd_is_the_65535_advertised():
    """RCV.WND is what the window field said: without window scaling at most 65535, however
    large rcv_buf is (RFC 9293 3.3.1, RFC 7323 2.2)."""
    ctx = connect(NO_WS)
    assert ctx.p.log[-1].win == 65535
    assert ctx.c.info().rcv_wnd == 65535
    ack, = ctx.p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"a" * 1000, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(1001), 64535, 0)   # the edge stays (SWS, < 1 MSS)
    assert ctx.c.info().rcv_wnd == 64535


def test_unscaled_window_read_sends_no_update_with_the_same_window():
    """After a read the window field would still say 65535: no window update goes out
    (RFC 9293 3.8.6.2.2: only when the right edge can move by min(rcv_buf / 2, MSS))."""
    ctx = connect(NO_WS)
    p, c = ctx.p, ctx.c
    n = 0
    for k in range(4):
        out = p.send("A", ctx.r(1 + n), ctx.s(1), 65535, data=b"x" * 1460, at=1.0 + k / 100)
        n += 1460
        assert [s.win for s in out] in ([], [65535]), out
    p.advance(2.0)
    assert p.log[-1].t == ("A", ctx.s(1), ctx.r(1 + n), 65535, 0)
    assert len(c.recv(1 << 20)) == n
    assert p.tick(2.1) == []
    assert c.info().rcv_wnd == 65535


def test_unscaled_window_data_past_the_advertised_edge_is_not_accepted():
    """Data 100,000 bytes past RCV.NXT lies outside the 65535 offered: dropped with an ACK
    (RFC 9293 3.10.7.4 first check), not kept out of order."""
    ctx = connect(NO_WS, sack=True)
    p, c = ctx.p, ctx.c
    before = drops(ctx)
    ack, = p.send("A", ctx.r(1 + 100_000), ctx.s(1), 65535, data=b"z" * 1000, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(1), 65535, 0)
    assert drops(ctx) == before + 1
    assert c._reasm is None or c._reasm.holes == 0
    # Just inside the edge (RCV.NXT + 65535 - 1000) is taken, out of order.
    p.send("A", ctx.r(1 + 64535), ctx.s(1), 65535, data=b"y" * 1000, at=1.1)
    assert c._reasm.holes == 1 and drops(ctx) == before + 1


def test_unscaled_window_rst_past_the_advertised_edge_is_dropped_silently():
    """An RST at RCV.NXT + 65700 is outside the window: dropped without a challenge ACK
    (RFC 9293 3.10.7.4 / RFC 5961 3.2: only an in-window RST draws one)."""
    ctx = connect(NO_WS)
    before = drops(ctx)
    assert ctx.p.send("R", ctx.r(1 + 65700), 0, 0, at=1.0) == []
    assert drops(ctx) == before + 1
    assert ctx.p.host.stats().get("challenge_acks_out", 0) == 0
    assert ctx.c.state == State.ESTABLISHED
    # In the window but not exact: the challenge ACK.
    ack, = ctx.p.send("R", ctx.r(1 + 65000), 0, 0, at=1.1)
    assert ack.t == ("A", ctx.s(1), ctx.r(1), 65535, 0)


def test_scaled_window_right_edge_never_moves_left():
    """With window scaling the field counts 32-byte units: it rounds up, so SEG.ACK +
    (SEG.WND << 5) never decreases (RFC 7323 2.4, RFC 9293 3.8.6.2.1), and RCV.WND is what
    the field says."""
    ctx = connect(delayed_ack=0)
    p, c = ctx.p, ctx.c
    edge = ctx.r(1) + (p.log[-1].win << 5)
    n = 0
    for k, size in enumerate([5, 700, 333, 1000, 17, 1448, 31, 1, 999]):
        ack, = p.send("PA", ctx.r(1 + n), ctx.s(1), 65535, data=b"q" * size,
                      at=1.0 + k / 10)
        n += size
        new_edge = ack.ack + (ack.win << 5)
        assert new_edge >= edge, (k, size, ack)
        edge = new_edge
        assert c.info().rcv_wnd == ack.win << 5
    assert len(c.recv(1 << 20)) == n


# ============================================================================================
# The smallest send MSS (issue item 7)
# ============================================================================================

def test_peer_mss_of_1_is_clamped_to_min_mss_48():
    """A peer announcing MSS 1 gets 48-byte segments, not one byte each (Linux's
    tcp_min_snd_mss, CVE-2019-11479)."""
    ctx = connect(opts(1, 0), nodelay=True)
    p, c = ctx.p, ctx.c
    assert c.info().mss == 48
    c.send(b"m" * 480)
    out = p.tick(1.0)
    assert out and all(len(s.data) == 48 for s in out)


def test_min_mss_setting_raises_the_floor():
    ctx = connect(opts(1, 0), min_mss=200)
    assert ctx.c.info().mss == 200
    ctx = connect(opts(536, 0), min_mss=200)
    assert ctx.c.info().mss == 536                    # above the floor: the peer's MSS
    # Never more than our own MSS allows.
    ctx = connect(opts(1, 0), min_mss=200, mss=100)
    assert ctx.c.info().mss == 100


# ============================================================================================
# The ACK policy (issue item 10)
# ============================================================================================

def test_single_2000_byte_segment_is_acked_at_once():
    """More than one full segment (our MSS, 1460) unacknowledged: the ACK goes at once
    (Linux's __tcp_ack_snd_check), not after the delayed-ACK timer."""
    ctx = connect(quick_acks=0)
    ack, = ctx.p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"b" * 2000, at=1.0)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(2001))


def test_first_segments_are_quick_acked_then_delayed():
    """The first data of a connection is ACKed at once (Linux's quickack mode: 16 quick
    ACKs); after them a lone segment waits for the delayed-ACK timer (RFC 1122 4.2.3.2)."""
    ctx = connect()
    p = ctx.p
    n = 0
    for k in range(16):
        ack, = p.send("PA", ctx.r(1 + n), ctx.s(1), 65535, data=b"c" * 1000,
                      at=1.0 + k / 10)
        n += 1000
        assert ack.t[:3] == ("A", ctx.s(1), ctx.r(1 + n)), k
    assert p.send("PA", ctx.r(1 + n), ctx.s(1), 65535, data=b"c" * 1000, at=3.0) == []
    t, (ack,) = p.next_timer()
    assert t == pytest.approx(3.04) and ack.ack == ctx.r(1 + n + 1000)


def test_quick_acks_are_granted_again_after_reordering():
    """Out-of-order data puts the receiver back into quickack mode (Linux's
    tcp_enter_quickack_mode): after the hole is filled, lone segments are ACKed at once
    again, as many as quick_acks allows (each ACK of data uses one)."""
    ctx = connect(quick_acks=3)
    p = ctx.p
    for k in range(3):
        assert len(p.send("PA", ctx.r(1 + 100 * k), ctx.s(1), 65535, data=b"d" * 100,
                          at=1.0 + k / 10)) == 1
    assert p.send("PA", ctx.r(301), ctx.s(1), 65535, data=b"d" * 100, at=2.0) == []
    p.advance(2.1)                                     # the delayed ACK
    # Reordering: 501 before 401; both ACKed at once (RFC 5681 4.2), with quick ACKs.
    dup, = p.send("PA", ctx.r(501), ctx.s(1), 65535, data=b"f" * 100, at=3.0)
    assert dup.ack == ctx.r(401)
    ack, = p.send("PA", ctx.r(401), ctx.s(1), 65535, data=b"e" * 100, at=3.1)
    assert ack.ack == ctx.r(601)
    # The third quick ACK for the next lone in-order segment; then delayed again.
    ack, = p.send("PA", ctx.r(601), ctx.s(1), 65535, data=b"g" * 100, at=3.2)
    assert ack.ack == ctx.r(701)
    assert p.send("PA", ctx.r(701), ctx.s(1), 65535, data=b"g" * 100, at=3.3) == []


def test_out_of_order_fin_gets_an_immediate_duplicate_ack():
    """A FIN beyond RCV.NXT (data before it missing) is answered at once with a duplicate
    ACK (RFC 5681 4.2; Linux queues it out of order), and acted on once the data arrives."""
    ctx = connect()
    p, c = ctx.p, ctx.c
    dup, = p.send("FA", ctx.r(101), ctx.s(1), 65535, at=1.0)
    assert dup.t[:3] == ("A", ctx.s(1), ctx.r(1))
    assert c.state == State.ESTABLISHED
    ack, = p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"h" * 100, at=1.1)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(102))
    assert c.state == State.CLOSE_WAIT
