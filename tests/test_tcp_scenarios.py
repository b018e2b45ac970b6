"""Scenario tests of the TCP engine: exact segments and states, in virtual time.

Each test plays a peer by hand (:class:`tcp_harness.ManualPeer`) or joins two hosts
(:class:`tcp_harness.Net`) and asserts every segment the host sends as a compact tuple
``(flags, seq, ack, window, payload length)``, plus options where they matter. Expected values
come from RFC 9293 (and the RFCs named next to each test), worked by hand.

Conventions: the host is 10.0.0.1:80, the peer 10.0.0.2:40000; ``iss`` is the host's ISN (read
from its SYN or SYN,ACK), ``irs`` the peer's; ``W`` is the window field the host advertises.
"""
from __future__ import annotations

import pytest

from fasttcp import (ConnectionAborted, ConnectionClosed, ConnectionRefused, ConnectionReset,
                     ConnectionTimedOut, Host, State)
from fasttcp.wire import build_icmp_echo, build_icmp_unreachable
from tcp_harness import (HOST_IP, MASK, PEER_IP, SECRET, Ctx, ManualPeer, Net, Seg, opts, seq,
                         tuples)

IRS = 1_000_000          # the peer's ISN unless a test says otherwise
BIG = 1 << 20            # the default rcv_buf: window scale 5 (65535 << 4 < 2**20)
W = BIG >> 5             # our window field with an empty 1 MiB buffer
# ... once the peer's FIN took one sequence number of the window: the field rounds up, so
# the right edge already advertised stays put (RFC 7323 2.4)
W1 = (BIG - 1 + 31) >> 5
# A FIN without data carries no PSH (as Linux: "FA"); one riding on data does ("FPA").
FIN = "FA"


def wnd(unread: int) -> int:
    """Our window field (shift 5) with ``unread`` bytes received since the handshake: the
    right edge stays put and the field rounds up, so that it never moves left (RFC 7323
    2.4)."""
    return (BIG - unread + 31) >> 5


def active_open(peer_win: int = 65535, peer_opts=opts(1000, 0), irs: int = IRS,
                rtt: float = 0.1, **settings) -> Ctx:
    """Host connects; the peer answers SYN,ACK after ``rtt``; returns the established Ctx."""
    p = ManualPeer(**settings)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    assert syn.flags == "S"
    ack, = p.send("SA", irs, syn.seq + 1, peer_win, opts=peer_opts, at=rtt)
    assert ack.t[:3] == ("A", seq(syn.seq + 1), seq(irs + 1))
    assert c.state == State.ESTABLISHED
    return Ctx(p, c, syn.seq, irs)


def passive_open(peer_win: int = 65535, syn_opts=opts(1000, 0), irs: int = IRS,
                 **settings):
    p = ManualPeer(**settings)
    lst = p.host.listen(80)
    sa, = p.send("S", irs, 0, peer_win, opts=syn_opts)
    assert sa.flags == "SA"
    assert p.send("A", irs + 1, sa.seq + 1, peer_win) == []
    c = lst.accept()
    assert c is not None and c.state == State.ESTABLISHED
    return Ctx(p, c, sa.seq, irs), lst


# ============================================================================================
# Opening
# ============================================================================================

def test_active_open_exact_segments():
    p = ManualPeer()
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    assert c.state == State.SYN_SENT
    syn, = p.tick(0.0)
    iss = syn.seq
    # SYN: window field unscaled (RFC 7323 2.2) = min(rcv_buf, 65535); MSS = mtu - 40
    # (RFC 6691); our shift 5 covers the 1 MiB rcv_buf.
    assert syn.ts == ("S", iss, 0, 65535, 0, opts(1460, 5))
    assert (syn.sport, syn.dport) == (80, 40000)
    # The peer's SYN,ACK window (20000) is unscaled too; its shift (7) applies afterwards.
    ack, = p.send("SA", IRS, iss + 1, 20000, opts=opts(1000, 7), at=0.1)
    assert ack.ts == ("A", seq(iss + 1), IRS + 1, W, 0, opts())
    assert c.state == State.ESTABLISHED
    i = c.info()
    assert (i.mss, i.snd_wnd, i.snd_wscale, i.rcv_wscale) == (1000, 20000, 7, 5)
    assert i.srtt == pytest.approx(0.1)                    # RTT sampled from the SYN
    # After the handshake the peer's window field is scaled: 100 << 7.
    assert p.send("A", IRS + 1, iss + 1, 100, at=0.2) == []
    assert c.info().snd_wnd == 12800


def test_isn_is_rfc6528_and_deterministic():
    """Same secret, same 4-tuple, same time => same ISS; 4 us later => +1 (RFC 6528 M)."""
    def first_syn(now: float) -> Seg:
        p = ManualPeer(now=now)
        p.host.connect((PEER_IP, p.port), local_port=p.host_port)
        syn, = p.tick(now)
        return syn
    assert first_syn(0.0).seq == first_syn(0.0).seq
    assert first_syn(1.0).seq == seq(first_syn(0.0).seq + 250000)


def test_passive_open_exact_segments():
    p = ManualPeer()
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 8192, opts=opts(1200, 2))
    iss = sa.seq
    assert sa.ts == ("SA", iss, IRS + 1, 65535, 0, opts(1460, 5))
    c, = p.host.connections()
    assert c.state == State.SYN_RECEIVED and lst.accept() is None
    assert p.send("A", IRS + 1, iss + 1, 1000, at=0.05) == []
    assert c.state == State.ESTABLISHED and lst.accept() is c
    i = c.info()
    assert (i.mss, i.snd_wnd, i.snd_wscale, i.rcv_wscale) == (1200, 4000, 2, 5)
    # Data respects the peer's MSS; PSH marks the last segment of what was written.
    c.send(b"x" * 3000)
    # Nagle (RFC 9293 3.7.4) in Minshall's variant, as Linux: the 600-byte tail is the
    # first short segment in flight, so it leaves with the full ones.
    assert tuples(p.tick(0.1)) == [("A", seq(iss + 1), IRS + 1, W, 1200),
                                   ("A", seq(iss + 1201), IRS + 1, W, 1200),
                                   ("PA", seq(iss + 2401), IRS + 1, W, 600)]
    assert p.send("A", IRS + 1, iss + 1201, 1000, at=0.2) == []
    assert p.send("A", IRS + 1, iss + 3001, 1000, at=0.3) == []


def test_peer_without_window_scale_means_no_scaling_either_way():
    """RFC 7323 2.2: scaling only when both SYNs carry the option."""
    (ctx, _) = passive_open(peer_win=30000, syn_opts=opts(1000, None))
    p, c = ctx.p, ctx.c
    sa = p.log[0]
    assert sa.opts == opts(1460, None)                     # no WS in the SYN,ACK
    assert c.info().snd_wscale == 0 and c.info().rcv_wscale == 0
    assert c.info().snd_wnd == 30000                       # the ACK's window, unshifted
    c.send(b"y" * 10)
    seg, = p.tick(0.1)
    assert seg.t == ("PA", ctx.s(1), ctx.r(1), 65535, 10)  # 1 MiB capped at 65535 unscaled
    # Active side: our SYN offers WS, the SYN,ACK has none => no scaling.
    ctx2 = active_open(peer_opts=opts(1000, None), peer_win=40000)
    assert ctx2.p.log[-1].win == 65535
    assert ctx2.c.info().snd_wnd == 40000
    assert ctx2.p.send("A", ctx2.r(1), ctx2.s(1), 500, at=0.2) == []
    assert ctx2.c.info().snd_wnd == 500


def test_window_scale_shift_is_clamped_to_14():
    """RFC 7323 2.3: a shift above 14 is used as 14."""
    ctx = active_open(peer_opts=opts(1000, 15))
    assert ctx.c.info().snd_wscale == 14
    assert ctx.p.send("A", ctx.r(1), ctx.s(1), 3, at=0.2) == []
    assert ctx.c.info().snd_wnd == 3 << 14


def test_small_rcv_buf_still_offers_window_scale_zero():
    p = ManualPeer(rcv_buf=16384)
    p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    assert syn.ts == ("S", syn.seq, 0, 16384, 0, opts(1460, 0))


def test_data_in_syn_is_not_queued():
    """Deliberate: data on a SYN is not kept (RFC 9293 allows queuing it; we do not), so the
    SYN,ACK acknowledges only the SYN and the peer sends the bytes again."""
    p = ManualPeer()
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, data=b"early", opts=opts(1000, 0))
    assert sa.t == ("SA", sa.seq, IRS + 1, 65535, 0)
    assert p.send("A", IRS + 1, sa.seq + 1, 65535) == []
    assert lst.accept().readable == 0


def test_data_on_syn_ack_is_accepted():
    """RFC 9293 3.10.7.3: text on the SYN,ACK is processed once ESTABLISHED."""
    p = ManualPeer()
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    ack, = p.send("SA", IRS, syn.seq + 1, 65535, data=b"hello", opts=opts(1000, 0), at=0.1)
    # The first edge past the SYN's window: the free buffer in whole units of the shift.
    assert ack.t == ("A", seq(syn.seq + 1), IRS + 6, (BIG - 5) >> 5, 0)
    assert c.recv() == b"hello"


def test_retransmitted_syn_gets_the_syn_ack_again():
    p = ManualPeer()
    p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0))
    again, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0), at=0.5)
    assert again.ts == sa.ts


def test_syn_ack_retransmitted_then_half_open_dropped():
    """The SYN,ACK is resent with backoff (1, 2, 4 s); after syn_retries the half-open
    connection silently goes away (no RST, no error for anyone)."""
    p = ManualPeer(syn_retries=2, initial_rto=1.0)
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0))
    got = p.advance(20.0)
    assert [(s.time, s.ts) for s in got] == [(1.0, sa.ts), (3.0, sa.ts)]
    assert p.host.connections() == [] and lst.accept() is None
    assert p.host.stats()["half_open_dropped"] == 1


def test_simultaneous_open():
    """RFC 9293 figure 8: each side's SYN,ACK reaches the other in SYN-RECEIVED and completes
    the handshake there (as in Linux); no further ACK is needed."""
    a = Host(HOST_IP, isn_secret=SECRET, timestamps=False, sack=False)
    b = Host(PEER_IP, isn_secret=SECRET, timestamps=False, sack=False)
    ca = a.connect((PEER_IP, 5000), local_port=6000)
    cb = b.connect((HOST_IP, 6000), local_port=5000)
    net = Net(a, b, latency=0.01)
    net.run(until=lambda: ca.state == cb.state == State.ESTABLISHED, deadline=0.5)
    ia, ib = net.sent_by("a")[0].seq, net.sent_by("b")[0].seq
    got = [(n, s.time, s.ts) for n, s in net.log]
    assert got == [
        ("a", 0.0, ("S", ia, 0, 65535, 0, opts(1460, 5))),
        ("b", 0.0, ("S", ib, 0, 65535, 0, opts(1460, 5))),
        ("a", 0.01, ("SA", ia, seq(ib + 1), 65535, 0, opts(1460, 5))),
        ("b", 0.01, ("SA", ib, seq(ia + 1), 65535, 0, opts(1460, 5))),
    ]
    assert ca.info().snd_wscale == 5 and cb.info().snd_wscale == 5
    # Data flows both ways afterwards.
    ca.send(b"ping")
    cb.send(b"pong")
    net.run(until=lambda: ca.readable == 4 and cb.readable == 4, deadline=1.0)
    assert ca.recv() == b"pong" and cb.recv() == b"ping"


# ============================================================================================
# Closing
# ============================================================================================

def test_we_close_first_four_way_then_time_wait_2msl():
    ctx = active_open(msl=1.0)
    p, c = ctx.p, ctx.c
    c.close()
    fin, = p.tick(1.0)
    assert fin.t == (FIN, ctx.s(1), ctx.r(1), W, 0)
    assert c.state == State.FIN_WAIT_1
    assert p.send("A", ctx.r(1), ctx.s(2), 65535, at=1.1) == []
    assert c.state == State.FIN_WAIT_2
    ack, = p.send("FA", ctx.r(1), ctx.s(2), 65535, at=1.2)
    assert ack.t == ("A", ctx.s(2), ctx.r(2), W1, 0)  # the FIN is ACKed at once
    assert c.state == State.TIME_WAIT and c.eof
    # TIME-WAIT lasts exactly 2*MSL (RFC 9293 3.4.2 / 3.10.7.4), then CLOSED and gone.
    assert p.host.poll_at() == pytest.approx(3.2)
    assert p.advance(3.19) == []
    assert c.state == State.TIME_WAIT and p.host.connections() == [c]
    assert p.advance(3.2) == []
    assert c.state == State.CLOSED and c.error is None
    assert p.host.connections() == [] and p.host.poll_at() is None


def test_fin_retransmitted_in_time_wait_is_acked_and_restarts_2msl():
    ctx = active_open(msl=1.0)
    p, c = ctx.p, ctx.c
    c.close()
    p.tick(1.0)
    p.send("A", ctx.r(1), ctx.s(2), 65535, at=1.1)
    p.send("FA", ctx.r(1), ctx.s(2), 65535, at=1.2)
    assert c.state == State.TIME_WAIT
    # Our ACK was lost; the peer resends its FIN at 2.5.
    ack, = p.send("FA", ctx.r(1), ctx.s(2), 65535, at=2.5)
    assert ack.t == ("A", ctx.s(2), ctx.r(2), W1, 0)
    assert p.host.poll_at() == pytest.approx(4.5)          # restarted: 2.5 + 2*MSL
    assert p.advance(4.4) == [] and c.state == State.TIME_WAIT
    p.advance(4.5)
    assert c.state == State.CLOSED and p.host.connections() == []


def test_peer_closes_first_close_wait_last_ack():
    ctx = active_open()
    p, c = ctx.p, ctx.c
    ack, = p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(2), W1, 0)
    assert c.state == State.CLOSE_WAIT and c.eof and c.recv() == b""
    c.close()
    fin, = p.tick(1.5)
    assert fin.t == (FIN, ctx.s(1), ctx.r(2), W1, 0)
    assert c.state == State.LAST_ACK
    assert p.send("A", ctx.r(2), ctx.s(2), 65535, at=1.6) == []
    assert c.state == State.CLOSED and c.error is None
    assert p.host.connections() == [] and p.host.poll_at() is None


def test_simultaneous_close_goes_through_closing():
    ctx = active_open(msl=1.0)
    p, c = ctx.p, ctx.c
    c.close()
    fin, = p.tick(1.0)
    assert fin.t == (FIN, ctx.s(1), ctx.r(1), W, 0)
    # The peer's FIN crosses ours: it does not acknowledge our FIN.
    ack, = p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.05)
    assert ack.t == ("A", ctx.s(2), ctx.r(2), W1, 0)
    assert c.state == State.CLOSING
    # The peer's ACK of our FIN.
    assert p.send("A", ctx.r(2), ctx.s(2), 65535, at=1.1) == []
    assert c.state == State.TIME_WAIT
    assert p.host.poll_at() == pytest.approx(3.1)
    p.advance(3.1)
    assert c.state == State.CLOSED and p.host.connections() == []


def test_simultaneous_close_between_two_hosts():
    a = Host(HOST_IP, isn_secret=SECRET, timestamps=False, sack=False, msl=0.5)
    b = Host(PEER_IP, isn_secret=SECRET, timestamps=False, sack=False, msl=0.5)
    lst = b.listen(80)
    ca = a.connect((PEER_IP, 80))
    net = Net(a, b, latency=0.01)
    net.run(until=lambda: len(lst) == 1)
    cb = lst.accept()
    ca.close()
    cb.close()
    net.run(until=lambda: ca.state == cb.state == State.TIME_WAIT, deadline=0.5)
    assert [s.flags for _, s in net.log[-4:]] == [FIN, FIN, "A", "A"]
    net.run()
    assert ca.state == cb.state == State.CLOSED
    assert a.connections() == [] and b.connections() == []
    # Each side entered TIME-WAIT when the other's last ACK arrived (latency 10 ms).
    assert net.now == pytest.approx(net.log[-1][1].time + 0.01 + 2 * 0.5)


def test_half_close_peer_keeps_sending_while_we_are_in_fin_wait_2():
    ctx = active_open(delayed_ack=0)
    p, c = ctx.p, ctx.c
    c.shutdown()
    fin, = p.tick(1.0)
    assert fin.t == (FIN, ctx.s(1), ctx.r(1), W, 0)
    assert p.send("A", ctx.r(1), ctx.s(2), 65535, at=1.1) == []
    assert c.state == State.FIN_WAIT_2
    with pytest.raises(ConnectionClosed):
        c.send(b"no more")
    ack, = p.send("PA", ctx.r(1), ctx.s(2), 65535, data=b"a" * 700, at=1.2)
    assert ack.t == ("A", ctx.s(2), ctx.r(701), wnd(700), 0)
    ack, = p.send("PA", ctx.r(701), ctx.s(2), 65535, data=b"b" * 300, at=1.3)
    # The edge the previous ACK announced (rounded up past BIG + 1, by 28) stays put.
    assert ack.t == ("A", ctx.s(2), ctx.r(1001), (BIG + 28 - 1000 + 31) >> 5, 0)
    assert c.recv() == b"a" * 700 + b"b" * 300
    ack, = p.send("FA", ctx.r(1001), ctx.s(2), 65535, at=1.4)
    assert ack.t[:3] == ("A", ctx.s(2), ctx.r(1002))
    assert c.state == State.TIME_WAIT and c.eof


def test_half_close_we_keep_sending_in_close_wait():
    ctx = active_open(nodelay=True)
    p, c = ctx.p, ctx.c
    p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.0)
    assert c.state == State.CLOSE_WAIT and c.eof
    c.send(b"m" * 1500)
    segs = p.tick(1.1)
    assert tuples(segs) == [("A", ctx.s(1), ctx.r(2), W1, 1000),
                            ("PA", ctx.s(1001), ctx.r(2), W1, 500)]
    assert p.send("A", ctx.r(2), ctx.s(1501), 65535, at=1.2) == []
    c.send(b"n" * 10)
    seg, = p.tick(1.3)
    assert seg.t == ("PA", ctx.s(1501), ctx.r(2), W1, 10)
    # close(): the FIN rides on the last data segment (Nagle does not hold a FIN tail).
    c.send(b"o" * 5)
    c.close()
    assert c.state == State.LAST_ACK
    seg, = p.tick(1.35)
    assert seg.t == ("FPA", ctx.s(1511), ctx.r(2), W1, 5)
    assert p.send("A", ctx.r(2), ctx.s(1517), 65535, at=1.5) == []
    assert c.state == State.CLOSED


def test_fin_retransmitted_with_backoff():
    ctx = active_open(initial_rto=1.0, min_rto=1.0)
    p, c = ctx.p, ctx.c
    assert c.info().rto == 1.0
    c.close()
    fin, = p.tick(1.0)
    got = p.advance(8.5)
    assert [(s.time, s.t) for s in got] == [(2.0, fin.t), (4.0, fin.t), (8.0, fin.t)]
    assert p.send("A", ctx.r(1), ctx.s(2), 65535, at=8.6) == []
    # close()d: FIN-WAIT-2 waits at most 2*MSL for the peer's FIN (as tcp_fin_timeout).
    assert c.state == State.FIN_WAIT_2
    assert p.host.poll_at() == pytest.approx(8.6 + 2 * 30.0)
    p.advance(8.6 + 60.0)
    assert c.state == State.CLOSED and p.host.connections() == []


# ============================================================================================
# Resets
# ============================================================================================

def syn_sent():
    p = ManualPeer()
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    return p, c, syn.seq


def test_rst_in_syn_sent_with_acceptable_ack_is_refused():
    p, c, iss = syn_sent()
    assert p.send("RA", 0, iss + 1, 0, at=0.1) == []
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionRefused)
    assert p.host.connections() == [] and p.host.poll_at() is None
    with pytest.raises(ConnectionRefused):
        c.send(b"x")


@pytest.mark.parametrize("ack_delta", [0, 2, -5])
def test_rst_in_syn_sent_with_unacceptable_ack_is_dropped(ack_delta):
    """RFC 9293 3.10.7.3: SEG.ACK =< ISS or > SND.NXT with RST set: drop silently."""
    p, c, iss = syn_sent()
    assert p.send("RA", 0, iss + ack_delta, 0, at=0.1) == []
    assert c.state == State.SYN_SENT and c.error is None


def test_rst_in_syn_sent_without_ack_is_dropped():
    p, c, iss = syn_sent()
    assert p.send("R", 12345, 0, 0, at=0.1) == []
    assert c.state == State.SYN_SENT


def test_bad_ack_in_syn_sent_is_answered_by_rst():
    """RFC 9293 3.10.7.3: unacceptable ACK, no RST => <SEQ=SEG.ACK><CTL=RST>."""
    p, c, iss = syn_sent()
    rst, = p.send("A", 777, iss + 9, 1000, at=0.1)
    assert rst.t == ("R", seq(iss + 9), 0, 0, 0)
    assert c.state == State.SYN_SENT


def test_rst_in_syn_received_returns_passive_open_to_listen():
    p = ManualPeer()
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0))
    assert p.send("R", IRS + 1, 0, 0, at=0.1) == []
    assert p.host.connections() == [] and lst.accept() is None
    # The listener still answers the next SYN.
    sa2, = p.send("S", IRS + 50000, 0, 65535, opts=opts(1000, 0), at=0.2)
    assert sa2.flags == "SA" and sa2.ack == IRS + 50001


def test_rst_exact_in_established_resets():
    ctx = active_open()
    p, c = ctx.p, ctx.c
    assert p.send("R", ctx.r(1), 0, 0, at=1.0) == []
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionReset)
    assert p.host.connections() == []
    with pytest.raises(ConnectionReset):
        c.recv()
    with pytest.raises(ConnectionReset):
        c.send(b"x")


def test_rst_in_window_but_inexact_gets_challenge_ack():
    """RFC 5961 3.2: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, connection kept."""
    ctx = active_open()
    p, c = ctx.p, ctx.c
    ack, = p.send("R", ctx.r(1 + 5000), 0, 0, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(1), W, 0)
    assert c.state == State.ESTABLISHED
    ack, = p.send("RA", ctx.r(2), ctx.s(1), 0, at=1.1)
    assert ack.t == ("A", ctx.s(1), ctx.r(1), W, 0)
    assert c.state == State.ESTABLISHED and c.error is None


@pytest.mark.parametrize("delta", [-1, -70000, BIG + 10, 1 << 31])
def test_rst_out_of_window_is_ignored(delta):
    ctx = active_open()
    assert ctx.p.send("R", ctx.r(1 + delta), 0, 0, at=1.0) == []
    assert ctx.c.state == State.ESTABLISHED


def _to_state(name: str) -> Ctx:
    ctx = active_open(msl=1.0, initial_rto=1.0, min_rto=1.0)
    p, c = ctx.p, ctx.c
    if name == "FIN_WAIT_1":
        c.close()
        p.tick(1.0)
    elif name == "FIN_WAIT_2":
        c.shutdown()
        p.tick(1.0)
        p.send("A", ctx.r(1), ctx.s(2), 65535, at=1.0)
    elif name == "CLOSE_WAIT":
        p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.0)
    elif name == "LAST_ACK":
        p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.0)
        c.close()
        p.tick(1.0)
    elif name == "CLOSING":
        c.close()
        p.tick(1.0)
        p.send("FA", ctx.r(1), ctx.s(1), 65535, at=1.0)
    elif name == "TIME_WAIT":
        c.close()
        p.tick(1.0)
        p.send("FA", ctx.r(1), ctx.s(2), 65535, at=1.0)
    assert c.state == State[name]
    return ctx


@pytest.mark.parametrize("name,error", [
    ("ESTABLISHED", ConnectionReset), ("FIN_WAIT_1", ConnectionReset),
    ("FIN_WAIT_2", ConnectionReset), ("CLOSE_WAIT", ConnectionReset),
    ("CLOSING", None), ("LAST_ACK", None), ("TIME_WAIT", None)])
def test_rst_in_each_synchronized_state(name, error):
    """RFC 9293 3.10.7.4 "second": reset from ESTABLISHED..CLOSE-WAIT reports "reset";
    CLOSING, LAST-ACK and TIME-WAIT just enter CLOSED."""
    ctx = _to_state(name)
    rcv_nxt = ctx.c.info().rcv_nxt
    assert ctx.p.send("R", rcv_nxt, 0, 0, at=1.5) == []
    assert ctx.c.state == State.CLOSED
    assert type(ctx.c.error) is (error or type(None))
    assert ctx.p.host.connections() == []


def test_abort_sends_rst():
    ctx = active_open()
    ctx.c.abort()
    rst, = ctx.p.tick(1.0)
    assert rst.t == ("R", ctx.s(1), 0, 0, 0)
    assert isinstance(ctx.c.error, ConnectionAborted)


def test_close_with_unread_data_resets():
    """RFC 1122 4.2.2.13: closing with unread received data sends RST."""
    ctx = active_open()
    ctx.p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"unread", at=1.0)
    ctx.c.close()
    out = ctx.p.tick(1.01)
    assert tuples(out) == [("R", ctx.s(1), 0, 0, 0)]
    assert ctx.c.state == State.CLOSED


def test_syn_in_established_gets_challenge_ack():
    """RFC 5961 4.2 (RFC 9293 3.10.7.4 "fourth"): any SYN in a synchronized state is
    answered by <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and dropped."""
    ctx = active_open()
    for k, sq in enumerate((ctx.r(1), ctx.r(500), ctx.r(-100000))):
        ack, = ctx.p.send("S", sq, 0, 65535, at=1.0 + k)
        assert ack.t == ("A", ctx.s(1), ctx.r(1), W, 0)
    assert ctx.c.state == State.ESTABLISHED


def test_unacceptable_segments_are_answered_with_ack():
    """RFC 9293 3.10.7.4: an old duplicate (all below RCV.NXT) or data past the window gets
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> at once; an ACK for data never sent likewise."""
    ctx = active_open(delayed_ack=0, rcv_buf=65535)
    p = ctx.p
    ack, = p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"a" * 100, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(101), 65435, 0)
    ack, = p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"a" * 100, at=1.1)   # duplicate
    assert ack.t == ("A", ctx.s(1), ctx.r(101), 65435, 0)
    ack, = p.send("PA", ctx.r(101 + 70000), ctx.s(1), 65535, data=b"z", at=1.2)
    assert ack.t == ("A", ctx.s(1), ctx.r(101), 65435, 0)
    ack, = p.send("A", ctx.r(101), ctx.s(5000), 65535, at=1.3)                # unsent
    assert ack.t == ("A", ctx.s(1), ctx.r(101), 65435, 0)
    assert ctx.c.recv() == b"a" * 100 and ctx.c.state == State.ESTABLISHED


def test_ack_range_rfc5961():
    """RFC 5961 5.2: SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT, else challenge ACK and drop;
    an old ACK inside that range is a harmless duplicate (no answer)."""
    ctx = active_open(nodelay=True, peer_win=20000)
    p, c = ctx.p, ctx.c
    c.send(b"d" * 3000)
    p.tick(1.0)
    assert p.send("A", ctx.r(1), ctx.s(3001), 20000, at=1.1) == []
    assert p.send("A", ctx.r(1), ctx.s(1), 20000, at=1.2) == []            # old, in range
    ack, = p.send("A", ctx.r(1), ctx.s(3001 - 20001), 20000, at=1.3)       # too old
    assert ack.t == ("A", ctx.s(3001), ctx.r(1), W, 0)
    assert c.state == State.ESTABLISHED and c.info().unacked == 0


def test_bad_ack_in_syn_received_is_answered_by_rst():
    """RFC 9293 3.10.7.4 fifth, SYN-RECEIVED: an unacceptable ACK => <SEQ=SEG.ACK><RST>."""
    p = ManualPeer()
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0))
    rst, = p.send("A", IRS + 1, sa.seq + 7, 65535, at=0.1)
    assert rst.t == ("R", seq(sa.seq + 7), 0, 0, 0)
    c, = p.host.connections()
    assert c.state == State.SYN_RECEIVED and lst.accept() is None
    assert p.send("A", IRS + 1, sa.seq + 1, 65535, at=0.2) == []
    assert lst.accept() is c


def test_keepalive_probes_then_timeout():
    """RFC 1122 4.2.3.6: after `keepalive` idle seconds send <SEQ=SND.NXT-1><ACK=RCV.NXT>;
    an answer restarts the idle clock; `keepalive_probes` unanswered probes fail it."""
    ctx = active_open(keepalive=10.0, keepalive_interval=1.0, keepalive_probes=3)
    p, c = ctx.p, ctx.c
    probe = ("A", ctx.s(0), ctx.r(1), W, 0)
    t, (seg,) = p.next_timer()
    assert t == pytest.approx(10.1) and seg.t == probe        # idle since 0.1
    assert p.send("A", ctx.r(1), ctx.s(1), 65535, at=10.2) == []
    got = p.advance(40.0)
    assert [(round(s.time, 6), s.t) for s in got] == [(20.2, probe), (21.2, probe),
                                                      (22.2, probe)]
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert p.host.connections() == []


# ============================================================================================
# Segments for no connection (RFC 9293 3.10.7.1) and closed ports
# ============================================================================================

@pytest.mark.parametrize("flags,data", [("A", b""), ("PA", b"data"), ("FA", b""),
                                        ("SA", b"")])
def test_rst_for_no_connection_ack_form(flags, data):
    """SEG.ACK set: <SEQ=SEG.ACK><CTL=RST>."""
    p = ManualPeer()
    rst, = p.send(flags, 5555, 0xABCDEF01, 1000, data=data)
    assert rst.t == ("R", 0xABCDEF01, 0, 0, 0)
    assert (rst.sport, rst.dport) == (80, 40000)


@pytest.mark.parametrize("flags,data,seg_len", [("S", b"", 1), ("S", b"12345", 6),
                                                ("F", b"", 1), ("", b"abc", 3),
                                                ("FP", b"abc", 4)])
def test_rst_for_no_connection_non_ack_form(flags, data, seg_len):
    """No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (SYN and FIN count in SEG.LEN)."""
    p = ManualPeer()
    rst, = p.send(flags, 0xFFFFFFFE, 0, 1000, data=data)
    assert rst.t == ("RA", 0, seq(0xFFFFFFFE + seg_len), 0, 0)


def test_rst_for_no_connection_is_never_answered():
    p = ManualPeer()
    assert p.send("R", 1, 0, 0) == [] and p.send("RA", 1, 2, 0) == []
    assert p.host.stats().get("rsts_out", 0) == 0


def test_syn_to_closed_port_and_ack_to_listener():
    p = ManualPeer()
    p.host.listen(80)
    rst, = p.send("S", IRS, 0, 65535, dport=81)
    assert rst.t == ("RA", 0, IRS + 1, 0, 0) and rst.sport == 81
    # An ACK for a listener with no such connection (RFC 9293 3.10.7.2): <SEQ=SEG.ACK><RST>.
    rst, = p.send("A", IRS, 4242, 65535)
    assert rst.t == ("R", 4242, 0, 0, 0)
    assert p.host.connections() == []


# ============================================================================================
# Retransmission
# ============================================================================================

def test_syn_retransmission_backoff_then_timeout():
    """RFC 6298 5.5: RTO doubles per retransmission (1, 2, 4, 8 s from initial_rto=1); after
    syn_retries the open fails with ConnectionTimedOut."""
    p = ManualPeer(initial_rto=1.0, syn_retries=4)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    got = p.advance(100.0)
    assert [(s.time, s.ts) for s in got] == [(t, syn.ts) for t in (1.0, 3.0, 7.0, 15.0)]
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert p.host.connections() == []
    # The failure happened at 31 s (15 + 16), when the fifth timer expired.
    assert p.host.stats()["timeouts"] == 4


def test_syn_retransmitted_then_answered_uses_3s_rto():
    """RFC 6298 5.7: after a SYN timeout and no RTT sample, RTO = 3 s once data flows."""
    p = ManualPeer(initial_rto=1.0)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    p.advance(1.5)                                          # one retransmission at 1.0
    p.send("SA", IRS, syn.seq + 1, 65535, opts=opts(1000, 0), at=1.6)
    assert c.state == State.ESTABLISHED
    assert c.info().srtt is None and c.info().rto == 3.0    # Karn: no sample


def test_data_retransmission_backoff_and_go_back_n():
    ctx = active_open(initial_rto=1.0, min_rto=1.0, nodelay=True)
    p, c = ctx.p, ctx.c
    assert c.info().rto == 1.0
    c.send(bytes(range(256)) * 12)                          # 3072 bytes = 1000+1000+1000+72
    first = p.tick(1.0)
    assert tuples(first) == [("A", ctx.s(1), ctx.r(1), W, 1000),
                             ("A", ctx.s(1001), ctx.r(1), W, 1000),
                             ("A", ctx.s(2001), ctx.r(1), W, 1000),
                             ("PA", ctx.s(3001), ctx.r(1), W, 72)]
    # No ACK: after RTO only the first segment is resent (cwnd = 1 MSS, RFC 5681 3.1), and
    # the timer backs off 1, 2, 4 s (RFC 6298 5.5).
    got = p.advance(8.5)
    assert [(s.time, s.t) for s in got] == [(2.0, first[0].t), (4.0, first[0].t),
                                            (8.0, first[0].t)]
    assert got[0].data == first[0].data
    # The peer ACKs the first segment: go back N. Slow start after the RTO grows cwnd by
    # one MSS per ACK (RFC 3465 L=1), so two segments follow.
    out = p.send("A", ctx.r(1), ctx.s(1001), 65535, at=8.6)
    assert tuples(out) == [first[1].t, first[2].t]
    assert [s.data for s in out] == [first[1].data, first[2].data]
    out = p.send("A", ctx.r(1), ctx.s(3001), 65535, at=8.7)
    assert tuples(out) == [first[3].t]
    assert p.send("A", ctx.r(1), ctx.s(3073), 65535, at=8.8) == []
    assert p.host.poll_at() is None
    assert c.info().retransmits == 6


def test_data_retransmission_gives_up_after_max_retries():
    ctx = active_open(initial_rto=1.0, min_rto=1.0, max_retries=3)
    p, c = ctx.p, ctx.c
    c.send(b"z" * 10)
    seg, = p.tick(1.0)
    got = p.advance(100.0)
    assert [(s.time, s.t) for s in got] == [(2.0, seg.t), (4.0, seg.t), (8.0, seg.t)]
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert p.host.connections() == []


def test_fast_retransmit_on_three_duplicate_acks():
    """RFC 5681 3.2: the third duplicate ACK resends the segment at SND.UNA at once."""
    ctx = active_open(initial_rto=1.0, min_rto=1.0, nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"q" * 6000)
    segs = p.tick(1.0)
    assert [s.seq for s in segs] == [ctx.s(1 + 1000 * k) for k in range(6)]
    assert p.send("A", ctx.r(1), ctx.s(1001), 65535, at=1.1) == []
    for k in range(2):
        assert p.send("A", ctx.r(1), ctx.s(1001), 65535, at=1.11 + k / 100) == []
    rtx, = p.send("A", ctx.r(1), ctx.s(1001), 65535, at=1.13)
    assert rtx.t == ("A", ctx.s(1001), ctx.r(1), W, 1000)
    assert p.host.stats()["fast_retransmits"] == 1
    # More duplicates inflate cwnd but there is nothing new to send.
    assert p.send("A", ctx.r(1), ctx.s(1001), 65535, at=1.14) == []
    # The full ACK ends recovery; nothing is outstanding and no timer runs.
    assert p.send("A", ctx.r(1), ctx.s(6001), 65535, at=1.2) == []
    assert p.host.poll_at() is None and c.info().unacked == 0


def test_window_update_is_not_a_duplicate_ack():
    """RFC 5681 2: a duplicate ACK carries the same window; window updates don't count."""
    ctx = active_open(nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"q" * 3000)
    p.tick(1.0)
    for k in range(4):
        assert p.send("A", ctx.r(1), ctx.s(1), 60000 - k, at=1.1 + k / 100) == []
    assert p.host.stats().get("fast_retransmits", 0) == 0


# ============================================================================================
# Flow control
# ============================================================================================

def test_zero_window_persist_probes_back_off_then_transfer_resumes():
    """RFC 9293 3.8.6.1: with a zero window and data queued, probe with one byte after RTO,
    backing off, for as long as the peer answers; when the window opens, send again."""
    ctx = active_open(peer_win=2000, initial_rto=1.0, min_rto=1.0, nodelay=True)
    p, c = ctx.p, ctx.c
    data = bytes(range(256)) * 20                           # 5120 bytes
    c.send(data)
    segs = p.tick(1.0)
    assert tuples(segs) == [("A", ctx.s(1), ctx.r(1), W, 1000),
                            ("A", ctx.s(1001), ctx.r(1), W, 1000)]
    # Everything acknowledged, window closed: nothing to send, persist timer armed.
    assert p.send("A", ctx.r(1), ctx.s(2001), 0, at=1.1) == []
    assert p.host.poll_at() == pytest.approx(2.1)
    probes = []
    for k in range(5):
        t, out = p.next_timer()
        assert tuples(out) == [("A", ctx.s(2001), ctx.r(1), W, 1)], k
        assert out[0].data == data[2000:2001]
        probes.append(t)
        # The peer refuses the byte: ACK of SND.UNA with a zero window.
        assert p.send("A", ctx.r(1), ctx.s(2001), 0, at=t + 0.05) == []
    assert [round(t - 1.1, 6) for t in probes] == [1.0, 3.0, 7.0, 15.0, 31.0]
    assert c.state == State.ESTABLISHED
    # The window opens: the rest goes out from SND.UNA (the probe byte is resent).
    out = p.send("A", ctx.r(1), ctx.s(2001), 65535, at=40.0)
    assert tuples(out) == [("A", ctx.s(2001), ctx.r(1), W, 1000),
                           ("A", ctx.s(3001), ctx.r(1), W, 1000),
                           ("A", ctx.s(4001), ctx.r(1), W, 1000),
                           ("PA", ctx.s(5001), ctx.r(1), W, 120)]
    assert b"".join(s.data for s in out) == data[2000:]
    assert p.send("A", ctx.r(1), ctx.s(5121), 65535, at=40.1) == []
    assert p.host.poll_at() is None


def test_zero_window_probe_accepted_by_peer():
    ctx = active_open(peer_win=1000, initial_rto=1.0, min_rto=1.0, nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"k" * 1500)
    seg, = p.tick(1.0)
    p.send("A", ctx.r(1), ctx.s(1001), 0, at=1.1)
    t, (probe,) = p.next_timer()
    assert probe.t == ("A", ctx.s(1001), ctx.r(1), W, 1)
    # The peer takes the byte and opens the window: the remaining 499 follow it.
    out = p.send("A", ctx.r(1), ctx.s(1002), 4000, at=t + 0.1)
    assert tuples(out) == [("PA", ctx.s(1002), ctx.r(1), W, 499)]


def test_receiver_advertises_shrinking_window_and_reopens_it():
    """Our window field is free buffer >> shift; it closes as data sits unread and reopens
    (by at least one MSS, receiver SWS avoidance RFC 9293 3.8.6.2.2) after recv()."""
    ctx = active_open(rcv_buf=4000, delayed_ack=0)
    p, c = ctx.p, ctx.c
    assert c.info().rcv_wscale == 0
    ack, = p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"a" * 1000, at=1.0)
    assert ack.t == ("A", ctx.s(1), ctx.r(1001), 3000, 0)
    ack, = p.send("PA", ctx.r(1001), ctx.s(1), 65535, data=b"b" * 3000, at=1.1)
    assert ack.t == ("A", ctx.s(1), ctx.r(4001), 0, 0)
    # Beyond the window: not accepted, answered with an ACK (RFC 9293 3.10.7.4).
    ack, = p.send("PA", ctx.r(4001), ctx.s(1), 65535, data=b"c" * 10, at=1.2)
    assert ack.t == ("A", ctx.s(1), ctx.r(4001), 0, 0)
    # Reading 500 bytes frees less than one MSS (1460): no window update yet.
    assert len(c.recv(500)) == 500
    assert p.tick(1.3) == []
    assert len(c.recv(1500)) == 1500
    upd, = p.tick(1.4)
    assert upd.t == ("A", ctx.s(1), ctx.r(4001), 2000, 0)


# ============================================================================================
# ACK policy and Nagle
# ============================================================================================

def test_delayed_ack_timing():
    """RFC 1122 4.2.3.2 / RFC 5681 4.2: a lone segment is ACKed when the delayed-ACK timer
    (40 ms default) fires; every second full-sized segment is ACKed at once; out-of-order
    data is ACKed at once (a duplicate ACK), and so is the segment filling the hole.
    (Without the quick ACKs of a connection's first data: test_first_segments_are_quick_acked.)"""
    ctx = active_open(quick_acks=0)
    p, c = ctx.p, ctx.c
    assert p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"a" * 100, at=1.0) == []
    assert p.host.poll_at() == pytest.approx(1.04)
    t, (ack,) = p.next_timer()
    assert t == pytest.approx(1.04) and ack.t == ("A", ctx.s(1), ctx.r(101), wnd(100), 0)
    # A second lone segment is delayed again.
    assert p.send("PA", ctx.r(101), ctx.s(1), 65535, data=b"b" * 100, at=2.0) == []
    t, (ack,) = p.next_timer()
    assert t == pytest.approx(2.04) and ack.t[:3] == ("A", ctx.s(1), ctx.r(201))
    # Two full-sized (1460) segments: the second is ACKed at once.
    assert p.send("A", ctx.r(201), ctx.s(1), 65535, data=b"c" * 1460, at=3.0) == []
    ack, = p.send("A", ctx.r(1661), ctx.s(1), 65535, data=b"d" * 1460, at=3.001)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(3121))
    assert p.host.poll_at() is None                        # the delayed ACK is cancelled
    # Out of order: an immediate duplicate ACK, then an immediate ACK for the hole filler.
    ack, = p.send("A", ctx.r(3121 + 1460), ctx.s(1), 65535, data=b"f" * 1460, at=4.0)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(3121))
    ack, = p.send("A", ctx.r(3121), ctx.s(1), 65535, data=b"e" * 1460, at=4.01)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(3121 + 2920))
    assert c.recv(10000) == (b"a" * 100 + b"b" * 100 + b"c" * 1460 + b"d" * 1460
                             + b"e" * 1460 + b"f" * 1460)


def test_delayed_ack_rides_on_data():
    """An ACK owed is carried by outgoing data instead of a separate segment."""
    ctx = active_open(nodelay=True, quick_acks=0)
    p, c = ctx.p, ctx.c
    assert p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"req", at=1.0) == []
    c.send(b"resp")
    seg, = p.tick(1.01)
    assert seg.t == ("PA", ctx.s(1), ctx.r(4), wnd(3), 4)
    assert p.advance(1.1) == []                             # no separate delayed ACK


def test_delayed_ack_disabled_acks_every_segment():
    ctx = active_open(delayed_ack=0)
    ack, = ctx.p.send("PA", ctx.r(1), ctx.s(1), 65535, data=b"x", at=1.0)
    assert ack.t[:3] == ("A", ctx.s(1), ctx.r(2))


def test_nagle_coalesces_small_writes_while_data_is_unacked():
    """RFC 9293 3.7.4 (RFC 896): a small segment only when nothing is unacknowledged."""
    ctx = active_open()
    p, c = ctx.p, ctx.c
    c.send(b"a")
    seg, = p.tick(1.0)
    assert seg.t == ("PA", ctx.s(1), ctx.r(1), W, 1)
    c.send(b"b")
    assert p.tick(1.01) == []
    c.send(b"c")
    assert p.tick(1.02) == []
    seg, = p.send("A", ctx.r(1), ctx.s(2), 65535, at=1.1)
    assert seg.t == ("PA", ctx.s(2), ctx.r(1), W, 2) and seg.data == b"bc"
    # Full-sized segments are never held; a short one waits behind an unacknowledged
    # short one (Minshall's variant, as Linux's tcp_minshall_check): with "bc" in flight,
    # 2500 bytes => two 1000s now, the 500 waits.
    c.send(b"d" * 2500)
    out = p.tick(1.2)
    assert tuples(out) == [("A", ctx.s(4), ctx.r(1), W, 1000),
                           ("A", ctx.s(1004), ctx.r(1), W, 1000)]
    out = p.send("A", ctx.r(1), ctx.s(2004), 65535, at=1.3)
    assert tuples(out) == [("PA", ctx.s(2004), ctx.r(1), W, 500)]
    # Once no short segment is unacknowledged, a write's short tail leaves with its full
    # segments (RFC 896's rule would hold it behind them).
    assert p.send("A", ctx.r(1), ctx.s(2504), 65535, at=1.4) == []
    c.send(b"e" * 2500)
    out = p.tick(1.5)
    assert tuples(out) == [("A", ctx.s(2504), ctx.r(1), W, 1000),
                           ("A", ctx.s(3504), ctx.r(1), W, 1000),
                           ("PA", ctx.s(4504), ctx.r(1), W, 500)]


def test_nodelay_sends_small_writes_at_once():
    ctx = active_open(nodelay=True)
    p, c = ctx.p, ctx.c
    for k in range(3):
        c.send(b"x" * (k + 1))
        seg, = p.tick(1.0 + k / 100)
        assert seg.t == ("PA", ctx.s(1 + k * (k + 1) // 2), ctx.r(1), W, k + 1)


# ============================================================================================
# Sequence-number wrap
# ============================================================================================

def _time_for_iss(target: int, local_port: int, remote_port: int) -> float:
    """A connect time at which the host's RFC 6528 ISN equals ``target``:
    ISN = F(tuple) + int(now * 250000), so solve for the 4 us tick count."""
    from fasttcp.tcp._isn import IsnGenerator
    from fasttcp.wire import ip_to_int
    f = IsnGenerator(SECRET).isn(ip_to_int(HOST_IP), local_port, ip_to_int(PEER_IP),
                                 remote_port, 0.0)
    ticks = (target - f) & 0xFFFFFFFF
    return (ticks + 0.5) / 250000.0


def test_sequence_numbers_wrap_both_directions():
    """~100 KB each way across 2**32, with our ISS and the peer's ISN just below the wrap."""
    iss_target = 0xFFFFFF00
    t0 = _time_for_iss(iss_target, 80, 40000)
    irs = 0xFFFFFF80
    p = ManualPeer(now=t0, delayed_ack=0, nodelay=True, rcv_buf=65535)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(t0)
    assert syn.seq == iss_target
    p.send("SA", irs, iss_target + 1, 65535, opts=opts(1400, 0), at=t0 + 0.01)
    ctx = Ctx(p, c, iss_target, irs)
    assert c.state == State.ESTABLISHED
    n = 100_000
    out_data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    in_data = bytes((i * 13 + 1) & 0xFF for i in range(n))
    c.send(out_data)
    got = bytearray()                                       # host -> peer, in order
    received = b""                                          # peer -> host, as read
    sent = 0                                                # peer -> host bytes sent
    t = t0 + 0.1
    segs = p.tick(t)
    for _ in range(1000):                                   # bounded: ~72 rounds needed
        # Peer side: check and take our data, acknowledge it, send its own in 1400s.
        for s in segs:
            off = (s.seq - ctx.s(1)) & MASK
            assert s.data == out_data[off:off + len(s.data)], (s, off)
            if s.data and off == len(got):
                got += s.data
            assert s.ack == ctx.r(1 + sent)                 # every ACK is exact
        chunk = in_data[sent:sent + 1400]
        segs = p.send("PA" if chunk else "A", ctx.r(1 + sent), ctx.s(1 + len(got)), 65535,
                      data=chunk)
        sent += len(chunk)
        if chunk:
            # delayed_ack=0: the host ACKs this chunk at once (maybe on a data segment).
            assert segs and segs[-1].ack == ctx.r(1 + sent), (segs, sent)
            received += c.recv(1 << 20)
            assert len(received) == sent
        if len(got) == n and sent == n and c.info().unacked == 0:
            break
        t += 0.01
        segs += p.tick(t)
    assert bytes(got) == out_data
    assert received == in_data
    info = c.info()
    assert info.snd_una == seq(iss_target + 1 + n) < iss_target     # wrapped
    assert info.rcv_nxt == seq(irs + 1 + n) < irs


def test_two_hosts_transfer_across_wrap():
    """Two hosts, the client's ISS 1000 below 2**32, 100 KB each way through Net."""
    t0 = _time_for_iss(0xFFFFFC18, 80, 40000)
    a = Host(HOST_IP, isn_secret=SECRET, timestamps=False, sack=False)
    b = Host(PEER_IP, isn_secret=SECRET, timestamps=False, sack=False)
    net = Net(a, b, latency=0.005, now=t0)                  # sets both hosts' clocks
    lst = b.listen(40000)
    ca = a.connect((PEER_IP, 40000), local_port=80)
    net.run(until=lambda: len(lst) == 1, deadline=t0 + 1)
    assert net.sent_by("a")[0].seq == 0xFFFFFC18
    cb = lst.accept()
    n = 100_000
    up = bytes((i * 31) & 0xFF for i in range(n))
    down = bytes((i * 17 + 5) & 0xFF for i in range(n))
    ca.send(up)
    cb.send(down)
    got_a, got_b = bytearray(), bytearray()

    def done() -> bool:
        got_a.extend(ca.recv(1 << 20))
        got_b.extend(cb.recv(1 << 20))
        return (len(got_a) == n and len(got_b) == n
                and ca.info().unacked == 0 and cb.info().unacked == 0)
    net.run(until=done, deadline=t0 + 30)
    assert bytes(got_b) == up and bytes(got_a) == down
    assert ca.info().snd_una == seq(0xFFFFFC18 + 1 + n)
    assert a.stats().get("retransmitted_segments", 0) == 0


# ============================================================================================
# ICMP
# ============================================================================================

def test_icmp_echo_request_gets_reply():
    p = ManualPeer()
    req = build_icmp_echo(PEER_IP, HOST_IP, 0x1234, 7, b"hello ping")
    rep, = p.inject([req])
    pk = rep.pkt
    assert pk.is_icmp and (pk.icmp_type, pk.icmp_code) == (0, 0)
    assert (pk.src, pk.dst) == (HOST_IP, PEER_IP)
    assert (pk.icmp_id, pk.icmp_seq, bytes(pk.payload)) == (0x1234, 7, b"hello ping")


def test_icmp_frag_needed_lowers_mss_and_resends():
    """RFC 1191: 'fragmentation needed' with next-hop MTU 1000 => MSS 960; the data in
    flight is sent again from SND.UNA in 960-byte segments."""
    ctx = active_open(peer_opts=opts(1460, 0), nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"m" * 3000)
    segs = p.tick(1.0)
    assert [len(s.data) for s in segs] == [1460, 1460, 80]
    icmp = build_icmp_unreachable("10.9.9.9", HOST_IP, 4, segs[0].pkt.raw, mtu=1000)
    out = p.inject([icmp], at=1.05)
    assert c.info().mss == 960
    assert tuples(out) == [("A", ctx.s(1), ctx.r(1), W, 960),
                           ("A", ctx.s(961), ctx.r(1), W, 960),
                           ("A", ctx.s(1921), ctx.r(1), W, 960),
                           ("PA", ctx.s(2881), ctx.r(1), W, 120)]
    assert all(s.pkt.total_length <= 1000 for s in out)


def test_icmp_quoting_a_sequence_not_in_flight_is_ignored():
    """RFC 5927 4.1: an ICMP error must quote a sequence number in [SND.UNA, SND.NXT)."""
    ctx = active_open(peer_opts=opts(1460, 0), nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"m" * 100)
    seg, = p.tick(1.0)
    p.send("A", ctx.r(1), ctx.s(101), 65535, at=1.01)       # acknowledged: not in flight
    icmp = build_icmp_unreachable("10.9.9.9", HOST_IP, 4, seg.pkt.raw, mtu=600)
    assert p.inject([icmp], at=1.05) == []
    assert c.info().mss == 1460


def test_icmp_port_unreachable_to_syn_is_refused():
    p, c, iss = syn_sent()
    syn = p.log[0]
    icmp = build_icmp_unreachable(PEER_IP, HOST_IP, 3, syn.pkt.raw)
    assert p.inject([icmp], at=0.1) == []
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionRefused)
    assert p.host.connections() == []


def test_icmp_net_unreachable_to_syn_is_a_soft_error():
    """RFC 1122 4.2.3.9: codes 0, 1, 5 are soft errors; the SYN keeps being retried."""
    p, c, iss = syn_sent()
    icmp = build_icmp_unreachable("10.9.9.9", HOST_IP, 0, p.log[0].pkt.raw)
    assert p.inject([icmp], at=0.1) == []
    assert c.state == State.SYN_SENT
    t, (syn,) = p.next_timer()
    assert syn.t == p.log[0].t
