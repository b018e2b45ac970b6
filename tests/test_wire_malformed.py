"""A corpus of malformed packets, each with the exact DropReason `parse` must give, and the
batch parser (`parse_batch` / `SegmentBatch`) checked against the single-packet parser.

The packets are assembled byte by byte here (struct + scapy's checksum function), so a
field can hold any value a buggy or hostile peer might send, with checksums fixed up so the
parser reaches the check under test.
"""
from __future__ import annotations

import array
import gc
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
from scapy.utils import checksum as scapy_checksum

from fasttcp.wire import (
    DropReason,
    MalformedPacket,
    Packet,
    SegmentBatch,
    build_icmp_echo,
    build_icmp_unreachable,
    build_ipv6,
    build_tcp,
    ip_to_int,
    parse,
    parse_batch,
)

SRC, DST = "10.0.0.1", "10.0.0.2"


# --- a byte-level packet assembler ----------------------------------------------------------

def ipv4(payload: bytes, *, proto: int = 6, src: str = SRC, dst: str = DST, version: int = 4,
         ihl: int = 5, ip_opts: bytes = b"", total: int | None = None, flags_frag: int = 0x4000,
         ttl: int = 64, tos: int = 0, ip_id: int = 1, csum: bool = True,
         csum_span: int | None = None, bad_csum: bool = False) -> bytes:
    """An IPv4 packet with any header values; its checksum right unless asked otherwise."""
    hdr_len = 20 + len(ip_opts)
    if total is None:
        total = hdr_len + len(payload)
    hdr = bytearray(struct.pack(">BBHHHBBH4s4s", (version << 4) | ihl, tos, total, ip_id,
                                flags_frag, ttl, proto, 0, ip_to_int(src).to_bytes(4, "big"),
                                ip_to_int(dst).to_bytes(4, "big")) + ip_opts)
    if csum:
        # Sum over what IHL says is the header, as a receiver does (when it fits).
        span = csum_span or max(20, min(ihl * 4, len(hdr)))
        hdr[10:12] = scapy_checksum(bytes(hdr[:span])).to_bytes(2, "big")
    if bad_csum:
        hdr[10] ^= 0x5A
    return bytes(hdr) + payload


def udp(payload: bytes = b"", *, sport: int = 1000, dport: int = 53, length: int | None = None,
        csum_len: int | None = None, bad_csum: bool = False, zero_csum: bool = False) -> bytes:
    """An IPv4 + UDP packet with any length field; its checksum over `csum_len` bytes (the
    UDP length unless given) right unless asked otherwise."""
    ulen = 8 + len(payload) if length is None else length
    seg = bytearray(struct.pack(">HHHH", sport, dport, ulen, 0) + payload)
    if not zero_csum:
        n = ulen if csum_len is None else csum_len
        pseudo = struct.pack(">4s4sBBH", ip_to_int(SRC).to_bytes(4, "big"),
                             ip_to_int(DST).to_bytes(4, "big"), 0, 17, n)
        c = scapy_checksum(pseudo + bytes(seg[:n])) or 0xFFFF
        seg[6:8] = (c ^ (0x1234 if bad_csum else 0)).to_bytes(2, "big")
    return ipv4(bytes(seg), proto=17)


def udp6(*, bad_csum: bool = False, zero_csum: bool = False) -> bytes:
    """An IPv6 + UDP packet (checksum from scapy), optionally with a bad or zero checksum."""
    from scapy.layers.inet import UDP
    pkt = bytearray(bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=7, dport=9)
                          / b"xyz"))
    if zero_csum:
        pkt[46:48] = b"\x00\x00"
    elif bad_csum:
        pkt[47] ^= 0x01
    return bytes(pkt)


def tcp_checksum(src: str, dst: str, seg: bytes) -> int:
    pseudo = struct.pack(">4s4sBBH", ip_to_int(src).to_bytes(4, "big"),
                         ip_to_int(dst).to_bytes(4, "big"), 0, 6, len(seg))
    return scapy_checksum(pseudo + seg)


def tcp(*, options: bytes = b"", payload: bytes = b"", sport: int = 40000, dport: int = 80,
        seq: int = 1000, ack: int = 2000, flags: int = 0x18, window: int = 65535,
        doff: int | None = None, src: str = SRC, dst: str = DST, bad_csum: bool = False,
        **ip_kw) -> bytes:
    """IPv4 + TCP; options are raw bytes (padded with EOL to 4), `doff` in 32-bit words."""
    options = options + b"\x00" * (-len(options) % 4)
    if doff is None:
        doff = 5 + len(options) // 4
    seg = bytearray(struct.pack(">HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags,
                                window, 0, 0) + options + payload)
    ck = tcp_checksum(src, dst, bytes(seg))
    seg[16:18] = (ck ^ (0x0F0F if bad_csum else 0)).to_bytes(2, "big")
    return ipv4(bytes(seg), proto=6, src=src, dst=dst, **ip_kw)


def icmp(icmp_type: int, code: int = 0, rest: int = 0, data: bytes = b"", *,
         bad_csum: bool = False, **ip_kw) -> bytes:
    msg = bytearray(struct.pack(">BBHI", icmp_type, code, 0, rest) + data)
    ck = scapy_checksum(bytes(msg)) ^ (0x0F0F if bad_csum else 0)
    msg[2:4] = ck.to_bytes(2, "big")
    return ipv4(bytes(msg), proto=1, flags_frag=0, **ip_kw)


def with_ip_csum(pkt: bytes) -> bytes:
    """Recompute the IPv4 header checksum over IHL bytes after editing the header."""
    b = bytearray(pkt)
    hl = (b[0] & 0x0F) * 4
    b[10:12] = b"\x00\x00"
    b[10:12] = scapy_checksum(bytes(b[:hl])).to_bytes(2, "big")
    return bytes(b)


GOOD_TCP = tcp(options=b"\x02\x04\x05\xb4\x01\x03\x03\x07", payload=b"hello")
GOOD_ICMP = icmp(8, 0, 0x12340001, b"ping")
QUOTE = GOOD_TCP[:28]


def test_assembler_agrees_with_scapy() -> None:
    # The helpers above are an oracle of their own: scapy must read what they mean.
    p = IP(GOOD_TCP)
    assert p.src == SRC and p.dst == DST and p.len == len(GOOD_TCP)
    assert p[TCP].options == [("MSS", 1460), ("NOP", None), ("WScale", 7)]
    assert bytes(p[TCP].payload) == b"hello"
    q = p.copy()
    del q.chksum
    del q[TCP].chksum
    assert bytes(q) == GOOD_TCP        # scapy computes the same checksums
    pk = parse(GOOD_TCP)
    assert pk.options.mss == 1460 and pk.options.wscale == 7 and pk.payload == b"hello"
    assert parse(GOOD_ICMP).icmp_id == 0x1234


# --- the corpus -----------------------------------------------------------------------------

def _released_view() -> memoryview:
    mv = memoryview(GOOD_TCP)
    mv.release()
    return mv


R = DropReason
def _v6(*ext: object, plen: int | None = None, patch: tuple[int, int] | None = None) -> bytes:
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for h in ext:
        pkt = pkt / h
    b = bytearray(bytes(pkt / TCP(sport=1, dport=2)))
    if plen is not None:
        b[4:6] = plen.to_bytes(2, "big")
    if patch is not None:
        b[patch[0]] = patch[1]
    return bytes(b)


V6_OVERRUN = _v6(IPv6ExtHdrDestOpt(), patch=(41, 100))
V6_CHAIN = _v6(*[IPv6ExtHdrDestOpt() for _ in range(9)])
V6_ROUTING = _v6(IPv6ExtHdrRouting(segleft=1, addresses=["2001:db8::3"]))
V6_OPTION = _v6(IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x80, optdata=b"ab")]))
V6_LIE = _v6(plen=21)[:60]


CORPUS: list[tuple[str, object, DropReason]] = [
    # not bytes at all
    ("int", 42, R.NOT_BUFFER),
    ("none", None, R.NOT_BUFFER),
    ("str", GOOD_TCP.decode("latin-1"), R.NOT_BUFFER),
    ("list-of-ints", list(GOOD_TCP), R.NOT_BUFFER),
    ("non-contiguous-view", memoryview(GOOD_TCP + GOOD_TCP)[::2], R.NOT_BUFFER),
    ("released-view", _released_view(), R.NOT_BUFFER),
    # IPv4 header
    ("empty", b"", R.TRUNCATED_IP),
    ("one-byte", b"\x45", R.TRUNCATED_IP),
    ("19-bytes", GOOD_TCP[:19], R.TRUNCATED_IP),
    ("short-ipv6-ish", b"\x60" + bytes(10), R.TRUNCATED_IP),
    ("ihl-past-buffer", ipv4(b"", ihl=6, total=20), R.TRUNCATED_IP),
    ("ihl-15-in-40-bytes", ipv4(bytes(20), ihl=15, total=40), R.TRUNCATED_IP),
    # (6 is IPv6 now: an IPv4 header with version 6 is an IPv6 packet, tests/test_wire_ipv6.py)
    ("version-5", ipv4(bytes(40), version=5), R.BAD_IP_VERSION),
    ("version-0", ipv4(bytes(40), version=0), R.BAD_IP_VERSION),
    ("version-15", ipv4(bytes(40), version=15), R.BAD_IP_VERSION),
    ("ihl-0", ipv4(bytes(40), ihl=0), R.BAD_IHL),
    ("ihl-4", ipv4(bytes(40), ihl=4), R.BAD_IHL),
    ("bad-ip-checksum", ipv4(GOOD_TCP[20:], bad_csum=True), R.BAD_IP_CHECKSUM),
    ("ip-checksum-zero", ipv4(GOOD_TCP[20:], csum=False), R.BAD_IP_CHECKSUM),
    # RFC 791 3.1: the checksum covers the options too.
    ("ip-checksum-must-cover-options", ipv4(GOOD_TCP[20:], ihl=6, ip_opts=b"\x94\x04\x00\x00",
                                            csum_span=20), R.BAD_IP_CHECKSUM),
    ("total-below-ihl", ipv4(GOOD_TCP[20:], total=19), R.BAD_TOTAL_LENGTH),
    ("total-below-ihl-with-options", ipv4(GOOD_TCP[20:], ihl=6, ip_opts=b"\x01" * 4,
                                          total=23), R.BAD_TOTAL_LENGTH),
    ("total-past-buffer", ipv4(GOOD_TCP[20:], total=len(GOOD_TCP) + 1), R.BAD_TOTAL_LENGTH),
    ("total-65535", ipv4(GOOD_TCP[20:], total=65535), R.BAD_TOTAL_LENGTH),
    ("truncated-in-transit", GOOD_TCP[:-1], R.BAD_TOTAL_LENGTH),
    ("more-fragments", tcp(flags_frag=0x2000), R.FRAGMENT),
    ("more-fragments-and-df", tcp(flags_frag=0x6000), R.FRAGMENT),
    ("fragment-offset", tcp(flags_frag=0x0001), R.FRAGMENT),
    ("last-fragment", tcp(flags_frag=0x1FFF), R.FRAGMENT),
    ("source-0.0.0.0", tcp(src="0.0.0.0"), R.BAD_SOURCE),
    ("source-multicast", tcp(src="224.0.0.1"), R.BAD_SOURCE),
    ("source-multicast-top", tcp(src="239.255.255.255"), R.BAD_SOURCE),
    ("source-class-e", tcp(src="240.0.0.1"), R.BAD_SOURCE),
    ("source-broadcast", tcp(src="255.255.255.255"), R.BAD_SOURCE),
    ("sctp", ipv4(bytes(12), proto=132), R.UNSUPPORTED_PROTOCOL),
    # UDP (issue 15; RFC 768, RFC 8200 8.1)
    ("udp-empty", ipv4(b"", proto=17), R.TRUNCATED_UDP),
    ("udp-7-bytes", ipv4(bytes(7), proto=17), R.TRUNCATED_UDP),
    ("udp-length-0", ipv4(bytes(8), proto=17), R.BAD_UDP_LENGTH),
    ("udp-length-7", udp(length=7), R.BAD_UDP_LENGTH),
    ("udp-length-past-ip", udp(payload=b"abc", length=12), R.BAD_UDP_LENGTH),
    ("udp-bad-checksum", udp(payload=b"abc", bad_csum=True), R.BAD_UDP_CHECKSUM),
    ("udp-checksum-over-udp-length", udp(payload=b"abcd", length=10, csum_len=12),
     R.BAD_UDP_CHECKSUM),
    ("udp-dport-0", udp(dport=0), R.BAD_PORT),
    ("udp6-zero-checksum", udp6(zero_csum=True), R.UDP6_ZERO_CHECKSUM),
    ("udp6-bad-checksum", udp6(bad_csum=True), R.BAD_UDP_CHECKSUM),
    ("udp6-truncated", build_ipv6("fd00::1", "fd00::2", 17, bytes(5)), R.TRUNCATED_UDP),
    ("proto-0", ipv4(bytes(20), proto=0), R.UNSUPPORTED_PROTOCOL),
    ("proto-255", ipv4(bytes(20), proto=255), R.UNSUPPORTED_PROTOCOL),
    ("ipv6-in-ipv4", ipv4(bytes(40), proto=41), R.UNSUPPORTED_PROTOCOL),
    # TCP header
    ("tcp-empty", ipv4(b""), R.TRUNCATED_TCP),
    ("tcp-19-bytes", ipv4(GOOD_TCP[20:39]), R.TRUNCATED_TCP),
    ("tcp-cut-by-total-length", ipv4(GOOD_TCP[20:], total=39), R.TRUNCATED_TCP),
    ("data-offset-0", tcp(doff=0), R.BAD_DATA_OFFSET),
    ("data-offset-4", tcp(doff=4), R.BAD_DATA_OFFSET),
    ("data-offset-past-segment", tcp(doff=6), R.BAD_DATA_OFFSET),
    ("data-offset-15-short", tcp(options=bytes(16), doff=15), R.BAD_DATA_OFFSET),
    ("data-offset-past-total-length",
     ipv4(tcp(options=b"\x01" * 8)[20:], total=40 + 4), R.BAD_DATA_OFFSET),
    ("bad-tcp-checksum", tcp(payload=b"data", bad_csum=True), R.BAD_TCP_CHECKSUM),
    ("tcp-checksum-covers-odd-last-byte",
     bytes(bytearray(tcp(payload=b"abc"))[:-1]) + b"\x01", R.BAD_TCP_CHECKSUM),
    ("tcp-checksum-wrong-pseudo-header",
     with_ip_csum(tcp(payload=b"x")[:16] + bytes([10, 0, 0, 3]) + tcp(payload=b"x")[20:]),
     R.BAD_TCP_CHECKSUM),
    ("sport-0", tcp(sport=0), R.BAD_PORT),
    ("dport-0", tcp(dport=0), R.BAD_PORT),
    ("both-ports-0", tcp(sport=0, dport=0), R.BAD_PORT),
    # TCP options (RFC 9293 3.1, MUST-7)
    ("option-length-0", tcp(options=b"\x1e\x00\x00\x00"), R.BAD_OPTION),
    ("option-length-1", tcp(options=b"\x1e\x01\x00\x00"), R.BAD_OPTION),
    ("option-overruns-header", tcp(options=b"\x1e\x06\x00\x00"), R.BAD_OPTION),
    ("option-overruns-by-one", tcp(options=b"\x01\x1e\x04\x00"), R.BAD_OPTION),
    ("option-overruns-40", tcp(options=b"\x1e\x29" + bytes(38)), R.BAD_OPTION),
    ("kind-without-length-at-end", tcp(options=b"\x01\x01\x01\x02"), R.BAD_OPTION),
    ("unknown-kind-without-length", tcp(options=b"\x01\x01\x01\xfe"), R.BAD_OPTION),
    ("mss-length-3", tcp(options=b"\x02\x03\x05\x01"), R.BAD_OPTION),
    ("mss-length-5", tcp(options=b"\x02\x05\x05\xb4\x00\x01\x01\x01"), R.BAD_OPTION),
    ("mss-length-2", tcp(options=b"\x02\x02\x01\x01"), R.BAD_OPTION),
    ("wscale-length-2", tcp(options=b"\x03\x02\x01\x01"), R.BAD_OPTION),
    ("wscale-length-4", tcp(options=b"\x03\x04\x07\x00"), R.BAD_OPTION),
    ("sack-perm-length-3", tcp(options=b"\x04\x03\x00\x01"), R.BAD_OPTION),
    ("sack-perm-length-4", tcp(options=b"\x04\x04\x00\x00"), R.BAD_OPTION),
    ("sack-length-2", tcp(options=b"\x05\x02\x01\x01"), R.BAD_OPTION),
    ("sack-length-6", tcp(options=b"\x05\x06" + bytes(4)), R.BAD_OPTION),
    ("sack-length-9", tcp(options=b"\x05\x09" + bytes(7) + b"\x01" * 3), R.BAD_OPTION),
    ("sack-length-11", tcp(options=b"\x05\x0b" + bytes(9) + b"\x01"), R.BAD_OPTION),
    ("sack-length-14", tcp(options=b"\x05\x0e" + bytes(12) + b"\x01\x01"), R.BAD_OPTION),
    ("ts-length-8", tcp(options=b"\x08\x08" + bytes(6)), R.BAD_OPTION),
    ("ts-length-12", tcp(options=b"\x08\x0c" + bytes(10)), R.BAD_OPTION),
    ("ts-length-9", tcp(options=b"\x01\x01\x08\x09" + bytes(7) + b"\x01"), R.BAD_OPTION),
    ("bad-option-after-good-ones",
     tcp(options=b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + bytes(8) + b"\x03\x02\x01\x01"),
     R.BAD_OPTION),
    # ICMP
    ("icmp-empty", ipv4(b"", proto=1), R.TRUNCATED_ICMP),
    ("icmp-7-bytes", ipv4(GOOD_ICMP[20:27], proto=1), R.TRUNCATED_ICMP),
    ("icmp-cut-by-total-length", ipv4(GOOD_ICMP[20:], proto=1, total=27), R.TRUNCATED_ICMP),
    ("bad-icmp-checksum", icmp(8, 0, 1, b"ping", bad_csum=True), R.BAD_ICMP_CHECKSUM),
    ("bad-icmp-error-checksum", icmp(3, 1, 0, QUOTE, bad_csum=True), R.BAD_ICMP_CHECKSUM),
    ("unreachable-no-quote", icmp(3, 1), R.BAD_ICMP_QUOTE),
    ("unreachable-quote-27", icmp(3, 1, 0, QUOTE[:27]), R.BAD_ICMP_QUOTE),
    ("unreachable-header-only", icmp(3, 3, 0, QUOTE[:20]), R.BAD_ICMP_QUOTE),
    ("unreachable-quote-ihl-6-short", icmp(3, 3, 0, b"\x46" + QUOTE[1:] + b"\x00"),
     R.BAD_ICMP_QUOTE),
    ("unreachable-quote-ihl-15-short",
     icmp(3, 3, 0, b"\x4f" + QUOTE[1:] + bytes(39)), R.BAD_ICMP_QUOTE),
    ("unreachable-quote-ihl-4", icmp(3, 3, 0, b"\x44" + QUOTE[1:]), R.BAD_ICMP_QUOTE),
    ("unreachable-quote-version-6", icmp(3, 3, 0, b"\x65" + QUOTE[1:]), R.BAD_ICMP_QUOTE),
    ("frag-needed-short-quote", icmp(3, 4, 1400, QUOTE[:24]), R.BAD_ICMP_QUOTE),
    ("time-exceeded-short-quote", icmp(11, 0, 0, QUOTE[:20]), R.BAD_ICMP_QUOTE),
    ("parameter-problem-short-quote", icmp(12, 0, 0, QUOTE[:10]), R.BAD_ICMP_QUOTE),
    # Checks run in a fixed order: the earlier failure wins.
    ("version-before-ihl", ipv4(bytes(40), version=7, ihl=2), R.BAD_IP_VERSION),
    ("ip-checksum-before-total-length",
     ipv4(GOOD_TCP[20:], total=9999, bad_csum=True), R.BAD_IP_CHECKSUM),
    ("fragment-before-source", tcp(src="224.0.0.1", flags_frag=0x2000), R.FRAGMENT),
    ("source-before-protocol", ipv4(bytes(8), proto=17, src="0.0.0.0"), R.BAD_SOURCE),
    ("data-offset-before-checksum", tcp(doff=3, bad_csum=True), R.BAD_DATA_OFFSET),
    ("checksum-before-port", tcp(sport=0, bad_csum=True), R.BAD_TCP_CHECKSUM),
    ("port-before-options", tcp(sport=0, options=b"\x02\x03\x00\x00"), R.BAD_PORT),
    # IPv6 (issue 14; the whole set is in tests/test_wire_ipv6.py)
    ("ipv6-ext-header-overrun", V6_OVERRUN, R.BAD_IPV6_EXT_HEADER),
    ("ipv6-ext-chain-9", V6_CHAIN, R.IPV6_EXT_CHAIN),
    ("ipv6-routing-segments-left", V6_ROUTING, R.IPV6_ROUTING_HEADER),
    ("ipv6-discard-option", V6_OPTION, R.IPV6_BAD_OPTION),
    ("ipv6-payload-length-lie", V6_LIE, R.BAD_TOTAL_LENGTH),
]

# Accepted although they look odd: the parser must not over-reject.
VALID_ODDITIES: list[tuple[str, bytes]] = [
    ("minimal-tcp", tcp()),
    ("options", GOOD_TCP),
    ("ethernet-padding", GOOD_TCP + bytes(6)),
    ("ip-options", tcp(ihl=6, ip_opts=b"\x94\x04\x00\x00")),
    ("ip-options-40", tcp(ihl=15, ip_opts=b"\x01" * 39 + b"\x00")),
    ("ttl-0", tcp(ttl=0)),                   # RFC 1122 3.2.1.7: hosts don't check TTL
    ("reserved-flag-bit", tcp(flags_frag=0x8000)),
    ("no-df", tcp(flags_frag=0)),
    ("dest-broadcast", tcp(dst="255.255.255.255")),
    ("source-0.x", tcp(src="0.0.0.1")),
    ("source-loopback", tcp(src="127.0.0.1")),
    ("source-last-class-c", tcp(src="223.255.255.255")),
    ("data-offset-15", tcp(options=b"\x01" * 40)),
    ("eol-then-garbage", tcp(options=b"\x02\x04\x05\xb4\x00\x02\x03\xff")),
    ("eol-first", tcp(options=b"\x00\x05\x01\x01")),
    ("unknown-kinds", tcp(options=b"\xfe\x04\xab\xcd\x1e\x02\x22\x03\x00\x01")),
    ("sack-4-blocks", tcp(options=b"\x01\x01\x05\x22" + bytes(range(32)))),
    ("duplicate-mss", tcp(options=b"\x02\x04\x01\x00\x02\x04\x02\x00")),
    ("odd-payload", tcp(payload=b"abc")),
    ("all-flags", tcp(flags=0xFF)),
    ("icmp-echo-empty", icmp(8, 0, 0)),
    ("icmp-reply", icmp(0, 0, 0xFFFFFFFF, bytes(1000))),
    ("icmp-timestamp-type", icmp(13, 0, 0, bytes(12))),
    ("icmp-unknown-type", icmp(200, 9, 7, b"")),
    ("unreachable-exact-quote", icmp(3, 3, 0, QUOTE)),
    ("unreachable-quote-with-ip-options",
     icmp(3, 3, 0, tcp(ihl=6, ip_opts=b"\x01" * 4)[:32])),
    ("unreachable-long-quote", icmp(3, 1, 0, GOOD_TCP)),
    ("unreachable-quote-of-udp", icmp(3, 3, 0, ipv4(bytes(8), proto=17))),
    ("udp-no-checksum", udp(payload=b"abc", zero_csum=True)),     # RFC 768: 0 = none sent
    ("udp-source-port-0", udp(sport=0)),                           # RFC 768: optional
    ("udp-padding-after-udp-length", udp(payload=b"abcd", length=10, csum_len=10)),
    ("udp-empty-payload", udp()),
    ("time-exceeded", icmp(11, 0, 0, QUOTE)),
    ("parameter-problem", icmp(12, 0, 0x14000000, QUOTE)),
]


def _ids(cases) -> list[str]:
    return [c[0] for c in cases]


def test_corpus_covers_every_drop_reason() -> None:
    seen = {reason for _, _, reason in CORPUS}
    assert seen == set(DropReason) - {DropReason.NONE}


@pytest.mark.parametrize("name, packet, reason", CORPUS, ids=_ids(CORPUS))
def test_parse_gives_exact_reason(name: str, packet: object, reason: DropReason) -> None:
    with pytest.raises(MalformedPacket) as info:
        parse(packet)
    assert info.value.reason is reason
    assert isinstance(info.value, ValueError)
    assert reason.name in str(info.value)


@pytest.mark.parametrize("name, packet, reason", CORPUS, ids=_ids(CORPUS))
def test_batch_gives_same_reason(name: str, packet: object, reason: DropReason) -> None:
    batch = parse_batch([packet])
    assert len(batch) == 1
    assert batch.reason(0) is reason
    assert batch.reasons() == [reason]
    with pytest.raises(MalformedPacket) as info:
        batch.packet(0)
    assert info.value.reason is reason


@pytest.mark.parametrize("name, packet, reason", CORPUS, ids=_ids(CORPUS))
def test_bytearray_and_memoryview_give_same_reason(name: str, packet: object,
                                                   reason: DropReason) -> None:
    if not isinstance(packet, bytes):
        return
    for form in (bytearray(packet), memoryview(packet),
                 memoryview(b"\xaa" + packet + b"\xbb")[1:-1]):
        with pytest.raises(MalformedPacket) as info:
            parse(form)
        assert info.value.reason is reason
        assert parse_batch([form]).reason(0) is reason


@pytest.mark.parametrize("name, packet", VALID_ODDITIES, ids=_ids(VALID_ODDITIES))
def test_valid_oddities_are_accepted(name: str, packet: bytes) -> None:
    pk = parse(packet)
    assert isinstance(pk, Packet)
    assert parse_batch([packet]).reasons() == [DropReason.NONE]
    # scapy reads the same packet: same addresses and length.
    sc = IP(packet)
    assert (pk.src, pk.dst, pk.total_length, pk.proto) == (sc.src, sc.dst, sc.len, sc.proto)


def test_oddity_details() -> None:
    assert parse(GOOD_TCP + bytes(6)).raw == GOOD_TCP           # padding trimmed
    assert parse(GOOD_TCP + bytes(6)).payload == b"hello"
    assert parse(tcp(options=b"\x02\x04\x05\xb4\x00\x02\x03\xff")).options.mss == 1460
    assert parse(tcp(options=b"\x00\x05\x01\x01")).options.mss is None
    assert parse(tcp(options=b"\x02\x04\x01\x00\x02\x04\x02\x00")).options.mss == 0x200
    sack = parse(tcp(options=b"\x01\x01\x05\x22" + bytes(range(32)))).options.sack
    assert sack == tuple((int.from_bytes(bytes(range(i, i + 4)), "big"),
                          int.from_bytes(bytes(range(i + 4, i + 8)), "big"))
                         for i in range(0, 32, 8))
    assert parse(tcp(flags_frag=0x8000)).ip_flags == 4
    assert parse(tcp(flags_frag=0x4000)).ip_flags == 2
    pk = parse(tcp(ihl=6, ip_opts=b"\x94\x04\x00\x00", payload=b"xyz"))
    assert pk.ip_header_len == 24 and pk.payload == b"xyz"
    assert parse(icmp(12, 0, 0x14000000, QUOTE)).quoted == (SRC, DST, 6, 40000, 80, 1000)
    # a quoted UDP datagram: its ports (issue 15), no sequence number
    assert parse(icmp(3, 3, 0, ipv4(bytes(8), proto=17))).quoted == (SRC, DST, 17, 0, 0, None)
    assert parse(icmp(3, 3, 0, udp(sport=5353, dport=53))).quoted == (SRC, DST, 17, 5353, 53,
                                                                       None)
    pk = parse(udp(payload=b"abcd", length=10, csum_len=10))
    assert pk.is_udp and pk.payload == b"ab" and (pk.sport, pk.dport) == (1000, 53)


def test_verify_checksums_false_skips_ip_and_tcp_checksums() -> None:
    bad_ip = ipv4(GOOD_TCP[20:], bad_csum=True)
    bad_tcp = tcp(payload=b"data", bad_csum=True)
    for pkt in (bad_ip, bad_tcp):
        assert parse(pkt, verify_checksums=False).payload in (b"hello", b"data")
        assert parse_batch([pkt], verify_checksums=False).reasons() == [DropReason.NONE]
    # ICMP checksums are always checked (no offload covers them), and so is the rest.
    with pytest.raises(MalformedPacket) as info:
        parse(icmp(8, 0, 1, b"ping", bad_csum=True), verify_checksums=False)
    assert info.value.reason is DropReason.BAD_ICMP_CHECKSUM
    with pytest.raises(MalformedPacket) as info:
        parse(tcp(options=b"\x02\x03\x00\x00", bad_csum=True), verify_checksums=False)
    assert info.value.reason is DropReason.BAD_OPTION


# --- batch parse ----------------------------------------------------------------------------

PROPS = ("src", "dst", "src_int", "dst_int", "ttl", "tos", "ip_id", "ip_flags", "frag_offset",
         "proto", "ip_header_len", "total_length", "is_tcp", "is_icmp", "sport", "dport",
         "seq", "ack", "flags", "flag_bits", "reserved", "window", "urgent", "data_offset",
         "options", "opt_bits", "tsval", "tsecr", "sack_blocks", "payload", "payload_len",
         "icmp_type", "icmp_code", "icmp_id", "icmp_seq",
         "icmp_mtu", "quoted",
         "raw", "summary")


def snapshot(pk: Packet) -> dict:
    out = {}
    for name in PROPS:
        try:
            value = getattr(pk, name)
            out[name] = value() if name == "summary" else value
        except AttributeError:
            out[name] = AttributeError
    return out


def _forms(pkt: bytes, i: int) -> object:
    return (pkt, bytearray(pkt), memoryview(pkt), memoryview(b"\x00" * 3 + pkt)[3:])[i % 4]


def _mixed(n: int, seed: int) -> list:
    import random
    rng = random.Random(seed)
    good = [p for _, p in VALID_ODDITIES] + [
        build_tcp(SRC, DST, 1000 + i, 443, i * 7919, i, payload=bytes([i]) * i)
        for i in range(1, 30)]
    bad = [p for _, p, _ in CORPUS]
    return [rng.choice(good) if rng.random() < 0.6 else rng.choice(bad) for _ in range(n)]


def _check_batch(batch: SegmentBatch, packets: list, accepted: int) -> None:
    assert len(batch) == len(packets)
    expect_reasons = []
    for i, pkt in enumerate(packets):
        try:
            single = parse(pkt)
        except MalformedPacket as e:
            expect_reasons.append(e.reason)
            with pytest.raises(MalformedPacket):
                batch.packet(i)
        else:
            expect_reasons.append(DropReason.NONE)
            assert snapshot(batch.packet(i)) == snapshot(single)
    assert batch.reasons() == expect_reasons
    assert [batch.reason(i) for i in range(len(packets))] == expect_reasons
    assert accepted == expect_reasons.count(DropReason.NONE)


def test_parse_batch_mixed() -> None:
    raw = _mixed(300, seed=1)
    packets = [_forms(p, i) if isinstance(p, bytes) else p for i, p in enumerate(raw)]
    batch = parse_batch(packets)
    accepted = sum(r is DropReason.NONE for r in batch.reasons())
    assert 0 < accepted < len(packets)
    _check_batch(batch, packets, accepted)


def test_segment_batch_reuse_across_sizes() -> None:
    batch = SegmentBatch(2)
    for n, seed in ((5, 1), (1, 2), (200, 3), (0, 4), (17, 5), (64, 6), (3, 7), (500, 8)):
        raw = _mixed(n, seed)
        packets = [_forms(p, i + seed) if isinstance(p, bytes) else p
                   for i, p in enumerate(raw)]
        accepted = batch.parse(packets)
        _check_batch(batch, packets, accepted)
        with pytest.raises(IndexError):
            batch.reason(n)
        with pytest.raises(IndexError):
            batch.packet(-1)
    batch.parse([])
    assert len(batch) == 0 and batch.reasons() == []


def test_batch_holds_packets_after_caller_drops_them() -> None:
    # A link layer typically reuses its list (clear() after each batch) and may hand out
    # bytearrays it later resizes: views from the batch must stay valid regardless.
    packets = [build_tcp(SRC, DST, 1000 + i, 80, i, payload=bytes([i]) * 1000)
               for i in range(40)]
    items = [bytes(bytearray(p)) for p in packets]    # fresh objects only this list owns
    items[0] = bytearray(packets[0])
    batch = parse_batch(items)
    assert batch.reasons() == [DropReason.NONE] * 40
    try:
        items[0].clear()          # resizing a buffer the batch points into
    except BufferError:
        pass                      # refusing is fine too
    items.clear()
    gc.collect()
    junk = [b"\xee" * 1040 for _ in range(200)]     # reuse the freed memory
    assert [batch.packet(i).raw for i in range(40)] == packets
    del junk
    # Once the batch moves on, the bytearray is the caller's again.
    ba = bytearray(packets[1])
    batch.parse([ba])
    batch.parse([GOOD_TCP])
    ba.extend(b"more")
    batch2 = parse_batch([ba])
    del batch2
    ba.clear()


def test_batch_accepts_other_buffer_types() -> None:
    pkt = GOOD_TCP
    items = [pkt, bytearray(pkt), memoryview(pkt), array.array("B", pkt),
             memoryview(array.array("B", pkt)), "not a buffer", None]
    batch = parse_batch(items)
    assert batch.reasons() == [DropReason.NONE] * 5 + [DropReason.NOT_BUFFER] * 2
    assert all(batch.packet(i).raw == pkt for i in range(5))


def test_batch_rejects_non_list() -> None:
    with pytest.raises(TypeError):
        parse_batch((GOOD_TCP,))


def test_icmp_builders_survive_batch() -> None:
    items = [build_icmp_echo(SRC, DST, 7, 9, b"abc"),
             build_icmp_unreachable(DST, SRC, 4, GOOD_TCP, mtu=1280)]
    batch = parse_batch(items)
    assert batch.reasons() == [DropReason.NONE, DropReason.NONE]
    assert batch.packet(0).icmp_seq == 9
    assert batch.packet(1).icmp_mtu == 1280
