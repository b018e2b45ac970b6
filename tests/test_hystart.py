"""HyStart++ (RFC 9406) in the initial slow start: the policy's rounds, RTT thresholds,
Conservative Slow Start (CSS) and its end, the engine's RTT samples (timestamps) from a
scripted peer, and the effect on a rate-limited NetSim path with a bounded queue."""
import collections

import pytest

from fasttcp import Host
from fasttcp.link import FaultConfig, NetSim
from fasttcp.tcp.congestion import INFINITE_SSTHRESH, NewReno
from fasttcp.tcp.cubic import Cubic
from fasttcp.wire import TcpOptions
from tcp_harness import ManualPeer

MSS = 1000


def _run(cc, rtts):
    """A sender that keeps cwnd full and a receiver that acknowledges every SMSS on its
    own: a segment sent in round k (answering ACKs of round k-1's segments; round 0 is the
    initial window) has RTT ``rtts[k]``. Returns (cwnd, ssthresh, in_css) at the end of
    each round."""
    sent = collections.deque((MSS * (i + 1), 0) for i in range(cc.cwnd // MSS))
    snd_nxt = cc.cwnd
    trace = []
    for _ in range(100000):
        end, k = sent.popleft()
        if k == len(rtts):
            break
        if cc.hystart:                          # as the engine calls it
            cc.hystart_ack(end, snd_nxt, rtts[k], 1)
        cc.on_ack(MSS, snd_nxt - end + MSS, 0.0, rtts[k])
        while snd_nxt < end + cc.cwnd:
            snd_nxt += MSS
            sent.append((snd_nxt, k + 1))
        if sent[0][1] != k:
            trace.append((cc.cwnd, cc.ssthresh, cc.in_css))
    return trace


def _policy(cls=NewReno):
    cc = cls(MSS, initial_window=10 * MSS)
    cc.hystart = True
    return cc


INF = INFINITE_SSTHRESH


def test_steady_rtt_stays_in_slow_start():
    cc = _policy()
    # Slow start, one ACK per segment: cwnd += SMSS per ACK, doubling per round.
    assert _run(cc, [0.100] * 4) == [(20000, INF, False), (40000, INF, False),
                                     (80000, INF, False), (160000, INF, False)]


RISING = [0.100, 0.100, 0.100, 0.130, 0.160, 0.190, 0.220, 0.250, 0.280, 0.310, 0.340]


def test_rtt_increase_enters_css_then_congestion_avoidance():
    cc = _policy()
    trace = _run(cc, RISING)
    assert trace[:3] == [(20000, INF, False), (40000, INF, False), (80000, INF, False)]
    # The round's minimum RTT rose by at least RttThresh = max(4 ms, min(100 ms / 8,
    # 16 ms)) = 12.5 ms: after N_RTT_SAMPLE samples, CSS (cwnd below 2 x 80000).
    assert trace[3] == (154750, INF, True) and cc.hs_css_baseline_min_rtt >= 0.130
    # CSS: growth divided by CSS_GROWTH_DIVISOR = 4 (a round adds a quarter of cwnd).
    for prev, cur in zip(trace[3:7], trace[4:8]):
        assert cur[1:] == (INF, True) and cur[0] == prev[0] + prev[0] // 4 + (cur[0] - prev[0]
                                                                               - prev[0] // 4)
        assert 1.24 < cur[0] / prev[0] < 1.26
    # After CSS_ROUNDS = 5 rounds: congestion avoidance with ssthresh = cwnd, no loss;
    # then one SMSS per round (RFC 5681 3.1).
    assert trace[8] == (455500, 455500, False) and cc.hs_done
    assert [t[0] for t in trace[8:]] == [455500, 456500, 457500]
    # Plain slow start on the same RTTs doubles every round.
    plain = NewReno(MSS, initial_window=10 * MSS)
    assert [t[0] for t in _run(plain, RISING)] == [10000 * 2 ** k for k in range(1, 12)]


def test_rtt_threshold():
    # 112 ms is below 100 ms + 12.5 ms: slow start goes on; 113 ms is not.
    assert not any(css for _, _, css in _run(_policy(), [0.1, 0.1, 0.1, 0.112, 0.112]))
    assert any(css for _, _, css in _run(_policy(), [0.1, 0.1, 0.1, 0.113, 0.113]))


def test_spurious_css_resumes_slow_start():
    cc = _policy()
    trace = _run(cc, [0.100, 0.100, 0.100, 0.130, 0.130, 0.100, 0.100])
    assert [t[2] for t in trace] == [False, False, False, True, True, False, False]
    # A round whose minimum RTT is below cssBaselineMinRtt: the exit was spurious, slow
    # start resumes (RFC 9406 4.2) and doubles again.
    assert trace[6][0] > 1.99 * trace[5][0] and cc.ssthresh == INF


def test_loss_ends_hystart_for_the_connection():
    cc = _policy(Cubic)
    _run(cc, RISING[:5])
    assert cc.in_css
    cc.on_enter_recovery(cc.cwnd, 1.0)
    cc.on_exit_recovery(cc.ssthresh)
    assert not cc.in_css
    cc.on_timeout(cc.cwnd)
    cc.hystart_ack(10 ** 7, 10 ** 7 + MSS, 0.3, 8)
    assert cc.hs_done and not cc.in_css
    cwnd = cc.cwnd
    cc.on_ack(MSS, cwnd, 2.0, 0.3)              # the slow start after an RTO is RFC 5681's
    assert cc.cwnd == cwnd + MSS


def test_defaults_and_setting():
    assert Cubic.hystart is True and NewReno.hystart is False
    h = Host("10.0.0.1", congestion="newreno", hystart=True)
    assert h.connect(("10.0.0.2", 80)).cc.hystart is True
    h = Host("10.0.0.1", hystart=False)
    assert h.connect(("10.0.0.2", 80)).cc.hystart is False
    h = Host("10.0.0.1")
    assert h.connect(("10.0.0.2", 80)).cc.hystart is True        # CUBIC's default


# --- the engine, driven by a scripted peer ----------------------------------------------

def _scripted_slow_start(rtts, **settings):
    """A listening host accepts a scripted peer (window scale 7, timestamps) and sends it
    2 MB; the peer acknowledges every data segment on its own, ``rtts[k]`` seconds after
    it was sent in round k, echoing that segment's TSval (RFC 7323). With
    ``timestamps=False`` the peer offers SACK instead and its ACKs carry no timestamps.
    Returns the connection and (cwnd, ssthresh, in_css) after each round."""
    settings.setdefault("timestamps", True)
    settings.setdefault("snd_buf", 4 << 20)
    ts = settings["timestamps"]
    settings.setdefault("sack", not ts)
    p = ManualPeer(**settings)
    lst = p.host.listen(p.host_port)
    irs = 5_000_000
    syn_opts = (TcpOptions(mss=1460, wscale=7, timestamps=(100, 0)) if ts
                else TcpOptions(mss=1460, wscale=7, sack_permitted=True))
    sa, = p.send("S", irs, 0, 65535, opts=syn_opts)
    peer_ts = 101
    o = TcpOptions(timestamps=(peer_ts, sa.opts.timestamps[0])) if ts else None
    assert p.send("A", irs + 1, sa.seq + 1, 65535, opts=o, at=0.02) == []
    c = lst.accept()
    assert c.ts_ok == ts and c.sack_ok == (not ts)
    c.send(bytes(4 << 20))
    pending = [s for s in p.tick(0.02) if s.data]
    trace = []
    for rtt in rtts:
        batch, pending = pending, []
        for s in batch:                        # the round's ACKs, one per segment
            peer_ts += 1
            o = TcpOptions(timestamps=(peer_ts, s.opts.timestamps[0])) if ts else None
            out = p.send("A", irs + 1, s.seq + len(s.data), 65535, opts=o,
                         at=max(p.now, s.time + rtt))
            pending.extend(x for x in out if x.data)
        trace.append((c.cc.cwnd, c.cc.ssthresh, c.cc.in_css))
    return c, trace


def _peer_settings(**kw):
    kw.setdefault("rcv_buf", 4 << 20)
    kw.setdefault("delayed_ack", 0.0)
    return kw


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
def test_scripted_peer_rtt_increase_leaves_slow_start(congestion):
    # RTT 20 ms, then a queue builds: +6 ms per round from round 4 (RttThresh = 4 ms).
    rtts = [0.020, 0.020, 0.020, 0.026, 0.032, 0.038, 0.044, 0.050, 0.056, 0.062]
    c, trace = _scripted_slow_start(rtts, **_peer_settings(congestion=congestion,
                                                          hystart=True))
    mss = c.mss
    assert mss == 1448 and c.cc.hystart
    assert trace[:3] == [(20 * mss, INF, False), (40 * mss, INF, False),
                         (80 * mss, INF, False)]               # slow start doubles
    # Round 4's RTT samples (echoed TSvals) are 6 ms up: CSS, growing by about a quarter
    # per round for CSS_ROUNDS = 5 rounds, then congestion avoidance with ssthresh = cwnd.
    assert [t[2] for t in trace] == [False] * 3 + [True] * 5 + [False] * 2
    assert trace[3][0] < 160 * mss
    for prev, cur in zip(trace[3:7], trace[4:8]):
        assert 1.2 < cur[0] / prev[0] < 1.3
    assert trace[8][1] == 658478 and trace[9][1] == 658478
    assert trace[9][0] - trace[8][0] < 2 * mss                 # one SMSS per round or so
    assert c.retransmits == 0                                  # no loss was needed
    # Plain slow start on the same RTTs keeps doubling into the queue.
    c2, trace2 = _scripted_slow_start(rtts[:6], **_peer_settings(congestion=congestion,
                                                                hystart=False))
    assert trace2 == [(10 * mss * 2 ** k, INF, False) for k in range(1, 7)]


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
def test_rtt_increase_leaves_slow_start_without_timestamps(congestion):
    """Without timestamps (Windows' default) HyStart++ takes its per-ACK RTT samples from
    the send times RACK keeps per segment (SACK negotiated), as Linux does from its skb
    times: the same queue build-up ends slow start the same way. Before, such a
    connection had no samples and slow-started into the queue."""
    rtts = [0.020, 0.020, 0.020, 0.026, 0.032, 0.038, 0.044, 0.050, 0.056, 0.062]
    c, trace = _scripted_slow_start(rtts, **_peer_settings(congestion=congestion,
                                                          hystart=True, timestamps=False))
    mss = c.mss
    assert mss == 1460 and not c.ts_ok
    assert trace[:3] == [(20 * mss, INF, False), (40 * mss, INF, False),
                         (80 * mss, INF, False)]
    assert [t[2] for t in trace] == [False] * 3 + [True] * 5 + [False] * 2
    assert trace[8][1] != INF and trace[9][1] == trace[8][1]
    assert c.retransmits == 0
    c2, trace2 = _scripted_slow_start(rtts[:6], **_peer_settings(
        congestion=congestion, hystart=False, timestamps=False))
    assert trace2 == [(10 * mss * 2 ** k, INF, False) for k in range(1, 7)]


# --- a rate-limited path with a bounded queue ---------------------------------------------

def _netsim_transfer(nbytes, hystart, congestion, queue, **settings):
    a = Host("10.0.0.1", isn_secret=bytes(16), congestion=congestion, hystart=hystart,
             **settings)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), congestion=congestion, hystart=hystart,
             **settings)
    sim = NetSim(transmit_all=True)
    f = FaultConfig(delay=0.01, rate=20e6, queue_bytes=queue)
    sim.connect(a, b, f, f)
    lst = b.listen(80)
    c = a.connect(("10.0.0.2", 80))
    data = bytes(nbytes)
    st = {"sent": 0, "got": 0, "srv": None, "ss_drops": None}

    def done():
        if st["srv"] is None:
            st["srv"] = lst.accept()
        if st["sent"] < nbytes:
            st["sent"] += c.send(memoryview(data)[st["sent"]:])
        if st["srv"] is not None:
            st["got"] += len(st["srv"].recv(1 << 20))
        if st["ss_drops"] is None and c.cc.ssthresh != INFINITE_SSTHRESH:
            st["ss_drops"] = sim.stats()["queue_dropped"]    # drops in the initial slow start
        return st["got"] == nbytes and c.in_flight == 0

    sim.run(until=60.0, stop=done, max_steps=2_000_000)
    assert st["got"] == nbytes
    return sim.now, st["ss_drops"], sim.stats()["queue_dropped"]


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
def test_netsim_bounded_queue_fewer_slow_start_losses(congestion):
    # 20 Mbit/s, 20 ms RTT (BDP 50 kB), a 150 kB tail-drop queue; 2 MiB. Drops counted
    # until ssthresh is first set (slow start, and CSS with HyStart++): 134 without,
    # 43 with; done in 1.95 / 1.04 s without, 1.12 / 0.99 s with (CUBIC / NewReno).
    off = _netsim_transfer(2 << 20, False, congestion, 150_000)
    on = _netsim_transfer(2 << 20, True, congestion, 150_000)
    assert off[1] >= 100                                # plain slow start overshoots
    assert on[1] < off[1] / 2 and on[2] < off[2]
    assert on[0] < off[0]


@pytest.mark.parametrize("congestion", ["cubic", "newreno"])
def test_netsim_bounded_queue_without_timestamps(congestion):
    # The same path, timestamps off (SACK on): HyStart++'s samples come from RACK's
    # per-segment send times.
    off = _netsim_transfer(2 << 20, False, congestion, 150_000, timestamps=False)
    on = _netsim_transfer(2 << 20, True, congestion, 150_000, timestamps=False)
    assert off[1] >= 100
    assert on[1] < off[1] / 2 and on[2] < off[2]
    assert on[0] < off[0]


# --- the bookkeeping in C (HyStartRounds) and who calls the policy ------------------------

def test_rounds_report_css_entry_exit_and_end_as_events():
    from fasttcp.tcp._hystart import CSS_DONE, ENTER_CSS, LEAVE_CSS, HyStartRounds
    hs = HyStartRounds()                  # RFC 9406 4.3 defaults: N_RTT_SAMPLE = 8, ...
    assert hs.take(0, 10, 0.100, 8) == 0 and hs.window_end == 10
    assert hs.take(10, 20, 0.100, 1) == 0                # round 1 ends: lastRoundMinRTT
    assert hs.last_round_min_rtt == 0.100 and hs.rtt_sample_count == 0
    assert hs.take(12, 20, 0.113, 7) == 0                # 7 samples: not judged yet
    assert hs.take(14, 20, 0.120, 1) == ENTER_CSS        # 8th: 113 ms >= 100 + 12.5
    assert hs.in_css and hs.css_baseline_min_rtt == 0.113
    assert hs.take(16, 20, 0.101, 1) == LEAVE_CSS        # below the baseline: spurious
    assert not hs.in_css
    events = [hs.take(20, 30, 0.130, 8)]                 # round 2 ends (last = 101 ms)
    for end in range(30, 80, 10):                        # CSS, then CSS_ROUNDS rounds
        events.append(hs.take(end, end + 10, 0.130, 8))
    assert events == [0, ENTER_CSS, 0, 0, 0, CSS_DONE]
    assert hs.done and not hs.in_css and hs.take(90, 100, 0.1, 8) == 0
    hs = HyStartRounds()
    hs.end()                                             # a loss: no more HyStart++
    assert hs.done and hs.take(0, 10, 0.1, 8) == 0


class _CountingCubic(Cubic):
    exits = 0

    def hystart_exit(self):
        type(self).exits += 1
        super().hystart_exit()


def test_engine_feeds_the_rounds_and_calls_the_policy_at_the_end_of_css():
    # The scripted RTT rise of the test above, with a policy that counts its decisions:
    # the engine runs the rounds in C (no hystart_ack call per batch) and asks the policy
    # once, when CSS ends (ssthresh = cwnd).
    _CountingCubic.exits = 0
    rtts = [0.020, 0.020, 0.020, 0.026, 0.032, 0.038, 0.044, 0.050, 0.056, 0.062]
    c, trace = _scripted_slow_start(rtts, **_peer_settings(congestion=_CountingCubic,
                                                          hystart=True))
    assert [t[2] for t in trace] == [False] * 3 + [True] * 5 + [False] * 2
    assert _CountingCubic.exits == 1 and c.cc.hs_done
    assert c.cc.hystart_rounds() is c.cc._hs and c.cc.hs_css_rounds == 5
    assert c.cc.ssthresh == trace[8][1] == 658478


class _OwnHyStart(NewReno):
    """A policy with its own hystart_ack: the engine calls it per ACK batch."""

    def __init__(self, mss, initial_window=None):
        super().__init__(mss, initial_window)
        self.calls = []

    def hystart_ack(self, ack, snd_nxt, rtt, samples):
        self.calls.append((ack, rtt, samples))
        if len(self.calls) == 3:
            self.ssthresh = self.cwnd             # its own decision: leave slow start


def test_a_policy_with_its_own_hystart_ack_is_called_per_batch():
    c, trace = _scripted_slow_start([0.020] * 3, **_peer_settings(congestion=_OwnHyStart,
                                                                 hystart=True))
    assert c.cc.hystart_rounds() is None
    assert len(c.cc.calls) >= 3 and all(s > 0 and r is not None for _, r, s in c.cc.calls)
    assert trace[-1][1] != INF                   # its decision stood
