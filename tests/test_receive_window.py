"""The right edge of the receive window (RFC 9293 3.8.6, 3.10.7.4; RFC 7323 2.4 and
appendix F), where a scaled window meets a full buffer.

- A scaled window is announced in whole units and its edge never moves left (as Linux's
  tcp_select_window), so while the application does not read, each ACK after a segment of
  unaligned length moves the edge right by up to one unit. The buffer has room for that
  (``Settings.rcv_storage``): every byte the peer was offered is taken. Only once that
  slack is used up does the announced edge move left, by less than one unit, and bytes up
  to the furthest edge ever announced are still taken.
- A segment that starts exactly at the right edge is processed for its ACK (RFC 9293's
  "special allowance" for a zero window; Linux's tcp_sequence), its data is not taken.
  Linux puts that edge in the sequence field of its ACKs once its data runs past the
  window (tcp_acceptable_seq), so dropping them would lose the peer's every ACK while our
  window is shut: with a bidirectional transfer, a deadlock.
- A bare FIN at RCV.NXT is taken even in a zero window (Linux's tcp_data_queue).

The peer is played by hand (:class:`tcp_harness.ManualPeer`: no timestamps, no SACK).
"""
from __future__ import annotations

from fasttcp import Settings, State

from tcp_harness import ManualPeer, seq

IRS = 1_000_000
MSS = 1460


def _open(peer_win: int = 65535, peer_wscale=None, **settings):
    """An established passive connection, the peer's SYN with ``peer_wscale`` (and our
    window scaling as settings say). Returns (peer, conn, iss)."""
    from fasttcp.wire import TcpOptions

    settings.setdefault("delayed_ack", 0)            # every data segment is ACKed at once
    p = ManualPeer(**settings)
    lst = p.host.listen(80)
    o = TcpOptions(mss=MSS, wscale=peer_wscale)
    sa, = p.send("S", IRS, 0, peer_win, opts=o)
    assert p.send("A", IRS + 1, sa.seq + 1, peer_win) == []
    c = lst.accept()
    assert c is not None and c.state == State.ESTABLISHED
    return p, c, sa.seq


def _fill(p, iss: int, shift: int, seg_len: int, max_segments: int, furthest: bool):
    """Play a sender that never reads our ACKs' sequence space wrong: it sends segments of
    ``seg_len`` bytes up to the right edge (the newest announced one, or with
    ``furthest`` the furthest ever announced), until the window is shut. Returns the
    list of (offset of RCV.NXT, announced edge) per ACK, and the final offset."""
    nxt = 1
    edge = furthest_edge = 1 + (Settings().rcv_buf if shift else 0)
    edges = []
    for _ in range(max_segments):
        limit = furthest_edge if furthest else edge
        n = min(seg_len, limit - nxt)
        if n <= 0:
            break
        out = p.send("A", IRS + nxt, iss + 1, 65535, data=b"d" * n)
        ack = out[-1]
        assert ack.ack == seq(IRS + nxt + n), (nxt, n, ack)      # every byte offered: taken
        nxt += n
        edge = nxt + (ack.win << shift)
        furthest_edge = max(furthest_edge, edge)
        edges.append((nxt, edge))
    return edges, nxt


def test_a_closing_scaled_window_never_moves_left_and_every_byte_offered_is_taken():
    """1000-byte segments into the default 1 MiB buffer (shift 5), nothing read: each ACK
    rounds the window up, so the edge moves right by 8 bytes a segment; the buffer's slack
    takes those, the window shuts at exactly what was offered, and reading reopens it."""
    p, c, iss = _open(peer_wscale=7)
    s = p.host.settings
    assert s.rcv_wscale == 5 and s.rcv_storage == s.rcv_buf + s.rcv_buf // 16
    edges, nxt = _fill(p, iss, 5, 1000, 2000, furthest=False)
    assert edges[-1][1] == nxt                              # shut: the edge is RCV.NXT
    announced = [e for _, e in edges]
    assert announced == sorted(announced)                   # never left (RFC 7323 2.4)
    assert announced[-1] > 1 + s.rcv_buf                    # it did creep past rcv_buf...
    assert announced[-1] <= 1 + s.rcv_storage               # ...into the slack only
    assert c.readable == nxt - 1
    st = p.host.stats()
    assert st.get("trimmed_to_window", 0) == 0 and st.get("drop_out_of_window", 0) == 0
    # Reading it all opens the window again: a window update at once.
    got = 0
    while c.readable:
        got += len(c.recv(1 << 20))
    assert got == nxt - 1
    upd, = p.tick(p.now + 0.001)
    assert upd.ack == seq(IRS + nxt) and upd.win << 5 >= s.rcv_buf - 32


def test_past_the_slack_the_announced_edge_moves_left_by_less_than_a_unit():
    """255-byte segments (255 = 7 units + 31) creep 31 bytes a segment: the slack runs out
    halfway. From then on the announced edge moves left (by less than one 32-byte unit,
    RFC 7323 appendix F) rather than past the buffer; a sender that still sends up to
    the furthest edge it was ever offered has all of it taken, and the buffer ends full."""
    p, c, iss = _open(peer_wscale=7)
    s = p.host.settings
    edges, nxt = _fill(p, iss, 5, 255, 20000, furthest=True)
    announced = [e for _, e in edges]
    backs = [a - b for a, b in zip(announced, announced[1:]) if b < a]
    assert backs, "the slack never ran out: the test does not reach its case"
    assert max(backs) < 32
    assert max(announced) <= 1 + s.rcv_storage
    assert nxt - 1 == c.readable
    assert s.rcv_storage - 32 < c.readable <= s.rcv_storage     # full to the last unit
    assert p.host.stats().get("trimmed_to_window", 0) == 0


def test_an_ack_at_the_right_edge_is_processed():
    """A pure ACK whose sequence number is RCV.NXT + RCV.WND (as Linux sends once its data
    runs past our window, tcp_acceptable_seq) acknowledges our data: not dropped as out of
    the window."""
    p, c, iss = _open(rcv_buf=4000)
    c.send(b"o" * 500)
    data, = p.tick(p.now + 0.01)
    assert len(data.data) == 500
    ack, = p.send("A", IRS + 1, iss + 1, 65535, data=b"a" * 1000)
    assert (ack.ack, ack.win) == (seq(IRS + 1001), 3000)
    assert c.info().unacked == 500
    # The peer's segment 1001..4000 is on its way; its ACK of our data carries seq 4001.
    assert p.send("A", IRS + 4001, iss + 501, 65535) == []
    assert c.info().unacked == 0
    st = p.host.stats()
    assert st["ack_at_window_edge"] == 1 and st.get("drop_out_of_window", 0) == 0


def test_a_data_segment_into_a_zero_window_still_delivers_its_ack():
    """RFC 9293 3.10.7.4: with RCV.WND zero "special allowance should be made to accept
    valid ACKs". The peer's retransmission (or probe) at RCV.NXT acknowledges our data;
    its own bytes are not taken, and our ACK says the window is still shut."""
    p, c, iss = _open(rcv_buf=4000)
    ack, = p.send("A", IRS + 1, iss + 1, 65535, data=b"a" * 4000)
    assert (ack.ack, ack.win) == (seq(IRS + 4001), 0)
    c.send(b"o" * 700)
    data, = p.tick(p.now + 0.01)
    assert len(data.data) == 700
    out = p.send("A", IRS + 4001, iss + 701, 65535, data=b"b" * 100)
    assert [s.t[1:] for s in out] == [(seq(iss + 701), seq(IRS + 4001), 0, 0)]
    assert c.info().unacked == 0                     # our 700 bytes: acknowledged
    assert c.readable == 4000                        # its 100 bytes: not taken
    assert p.host.stats().get("drop_out_of_window", 0) == 0


def test_a_bare_fin_is_taken_in_a_zero_window():
    """The peer filled our window, then closed: its FIN takes no buffer, so it is taken
    (as Linux's tcp_data_queue does) and the connection moves to CLOSE-WAIT."""
    p, c, iss = _open(rcv_buf=4000)
    ack, = p.send("A", IRS + 1, iss + 1, 65535, data=b"a" * 4000)
    assert ack.win == 0
    out = p.send("FA", IRS + 4001, iss + 1, 65535)
    assert [s.t for s in out] == [("A", seq(iss + 1), seq(IRS + 4002), 0, 0)]
    assert c.state == State.CLOSE_WAIT
    assert len(c.recv(8000)) == 4000 and c.eof
