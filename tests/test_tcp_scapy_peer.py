"""fasttcp against segments built and parsed by scapy: an independent implementation of the
IPv4/TCP header formats (fields, options, checksums) plays the peer.

No network: scapy packets go to ``host.receive`` as bytes (``raw(IP()/TCP())``) and what
``host.transmit`` returns is parsed by scapy, checksums recomputed by scapy.
"""
from __future__ import annotations

import pytest

scapy_all = pytest.importorskip("scapy.all")

from scapy.all import ICMP, IP, TCP, Raw, raw  # noqa: E402

from fasttcp import Host, State  # noqa: E402
from tcp_harness import HOST_IP, PEER_IP, SECRET  # noqa: E402

PEER_PORT, HOST_PORT = 43210, 8080
PEER_ISN = 0x7FFFFFF0


class ScapyPeer:
    """A host driven in virtual time; the test speaks to it with scapy packets."""

    def __init__(self, **settings) -> None:
        settings.setdefault("isn_secret", SECRET)
        settings.setdefault("timestamps", False)
        settings.setdefault("sack", False)
        self.host = Host(HOST_IP, **settings)
        self.host._raise_internal = True
        self.now = 0.0

    def send(self, pkt, at: float) -> list:
        self.now = at
        self.host.receive([raw(pkt)], at)
        return self.collect(at)

    def collect(self, at: float) -> list:
        self.now = at
        return [checked(IP(p)) for p in self.host.transmit(at)]

    def next_timer(self) -> tuple:
        t = self.host.poll_at()
        assert t is not None
        return t, self.collect(t)


def checked(pkt):
    """The scapy view of a packet we sent, after checking both checksums the scapy way."""
    copy = pkt.copy()
    del copy.chksum
    if TCP in copy:
        del copy[TCP].chksum
    elif ICMP in copy:
        del copy[ICMP].chksum
    again = IP(raw(copy))
    assert again.chksum == pkt.chksum, "IPv4 header checksum"
    if TCP in pkt:
        assert again[TCP].chksum == pkt[TCP].chksum, "TCP checksum"
    if ICMP in pkt:
        assert again[ICMP].chksum == pkt[ICMP].chksum, "ICMP checksum"
    return pkt


def ip() -> IP:
    return IP(src=PEER_IP, dst=HOST_IP, ttl=64)


def tcp(flags: str, seq: int, ack: int = 0, window: int = 29200, **kw) -> TCP:
    return TCP(sport=PEER_PORT, dport=HOST_PORT, flags=flags, seq=seq & 0xFFFFFFFF,
               ack=ack & 0xFFFFFFFF, window=window, **kw)


def tcp_options(seg) -> dict:
    return {k: v for k, v in seg[TCP].options if k not in ("NOP", "EOL")}


def test_full_connection_against_scapy():
    peer = ScapyPeer()
    lst = peer.host.listen(HOST_PORT)

    # --- SYN with the options a Linux client sends (SACK and timestamps we do not use).
    syn = ip() / tcp("S", PEER_ISN, window=64240,
                     options=[("MSS", 1400), ("SAckOK", b""), ("Timestamp", (12345, 0)),
                              ("NOP", None), ("WScale", 3)])
    sa, = peer.send(syn, at=0.0)
    assert (sa.src, sa.dst, sa.ttl, sa.proto, sa.flags) == (HOST_IP, PEER_IP, 64, 6, "DF")
    assert sa.len == len(raw(sa)) and sa.ihl == 5
    t = sa[TCP]
    assert (t.sport, t.dport, str(t.flags)) == (HOST_PORT, PEER_PORT, "SA")
    assert t.ack == PEER_ISN + 1 and t.window == 65535 and t.urgptr == 0 and t.reserved == 0
    assert tcp_options(sa) == {"MSS": 1460, "WScale": 5}     # 1 MiB rcv_buf => shift 5
    assert t.dataofs == 7 and len(raw(t)) == 28                # MSS 4 + NOP + WS 3
    iss = t.seq

    # --- ACK completes the handshake; the peer's window (229 << 3) is scaled from now on.
    assert peer.send(ip() / tcp("A", PEER_ISN + 1, iss + 1, window=229), at=0.05) == []
    conn = lst.accept()
    assert conn.state == State.ESTABLISHED
    info = conn.info()
    assert (info.mss, info.snd_wnd, info.snd_wscale) == (1400, 229 << 3, 3)

    # --- Data from scapy: the first data of a connection is ACKed at once (a quick ACK,
    # as Linux's quickack mode), not after the delayed-ACK timer.
    msg = b"GET / HTTP/1.0\r\n\r\n"
    ack, = peer.send(ip() / tcp("PA", PEER_ISN + 1, iss + 1) / Raw(msg), at=0.1)
    a = ack[TCP]
    assert (str(a.flags), a.seq, a.ack) == ("A", iss + 1, PEER_ISN + 1 + len(msg))
    assert a.window == ((1 << 20) - len(msg)) >> 5 and Raw not in ack
    assert conn.recv() == msg

    # --- Data from fasttcp, parsed by scapy: MSS-sized, the short tail at once (Nagle in
    # Minshall's variant, as Linux: no short segment is unacknowledged); PSH on the last.
    body = bytes(range(256)) * 10                            # 2560 bytes
    conn.send(body)
    rcv = PEER_ISN + 1 + len(msg)
    first, second = peer.collect(0.2)
    f = first[TCP]
    assert (str(f.flags), f.seq, f.ack, len(first[Raw].load)) == ("A", iss + 1, rcv, 1400)
    s2 = second[TCP]
    assert (str(s2.flags), s2.seq, len(second[Raw].load)) == ("PA", iss + 1401, 1160)
    assert first[Raw].load + second[Raw].load == body
    assert peer.send(ip() / tcp("A", rcv, s2.seq + len(s2.payload), window=229),
                     at=0.26) == []
    assert conn.info().unacked == 0

    # --- The peer closes: its FIN is ACKed at once; we close; it ACKs our FIN.
    ack, = peer.send(ip() / tcp("FA", rcv, iss + 1 + len(body)), at=0.3)
    assert (str(ack[TCP].flags), ack[TCP].seq, ack[TCP].ack) == ("A", iss + 1 + len(body),
                                                                 rcv + 1)
    assert conn.state == State.CLOSE_WAIT and conn.eof
    conn.close()
    fin, = peer.collect(0.35)
    f = fin[TCP]
    assert "F" in str(f.flags) and "A" in str(f.flags) and Raw not in fin
    assert (f.seq, f.ack) == (iss + 1 + len(body), rcv + 1)
    assert conn.state == State.LAST_ACK
    assert peer.send(ip() / tcp("A", rcv + 1, f.seq + 1), at=0.4) == []
    assert conn.state == State.CLOSED and peer.host.connections() == []


def test_we_connect_to_scapy_and_close_first():
    peer = ScapyPeer(msl=1.0, delayed_ack=0)
    conn = peer.host.connect((PEER_IP, PEER_PORT), local_port=HOST_PORT)
    syn, = peer.collect(0.0)
    s = syn[TCP]
    assert str(s.flags) == "S" and s.ack == 0 and s.window == 65535
    assert tcp_options(syn) == {"MSS": 1460, "WScale": 5}
    # SYN,ACK without window scaling: neither side scales.
    ack, = peer.send(ip() / tcp("SA", PEER_ISN, s.seq + 1, window=5000,
                                options=[("MSS", 536)]), at=0.01)
    assert (str(ack[TCP].flags), ack[TCP].seq, ack[TCP].ack, ack[TCP].window) == \
        ("A", s.seq + 1, PEER_ISN + 1, 65535)
    assert conn.info().mss == 536 and conn.info().snd_wnd == 5000
    conn.send(b"x" * 1000)
    segs = peer.collect(0.02)
    # Nagle in Minshall's variant (as Linux): the 464 tail leaves with the full segment.
    assert [len(p[Raw].load) for p in segs] == [536, 464]
    assert segs[1][TCP].seq == s.seq + 537
    assert peer.send(ip() / tcp("A", PEER_ISN + 1, s.seq + 1001, window=5000),
                     at=0.03) == []
    conn.close()
    fin, = peer.collect(0.04)                                  # the FIN is not held
    f = fin[TCP]
    assert (str(f.flags), f.seq, f.ack) == ("FA", s.seq + 1001, PEER_ISN + 1)
    assert conn.state == State.FIN_WAIT_1
    assert peer.send(ip() / tcp("A", PEER_ISN + 1, s.seq + 1002, window=5000), at=0.05) == []
    assert conn.state == State.FIN_WAIT_2
    ack, = peer.send(ip() / tcp("FA", PEER_ISN + 1, s.seq + 1002, window=5000), at=0.06)
    assert (str(ack[TCP].flags), ack[TCP].seq, ack[TCP].ack) == ("A", s.seq + 1002,
                                                                 PEER_ISN + 2)
    assert conn.state == State.TIME_WAIT
    when, out = peer.next_timer()
    assert when == pytest.approx(2.06) and out == []
    assert conn.state == State.CLOSED and peer.host.connections() == []


def test_time_wait_record_answers_scapy():
    """A closed connection's TIME-WAIT is a record (fasttcp/tcp/_timewait.pyx): its ACKs,
    as scapy parses them, are those of the connection: a retransmitted FIN is
    acknowledged (2*MSL restarts), an out-of-window segment draws an ACK, an RST at
    RCV.NXT ends TIME-WAIT and the next segment is answered by a RST."""
    from fasttcp.tcp._timewait import TimeWait
    peer = ScapyPeer(msl=1.0, invalid_ack_interval=0.0)
    conn = peer.host.connect((PEER_IP, PEER_PORT), local_port=HOST_PORT)
    s = peer.collect(0.0)[0][TCP]
    peer.send(ip() / tcp("SA", PEER_ISN, s.seq + 1, window=5000), at=0.01)
    conn.close()
    peer.collect(0.02)
    peer.send(ip() / tcp("A", PEER_ISN + 1, s.seq + 2, window=5000), at=0.03)
    ack, = peer.send(ip() / tcp("FA", PEER_ISN + 1, s.seq + 2, window=5000), at=0.04)
    assert conn.state == State.TIME_WAIT
    assert [type(c) for c in peer.host.connections()] == [TimeWait]
    want = ("A", s.seq + 2, PEER_ISN + 2, ack[TCP].window)
    again, = peer.send(ip() / tcp("FA", PEER_ISN + 1, s.seq + 2, window=5000), at=0.5)
    assert (str(again[TCP].flags), again[TCP].seq, again[TCP].ack, again[TCP].window) == want
    assert peer.host.poll_at() == pytest.approx(2.5)
    old, = peer.send(ip() / tcp("A", PEER_ISN - 3000, s.seq + 2, window=5000), at=0.6)
    assert (str(old[TCP].flags), old[TCP].seq, old[TCP].ack, old[TCP].window) == want
    assert peer.send(ip() / tcp("R", PEER_ISN + 2), at=0.7) == []
    assert conn.state == State.CLOSED and peer.host.connections() == []
    rst, = peer.send(ip() / tcp("A", PEER_ISN + 2, s.seq + 2, window=5000), at=0.8)
    assert str(rst[TCP].flags) == "R" and rst[TCP].seq == s.seq + 2


def test_scapy_corrupted_segments_are_dropped_and_counted():
    peer = ScapyPeer()
    peer.host.listen(HOST_PORT)
    bad = ip() / tcp("S", PEER_ISN, chksum=0x1234)
    assert peer.send(bad, at=0.0) == []
    assert peer.host.stats()["drop_bad_tcp_checksum"] == 1
    bad_ip = ip() / tcp("S", PEER_ISN)
    bad_ip.chksum = 0x4321
    assert peer.send(bad_ip, at=0.0) == []
    assert peer.host.stats()["drop_bad_ip_checksum"] == 1
    assert peer.host.connections() == []


def test_scapy_syn_with_ip_options_is_answered():
    """An IPv4 header with options (IHL 6) in front of the SYN."""
    from scapy.layers.inet import IPOption_NOP
    peer = ScapyPeer()
    peer.host.listen(HOST_PORT)
    syn = IP(src=PEER_IP, dst=HOST_IP, options=[IPOption_NOP()] * 4) / tcp("S", PEER_ISN)
    assert IP(raw(syn)).ihl == 6
    sa, = peer.send(syn, at=0.0)
    assert str(sa[TCP].flags) == "SA" and sa[TCP].ack == PEER_ISN + 1


def test_scapy_rst_for_closed_port():
    peer = ScapyPeer()
    rst, = peer.send(ip() / tcp("S", PEER_ISN, options=[("MSS", 1400)]), at=0.0)
    r = rst[TCP]
    assert (str(r.flags), r.seq, r.ack, r.window) == ("RA", 0, PEER_ISN + 1, 0)
    assert (r.sport, r.dport) == (HOST_PORT, PEER_PORT)
    rst, = peer.send(ip() / tcp("A", 5, 0xDEADBEEF), at=0.0)
    assert (str(rst[TCP].flags), rst[TCP].seq) == ("R", 0xDEADBEEF)


def test_scapy_ping():
    peer = ScapyPeer()
    req = IP(src=PEER_IP, dst=HOST_IP) / ICMP(type=8, id=0x77, seq=3) / Raw(b"abcdefgh" * 8)
    rep, = peer.send(req, at=0.0)
    assert (rep.src, rep.dst) == (HOST_IP, PEER_IP)
    i = rep[ICMP]
    assert (i.type, i.code, i.id, i.seq) == (0, 0, 0x77, 3)
    assert rep[Raw].load == b"abcdefgh" * 8


# --- The receive side (window edge, minimum MSS, ACK policy) against scapy's segments. ---

def _scapy_established(peer: ScapyPeer, syn_options) -> tuple:
    """A passive open from a scapy SYN with `syn_options`; returns (conn, iss)."""
    lst = peer.host.listen(HOST_PORT)
    sa, = peer.send(ip() / tcp("S", PEER_ISN, window=65535, options=syn_options), at=0.0)
    iss = sa[TCP].seq
    assert peer.send(ip() / tcp("A", PEER_ISN + 1, iss + 1, window=65535), at=0.05) == []
    conn = lst.accept()
    assert conn.state == State.ESTABLISHED
    return conn, iss


def test_scapy_unscaled_window_edge_is_the_advertised_65535():
    """A peer without window scaling is offered 65535: data and RSTs past that edge are
    outside the window (RFC 9293 3.10.7.4), the data dropped with an ACK, the RST silently."""
    peer = ScapyPeer(sack=True)
    conn, iss = _scapy_established(peer, [("MSS", 1460), ("SAckOK", b"")])
    assert conn.info().rcv_wnd == 65535
    far = ip() / tcp("A", PEER_ISN + 1 + 100_000, iss + 1) / Raw(b"z" * 500)
    ack, = peer.send(far, at=0.1)
    a = ack[TCP]
    assert (str(a.flags), a.ack, a.window) == ("A", PEER_ISN + 1, 65535)
    assert "SAck" not in tcp_options(ack)
    assert peer.send(ip() / tcp("R", PEER_ISN + 1 + 65700), at=0.2) == []
    assert conn.state == State.ESTABLISHED
    assert peer.host.stats()["drop_out_of_window"] == 2


def test_scapy_peer_mss_1_gets_48_byte_segments():
    """MSS 1 in the SYN: clamped to 48 bytes of payload (Linux's tcp_min_snd_mss)."""
    peer = ScapyPeer(nodelay=True)
    conn, iss = _scapy_established(peer, [("MSS", 1)])
    assert conn.info().mss == 48
    conn.send(b"s" * 200)
    segs = peer.collect(0.1)
    assert [len(s[Raw].load) for s in segs] == [48, 48, 48, 48, 8]


def test_scapy_ack_policy_quick_ack_2000_byte_segment_and_out_of_order_fin():
    """The first data is ACKed at once (quickack mode); without quick ACKs a 2000-byte
    segment (more than one full segment) still is; an out-of-order FIN draws an immediate
    duplicate ACK (RFC 5681 4.2, as Linux)."""
    peer = ScapyPeer()
    conn, iss = _scapy_established(peer, [("MSS", 1460)])
    ack, = peer.send(ip() / tcp("PA", PEER_ISN + 1, iss + 1) / Raw(b"q" * 1000), at=0.1)
    assert ack[TCP].ack == PEER_ISN + 1001
    peer = ScapyPeer(quick_acks=0)
    conn, iss = _scapy_established(peer, [("MSS", 1460)])
    ack, = peer.send(ip() / tcp("PA", PEER_ISN + 1, iss + 1) / Raw(b"q" * 2000), at=0.1)
    assert ack[TCP].ack == PEER_ISN + 2001
    dup, = peer.send(ip() / tcp("FA", PEER_ISN + 2101, iss + 1), at=0.2)
    assert (str(dup[TCP].flags), dup[TCP].ack) == ("A", PEER_ISN + 2001)
    assert conn.state == State.ESTABLISHED
