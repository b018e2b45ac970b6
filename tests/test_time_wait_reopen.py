"""A new SYN for a 4-tuple in TIME-WAIT (RFC 1122 4.2.2.13, RFC 6191).

When fasttcp closes first (an HTTP server with ``Connection: close``) it holds TIME-WAIT;
a client that reuses its port must get a new connection at once, not a challenge ACK and a
SYN retransmission a second later. As Linux (tcp_timewait_state_process, TCP_TW_SYN): a
SYN beyond the old incarnation (a newer timestamp, or without timestamps a sequence
number beyond RCV.NXT) kills the TIME-WAIT TCB and goes to the listener, and the new ISS
is the old SND.NXT + 65535 + 2. Any other SYN gets the TIME-WAIT ACK and changes nothing.
"""
from __future__ import annotations

from fasttcp import Host, State
from fasttcp.wire import TcpOptions
from tcp_harness import MASK, TS_IRS, ManualPeer, Net, TsConn


def _server_time_wait(**settings) -> TsConn:
    """The peer opens to the host's listener (``ctx.lst``; timestamps unless ``settings``
    say otherwise), then the host (server) closes first and reaches TIME-WAIT; the peer's
    FIN is at offset 1 and was acknowledged: RCV.NXT is the peer's offset 2, SND.NXT ours."""
    settings.setdefault("timestamps", True)
    p = ManualPeer(**settings)
    lst = p.host.listen(p.host_port)
    sa, = p.send("S", TS_IRS, 0, 65535, opts=TcpOptions(mss=1460, timestamps=(100, 0)))
    c, = p.host.connections()
    ctx = TsConn(p, c, sa.seq, TS_IRS)
    ctx.send("A", 1, 101 if c.ts_ok else None, at=0.05)
    assert lst.accept() is c and c.state == State.ESTABLISHED
    ctx.lst = lst
    c.close()
    fin, = p.tick(0.1)
    assert fin.flags == "FA"
    ts = 200 if c.ts_ok else None
    ack, = ctx.send("FA", 1, ts, ack=2, at=0.11)
    assert ack.flags == "A" and c.state == State.TIME_WAIT
    assert p.host.stats()["time_wait"] == 1
    return ctx


def _syn(ctx: TsConn, seq: int, tsval, at: float):
    o = TcpOptions(mss=1460, timestamps=None if tsval is None else (tsval, 0))
    return ctx.p.send("S", seq, 0, 65535, opts=o, at=at)


def test_syn_with_newer_timestamp_reopens_time_wait():
    """RFC 6191 2: timestamps in both incarnations and a newer TSval: the new SYN is
    taken whatever its sequence number (here below the old RCV.NXT), and answered with a
    SYN,ACK whose ISS is the old SND.NXT + 65537 (Linux)."""
    ctx = _server_time_wait()
    p, old = ctx.p, ctx.c
    old_snd_nxt = ctx.s(2)
    out = _syn(ctx, ctx.r(-1000), 201, at=0.2)
    assert [s.flags for s in out] == ["SA"]
    sa = out[0]
    assert sa.seq == (old_snd_nxt + 65535 + 2) & MASK
    assert sa.ack == ctx.r(-1000 + 1)
    assert old.state == State.CLOSED and old.error is None
    new, = p.host.connections()
    assert new is not old and new.state == State.SYN_RECEIVED
    st = p.host.stats()
    assert st["time_wait_reopened"] == 1 and st["time_wait"] == 0
    assert "challenge_acks_out" not in st
    # The handshake completes and the listener hands out the new connection.
    p.send("A", ctx.r(-1000 + 1), sa.seq + 1, 65535,
           opts=TcpOptions(timestamps=(202, sa.opts.timestamps[0])), at=0.25)
    assert ctx.lst.accept() is new and new.state == State.ESTABLISHED


def test_syn_with_old_timestamp_keeps_time_wait():
    """A SYN whose TSval is older than TS.Recent is refused even with a higher sequence
    number (PAWS, RFC 7323 5.3), and one with TS.Recent itself at or below RCV.NXT is not
    beyond the old incarnation: TIME-WAIT stays, the SYN gets the TIME-WAIT ACK."""
    ctx = _server_time_wait()
    p, c = ctx.p, ctx.c
    for k, (off, tsval) in enumerate(((5000, 150), (5000, 199), (2, 200), (-7, 200))):
        out = _syn(ctx, ctx.r(off), tsval, at=0.2 + k / 10)
        assert [s.flags for s in out] == ["A"], (off, tsval, out)
        assert out[0].seq == ctx.s(2) and out[0].ack == ctx.r(2)
        assert c.state == State.TIME_WAIT and p.host.connections() == [c]
    assert "time_wait_reopened" not in p.host.stats()


def test_syn_with_same_timestamp_and_higher_sequence_number_reopens():
    """As Linux: a SYN with TS.Recent itself (a kernel client's next SYN within the same
    millisecond) but a sequence number beyond RCV.NXT opens the new incarnation."""
    ctx = _server_time_wait()
    p, c = ctx.p, ctx.c
    out = _syn(ctx, ctx.r(3), 200, at=0.2)
    assert [s.flags for s in out] == ["SA"] and out[0].ack == ctx.r(4)
    assert c.state == State.CLOSED and p.host.stats()["time_wait_reopened"] == 1


def test_without_timestamps_a_syn_beyond_rcv_nxt_reopens():
    """RFC 1122 4.2.2.13: without timestamps the SYN's sequence number decides: at or
    below RCV.NXT the TIME-WAIT stays (an ACK), beyond it a new connection opens."""
    ctx = _server_time_wait(timestamps=False)
    p, c = ctx.p, ctx.c
    assert not c.ts_ok
    for k, off in enumerate((2, 1, -5000)):
        out = _syn(ctx, ctx.r(off), None, at=0.2 + k / 10)
        assert [s.flags for s in out] == ["A"], (off, out)
        assert c.state == State.TIME_WAIT
    out = _syn(ctx, ctx.r(3), None, at=0.6)
    assert [s.flags for s in out] == ["SA"]
    assert out[0].seq == (ctx.s(2) + 65537) & MASK and out[0].ack == ctx.r(4)
    assert c.state == State.CLOSED
    assert [x.state for x in p.host.connections()] == [State.SYN_RECEIVED]


def test_no_listener_keeps_time_wait():
    """Without a listener on the port (Linux: TCP_TW_SYN falls through to the TIME-WAIT
    ACK) the SYN reopens nothing."""
    ctx = _server_time_wait()
    c = ctx.c
    ctx.lst.close()
    out = _syn(ctx, ctx.r(5000), 300, at=0.2)
    assert [s.flags for s in out] == ["A"]
    assert c.state == State.TIME_WAIT


def test_syn_ack_or_rst_in_time_wait_reopens_nothing():
    """Only a plain SYN opens: a SYN,ACK or a SYN,RST goes through TIME-WAIT's checks."""
    ctx = _server_time_wait()
    p, c = ctx.p, ctx.c
    for k, flags in enumerate(("SA", "SR")):
        p.send(flags, ctx.r(5000), ctx.s(2), 65535,
               opts=TcpOptions(timestamps=(300 + k, 0)), at=0.2 + k / 10)
        assert c.state == State.TIME_WAIT
    assert "time_wait_reopened" not in p.host.stats()


def test_client_reusing_its_port_reconnects_without_retransmission():
    """Two hosts: the server closes first (TIME-WAIT), the client opens again from the
    same port 100 ms later. The new SYN is taken at once: ESTABLISHED after one round
    trip, no SYN retransmitted, no challenge ACK; and so for 20 connections in a row."""
    for ts in (True, False):
        _reconnect_20_times(ts)


def _reconnect_20_times(ts: bool) -> None:
    a = Host("10.0.0.1", isn_secret=bytes(16), timestamps=ts)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), timestamps=ts)
    net = Net(a, b, latency=0.001)
    lst = b.listen(80)
    for i in range(20):
        ca = a.connect(("10.0.0.2", 80), local_port=40000)
        t0 = net.now
        net.run(lambda: len(lst) > 0, deadline=t0 + 5.0, max_steps=1000)
        cb = lst.accept()
        assert cb is not None and ca.state == State.ESTABLISHED, (ts, i, ca.state)
        assert net.now - t0 < 0.01, (ts, i)       # one RTT, not an RTO
        cb.close()                                # the server closes first
        net.run(lambda c=ca, s=cb: s.state == State.TIME_WAIT and c.state == State.CLOSE_WAIT,
                deadline=net.now + 1.0, max_steps=1000)
        ca.close()
        net.run(lambda c=ca: c.state == State.CLOSED, deadline=net.now + 1.0, max_steps=1000)
        assert cb.state == State.TIME_WAIT
        net.now = net.now + 0.1
    sa, sb = a.stats(), b.stats()
    assert sb["time_wait_reopened"] == 19, (ts, sb)
    assert "retransmitted_segments" not in sa and "timeouts" not in sa, sa
    assert "challenge_acks_out" not in sb, sb


def test_time_wait_gives_its_buffers_back():
    """A connection in TIME-WAIT holds no send or receive buffer: they go back to the
    host's pools at once, and the next connection takes them (no new 1 MiB buffers per
    short connection while the old ones wait out 2*MSL). TIME-WAIT still works: a
    retransmitted FIN of the peer is acknowledged."""
    p = ManualPeer()
    lst = p.host.listen(80)
    irs = 7000
    sa, = p.send("S", irs, 0, 65535, opts=TcpOptions(mss=1460))
    p.send("A", irs + 1, sa.seq + 1, at=0.01)
    c = lst.accept()
    p.send("PA", irs + 1, sa.seq + 1, data=b"GET", at=0.02)
    assert c.recv() == b"GET"
    c.send(b"OK")
    c.close()
    out = p.tick(0.03)
    assert out[-1].flags == "FPA" and out[-1].data == b"OK", out
    ring, reasm = c._send_ring, c._reasm
    assert ring is not None and reasm is not None
    ack, = p.send("FA", irs + 4, sa.seq + 4, at=0.04)
    assert ack.flags == "A" and c.state == State.TIME_WAIT
    assert c._send_ring is None and c._reasm is None
    again, = p.send("FA", irs + 4, sa.seq + 4, at=0.05)
    assert again.t == ack.t and c.state == State.TIME_WAIT
    sa2, = p.send("S", 90000, 0, 65535, opts=TcpOptions(mss=1460), sport=40001, at=0.06)
    p.send("A", 90001, sa2.seq + 1, sport=40001, at=0.07)
    new = lst.accept()
    assert new is not c and new._ring() is ring and new._reassembler() is reasm
