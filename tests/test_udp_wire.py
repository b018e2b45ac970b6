"""UDP in the wire layer (issue 15): parse and build against scapy as the oracle, both
families, fragments, and hostile input (dropped and counted, never raised)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.packet import Raw

from fasttcp.host import Host
from fasttcp.wire import (
    DropReason,
    MalformedPacket,
    build_udp,
    build_udp_fragments,
    parse,
    parse_batch,
)

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"
ports = st.integers(1, 65535)
data = st.binary(max_size=1400)


@settings(max_examples=200, deadline=None)
@given(sport=ports, dport=ports, payload=data, v6=st.booleans())
def test_build_matches_scapy(sport: int, dport: int, payload: bytes, v6: bool) -> None:
    if v6:
        ours = build_udp(A6, B6, sport, dport, payload)
        ref = bytes(IPv6(src=A6, dst=B6) / UDP(sport=sport, dport=dport) / Raw(payload))
        assert ours == ref
    else:
        ours = build_udp(A4, B4, sport, dport, payload, ip_id=7)
        ref = bytes(IP(src=A4, dst=B4, id=7, flags=0) / UDP(sport=sport, dport=dport)
                    / Raw(payload))
        assert ours == ref


@settings(max_examples=200, deadline=None)
@given(sport=st.integers(0, 65535), dport=ports, payload=data, v6=st.booleans())
def test_parse_scapy_datagrams(sport: int, dport: int, payload: bytes, v6: bool) -> None:
    if v6:
        raw = bytes(IPv6(src=A6, dst=B6) / UDP(sport=sport, dport=dport) / Raw(payload))
    else:
        raw = bytes(IP(src=A4, dst=B4) / UDP(sport=sport, dport=dport) / Raw(payload))
    pk = parse(raw)
    assert pk.is_udp and not pk.is_tcp and pk.proto == 17
    assert (pk.sport, pk.dport, pk.payload) == (sport, dport, payload)
    assert parse_batch([raw]).reasons() == [DropReason.NONE]
    with pytest.raises(AttributeError):
        pk.seq                                      # noqa: B018 - TCP only


def test_checksum_zero_goes_out_as_ffff() -> None:
    # RFC 768: a computed 0 is sent as all ones. Find a payload whose sum is 0.
    for i in range(70000):
        payload = i.to_bytes(3, "big")
        ref = UDP(bytes(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / Raw(payload))[20:])
        if ref.chksum == 0xFFFF:
            break
    else:
        pytest.skip("no payload found")
    pkt = build_udp(A4, B4, 1, 2, payload)
    assert pkt[26:28] == b"\xff\xff"
    assert parse(pkt).payload == payload


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [1, 1472, 1473, 4000, 8952, 65000])
def test_fragments_scapy_reassembles(v6: bool, size: int) -> None:
    payload = bytes(random.Random(size).randrange(256) for _ in range(size))
    src, dst = (A6, B6) if v6 else (A4, B4)
    frags = build_udp_fragments(src, dst, 5000, 53, payload, mtu=1500, ident=0x1234ABCD)
    assert all(len(f) <= 1500 for f in frags)
    if v6:
        fits = 48 + size <= 1500
        assert len(frags) == (1 if fits else -(-(8 + size) // 1448))
        if fits:
            assert parse(frags[0]).payload == payload
            return
        ps = [IPv6(f) for f in frags]
        assert all(p[IPv6ExtHdrFragment].id == 0x1234ABCD for p in ps)
        assert [p[IPv6ExtHdrFragment].m for p in ps] == [1] * (len(ps) - 1) + [0]
        whole = b"".join(bytes(p[IPv6ExtHdrFragment].payload) for p in ps)
        ref = bytes(IPv6(src=src, dst=dst) / UDP(sport=5000, dport=53) / Raw(payload))
        assert whole == ref[40:]
    else:
        ps = [IP(f) for f in frags]
        if len(ps) == 1:
            assert ps[0].flags == "DF" and parse(frags[0]).payload == payload
            return
        assert all(p.id == 0xABCD and not p.flags.DF for p in ps)
        again = defragment(ps)[0]
        assert bytes(again[UDP].payload) == payload
        assert again[UDP].chksum == UDP(bytes(again[UDP])).chksum
        ref = IP(bytes(IP(src=src, dst=dst) / UDP(sport=5000, dport=53) / Raw(payload)))
        assert again[UDP].chksum == ref[UDP].chksum


@pytest.mark.parametrize("v6", [False, True])
def test_host_reassembles_fragmented_udp(v6: bool) -> None:
    """Fragments come back whole through input_slow and reach a bound endpoint."""
    us, peer = (A6, B6) if v6 else (A4, B4)
    host = Host(us)
    ep = host.udp_bind(5353)
    payload = bytes(range(256)) * 16
    frags = build_udp_fragments(peer, us, 4000, 5353, payload, mtu=1280, ident=99)
    assert len(frags) > 2
    host.receive(list(reversed(frags)), 1.0)
    got = ep.recvfrom()
    assert got is not None
    assert got[0] == payload and got[1][:2] == (peer, 4000)
    assert host.stats()["datagrams_reassembled"] == 1


def test_malformed_udp_dropped_and_counted() -> None:
    host = Host(A4)
    host.udp_bind(53)
    good = bytearray(build_udp(B4, A4, 1000, 53, b"query"))
    bad_csum = bytearray(good)
    bad_csum[-1] ^= 0xFF
    long_len = bytearray(good)
    long_len[24:26] = (200).to_bytes(2, "big")
    short_len = bytearray(good)
    short_len[24:26] = (4).to_bytes(2, "big")
    host.receive([bytes(bad_csum), bytes(long_len), bytes(short_len)], 1.0)
    st_ = host.stats()
    assert st_["drop_bad_udp_checksum"] == 1
    assert st_["drop_bad_udp_length"] == 2
    host6 = Host(A6)
    z = bytearray(build_udp(B6, A6, 1000, 53, b"q"))
    z[46:48] = b"\x00\x00"
    host6.receive([bytes(z)], 1.0)
    assert host6.stats()["drop_udp6_zero_checksum"] == 1


def test_ipv4_zero_checksum_accepted() -> None:
    host = Host(A4)
    ep = host.udp_bind(53)
    pkt = bytearray(build_udp(B4, A4, 1000, 53, b"no sum"))
    pkt[26:28] = b"\x00\x00"                     # RFC 768: none computed
    host.receive([bytes(pkt)], 1.0)
    assert ep.recvfrom() == (b"no sum", (B4, 1000))


def test_offload_flag_skips_udp_checksum() -> None:
    """A TUN in vnet mode (parse_flags 1) vouches for UDP as for TCP: a kernel-made
    partial checksum must not be dropped (the link verifies what the kernel did not)."""
    pkt = bytearray(build_udp(B4, A4, 1000, 53, b"partial"))
    pkt[26:28] = b"\x12\x34"                      # a pseudo-header sum, not the full one
    with pytest.raises(MalformedPacket):
        parse(bytes(pkt))
    assert parse(bytes(pkt), verify_checksums=False).payload == b"partial"
    host = Host(A4)
    ep = host.udp_bind(53)
    host.receive([bytes(pkt)], 1.0, parse_flags=1)
    assert ep.recvfrom() == (b"partial", (B4, 1000))


def test_fuzz_udp_never_raises() -> None:
    rng = random.Random(15)
    host = Host([A4, A6])
    host.udp_bind(53)
    seeds = [build_udp(B4, A4, 1000, 53, b"x" * 40), build_udp(B6, A6, 1000, 53, b"y" * 40)]
    seeds += build_udp_fragments(B4, A4, 1000, 53, bytes(3000), mtu=1280, ident=5)
    seeds += build_udp_fragments(B6, A6, 1000, 53, bytes(3000), mtu=1280, ident=5)
    packets = []
    for _ in range(4000):
        p = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if op < 0.6 and p:
                p[rng.randrange(len(p))] = rng.randrange(256)
            elif op < 0.8:
                del p[rng.randrange(len(p) + 1):]
            else:
                p += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        packets.append(bytes(p))
    host._raise_internal = True
    for i in range(0, len(packets), 100):
        host.receive(packets[i:i + 100], 1.0 + i / 1000)
        host.transmit(1.0 + i / 1000)
    st_ = host.stats()
    assert st_.get("drop_internal_error", 0) == 0
    assert st_["packets_in"] == 4000
    assert sum(v for k, v in st_.items() if k.startswith("drop_")) > 1000


def test_tun_link_verifies_udp_the_kernel_did_not() -> None:
    """In vnet mode the TUN link hands up every packet for PARSE_NO_TCP_CSUM; UDP (issue
    15) must keep that promise: a plain (neither NEEDS_CSUM nor DATA_VALID) datagram with
    a bad checksum is dropped by the link, good ones, IPv4 checksum 0 and a bad UDP length
    (left to the parser) go up."""
    import socket
    import struct

    from fasttcp.link._tunio import TunIO

    vnet = struct.Struct("<BBHHHH")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setblocking(False)
        b.setblocking(False)
        io = TunIO(b.fileno(), True, 16)
        good4 = build_udp(B4, A4, 1000, 53, b"x" * 33)
        good6 = build_udp(B6, A6, 1000, 53, b"y" * 33)
        bad4 = good4[:-1] + bytes([good4[-1] ^ 1])
        bad6 = good6[:-1] + bytes([good6[-1] ^ 1])
        none4 = bytearray(good4)
        none4[26:28] = b"\x00\x00"
        badlen = bytearray(good4)
        badlen[24:26] = (500).to_bytes(2, "big")
        partial = vnet.pack(1, 0, 0, 0, 20, 6) + good4[:26] + b"\x12\x34" + good4[28:]
        frames = [bytes(10) + good4, bytes(10) + good6, bytes(10) + bad4, bytes(10) + bad6,
                  bytes(10) + bytes(none4), bytes(10) + bytes(badlen), partial]
        for f in frames:
            a.send(f)
        got = io.recv_batch()
        assert got == [good4, good6, bytes(none4), bytes(badlen), partial[10:]]
        assert io.stats()["rx_csum_errors"] == 2
        batch = parse_batch(got, verify_checksums=False)
        assert batch.reasons() == [DropReason.NONE] * 3 + [DropReason.BAD_UDP_LENGTH,
                                                           DropReason.NONE]
    finally:
        a.close()
        b.close()
