"""ECN (RFC 3168) with a scripted peer: negotiation on the SYNs (passive, as Linux's
tcp_ecn=2 default; active with ``Settings.ecn=1``), ECT(0) on new data only, the receiver's
ECE echo from CE until CWR, the sender's once-per-window reduction and CWR, scapy's view of
the IP ECN bits, and the TUN link's virtio GSO ECN flag."""
from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP

from fasttcp import Host
from fasttcp.link import FaultConfig, NetSim
from fasttcp.link._tunio import TunIO
from fasttcp.tcp.congestion import INFINITE_SSTHRESH
from fasttcp.wire import TcpOptions, build_tcp, parse
from tcp_harness import HOST_IP, MASK, PEER_IP, Ctx, ManualPeer, Seg, flag_bits

ECT0, CE = 0x02, 0x03
MSS_OPT = TcpOptions(mss=1460)


def tos(seg: Seg) -> int:
    return seg.pkt.tos & 0x03


def peer_packet(p: ManualPeer, flags: str, seq: int, ack: int = 0, data: bytes = b"",
                ecn: int = 0, opts=None, win: int = 65535) -> bytes:
    """A segment from the peer with the IP ECN field ``ecn``."""
    return build_tcp(PEER_IP, HOST_IP, p.port, p.host_port, seq & MASK, ack & MASK,
                     flag_bits(flags), win, data, opts, tos=ecn)


def passive_open(syn_flags: str = "SEC", syn_ecn: int = 0, **settings) -> Ctx:
    """The peer opens to a listening host with a SYN of ``syn_flags``; returns the
    established connection (ECN as negotiated)."""
    settings.setdefault("delayed_ack", 0.0)
    p = ManualPeer(**settings)
    lst = p.host.listen(p.host_port)
    irs = 7000
    sa, = p.inject([peer_packet(p, syn_flags, irs, 0, ecn=syn_ecn, opts=MSS_OPT)])
    ctx = Ctx(p, p.host.connections()[0], sa.seq, irs)
    ctx.synack = sa
    assert p.send("A", irs + 1, sa.seq + 1) == []
    assert lst.accept() is ctx.c
    return ctx


# --- negotiation (RFC 3168 6.1.1) ---------------------------------------------------------

def test_ecn_setup_syn_gets_ecn_setup_synack():
    ctx = passive_open("SEC")
    assert ctx.synack.flags == "SAE"                  # ECE set, CWR not
    assert tos(ctx.synack) == 0                       # SYN-ACKs are not ECT (6.1.1)
    assert ctx.c.ecn_ok and ctx.c.info().ecn
    assert ctx.p.host.stats()["ecn_negotiated"] == 1


@pytest.mark.parametrize("flags, ecn, settings", [
    ("S", 0, {}),                                     # the peer does not ask
    ("SE", 0, {}),                                    # ECE without CWR: no ECN-setup SYN
    ("SEC", 0, {"ecn": 0}),                           # ECN off here
    ("SEC", ECT0, {}),                                # an ECT SYN: a broken path (Linux)
])
def test_no_ecn_unless_asked_and_allowed(flags, ecn, settings):
    ctx = passive_open(flags, ecn, **settings)
    assert ctx.synack.flags == "SA"
    assert not ctx.c.ecn_ok and not ctx.c.info().ecn
    ctx.c.send(b"x" * 100)
    data, = ctx.p.tick()
    assert data.flags == "PA" and tos(data) == 0      # no ECT without ECN
    assert "ecn_negotiated" not in ctx.p.host.stats()


def active_open(synack_flags: str, **settings):
    settings.setdefault("delayed_ack", 0.0)
    p = ManualPeer(**settings)
    c = p.host.connect((PEER_IP, p.port))
    syn, = p.tick()
    irs = 9000
    p.send(synack_flags, irs, syn.seq + 1, opts=MSS_OPT, sport=syn.dport, dport=syn.sport)
    assert c.state.name == "ESTABLISHED"
    return p, c, syn


def test_active_open_asks_for_ecn_with_the_setting():
    p, c, syn = active_open("SAE", ecn=1)
    assert syn.flags == "SEC" and tos(syn) == 0       # ECN-setup SYN, not ECT
    assert c.ecn_ok and c.info().ecn


@pytest.mark.parametrize("synack", ["SA", "SAEC"])
def test_active_open_without_an_ecn_setup_synack(synack):
    p, c, syn = active_open(synack, ecn=1)
    assert syn.flags == "SEC"
    assert not c.ecn_ok


def test_default_does_not_ask_and_a_retransmitted_syn_drops_the_request():
    p, c, syn = active_open("SAE")                   # tcp_ecn=2-like default: no request
    assert syn.flags == "S" and not c.ecn_ok         # an unasked ECE is not ECN
    p = ManualPeer(ecn=1)
    p.host.connect((PEER_IP, p.port))
    syn, = p.tick()
    assert syn.flags == "SEC"
    t, again = p.next_timer()
    assert [s.flags for s in again] == ["S"]         # 6.1.1.1 / Linux tcp_ecn_fallback


# --- ECT(0) on data only -------------------------------------------------------------------

def test_ect0_only_on_new_data_segments():
    ctx = passive_open("SEC", nodelay=True)
    p, c = ctx.p, ctx.c
    c.send(b"a" * 3000)
    segs = p.tick()
    assert [len(s.data) for s in segs] == [1460, 1460, 80]
    assert all(tos(s) == ECT0 for s in segs) and sum(len(s.data) for s in segs) == 3000
    # A pure ACK (6.1.4: not-ECT).
    ack, = p.send("PA", ctx.r(1), ctx.s(1), data=b"q" * 10)
    assert ack.flags == "A" and not ack.data and tos(ack) == 0
    # The retransmission after an RTO (6.1.5: MUST NOT be ECT).
    t, rtx = p.next_timer()
    assert rtx and rtx[0].seq == ctx.s(1) and len(rtx[0].data) == 1460
    assert all(tos(s) == 0 for s in rtx)
    # A FIN without data is no data segment.
    p.send("A", ctx.r(11), ctx.s(3001))
    c.shutdown()
    fin, = p.tick()
    assert fin.flags == "FA" and tos(fin) == 0


# --- the receiver: CE -> ECE until CWR (6.1.3) -------------------------------------------

def test_ce_sets_ece_on_acks_until_cwr():
    ctx = passive_open("SEC")
    p, c = ctx.p, ctx.c
    k = 1
    # Not marked: a plain ACK.
    ack, = p.inject([peer_packet(p, "PA", ctx.r(k), ctx.s(1), b"x" * 100, ecn=ECT0)])
    assert ack.flags == "A"
    k += 100
    # CE-marked data (taken by the C fast path): ECE on its ACK ...
    ack, = p.inject([peer_packet(p, "PA", ctx.r(k), ctx.s(1), b"x" * 100, ecn=CE)])
    assert ack.flags == "AE" and ack.ack == ctx.r(k + 100)
    k += 100
    # ... and on every ACK after it, for unmarked data too ...
    for _ in range(3):
        ack, = p.inject([peer_packet(p, "PA", ctx.r(k), ctx.s(1), b"x" * 100, ecn=ECT0)])
        assert ack.flags == "AE"
        k += 100
    # ... and on our data segments, which carry the ACK too.
    c.send(b"d" * 10)
    data, = p.tick()
    assert data.flags == "PAE" and tos(data) == ECT0
    # CWR from the sender ends it.
    ack, = p.inject([peer_packet(p, "PAC", ctx.r(k), ctx.s(11), b"x" * 100, ecn=ECT0)])
    assert ack.flags == "A"
    k += 100
    ack, = p.inject([peer_packet(p, "PA", ctx.r(k), ctx.s(11), b"x" * 100, ecn=ECT0)])
    assert ack.flags == "A"
    assert c.info().ce_received == 1 and p.host.stats()["ecn_ce_received"] == 1


def test_ce_on_out_of_order_data_and_cwr_with_ce():
    ctx = passive_open("SEC")
    p, c = ctx.p, ctx.c
    # A CE-marked out-of-order segment (slow path): its duplicate ACK carries ECE.
    ack, = p.inject([peer_packet(p, "PA", ctx.r(101), ctx.s(1), b"y" * 100, ecn=CE)])
    assert ack.flags == "AE" and ack.ack == ctx.r(1)
    # CWR on a segment that is itself CE: the echo goes on (a new congestion signal).
    ack, = p.inject([peer_packet(p, "PAC", ctx.r(1), ctx.s(1), b"x" * 100, ecn=CE)])
    assert ack.flags == "AE" and ack.ack == ctx.r(201)
    assert c.info().ce_received == 2


def test_ce_ignored_without_ecn():
    ctx = passive_open("S")
    ack, = ctx.p.inject([peer_packet(ctx.p, "PA", ctx.r(1), ctx.s(1), b"x" * 100, ecn=CE)])
    assert ack.flags == "A" and ctx.c.info().ce_received == 0


# --- the sender: ECE -> one reduction per window, CWR (6.1.2) ----------------------------

def _sending(congestion: str, segments: int = 10) -> Ctx:
    ctx = passive_open("SEC", congestion=congestion, nodelay=True)
    ctx.c.send(b"z" * (1460 * 200))
    out = ctx.p.tick()
    assert len(out) == segments                       # the initial window
    return ctx


@pytest.mark.parametrize("congestion", ["newreno", "cubic"])
def test_ece_reduces_once_per_window_and_sends_cwr(congestion):
    ctx = _sending(congestion)
    p, c = ctx.p, ctx.c
    mss = c.mss
    assert c.cc.ssthresh == INFINITE_SSTHRESH
    # The first ACK with ECE: slow start's growth, then the reduction (flight 9 MSS).
    out = p.send("AE", ctx.r(1), ctx.s(1 + mss))
    flight = 9 * mss
    if congestion == "newreno":
        assert c.cc.ssthresh == flight // 2 and c.cc.cwnd == flight // 2
    else:
        # CUBIC: max(cwnd, flight) * 0.7 (cwnd as Linux; cwnd_prior is cwnd in segments)
        assert c.cc.ssthresh == round(max(flight, c.cc.cwnd_prior * mss) * 0.7)
        assert c.cc.cwnd == c.cc.ssthresh
    assert p.host.stats()["ecn_reductions"] == 1
    # cwnd (4.5 or 7.7 MSS) is below the 9 MSS in flight: nothing goes out yet.
    assert out == []
    cwnd = c.cc.cwnd
    # More ECE within the same window (up to SND.MAX at the reduction, and the ACK of
    # SND.MAX itself, which our CWR has not reached yet): no new reduction.
    # The ACKs open cwnd room: the first new data segment carries CWR, only that one.
    sent = []
    for i in range(2, 11):
        sent += p.send("AE", ctx.r(1), ctx.s(1 + i * mss))
    assert p.host.stats()["ecn_reductions"] == 1 and c.cc.cwnd >= cwnd
    data = [s for s in sent if s.data]
    assert data and data[0].flags == "AC" and tos(data[0]) == ECT0
    assert all("C" not in s.flags for s in data[1:])
    assert p.host.stats()["ecn_cwr_out"] == 1 and c.info().ece_received == 10
    # The ACK of the CWR segment is a new window: ECE there reduces again.
    end = (data[-1].seq - ctx.iss + len(data[-1].data)) & MASK
    again = [s for s in p.send("AE", ctx.r(1), ctx.s(end)) if s.data]
    assert p.host.stats()["ecn_reductions"] == 2
    assert again and again[0].flags == "AC" and all("C" not in s.flags for s in again[1:])
    assert p.host.stats()["ecn_cwr_out"] == 2


def test_ece_in_one_batch_reduces_once():
    ctx = _sending("newreno")
    p, c = ctx.p, ctx.c
    mss = c.mss
    acks = [peer_packet(p, "AE", ctx.r(1), ctx.s(1 + i * mss)) for i in range(1, 6)]
    out = p.inject(acks)                              # five ECE ACKs, one batch (fast path)
    assert p.host.stats()["ecn_reductions"] == 1 and c.info().ece_received == 5
    assert p.host.stats()["fast_path_segments"] >= 5
    # Slow start first (cwnd 15 MSS), then one reduction for the batch with what is
    # outstanding after it (5 MSS): ssthresh = cwnd = 2.5 MSS.
    assert c.cc.ssthresh == 5 * mss // 2 and c.cc.cwnd == 5 * mss // 2
    assert [s for s in out if s.data] == []           # 5 MSS in flight > cwnd


def test_ece_without_ecn_is_ignored():
    ctx = passive_open("S", congestion="newreno", nodelay=True)
    ctx.c.send(b"z" * (1460 * 20))
    ctx.p.tick()
    ctx.p.send("AE", ctx.r(1), ctx.s(1 + 1460))
    assert ctx.c.cc.ssthresh == INFINITE_SSTHRESH and ctx.c.info().ece_received == 0


# --- scapy's view of the bits ----------------------------------------------------------

def test_scapy_sees_the_ecn_bits():
    ctx = passive_open("SEC")
    sa = IP(bytes(ctx.synack.pkt.raw))
    assert sa[IP].tos & 3 == 0 and sa[TCP].flags == "SAE"
    p, c = ctx.p, ctx.c
    p.inject([peer_packet(p, "PA", ctx.r(1), ctx.s(1), b"x" * 10, ecn=CE)])
    c.send(b"d" * 100)
    data, = p.tick()
    ip = IP(bytes(data.pkt.raw))
    assert ip.tos == 0x02 and ip[TCP].flags == "PAE"
    # scapy recomputes the same checksums with the ECN bits in place.
    rebuilt = ip.copy()
    del rebuilt[IP].chksum
    del rebuilt[TCP].chksum
    assert bytes(rebuilt) == bytes(data.pkt.raw)
    ack = IP(bytes(p.send("PA", ctx.r(11), ctx.s(101), data=b"x")[0].pkt.raw))
    assert ack.tos == 0 and ack[TCP].flags == "AE"


# --- the TUN link: the ECN bits pass, CWR on a TSO packet sets VIRTIO_NET_HDR_GSO_ECN ------

VNET = struct.Struct("<BBHHHH")


@pytest.mark.parametrize("flags, gso_type", [("A", 0x01), ("AC", 0x81)])
def test_tun_tso_with_cwr_sets_gso_ecn(flags, gso_type):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.settimeout(5)
    b.setblocking(False)                              # as a TUN fd: reads end at EAGAIN
    try:
        io = TunIO(b.fileno(), True, 4)
        pkt = build_tcp("10.77.0.2", "10.77.0.1", 80, 40000, 1, 1, flag_bits(flags), 65535,
                        b"p" * 4000, tos=ECT0)
        assert io.send_batch([pkt], gso=1448) == 1
        frame = a.recv(70000)
        hdr = VNET.unpack(frame[:10])
        # Linux's tcp_ecn_send marks a CWR super-segment SKB_GSO_TCP_ECN (virtio's
        # GSO_ECN, 0x80): tcp_gso_segment keeps CWR on the first segment only.
        assert hdr[1] == gso_type and hdr[3] == 1448
        assert frame[10 + 1] == ECT0                   # the IP ECN bits unchanged
        # Received: the TOS byte reaches the parser as sent.
        ce = build_tcp("10.77.0.1", "10.77.0.2", 40000, 80, 1, 1, flag_bits("PA"), 65535,
                       b"x" * 100, tos=CE)
        a.send(bytes(10) + ce)
        got, = io.recv_batch()
        assert parse(bytes(got)).tos & 3 == CE
    finally:
        a.close()
        b.close()


# --- SYN cookies: ECN rides in the TSval's low bits (Linux's cookie_ecn_ok) ------------

@pytest.mark.parametrize("syn_flags, timestamps, ecn", [
    ("SEC", True, True), ("S", True, False), ("SEC", False, False)])
def test_syn_cookie_keeps_ecn(syn_flags, timestamps, ecn):
    p = ManualPeer(syn_cookies="always", timestamps=True)
    lst = p.host.listen(p.host_port)
    o = TcpOptions(mss=1460, timestamps=(500, 0) if timestamps else None)
    sa, = p.inject([peer_packet(p, syn_flags, 100, 0, opts=o)])
    assert p.host.connections() == []                 # no state kept
    assert sa.flags == ("SAE" if ecn else "SA")
    ack_opts = TcpOptions(timestamps=(501, sa.opts.timestamps[0])) if timestamps else None
    p.inject([peer_packet(p, "A", 101, sa.seq + 1, opts=ack_opts)])
    c = lst.accept()
    assert c is not None and c.ecn_ok is ecn and c.info().ecn is ecn
    if ecn:
        c.send(b"x" * 100)
        data, = p.tick()
        assert tos(data) == ECT0


# --- end to end on NetSim: CE marking instead of drops ----------------------------------

def _marked_transfer(ecn: int, nbytes: int = 2 << 20):
    a = Host("10.0.0.1", isn_secret=bytes(16), ecn=ecn)
    b = Host("10.0.0.2", isn_secret=bytes(range(16)), ecn=ecn)
    sim = NetSim(transmit_all=True)
    # 20 Mbit/s, 20 ms RTT, a 150 kB queue that marks ECT packets above 30 kB.
    pipe = FaultConfig(delay=0.01, rate=20e6, queue_bytes=150_000, ce_threshold=30_000)
    sim.connect(a, b, pipe, pipe)
    lst = b.listen(80)
    c = a.connect(("10.0.0.2", 80))
    data = memoryview(bytes(nbytes))
    st = {"sent": 0, "got": 0, "srv": None}

    def done() -> bool:
        if st["srv"] is None:
            st["srv"] = lst.accept()
        if st["sent"] < nbytes:
            st["sent"] += c.send(data[st["sent"]:])
        if st["srv"] is not None:
            st["got"] += len(st["srv"].recv(1 << 20))
        return st["got"] == nbytes and c.in_flight == 0

    sim.run(until=60.0, stop=done, max_steps=2_000_000)
    assert st["got"] == nbytes
    return c, st["srv"], sim.stats(), a.stats()


def test_netsim_ce_marking_replaces_loss():
    c, s, net, stats = _marked_transfer(ecn=1)
    assert c.info().ecn and s.info().ecn
    assert net["ce_marked"] > 0 and s.info().ce_received == net["ce_marked"]
    assert c.info().ece_received > 0 and stats["ecn_reductions"] >= 1
    assert net["queue_dropped"] == 0 and c.retransmits == 0      # no loss at all
    # The same path without ECN: nothing is marked, the queue overflows.
    c0, s0, net0, _ = _marked_transfer(ecn=0)
    assert not c0.info().ecn and net0["ce_marked"] == 0
    assert net0["queue_dropped"] > 0 and c0.retransmits > 0


def test_ce_threshold_validation_and_marking():
    with pytest.raises(ValueError, match="ce_threshold needs a rate"):
        FaultConfig(ce_threshold=1000)
    with pytest.raises(ValueError, match="ce_threshold must be >= 0"):
        FaultConfig(rate=1e6, ce_threshold=-1)
    from fasttcp.link import FaultyLink
    link = FaultyLink(FaultConfig(rate=8e3, ce_threshold=1))       # 1 kB/s: all queue
    ect = build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0, 0, flag_bits("PA"), 100, b"x" * 50,
                    tos=ECT0)
    plain = build_tcp("10.0.0.1", "10.0.0.2", 1, 2, 0, 0, flag_bits("PA"), 100, b"x" * 50)
    link.push([ect, plain, ect], 0.0)
    out = link.pop(10.0)
    # The first finds an empty queue; later ECT packets are marked, not-ECT ones never.
    assert [parse(p).tos & 3 for p in out] == [ECT0, 0, CE]   # parse checks the IP sum
    assert link.stats.ce_marked == 1


@pytest.mark.parametrize("congestion", ["newreno", "cubic"])
def test_loss_in_the_window_of_an_ece_reduction_reduces_no_further(congestion):
    """RFC 3168 6.1.2: react to congestion at most once per window of data. An ECE cut
    the window; three duplicate ACKs in that same window then start fast recovery
    (the segment is retransmitted) without a second cut (as Linux: tcp_enter_recovery
    from the CWR state does no new tcp_init_cwnd_reduction)."""
    ctx = _sending(congestion)
    p, c = ctx.p, ctx.c
    mss = c.mss
    p.send("AE", ctx.r(1), ctx.s(1 + mss))
    reduced = c.cc.ssthresh
    assert p.host.stats()["ecn_reductions"] == 1 and reduced < 9 * mss
    # ACKs within the reduction's window (it ends at the 10th segment) let new data out,
    # so the flight at the loss differs from the one the ECE reduction halved.
    for i in range(2, 8):
        p.send("A", ctx.r(1), ctx.s(1 + i * mss))
    hole = ctx.s(1 + 7 * mss)
    flight = c.info().snd_nxt - c.info().snd_una
    assert flight != 9 * mss                       # (9 MSS were in flight at the ECE)
    out = []
    for _ in range(3):
        out += p.send("A", ctx.r(1), hole)
    assert p.host.stats().get("fast_retransmits", 0) == 1
    assert hole in [s.seq for s in out if s.data]                     # the hole, again
    assert c.cc.ssthresh == reduced
    assert c.cc.cwnd <= reduced + 3 * mss
