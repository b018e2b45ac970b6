"""Segment sizes against the path MTU: options counted in every segment (RFC 9293 3.7.1),
path MTU discovery with timestamps (RFC 1191), and black-hole detection (RFC 4821 style,
Linux's tcp_mtu_probing=1). All in virtual time over NetSim."""
from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from fasttcp import Host, State
from fasttcp.link import FaultConfig, NetSim
from fasttcp.wire import build_icmp_unreachable, parse

A, B, ROUTER = "10.0.0.1", "10.0.0.2", "10.0.0.254"
ICMP_PROTO = 1


class Run:
    """Two hosts exchanging ``nbytes`` each way (``back`` from B to A if given; both
    send, both read, both close) over a NetSim whose pipes may lose, duplicate and
    reorder, with an MTU that ``mtu_steps`` lowers mid-run: ``[(fraction, mtu), ...]``,
    in each direction once it has delivered that fraction of its stream. Every packet a
    host emits is checked against the path MTU that host has been told of (its link MTU,
    lowered by each frag-needed delivered to it): ``oversize`` lists the ones above it."""

    def __init__(self, nbytes: int, faults: FaultConfig, mtu_steps: Sequence = (),
                 router: bool = True, seed: int = 0, back: Optional[int] = None,
                 **settings) -> None:
        settings.setdefault("msl", 0.05)
        self.hosts = [Host(A, isn_secret=bytes(16), **settings),
                      Host(B, isn_secret=bytes(range(16)), **settings)]
        for h in self.hosts:
            h._raise_internal = True
        self.sim = NetSim(transmit_all=True, router_address=ROUTER if router else None)
        self.faults = faults
        self.sim.connect(*self.hosts, faults, faults)
        self.steps = [sorted(mtu_steps), sorted(mtu_steps)]
        self.pipe_mtu = [faults.mtu, faults.mtu]
        self.known_mtu: Dict[int, int] = {id(h): h.settings.mtu for h in self.hosts}
        self.oversize: List[Tuple[float, str, int, int]] = []
        self.max_len = {id(h): 0 for h in self.hosts}
        self.sim.taps.append(self._tap)
        self.sim.rx_taps.append(self._rx_tap)
        rng = random.Random(seed)
        self.nbytes = [nbytes, nbytes if back is None else back]
        self.data = [rng.randbytes(n) for n in self.nbytes]
        self.lst = self.hosts[1].listen(80)
        self.conns: List[Optional[object]] = [self.hosts[0].connect((B, 80)), None]
        self.sent = [0, 0]
        self.got = [bytearray(), bytearray()]

    def _tap(self, now: float, host, packet) -> None:
        if host is None:
            return                                  # the router's ICMP
        n = len(bytes(packet))
        self.max_len[id(host)] = max(self.max_len[id(host)], n)
        if n > self.known_mtu[id(host)]:
            self.oversize.append((now, host.address, n, self.known_mtu[id(host)]))

    def _rx_tap(self, now: float, host, packet) -> None:
        pk = parse(bytes(packet))
        if pk.is_icmp and (pk.icmp_type, pk.icmp_code) == (3, 4) and pk.icmp_mtu:
            self.known_mtu[id(host)] = min(self.known_mtu[id(host)], pk.icmp_mtu)

    def _step(self) -> bool:
        changed = False
        for d in range(2):                          # d: the direction host d -> 1 - d
            progress = len(self.got[1 - d]) / max(1, self.nbytes[d])
            while self.steps[d] and progress >= self.steps[d][0][0]:
                self.pipe_mtu[d] = self.steps[d].pop(0)[1]
                changed = True
        if changed:
            self.sim.connect(*self.hosts, self.faults.replace(mtu=self.pipe_mtu[0]),
                             self.faults.replace(mtu=self.pipe_mtu[1]))
        if self.conns[1] is None:
            self.conns[1] = self.lst.accept()
        for i, c in enumerate(self.conns):
            if c is None:
                continue
            if self.sent[i] < self.nbytes[i]:
                self.sent[i] += c.send(self.data[i][self.sent[i]:self.sent[i] + 65536])
            elif c.state in (State.ESTABLISHED, State.CLOSE_WAIT):
                c.shutdown()                        # our FIN; the peer may still send
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                self.got[i] += chunk
            if c.eof and self.sent[i] == self.nbytes[i] and not c.user_closed:
                c.close()
        return all(c is not None and c.state in (State.CLOSED, State.TIME_WAIT)
                   for c in self.conns)

    def run(self, until: float) -> "Run":
        self.sim.run(until=until, stop=self._step, max_steps=2_000_000)
        return self

    def delivered(self) -> Tuple[int, int]:
        """Bytes each side has read of the other's stream, checked byte for byte."""
        out = []
        for i in range(2):
            got = bytes(self.got[i])
            assert got == self.data[1 - i][:len(got)], "a stream arrived corrupted"
            out.append(len(got))
        return out[0], out[1]


# ==========================================================================================
# Item 3: SACK blocks on data segments count against the MTU (RFC 9293 3.7.1)
# ==========================================================================================

def test_sack_blocks_on_data_segments_stay_within_the_mtu():
    """Data both ways under loss: the ACK riding on every data segment carries SACK blocks
    (and D-SACKs); the segment's payload shrinks by their size (Linux's
    tcp_current_mss), so no packet exceeds mtu=1500 and nothing is lost to the MTU."""
    faults = FaultConfig(seed=3, loss=0.03, delay=0.005, mtu=1500)
    r = Run(300_000, faults, seed=3).run(until=120.0)
    assert r.oversize == []
    assert r.delivered() == (300_000, 300_000)
    assert max(r.max_len.values()) == 1500          # full-sized segments still go out
    assert sum(p.stats.mtu_dropped for p in r.sim.pipes) == 0


def _sack_pending_pair():
    """Two hosts (timestamps and SACK on) joined by hand, with B holding out-of-order data
    from A: B's next data segment carries an ACK with a SACK block."""
    a = Host(A, isn_secret=bytes(16), nodelay=True)
    b = Host(B, isn_secret=bytes(range(16)), nodelay=True)
    lst = b.listen(80)
    ca = a.connect((B, 80))
    now = 0.0
    for _ in range(10):
        now += 0.001
        b.receive(a.transmit(now), now)
        a.receive(b.transmit(now), now)
    cb = lst.accept()
    assert ca.info().mss == cb.info().mss == 1448
    ca.send(bytes(3 * 1448))
    first, second, third = a.transmit(now + 0.001)
    b.receive([first, third], now + 0.002)          # `second` is lost: a hole at B
    return a, b, ca, cb, now + 0.002


def test_a_data_segment_with_a_sack_block_shrinks_its_payload():
    """RFC 9293 3.7.1: the options of that very segment come out of the MSS. With
    timestamps (12) and one SACK block (12), a data segment of B carries 1500 - 40 - 24
    bytes, and the packet is exactly the MTU."""
    a, b, ca, cb, now = _sack_pending_pair()
    cb.send(bytes(5000))
    out = [parse(bytes(p)) for p in b.transmit(now + 0.001)]
    data = [p for p in out if p.payload_len]
    assert data, out
    assert all(p.total_length <= 1500 for p in out)
    assert data[0].options.sack and data[0].payload_len == 1500 - 40 - 12 - 12
    assert data[0].total_length == 1500


# ==========================================================================================
# Item 4: path MTU discovery with timestamps (RFC 1191) and black-hole detection
# ==========================================================================================

def test_frag_needed_mss_leaves_room_for_the_timestamp_option():
    """RFC 1191: next-hop MTU 1400 means 1400 - 40 - 12 bytes of data with timestamps; a
    path of MTU 1400 behind a router carries a 200,000-byte transfer."""
    faults = FaultConfig(seed=1, delay=0.002, mtu=1400)
    r = Run(200_000, faults).run(until=60.0)
    assert r.oversize == []
    assert r.delivered() == (200_000, 200_000)
    for c in r.conns:
        assert c.info().mss == 1400 - 40 - 12
    assert r.hosts[0].stats()["pmtu_updates"] >= 1


def _one_way_pair(**settings):
    a = Host(A, isn_secret=bytes(16), nodelay=True, **settings)
    b = Host(B, isn_secret=bytes(range(16)), **settings)
    lst = b.listen(80)
    ca = a.connect((B, 80))
    now = 0.0
    for _ in range(10):
        now += 0.001
        b.receive(a.transmit(now), now)
        a.receive(b.transmit(now), now)
    lst.accept()
    return a, ca, now


def test_frag_needed_is_clamped_to_the_linux_minimum_and_never_raises_the_mss():
    """A next-hop MTU below Linux's min_pmtu (552) counts as 552; one that would not lower
    the MSS (1500 with timestamps: 1448 is not below 1448) changes nothing."""
    a, ca, now = _one_way_pair()
    ca.send(bytes(4000))
    first = a.transmit(now)[0]
    a.receive([build_icmp_unreachable(ROUTER, A, 4, bytes(first), mtu=1500)], now + 0.001)
    assert ca.info().mss == 1448 and "pmtu_updates" not in a.stats()
    a.receive([build_icmp_unreachable(ROUTER, A, 4, bytes(first), mtu=300)], now + 0.002)
    assert ca.info().mss == 552 - 40 - 12
    out = [parse(bytes(p)) for p in a.transmit(now + 0.003)]
    assert out and all(p.total_length <= 552 for p in out)
    # Resent at once from SND.UNA at the new size (Linux's tcp_simple_retransmit).
    assert out[0].seq == parse(bytes(first)).seq


@pytest.mark.parametrize("probing", [0, 1])
def test_black_hole_detection_lowers_the_mss_after_repeated_timeouts(probing):
    """A path that silently drops packets above 1400 bytes (no frag-needed), data one
    way: with
    mtu_probing=1 the MSS falls to tcp_base_mss (1024) after tcp_retries1 (3) timeouts of
    full-sized segments and the transfer completes; with 0 (the default, as Linux) it
    cannot."""
    faults = FaultConfig(seed=2, delay=0.002, mtu=1400)
    r = Run(100_000, faults, router=False, back=0, mtu_probing=probing, max_retries=8,
            initial_rto=0.2).run(until=60.0)
    got = r.delivered()
    stats = r.hosts[0].stats()
    if probing:
        assert got == (0, 100_000)
        assert stats["pmtu_black_holes"] >= 1
        assert r.conns[0].info().mss == 1024
    else:
        assert got == (0, 0)
        assert "pmtu_black_holes" not in stats


# ==========================================================================================
# The property: every packet within the current path MTU, every byte delivered
# ==========================================================================================

@pytest.mark.parametrize("seed", range(30))
def test_lossy_bidirectional_transfer_with_falling_mtu_stays_within_it(seed):
    """Loss, reordering and duplication both ways, SACK and timestamps on, the path MTU
    falling 1500 -> 1400 -> 1280 during the transfer, a router answering with
    frag-needed: every packet either host emits fits the path MTU it has been told of
    (its link's, lowered by each frag-needed it received), and every byte arrives."""
    rng = random.Random(seed)
    faults = FaultConfig(seed=seed, loss=rng.choice([0.01, 0.03, 0.05]),
                         duplicate=0.01, reorder=0.02, reorder_delay=0.004,
                         delay=0.002, jitter=0.0005, mtu=1500)
    # A small send buffer keeps data being cut into segments after each drop.
    r = Run(150_000, faults, mtu_steps=[(0.3, 1400), (0.6, 1280)], seed=seed,
            snd_buf=32768)
    r.run(until=300.0)
    assert r.oversize == []
    assert r.delivered() == (150_000, 150_000)
    # The MTU did fall under the transfer, and the router had to say so.
    assert r.steps == [[], []] and r.sim.icmp_sent >= 2
    assert max(r.known_mtu.values()) <= 1400
