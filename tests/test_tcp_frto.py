"""F-RTO (RFC 5682) after a retransmission timeout, as Linux does it (``tcp_frto=2``: the
SACK-enhanced algorithm of section 3 on SACK connections, the basic one of section 2
otherwise), against a hand-played peer: the exact segments fasttcp sends and when.

The path: MSS 1000, a 100 ms round trip (the handshake's sample: SRTT 0.1 s, RTO
0.3 s), no timestamps unless said, no tail-loss probes (so the RTO is what fires). Twenty
segments are queued at t=0.1; the initial window sends ten and nothing is acknowledged
until the RTO has resent the first (offset 1).
"""
from __future__ import annotations

from typing import List

import pytest

from fasttcp.tcp.congestion import INFINITE_SSTHRESH
from fasttcp.wire import TcpOptions
from tcp_harness import Ctx, ManualPeer, Seg, ts_passive_open

MSS = 1000
RTT = 0.1
IRS = 7_000_000


def open_conn(sack: bool = True, **settings) -> Ctx:
    """A listening host accepts the peer's SYN (MSS 1000, SACK-permitted if ``sack``) at
    t=0; the peer's ACK arrives at t=RTT."""
    settings.setdefault("tlp", False)
    p = ManualPeer(sack=sack, **settings)
    lst = p.host.listen(p.host_port)
    sa, = p.send("S", IRS, 0, 65535, opts=TcpOptions(mss=MSS, sack_permitted=sack))
    c, = p.host.connections()
    ctx = Ctx(p, c, sa.seq, IRS)
    assert p.send("A", IRS + 1, ctx.s(1), at=RTT) == []
    assert lst.accept() is c and c.sack_ok == sack
    return ctx


def ack(ctx: Ctx, k: int, blocks=(), at=None) -> List[Seg]:
    """The peer acknowledges our offset k with SACK blocks [(a, b)] of our offsets."""
    o = TcpOptions(sack=[(ctx.s(a), ctx.s(b)) for a, b in blocks]) if blocks else None
    return ctx.p.send("A", ctx.r(1), ctx.s(k), opts=o, at=at)


def offsets(ctx: Ctx, segs: List[Seg]) -> List[int]:
    return [(s.seq - ctx.iss) & 0xFFFFFFFF for s in segs if s.data]


def timeout(ctx: Ctx) -> float:
    """Twenty segments queued, ten sent at t=0.1, no ACK: the RTO resends offset 1 at 0.4
    and cwnd falls to one segment. Returns the time of the RTO."""
    ctx.c.send(bytes(20 * MSS))
    assert offsets(ctx, ctx.p.tick()) == list(range(1, 10001, MSS))
    t, rto = ctx.p.next_timer()
    assert t == pytest.approx(0.4) and offsets(ctx, rto) == [1]
    assert ctx.c.cc.cwnd == MSS and ctx.c.frto
    return t


def stat(ctx: Ctx, name: str) -> int:
    return ctx.p.host.stats().get(name, 0)


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "no-sack"])
def test_spurious_timeout_is_detected_and_undone_without_timestamps(sack):
    """A delay spike, no loss: after the RTO the ACKs of the original flight arrive. The
    first covers only the resent segment: F-RTO sends two new segments instead of going
    back (RFC 5682 step 2b). The next acknowledges 1001, never retransmitted (step 3b): the
    timeout was spurious, cwnd and ssthresh are restored (Linux tcp_try_undo_loss) and
    nothing more is resent."""
    ctx = open_conn(sack)
    c = ctx.c
    t = timeout(ctx)
    assert offsets(ctx, ack(ctx, 1001, at=t + 0.05)) == [10001, 11001]
    assert offsets(ctx, ack(ctx, 2001, at=t + 0.051)) == []      # 10 in flight: cwnd full
    assert (c.cc.cwnd, c.cc.ssthresh) == (10 * MSS, INFINITE_SSTHRESH)
    assert c.info().spurious_rtx_undone == 1 and stat(ctx, "frto_spurious_rtos") == 1
    assert not c.frto and c.retransmits == 1
    out = ack(ctx, 3001, at=t + 0.052)                # slow start again: new data only
    assert offsets(ctx, out) == [12001, 13001] and c.retransmits == 1
    assert stat(ctx, "spurious_rtx_undone") == 1


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "no-sack"])
def test_real_loss_after_the_timeout_is_not_undone(sack):
    """The flight was lost: the RTO's retransmission is acknowledged, F-RTO sends two new
    segments, and they arrive above the hole: a duplicate ACK (with their SACK block when
    SACK is on). The loss was real (step 3a): no undo, and the retransmission of the lost
    segments goes on from 1001 as the conventional RTO recovery does."""
    ctx = open_conn(sack)
    c = ctx.c
    t = timeout(ctx)
    assert offsets(ctx, ack(ctx, 1001, at=t + RTT)) == [10001, 11001]
    blocks = [(10001, 12001)] if sack else []
    out = ack(ctx, 1001, blocks, at=t + 2 * RTT)
    assert offsets(ctx, out)[:2] == [1001, 2001]
    assert all(s.seq != ctx.s(10001) and s.seq != ctx.s(11001) for s in out)
    assert not c.frto and c.info().spurious_rtx_undone == 0
    assert c.cc.cwnd <= 3 * MSS and c.cc.ssthresh < 10 * MSS     # RFC 5682 3a
    assert stat(ctx, "frto_spurious_rtos") == 0


def test_sack_of_a_segment_never_retransmitted_shows_the_timeout_spurious():
    """The SACK-enhanced variant (RFC 5682 section 3, Linux FLAG_ORIG_SACK_ACKED): after
    the new data, a duplicate ACK SACKs 2001, an original segment the RTO did not resend.
    It was only delayed, so the timeout was spurious (the basic algorithm would take a
    duplicate ACK as a real loss): undone, and the hole at 1001 is left to fast recovery
    rather than the whole window resent."""
    ctx = open_conn(True)
    c = ctx.c
    t = timeout(ctx)
    assert offsets(ctx, ack(ctx, 1001, at=t + 0.05)) == [10001, 11001]
    ack(ctx, 1001, [(2001, 3001)], at=t + 0.06)
    assert c.info().spurious_rtx_undone == 1 and stat(ctx, "frto_spurious_rtos") == 1
    assert c.cc.ssthresh == INFINITE_SSTHRESH and not c.frto
    assert c.snd_nxt == c.snd_max                      # no go-back-N
    assert c.retransmits == 1


def test_frto_off_goes_back_n_at_once():
    """Settings(frto=False): the conventional RTO recovery (RFC 5681, RFC 6298 5.4):
    after the first ACK, slow start resends from 1001."""
    ctx = open_conn(True, frto=False)
    t = timeout_no_frto(ctx)
    assert offsets(ctx, ack(ctx, 1001, at=t + 0.05)) == [1001, 2001]
    assert ctx.c.info().spurious_rtx_undone == 0


def timeout_no_frto(ctx: Ctx) -> float:
    ctx.c.send(bytes(20 * MSS))
    ctx.p.tick()
    t, rto = ctx.p.next_timer()
    assert offsets(ctx, rto) == [1] and not ctx.c.frto
    return t


def test_frto_with_timestamps_agrees_with_eifel():
    """With timestamps both detectors run (as in Linux) and undo once. Here the first ACK
    echoes the retransmission's TSval, so Eifel (RFC 3522) sees no spurious timeout; F-RTO
    sends new data and the next ACK, of a segment never resent, shows it spurious: one
    undo, counted once, and Eifel does not judge the episode again."""
    ctx = ts_passive_open(tlp=False)
    c, m = ctx.c, ctx.c.mss
    c.send(bytes(20 * m))
    assert len(ctx.p.tick(1.0)) == 10
    t, rto = ctx.p.next_timer()
    assert [s.seq for s in rto] == [ctx.s(1)] and c.frto
    out = ctx.send("A", 1, 210, ack=1 + m, at=t + 0.01)        # echoes the resend's TSval
    assert [s.seq for s in out] == [ctx.s(1 + 10 * m), ctx.s(1 + 11 * m)]
    assert c.info().spurious_rtx_undone == 0
    ctx.send("A", 1, 211, ack=1 + 2 * m, at=t + 0.011)
    assert c.info().spurious_rtx_undone == 1 and stat(ctx, "frto_spurious_rtos") == 1
    assert c.undo_marker == -1 and c.cc.ssthresh == INFINITE_SSTHRESH
    ctx.send("A", 1, 212, ack=1 + 3 * m, at=t + 0.012)
    assert c.info().spurious_rtx_undone == 1


def test_eifel_first_leaves_nothing_for_frto():
    """The first ACK after the RTO echoes the original's TSval: Eifel undoes at once (RFC
    3522) and F-RTO ends with it: no new-data step, no second undo."""
    ctx = ts_passive_open(tlp=False)
    c, m = ctx.c, ctx.c.mss
    c.send(bytes(20 * m))
    ctx.p.tick(1.0)
    tsv_original = ctx.tsv(1.0)
    t, _ = ctx.p.next_timer()
    opts = TcpOptions(timestamps=(210, tsv_original))
    ctx.p.send("A", ctx.r(1), ctx.s(1 + m), 65535, opts=opts, at=t + 0.01)
    assert c.info().spurious_rtx_undone == 1 and not c.frto
    ctx.p.send("A", ctx.r(1), ctx.s(1 + 2 * m), 65535,
               opts=TcpOptions(timestamps=(211, tsv_original)), at=t + 0.011)
    assert c.info().spurious_rtx_undone == 1 and stat(ctx, "frto_spurious_rtos") == 0
    assert c.retransmits == 1


def test_no_frto_for_a_timeout_during_fast_recovery():
    """Linux enables F-RTO only for a timeout outside fast recovery (or a repeated one):
    a loss recovery already under way means the loss is real."""
    ctx = open_conn(True)
    c = ctx.c
    c.send(bytes(20 * MSS))
    ctx.p.tick()
    for k in (2, 3, 4):
        ack(ctx, 1, [(1001, 1 + k * MSS)], at=0.15)
    assert c.in_recovery
    for _ in range(10):                               # bounded: the RTO comes within a few
        if stat(ctx, "timeouts"):
            break
        ctx.p.next_timer(limit=5.0)
    assert stat(ctx, "timeouts") == 1 and not c.frto


def test_after_a_timeout_sacked_data_is_not_resent():
    """RFC 6675 5.1 / Linux's Loss state: after an RTO the scoreboard still holds what the
    receiver SACKed (it did not renege: the first unacknowledged segment is not SACKed),
    and only what is marked lost is resent, as the pipe allows; then new data. Here 1
    and 1001 are lost twice (their fast retransmissions too, and the new data recovery sent
    from 10001) while 2001:10001 was SACKed: after the RTO resends 1 and its ACK comes,
    the next are 1001 and 10001, and the SACKed 2001:10001 is never resent (go-back-N
    would resend 2001 next)."""
    ctx = open_conn(True)
    c = ctx.c
    c.send(bytes(20 * MSS))
    assert offsets(ctx, ctx.p.tick()) == list(range(1, 10001, MSS))
    ack(ctx, 1, [(2001, 10001)], at=0.2)
    for _ in range(10):                               # the reordering timer, then the RTO
        t, out = ctx.p.next_timer(limit=5.0)
        if stat(ctx, "timeouts"):
            break
    assert stat(ctx, "timeouts") == 1 and offsets(ctx, out) == [1]
    assert not c.frto                                 # the loss was known: no F-RTO
    out = ack(ctx, 1001, [(2001, 10001)], at=t + RTT)
    assert offsets(ctx, out) == [1001, 10001]
    top = c.recover                   # SND.MAX at the RTO: 10001:top went out in recovery
    sent = offsets(ctx, out)
    for k in range(1, 6):             # the peer acknowledges all it has, round after round
        sent += offsets(ctx, ack(ctx, max(sent) + MSS, at=t + (1 + k) * RTT))
    assert not any(2001 <= k < 10001 for k in sent)           # never the SACKed data
    assert set(range(10001, top, MSS)) <= set(sent)           # what was marked lost: yes
    assert not c._rto_recovery and c.snd_una > top


def test_frto_ends_once_everything_before_the_timeout_is_acknowledged():
    """Without SACK: after new data went out, an ACK that neither shows the timeout
    spurious nor the loss real (here a window update) lets the go-back-N go on (Linux
    REXMIT_LOST) with F-RTO still watching; once all that was sent before the timeout is
    acknowledged (step 2a's "recover"), F-RTO ends, and the slow path no longer has to
    judge every ACK."""
    ctx = open_conn(False)
    c = ctx.c
    t = timeout(ctx)
    assert offsets(ctx, ack(ctx, 1001, at=t + 0.05)) == [10001, 11001]
    out = ctx.p.send("A", ctx.r(1), ctx.s(1001), win=60000, at=t + 0.06)
    assert c.frto and offsets(ctx, out) == [1001, 2001]  # the lost ones go again
    top = 2001
    for k in range(1, 20):                                # ACK exactly what was resent
        sent = offsets(ctx, ack(ctx, top + MSS, at=t + 0.06 + k * 0.01))
        top = max([top] + sent)
        if c.snd_una >= c.recover:
            break
    assert c.snd_una >= c.recover and not c.frto and c.info().spurious_rtx_undone == 0
