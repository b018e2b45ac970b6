"""RACK-TLP (RFC 8985), PRR (RFC 6937), RFC 6675 NextSeg in full, and the window on leaving
recovery, each against a hand-played SACK peer: the exact segments fasttcp sends and
when. The path: MSS 1000, a 100 ms round trip (the handshake's sample: SRTT 0.1 s,
RTO 0.3 s), no timestamps, so the numbers read like the issue's (offset 4001 is
``ctx.s(4001)``).
"""
from __future__ import annotations

import random
from typing import List

import pytest

from fasttcp import Host, State
from fasttcp.link import FaultConfig, NetSim
from fasttcp.tcp.congestion import INFINITE_SSTHRESH
from fasttcp.wire import TcpOptions
from tcp_harness import Ctx, ManualPeer, Seg, ts_passive_open

MSS = 1000
RTT = 0.1
IRS = 7_000_000
MODES = ["rack", "dupthresh"]


def sack_open(loss_detection: str = "rack", **settings) -> Ctx:
    """A listening host (SACK on, timestamps off) accepts the peer's SYN (MSS 1000,
    SACK-permitted) at t=0; the peer's ACK arrives at t=RTT."""
    if loss_detection != "rack":                  # the default
        settings["loss_detection"] = loss_detection
    p = ManualPeer(sack=True, **settings)
    lst = p.host.listen(p.host_port)
    sa, = p.send("S", IRS, 0, 65535, opts=TcpOptions(mss=MSS, sack_permitted=True))
    assert sa.flags == "SA" and sa.opts.sack_permitted
    c, = p.host.connections()
    ctx = Ctx(p, c, sa.seq, IRS)
    assert p.send("A", IRS + 1, ctx.s(1), at=RTT) == []
    assert lst.accept() is c and c.rtt.srtt == pytest.approx(RTT)
    return ctx


def ack(ctx: Ctx, k: int, blocks=(), at=None) -> List[Seg]:
    """The peer acknowledges our offset k with SACK blocks [(a, b)] of our offsets."""
    o = TcpOptions(sack=[(ctx.s(a), ctx.s(b)) for a, b in blocks]) if blocks else None
    return ctx.p.send("A", ctx.r(1), ctx.s(k), opts=o, at=at)


def offsets(ctx: Ctx, segs: List[Seg]) -> List[int]:
    return [(s.seq - ctx.iss) & 0xFFFFFFFF for s in segs]


def send_burst(ctx: Ctx, nbytes: int) -> List[Seg]:
    ctx.c.send(bytes(nbytes))
    return ctx.p.tick()


# ------------------------------------------------------------------------------------------
# Deviation 1: a SACK above a hole, fewer than three duplicates: RACK's reordering window
# ------------------------------------------------------------------------------------------

def test_sack_above_a_hole_retransmits_after_the_reordering_window():
    """4 segments leave at t=0.1; at 0.2 the ACK of the first SACKs the third. RACK (RFC
    8985 6.2): the second was sent before a delivered one, so it is lost once RACK.rtt +
    reo_wnd (min_RTT / 4 = 25 ms) have passed since it was sent: at t=0.225, the RACK
    reordering timer resends it (it was the RTO at t=0.5)."""
    ctx = sack_open()
    out = send_burst(ctx, 4 * MSS)
    assert offsets(ctx, out) == [1, 1001, 2001, 3001] and out[0].time == pytest.approx(0.1)
    assert ack(ctx, 1001, [(2001, 3001)], at=0.2) == []
    t, segs = ctx.p.next_timer()
    assert t == pytest.approx(0.225)
    assert [s.t for s in segs] == [("A", ctx.s(1001), ctx.r(1), segs[0].win, MSS)]
    st = ctx.p.host.stats()
    assert st["sack_recoveries"] == 1 and st["segments_marked_lost"] == 1
    assert "timeouts" not in st


def test_reordering_window_is_zero_after_three_sacked_segments():
    """RFC 8985 6.2 step 4: with DupThresh segments SACKed (and no reordering seen), the
    window is 0: the hole is resent on that ACK, not after a timer."""
    ctx = sack_open()
    send_burst(ctx, 5 * MSS)
    assert ack(ctx, 1001, [(2001, 3001)], at=0.2) == []
    assert ack(ctx, 1001, [(2001, 4001)], at=0.2) == []
    out = ack(ctx, 1001, [(2001, 5001)], at=0.2)
    assert offsets(ctx, out) == [1001] and out[0].time == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------
# Deviation 2: tail loss: a probe at 2 * SRTT
# ------------------------------------------------------------------------------------------

def test_tail_loss_probe_resends_the_last_segment_at_two_srtt():
    """The last two segments (the FIN on the second) are lost whole: no ACK comes. RFC 8985
    7.2-7.3: at PTO = 2 * SRTT (+ 2 ms, Linux) after the last send the last segment goes
    again (TLP);
    before, nothing went until the RTO. The probe's SACK then has RACK repair the rest
    at once (RFC 8985 7.4: no RTO at all)."""
    ctx = sack_open()
    send_burst(ctx, MSS)
    assert ack(ctx, 1001, at=0.2) == []
    ctx.c.send(bytes(2 * MSS))
    ctx.c.close()
    out = ctx.p.tick()
    assert [(s.flags, o) for s, o in zip(out, offsets(ctx, out))] == [("A", 1001),
                                                                      ("FPA", 2001)]
    rto_at = 0.2 + ctx.c.rtt.rto
    t, probe = ctx.p.next_timer()
    assert t == pytest.approx(0.2 + 2 * ctx.c.rtt.srtt + 0.002) and t < rto_at - 0.04
    assert [(s.flags, o, len(s.data)) for s, o in zip(probe, offsets(ctx, probe))] == [
        ("FPA", 2001, MSS)]
    assert ctx.c.info().tlp_probes == 1 and ctx.p.host.stats()["tlp_probes"] == 1
    # The probe arrives: ACK 1001, SACK 2001:3002 (its data and FIN). 1001 is lost by
    # RACK (sent before the probe, more than RACK.rtt ago): resent at once.
    rtx = ack(ctx, 1001, [(2001, 3002)], at=t + RTT)
    assert offsets(ctx, rtx) == [1001]
    assert ack(ctx, 3002, at=t + 2 * RTT) == []
    assert "timeouts" not in ctx.p.host.stats()


def test_no_probe_without_tlp():
    ctx = sack_open(tlp=False)
    send_burst(ctx, 2 * MSS)
    rto_at = RTT + ctx.c.rtt.rto
    t, segs = ctx.p.next_timer()
    assert t == pytest.approx(rto_at) and offsets(ctx, segs) == [1]     # the RTO
    assert ctx.p.host.stats()["timeouts"] == 1


# ------------------------------------------------------------------------------------------
# Deviations 3, 4, 5: recovery: NextSeg rule (3), PRR on entry, cwnd = ssthresh on exit
# ------------------------------------------------------------------------------------------

def _enter_recovery_on_three_sacks(ctx: Ctx) -> List[Seg]:
    """10 segments at t=0.1; at 0.2 three ACKs SACK 1001:2001, :3001, :4001 (the first
    segment is lost). Returns what the third ACK drew."""
    assert offsets(ctx, send_burst(ctx, 10 * MSS)) == list(range(1, 10001, MSS))
    assert ack(ctx, 1, [(1001, 2001)], at=0.2) == []
    assert ack(ctx, 1, [(1001, 3001)], at=0.2) == []
    return ack(ctx, 1, [(1001, 4001)], at=0.2)


@pytest.mark.parametrize("mode", MODES)
def test_nextseg_rule_3_resends_the_hole_below_a_sack(mode):
    """In recovery, after ``ack 4001 <sack 8001:9001>`` (the resent first segment
    arrived; 4001:8001 and 9001:10001 are missing): RFC 6675 NextSeg rule (3) resends
    4001 at once (RACK also deems it lost, rule (1)); before, only the rule-(4) rescue
    9001 went, and the rest waited for the RTO."""
    ctx = sack_open(mode)
    assert offsets(ctx, _enter_recovery_on_three_sacks(ctx)) == [1]
    out = ack(ctx, 4001, [(8001, 9001)], at=0.3)
    assert offsets(ctx, out)[:2] == [4001, 5001] and out[0].time == pytest.approx(0.3)
    assert all(len(s.data) == MSS for s in out)


@pytest.mark.parametrize("mode", MODES)
def test_prr_sends_one_segment_on_entering_recovery_then_paces(mode):
    """Four segments lost, three SACKed one per ACK: the pipe (3 segments) is far below
    ssthresh (7). RFC 6937 PRR-SSRB sends what was delivered: one retransmission on
    entry and one per ACK delivering one segment; before, the pipe-based rule sent 4
    retransmissions at once."""
    ctx = sack_open(mode)
    send_burst(ctx, 10 * MSS)
    assert ack(ctx, 1, [(4001, 5001)], at=0.2) == []
    assert ack(ctx, 1, [(4001, 6001)], at=0.2) == []
    out = ack(ctx, 1, [(4001, 7001)], at=0.2)
    assert offsets(ctx, out) == [1]
    assert ctx.c.cc.ssthresh == 7 * MSS                 # CUBIC: 0.7 * 10 segments
    out = ack(ctx, 1, [(4001, 8001)], at=0.21)
    assert offsets(ctx, out) == [1001]
    out = ack(ctx, 1, [(4001, 9001)], at=0.22)
    assert offsets(ctx, out) == [2001]


@pytest.mark.parametrize("mode", MODES)
def test_cwnd_is_ssthresh_on_leaving_recovery_with_nothing_in_flight(mode):
    """Recovery ends with everything acknowledged: cwnd = ssthresh (7 segments), as Linux
    tcp_end_cwnd_reduction; the next write goes out as 7 segments at once (before: RFC
    6582 option (1), cwnd = 2 segments)."""
    ctx = sack_open(mode)
    _enter_recovery_on_three_sacks(ctx)
    ack(ctx, 4001, [(8001, 9001)], at=0.3)
    assert ctx.c.in_recovery
    assert ack(ctx, 10001, at=0.4) == []
    assert not ctx.c.in_recovery and ctx.c.in_flight == 0
    assert ctx.c.cc.cwnd == ctx.c.cc.ssthresh == 7 * MSS
    assert len(send_burst(ctx, 20 * MSS)) == 7


# ------------------------------------------------------------------------------------------
# Properties over seeds: byte-exact transfers under loss, reordering (beyond 3 segments),
# duplication and ACK loss, RACK on and off; reordering alone and spurious retransmissions
# ------------------------------------------------------------------------------------------

def one_way(seed: int, data_faults: FaultConfig, ack_faults: FaultConfig, size: int,
            until: float = 600.0, **settings):
    """``size`` seeded bytes from a to b (then both close) over a NetSim with the given
    faults each way. Returns (bytes b read, data, virtual end, a's stats, retransmission
    times of a, a's connection)."""
    a = Host("10.0.0.1", isn_secret=bytes(16), msl=0.05, **settings)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), msl=0.05, **settings)
    for h in (a, b):
        h._raise_internal = True
    seen, rtx_at = set(), []

    def tap(now, host, raw) -> bool:
        if host is a:
            s = Seg.of(raw, now)
            if s.data:
                if s.seq in seen:
                    rtx_at.append(now)
                seen.add(s.seq)
        return False

    sim = NetSim(transmit_all=True, drop=tap)
    sim.add_host(a)
    sim.add_host(b)
    sim.connect(a, b, data_faults, ack_faults)
    lst = b.listen(80)
    ca = a.connect(("10.0.0.2", 80))
    data = random.Random(seed).randbytes(size)
    st = {"sent": 0, "srv": None}
    got = bytearray()

    def stop() -> bool:
        if st["srv"] is None:
            st["srv"] = lst.accept()
        if st["sent"] < size and ca.state == State.ESTABLISHED:
            n = ca.send(memoryview(data)[st["sent"]:])
            st["sent"] += n
            if st["sent"] == size:
                ca.close()
            if n:
                sim.kick()
        srv = st["srv"]
        if srv is not None:
            chunk = srv.recv(1 << 20)
            got.extend(chunk)
            if srv.eof and srv.state == State.CLOSE_WAIT:
                srv.close()
                sim.kick()
            elif chunk:
                sim.kick()
        return len(got) == size and not a.connections() and not b.connections()

    sim.run(until=until, stop=stop, max_steps=3_000_000)
    return bytes(got), data, sim.now, a.stats(), rtx_at, ca


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(30))
def test_transfer_is_byte_exact_under_loss_reordering_duplication_and_ack_loss(mode, seed):
    """5% data loss, 3% of packets held back 15 ms (at 20 Mbit/s: ~25 segments, far beyond
    DupThresh), 3% duplicated, and 10% of the ACKs lost: every byte arrives, in order,
    both ends close, with RACK-TLP and with DupThresh."""
    data_faults = FaultConfig(seed=seed, delay=0.01, rate=20e6, loss=0.05, reorder=0.03,
                              reorder_delay=0.015, duplicate=0.03)
    ack_faults = FaultConfig(seed=1000 + seed, delay=0.01, loss=0.10, duplicate=0.03)
    got, data, t, st, _, ca = one_way(seed, data_faults, ack_faults, 200_000,
                                      loss_detection=mode, sack=True, timestamps=True)
    assert got == data and ca.state == State.CLOSED and ca.error is None, (seed, t, st)
    if mode == "dupthresh":
        assert "tlp_probes" not in st


@pytest.mark.parametrize("seed", range(5))
def test_reordering_only_path_rack_adapts_and_stops_retransmitting(seed):
    """Nothing is lost, but 1% of the data segments are held back 8 ms (more than
    min_RTT / 4 = 5 ms, and ~14 segments at 20 Mbit/s). RACK resends spuriously only until
    reordering is seen and a D-SACK widens its window to 2 * min_RTT / 4 (RFC 8985 6.2
    step 4): at most a few times, and not once in the second half of the transfer;
    DupThresh resends on every reordering event."""
    faults = FaultConfig(seed=seed, delay=0.01, rate=20e6, reorder=0.01, reorder_delay=0.008)
    back = FaultConfig(seed=100 + seed, delay=0.01)
    runs = {}
    for mode in MODES:
        got, data, t, st, rtx_at, ca = one_way(seed, faults, back, 2_000_000,
                                               loss_detection=mode)
        assert got == data and "timeouts" not in st
        runs[mode] = (t, rtx_at, ca)
    t, rtx_at, ca = runs["rack"]
    assert len(rtx_at) <= 4 and all(r < t / 2 for r in rtx_at), rtx_at
    assert ca.info().reordering > 3                      # segments, as Linux tcpi_reordering
    assert len(runs["dupthresh"][1]) > 2 * len(rtx_at)


# ------------------------------------------------------------------------------------------
# Undo of spurious reductions: D-SACK (RFC 3708) and Eifel (RFC 3522)
# ------------------------------------------------------------------------------------------

def test_dsack_of_every_retransmission_undoes_the_reduction():
    """Recovery resent the first segment, which was only late: the full ACK comes, then
    the retransmission arrives again and is D-SACKed (RFC 2883). Every retransmission of
    the episode was a duplicate (RFC 3708 3): cwnd and ssthresh go back to before the
    episode (Linux tcp_try_undo_dsack), 10 segments and "infinite"."""
    ctx = sack_open()
    _enter_recovery_on_three_sacks(ctx)
    cc = ctx.c.cc
    assert (cc.cwnd, cc.ssthresh) != (10 * MSS, INFINITE_SSTHRESH)
    assert ack(ctx, 10001, at=0.25) == []
    assert cc.cwnd == 7 * MSS and not ctx.c.in_recovery
    assert ack(ctx, 10001, [(1, 1001)], at=0.3) == []
    assert (cc.cwnd, cc.ssthresh) == (10 * MSS, INFINITE_SSTHRESH)
    assert ctx.c.info().spurious_rtx_undone == 1
    assert ctx.p.host.stats()["spurious_rtx_undone"] == 1


def test_dsack_of_part_of_the_retransmissions_undoes_nothing():
    ctx = sack_open()
    send_burst(ctx, 10 * MSS)
    ack(ctx, 1, [(4001, 5001)], at=0.2)
    ack(ctx, 1, [(4001, 6001)], at=0.2)
    ack(ctx, 1, [(4001, 7001)], at=0.2)            # 1:4001 lost: resends 1 (PRR)
    ack(ctx, 1, [(4001, 8001)], at=0.21)           # ... and 1001
    assert ack(ctx, 10001, at=0.3) == []
    assert ack(ctx, 10001, [(1, 1001)], at=0.31) == []     # one of two was a duplicate
    assert ctx.c.cc.cwnd == 7 * MSS and ctx.c.info().spurious_rtx_undone == 0


def test_eifel_timestamp_echo_undoes_a_spurious_fast_retransmit():
    """With timestamps: the first ACK past the resent segment echoes the TSval of the
    original transmission, older than the retransmission's (RFC 3522 3.2): the original
    arrived, the retransmission was spurious, the reduction is undone at once."""
    ctx = ts_passive_open()
    c, m = ctx.c, ctx.c.mss
    c.send(bytes(10 * m))
    assert len(ctx.p.tick(1.0)) == 10
    tsv_original = ctx.tsv(1.0)
    for k in (2, 3, 4):
        blk = [(ctx.s(1 + m), ctx.s(1 + k * m))]
        out = ctx.send("A", 1, 200 + k, ack=1, sack=blk, at=1.05)
    assert [s.seq for s in out] == [ctx.s(1)] and c.in_recovery     # resent at 1.05
    iw = 10 * m
    assert c.cc.cwnd < iw
    opts = TcpOptions(timestamps=(210, tsv_original))
    assert ctx.p.send("A", ctx.r(1), ctx.s(1 + 10 * m), 65535, opts=opts, at=1.06) == []
    # Restored, and this ACK then grows it as slow start would (RFC 3465: L = 2 SMSS).
    assert not c.in_recovery and c.cc.ssthresh == INFINITE_SSTHRESH
    assert c.cc.cwnd == iw + 2 * m
    assert c.info().spurious_rtx_undone == 1


def test_eifel_keeps_the_reduction_when_the_retransmission_repaired_the_loss():
    ctx = ts_passive_open()
    c, m = ctx.c, ctx.c.mss
    c.send(bytes(10 * m))
    ctx.p.tick(1.0)
    for k in (2, 3, 4):
        ctx.send("A", 1, 200 + k, ack=1, sack=[(ctx.s(1 + m), ctx.s(1 + k * m))], at=1.05)
    # The ACK echoes the retransmission's TSval (1.05): a real loss.
    opts = TcpOptions(timestamps=(210, ctx.tsv(1.05)))
    ctx.p.send("A", ctx.r(1), ctx.s(1 + 10 * m), 65535, opts=opts, at=1.1)
    assert c.cc.cwnd == c.cc.ssthresh < 10 * m and c.info().spurious_rtx_undone == 0


def _probe_after_a_silent_tail(ctx: Ctx) -> float:
    """Two segments (the FIN on the second) at t=0.2 and no ACK: the probe resends the
    second at 2 * SRTT + 2 ms. Returns its time."""
    send_burst(ctx, MSS)
    ack(ctx, 1001, at=0.2)
    ctx.c.send(bytes(2 * MSS))
    ctx.c.close()
    ctx.p.tick()
    t, probe = ctx.p.next_timer()
    assert offsets(ctx, probe) == [2001] and probe[0].flags == "FPA"
    return t


def test_tlp_that_repaired_a_loss_reduces_the_window():
    """RFC 8985 7.4.2: the probe's ACK covers it and carries no D-SACK: the probe repaired
    the tail, a loss, so the window is reduced once (Linux tcp_process_tlp_ack: CWR, then
    cwnd = ssthresh)."""
    ctx = sack_open()
    t = _probe_after_a_silent_tail(ctx)
    assert ack(ctx, 3002, at=t + RTT) == []
    cc = ctx.c.cc
    # CUBIC: 0.7 * max(cwnd, flight), as Linux's tcp_process_tlp_ack (ssthresh from cwnd)
    assert cc.cwnd == cc.ssthresh == 7 * MSS
    assert ctx.p.host.stats()["tlp_losses_repaired"] == 1


def test_tlp_answered_by_a_dsack_keeps_the_window():
    """Only the ACKs were lost: the probe arrives as a duplicate and its ACK carries a
    D-SACK for it (RFC 8985 7.4.1): nothing was lost, the window stays."""
    ctx = sack_open()
    t = _probe_after_a_silent_tail(ctx)
    cwnd = ctx.c.cc.cwnd
    assert ack(ctx, 3002, [(2001, 3002)], at=t + RTT) == []
    assert ctx.c.cc.cwnd >= cwnd and "tlp_losses_repaired" not in ctx.p.host.stats()


def test_eifel_undoes_a_spurious_timeout_and_stops_the_go_back_n():
    """The RTO resends the first of three segments, then the ACK of all three arrives
    echoing the TSval of their first transmission (RFC 3522: the timeout was spurious,
    the path only slowed down). The reduction to one segment is undone and the rest is not
    resent (Linux tcp_try_undo_loss)."""
    ctx = ts_passive_open(tlp=False)
    c, m = ctx.c, ctx.c.mss
    c.send(bytes(3 * m))
    assert len(ctx.p.tick(1.0)) == 3
    tsv_original = ctx.tsv(1.0)
    t, rto = ctx.p.next_timer()
    assert [s.seq for s in rto] == [ctx.s(1)] and c.cc.cwnd == m
    opts = TcpOptions(timestamps=(210, tsv_original))
    assert ctx.p.send("A", ctx.r(1), ctx.s(1 + 3 * m), 65535, opts=opts, at=t + 0.01) == []
    assert c.cc.cwnd >= 10 * m and c.cc.ssthresh == INFINITE_SSTHRESH
    assert c.info().spurious_rtx_undone == 1 and c.in_flight == 0
    assert ctx.p.host.stats()["timeouts"] == 1 and c.retransmits == 1


def test_delivery_rate_measures_the_bottleneck():
    """info().delivery_rate: bytes acknowledged per second over about one SRTT. Through a
    20 Mbit/s bottleneck it reads the link's payload rate (1448 of every 1500 bytes, less
    headers of the ACK-clocked tail), within 10%."""
    faults = FaultConfig(seed=1, delay=0.01, rate=20e6)
    got, data, t, st, _, ca = one_way(1, faults, FaultConfig(seed=2, delay=0.01), 2_000_000)
    assert got == data
    payload_rate = 20e6 / 8 * 1448 / 1500
    assert 0.9 * payload_rate <= ca.info().delivery_rate <= 1.01 * 20e6 / 8


# ------------------------------------------------------------------------------------------
# The policies are made and asked only when something can be lost
# ------------------------------------------------------------------------------------------

def test_no_loss_policy_for_request_response_without_loss():
    # Request/response on a SACK connection, every ACK acknowledging all that is in
    # flight: the per-transmission queue (C) records the sends, but no loss-detection
    # policy is made or asked (nothing can be lost).
    from fasttcp.link import exchange
    a = Host("10.0.0.1", isn_secret=bytes(16))
    b = Host("10.0.0.2", isn_secret=bytes(16))
    lst = b.listen(80)
    c = a.connect(("10.0.0.2", 80))
    exchange(a, b, 0.0)
    s = lst.accept()
    assert c.sack_ok and s.sack_ok
    now = 0.0
    for _ in range(20):
        c.send(b"GET / HTTP/1.1\r\n\r\n")
        exchange(a, b, now)
        assert s.recv()
        s.send(bytes(3000))
        exchange(a, b, now)
        assert len(c.recv()) == 3000
        now += 0.001
    assert c.rtxq is not None and s.rtxq is not None
    assert c.loss is None and s.loss is None


def test_loss_policy_is_made_when_a_sack_shows_a_hole():
    ctx = sack_open()
    send_burst(ctx, 4 * MSS)
    assert ctx.c.loss is None
    ack(ctx, 1, [(1001, 2001)], at=RTT + 0.1)
    assert ctx.c.loss is not None and ctx.c.loss.name == "rack"
