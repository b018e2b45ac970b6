"""Internet checksum (RFC 1071), pseudo-header checksum and incremental update (RFC 1624).

Oracles: ``scapy.utils.checksum`` / ``scapy.layers.inet.in4_chksum``, a plain big-endian
word-sum reference written here, and the worked examples printed in RFC 1071 and RFC 1624.
Every test that sums 64 bytes or more runs once per checksum kernel (portable C,
add-with-carry, AVX2), forced with ``select_checksum_implementation``.
"""
from __future__ import annotations

import array
import itertools
import platform
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, in4_chksum
from scapy.utils import checksum as scapy_checksum

from fasttcp.wire import (
    checksum,
    checksum_implementation,
    checksum_update,
    ones_sum,
    pseudo_header_checksum,
    select_checksum_implementation,
)

MAX_LEN = 65535
# The `kernel` fixture is meant to stay in force across every example of a test.
PER_KERNEL = [HealthCheck.function_scoped_fixture]


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


_X86_64 = platform.machine() in ("x86_64", "AMD64")
AVAILABLE = {"portable": True, "adc": _X86_64, "avx2": _X86_64 and _cpu_has("avx2")}


@pytest.fixture(params=["portable", "adc", "avx2"])
def kernel(request):
    """Force one checksum kernel for the test, then restore the best one."""
    name = request.param
    if not AVAILABLE[name]:
        pytest.skip(f"this CPU has no {name} checksum kernel")
    try:
        assert select_checksum_implementation(name) == name
        assert checksum_implementation() == name
        yield name
    finally:
        select_checksum_implementation("best")


# --- reference model ------------------------------------------------------------------------

def fold(s: int) -> int:
    """End-around-carry fold of a non-negative sum to 16 bits: 0 only for a zero sum."""
    return 0 if s == 0 else (s - 1) % 0xFFFF + 1


def word_sum(data: bytes) -> int:
    """Unfolded sum of big-endian 16-bit words, an odd last byte padded with zero."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def ref_checksum(data: bytes) -> int:
    return 0xFFFF - fold(word_sum(data))


def prefix_checksums(data: bytes, n: int) -> list[int]:
    """ref_checksum(data[:k]) for every k in 0..n-1, in one pass: byte i weighs 256 when
    i is even (the high byte of its word) and 1 when odd."""
    weights = list(data[:n])
    weights[0::2] = [b << 8 for b in weights[0::2]]
    sums = itertools.accumulate(weights, initial=0)
    return [0xFFFF - fold(s) for s in itertools.islice(sums, n)]


def test_reference_model_agrees_with_scapy() -> None:
    rng = random.Random(1)
    cases = [b"", b"\x00", b"\x01", b"\xff", b"\xff\xff", b"\x00\x00", b"\xff" * 101]
    cases += [rng.randbytes(rng.randrange(0, 3000)) for _ in range(200)]
    for data in cases:
        assert ref_checksum(data) == scapy_checksum(data), data
    data = rng.randbytes(5000)
    pre = prefix_checksums(data, 5000)
    for k in list(range(0, 300)) + rng.sample(range(300, 5000), 200):
        assert pre[k] == scapy_checksum(data[:k])


# --- RFC examples ---------------------------------------------------------------------------

def test_rfc1071_numerical_example() -> None:
    # RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (one's complement).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0xFFFF - 0xDDF2 == scapy_checksum(data)


def test_ipv4_header_example() -> None:
    # A captured 20-byte IPv4 header with its checksum field (0x442e) zeroed ...
    hdr = bytearray.fromhex("45000030442240008006" "0000" "8c7c19acae241e2b")
    assert checksum(hdr) == 0x442E == scapy_checksum(bytes(hdr))
    hdr[10:12] = b"\x44\x2e"
    # ... and verified: the sum over the header including its checksum is -0 (RFC 1071 (3)).
    assert checksum(hdr) == 0
    assert ones_sum(hdr) == 0xFFFF


def test_rfc1624_section4_example() -> None:
    # RFC 1624 section 4: the rest of the header sums to 0xCD7A, a field changes from
    # m = 0x5555 to m' = 0x3285. HC = ~(0xCD7A + 0x5555) = 0xDD2F. Recomputing gives
    # ~(0xCD7A + 0x3285) = ~0xFFFF = 0x0000; RFC 1141's Eqn. 2 wrongly gives 0xFFFF, and
    # Eqn. 3, HC' = ~(~HC + ~m + m'), gives 0x0000.
    assert checksum_update(0xDD2F, 0x5555, 0x3285) == 0x0000
    # The same on real bytes: words summing to 0xCD7A, then the field.
    rest = (0xCD7A).to_bytes(2, "big")
    assert checksum(rest + b"\x55\x55") == 0xDD2F
    assert checksum(rest + b"\x32\x85") == 0x0000
    assert checksum_update(0xDD2F, b"\x55\x55", b"\x32\x85") == 0x0000
    # And back again.
    assert checksum_update(0x0000, 0x3285, 0x5555) == 0xDD2F


def test_ttl_decrement_like_a_router() -> None:
    # RFC 1624 section 1 motivates the update with TTL decrements: chain 64 of them on a
    # scapy-built header and compare with scapy recomputing it each time.
    pkt = IP(src="192.0.2.1", dst="198.51.100.7", ttl=255, id=0x1234, proto=6)
    hdr = bytearray(bytes(pkt))
    ck = int.from_bytes(hdr[10:12], "big")
    for ttl in range(254, 190, -1):
        old = int.from_bytes(hdr[8:10], "big")
        hdr[8] = ttl
        new = int.from_bytes(hdr[8:10], "big")
        ck = checksum_update(ck, old, new)
        expect = IP(bytes(hdr))
        del expect.chksum
        assert ck == IP(bytes(expect)).chksum
        hdr[10:12] = ck.to_bytes(2, "big")
        assert scapy_checksum(bytes(hdr)) == 0


# --- exhaustive lengths ---------------------------------------------------------------------

def _sweep(data: bytes, offset: int) -> None:
    """checksum() of data[offset:offset + k] through a memoryview, for every k <= 65535."""
    expect = prefix_checksums(data[offset:], MAX_LEN + 1)
    mv = memoryview(data)
    got = [checksum(mv[offset:offset + k]) for k in range(MAX_LEN + 1)]
    if got != expect:
        bad = next(k for k in range(MAX_LEN + 1) if got[k] != expect[k])
        pytest.fail(f"offset {offset}, length {bad}: got {got[bad]:#06x}, "
                    f"want {expect[bad]:#06x}")


def test_every_length_at_odd_offsets(kernel: str) -> None:
    data = random.Random(1071).randbytes(MAX_LEN + 8)
    for offset in (1, 3, 7):
        _sweep(data, offset)
    # The reference the sweep trusts, against scapy on a sample of the same slices.
    rng = random.Random(kernel)
    for k in [0, 1, 63, 64, 65, 127, 128, 129, MAX_LEN] + rng.sample(range(MAX_LEN), 40):
        assert checksum(memoryview(data)[3:3 + k]) == scapy_checksum(data[3:3 + k])


def test_every_length_all_ones(kernel: str) -> None:
    # 0xFF bytes make every addition carry: the end-around carry paths all run.
    data = b"\xff" * (MAX_LEN + 8)
    _sweep(data, 1)


def test_every_alignment_short_lengths(kernel: str) -> None:
    rng = random.Random(5)
    data = rng.randbytes(4096 + 16)
    mv = memoryview(data)
    for offset in range(8):
        expect = prefix_checksums(data[offset:], 1100)
        assert [checksum(mv[offset:offset + k]) for k in range(1100)] == expect
        for k in rng.sample(range(1100, 4096), 50):
            assert checksum(mv[offset:offset + k]) == scapy_checksum(data[offset:offset + k])


@pytest.mark.parametrize("pattern", [b"\x00", b"\xff\x00", b"\x00\xff", b"\x80\x01",
                                     b"\xff\xfe\x00\x01"])
def test_carry_heavy_patterns(kernel: str, pattern: bytes) -> None:
    for n in (0, 1, 2, 63, 64, 65, 128, 1500, 9000, 65534, MAX_LEN):
        data = (pattern * (n // len(pattern) + 1))[:n]
        assert checksum(data) == scapy_checksum(data) == ref_checksum(data)


def test_sum_is_minus_zero_never_plus_zero(kernel: str) -> None:
    # A non-zero buffer whose sum is a multiple of 0xFFFF has sum 0xFFFF (-0), checksum 0;
    # only all-zero data sums to +0 (checksum 0xFFFF).
    for n in (2, 64, 128, 4096):
        data = b"\x00\x00" * (n // 2 - 1) + b"\xff\xff"
        assert checksum(data) == 0 and ones_sum(data) == 0xFFFF
        data = b"\x00" * n
        assert checksum(data) == 0xFFFF and ones_sum(data) == 0
        # Words summing to exactly 0xFFFF * k with carries everywhere.
        data = (b"\x80\x00" * 2 + b"\xff\xfe") * (n // 6) + b"\x00\x01" * 2
        s = word_sum(data)
        assert checksum(data) == 0xFFFF - fold(s) == scapy_checksum(data)


@settings(max_examples=150, deadline=None, suppress_health_check=PER_KERNEL)
@given(data=st.binary(min_size=0, max_size=3000), offset=st.integers(0, 15),
       initial=st.integers(0, 0xFFFF))
def test_ones_sum_and_checksum_random(kernel: str, data: bytes, offset: int,
                                      initial: int) -> None:
    buf = bytes(offset) + data
    view = memoryview(buf)[offset:]
    assert checksum(view) == scapy_checksum(data)
    assert ones_sum(view, initial) == fold(word_sum(data) + initial)
    assert checksum(bytearray(data)) == checksum(data)
    if data:
        # RFC 1071 2(A)-(C): the sum can be split at any even boundary and resumed.
        cut = (len(data) // 2) & ~1
        assert ones_sum(data[cut:], ones_sum(data[:cut])) == fold(word_sum(data))


def test_buffer_types() -> None:
    data = bytes(range(256)) * 3
    expect = scapy_checksum(data)
    assert checksum(data) == expect
    assert checksum(bytearray(data)) == expect
    assert checksum(memoryview(data)) == expect
    assert checksum(array.array("B", data)) == expect
    assert checksum(memoryview(array.array("H", data))) == expect   # multi-byte items
    for bad in ("text", 5, None, [1, 2]):
        with pytest.raises(TypeError):
            checksum(bad)
    with pytest.raises(BufferError):
        checksum(memoryview(data)[::2])    # not contiguous


def test_select_checksum_implementation() -> None:
    try:
        with pytest.raises(ValueError):
            select_checksum_implementation("sse9")
        assert select_checksum_implementation("portable") == "portable"
        best = select_checksum_implementation("best")
        assert best == ("avx2" if AVAILABLE["avx2"] else "adc" if AVAILABLE["adc"]
                        else "portable")
    finally:
        select_checksum_implementation("best")


# --- pseudo-header checksum -----------------------------------------------------------------

ip_ints = st.integers(0, 0xFFFFFFFF)


def _ip(v: int) -> str:
    return ".".join(str((v >> s) & 255) for s in (24, 16, 8, 0))


@settings(max_examples=200, deadline=None, suppress_health_check=PER_KERNEL)
@given(src=ip_ints, dst=ip_ints, proto=st.sampled_from([6, 17, 1, 33, 255]),
       segment=st.binary(min_size=0, max_size=2000))
def test_pseudo_header_checksum_vs_scapy(kernel: str, src: int, dst: int, proto: int,
                                         segment: bytes) -> None:
    expect = in4_chksum(proto, IP(src=_ip(src), dst=_ip(dst)), segment)
    assert pseudo_header_checksum(_ip(src), _ip(dst), proto, segment) == expect
    # Addresses as ints and as 4 bytes too; the segment as a memoryview at an odd offset.
    view = memoryview(b"\x00" + segment)[1:]
    assert pseudo_header_checksum(src, dst, proto, view) == expect
    assert pseudo_header_checksum(src.to_bytes(4, "big"), dst.to_bytes(4, "big"), proto,
                                  bytearray(segment)) == expect


@settings(max_examples=200, deadline=None)
@given(src=ip_ints, dst=ip_ints, sport=st.integers(1, 65535), dport=st.integers(1, 65535),
       seq=st.integers(0, 2**32 - 1), flags=st.integers(0, 255),
       payload=st.binary(max_size=1500))
def test_pseudo_header_checksum_is_scapy_tcp_checksum(src: int, dst: int, sport: int,
                                                      dport: int, seq: int, flags: int,
                                                      payload: bytes) -> None:
    pkt = IP(bytes(IP(src=_ip(src), dst=_ip(dst)) /
                   TCP(sport=sport, dport=dport, seq=seq, flags=flags) / payload))
    seg = bytearray(bytes(pkt[TCP]))
    seg[16:18] = b"\x00\x00"
    assert pseudo_header_checksum(_ip(src), _ip(dst), 6, seg) == pkt[TCP].chksum


def test_pseudo_header_rejects_bad_addresses() -> None:
    for bad in ("1.2.3", "1.2.3.256", "a.b.c.d", -1, 2**32, b"\x01\x02\x03"):
        with pytest.raises(ValueError):
            pseudo_header_checksum(bad, "1.2.3.4", 6, b"")


# --- incremental update (RFC 1624) ----------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(data=st.binary(min_size=2, max_size=120).map(lambda b: b[:len(b) & ~1]),
       index=st.integers(0, 59), new=st.integers(0, 0xFFFF))
def test_checksum_update_word_vs_recomputation(data: bytes, index: int, new: int) -> None:
    index %= len(data) // 2
    old_ck = checksum(data)
    old = int.from_bytes(data[2 * index:2 * index + 2], "big")
    changed = data[:2 * index] + new.to_bytes(2, "big") + data[2 * index + 2:]
    got = checksum_update(old_ck, old, new)
    if any(changed):
        assert got == checksum(changed) == scapy_checksum(changed)
    else:
        # All-zero data: recomputation gives ~(+0) = 0xFFFF; Eqn. 3 can only produce
        # ~(-0) = 0x0000, the value RFC 1624 says a checksum field should hold.
        assert got == 0x0000


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=2, max_size=200).map(lambda b: b[:len(b) & ~1]),
       start=st.integers(0, 99), replacement=st.binary(min_size=2, max_size=40))
def test_checksum_update_bytes_vs_recomputation(data: bytes, start: int,
                                                replacement: bytes) -> None:
    words = len(data) // 2
    start = start % words
    n = min(len(replacement) // 2, words - start)
    old = data[2 * start:2 * (start + n)]
    new = replacement[:2 * n]
    changed = data[:2 * start] + new + data[2 * (start + n):]
    got = checksum_update(checksum(data), old, new)
    assert got == (checksum(changed) if any(changed) else 0x0000)
    # Bytes-like of other kinds work too.
    assert checksum_update(checksum(data), bytearray(old), memoryview(new)) == got


def test_checksum_update_rejects_mismatched_bytes() -> None:
    with pytest.raises(ValueError):
        checksum_update(0x1234, b"\x00\x01", b"\x00\x01\x02\x03")
    with pytest.raises(ValueError):
        checksum_update(0x1234, b"\x00\x01\x02", b"\x00\x01\x02")


@settings(max_examples=100, deadline=None)
@given(ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
       new_ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
       payload=st.binary(max_size=300))
def test_checksum_update_rewrites_tcp_ports_like_nat(ports, new_ports, payload) -> None:
    # A NAT rewriting both ports of a scapy-built segment, checked against scapy.
    pkt = IP(bytes(IP(src="10.1.1.1", dst="10.2.2.2") /
                   TCP(sport=ports[0], dport=ports[1]) / payload))
    seg = bytes(pkt[TCP])
    ck = checksum_update(pkt[TCP].chksum, seg[0:4],
                         struct.pack(">HH", *new_ports))
    fresh = IP(bytes(IP(src="10.1.1.1", dst="10.2.2.2") /
                     TCP(sport=new_ports[0], dport=new_ports[1]) / payload))
    assert ck == fresh[TCP].chksum
