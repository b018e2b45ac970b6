"""IPv6 in the host (issue 14): addresses (one or several, either family), listen and
connect, the socket module's address conventions, the demux, SYN cookies, RFC 6528 ISNs and
ports over 128-bit addresses, RSTs and echo replies checked by scapy, TSO super-segments,
and a dual-stack host serving both families at once."""
from __future__ import annotations

import hashlib
import random

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, in6_chksum

from fasttcp import Host, State
from fasttcp.link import FaultConfig, NetSim, exchange
from fasttcp.tcp._isn import IsnGenerator
from fasttcp.wire import SplitPacket, TcpOptions, build_tcp, ip6_to_bytes, parse

A6, B6 = "fd00::1", "fd00::2"


def _pair6(**settings):
    client = Host(A6, isn_secret=bytes(16), **settings)
    server = Host(B6, isn_secret=bytes(range(16)), **settings)
    lst = server.listen(80)
    c = client.connect((B6, 80))
    exchange(client, server, 0.0)
    s = lst.accept()
    assert s is not None and c.state is State.ESTABLISHED
    return client, server, c, s


# --- addresses ----------------------------------------------------------------------------------

def test_addresses_one_or_several() -> None:
    h = Host("10.0.0.2")
    assert h.address == "10.0.0.2" and h.addresses == ("10.0.0.2",)
    h = Host(["fd00:0:0::2", "10.0.0.2", "2001:DB8::1"])
    assert h.addresses == ("fd00::2", "10.0.0.2", "2001:db8::1")    # canonical, in order
    assert h.address == "fd00::2"
    assert Host("fe80::1%tun0").addresses == ("fe80::1%tun0",)


@pytest.mark.parametrize("address, message", [
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("fe80::1", "link-local"),
    (["10.0.0.2", "10.0.0.2"], "twice"),
    (["fd00::2", "fd00:0::2"], "twice"),
    ("::ffff:10.0.0.2", "IPv4-mapped"),
    ("255.255.255.255", "broadcast"),
    ("10.0.0.300", "not an IPv4 or IPv6 address"),
    ([], "at least one"),
])
def test_bad_addresses_one_clear_line(address, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Host(address)
    assert "\n" not in str(info.value)


def test_connect_picks_the_family_and_checks_it() -> None:
    h4 = Host("10.0.0.1")
    with pytest.raises(ValueError, match="no IPv6 address"):
        h4.connect((B6, 80))
    h6 = Host(A6)
    with pytest.raises(ValueError, match="no IPv4 address"):
        h6.connect(("10.0.0.2", 80))
    with pytest.raises(ValueError, match="multicast"):
        h6.connect(("ff02::1", 80))
    with pytest.raises(ValueError, match="unspecified"):
        h6.connect(("::", 80))
    with pytest.raises(ValueError, match="IPv4-mapped.*10.0.0.2 over IPv4"):
        h6.connect(("::ffff:10.0.0.2", 80))
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        h6.connect(("fd00::zz", 80))
    dual = Host(["10.0.0.1", A6, "fd00::99"])
    c6 = dual.connect((B6, 80, 0, 0))               # the socket module's 4-tuple too
    c4 = dual.connect(("10.0.0.2", 80))
    # The source: the host's first address of the destination's family.
    assert c6.local_address[0] == A6 and len(c6.local_address) == 4
    assert c6.remote_address == (B6, 80, 0, 0)
    assert c4.local_address[0] == "10.0.0.1" and c4.remote_address == ("10.0.0.2", 80)
    syn = parse(dual.transmit(0.0)[0])
    assert syn.version == 6 and syn.src == A6 and syn.dst == B6 and syn.flag_bits == 0x02
    # MSS for IPv6: MTU - 60 (RFC 8200: a 40-byte header).
    assert syn.options.mss == 1500 - 60


def test_listen_on_one_address() -> None:
    server = Host(["10.0.0.2", B6], isn_secret=bytes(16))
    with pytest.raises(ValueError, match="not an address of this host"):
        server.listen(80, address="fd00::3")
    lst = server.listen(80, address=B6)
    assert lst.address == B6 and "[fd00::2]:80" in repr(lst)
    # A SYN to the other address finds no listener: RST (RFC 9293 3.10.7.1).
    server.receive([build_tcp("10.0.0.1", "10.0.0.2", 5555, 80, 100, 0, 0x02)], 0.0)
    (rst,) = server.transmit(0.0)
    assert parse(rst).flag_bits & 0x04
    server.receive([build_tcp(A6, B6, 5555, 80, 100, 0, 0x02,
                              options=TcpOptions(mss=1440))], 0.0)
    (synack,) = server.transmit(0.0)
    sa = parse(synack)
    assert sa.version == 6 and sa.flag_bits == 0x12 and sa.src == B6 and sa.dst == A6


# --- the connection over IPv6 -------------------------------------------------------------------

def test_transfer_both_ways_and_conventions() -> None:
    client, server, c, s = _pair6()
    assert c.local_address[0] == A6 and c.local_address[2:] == (0, 0)
    assert s.remote_address == c.local_address and s.local_address == c.remote_address
    assert c.key == (c.lport, ip6_to_bytes(B6), 80, ip6_to_bytes(A6))
    data = random.Random(1).randbytes(300_000)
    got = bytearray()
    back = bytearray()
    now = 0.0
    sent = 0
    while len(got) < len(data) or len(back) < len(data):
        if sent < len(data):
            n = c.send(data[sent:sent + 50_000])
            s.send(data[sent:sent + n])
            sent += n
        now += 0.001
        exchange(client, server, now)
        got += s.recv()
        back += c.recv()
    assert bytes(got) == data and bytes(back) == data
    assert server.stats()["fast_path_segments"] > 100
    c.close()
    exchange(client, server, now + 0.01)
    assert s.eof
    s.close()
    exchange(client, server, now + 0.02)
    assert s.state is State.CLOSED and c.state is State.TIME_WAIT
    assert "[fd00::1]" in repr(c)


def test_every_packet_checks_out_with_scapy() -> None:
    """The oracle on what the engine sends over IPv6: SYN, SYN-ACK, data with options,
    ACKs, FINs: headers and checksums as scapy recomputes them."""
    client, server, c, s = _pair6()
    packets = []
    c.send(b"x" * 5000)
    for now in (0.001, 0.002, 0.003):
        out = client.transmit(now)
        packets += out
        server.receive(out, now)
        back = server.transmit(now)
        packets += back
        client.receive(back, now)
    c.close()
    packets += client.transmit(0.004)
    assert len(packets) >= 4
    for p in packets:
        raw = bytes(p)
        sc = IPv6(raw)
        assert sc.plen == len(p) - 40 and sc.nh == 6
        # scapy's checksum over the IPv6 pseudo-header, on the raw segment.
        assert in6_chksum(6, sc, raw[40:56] + b"\x00\x00" + raw[58:]) == sc[TCP].chksum


def test_tso_super_segments_and_split_headers_over_ipv6() -> None:
    """With TSO (gso_max) the IPv6 super-segment's payload length is total - 40, its TCP
    checksum left 0 for the link (as IPv4); as a SplitPacket the headers are 60 + options
    bytes with the TCP header at 40."""
    for split in (False, True):
        client, server, c, s = _pair6(gso_max=65000)
        client.split_tx = split
        data = random.Random(3).randbytes(400_000)
        assert c.send(data) == len(data)
        got = bytearray()
        bigs = 0
        now = 0.0
        while len(got) < len(data):
            now += 0.001
            out = client.transmit(now)
            for p in out:
                raw = bytes(p)
                assert raw[0] >> 4 == 6 and int.from_bytes(raw[4:6], "big") == len(raw) - 40
                assert raw[6] == 6
                if len(raw) > 1500:
                    bigs += 1
                    assert raw[40 + 16:40 + 18] == b"\x00\x00"    # left to the link
                    if split:
                        assert type(p) is SplitPacket and len(p.head) == 60 + 12
            server.receive(out, now, 1)          # as from a TSO link (sums left to it)
            client.receive(server.transmit(now), now)
            got += s.recv()
        assert bytes(got) == data and bigs >= 3
        assert server.stats()["fast_path_segments"] >= bigs - 1


def test_rst_for_no_connection_over_ipv6() -> None:
    h = Host(B6)
    h.receive([build_tcp(A6, B6, 4000, 81, 1000, 0, 0x02, payload=b"")], 0.0)
    (rst,) = h.transmit(0.0)
    sc = IPv6(rst)
    assert sc.src == B6 and sc.dst == A6 and sc[TCP].flags == "RA" and sc[TCP].ack == 1001
    h.receive([build_tcp(A6, B6, 4000, 81, 1000, 777, 0x10)], 0.0)
    (rst,) = h.transmit(0.0)
    assert IPv6(rst)[TCP].flags == "R" and IPv6(rst)[TCP].seq == 777


def test_not_for_us_and_foreign_family_dropped() -> None:
    h = Host(B6)
    h.receive([build_tcp(A6, "fd00::3", 4000, 80, 1, 0, 0x02),
               build_tcp("10.0.0.1", "10.0.0.2", 4000, 80, 1, 0, 0x02)], 0.0)
    assert h.transmit(0.0) == []
    assert h.stats()["drop_not_for_us"] == 2


def test_low_32_bits_never_demux() -> None:
    """An IPv6 segment whose addresses end in the bits of an IPv4 connection's, and an IPv4
    one matching an IPv6 connection's low bits, reach neither connection."""
    client, server, c, s = _pair6()
    before = s.info().rcv_nxt
    spoof = build_tcp("0.0.0.1", "0.0.0.2", c.lport, 80, c.info().snd_nxt,
                      c.info().rcv_nxt, 0x18, payload=b"evil")
    server.receive([spoof], 0.1)
    assert s.info().rcv_nxt == before and s.recv() == b""


def test_echo_request_answered_with_scapy_checked_reply() -> None:
    h = Host(["10.0.0.2", B6])
    req = bytes(IPv6(src=A6, dst=B6, hlim=9) / ICMPv6EchoRequest(id=0x1234, seq=7, data=b"ping6"))
    h.receive([req], 0.0)
    (rep,) = h.transmit(0.0)
    sc = IPv6(rep)
    assert isinstance(sc.payload, ICMPv6EchoReply)
    assert (sc.src, sc.dst, sc.payload.id, sc.payload.seq, sc.payload.data) == (
        B6, A6, 0x1234, 7, b"ping6")
    c = sc.payload.cksum
    del sc.payload.cksum
    assert IPv6(bytes(sc)).payload.cksum == c
    assert h.stats()["icmp_echo_replies"] == 1


# --- ISN, ports, cookies over 128-bit addresses ------------------------------------------------

def test_isn6_is_keyed_over_the_whole_4_tuple() -> None:
    g = IsnGenerator(bytes(16))
    a, b = ip6_to_bytes(A6), ip6_to_bytes(B6)
    base = g.isn6(a, 1000, b, 80, 0.0)
    assert g.isn6(a, 1000, b, 80, 0.0) == base                 # deterministic per secret
    # Any bit of either 128-bit address moves F (RFC 6528 3): flip each byte's low bit.
    for i in range(16):
        other = bytearray(b)
        other[i] ^= 1
        assert g.isn6(a, 1000, bytes(other), 80, 0.0) != base
        mine = bytearray(a)
        mine[i] ^= 1
        assert g.isn6(bytes(mine), 1000, b, 80, 0.0) != base
    # M: the 4 microsecond timer.
    assert (g.isn6(a, 1000, b, 80, 1.0) - base) % 2**32 == 250000
    assert IsnGenerator(bytes(range(16))).isn6(a, 1000, b, 80, 0.0) != base
    with pytest.raises(ValueError):
        g.isn6(a[:4], 1, b, 2, 0.0)


def test_the_connection_uses_the_isn6() -> None:
    client = Host(A6, isn_secret=bytes(16))
    c = client.connect((B6, 80), now=3.0)
    expect = IsnGenerator(bytes(16)).isn6(ip6_to_bytes(A6), c.lport, ip6_to_bytes(B6), 80, 3.0)
    assert c.iss == expect and parse(client.transmit(3.0)[0]).seq == expect


def test_ephemeral_ports_over_ipv6() -> None:
    h = Host(A6, isn_secret=bytes(16))
    ports = [h.connect(("fd00::%x" % (2 + i % 3), 443)).lport for i in range(300)]
    lo, hi = h.settings.ephemeral_ports
    assert all(lo <= p <= hi for p in ports)
    keys = [c.key for c in h.connections()]
    assert len(set(keys)) == 300                                # no 4-tuple reused
    again = Host(A6, isn_secret=bytes(16))
    assert [again.connect(("fd00::%x" % (2 + i % 3), 443)).lport for i in range(300)] == ports
    other = Host(A6, isn_secret=bytes(range(16)))
    assert [other.connect(("fd00::2", 443)).lport for _ in range(20)] != ports[0:60:3]


def test_syn_cookies_over_ipv6() -> None:
    client = Host(A6, isn_secret=bytes(16))
    server = Host(B6, isn_secret=bytes(range(16)), syn_cookies="always")
    lst = server.listen(80)
    c = client.connect((B6, 80))
    exchange(client, server, 0.0)
    s = lst.accept()
    assert s is not None and server.stats()["syn_cookies_validated"] == 1
    assert s.remote_address == c.local_address and s.ipver == 6
    c.send(b"hello over a cookie")
    exchange(client, server, 0.01)
    assert s.recv() == b"hello over a cookie"
    # A forged ACK from another address with the same ports fails the MAC.
    server.receive([build_tcp("fd00::66", B6, 5000, 80, 1, 12345, 0x10)], 0.02)
    assert server.stats().get("syn_cookies_failed", 0) == 1


# --- dual stack ---------------------------------------------------------------------------------

def test_dual_stack_host_serves_both_families_at_once() -> None:
    server = Host(["10.0.0.2", B6], isn_secret=bytes(16))
    c4 = Host("10.0.0.1", isn_secret=bytes([1]) * 16)
    c6 = Host(A6, isn_secret=bytes([2]) * 16)
    sim = NetSim(transmit_all=True)
    wire = FaultConfig(delay=0.001, loss=0.02, seed=5)
    sim.connect(c4, server, wire, wire)
    sim.connect(c6, server, wire, wire)
    lst = server.listen(80)
    data = {4: random.Random(4).randbytes(400_000), 6: random.Random(6).randbytes(400_000)}
    conns = {4: c4.connect(("10.0.0.2", 80)), 6: c6.connect((B6, 80))}
    sent = {4: 0, 6: 0}
    got: dict = {}
    accepted = []

    def step() -> bool:
        while (a := lst.accept()) is not None:
            accepted.append(a)
            got[a] = bytearray()
        for fam, conn in conns.items():
            if sent[fam] < len(data[fam]):
                sent[fam] += conn.send(data[fam][sent[fam]:sent[fam] + 65536])
                if sent[fam] == len(data[fam]):
                    conn.close()
        for a in accepted:
            got[a] += a.recv()
        return len(accepted) == 2 and all(a.eof for a in accepted)

    sim.run(until=120.0, stop=step, max_steps=500_000)
    assert len(accepted) == 2
    by_family = {len(a.remote_address): a for a in accepted}
    assert set(by_family) == {2, 4}
    assert by_family[2].remote_address[0] == "10.0.0.1"
    assert by_family[2].local_address == ("10.0.0.2", 80)
    assert by_family[4].remote_address[0] == A6
    assert by_family[4].local_address == (B6, 80, 0, 0)
    assert hashlib.sha256(got[by_family[2]]).digest() == hashlib.sha256(data[4]).digest()
    assert hashlib.sha256(got[by_family[4]]).digest() == hashlib.sha256(data[6]).digest()
    assert not server.stats().get("drop_internal_error")


def test_several_ipv4_addresses_and_the_same_remote_end_to_both() -> None:
    """A host with two IPv4 addresses answers on both, each connection with the address
    it was reached at; the same remote end and ports to the second address while the first
    connection lives is a second connection (the demux key is the whole 4-tuple: before
    it had no local address, and this SYN was refused with a RST)."""
    server = Host(["10.0.0.2", "10.0.0.3"], isn_secret=bytes(16))
    lst = server.listen(80)
    syn = dict(seq=100, ack=0, flags=0x02, options=TcpOptions(mss=1460))
    server.receive([build_tcp("10.0.0.1", "10.0.0.3", 5000, 80, **syn)], 0.0)
    (sa,) = server.transmit(0.0)
    assert parse(sa).src == "10.0.0.3" and parse(sa).flag_bits == 0x12
    server.receive([build_tcp("10.0.0.1", "10.0.0.2", 5001, 80, **syn)], 0.0)
    (sa2,) = server.transmit(0.0)
    assert parse(sa2).src == "10.0.0.2"
    locals_ = sorted(c.local_address for c in server.connections())
    assert locals_ == [("10.0.0.2", 80), ("10.0.0.3", 80)]
    server.receive([build_tcp("10.0.0.1", "10.0.0.2", 5000, 80, **syn)], 0.0)
    (sa3,) = server.transmit(0.0)
    assert parse(sa3).flag_bits == 0x12 and parse(sa3).src == "10.0.0.2"
    assert parse(sa3).dport == 5000
    assert len(server.connections()) == 3
    # Both 10.0.0.1:5000 connections complete their handshakes and carry their own data.
    for dst, sa_ in (("10.0.0.3", sa), ("10.0.0.2", sa3)):
        server.receive([build_tcp("10.0.0.1", dst, 5000, 80, 101, (parse(sa_).seq + 1) & 0xFFFFFFFF,
                                  0x18, 65535, payload=dst.encode())], 0.1)
    got = {}
    while True:
        conn = lst.accept()
        if conn is None:
            break
        got[conn.local_address] = conn.recv(100)
    assert got == {("10.0.0.3", 80): b"10.0.0.3", ("10.0.0.2", 80): b"10.0.0.2"}
    assert "drop_local_address_clash" not in server.stats()
