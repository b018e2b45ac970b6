"""CUBIC congestion control (RFC 9438): hand-computed values from the RFC's formulas, a
simulated ACK clock against the cubic curve, and end-to-end transfers with the engine.

The oracle throughout is the RFC's own arithmetic, written out here independently of
fasttcp.tcp.cubic: W_cubic(t) = C*(t - K)**3 + W_max (section 4.2 figure 1),
K = cbrt((W_max - cwnd_epoch)/C) (figure 2), C = 0.4, beta_cubic = 0.7,
alpha_cubic = 3*(1 - beta)/(1 + beta) (section 4.3).
"""
from __future__ import annotations

import functools
import random

import pytest

from fasttcp import Host, State
from fasttcp.transfer import bulk_transfer
from fasttcp.link import FaultConfig, NetSim
from fasttcp.tcp.congestion import ALGORITHMS, INFINITE_SSTHRESH, CongestionControl, resolve
from fasttcp.tcp.cubic import Cubic

MSS = 1000
C = 0.4
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)      # 0.5294117647...


def rfc_k(w_max: float, cwnd_epoch: float) -> float:
    return ((w_max - cwnd_epoch) / C) ** (1 / 3)


def rfc_w(t: float, k: float, w_max: float) -> float:
    return C * (t - k) ** 3 + w_max


def after_loss(w_max_segs: int = 100, flight_segs: int = 100) -> Cubic:
    """A Cubic that had cwnd = w_max_segs, lost a segment with flight_segs outstanding, and
    left recovery with a full window outstanding: cwnd = ssthresh = 0.7*flight."""
    cc = Cubic(MSS)
    cc.cwnd = w_max_segs * MSS
    cc.on_enter_recovery(flight_segs * MSS, 0.0)
    cc.on_exit_recovery(flight_segs * MSS)
    assert cc.cwnd == cc.ssthresh == int(flight_segs * MSS * BETA)
    return cc


# --------------------------------------------------------------------------------------------
# Registry and constants
# --------------------------------------------------------------------------------------------

def test_registered_as_cubic():
    assert ALGORITHMS["cubic"] is Cubic
    assert resolve("cubic") is Cubic and resolve("CUBIC") is Cubic
    assert issubclass(Cubic, CongestionControl) and Cubic.name == "cubic"
    host = Host("10.0.0.1", congestion="cubic")
    conn = host.connect(("10.0.0.2", 80))
    assert isinstance(conn.cc, Cubic)


def test_constants():
    cc = Cubic(MSS)
    assert cc.C == 0.4 and cc.beta_cubic == 0.7
    assert cc.alpha_cubic == pytest.approx(0.9 / 1.7) == pytest.approx(0.5294117647)
    # Starts like any RFC 5681 sender: IW (RFC 6928) and an "arbitrarily high" ssthresh.
    assert cc.cwnd == 10 * MSS and cc.ssthresh == INFINITE_SSTHRESH and cc.w_max is None


# --------------------------------------------------------------------------------------------
# Section 4.2: K and W_cubic, hand-computed
# --------------------------------------------------------------------------------------------

def test_k_hand_computed():
    # K = cbrt((100 - 70)/0.4) = cbrt(75) = 4.2171633...
    assert Cubic.k_for(100, 70) == pytest.approx(4.2171633, abs=1e-6)
    # W_max 1000 after beta = 0.7: cbrt(300/0.4) = cbrt(750) = 9.0856030
    assert Cubic.k_for(1000, 700) == pytest.approx(9.0856030, abs=1e-6)
    # W_max 10, epoch 9.6: cbrt(1) = 1 exactly
    assert Cubic.k_for(10, 9.6) == pytest.approx(1.0)
    assert Cubic.k_for(50, 50) == 0.0


def test_epoch_starts_at_first_congestion_avoidance_ack():
    cc = after_loss(100, 100)
    assert cc.w_max == 100 and cc.cwnd_prior == 100 and cc.t_epoch is None
    cc.on_ack(MSS, 70 * MSS, 5.0, 0.1)
    assert cc.t_epoch == 5.0 and cc.cwnd_epoch == 70
    assert cc.k == pytest.approx(4.2171633, abs=1e-6)


def test_w_cubic_hand_computed():
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 5.0, 0.1)
    k = cc.k
    # The curve passes through (0, cwnd_epoch) and (K, W_max), symmetric about K:
    # C*(+-1)**3 = +-0.4, C*(+-2)**3 = +-3.2, C*(+-3)**3 = +-10.8.
    assert cc.w_cubic(0.0) == pytest.approx(70.0)
    assert cc.w_cubic(k) == pytest.approx(100.0)
    assert cc.w_cubic(k - 1) == pytest.approx(99.6)
    assert cc.w_cubic(k + 1) == pytest.approx(100.4)
    assert cc.w_cubic(k - 2) == pytest.approx(96.8)
    assert cc.w_cubic(k + 2) == pytest.approx(103.2)
    assert cc.w_cubic(k + 3) == pytest.approx(110.8)
    assert cc.w_cubic(2 * k) == pytest.approx(130.0)   # C*K**3 = 30 above W_max


# --------------------------------------------------------------------------------------------
# Sections 4.6 / 4.7: multiplicative decrease and fast convergence
# --------------------------------------------------------------------------------------------

def test_multiplicative_decrease_uses_flight_size_and_beta():
    cc = Cubic(MSS)
    cc.ssthresh_from_flight = True            # the pseudocode's form (the default: below)
    cc.cwnd = 100 * MSS
    # ssthresh = flight_size * 0.7 = 63000; cwnd = ssthresh + 3*SMSS while recovering
    # (RFC 5681 3.2 step 3, the engine's NewReno recovery).
    cc.on_enter_recovery(90 * MSS, 1.0)
    assert cc.ssthresh == 63000 and cc.cwnd == 66000
    assert cc.w_max == 100 and cc.cwnd_prior == 100
    cc.on_dupack_in_recovery()
    assert cc.cwnd == 67000
    cc.on_partial_ack(4000)                   # deflate by 4000, add back one SMSS
    assert cc.cwnd == 64000
    cc.on_exit_recovery(10 * MSS)             # cwnd = ssthresh (Linux), whatever is in flight
    assert cc.cwnd == 63000 and cc.ssthresh == 63000


def test_reduction_in_congestion_avoidance_uses_cwnd():
    """Section 4.6 allows cwnd for flight_size where cwnd cannot grow unused (section 5.8,
    here): ssthresh = max(cwnd, flight) * beta_cubic (cwnd as Linux). A loss found just
    after a recovery, with PRR's smaller flight, then costs beta_cubic, not more; so does
    one found late in a slow-start round."""
    cc = Cubic(MSS)
    cc.cwnd = cc.ssthresh = 50 * MSS               # congestion avoidance (left a recovery)
    cc.on_enter_recovery(30 * MSS, 1.0)            # flight 30 segments
    assert cc.ssthresh == 35000 and cc.cwnd_prior == 50
    rfc = Cubic(MSS)
    rfc.ssthresh_from_flight = True                # the RFC pseudocode's flight_size
    rfc.cwnd = rfc.ssthresh = 50 * MSS
    rfc.on_enter_recovery(30 * MSS, 1.0)
    assert rfc.ssthresh == 21000
    cc.on_exit_recovery(30 * MSS)
    cc.on_timeout(20 * MSS)                        # an RTO in congestion avoidance too
    assert cc.ssthresh == round(35000 * BETA)
    # A flight above cwnd (RFC 5681's FlightSize counts SACKed data) still counts.
    above = Cubic(MSS)
    above.cwnd = above.ssthresh = 50 * MSS
    above.on_enter_recovery(60 * MSS, 1.0)
    assert above.ssthresh == 42000
    ss = Cubic(MSS)                                # slow start: cwnd 20, flight 6
    ss.cwnd = 20 * MSS
    ss.on_enter_recovery(6 * MSS, 1.0)
    assert ss.ssthresh == 14000


def test_multiplicative_decrease_floor_two_segments():
    cc = Cubic(MSS)
    cc.cwnd = 2 * MSS
    cc.on_enter_recovery(2 * MSS, 0.0)        # max(1400, 2000)
    assert cc.ssthresh == 2000 and cc.cwnd == 5000


def test_fast_convergence_lowers_w_max():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_enter_recovery(100 * MSS, 0.0)
    assert cc.w_max == 100
    cc.on_exit_recovery(100 * MSS)
    cc.cwnd = 80 * MSS                        # the window did not get back to W_max
    cc.on_enter_recovery(80 * MSS, 1.0)
    # Section 4.7: W_max = cwnd * (1 + beta) / 2 = 80 * 0.85 = 68
    assert cc.w_max == pytest.approx(68.0)
    assert cc.cwnd_prior == 80 and cc.ssthresh == 56000
    # The next epoch then aims at 68: K = cbrt((68 - 56)/0.4) = cbrt(30)
    cc.on_exit_recovery(80 * MSS)
    cc.on_ack(MSS, 56 * MSS, 2.0, 0.1)
    assert cc.k == pytest.approx(30 ** (1 / 3))


def test_without_fast_convergence_w_max_is_cwnd():
    cc = Cubic(MSS)
    cc.fast_convergence = False
    cc.cwnd = 100 * MSS
    cc.on_enter_recovery(100 * MSS, 0.0)
    cc.on_exit_recovery(100 * MSS)
    cc.cwnd = 80 * MSS
    cc.on_enter_recovery(80 * MSS, 1.0)
    assert cc.w_max == 80


def test_a_window_above_w_max_sets_w_max_to_it():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_enter_recovery(100 * MSS, 0.0)
    cc.on_exit_recovery(100 * MSS)
    cc.cwnd = 120 * MSS
    cc.on_enter_recovery(120 * MSS, 1.0)
    assert cc.w_max == 120 and cc.ssthresh == 84000


# --------------------------------------------------------------------------------------------
# Section 4.3: the Reno-friendly region
# --------------------------------------------------------------------------------------------

def test_reno_friendly_region_one_batch_hand_computed():
    cc = after_loss(100, 100)                 # cwnd 70 segments, W_max 100
    # One batch acknowledging a whole window (70 segments) at the epoch's start:
    # W_est = 70 + alpha * 70/70 = 70.5294...; W_cubic(0) = 70 < W_est, so cwnd = W_est.
    cc.on_ack(70 * MSS, 70 * MSS, 10.0, 0.001, acks=35)
    assert cc.region == "reno_friendly"
    assert cc.w_est == pytest.approx(70 + ALPHA)
    assert cc.cwnd == 70529                   # 70000 + 529.41


def test_reno_friendly_region_dominates_early_for_small_rtt():
    # RTT 1 ms: the cubic curve grows ~21 segments/s near t = 0, i.e. 0.02 per RTT, far
    # below Reno's alpha (0.53) per RTT; so CUBIC behaves like AIMD(alpha_cubic, beta)
    # until W_est reaches cwnd_prior (100), then like Reno (alpha = 1, section 4.3).
    cc = after_loss(100, 100)
    rtt, now = 0.001, 10.0
    model = 70.0                              # independent per-RTT model of W_est
    for _ in range(200):                      # 0.2 s
        n = cc.cwnd // MSS
        for i in range(n):
            cc.on_ack(MSS, cc.cwnd, now + rtt * (i + 1) / n, rtt)
        now += rtt
        model += 1.0 if model >= 100 else ALPHA
        assert cc.region == "reno_friendly"
    # After 0.2 s the cubic curve alone would be at ~74 segments.
    t = now - cc.t_epoch
    assert rfc_w(t, rfc_k(100, 70), 100) < 75
    assert cc.cwnd / MSS == pytest.approx(model, abs=1.5)
    assert cc.cwnd / MSS > 240


# --------------------------------------------------------------------------------------------
# Section 4.2 target bounds, 4.4 / 4.5 regions: a simulated ACK clock
# --------------------------------------------------------------------------------------------

def ack_clock(cc: Cubic, rtt: float, rounds: int, start: float, per_batch: int = 1):
    """Every round trip: a cwnd-limited window of segments is acknowledged, in batches of
    ``per_batch`` segments spread evenly over the RTT. Returns [(t, cwnd_segs, region)] at
    each round's end."""
    now = start
    trace = []
    for _ in range(rounds):
        n = max(cc.cwnd // MSS, 1)
        batches = max(n // per_batch, 1)
        for b in range(batches):
            segs = per_batch if b < batches - 1 else n - per_batch * (batches - 1)
            cc.on_ack(segs * MSS, cc.cwnd, now + rtt * (b + 1) / batches, rtt, acks=segs)
        now += rtt
        trace.append((now - cc.t_epoch, cc.cwnd / MSS, cc.region))
    return trace


def test_ack_clock_follows_the_cubic_curve():
    # W_max 100, RTT 100 ms: the cubic region dominates (its slope at t=0 is
    # 3*C*K**2 = 21 segments/s = 2.1 per RTT, four times Reno's 0.53).
    cc = after_loss(100, 100)
    rtt = 0.1
    trace = ack_clock(cc, rtt, 55, start=1.0)
    k = rfc_k(100, 70)
    for t, w, region in trace:
        expect = rfc_w(t, k, 100)
        # cwnd chases W_cubic(t + RTT): it stays within one RTT of growth of the curve.
        slack = max(0.5, abs(rfc_w(t + rtt, k, 100) - expect))
        assert abs(w - expect) <= slack, (t, w, expect)
        assert region == ("concave" if w < 100 else "convex"), (t, w, region)
    ts = [t for t, _, _ in trace]
    ws = [w for _, w, _ in trace]
    growth = [b - a for a, b in zip(ws, ws[1:])]
    # Concave: growth per RTT shrinks while t < K ...
    early = [g for t, g in zip(ts[1:], growth) if t < k - 0.3]
    assert all(a >= b - 1e-9 for a, b in zip(early, early[1:]))
    assert early[0] > 1.5
    # ... a plateau at W_max around t = K ...
    plateau = [(t, w, g) for t, w, g in zip(ts[1:], ws[1:], growth) if abs(t - k) < 0.35]
    assert plateau and all(g < 0.1 for _, _, g in plateau)
    assert all(abs(w - 100) < 0.5 for _, w, _ in plateau)
    # ... then convex: growth per RTT increases again.
    late = [g for t, g in zip(ts[1:], growth) if t > k + 0.3]
    assert all(b >= a - 1e-9 for a, b in zip(late, late[1:]))
    assert late[-1] > late[0] + 0.1


def test_convex_region_is_bounded_by_one_and_a_half_cwnd_per_rtt():
    # Section 4.2: target <= 1.5 * cwnd, whatever the curve says.
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 0.0, 0.1)        # epoch at t = 0, cwnd ~70
    w0 = cc.cwnd
    # 60 s later (cwnd-limited all along, e.g. ACKs lost): W_cubic(60) is ~69500 segments.
    cc.on_ack(w0, w0, 60.0, 0.1, acks=70)
    # Still "concave" by section 4.4's definition (cwnd < W_max), though the curve is far
    # past its inflection point.
    assert cc.region == "concave" and cc.w_cubic(60.0) > 60000
    assert cc.cwnd <= 1.5 * w0 + 1


def test_batching_gives_the_same_trajectory_as_per_segment_acks():
    # An ACK batch of N bytes counts as N/SMSS segment ACKs: acknowledging a window one
    # segment at a time, two at a time (delayed ACKs) or in batches of 8 grows cwnd alike.
    traces = []
    for per_batch in (1, 2, 8):
        cc = after_loss(100, 100)
        traces.append(ack_clock(cc, 0.1, 80, start=1.0, per_batch=per_batch))
    for a, b, c in zip(*traces):
        assert b[1] == pytest.approx(a[1], rel=0.02)
        assert c[1] == pytest.approx(a[1], rel=0.03)


# --------------------------------------------------------------------------------------------
# Section 4.8: timeout; section 4.10: slow start; section 5.8: application-limited
# --------------------------------------------------------------------------------------------

def test_timeout():
    cc = Cubic(MSS)
    cc.cwnd = 40 * MSS
    cc.on_timeout(40 * MSS)                   # ssthresh = 0.7 * 40000; cwnd = LW = 1 SMSS
    assert (cc.ssthresh, cc.cwnd) == (28000, 1000)
    cc.on_timeout(40 * MSS)                   # the same segment again: ssthresh held
    assert (cc.ssthresh, cc.cwnd) == (28000, 1000)
    # Slow start after the RTO with L = 1*SMSS (RFC 3465), as NewReno.
    cc.on_ack(3000, 1000, 1.0, 0.1)
    assert cc.cwnd == 2000
    t = 1.0
    while cc.cwnd < cc.ssthresh:
        t += 0.01
        cc.on_ack(MSS, cc.cwnd, t, 0.1)
    assert cc.cwnd == 28000 and cc.t_epoch is None
    # First CA stage after a timeout: K = 0, W_max = cwnd_epoch, W_est = cwnd_epoch.
    cc.on_ack(MSS, 28000, 2.0, 0.1)
    assert cc.t_epoch == 2.0 and cc.k == 0.0
    assert cc.w_max == pytest.approx(28.0) and cc.cwnd_epoch == pytest.approx(28.0)
    assert cc.w_est == pytest.approx(28.0 + ALPHA / 28.0)
    # W_cubic(t) = 0.4 t**3 + 28 from here: convex at once.
    assert cc.w_cubic(1.0) == pytest.approx(28.4)
    assert cc.w_cubic(2.0) == pytest.approx(31.2)
    assert cc.region in ("convex", "reno_friendly")
    # A later timeout (new data was acknowledged since) recomputes ssthresh; in congestion
    # avoidance from cwnd, not the flight (see test_reduction_in_congestion_avoidance...).
    cwnd = cc.cwnd
    cc.on_timeout(20 * MSS)
    assert (cc.ssthresh, cc.cwnd) == (round(cwnd * BETA), 1000)


def test_timeout_during_recovery_keeps_the_pre_loss_cwnd_prior():
    cc = Cubic(MSS)
    cc.cwnd = 40 * MSS
    cc.on_enter_recovery(40 * MSS, 0.0)       # cwnd inflated to 31000
    cc.on_dupack_in_recovery()
    cc.on_timeout(40 * MSS)
    assert cc.cwnd_prior == 40 and cc.cwnd == MSS and cc.ssthresh == 28000


def test_slow_start_is_newreno_byte_counting():
    cc = Cubic(MSS)                           # cwnd 10000
    cc.on_ack(1000, 10000, 0.0, None)
    assert cc.cwnd == 11000
    cc.on_ack(500, 10000, 0.0, None)
    assert cc.cwnd == 11500
    cc.on_ack(3000, 10000, 0.0, None)         # L = 2*SMSS per ACK
    assert cc.cwnd == 13500
    cc.on_ack(3000, 10000, 0.0, None, acks=2)
    assert cc.cwnd == 16500
    assert cc.region == "slow_start" and cc.t_epoch is None


def test_slow_start_carries_credit_into_the_first_epoch():
    cc = Cubic(MSS)
    cc.ssthresh = 11000
    cc.on_ack(2000, 10000, 3.0, 0.05)
    assert cc.t_epoch == 3.0 and cc.cwnd >= 11000 and not cc.in_slow_start
    # No congestion event yet (W_max undefined): section 4.10, K = 0 and W_max = cwnd_epoch.
    assert cc.k == 0.0 and cc.w_max == pytest.approx(11.0)


def test_application_limited_does_not_grow_and_is_not_counted_in_t():
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 1.0, 0.1)        # epoch starts at 1.0
    w = cc.cwnd
    # Five seconds in which the application keeps only 10 segments in flight.
    for i in range(50):
        cc.on_ack(MSS, 10 * MSS, 1.1 + 0.1 * i, 0.1)
        assert cc.cwnd == w and cc.region == "app_limited"
    # cwnd-limited again: t excludes those five seconds, so the curve resumes near 0.1 s.
    cc.on_ack(MSS, w, 6.1, 0.1)
    assert 6.1 - cc.t_epoch == pytest.approx(0.1, abs=1e-9)
    assert cc.cwnd - w < 2 * MSS


def test_idle_time_is_not_counted_in_t():
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 1.0, 0.1)
    cc.on_idle(0.5, 1.0)                      # shorter than the RTO: cwnd kept
    assert cc.t_epoch == 1.5 and cc.cwnd >= 70000
    # Everything acknowledged, then a long quiet gap before the next ACK: at most one RTT
    # of it is counted.
    cc.on_ack(cc.cwnd, cc.cwnd, 1.6, 0.1)     # drains the flight
    t_before = 1.6 - cc.t_epoch
    cc.on_ack(MSS, cc.cwnd, 9.6, 0.1)
    assert 9.6 - cc.t_epoch == pytest.approx(t_before + 0.1)


def test_set_mss_keeps_windows_in_segments():
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 1.0, 0.1)
    cc.set_mss(500)
    assert cc.w_max == 100 and cc.cwnd == pytest.approx(70 * 500, abs=500)
    assert cc.ssthresh == 35000


def test_rtt_unknown_uses_last_known_or_no_lookahead():
    cc = after_loss(100, 100)
    cc.on_ack(MSS, 70 * MSS, 1.0, None)       # no sample ever: look-ahead 0
    assert cc.rtt is None
    cc.on_ack(MSS, 70 * MSS, 1.05, 0.2)
    cc.on_ack(MSS, 70 * MSS, 1.10, None)      # keeps using 0.2
    assert cc.rtt == 0.2


def test_never_raises_on_odd_inputs():
    cc = Cubic(MSS)
    rng = random.Random(7)
    now = 0.0
    for _ in range(5000):
        now += rng.choice((0.0, 0.0001, 0.01, 1.0, 30.0))
        op = rng.randrange(7)
        flight = rng.randrange(0, 200 * MSS)
        if op <= 2:
            cc.on_ack(rng.randrange(0, 100 * MSS), flight, now,
                      rng.choice((None, 0.0, 0.001, 0.2, 3.0)), rng.randrange(1, 40))
        elif op == 3:
            cc.on_enter_recovery(flight, now)
        elif op == 4:
            cc.on_dupack_in_recovery()
        elif op == 5:
            cc.on_partial_ack(rng.randrange(0, 10 * MSS))
            cc.on_exit_recovery(flight)
        else:
            cc.on_timeout(flight)
        assert isinstance(cc.cwnd, int) and cc.mss <= cc.cwnd <= INFINITE_SSTHRESH
        assert isinstance(cc.ssthresh, int) and cc.ssthresh >= 2 * MSS


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

def test_bulk_transfer_in_memory():
    r = bulk_transfer(4 << 20, congestion="cubic")
    assert r.intact and r.nbytes == 4 << 20


def lossy_transfer(seed: int, size: int, congestion: str = "cubic"):
    """One-way transfer through NetSim: 100 Mbit/s, 10 ms each way, 1% loss both ways."""
    client = Host("10.0.0.1", isn_secret=bytes(16), congestion=congestion, msl=0.25)
    server = Host("10.0.0.2", isn_secret=bytes(range(16)), congestion=congestion, msl=0.25)
    for h in (client, server):
        h._raise_internal = True
    sim = NetSim(coalesce=0.0002)
    cfg = FaultConfig(loss=0.01, delay=0.01, rate=100e6, seed=seed)
    sim.connect(client, server, cfg, cfg)
    data = random.Random(seed).randbytes(size)
    listener = server.listen(80)
    conn = client.connect(("10.0.0.2", 80))
    st = {"sent": 0, "srv": None, "closed": False}
    got = bytearray()
    regions = set()

    def done() -> bool:
        acted = False
        if st["srv"] is None:
            st["srv"] = listener.accept()
        if st["sent"] < size:
            n = conn.send(memoryview(data)[st["sent"]:st["sent"] + (1 << 20)])
            st["sent"] += n
            acted = n > 0
        elif not st["closed"] and conn.state == State.ESTABLISHED:
            conn.close()
            st["closed"] = acted = True
        srv = st["srv"]
        if srv is not None:
            for _ in range(1000):
                chunk = srv.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)
                acted = True
            if srv.eof and srv.state == State.CLOSE_WAIT:
                srv.close()
                acted = True
        regions.add(getattr(conn.cc, "region", None))
        if acted:
            sim.kick()                        # user calls between steps: push them out
        return (srv is not None and srv.state == State.CLOSED
                and conn.state in (State.TIME_WAIT, State.CLOSED))

    sim.run(until=120.0, stop=done, max_steps=1_000_000)
    return bytes(got) == data, sim, conn, client, regions


LOSSY_SEEDS = (1, 2, 3, 4)


@functools.lru_cache(maxsize=None)
def lossy_result(seed: int):
    return lossy_transfer(seed, 2 << 20)


@pytest.mark.parametrize("seed", LOSSY_SEEDS)
def test_lossy_transfer_through_netsim(seed):
    ok, sim, conn, client, regions = lossy_result(seed)
    assert ok, f"seed {seed}: data differ"
    assert sim.stats()["lost"] > 0
    assert isinstance(conn.cc, Cubic)
    assert client.stats().get("retransmitted_segments", 0) > 0
    assert conn.cc.cwnd_prior is not None     # a congestion event reached the policy
    assert not client.stats().get("drop_internal_error")


def test_lossy_transfers_run_the_cubic_curve():
    # Over the seeds, congestion avoidance ran (a short transfer can also end in slow
    # start and recovery, so not every seed need show it).
    seen = [lossy_result(s)[4] & {"concave", "convex", "reno_friendly"} for s in LOSSY_SEEDS]
    assert sum(1 for x in seen if x) >= len(LOSSY_SEEDS) - 1, seen
