"""The congestion state after the SYN or SYN-ACK had to be retransmitted.

RFC 5681 3.1 sets the initial window to one segment after a lost SYN or SYN-ACK; RFC 6928
section 2 (the 10-segment IW fasttcp uses) RECOMMENDS not doing so unless there was more
than one SYN or SYN-ACK retransmission (the 1 s initial RTO of RFC 6298 makes a single one
often spurious). Linux does exactly that (tcp_init_transfer: cwnd 1 only when
total_retrans > 1), and its tcp_init_metrics restores ssthresh to "infinite": the handshake's
retransmission timer says nothing about the path's capacity. Both ends are tested, with a
hand-played peer (exact segments and times).
"""
from __future__ import annotations

import pytest

from fasttcp import State
from tcp_harness import PEER_IP, ManualPeer, opts

INFINITE = 2**31 - 1          # congestion.INFINITE_SSTHRESH as info() reports it
IRS = 1_000_000              # the peer's initial sequence number


def _active(retransmissions: int):
    p = ManualPeer(initial_rto=1.0, mss=1000)
    c = p.host.connect((PEER_IP, p.port), local_port=p.host_port)
    syn, = p.tick(0.0)
    got = p.advance(0.5 + sum(2.0 ** i for i in range(retransmissions)))
    assert [s.flags for s in got] == ["S"] * retransmissions
    p.send("SA", IRS, syn.seq + 1, 65535, opts=opts(1000, 0), at=p.now + 0.1)
    assert c.state == State.ESTABLISHED
    return p, c, syn


def _passive(retransmissions: int):
    p = ManualPeer(initial_rto=1.0, mss=1000)
    lst = p.host.listen(80)
    sa, = p.send("S", IRS, 0, 65535, opts=opts(1000, 0), at=0.0)
    got = p.advance(0.5 + sum(2.0 ** i for i in range(retransmissions)))
    assert [s.flags for s in got] == ["SA"] * retransmissions
    assert p.send("A", IRS + 1, sa.seq + 1, 65535, at=p.now + 0.1) == []
    c = lst.accept()
    assert c is not None and c.state == State.ESTABLISHED
    return p, c, sa


@pytest.mark.parametrize("side", [_active, _passive], ids=["active", "passive"])
def test_one_handshake_retransmission_keeps_the_initial_window(side):
    """One SYN (SYN-ACK) retransmission: the full IW goes out at once, ssthresh stays
    unlimited (before: one segment, and ssthresh 2 segments from the RTO's reduction)."""
    p, c, first = side(1)
    info = c.info()
    assert info.cwnd == 10 * 1000, info
    assert info.ssthresh == INFINITE, info
    c.send(bytes(20_000))
    out = p.tick(p.now)
    assert [len(s.data) for s in out] == [1000] * 10


@pytest.mark.parametrize("side", [_active, _passive], ids=["active", "passive"])
def test_two_handshake_retransmissions_start_from_one_segment(side):
    """More than one retransmission: the initial window is one segment (RFC 5681 3.1, as
    RFC 6928 2 allows and Linux does), and still no ssthresh cut."""
    p, c, first = side(2)
    info = c.info()
    assert info.cwnd == 1000, info
    assert info.ssthresh == INFINITE, info
    c.send(bytes(20_000))
    out = p.tick(p.now)
    assert [len(s.data) for s in out] == [1000]
