"""IPv4 fragment reassembly (fasttcp.host._frag): RFC 791 section 3.2, RFC 815, RFC 5722.

Oracle: scapy. ``scapy.layers.inet.fragment`` cuts TCP and ICMP packets into fragments;
whatever order (shuffled, duplicated, last first) they are fed in, the reassembled bytes
must equal scapy's ``raw`` of the original packet, and parse the same with scapy and with
fasttcp's wire layer. Hostile cases: overlaps (teardrop), a datagram past 65535 bytes (ping
of death), floods against the memory and datagram limits, malformed headers, fuzzing.
"""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import raw
from scapy.layers.inet import ICMP, IP, TCP, IPOption_RR, fragment

from fasttcp.host import _frag
from fasttcp.host._frag import FragmentReassembler
from fasttcp.wire import DropReason, MalformedPacket, checksum, parse

SRC, DST = "10.0.0.1", "10.0.0.2"


def tcp_packet(n: int, ident: int = 0x1234, **ip) -> IP:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(n))
    return (IP(src=SRC, dst=DST, id=ident, **ip)
            / TCP(sport=40000, dport=80, seq=1000, ack=2000, flags="PA") / payload)


def icmp_packet(n: int, ident: int = 0x4321) -> IP:
    payload = bytes((i * 13 + 1) & 0xFF for i in range(n))
    return IP(src=SRC, dst=DST, id=ident) / ICMP(type=8, id=7, seq=1) / payload


def frags(pkt: IP, size: int) -> list[bytes]:
    out = [raw(f) for f in fragment(pkt, fragsize=size)]
    assert len(out) > 1
    return out


def feed(r: FragmentReassembler, packets, now: float = 0.0) -> list[bytes]:
    return [o for o in (r.add(p, now) for p in packets) if o is not None]


def ip_fragment(payload: bytes, offset: int, more: bool, ident: int = 99, proto: int = 6,
                src: bytes = b"\x0a\x00\x00\x01", dst: bytes = b"\x0a\x00\x00\x02",
                df: bool = False, options: bytes = b"") -> bytes:
    """An IPv4 fragment built by hand (offset in bytes, a multiple of 8)."""
    hl = 20 + len(options)
    flags = (0x2000 if more else 0) | (0x4000 if df else 0) | (offset // 8)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(payload), ident,
                                flags, 64, proto, 0, src, dst) + options)
    c = checksum(bytes(hdr))
    hdr[10:12] = c.to_bytes(2, "big")
    return bytes(hdr) + payload


def test_module_is_compiled():
    assert _frag.COMPILED is True
    assert _frag.__file__.endswith(".so")


# --------------------------------------------------------------------------------------------
# scapy's fragment() as the oracle
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 16, 24, 64, 100, 512, 1000, 1480])
@pytest.mark.parametrize("kind", ["tcp", "icmp"])
def test_reassembles_scapy_fragments_in_any_order(kind, size):
    pkt = tcp_packet(3000) if kind == "tcp" else icmp_packet(3000)
    original = raw(pkt)
    pieces = frags(pkt, size)
    rng = random.Random(f"{kind}{size}")
    for trial in range(4):
        order = list(pieces)
        dups = 0
        if trial == 1:
            order.reverse()                              # last fragment first
        elif trial >= 2:
            rng.shuffle(order)
            if trial == 3 and order[-1] is not pieces[-1]:
                order.remove(pieces[-1])                 # the MF=0 fragment first
                order.insert(0, pieces[-1])
            # duplicates (the network may copy packets), all before the final piece
            for p in rng.sample(order[:-1], min(3, len(order) - 1)):
                order.insert(rng.randrange(len(order)), p)
                dups += 1
        r = FragmentReassembler()
        out = [r.add(p, 1.0) for p in order]
        # the datagram completes on its last missing piece, and only then
        assert all(o is None for o in out[:-1])
        assert out[-1] == original
        assert r.reassembled == 1 and r.held_bytes == 0 and r.datagrams == 0
        assert r.duplicates == dups and r.overlaps == r.bad == 0


def test_reassembled_packet_parses_like_the_original():
    pkt = tcp_packet(5000)
    got = feed(FragmentReassembler(), frags(pkt, 1480))[0]
    a, b = IP(got), IP(raw(pkt))
    assert a.flags == 0 and a.frag == 0 and a.len == len(got) == len(raw(pkt))
    assert a.chksum == b.chksum and a[TCP].chksum == b[TCP].chksum
    assert bytes(a[TCP].payload) == bytes(b[TCP].payload)
    seg = parse(got)                                    # the wire layer takes it now
    assert seg.payload == bytes(b[TCP].payload)
    # Each fragment alone is what the wire layer refuses as FRAGMENT.
    for f in frags(pkt, 1480):
        with pytest.raises(MalformedPacket) as e:
            parse(f)
        assert e.value.reason == DropReason.FRAGMENT


def test_ip_options_of_the_first_fragment_are_kept():
    pkt = tcp_packet(2000, options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])])
    original = raw(pkt)
    assert (original[0] & 0x0F) > 5
    pieces = frags(pkt, 256)
    got = feed(FragmentReassembler(), reversed(pieces))
    assert got == [original]


def test_tiny_fragments_of_eight_bytes():
    pkt = icmp_packet(1000)
    pieces = frags(pkt, 8)
    assert len(pieces) == (len(raw(pkt)) - 20 + 7) // 8
    random.Random(5).shuffle(pieces)
    assert feed(FragmentReassembler(), pieces) == [raw(pkt)]


def test_last_fragment_first_and_header_fields():
    payload = bytes(range(256)) * 4
    f1 = ip_fragment(payload[:512], 0, True, df=False)
    f2 = ip_fragment(payload[512:], 512, False)
    r = FragmentReassembler()
    assert r.add(f2, 0.0) is None
    out = r.add(f1, 0.0)
    assert out[20:] == payload
    assert struct.unpack("!H", out[2:4])[0] == len(out) == 20 + len(payload)
    assert struct.unpack("!H", out[6:8])[0] == 0                  # MF and offset cleared
    assert checksum(out[:20]) == 0                                # header checksum fixed
    assert out[:2] == f1[:2] and out[4:6] == f1[4:6] and out[8:10] == f1[8:10]
    assert out[12:20] == f1[12:20]


def test_df_and_reserved_bits_of_the_first_fragment_survive():
    payload = bytes(64)
    out = feed(FragmentReassembler(), [ip_fragment(payload[:32], 0, True, df=True),
                                      ip_fragment(payload[32:], 32, False)])[0]
    assert struct.unpack("!H", out[6:8])[0] == 0x4000


def test_interleaved_datagrams_are_kept_apart_by_src_dst_proto_id():
    a = frags(tcp_packet(2000, ident=1), 512)
    b = frags(tcp_packet(2000, ident=2), 512)
    c = frags(IP(src="10.0.0.9", dst=DST, id=1) / TCP(sport=1, dport=2) / bytes(2000), 512)
    d = frags(IP(src=SRC, dst=DST, id=1, proto=17) / bytes(2000), 512)   # UDP-ish, same id
    mixed = [p for group in zip(a, b, c, d) for p in group]
    got = feed(FragmentReassembler(), mixed)
    expect = [raw(tcp_packet(2000, ident=1)), raw(tcp_packet(2000, ident=2)),
              raw(IP(src="10.0.0.9", dst=DST, id=1) / TCP(sport=1, dport=2) / bytes(2000)),
              raw(IP(src=SRC, dst=DST, id=1, proto=17) / bytes(2000))]
    assert sorted(got) == sorted(expect)


def test_unfragmented_packet_passes_through():
    pkt = raw(tcp_packet(100))
    r = FragmentReassembler()
    assert r.add(pkt + b"\x00" * 6, 0.0) == pkt       # link padding trimmed
    assert r.unfragmented == 1 and r.reassembled == 0


def test_accepts_any_buffer():
    pieces = frags(tcp_packet(2000), 512)
    assert len(pieces) == 4
    r = FragmentReassembler()
    assert r.add(bytearray(pieces[0]), 0.0) is None
    assert r.add(memoryview(pieces[1]), 0.0) is None
    assert r.add(memoryview(b"xx" + pieces[2])[2:], 0.0) is None
    assert r.add(pieces[3], 0.0) == raw(tcp_packet(2000))


# --------------------------------------------------------------------------------------------
# Overlaps (RFC 5722 applied to IPv4)
# --------------------------------------------------------------------------------------------

def test_teardrop_overlap_discards_the_datagram():
    # Teardrop: the second fragment starts inside the first and ends before it.
    r = FragmentReassembler()
    assert r.add(ip_fragment(bytes(48), 0, True), 0.0) is None
    assert r.add(ip_fragment(bytes(8), 24, False), 0.0) is None
    assert r.overlaps == 1 and r.held_bytes == 0
    # The fragments still to come of that datagram are discarded too.
    assert r.add(ip_fragment(bytes(8), 48, False), 0.0) is None
    assert r.add(ip_fragment(bytes(48), 0, True), 0.0) is None
    assert r.discarded == 2 and r.reassembled == 0
    # The tombstone leaves with the timeout, silently; then the id may be used afresh.
    r.expire(30.0)
    assert r.datagrams == 0 and r.timeouts == 0
    out = feed(r, [ip_fragment(bytes(48), 0, True), ip_fragment(bytes(8), 48, False)], 31.0)
    assert len(out) == 1 and len(out[0]) == 20 + 56


@pytest.mark.parametrize("second", [
    (8, 16, True),      # starts inside the first
    (0, 8, True),       # same start, shorter: a rewrite of the first bytes
    (16, 32, False),    # last fragment overlapping the tail
    (0, 16, True),      # same range, different content
])
def test_overlaps_of_every_shape(second):
    start, length, more = second
    r = FragmentReassembler()
    r.add(ip_fragment(bytes(24), 0, True), 0.0)
    assert r.add(ip_fragment(b"\xff" * length, start, more), 0.0) is None
    assert r.overlaps == 1 and r.datagrams == 1 and r.held_bytes == 0


def test_overlap_from_below():
    r = FragmentReassembler()
    r.add(ip_fragment(bytes(16), 16, True), 0.0)
    r.add(ip_fragment(bytes(24), 0, True), 0.0)     # [0, 24) runs into [16, 32)
    assert r.overlaps == 1


def test_exact_duplicate_is_not_an_overlap():
    r = FragmentReassembler()
    f = ip_fragment(bytes(range(16)), 0, True)
    r.add(f, 0.0)
    r.add(f, 0.0)
    assert r.duplicates == 1 and r.overlaps == 0
    assert r.add(ip_fragment(bytes(8), 16, False), 0.0) is not None


def test_conflicting_ends_discard():
    r = FragmentReassembler()
    r.add(ip_fragment(bytes(8), 16, False), 0.0)     # ends at 24
    r.add(ip_fragment(bytes(8), 32, False), 0.0)     # says 40
    assert r.overlaps == 1
    r = FragmentReassembler()
    r.add(ip_fragment(bytes(8), 16, False), 0.0)     # ends at 24
    r.add(ip_fragment(bytes(16), 24, True), 0.0)     # data past the end
    assert r.overlaps == 1
    r = FragmentReassembler()
    r.add(ip_fragment(bytes(16), 32, True), 0.0)     # data up to 48
    r.add(ip_fragment(bytes(8), 8, False), 0.0)      # an end at 16, below it
    assert r.overlaps == 1


# --------------------------------------------------------------------------------------------
# Size, time and memory limits
# --------------------------------------------------------------------------------------------

def test_ping_of_death_too_big():
    r = FragmentReassembler()
    assert r.add(ip_fragment(bytes(64), 0, True), 0.0) is None
    # The last fragment at offset 65528 with 100 bytes: 20 + 65628 > 65535.
    assert r.add(ip_fragment(bytes(100), 65528, False), 0.0) is None
    assert r.too_big == 1 and r.held_bytes == 0
    assert r.add(ip_fragment(bytes(8), 64, True), 0.0) is None
    assert r.discarded == 1


def test_largest_legal_datagram():
    # 20 + 65515 = 65535 bytes exactly: allowed.
    payload = bytes(i & 0xFF for i in range(65515))
    pieces = [ip_fragment(payload[o:o + 8000], o, o + 8000 < len(payload))
              for o in range(0, len(payload), 8000)]
    random.Random(1).shuffle(pieces)
    out = feed(FragmentReassembler(), pieces)
    assert len(out) == 1 and len(out[0]) == 65535 and out[0][20:] == payload


def test_missing_middle_never_completes_and_expires():
    pieces = frags(tcp_packet(3000), 1000)
    assert len(pieces) == 4
    r = FragmentReassembler(timeout=30.0)
    for i, p in enumerate(pieces):
        if i != 2:
            assert r.add(p, 10.0 + i) is None
    held = sum(len(p) for i, p in enumerate(pieces) if i != 2)
    assert r.datagrams == 1 and r.held_bytes == held
    assert r.expire(39.9) == 0 and r.datagrams == 1
    assert r.expire(40.0) == 1                        # 30 s after the first fragment
    assert r.timeouts == 1 and r.datagrams == 0 and r.held_bytes == 0
    # The missing piece alone, later, starts a new datagram that cannot complete.
    assert r.add(pieces[2], 41.0) is None
    assert r.reassembled == 0


def test_add_expires_stale_datagrams():
    r = FragmentReassembler(timeout=5.0)
    a = frags(tcp_packet(2000, ident=1), 512)
    b = frags(tcp_packet(2000, ident=2), 512)
    r.add(a[0], 0.0)
    r.add(b[0], 3.0)
    r.add(b[1], 6.0)           # a is 6 s old: gone; b stays
    assert r.timeouts == 1 and r.datagrams == 1
    assert feed(r, a[1:], 6.5) == []
    assert feed(r, b[2:], 7.0) == [raw(tcp_packet(2000, ident=2))]


def test_memory_cap_evicts_the_oldest():
    r = FragmentReassembler(max_bytes=10_000, max_datagrams=64)
    # Incomplete datagrams of 1516-byte first fragments: six fit in 10000 bytes.
    firsts = [ip_fragment(bytes(1496), 0, True, ident=i) for i in range(10)]
    for i, f in enumerate(firsts):
        r.add(f, float(i))
        assert r.held_bytes <= 10_000
    assert r.evicted == 4 and r.datagrams == 6 and r.held_bytes == 6 * 1516
    # The survivors are the newest: completing ident 9 works, ident 0 is gone.
    assert r.add(ip_fragment(bytes(8), 1496, False, ident=9), 10.0) is not None
    assert r.add(ip_fragment(bytes(8), 1496, False, ident=0), 10.0) is None


def test_fragment_larger_than_the_budget_is_dropped():
    r = FragmentReassembler(max_bytes=1000)
    assert r.add(ip_fragment(bytes(1496), 0, True), 0.0) is None
    assert r.held_bytes == 0 and r.datagrams == 0 and r.evicted == 1


def test_a_datagram_evicted_while_its_own_fragment_makes_room():
    r = FragmentReassembler(max_bytes=3000)
    r.add(ip_fragment(bytes(1000), 0, True, ident=1), 0.0)
    r.add(ip_fragment(bytes(1000), 0, True, ident=2), 1.0)
    # ident 1 grows: room is made by evicting the oldest, which is ident 1 itself.
    assert r.add(ip_fragment(bytes(1000), 1000, True, ident=1), 2.0) is None
    assert r.evicted == 1 and r.datagrams == 1 and r.held_bytes == 1020


def test_max_datagrams():
    r = FragmentReassembler(max_datagrams=3)
    for i in range(5):
        r.add(ip_fragment(bytes(8), 0, True, ident=i), float(i))
    assert r.datagrams == 3 and r.evicted == 2
    assert r.add(ip_fragment(bytes(8), 8, False, ident=4), 5.0) is not None
    assert r.add(ip_fragment(bytes(8), 8, False, ident=0), 5.0) is None


def test_tiny_fragment_flood_is_bounded():
    r = FragmentReassembler(max_bytes=1 << 16, max_datagrams=8)
    rng = random.Random(3)
    for i in range(20000):
        off = rng.randrange(0, 8190) * 8
        r.add(ip_fragment(bytes(8), off, True, ident=rng.randrange(16)), i * 1e-4)
        assert r.held_bytes <= 1 << 16 and r.datagrams <= 8
    assert r.evicted > 0 and r.reassembled == 0


def test_constructor_arguments():
    r = FragmentReassembler()
    assert (r.max_bytes, r.max_datagrams, r.timeout) == (1 << 20, 64, 30.0)
    for bad in (dict(max_bytes=0), dict(max_datagrams=0), dict(timeout=0.0)):
        with pytest.raises(ValueError):
            FragmentReassembler(**bad)


# --------------------------------------------------------------------------------------------
# Malformed fragments
# --------------------------------------------------------------------------------------------

def _refix(b: bytearray) -> bytes:
    hl = (b[0] & 0x0F) * 4
    b[10:12] = b"\x00\x00"
    b[10:12] = checksum(bytes(b[:hl])).to_bytes(2, "big")
    return bytes(b)


def test_malformed_fragments_are_counted_as_bad():
    good = ip_fragment(bytes(16), 0, True)
    cases = []
    b = bytearray(good); b[11] ^= 1; cases.append(bytes(b))                 # header checksum
    b = bytearray(good); b[0] = 0x65; cases.append(_refix(b))              # version 6
    b = bytearray(good); b[0] = 0x44; cases.append(bytes(b))               # IHL 4
    b = bytearray(good); b[0] = 0x4F; cases.append(bytes(b))               # IHL 60 > length
    b = bytearray(good); b[2:4] = (100).to_bytes(2, "big"); cases.append(_refix(b))  # > buffer
    b = bytearray(good); b[2:4] = (10).to_bytes(2, "big"); cases.append(_refix(b))   # < IHL
    cases.append(ip_fragment(bytes(12), 0, True))                          # MF, 12 bytes
    cases.append(ip_fragment(b"", 8, True))                                # MF, no data
    cases.append(good[:19])                                                # truncated
    cases += [b"", b"\x45", None, 17, "text", object()]
    r = FragmentReassembler()
    for c in cases:
        assert r.add(c, 0.0) is None
    assert r.bad == len(cases) and r.datagrams == 0 and r.fragments_in == len(cases)


def test_zero_length_last_fragment_sets_the_end():
    r = FragmentReassembler()
    assert r.add(ip_fragment(bytes(16), 0, True), 0.0) is None
    out = r.add(ip_fragment(b"", 16, False), 0.0)
    assert out is not None and len(out) == 36


# --------------------------------------------------------------------------------------------
# Property tests and fuzzing (hypothesis)
# --------------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_any_split_in_any_order_reassembles(payload, data):
    # Cut the payload at random multiples of 8, shuffle, add duplicates: one result, equal.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, (len(payload) - 1) // 8)),
                                         max_size=12))))
    bounds = [0] + [c * 8 for c in cuts if c * 8 < len(payload)] + [len(payload)]
    pieces = [ip_fragment(payload[a:b], a, b < len(payload))
              for a, b in zip(bounds, bounds[1:])]
    if len(pieces) == 1:
        return
    order = data.draw(st.permutations(pieces))
    dups = data.draw(st.lists(st.sampled_from(order[:-1]), max_size=3))
    seq = list(order[:-1]) + dups + [order[-1]]
    r = FragmentReassembler()
    out = [r.add(p, 0.0) for p in seq]
    assert [o for o in out[:-1] if o is not None] == []
    assert out[-1] is not None and out[-1][20:] == payload
    assert checksum(out[-1][:20]) == 0 and r.overlaps == 0


def _mutate(rng: random.Random, p: bytes) -> bytes:
    b = bytearray(p)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        if kind == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:
            b = b[:rng.randrange(len(b) + 1)]
        elif kind == 2:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(16)))
        elif len(b) >= 20:
            b[6:8] = rng.randrange(65536).to_bytes(2, "big")    # flags and offset
            b = bytearray(_refix(b)) if (b[0] >> 4) == 4 and 20 <= (b[0] & 15) * 4 <= len(b) \
                else b
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(0, 40))),
                max_size=40),
       st.floats(allow_nan=True, allow_infinity=True))
def test_fuzz_never_raises_and_limits_hold(items, odd_time):
    # Raw bytes, fragments of a real datagram and mutated ones, with a sane clock and now
    # and then the fuzzer's own float (NaN, infinities, negatives) as "now".
    original = raw(tcp_packet(600, ident=5))
    base = frags(tcp_packet(600, ident=5), 64)
    r = FragmentReassembler(max_bytes=2000, max_datagrams=4, timeout=1.0)
    now = 0.0
    for i, it in enumerate(items):
        if isinstance(it, tuple):
            seed, step = it
            rng = random.Random(seed)
            pkt = _mutate(rng, rng.choice(base)) if seed & 1 else rng.choice(base)
            now += step * 0.05
        else:
            pkt = it
        out = r.add(pkt, odd_time if i % 7 == 6 else now)
        assert out is None or isinstance(out, bytes)
        if out is not None and out != original:
            # a mutated fragment may complete a datagram: still a valid IPv4 header
            assert out[0] >> 4 == 4 and checksum(out[:(out[0] & 15) * 4]) == 0
            assert struct.unpack("!H", out[2:4])[0] == len(out)
        assert 0 <= r.held_bytes <= 2000 and r.datagrams <= 4
    assert r.bad + r.reassembled + r.unfragmented <= r.fragments_in == len(items)
