"""IPv6 in the wire layer (issue 14): the parser against scapy-built packets (extension
headers, ICMPv6), every IPv6 packet the builders make checked by scapy (headers and
checksums), the malformed cases with their exact drop reasons, and a fuzz of mutated IPv6
packets (truncations, payload-length lies, extension-header chains)."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    HBHOptUnknown,
    RouterAlert,
    in6_chksum,
)
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from fasttcp.wire import (
    DropReason,
    MalformedPacket,
    TcpOptions,
    build_icmpv6,
    build_icmpv6_echo,
    build_icmpv6_error,
    build_ipv6,
    build_tcp,
    bytes_to_ip6,
    ip6_to_bytes,
    ip_version,
    parse,
    parse_batch,
    pseudo_header_checksum,
)

A, B = "2001:db8::10", "2001:db8:1::20"
EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _tcp6(*ext, payload=b"data", src=A, dst=B, flags="PA", **kw) -> bytes:
    pkt = IPv6(src=src, dst=dst, **kw)
    for h in ext:
        pkt = pkt / h
    return bytes(pkt / TCP(sport=40000, dport=80, flags=flags, seq=1000, ack=5) / Raw(payload))


# --- addresses ------------------------------------------------------------------------------

def test_address_helpers() -> None:
    assert ip_version("fd00::1") == 6 and ip_version("10.0.0.1") == 4
    assert ip_version(bytes(16)) == 6 and ip_version(0x0A000001) == 4
    assert ip6_to_bytes("fd00::1") == b"\xfd" + bytes(14) + b"\x01"
    assert bytes_to_ip6(ip6_to_bytes("2001:DB8:0:0:0:0:0:1")) == "2001:db8::1"   # RFC 5952
    with pytest.raises(ValueError, match="not an IPv6 address"):
        ip6_to_bytes("fd00::zz")
    with pytest.raises(ValueError):
        ip6_to_bytes(b"abc")


# --- builders, checked by scapy ---------------------------------------------------------------

addr6 = st.binary(min_size=16, max_size=16).filter(lambda a: a[0] != 0xFF and any(a)).map(
    bytes_to_ip6)


@EXAMPLES
@given(src=addr6, dst=addr6, sport=st.integers(1, 65535), dport=st.integers(1, 65535),
       seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       flags=st.integers(0, 255), window=st.integers(0, 65535),
       payload=st.binary(max_size=300), hop=st.integers(1, 255), tc=st.integers(0, 255),
       flow=st.integers(0, 2**20 - 1), mss=st.none() | st.integers(0, 65535),
       ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       nsack=st.integers(0, 3))
def test_build_tcp6_oracle(src, dst, sport, dport, seq, ack, flags, window, payload, hop, tc,
                           flow, mss, ts, nsack) -> None:
    opts = TcpOptions(mss=mss, timestamps=ts, sack=[(i, i + 10) for i in range(nsack)])
    p = build_tcp(src, dst, sport, dport, seq, ack, flags, window, payload, opts, ttl=hop,
                  tos=tc, flow=flow)
    sc = IPv6(p)
    assert (sc.version, sc.tc, sc.fl, sc.plen, sc.nh, sc.hlim) == (6, tc, flow, len(p) - 40,
                                                                  6, hop)
    assert (sc.src, sc.dst) == (src, dst)
    t = sc[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window) == (
        sport, dport, seq, ack, flags, window)
    # The payload where scapy's data offset puts it (scapy may dissect it by port).
    assert p[40 + t.dataofs * 4:] == payload
    # The checksum scapy computes over the IPv6 pseudo-header (RFC 8200 8.1), on the raw
    # segment (re-serialising would go through whatever scapy dissects the payload as).
    assert in6_chksum(6, sc, p[40:56] + b"\x00\x00" + p[58:]) == t.chksum
    assert pseudo_header_checksum(src, dst, 6, p[40:]) == 0   # sums to zero when right
    pk = parse(p)
    assert (pk.version, pk.src, pk.dst, pk.seq, pk.ack, pk.payload) == (6, src, dst, seq, ack,
                                                                       payload)
    assert (pk.ttl, pk.tos, pk.flow_label, pk.ip_header_len) == (hop, tc, flow, 40)


def test_build_icmpv6_oracle() -> None:
    e = build_icmpv6_echo(A, B, 0xBEEF, 7, b"ping" * 5)
    sc = IPv6(e)
    assert isinstance(sc.payload, ICMPv6EchoRequest)
    assert (sc.payload.id, sc.payload.seq, sc.payload.data) == (0xBEEF, 7, b"ping" * 5)
    c = sc.payload.cksum
    del sc.payload.cksum
    assert IPv6(bytes(sc)).payload.cksum == c
    r = IPv6(build_icmpv6_echo(B, A, 1, 2, b"x", reply=True))
    assert isinstance(r.payload, ICMPv6EchoReply)
    orig = build_tcp(B, A, 80, 40000, 1, 2, payload=b"y" * 2000)
    ptb = build_icmpv6_error("2001:db8:ff::1", B, 2, 0, orig, rest=1280)
    sc = IPv6(ptb)
    assert isinstance(sc.payload, ICMPv6PacketTooBig) and sc.payload.mtu == 1280
    assert len(ptb) <= 1280                                # RFC 4443 2.4 (c)
    c = sc.payload.cksum
    del sc.payload.cksum
    assert IPv6(bytes(sc)).payload.cksum == c
    pk = parse(ptb)
    assert pk.is_icmp and pk.is_icmp_error and pk.icmp_mtu == 1280
    assert pk.quoted == (B, A, 6, 80, 40000, 1)
    with pytest.raises(ValueError):
        build_icmpv6_error(A, B, 1, 4, b"\x45" + bytes(40))


def test_build_ipv6_oracle() -> None:
    p = build_ipv6(A, B, 59, b"abc", hop_limit=3, tclass=0xB8, flow=0xABCDE)
    sc = IPv6(p)
    assert (sc.nh, sc.hlim, sc.tc, sc.fl, sc.plen, bytes(sc.payload)) == (
        59, 3, 0xB8, 0xABCDE, 3, b"abc")


# --- the parser against scapy-built packets ------------------------------------------------------

ACCEPTED = [
    ("plain", _tcp6(), 40),
    ("hop-by-hop", _tcp6(IPv6ExtHdrHopByHop()), 48),
    ("hop-by-hop router alert", _tcp6(IPv6ExtHdrHopByHop(options=[RouterAlert()])), 48),
    ("unknown skippable option", _tcp6(IPv6ExtHdrDestOpt(
        options=[HBHOptUnknown(otype=0x1E, optdata=b"abcd")])), 48),
    ("destination options", _tcp6(IPv6ExtHdrDestOpt()), 48),
    ("routing, segments left 0", _tcp6(IPv6ExtHdrRouting(segleft=0, addresses=[B])), 64),
    # RFC 6946: an atomic fragment (offset 0, M clear) is processed at once.
    ("atomic fragment", _tcp6(IPv6ExtHdrFragment(offset=0, m=0, id=77)), 48),
    ("whole chain", _tcp6(IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(),
                          IPv6ExtHdrRouting(segleft=0), IPv6ExtHdrFragment(), IPv6ExtHdrDestOpt()),
     40 + 8 * 5),
    ("padding after the datagram", _tcp6() + b"\x00" * 7, 40),
]


@pytest.mark.parametrize("name, packet, hl", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_extension_headers_accepted(name: str, packet: bytes, hl: int) -> None:
    pk = parse(packet)
    assert pk.is_tcp and pk.version == 6 and pk.ip_header_len == hl
    assert (pk.src, pk.dst, pk.sport, pk.dport, pk.seq, pk.ack) == (A, B, 40000, 80, 1000, 5)
    assert pk.payload == b"data"
    assert pk.raw == packet[:pk.total_length]
    assert pk.total_length == 40 + IPv6(packet).plen
    batch = parse_batch([packet])
    assert batch.reason(0) is DropReason.NONE and batch.packet(0).payload == b"data"


def _reason(pkt: bytes) -> DropReason:
    with pytest.raises(MalformedPacket) as info:
        parse(pkt)
    assert parse_batch([pkt]).reason(0) is info.value.reason
    return info.value.reason


def _fix_tcp6_csum(b: bytearray, off: int) -> bytes:
    """Recompute the TCP checksum of the segment at `off` (after extension headers)."""
    end = 40 + int.from_bytes(b[4:6], "big")
    seg = bytearray(b[off:end])
    seg[16:18] = b"\x00\x00"
    pseudo = bytes(b[8:40]) + struct.pack(">IxxxB", len(seg), 6)
    b[off + 16:off + 18] = scapy_checksum(pseudo + bytes(seg)).to_bytes(2, "big")
    return bytes(b)


def test_malformed_ipv6_reasons() -> None:
    good = _tcp6()
    assert _reason(good[:39]) is DropReason.TRUNCATED_IP
    # The payload length lies: more than the buffer holds.
    lie = bytearray(good)
    lie[4:6] = (len(good) - 40 + 1).to_bytes(2, "big")
    assert _reason(bytes(lie)) is DropReason.BAD_TOTAL_LENGTH
    # ... less than the TCP header needs.
    short = bytearray(good)
    short[4:6] = (10).to_bytes(2, "big")
    assert _reason(bytes(short)) is DropReason.TRUNCATED_TCP
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    assert _reason(bytes(bad)) is DropReason.BAD_TCP_CHECKSUM
    assert parse(bytes(bad), verify_checksums=False).payload[-1] == good[-1] ^ 0xFF
    assert _reason(_tcp6(src="ff02::1")) is DropReason.BAD_SOURCE
    assert _reason(_tcp6(src="::")) is DropReason.BAD_SOURCE
    # RFC 8200 4.1: hop-by-hop options only right after the IPv6 header.
    assert _reason(_tcp6(IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop())) is \
        DropReason.BAD_IPV6_EXT_HEADER
    # Chains past the bound (a "loop" of destination options headers).
    assert parse(_tcp6(*[IPv6ExtHdrDestOpt() for _ in range(8)])).is_tcp
    assert _reason(_tcp6(*[IPv6ExtHdrDestOpt() for _ in range(9)])) is DropReason.IPV6_EXT_CHAIN
    assert _reason(_tcp6(*[IPv6ExtHdrDestOpt() for _ in range(200)])) is \
        DropReason.IPV6_EXT_CHAIN
    # An extension header running past the payload length.
    over = bytearray(_tcp6(IPv6ExtHdrDestOpt()))
    over[41] = 200
    assert _reason(bytes(over)) is DropReason.BAD_IPV6_EXT_HEADER
    # A header cut short by the payload length.
    cut = bytearray(_tcp6(IPv6ExtHdrDestOpt(), payload=b""))
    cut[4:6] = (4).to_bytes(2, "big")
    assert _reason(bytes(cut[:44])) is DropReason.BAD_IPV6_EXT_HEADER
    # RFC 8200 4.4: a routing header with segments left is for a later hop.
    assert _reason(_tcp6(IPv6ExtHdrRouting(segleft=1, addresses=[B]))) is \
        DropReason.IPV6_ROUTING_HEADER
    # RFC 8200 4.2: an unknown option whose type says discard (01, 10, 11 high bits).
    for otype in (0x5E, 0x9E, 0xDE, 0xC2):        # 0xC2: a jumbo payload we do not do
        assert _reason(_tcp6(IPv6ExtHdrDestOpt(
            options=[HBHOptUnknown(otype=otype, optdata=b"abcd")]))) is \
            DropReason.IPV6_BAD_OPTION
    # An option overrunning its header.
    opt = bytearray(_tcp6(IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E,
                                                                  optdata=b"abcd")])))
    opt[43] = 30
    assert _reason(bytes(opt)) is DropReason.BAD_IPV6_EXT_HEADER
    # A real fragment goes to reassembly; No Next Header and UDP are not ours.
    assert _reason(_tcp6(IPv6ExtHdrFragment(offset=0, m=1))) is DropReason.FRAGMENT
    assert _reason(_tcp6(IPv6ExtHdrFragment(offset=3, m=0))) is DropReason.FRAGMENT
    assert _reason(build_ipv6(A, B, 59)) is DropReason.UNSUPPORTED_PROTOCOL
    assert _reason(build_ipv6(A, B, 132, bytes(8))) is DropReason.UNSUPPORTED_PROTOCOL
    # UDP is parsed since issue 15: a UDP length of 0 is malformed
    assert _reason(build_ipv6(A, B, 17, bytes(8))) is DropReason.BAD_UDP_LENGTH
    # TCP data offset past the segment, with the checksum fixed up.
    doff = bytearray(good)
    doff[52] = 0xF0
    assert _reason(_fix_tcp6_csum(doff, 40)) is DropReason.BAD_DATA_OFFSET
    # ICMPv6: short, bad checksum (the pseudo-header counts), and an error without a quote.
    assert _reason(build_ipv6(A, B, 58, b"\x80\x00")) is DropReason.TRUNCATED_ICMP
    echo = bytearray(build_icmpv6_echo(A, B, 1, 1, b"abc"))
    echo[8] ^= 1                                    # the source address: pseudo-header
    assert _reason(bytes(echo)) is DropReason.BAD_ICMP_CHECKSUM
    assert _reason(build_icmpv6(A, B, 1, 4, 0, b"\x60" + bytes(20))) is \
        DropReason.BAD_ICMP_QUOTE
    assert _reason(build_icmpv6(A, B, 2, 0, 1280, b"\x45" + bytes(60))) is \
        DropReason.BAD_ICMP_QUOTE


def test_icmpv6_quote_walks_extension_headers() -> None:
    # Two destination options headers: RFC 8200 4.1 allows that.
    orig = _tcp6(IPv6ExtHdrDestOpt(), IPv6ExtHdrDestOpt(), src=B, dst=A)
    err = bytes(IPv6(src="2001:db8:ff::1", dst=B) / ICMPv6DestUnreach(code=4) / orig)
    pk = parse(err)
    assert pk.is_icmp_error and pk.icmp_type == 1 and pk.icmp_code == 4
    assert pk.quoted == (B, A, 6, 40000, 80, 1000)
    echo = parse(bytes(IPv6(src=A, dst=B) / ICMPv6EchoRequest(id=3, seq=4, data=b"hi")))
    assert (echo.icmp_type, echo.icmp_id, echo.icmp_seq, echo.payload) == (128, 3, 4, b"hi")
    assert not echo.is_icmp_error and echo.quoted is None


# --- fuzz -----------------------------------------------------------------------------------------

SEEDS = [p for _, p, _ in ACCEPTED] + [
    build_icmpv6_echo(A, B, 9, 9, b"x" * 40),
    build_icmpv6_error(B, A, 2, 0, _tcp6(src=B, dst=A), rest=1400),
    _tcp6(IPv6ExtHdrFragment(offset=0, m=1)),
    _tcp6(*[IPv6ExtHdrDestOpt() for _ in range(8)]),
]


def _mutate6(pkt: bytes, rng: random.Random) -> bytes:
    b = bytearray(pkt)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:
            b[rng.randrange(min(len(b), 120))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b) + 1):]
        elif op == 2 and len(b) >= 6:               # payload length lies
            b[4:6] = struct.pack(">H", rng.choice([0, len(b) - 40, len(b) - 39,
                                                   rng.randrange(65536)]) & 0xFFFF)
        elif op == 3 and len(b) >= 7:               # next header: an extension header
            b[6] = rng.choice([0, 43, 44, 60, 59, 6, 58, rng.randrange(256)])
        elif op == 4 and len(b) > 41:               # an extension header's next/length
            i = 40 + 8 * rng.randrange(max(1, (len(b) - 40) // 8))
            if i + 1 < len(b):
                b[i] = rng.choice([0, 43, 44, 60, 6])
                b[i + 1] = rng.randrange(256)
        elif op == 5:
            b += rng.randbytes(rng.randrange(1, 30))
        elif op == 6 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(SEEDS) - 1))
def test_fuzz_mutated_ipv6(seed: int, which: int) -> None:
    rng = random.Random(seed)
    pkt = _mutate6(SEEDS[which], rng)
    try:
        pk = parse(pkt)
    except MalformedPacket as e:
        reason = e.reason
    else:
        reason = DropReason.NONE
        assert pk.version == 6 and pk.total_length <= len(pkt)
        assert pk.ip_header_len <= pk.total_length
        if pk.is_tcp:
            assert pk.ip_header_len + pk.data_offset + pk.payload_len == pk.total_length
        # Nothing past the datagram matters: the same with other bytes after it.
        assert parse(pkt[:pk.total_length] + b"\xAA" * 9).raw == pk.raw
    # The batch parser agrees, and no result reads beyond the buffer.
    assert parse_batch([pkt, bytearray(pkt)]).reasons() == [reason, reason]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=120))
def test_fuzz_arbitrary_bytes_as_ipv6(data: bytes) -> None:
    pkt = b"\x60" + data
    try:
        parse(pkt)
    except MalformedPacket:
        pass
    parse_batch([pkt])


def test_every_truncation_of_a_chain() -> None:
    pkt = _tcp6(IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(segleft=0),
                IPv6ExtHdrFragment(), payload=b"z" * 30)
    for n in range(len(pkt)):
        with pytest.raises(MalformedPacket):
            parse(pkt[:n])
    assert parse(pkt).payload == b"z" * 30
