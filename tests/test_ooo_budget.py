"""The host-wide budget of out-of-order bytes (settings.ooo_budget).

Each connection's out-of-order data is bounded by rcv_buf; the budget bounds their sum. Under
pressure a connection drops its own newest out-of-order data first (Linux
tcp_prune_ofo_queue: from the highest sequence down to the arriving segment), its SACK blocks
stop naming what it dropped (RFC 2018 section 8 allows the receiver to renege), and a segment
that still does not fit is dropped and counted. The sender side keeps SACKed data until it is
cumulatively acknowledged and resends it when the receiver reneged.
"""
from __future__ import annotations

import gc

from fasttcp import Host
from fasttcp.storage import OooBudget, Reassembler
from fasttcp.wire import TcpOptions

from tcp_harness import MASK, ManualPeer, ts_passive_open

U = 1000                    # segment size of the scripted peers


# --- the reassembler's accounting ---------------------------------------------------------

def test_reassembler_keeps_the_shared_account_in_step():
    b = OooBudget(1 << 20)
    r1, r2 = Reassembler(1 << 16, 8, b), Reassembler(1 << 16, 8, b)
    r1.add(1000, b"a" * 500)
    r1.add(3000, b"b" * 500)
    r2.add(2000, b"c" * 700)
    r2.add(2300, b"c" * 700)                     # overlaps: only 300 bytes are new
    assert (r1.held_ooo, r2.held_ooo, b.held) == (1000, 1000, 2000)
    assert r1.add(0, b"x" * 1000) == 1500        # fills the first hole: 500 delivered
    assert (r1.held_ooo, b.held) == (500, 1500)
    r2.reset()
    assert b.held == 500
    del r1
    gc.collect()
    assert b.held == 0                           # freed with its data


def test_missing_counts_only_bytes_not_yet_held():
    r = Reassembler(1 << 16, 8)
    r.add(1000, b"a" * 1000)
    assert r.missing(500, 2500) == 1000
    assert r.missing(1200, 1800) == 0
    assert r.missing(0, 100) == 100
    r.add(0, b"x" * 100)
    assert r.missing(0, 100) == 0                # already delivered
    assert r.missing(60000, 70000) == (1 << 16) - 60000     # clipped to the window


def test_prune_drops_the_newest_data_above_the_floor_first():
    b = OooBudget(1 << 20)
    r = Reassembler(1 << 16, 8, b)
    for start in (1000, 3000, 5000):
        r.add(start, b"d" * 1000)
    assert r.prune(2500, 1500) == 1500           # all of [5000, 6000), half of the next
    assert r.ranges() == [(1000, 2000), (3000, 3500)]
    assert r.prune(3200, 10_000) == 300          # never below the floor
    assert r.ranges() == [(1000, 2000), (3000, 3200)]
    assert b.held == r.held_ooo == 1200 and b.pruned_bytes == 1800
    # What is left is intact and delivered once the hole fills.
    r.add(0, b"x" * 1000)
    assert r.read() == b"x" * 1000 + b"d" * 1000


# --- the host: a budget for all its connections -------------------------------------------

def _peers_with_holes(n, per_conn, **settings):
    """One host with n connections from a scripted peer, each sent ``per_conn`` bytes out
    of order (the first segment missing). Returns (peer, connections, the first segments
    to send: the holes)."""
    p = ManualPeer(**settings)
    lst = p.host.listen(80, backlog=n)
    conns = []
    for i in range(n):
        port = 40000 + i
        sa, = p.send("S", 1000, 0, 65535, sport=port)
        p.send("A", 1001, sa.seq + 1, 65535, sport=port)
        conns.append((port, sa.seq + 1, lst.accept()))
    for port, ack, _c in conns:
        for k in range(1, 1 + per_conn // U):
            p.send("A", 1001 + k * U, ack, 65535, data=bytes([k % 256]) * U, sport=port)
    return p, conns


def test_out_of_order_bytes_of_all_connections_stay_within_the_budget():
    """The issue's case, scaled down: 40 connections each sent 32 KiB out of order would
    hold 1.25 MiB; with a 256 KiB budget the host holds at most that, counts what it
    refused, and every stream still completes once the holes fill."""
    budget = 256 * 1024
    p, conns = _peers_with_holes(40, 32 * U, rcv_buf=64 * 1024, ooo_budget=budget)
    st = p.host.stats()
    held = sum(c._reasm.held_ooo for _, _, c in conns if c._reasm is not None)
    assert held == st["ooo_bytes"] <= budget
    assert held > budget - 32 * U                # the budget is used, not refused wholesale
    assert st["drop_ooo_budget"] > 0
    for port, ack, c in conns:
        p.send("A", 1001, ack, 65535, data=b"\0" * U, sport=port)     # the hole
        for k in range(1, 33):                   # the peer resends what was refused
            p.send("A", 1001 + k * U, ack, 65535, data=bytes([k % 256]) * U, sport=port)
        want = b"".join(bytes([k % 256]) * U for k in range(33))
        assert c.recv(1 << 20) == want
    assert p.host.stats()["ooo_bytes"] == 0


def test_a_lower_segment_prunes_the_connections_newest_out_of_order_data():
    """Linux tcp_prune_ofo_queue: under pressure the data furthest ahead goes first (the
    sender gets to it last), in a batch of at least rcv_buf / 8; the arriving lower
    segment is kept. A segment above everything held finds nothing to prune: dropped."""
    p, conns = _peers_with_holes(1, 0, ooo_budget=20 * U, rcv_buf=64 * 1024)
    port, ack, c = conns[0]
    for k in range(4, 24):
        p.send("A", 1001 + k * U, ack, 65535, data=b"y" * U, sport=port)
    assert c._reasm.ranges() == [(4 * U, 24 * U)]
    p.send("A", 1001 + 30 * U, ack, 65535, data=b"h" * U, sport=port)   # higher: refused
    assert p.host.stats()["drop_ooo_budget"] == 1
    p.send("A", 1001 + 2 * U, ack, 65535, data=b"z" * U, sport=port)    # lower: kept
    st = p.host.stats()
    assert st["ooo_prunes"] == 1 and st["drop_ooo_budget"] == 1
    assert c._reasm.ranges() == [(2 * U, 3 * U), (4 * U, 24 * U - 8192)]
    assert st["ooo_pruned_bytes"] == 8192 and st["ooo_bytes"] == 20 * U + U - 8192


def test_sack_blocks_stop_naming_pruned_data():
    """RFC 2018 section 8: after reneging, the receiver's SACK blocks describe only what
    it holds."""
    ctx = ts_passive_open(ooo_budget=6 * U, rcv_buf=64 * 1024)
    p = ctx.p
    t = 0.1
    for k in range(5, 11):
        ack, = ctx.send("A", 1 + k * U, 200, b"s" * U, at=t)
        t += 0.01
    assert ack.opts.sack == ((ctx.r(1 + 5 * U), ctx.r(1 + 11 * U)),)
    ack, = ctx.send("A", 1 + 2 * U, 201, b"t" * U, at=t)
    # [5U, 11U) went whole (less than the batch of rcv_buf / 8) to make room for [2U, 3U).
    assert set(ack.opts.sack) == {(ctx.r(1 + 2 * U), ctx.r(1 + 3 * U))}
    assert p.host.stats()["ooo_pruned_bytes"] == 6 * U


def test_the_sender_resends_data_the_receiver_reneged_on():
    """RFC 2018 section 8 / RFC 6675: SACKed data stays in the send buffer until it is
    cumulatively acknowledged; when the receiver drops it, the retransmission timeout
    clears the scoreboard and the data goes again."""
    ctx = ts_passive_open(rcv_buf=64 * 1024)
    p, c = ctx.p, ctx.c
    data = bytes(range(256)) * 40                # 10240 bytes
    c.send(data)
    segs = [s for s in p.tick(0.1) if s.data]
    una = segs[0].seq
    mss = len(segs[0].data)
    assert len(segs) >= 4
    # The peer SACKs everything past the first segment, then reneges: it ACKs the first
    # segment only, with no SACK block.
    top = segs[-1].seq + len(segs[-1].data)
    tsv = 300
    ctx.send("A", 1, tsv, ack=1, sack=((seq_add(una, mss), top),), at=0.15)
    p.send("A", ctx.r(1), seq_add(una, mss), 65535,
           opts=TcpOptions(timestamps=(tsv + 1, ctx.echo())), at=0.16)
    assert len(c._send_ring) == len(data) - mss  # not released: only cumulatively acked
    resent = []
    for _ in range(20):
        t, out = p.next_timer(limit=30.0)
        if t is None:
            break
        resent += [s for s in out if s.data]
        if resent:
            break
    assert resent and resent[0].seq == seq_add(una, mss)
    assert resent[0].data == data[mss:mss + len(resent[0].data)]
    assert p.host.stats()["timeouts"] >= 1


def seq_add(a: int, k: int) -> int:
    return (a + k) & MASK


def test_default_budget_and_figures_in_stats():
    h = Host("10.0.0.1")
    st = h.stats()
    assert st["ooo_bytes"] == 0 and st["ooo_pruned_bytes"] == 0
    assert h.ooo_budget.limit == 64 << 20
