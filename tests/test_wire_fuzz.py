"""Fuzzing the parsers: arbitrary bytes, and valid packets mutated (byte changes, bit flips,
truncations, extensions, rewritten length fields and options) with their checksums fixed up
so the mutations reach the deeper checks.

What must hold for any input: `parse` returns a Packet or raises MalformedPacket (nothing
else); `parse_batch` raises nothing and agrees with `parse` packet by packet; an accepted
packet satisfies the invariants the parser promises (and, for TCP, reads as scapy reads
it); and no result depends on bytes past the end of the buffer (an out-of-bounds read
would show as a difference when the bytes after the buffer change).
"""
from __future__ import annotations

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, IPOption
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from fasttcp.wire import (
    DropReason,
    MalformedPacket,
    Packet,
    SegmentBatch,
    TcpOptions,
    build_icmp,
    build_icmp_echo,
    build_icmp_unreachable,
    build_tcp,
    parse,
    parse_batch,
)
from test_wire_oracle import scapy_options   # the oracle's reading of scapy's options

FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEWER = settings(max_examples=500, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

A, B = "192.0.2.10", "198.51.100.20"
_SYN = build_tcp(A, B, 40000, 443, 0xFFFFFF00, 0, flags=0x02, options=TcpOptions(
    mss=1460, wscale=7, sack_permitted=True, timestamps=(123456, 0)))
SEEDS: list[bytes] = [
    _SYN,
    build_tcp(A, B, 443, 40000, 7, 8, payload=b"x" * 33,
              options=TcpOptions(timestamps=(1, 2), sack=[(10, 20), (30, 40), (50, 60)])),
    build_tcp(A, B, 1, 2, 3, 4, flags=0x11, payload=bytes(range(256))),
    build_tcp(A, B, 80, 81, 0, 0, options=TcpOptions(sack=[(1, 2)] * 4)),
    bytes(IP(src=A, dst=B, options=[IPOption(b"\x94\x04\x00\x00")]) /
          TCP(sport=5, dport=6, options=[("NOP", None), (30, b"ab"), ("MSS", 536), ("EOL", None)]) /
          Raw(b"payload")),
    build_icmp_echo(A, B, 0xBEEF, 1, b"ping" * 8),
    build_icmp_unreachable(B, A, 4, _SYN, mtu=1400),
    build_icmp(B, A, 11, 0, 0, _SYN[:28]),
    build_icmp(B, A, 12, 0, 0x14000000, _SYN),
]


# --- helpers --------------------------------------------------------------------------------

def fix_checksums(b: bytearray) -> None:
    """Make the IPv4, TCP and ICMP checksums right for whatever the lengths now say, as far
    as the lengths make sense (scapy's checksum function does the sums)."""
    if len(b) < 20:
        return
    hl = (b[0] & 0x0F) * 4
    if hl < 20 or hl > len(b):
        return
    b[10:12] = b"\x00\x00"
    b[10:12] = scapy_checksum(bytes(b[:hl])).to_bytes(2, "big")
    total = int.from_bytes(b[2:4], "big")
    if total < hl or total > len(b):
        return
    seg = bytes(b[hl:total])
    if b[9] == 6 and len(seg) >= 18:
        seg = seg[:16] + b"\x00\x00" + seg[18:]
        pseudo = bytes(b[12:20]) + struct.pack(">BBH", 0, 6, len(seg))
        b[hl + 16:hl + 18] = scapy_checksum(pseudo + seg).to_bytes(2, "big")
    elif b[9] == 1 and len(seg) >= 4:
        seg = seg[:2] + b"\x00\x00" + seg[4:]
        b[hl + 2:hl + 4] = scapy_checksum(seg).to_bytes(2, "big")


def mutate(pkt: bytes, rng: random.Random, rounds: int) -> bytes:
    """Seeded mutations biased toward the headers, where the parser makes decisions."""
    b = bytearray(pkt)
    for _ in range(rounds):
        op = rng.randrange(9)
        hl = (b[0] & 0x0F) * 4 if b else 20
        if op == 0 and b:                       # any byte of the first 80
            b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
        elif op == 1 and b:                     # one bit anywhere
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 2:                           # cut
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:                           # extend
            b += rng.randbytes(rng.randrange(1, 40))
        elif op == 4 and len(b) >= 4:           # total length: exact, near, or random
            total = rng.choice([len(b), len(b) - rng.randrange(1, 30), len(b) + 1,
                                rng.randrange(65536)])
            b[2:4] = struct.pack(">H", max(0, min(total, 65535)))
        elif op == 5 and b:                     # version / IHL nibbles
            b[0] = rng.choice([0x40 | rng.randrange(16), rng.randrange(256), 0x45])
        elif op == 6 and len(b) > hl + 12:      # TCP data offset
            b[hl + 12] = (rng.randrange(16) << 4) | (b[hl + 12] & 0x0F)
        elif op == 7 and len(b) > hl + 20:      # an option-shaped run in the option area
            kind = rng.choice([0, 1, 2, 3, 4, 5, 8, 30, 254])
            olen = rng.choice([0, 1, 2, 3, 4, 10, 18, 34, 40, rng.randrange(256)])
            at = hl + 20 + rng.randrange(41)
            run = bytes([kind, olen]) + rng.randbytes(rng.randrange(12))
            b[at:at + len(run)] = run
        elif op == 8 and len(b) > 20:           # ICMP quote: version/IHL of the quoted header
            b[min(len(b) - 1, hl + 8)] = rng.randrange(256)
    if rng.random() < 0.9:
        fix_checksums(b)
    return bytes(b)


PROPS = ("src", "dst", "src_int", "dst_int", "ttl", "tos", "ip_id", "ip_flags", "frag_offset",
         "proto", "ip_header_len", "total_length", "is_tcp", "is_icmp", "sport", "dport",
         "seq", "ack", "flags", "flag_bits", "reserved", "window", "urgent", "data_offset",
         "options", "opt_bits", "tsval", "tsecr", "sack_blocks", "payload", "payload_len",
         "icmp_type", "icmp_code", "icmp_id", "icmp_seq",
         "icmp_mtu", "quoted",
         "raw")


def snapshot(pk: Packet) -> tuple:
    out = []
    for name in PROPS:
        try:
            out.append(getattr(pk, name))
        except AttributeError:
            out.append(AttributeError)      # a TCP field of an ICMP packet, and so on
    out.append(pk.summary())
    out.append(repr(pk))
    return tuple(out)


def check_invariants(pk: Packet, data: bytes) -> None:
    """What an accepted packet promises, checked from the raw bytes."""
    raw = pk.raw
    hl, total = pk.ip_header_len, pk.total_length
    assert raw == data[:total] and 20 <= hl <= total <= len(data)
    assert raw[0] >> 4 == 4 and (raw[0] & 0x0F) * 4 == hl
    assert scapy_checksum(raw[:hl]) == 0
    assert pk.frag_offset == 0 and not pk.ip_flags & 1
    assert pk.src_int != 0 and pk.src_int >> 28 < 0xE
    if pk.is_tcp:
        doff = pk.data_offset
        assert 20 <= doff <= total - hl and doff % 4 == 0
        assert pk.sport and pk.dport
        pseudo = raw[12:20] + struct.pack(">BBH", 0, 6, total - hl)
        assert scapy_checksum(pseudo + raw[hl:]) == 0
        assert pk.payload == raw[hl + doff:]
        o = pk.options
        assert len(o.sack) <= 4
        if doff == 20:
            assert not o
    else:
        assert pk.is_icmp
        assert total - hl >= 8 and scapy_checksum(raw[hl:]) == 0
        assert pk.payload == raw[hl + 8:]
        q = pk.quoted
        if pk.icmp_type in (3, 11, 12):
            assert len(pk.payload) >= 28 and pk.payload[0] >> 4 == 4
            assert len(pk.payload) >= (pk.payload[0] & 0x0F) * 4 + 8
            assert q is not None and len(q) == 6
        else:
            assert q is None


def parse_outcome(data) -> tuple:
    """(reason, snapshot or None); only MalformedPacket may escape `parse`."""
    try:
        pk = parse(data)
    except MalformedPacket as e:
        assert isinstance(e.reason, DropReason) and e.reason is not DropReason.NONE
        return e.reason, None
    return DropReason.NONE, snapshot(pk)


def check_input(data: bytes) -> DropReason:
    reason, snap = parse_outcome(data)
    if snap is not None:
        check_invariants(parse(data), data)
    # Same answer from other buffer kinds, and whatever lies past the end is never read.
    for guard in (b"\x00", b"\xff", b"\x45"):
        buf = bytearray(b"\x99" + data + guard * 64)
        assert parse_outcome(memoryview(buf)[1:1 + len(data)]) == (reason, snap)
    assert parse_outcome(bytearray(data)) == (reason, snap)
    return reason


def check_batch(items: list) -> None:
    batch = parse_batch(items)              # must not raise, whatever the items are
    assert len(batch) == len(items)
    singles = [parse_outcome(x) for x in items]
    assert batch.reasons() == [r for r, _ in singles]
    for i, (reason, snap) in enumerate(singles):
        assert batch.reason(i) is reason
        if snap is None:
            try:
                batch.packet(i)
            except MalformedPacket as e:
                assert e.reason is reason
            else:
                raise AssertionError("batch.packet() of a dropped packet returned")
        else:
            assert snapshot(batch.packet(i)) == snap


def scapy_agrees(data: bytes) -> None:
    """For an accepted TCP packet, scapy's dissection of the same bytes gives the same
    header fields and options."""
    pk = parse(data)
    if not pk.is_tcp:
        return
    sc = IP(data)
    if TCP not in sc:
        # scapy's dissector gives up on a TCP-AO option (kind 29) shorter than its key ids.
        hl = pk.ip_header_len
        assert 29 in data[hl + 20:hl + pk.data_offset]
        return
    t = sc[TCP]
    assert (pk.src, pk.dst, pk.ttl, pk.ip_id, sc.len) == (sc.src, sc.dst, sc.ttl, sc.id,
                                                          pk.total_length)
    assert (pk.sport, pk.dport, pk.seq, pk.ack, pk.window, pk.urgent) == (
        t.sport, t.dport, t.seq, t.ack, t.window, t.urgptr)
    assert pk.data_offset == t.dataofs * 4 and int(pk.flags) == int(t.flags) & 0xFF
    assert pk.options == scapy_options(t.options)


# --- tests ----------------------------------------------------------------------------------

def test_seeds_are_valid() -> None:
    for seed in SEEDS:
        assert check_input(seed) is DropReason.NONE
        scapy_agrees(seed)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    check_input(data)


@FUZZ
@given(st.binary(min_size=19, max_size=120), st.sampled_from([6, 1, 17, 6, 6]),
       st.booleans())
def test_ipv4_looking_bytes(body: bytes, proto: int, exact_total: bool) -> None:
    # Random bytes behind a plausible IPv4 header so the checks past it get exercised.
    b = bytearray(b"\x45" + body)
    b[9] = proto
    b[12] = (b[12] % 223) + 1                           # a unicast source
    b[6] &= 0x40                                        # not a fragment
    if exact_total:
        b[2:4] = struct.pack(">H", len(b))
    fix_checksums(b)
    check_input(bytes(b))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_mutated_packets(seed: bytes, rng_seed: int, rounds: int) -> None:
    data = mutate(seed, random.Random(rng_seed), rounds)
    if check_input(data) is DropReason.NONE:
        scapy_agrees(data)


@FEWER
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from(SEEDS), st.integers(0, 2**32 - 1), st.integers(0, 4)).map(
        lambda t: mutate(t[0], random.Random(t[1]), t[2]) if t[2] else t[0]),
    st.binary(max_size=80),
), max_size=24), st.lists(st.sampled_from([None, 7, "str", 3.5, [1, 2], b""]), max_size=3),
    st.integers(0, 2))
def test_batch_matches_single_parse(packets: list, junk: list, form: int) -> None:
    items: list = []
    for i, p in enumerate(packets):
        items.append((p, bytearray(p), memoryview(b"\x00" + p)[1:])[(i + form) % 3])
    items[len(items) // 2:len(items) // 2] = junk
    check_batch(items)


def test_many_mutations_through_a_reused_batch() -> None:
    # Volume without hypothesis: 24,000 seeded mutants through one SegmentBatch, 400 a
    # time, each compared with the single-packet parser.
    rng = random.Random(9293)
    batch = SegmentBatch(8)
    accepted = 0
    seen: set = set()
    for _ in range(60):
        items = [mutate(rng.choice(SEEDS), rng, rng.randrange(1, 5)) for _ in range(400)]
        ok = batch.parse(items)
        reasons = batch.reasons()
        singles = [parse_outcome(x)[0] for x in items]
        assert reasons == singles
        assert ok == singles.count(DropReason.NONE)
        for i, r in enumerate(reasons):
            if r is DropReason.NONE:
                check_invariants(batch.packet(i), items[i])
        accepted += ok
        seen.update(reasons)
    # The mutator reaches both outcomes and most checks.
    assert 0 < accepted < 24000
    assert len(seen) >= 14, sorted(seen)
