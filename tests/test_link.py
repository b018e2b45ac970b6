"""fasttcp.link: MemoryLink, FaultyLink, NetSim and pcap capture.

Fault statistics are checked on 10,000 packets against loose bounds (many standard
deviations wide): the generator is seeded, so the tests are deterministic anyway, and the
bounds only say the fault does what its name says in about the asked proportion.
"""
from __future__ import annotations

import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fasttcp.link import (
    LINKTYPE_IPV4,
    LINKTYPE_RAW,
    FaultConfig,
    FaultyLink,
    MemoryLink,
    NetSim,
    PcapLink,
    PcapWriter,
    RecordingHost,
    SimulationDidNotConverge,
    read_pcap,
)
from fasttcp.wire import MalformedPacket, TcpFlags, build_tcp, parse

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
N = 10_000


def seg(i: int, src: str = A, dst: str = B, size: int = 100) -> bytes:
    """A valid TCP segment whose sequence number names it."""
    return build_tcp(src, dst, 1234, 80, seq=i, ack=0, flags=TcpFlags.ACK,
                     payload=bytes([i & 0xFF]) * size)


def drain(pipe: FaultyLink, limit: int = 1_000_000) -> list[tuple[float, bytes]]:
    """Everything in the pipe with its exact arrival time, in arrival order."""
    out = []
    for _ in range(limit):
        t = pipe.next_arrival()
        if t is None:
            return out
        out.extend((t, p) for p in pipe.pop(t))
    raise AssertionError("pipe did not drain")


def seq_of(p: bytes) -> int:
    return int.from_bytes(p[24:28], "big")


# ==========================================================================================
# MemoryLink
# ==========================================================================================

def test_memory_pair_moves_batches_in_order():
    a, b = MemoryLink.pair()
    pkts = [seg(i) for i in range(10)]
    assert a.send_batch(pkts) == 10
    assert b.pending() == 10 and len(a) == 0
    assert b.recv_batch(4) == pkts[:4]
    assert b.recv_batch(100) == pkts[4:]
    assert b.recv_batch(100) == []
    b.send_batch([pkts[0]])
    assert a.recv_batch() == [pkts[0]]
    assert (a.tx_packets, b.rx_packets, b.tx_packets, a.rx_packets) == (10, 10, 1, 1)
    assert a.tx_bytes == sum(map(len, pkts))


def test_memory_queue_is_bounded_and_counts_drops():
    a, b = MemoryLink.pair(capacity=5)
    assert a.send_batch([seg(i) for i in range(8)]) == 5
    assert (a.tx_dropped, b.rx_dropped) == (3, 3)
    assert [seq_of(p) for p in b.recv_batch(10)] == [0, 1, 2, 3, 4]
    assert a.send_batch([seg(9)]) == 1          # room again once drained


def test_memory_copies_mutable_buffers_and_has_no_fileno():
    a, b = MemoryLink.pair()
    buf = bytearray(seg(1))
    a.send_batch([buf, memoryview(buf)])
    buf[0] = 0
    got = b.recv_batch()
    assert got == [seg(1), seg(1)] and all(type(p) is bytes for p in got)
    with pytest.raises(io.UnsupportedOperation):
        a.fileno()
    with pytest.raises(OSError):                # UnsupportedOperation is an OSError too
        b.fileno()


def test_memory_close():
    a, b = MemoryLink.pair()
    a.send_batch([seg(1)])
    b.close()
    assert b.pending() == 0
    assert a.send_batch([seg(2)]) == 0 and a.tx_dropped == 1
    with pytest.raises(ValueError):
        b.send_batch([seg(3)])


# ==========================================================================================
# FaultConfig / FaultyLink
# ==========================================================================================

@pytest.mark.parametrize("kwargs", [
    dict(loss=1.5), dict(duplicate=-0.1), dict(delay=-1.0), dict(jitter=math.inf),
    dict(reorder=0.1), dict(corrupt_bits=0), dict(rate=0), dict(queue_bytes=1000),
    dict(rate=1e6, queue_bytes=-1), dict(mtu=0),
])
def test_fault_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        FaultConfig(**kwargs)


def test_ideal_pipe_delivers_at_once_in_order():
    pipe = FaultyLink()
    assert FaultConfig().ideal and pipe.next_arrival() is None
    pipe.push([seg(i) for i in range(100)], 1.5)
    assert pipe.next_arrival() == 1.5 and len(pipe) == 100
    assert pipe.pop(1.4) == []
    assert [seq_of(p) for p in pipe.pop(1.5)] == list(range(100))
    assert pipe.stats.delivered == 100 and pipe.stats.dropped == 0


EVERYTHING = FaultConfig(seed=42, loss=0.05, duplicate=0.05, reorder=0.05, reorder_delay=0.02,
                         corrupt=0.05, delay=0.01, jitter=0.002, rate=10e6, queue_bytes=20_000,
                         mtu=1200)


def run_pipe(cfg: FaultConfig, n: int = 3000) -> list[tuple[float, bytes]]:
    pipe = FaultyLink(cfg)
    out = []
    for i in range(n):
        now = i * 1e-4
        pipe.push([seg(i, size=50 + (i * 37) % 1300)], now)
        out.extend((now, p) for p in pipe.pop(now))
    return out + drain(pipe)


def test_same_seed_same_output_different_seed_different_output():
    first = run_pipe(EVERYTHING)
    assert first == run_pipe(EVERYTHING)
    assert first != run_pipe(EVERYTHING.replace(seed=43))
    # str seeds are hashed with SHA-512 by random.seed: as stable as ints across processes
    assert run_pipe(EVERYTHING.replace(seed="x")) == run_pipe(EVERYTHING.replace(seed="x"))


def test_loss_proportion():
    pipe = FaultyLink(FaultConfig(seed=1, loss=0.1))
    pipe.push([seg(i) for i in range(N)], 0.0)
    got = [seq_of(p) for p in pipe.pop(0.0)]
    assert 800 <= N - len(got) <= 1200
    assert pipe.stats.lost == N - len(got)
    assert got == sorted(got)                   # loss alone never reorders


def test_duplicate_proportion():
    pipe = FaultyLink(FaultConfig(seed=2, duplicate=0.05))
    pkts = [seg(i) for i in range(N)]
    pipe.push(pkts, 0.0)
    got = pipe.pop(0.0)
    extra = len(got) - N
    assert 400 <= extra <= 600 and pipe.stats.duplicated == extra
    assert set(got) == set(pkts)                # copies are exact
    seqs = [seq_of(p) for p in got]
    assert seqs == sorted(seqs)                 # a copy travels beside its original


def test_corruption_proportion_and_every_corrupt_packet_fails_checksum():
    pipe = FaultyLink(FaultConfig(seed=3, corrupt=0.05))
    pkts = [seg(i) for i in range(N)]
    pipe.push(pkts, 0.0)
    got = pipe.pop(0.0)
    assert len(got) == N
    changed = 0
    for orig, p in zip(pkts, got):
        if p == orig:
            parse(p)
            continue
        changed += 1
        assert len(p) == len(orig)
        assert bin(int.from_bytes(p, "big") ^ int.from_bytes(orig, "big")).count("1") == 1
        with pytest.raises(MalformedPacket):    # one flipped bit always breaks a checksum
            parse(p)
    assert 400 <= changed <= 600 and pipe.stats.corrupted == changed


def test_corrupt_bits_flips_that_many_distinct_bits():
    pipe = FaultyLink(FaultConfig(seed=4, corrupt=1.0, corrupt_bits=5))
    pkts = [seg(i) for i in range(200)]
    pipe.push(pkts, 0.0)
    for orig, p in zip(pkts, pipe.pop(0.0)):
        assert bin(int.from_bytes(p, "big") ^ int.from_bytes(orig, "big")).count("1") == 5


def test_reorder_proportion():
    gap, hold = 0.001, 0.01
    pipe = FaultyLink(FaultConfig(seed=5, reorder=0.1, reorder_delay=hold))
    for i in range(N):
        pipe.push([seg(i)], i * gap)
    got = [seq_of(p) for _, p in drain(pipe)]
    assert sorted(got) == list(range(N))        # nothing lost or made up
    assert 800 <= pipe.stats.reordered <= 1200
    # A held packet is overtaken when its extra delay beats the gap: P = 1 - gap/hold.
    overtaken = sum(1 for i, s in enumerate(got) if any(x > s for x in got[max(0, i - 20):i]))
    expected = N * 0.1 * (1 - gap / hold)
    assert 0.75 * expected <= overtaken <= 1.25 * expected


def test_delay_and_jitter_bounds_and_mean():
    delay, jitter = 0.05, 0.01
    pipe = FaultyLink(FaultConfig(seed=6, delay=delay, jitter=jitter))
    sent_at = {}
    for i in range(N):
        sent_at[i] = i * 1e-3
        pipe.push([seg(i)], sent_at[i])
    lat = [t - sent_at[seq_of(p)] for t, p in drain(pipe)]
    assert len(lat) == N
    assert all(delay - 1e-12 <= x <= delay + jitter + 1e-12 for x in lat)
    assert abs(sum(lat) / N - (delay + jitter / 2)) < jitter * 0.02
    assert min(lat) < delay + jitter * 0.01 and max(lat) > delay + jitter * 0.99


def test_jitter_can_reorder_unless_told_not_to():
    def order(jitter_reorders: bool) -> list[int]:
        pipe = FaultyLink(FaultConfig(seed=7, delay=0.01, jitter=0.005,
                                      jitter_reorders=jitter_reorders))
        for i in range(1000):
            pipe.push([seg(i)], i * 1e-4)
        return [seq_of(p) for _, p in drain(pipe)]
    assert order(True) != list(range(1000))
    assert order(False) == list(range(1000))


def test_rate_limit_serialises_exactly():
    # 1024-byte packets at 8 Mi bit/s take exactly 1/1024 s each: binary-exact times.
    rate, delay = 8192 * 1024, 0.25
    pipe = FaultyLink(FaultConfig(rate=rate, delay=delay))
    pkts = [seg(i, size=1024 - 40) for i in range(5)]
    assert all(len(p) == 1024 for p in pkts)
    pipe.push(pkts[:3], 0.0)              # back to back: leave at 1, 2, 3 / 1024
    pipe.push(pkts[3:4], 1 / 1024)         # arrives while busy: waits for the third
    pipe.push(pkts[4:5], 1.0)             # link idle again: starts at once
    got = drain(pipe)
    assert [t for t, _ in got] == [delay + 1 / 1024, delay + 2 / 1024, delay + 3 / 1024,
                                   delay + 4 / 1024, 1.0 + 1 / 1024 + delay]
    assert [p for _, p in got] == pkts


def test_rate_limit_long_train_does_not_drift():
    # 1250 bytes at 1 Mbit/s = 10 ms each; summing 0.01 a thousand times would drift.
    pipe = FaultyLink(FaultConfig(rate=1e6))
    pipe.push([seg(i, size=1250 - 40) for i in range(1000)], 0.0)
    times = [t for t, _ in drain(pipe)]
    assert times == [(k + 1) * 10_000 / 1e6 for k in range(1000)]
    assert times[-1] == 10.0


def test_rate_limit_queue_tail_drops_like_a_router():
    rate = 8e6                                    # 1000-byte packets take 1 ms
    pipe = FaultyLink(FaultConfig(rate=rate, queue_bytes=3000))
    pkts = [seg(i, size=960) for i in range(10)]
    pipe.push(pkts, 0.0)
    assert pipe.stats.queue_dropped == 7 and pipe.stats.queue_peak_bytes == 3000
    got = drain(pipe)
    assert [seq_of(p) for _, p in got] == [0, 1, 2]
    assert [t for t, _ in got] == pytest.approx([0.001, 0.002, 0.003], abs=1e-15)
    # Offered at twice the link rate for a while, the link carries its rate, no more.
    pipe = FaultyLink(FaultConfig(rate=rate, queue_bytes=10_000))
    for i in range(2000):
        pipe.push([seg(i, size=960)], i * 0.0005)
    got = drain(pipe)
    assert 990 <= len(got) <= 1010
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    assert min(gaps) == pytest.approx(0.001)     # never faster than serialisation
    assert pipe.stats.queue_peak_bytes <= 10_000


def test_mtu_drops_and_reports_oversize_packets():
    seen = []
    pipe = FaultyLink(FaultConfig(mtu=576), on_oversize=lambda p, now: seen.append((now, p)))
    small, exact, big = seg(1, size=100), seg(2, size=576 - 40), seg(3, size=600)
    assert len(exact) == 576
    pipe.push([small, exact, big, big], 2.0)
    assert pipe.pop(2.0) == [small, exact]
    assert pipe.stats.mtu_dropped == 2 and seen == [(2.0, big), (2.0, big)]


configs = st.builds(
    FaultConfig,
    seed=st.integers(0, 2**32),
    loss=st.sampled_from([0.0, 0.1, 0.5]),
    duplicate=st.sampled_from([0.0, 0.1, 0.5]),
    reorder=st.sampled_from([0.0, 0.2]),
    reorder_delay=st.just(0.003),
    delay=st.sampled_from([0.0, 0.001, 0.0123]),
    jitter=st.sampled_from([0.0, 0.002]),
    jitter_reorders=st.booleans(),
    rate=st.sampled_from([None, 1e6, 1e8]),
    mtu=st.sampled_from([None, 600]),
)


@settings(max_examples=60, deadline=None)
@given(cfg=configs, gaps=st.lists(st.sampled_from([0.0, 1e-4, 1e-3, 0.01]), min_size=1,
                                   max_size=60),
       queue=st.sampled_from([None, 3000]))
def test_pipe_conserves_packets_and_never_delivers_early(cfg, gaps, queue):
    if queue is not None and cfg.rate is not None:
        cfg = cfg.replace(queue_bytes=queue)
    pipe = FaultyLink(cfg)
    sent_at, now, out = {}, 0.0, []
    for i, gap in enumerate(gaps):
        now += gap
        sent_at[i] = now
        pipe.push([seg(i, size=(i * 97) % 800)], now)
        out.extend((now, p) for p in pipe.pop(now))
    out += drain(pipe)
    s = pipe.stats
    assert s.packets_in == len(gaps) and len(out) == s.delivered
    assert s.delivered + s.lost + s.mtu_dropped + s.queue_dropped == len(gaps) + s.duplicated
    times = [t for t, _ in out]
    assert times == sorted(times)
    for t, p in out:
        i = seq_of(p)
        assert len(p) <= (cfg.mtu or 65535)
        assert t >= sent_at[i] + cfg.delay - 1e-12
        if cfg.rate:
            assert t >= sent_at[i] + cfg.delay + len(p) * 8 / cfg.rate - 1e-9
    if not cfg.reorder and not (cfg.jitter and cfg.jitter_reorders):
        seqs = [seq_of(p) for _, p in out]
        assert seqs == sorted(seqs)


def test_faulty_link_wrapping_a_memory_link():
    clock = [0.0]
    a, b = MemoryLink.pair()
    fa = FaultyLink(FaultConfig(delay=0.1, seed=9), link=a, clock=lambda: clock[0])
    fb = FaultyLink(FaultConfig(delay=0.1, loss=1.0), link=b, clock=lambda: clock[0])
    assert fa.send_batch([seg(1), seg(2)]) == 2
    assert fb.recv_batch() == []                 # still on the wire
    assert fa.next_arrival() == pytest.approx(0.1)
    clock[0] = 0.1
    assert fb.recv_batch() == []                 # nobody flushed fa yet
    assert fa.flush() == 2
    assert [seq_of(p) for p in fb.recv_batch()] == [1, 2]
    fb.send_batch([seg(3)])                      # b->a loses everything
    clock[0] = 1.0
    assert fa.recv_batch() == [] and fb.stats.lost == 1
    with pytest.raises(io.UnsupportedOperation):
        fa.fileno()
    with pytest.raises(TypeError):
        FaultyLink().send_batch([seg(1)])


def test_faulty_link_impairs_what_it_receives_with_rx():
    """``rx=``: packets read from the wrapped link go through a second pipe (its own seed)
    and come out of recv_batch when due; what is sent goes through the first."""
    clock = [0.0]
    a, b = MemoryLink.pair()
    fb = FaultyLink(FaultConfig(), link=b, clock=lambda: clock[0],
                    rx=FaultConfig(delay=0.1, seed=3))
    a.send_batch([seg(1), seg(2), seg(3)])
    assert fb.recv_batch() == []                 # read from b, now in the rx pipe
    assert fb.next_arrival() == pytest.approx(0.1)
    clock[0] = 0.1
    assert [seq_of(p) for p in fb.recv_batch(2)] == [1, 2]      # at most max
    assert fb.next_arrival() == 0.1              # one is due and not read yet
    assert [seq_of(p) for p in fb.recv_batch(2)] == [3]
    assert fb.next_arrival() is None and fb.rx.stats.delivered == 3
    fb.send_batch([seg(4)])                      # the send direction is not delayed
    assert [seq_of(p) for p in a.recv_batch()] == [4]
    lossy = FaultyLink(FaultConfig(), link=a, clock=lambda: clock[0],
                       rx=FaultConfig(loss=1.0))
    b.send_batch([seg(5)])
    assert lossy.recv_batch() == [] and lossy.rx.stats.lost == 1
    with pytest.raises(ValueError):
        FaultyLink(rx=FaultConfig())             # rx needs a wrapped link


# ==========================================================================================
# NetSim with fake hosts
# ==========================================================================================

class EchoHost:
    """Answers every packet with the same packet, addresses swapped."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.out: list[bytes] = []
        self.received: list[tuple[float, int]] = []    # (now, batch size)

    def receive(self, packets: list[bytes], now: float) -> None:
        self.received.append((now, len(packets)))
        for p in packets:
            pk = parse(p)
            self.out.append(build_tcp(self.address, pk.src, pk.dport, pk.sport, pk.seq,
                                      payload=pk.payload))

    def transmit(self, now: float) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def poll_at(self) -> float | None:
        return None


class BurstHost:
    """Sends `count` packets to `peer` at its first transmit, then counts what comes back."""

    def __init__(self, address: str, peer: str, count: int, size: int = 100) -> None:
        self.address, self.peer, self.count, self.size = address, peer, count, size
        self.sent = False
        self.got: list[tuple[float, bytes]] = []

    def receive(self, packets: list[bytes], now: float) -> None:
        self.got.extend((now, p) for p in packets)

    def transmit(self, now: float) -> list[bytes]:
        if self.sent:
            return []
        self.sent = True
        return [seg(i, self.address, self.peer, self.size) for i in range(self.count)]

    def poll_at(self) -> float | None:
        return None


class TimerHost:
    """Sends one packet to `peer` at each of `times`; records when transmit ran."""

    def __init__(self, address: str, peer: str, times: list[float]) -> None:
        self.address, self.peer = address, peer
        self.times = list(times)
        self.calls: list[float] = []
        self.received: list[bytes] = []

    def receive(self, packets: list[bytes], now: float) -> None:
        self.received.extend(packets)

    def transmit(self, now: float) -> list[bytes]:
        self.calls.append(now)
        out = []
        while self.times and self.times[0] <= now:
            self.times.pop(0)
            out.append(seg(len(self.calls), self.address, self.peer))
        return out

    def poll_at(self) -> float | None:
        return self.times[0] if self.times else None


def test_netsim_echo_converges_and_batches():
    client, server = BurstHost(A, B, 500), EchoHost(B)
    sim = NetSim()
    sim.connect(client, server, FaultConfig(delay=0.01), FaultConfig(delay=0.02))
    end = sim.run()
    assert end == pytest.approx(0.03)
    assert len(client.got) == 500
    assert all(t == pytest.approx(0.03) for t, _ in client.got)
    assert [seq_of(p) for _, p in client.got] == list(range(500))
    assert server.received == [(pytest.approx(0.01), 500)]    # one batch, not 500 calls
    assert sim.packets_sent == 1000 and sim.packets_delivered == 1000
    assert sim.steps == 2 and sim.in_flight() == 0


def test_netsim_timers_fire_at_their_times_and_run_ends_when_idle():
    times = [0.1, 0.25, 0.25, 1.0, 3.5]
    h, sink = TimerHost(A, B, times), EchoHost(B)
    sim = NetSim(FaultConfig(delay=0.001))
    sim.add_host(h)
    sim.add_host(sink)
    end = sim.run()
    # the kick at t=0, then every distinct timer time, then the echoes' arrivals
    assert [c for c in h.calls if c in times] == [0.1, 0.25, 1.0, 3.5]
    assert len(h.received) == 5
    assert end == pytest.approx(3.5 + 0.002)
    assert h.poll_at() is None and sim.next_event() is None


def test_netsim_run_until_and_stop():
    h, sink = TimerHost(A, B, [i * 0.1 for i in range(1, 11)]), EchoHost(B)
    sim = NetSim()
    sim.add_host(h)
    sim.add_host(sink)
    assert sim.run(until=0.45) == 0.45          # clock ends at until
    assert len(sink.received) == 4
    assert sim.run(stop=lambda: len(sink.received) >= 7) == pytest.approx(0.7)
    assert len(sink.received) == 7
    assert sim.run() == pytest.approx(1.0) and len(sink.received) == 10
    assert sim.run(until=5.0) == 5.0            # idle: until still sets the clock
    with pytest.raises(ValueError):
        sim.run(until=1.0)


def test_netsim_max_steps_raises():
    h = TimerHost(A, B, [i * 0.001 for i in range(1, 100_000)])
    sim = NetSim()
    sim.add_host(h)
    sim.add_host(EchoHost(B))
    with pytest.raises(SimulationDidNotConverge, match="did not converge in 100 steps"):
        sim.run(max_steps=100)


def test_netsim_detects_a_host_whose_timer_never_moves():
    class Stuck(EchoHost):
        def poll_at(self) -> float | None:
            return 0.5
    sim = NetSim()
    sim.add_host(Stuck(A))
    with pytest.raises(SimulationDidNotConverge, match="time stuck"):
        sim.run()
    assert sim.now == 0.5


def test_netsim_routes_by_destination_on_one_segment():
    h1 = BurstHost(A, B, 3)
    h2 = BurstHost("10.0.0.5", "10.0.0.4", 2)
    sinkb, sinkc = EchoHost(B), EchoHost(C)
    sim = NetSim()
    for h in (h1, h2, sinkb):
        sim.add_host(h)
    sim.add_host(sinkc, addresses=[C, "10.0.0.4"])      # one host, two addresses
    stray = TimerHost("10.0.0.9", "192.0.2.7", [0.5])  # to an address nobody owns
    sim.add_host(stray)
    sim.run()
    assert [seq_of(p) for _, p in h1.got] == [0, 1, 2]
    assert [seq_of(p) for _, p in h2.got] == [0, 1]
    assert {parse(p).src for _, p in h1.got} == {B}
    assert {parse(p).src for _, p in h2.got} == {C}
    assert sinkb.received == [(0.0, 3)] and sinkc.received == [(0.0, 2)]
    assert sim.unroutable == 1
    with pytest.raises(ValueError):
        sim.add_host(EchoHost(B))               # address taken


def test_netsim_taps_see_every_packet_sent_and_received():
    sent, got = [], []
    client, server = BurstHost(A, B, 20), EchoHost(B)
    sim = NetSim()
    sim.connect(client, server, FaultConfig(delay=0.5, loss=0.5, seed=1), FaultConfig(delay=0.5))
    sim.taps.append(lambda t, h, p: sent.append((t, h.address, p)))
    sim.rx_taps.append(lambda t, h, p: got.append((t, h.address, p)))
    sim.run()
    lost = sim.pipe(client, server).stats.lost
    assert 0 < lost < 20
    assert len(sent) == 20 + (20 - lost) and len(got) == 2 * (20 - lost)
    assert [x for x in sent if x[1] == A] == [(0.0, A, seg(i)) for i in range(20)]
    assert all(t == 0.5 for t, addr, _ in sent if addr == B)
    assert [(t, addr) for t, addr, _ in got] == [(0.5, B)] * (20 - lost) + [(1.0, A)] * (20 - lost)


class GoBackN:
    """A tiny reliable sender (go-back-N with a fixed timeout) and its receiver."""

    def __init__(self, address: str, peer: str, total: int = 0, window: int = 16,
                 rto: float = 0.2) -> None:
        self.address, self.peer, self.total, self.window, self.rto = \
            address, peer, total, window, rto
        self.base = self.next = 0
        self.timer: float | None = None
        self.expected = 0                      # receiver side
        self.data: list[bytes] = []
        self.ack_due = False
        self.bad = 0

    def receive(self, packets: list[bytes], now: float) -> None:
        for p in packets:
            try:
                pk = parse(p)
            except MalformedPacket:
                self.bad += 1
                continue
            if pk.flags & TcpFlags.PSH:        # data, for the receiver
                if pk.seq == self.expected:
                    self.expected += 1
                    self.data.append(pk.payload)
                self.ack_due = True
            elif pk.ack > self.base:           # an ACK, for the sender
                self.base = pk.ack
                self.timer = None if self.base == self.next else now + self.rto

    def transmit(self, now: float) -> list[bytes]:
        out = []
        if self.ack_due:
            self.ack_due = False
            out.append(build_tcp(self.address, self.peer, 80, 1234, 0, ack=self.expected))
        if self.timer is not None and now >= self.timer:
            self.next, self.timer = self.base, None        # time out: go back N
        while self.next < min(self.base + self.window, self.total):
            out.append(build_tcp(self.address, self.peer, 1234, 80, self.next,
                                 flags=TcpFlags.ACK | TcpFlags.PSH,
                                 payload=self.next.to_bytes(4, "big") * 100))
            self.next += 1
            if self.timer is None:
                self.timer = now + self.rto
        return out

    def poll_at(self) -> float | None:
        return self.timer


def transfer(faults: FaultConfig, total: int = 300) -> tuple[GoBackN, GoBackN, NetSim, list]:
    snd, rcv = GoBackN(A, B, total), GoBackN(B, A)
    sim = NetSim()
    sim.connect(snd, rcv, faults, faults.replace(rate=None, queue_bytes=None))
    trace: list = []
    sim.taps.append(lambda t, h, p: trace.append((t, h.address, p)))
    sim.run(stop=lambda: snd.base == total and rcv.expected == total, max_steps=100_000)
    return snd, rcv, sim, trace


@pytest.mark.parametrize("faults", [
    FaultConfig(delay=0.01),
    FaultConfig(seed=1, loss=0.05, delay=0.01, jitter=0.005),
    FaultConfig(seed=2, duplicate=0.1, reorder=0.1, reorder_delay=0.02, delay=0.01),
    FaultConfig(seed=3, corrupt=0.05, delay=0.01, rate=2e6, queue_bytes=8000),
], ids=["clean", "loss+jitter", "dup+reorder", "corrupt+rate"])
def test_netsim_reliable_transfer_completes_under_faults(faults):
    snd, rcv, sim, trace = transfer(faults)
    assert [int.from_bytes(d[:4], "big") for d in rcv.data] == list(range(300))
    if faults.corrupt:
        assert snd.bad + rcv.bad > 0 and sim.stats()["corrupted"] == snd.bad + rcv.bad
    if faults.rate:
        # 300 x 440 bytes at 2 Mbit/s cannot finish in less than 0.53 s
        assert sim.now >= 300 * 440 * 8 / 2e6


def test_netsim_is_deterministic():
    faults = FaultConfig(seed=11, loss=0.05, duplicate=0.05, reorder=0.05, reorder_delay=0.03,
                         corrupt=0.02, delay=0.01, jitter=0.004)
    one, two = transfer(faults)[3], transfer(faults)[3]
    assert one == two
    assert one != transfer(faults.replace(seed=12))[3]


def test_netsim_two_directions_have_independent_streams():
    sim = NetSim()
    a, b = EchoHost(A), EchoHost(B)
    ab, ba = sim.connect(a, b, FaultConfig(seed=5, loss=0.5), FaultConfig(seed=5, loss=0.5))
    draws_ab = [ab.rng.random() for _ in range(5)]
    assert draws_ab != [ba.rng.random() for _ in range(5)]


def test_netsim_mtu_drop_sends_icmp_frag_needed_from_the_router():
    from scapy.layers.inet import ICMP, IP
    client = BurstHost(A, B, 1, size=1400)
    sim = NetSim(router_address="10.0.0.254")
    sim.connect(client, EchoHost(B), FaultConfig(mtu=1280), None)
    sim.run()
    assert sim.icmp_sent == 1 and len(client.got) == 1
    icmp = IP(client.got[0][1])
    assert icmp.src == "10.0.0.254" and icmp.dst == A
    assert (icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (3, 4, 1280)
    assert bytes(icmp[ICMP].payload)[:28] == seg(0, size=1400)[:28]   # header + 8 bytes


def test_netsim_zero_delay_burst_is_one_batch():
    client, server = BurstHost(A, B, 2000), EchoHost(B)
    sim = NetSim()
    sim.add_host(client)
    sim.add_host(server)
    assert sim.run() == 0.0
    assert server.received == [(0.0, 2000)] and len(client.got) == 2000
    assert sim.steps == 2


def test_netsim_coalesce_batches_rate_limited_arrivals():
    def go(coalesce: float) -> tuple[EchoHost, NetSim]:
        client, server = BurstHost(A, B, 200, size=1210), EchoHost(B)   # 1250-byte packets
        sim = NetSim(coalesce=coalesce)
        sim.connect(client, server, FaultConfig(rate=1e7), None)          # 1 ms each
        sim.run()
        return server, sim
    exact, sim0 = go(0.0)
    assert exact.received == [(pytest.approx((k + 1) * 1e-3), 1) for k in range(200)]
    batched, sim1 = go(0.0045)
    sizes = [n for _, n in batched.received]
    assert sum(sizes) == 200 and max(sizes) == 5 and sim1.steps < sim0.steps / 4
    # each batch is delivered `coalesce` after its first packet arrived, never earlier
    first = 0
    for t, n in batched.received:
        assert t == pytest.approx((first + 1) * 1e-3 + 0.0045)
        first += n


def test_netsim_step_and_kick():
    class Queued(EchoHost):
        """Has output queued by 'the app', but a poll_at that does not show it."""
    h, sink = Queued(A), EchoHost(B)
    sim = NetSim(FaultConfig(delay=1.0))
    sim.add_host(h)
    sim.add_host(sink)
    h.out.append(seg(7))
    assert sim.step() is False                  # nothing visible to the agenda
    sim.kick()
    assert sim.in_flight() == 1 and sim.next_event() == 1.0
    assert sim.step(until=0.5) is False and sim.now == 0.0
    assert sim.step() is True and sim.now == 1.0 and sink.received == [(1.0, 1)]


def test_netsim_transmit_all_calls_every_host():
    h1, h2 = TimerHost(A, B, [1.0, 2.0]), TimerHost(B, A, [])
    sim = NetSim(transmit_all=True)
    sim.add_host(h1)
    sim.add_host(h2)
    sim.run()
    assert h2.calls == [0.0, 1.0, 1.0, 2.0, 2.0]    # timer step, then delivery step
    assert len(h2.received) == 2


# ==========================================================================================
# pcap
# ==========================================================================================

def scapy_read(path):
    from scapy.utils import rdpcap
    return rdpcap(str(path))


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_IPV4])
def test_pcap_round_trip_with_scapy(tmp_path, linktype):
    from scapy.layers.inet import IP, TCP
    path = tmp_path / "x.pcap"
    pkts = [seg(i, size=i * 7) for i in range(50)]
    stamps = [1_700_000_000 + i * 0.0123457 for i in range(50)]
    with PcapWriter(path, linktype=linktype) as w:
        for p, t in zip(pkts, stamps):
            w.write(p, t)
    got = scapy_read(path)
    assert len(got) == 50
    for p, t, g in zip(pkts, stamps, got):
        assert bytes(g) == p
        assert g.time == pytest.approx(round(t * 1e6) / 1e6, abs=1e-7)
        assert round(float(g.time) * 1e6) == round(t * 1e6)
        assert IP in g and g[TCP].seq == seq_of(p)
    assert read_pcap(path) == (linktype, [(round(t * 1e6) / 1e6, p)
                                          for t, p in zip(stamps, pkts)])


def test_read_pcap_reads_what_scapy_writes(tmp_path):
    from scapy.layers.inet import IP
    from scapy.utils import wrpcap
    path = tmp_path / "s.pcap"
    pkts = []
    for i in range(5):
        p = IP(seg(i))
        p.time = 10 + i * 0.5
        pkts.append(p)
    wrpcap(str(path), pkts, linktype=LINKTYPE_RAW)
    linktype, got = read_pcap(path)
    assert linktype == LINKTYPE_RAW
    assert got == [(10 + i * 0.5, seg(i)) for i in range(5)]


def test_pcap_snaplen_and_file_objects():
    buf = io.BytesIO()
    w = PcapWriter(buf, snaplen=60)
    w.write(seg(1, size=200), 0.5)
    w.close()
    assert not buf.closed                       # a file we were given stays open
    buf.seek(0)
    _, got = read_pcap(buf)
    assert got == [(0.5, seg(1, size=200)[:60])]
    raw = buf.getvalue()
    assert int.from_bytes(raw[24 + 12:24 + 16], "little") == 240   # original length kept
    with pytest.raises(ValueError):
        w.write(seg(1), 1.0)
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO()).write(seg(1), -1.0)
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO(), linktype=1)


def test_pcap_tap_records_a_simulation(tmp_path):
    path, rxpath = tmp_path / "sim.pcap", tmp_path / "rx.pcap"
    client, server = BurstHost(A, B, 10), EchoHost(B)
    sim = NetSim()
    sim.connect(client, server, FaultConfig(delay=0.25, loss=0.3, seed=3),
                FaultConfig(delay=0.125))
    log = []
    sim.taps.append(lambda t, h, p: log.append((t, p)))
    with PcapWriter(path) as w, PcapWriter(rxpath) as rx:
        w.tap(sim)
        rx.tap(sim, received=True, host=client)
        sim.run()
    got = scapy_read(path)
    assert [(float(g.time), bytes(g)) for g in got] == log
    assert [bytes(g) for g in scapy_read(rxpath)] == [p for _, p in client.got]
    assert all(float(g.time) == 0.375 for g in scapy_read(rxpath))


def test_pcap_link_and_recording_host(tmp_path):
    clock = [2.0]
    a, b = MemoryLink.pair()
    with PcapWriter(tmp_path / "link.pcap") as w:
        pa = PcapLink(a, w, clock=lambda: clock[0])
        pa.send_batch([seg(1), seg(2)])
        clock[0] = 3.0
        b.send_batch([seg(3)])
        assert pa.recv_batch() == [seg(3)]
        assert pa.pending() == 0                # other attributes pass through
    assert [(float(g.time), bytes(g)) for g in scapy_read(tmp_path / "link.pcap")] == \
        [(2.0, seg(1)), (2.0, seg(2)), (3.0, seg(3))]

    with PcapWriter(tmp_path / "host.pcap") as w:
        client = RecordingHost(BurstHost(A, B, 3), w)
        sim = NetSim()
        sim.connect(client, EchoHost(B), FaultConfig(delay=0.5), FaultConfig(delay=0.5))
        sim.run()
        assert len(client.got) == 3             # attribute of the wrapped host
    got = scapy_read(tmp_path / "host.pcap")
    assert [float(g.time) for g in got] == [0.0] * 3 + [1.0] * 3
    assert [seq_of(bytes(g)) for g in got] == [0, 1, 2, 0, 1, 2]
