"""Zero windows must not pin connections (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17, RFC 5482).

The persist timer backs off up to max_rto however the peer answers; an orphan (closed by the
application with data still to deliver) gives up after ``orphan_retries`` probes and the host
holds at most ``max_orphans`` of them (Linux tcp_orphan_retries / tcp_max_orphans); a live
connection stays while the peer answers its probes, gives up after ``max_retries`` unanswered
ones, and ``user_timeout`` (Linux TCP_USER_TIMEOUT) ends one whose window stays shut.
"""
from __future__ import annotations

import gc
import weakref

import pytest

from fasttcp import Host, State
from fasttcp.tcp.errors import ConnectionAborted, ConnectionTimedOut

from tcp_harness import ManualPeer, Net, Seg

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
DAY = 86400.0


def _zero_window_peer(**settings):
    """A ManualPeer (no timestamps, no SACK) with an established connection whose
    application queued 5000 bytes; the peer took the first 536 and shut its window.
    Returns (peer, conn, ack) with ``ack`` the peer's acknowledgment number."""
    p = ManualPeer(**settings)
    lst = p.host.listen(80)
    sa, = p.send("S", 1000, 0, 65535)
    p.send("A", 1001, sa.seq + 1, 536, at=0.05)
    c = lst.accept()
    c.send(b"x" * 5000)
    first, = p.tick()
    assert len(first.data) == 536
    ack = first.seq + 536
    assert p.send("A", 1001, ack, 0, at=0.1) == []
    return p, c, ack


def _probe_times(p, answer, until, max_probes=200):
    """Run the host's timers until ``until``; every probe (a segment with one byte) is
    answered by ``answer(seg)`` (None: stay silent). Returns the probes' send times."""
    times = []
    for _ in range(max_probes):
        t, out = p.next_timer(limit=until)
        if t is None:
            break
        for s in out:
            if len(s.data) == 1:
                times.append(s.time)
                if answer is not None:
                    answer(s)
    return times


def test_persist_backs_off_even_when_the_peer_takes_each_probe_byte():
    """A receiver whose real window is below its scale unit advertises 0 but takes the
    probe byte (its ACK also yields an RTT sample): the probe interval must still double
    up to max_rto (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), not restart at the RTO."""
    p, c, ack = _zero_window_peer(max_rto=60.0)
    acked = [ack]

    def take_byte(s: Seg) -> None:
        acked[0] = s.seq + 1
        p.send("A", 1001, acked[0], 0)

    times = _probe_times(p, take_byte, until=2000.0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[:6] == pytest.approx([0.4, 0.8, 1.6, 3.2, 6.4, 12.8], rel=0.2)
    assert max(gaps) == pytest.approx(60.0) and all(g <= 60.0 + 1e-9 for g in gaps)
    assert len(times) < 45                       # was one per ~0.2 s: thousands
    assert c.state == State.ESTABLISHED          # the peer answers: it stays (4.2.2.17)
    # The persist backoff is not the RTO's: the retransmission timeout is unchanged.
    assert c.rtt.rto < 1.0


def test_persist_backs_off_when_probes_are_answered_with_a_zero_window():
    p, c, ack = _zero_window_peer(max_rto=60.0)
    times = _probe_times(p, lambda s: p.send("A", 1001, ack, 0), until=DAY)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[:4] == pytest.approx([0.4, 0.8, 1.6, 3.2], rel=0.2)
    assert all(g <= 60.0 + 1e-9 for g in gaps) and gaps[-1] == pytest.approx(60.0)
    assert c.state == State.ESTABLISHED
    # The window opens: data flows at once and the backoff is gone (Linux tcp_ack_probe).
    out = p.send("A", 1001, ack, 65535, at=p.now + 1.0)
    assert sum(len(s.data) for s in out) >= 536
    assert c.probes_out == 0


def test_live_connection_gives_up_after_max_retries_unanswered_probes():
    p, c, ack = _zero_window_peer(max_retries=5)
    times = _probe_times(p, None, until=DAY)
    assert len(times) == 5
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert p.host.stats()["persist_timeouts"] == 1


@pytest.mark.parametrize("answering", [True, False])
def test_orphan_gives_up_after_orphan_retries_probes(answering):
    p, c, ack = _zero_window_peer(orphan_retries=4)
    c.close()                                    # FIN-WAIT-1, 4464 bytes never sent
    assert c.state == State.FIN_WAIT_1 and p.host.stats()["orphans"] == 1
    answer = (lambda s: p.send("A", 1001, ack, 0)) if answering else None
    times = _probe_times(p, answer, until=DAY)
    assert len(times) == 4
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    st = p.host.stats()
    assert st["orphan_probe_aborts"] == 1 and st["orphans"] == 0 and st["connections"] == 0
    assert c._send_ring is None                  # the buffer went back to the pool
    assert st["pooled_send_rings"] == 1


def test_orphan_retries_also_bound_retransmissions():
    """Linux tcp_write_timeout: an orphan's RTO retransmissions stop at orphan_retries."""
    p, c, ack = _zero_window_peer(orphan_retries=3, max_retries=15)
    p.send("A", 1001, ack, 65535)                # window open: data in flight, then silence
    c.close()
    times = []
    for _ in range(100):
        t, out = p.next_timer(limit=DAY)
        if t is None:
            break
        times += [s.time for s in out if s.data]
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert p.host.stats()["orphan_retry_aborts"] == 1
    assert times[-1] < 10.0                      # 3 backed-off RTOs, not 15 (~15 min)


def test_max_orphans_resets_new_orphans_at_once():
    p = ManualPeer(max_orphans=1)
    lst = p.host.listen(80)
    conns = []
    for port in (40000, 40001):
        sa, = p.send("S", 1000, 0, 65535, sport=port)
        p.send("A", 1001, sa.seq + 1, 0, sport=port)
        conns.append(lst.accept())
    for c in conns:
        c.send(b"y" * 100)
        c.close()
    first, second = conns
    assert first.state == State.FIN_WAIT_1 and first.orphan
    # Linux tcp_close with tcp_too_many_orphans: RST and CLOSED.
    assert second.state == State.CLOSED and isinstance(second.error, ConnectionAborted)
    assert [s.flags for s in p.tick() if s.dport == 40001] == ["R"]
    st = p.host.stats()
    assert st["orphans_reset"] == 1 and st["orphans"] == 1


def test_user_timeout_ends_a_connection_behind_an_answered_zero_window():
    """RFC 5482 / TCP_USER_TIMEOUT: the peer answers every probe with window 0, so only
    the user timeout ends it; measured from when the window shut."""
    p, c, ack = _zero_window_peer(user_timeout=300.0)
    times = _probe_times(p, lambda s: p.send("A", 1001, ack, 0), until=DAY)
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert 300.0 <= p.now - 0.1 < 300.0 + 60.0 + 1.0
    assert p.host.stats()["user_timeouts"] == 1
    assert times[-1] < 300.1


def test_user_timeout_ends_unacknowledged_retransmissions():
    p, c, ack = _zero_window_peer(user_timeout=5.0, max_retries=15)
    p.send("A", 1001, ack, 65535)                # data in flight, then the peer is silent
    for _ in range(100):
        t, _out = p.next_timer(limit=DAY)
        if t is None:
            break
    assert c.state == State.CLOSED and isinstance(c.error, ConnectionTimedOut)
    assert 5.0 <= p.now - 0.1 <= 5.0 + 6.4
    assert p.host.stats()["user_timeouts"] == 1


def _zero_window_hosts(n, client_settings=None):
    """n connections from CLIENT to SERVER, whose application never reads: the server's
    4 KiB windows fill and shut, 12 KiB stay in each client send ring."""
    a = Host(CLIENT, isn_secret=bytes(16), snd_buf=16384, **(client_settings or {}))
    b = Host(SERVER, isn_secret=bytes(range(16)), rcv_buf=4096, syn_backlog=n,
             max_connections=n + 10)
    silent = set()
    net = Net(a, b, latency=0.005,
              drop=lambda seg, name: name == "b" and seg.dport in silent)
    lst = b.listen(80, backlog=n)
    conns = [a.connect((SERVER, 80)) for _ in range(n)]
    net.run(lambda: len(lst) == n, max_steps=1000 + 10 * n)
    peers = [lst.accept() for _ in range(n)]
    assert all(s is not None for s in peers)
    for c in conns:
        assert c.send(b"z" * 16384) == 16384
    net.run(lambda: all(c.snd_wnd == 0 and c.snd_una > 1 for c in conns), max_steps=1000 + 50 * n)
    return net, a, conns, peers, silent


def test_24h_of_2000_zero_window_orphans_returns_to_baseline():
    """The issue's run: 2,000 connections closed by the application with data unsent,
    behind peers that shut their window; half the peers answer every probe, half are
    silent. After 24 h of virtual time the host holds nothing of them: no connection,
    orphan or send-ring bytes; at most a pool's worth of rings kept for reuse."""
    n = 2000
    net, a, conns, peers, silent = _zero_window_hosts(n)
    before = a.stats()
    assert before["connections"] == n
    assert sum(len(c._send_ring) for c in conns) == n * (16384 - 4096)
    silent.update(c.local_address[1] for c in conns[::2])
    for c in conns:
        c.close()
    assert a.stats()["orphans"] == n
    refs = [weakref.ref(c) for c in conns]
    del conns, c
    net.run(deadline=net.now + DAY, max_steps=200 * n)
    st = a.stats()
    assert st["connections"] == 0 and st["orphans"] == 0, st
    assert st["orphan_probe_aborts"] == n
    assert st["window_probes"] <= n * 8          # orphan_retries (8) each
    assert st["pooled_send_rings"] <= 64
    assert a.poll_at() is None                   # no timer left
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    assert all(s.state == State.ESTABLISHED for s in peers)


def test_24h_of_live_zero_window_connections():
    """Live connections: those whose peers answer stay (RFC 1122 4.2.2.17), probing at
    most once per max_rto; silent peers time out after max_retries probes; with a user
    timeout every stuck connection ends."""
    n = 20
    net, a, conns, peers, silent = _zero_window_hosts(n)
    silent.update(c.local_address[1] for c in conns[::2])
    net.run(deadline=net.now + DAY, max_steps=20000 * n)
    answered, quiet = conns[1::2], conns[::2]
    assert all(c.state == State.ESTABLISHED for c in answered)
    assert all(c.state == State.CLOSED for c in quiet)
    st = a.stats()
    assert st["persist_timeouts"] == n // 2
    # At most one probe per max_rto (60 s) after the backoff: ~1,440 per day each.
    assert st["window_probes"] <= n // 2 * (DAY / 60 + 20) + n // 2 * 15

    net2, a2, conns2, _, silent2 = _zero_window_hosts(n, dict(user_timeout=600.0))
    t0 = net2.now
    net2.run(deadline=t0 + DAY, max_steps=200 * n)
    assert all(c.state == State.CLOSED for c in conns2)
    assert a2.stats()["user_timeouts"] == n and a2.stats()["connections"] == 0


def test_persist_backoff_ends_when_the_window_opens_through_the_fast_path():
    """The window reopens in two steps: first too little for a full segment (the backoff
    stays, Linux tcp_ack_probe), then fully by ACKs that header prediction takes. The
    next zero window starts probing at the RTO again, not where the old backoff was."""
    p = ManualPeer()
    lst = p.host.listen(80)
    sa, = p.send("S", 1000, 0, 600)
    p.send("A", 1001, sa.seq + 1, 600, at=0.05)
    c = lst.accept()
    c.send(b"x" * 5000)
    first, = p.tick()
    ack = first.seq + len(first.data)
    p.send("A", 1001, ack, 0, at=0.1)
    _probe_times(p, lambda s: p.send("A", 1001, ack, 0), until=5.0)
    assert c.probes_out >= 3
    out = p.send("A", 1001, ack, 300)            # half the largest window: 300 bytes go
    assert [len(s.data) for s in out] == [300] and c.probes_out >= 3
    ack += 300
    out = p.send("A", 1001, ack, 600)            # a plain ACK: the fast path's
    assert c.probes_out == 0
    nxt = [s for s in out if s.data]
    ack = nxt[-1].seq + len(nxt[-1].data)
    p.send("A", 1001, ack, 0)                    # shut again
    t0 = p.now
    times = _probe_times(p, lambda s: p.send("A", 1001, ack, 0), until=t0 + 10.0)
    assert times[0] - t0 == pytest.approx(c.rtt.rto, rel=0.05)
