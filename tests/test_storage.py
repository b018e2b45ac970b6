"""fasttcp.storage: SendRing and Reassembler against hand-worked cases and reference models."""
from __future__ import annotations

import array
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fasttcp.storage import Reassembler, SendRing

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["fasttcp.storage._ring", "fasttcp.storage._reasm"])
def test_modules_are_compiled(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith(".so")
    assert module.COMPILED is True


# ==========================================================================================
# SendRing
# ==========================================================================================

def test_ring_basic_accounting():
    r = SendRing(100)
    assert (r.head, r.tail, len(r), r.free, r.capacity) == (0, 0, 0, 100, 100)
    assert r.write(b"abc") == 3
    assert (r.head, r.tail, len(r), r.free) == (0, 3, 3, 97)
    assert r.peek(0, 3) == b"abc"
    assert r.peek(1, 100) == b"bc"          # clipped to tail
    assert r.peek(3, 10) == b""             # at tail: nothing
    assert r.peek(50, 10) == b""            # beyond tail: nothing
    r.release(2)
    assert (r.head, len(r), r.free) == (2, 1, 99)
    with pytest.raises(ValueError):
        r.peek(1, 1)                        # released
    r.release(1)                            # backwards: no-op
    assert r.head == 2
    r.release(1000)                         # clamps to tail
    assert (r.head, r.tail, len(r)) == (3, 3, 0)


def test_ring_write_accepts_only_free_space():
    r = SendRing(10)
    assert r.write(b"0123456789ABC") == 10
    assert r.write(b"x") == 0
    assert r.free == 0
    r.release(4)
    assert r.write(b"ABCDEFG") == 4
    assert r.peek(4, 100) == b"456789ABCD"


def test_ring_wraps_around_allocation():
    # Allocation is a power of two >= 64: 100 -> 128. Push the window across the wrap
    # many times, with writes and reads straddling the end of the buffer.
    r = SendRing(100)
    stream = bytes(range(256)) * 40
    pos_w = 0
    for step in range(200):
        n = r.write(stream[pos_w:pos_w + 37 + step % 50])
        pos_w += n
        assert r.tail == pos_w
        # whole held range, and a piece straddling the physical end
        assert r.peek(r.head, len(r)) == stream[r.head:r.tail]
        off = r.head + len(r) // 3
        assert r.peek(off, 90) == stream[off:min(off + 90, r.tail)]
        r.release(r.head + 30 + step % 40)
    assert pos_w > 128 * 10


def test_ring_exact_edges():
    r = SendRing(64)                        # allocation exactly 64
    assert r.write(b"a" * 64) == 64
    assert r.free == 0
    r.release(64)
    assert r.write(bytes(range(64))) == 64  # starts exactly at the physical start again
    assert r.peek(64, 64) == bytes(range(64))
    r.release(127)
    assert r.peek(127, 5) == bytes([63])
    assert r.write(b"XY") == 2              # wraps to position 0
    assert r.peek(127, 3) == bytes([63]) + b"XY"


def test_ring_accepts_any_bytes_like():
    r = SendRing(64)
    assert r.write(bytearray(b"ab")) == 2
    assert r.write(memoryview(b"xcdx")[1:3]) == 2
    assert r.write(array.array("B", [101, 102])) == 2
    assert r.peek(0, 10) == b"abcdef"
    with pytest.raises(TypeError):
        r.write("text")


def test_ring_copy_into():
    r = SendRing(64)
    r.write(b"hello world")
    buf = bytearray(5)
    assert r.copy_into(6, buf) == 5 and buf == b"world"
    big = bytearray(20)
    assert r.copy_into(0, big) == 11 and big[:11] == b"hello world"
    r.release(3)
    with pytest.raises(ValueError):
        r.copy_into(2, buf)
    with pytest.raises(BufferError):
        r.copy_into(3, b"readonly")


def test_ring_resize():
    r = SendRing(100)
    stream = bytes(i * 7 % 251 for i in range(1000))
    r.write(stream[:100])
    r.release(90)
    r.write(stream[100:180])                # held [90, 180) straddles the 128 wrap
    r.resize(1000)
    assert (r.capacity, r.free, r.head, r.tail) == (1000, 910, 90, 180)
    assert r.peek(90, 1000) == stream[90:180]
    assert r.write(stream[180:1000]) == 820
    assert r.peek(90, 2000) == stream[90:1000]
    with pytest.raises(ValueError):
        r.resize(100)                       # 910 bytes held
    r.release(950)
    r.resize(60)                            # shrink: 50 held fit
    assert r.peek(950, 100) == stream[950:1000] and r.free == 10
    r.resize(200)
    assert r.capacity == 200 and r.peek(950, 100) == stream[950:1000]


@pytest.mark.parametrize("bad", [0, -1, 1 << 31])
def test_ring_rejects_bad_capacity(bad):
    with pytest.raises(ValueError):
        SendRing(bad)


def pattern(seed: int, n: int) -> bytes:
    """n bytes that differ from most other seeds' bytes at the same offsets."""
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


class RefRing:
    """Reference: a bytearray of the held bytes and the offset of its first byte."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.head = 0
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        n = min(len(b), self.capacity - len(self.data))
        self.data += b[:n]
        return n

    def release(self, upto: int) -> None:
        upto = min(upto, self.head + len(self.data))
        if upto > self.head:
            del self.data[:upto - self.head]
            self.head = upto

    def peek(self, off: int, n: int) -> bytes:
        return bytes(self.data[off - self.head:off - self.head + n])


def test_ring_references_immutable_bytes_instead_of_copying():
    r = SendRing(100, ref_min=10)
    big = pattern(1, 30)
    assert r.write(big) == 30 and r.referenced == 30          # bytes: referenced
    refs = sys.getrefcount(big)
    assert r.write(b"short") == 5 and r.referenced == 30      # below ref_min: copied
    view_of = pattern(2, 40)
    assert r.write(memoryview(view_of)[5:25]) == 20 and r.referenced == 50
    mutable = bytearray(pattern(3, 20))
    assert r.write(mutable) == 20 and r.referenced == 50      # may change: copied
    mutable[:] = bytes(20)
    shaped = pattern(4, 60)
    assert r.write(memoryview(shaped).cast("B", (3, 20))) == 25   # any shape of bytes
    assert r.free == 0 and r.referenced == 75
    expected = big + b"short" + view_of[5:25] + pattern(3, 20) + pattern(4, 60)[:25]
    assert r.peek(0, 200) == expected
    buf = bytearray(40)
    assert r.copy_into(20, buf) == 40 and bytes(buf) == expected[20:60]
    r.release(29)                                             # one byte of `big` held
    assert r.referenced == 46 and sys.getrefcount(big) == refs
    r.release(30)
    assert r.referenced == 45 and sys.getrefcount(big) == refs - 1
    assert "referenced=45 in 2 runs" in repr(r)
    r.reset()
    assert (r.head, r.tail, r.referenced) == (0, 0, 0)
    with pytest.raises(ValueError):
        SendRing(10, ref_min=-1)
    plain = SendRing(100)                                     # the default: always copy
    assert plain.write(big) == 30 and plain.referenced == 0
    plain.ref_min = 10                                        # later writes only
    assert plain.write(big) == 30 and plain.referenced == 30
    for bad in (-1, 1 << 31):
        with pytest.raises(ValueError):
            plain.ref_min = bad
    with pytest.raises(TypeError):
        plain.ref_min = 1.5


def test_ring_grows_one_run_for_consecutive_pieces_of_one_object():
    """A transport feeds one write in pieces as space opens: one run, not one per piece."""
    r = SendRing(1000, ref_min=10)
    data = pattern(5, 900)
    view = memoryview(data)
    for off in range(0, 600, 100):
        assert r.write(view[off:off + 100]) == 100
    assert (r.referenced, r.referenced_runs) == (600, 1)
    assert r.write(b"x" * 5) == 5                             # copied: breaks the run
    assert r.write(view[600:700]) == 100
    other = pattern(6, 100)
    assert r.write(other) == 100
    assert (r.referenced, r.referenced_runs) == (800, 3)
    assert r.peek(0, 1000) == data[:600] + b"x" * 5 + data[600:700] + other
    r.release(600)
    assert r.referenced_runs == 2


def _ring_write(kind: str, b: bytes) -> Any:
    if kind == "view":
        return memoryview(b"__" + b)[2:]
    if kind == "mutable":
        return bytearray(b)
    return b


ring_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.builds(pattern, st.integers(0, 255), st.integers(0, 120)),
                  st.sampled_from(["bytes", "view", "mutable"])),
        st.tuples(st.just("release"), st.integers(-20, 150)),
        st.tuples(st.just("peek"), st.integers(0, 150), st.integers(0, 200)),
        st.tuples(st.just("resize"), st.integers(1, 300)),
        st.tuples(st.just("reset")),
    ),
    max_size=60,
)


@settings(max_examples=600, deadline=None)
@given(capacity=st.integers(1, 200), ref_min=st.integers(0, 40), ops=ring_ops)
def test_ring_matches_reference(capacity, ref_min, ops):
    """Writes, releases, reads and resizes against a bytearray model; copied
    (ref_min 0, or a mutable buffer, or too short) and referenced writes mixed, read
    across both and the ring's wrap. Every mutable buffer a write was given is
    overwritten afterwards (a copy must not notice); references end with release or
    reset."""
    r, m = SendRing(capacity, ref_min=ref_min), RefRing(capacity)
    for op in ops:
        if op[0] == "write":
            data = _ring_write(op[2], op[1])
            assert r.write(data) == m.write(op[1])
            if op[2] == "mutable":
                data[:] = bytes(len(data))
        elif op[0] == "release":
            target = max(0, m.head + op[1])
            r.release(target)
            m.release(target)
        elif op[0] == "peek":
            off = m.head + op[1]
            assert r.peek(off, op[2]) == m.peek(off, op[2])
        elif op[0] == "reset":
            r.reset()
            m.head, m.data = 0, bytearray()
        else:
            if op[1] < len(m.data):
                with pytest.raises(ValueError):
                    r.resize(op[1])
            else:
                r.resize(op[1])
                m.capacity = op[1]
        assert (r.head, r.tail, len(r), r.free) == (
            m.head, m.head + len(m.data), len(m.data), m.capacity - len(m.data))
        assert 0 <= r.referenced <= len(r)
        assert r.referenced == 0 or ref_min > 0
    assert r.peek(r.head, len(r)) == bytes(m.data)
    r.release(r.tail)
    assert r.referenced == 0


# ==========================================================================================
# Reassembler: hand-worked cases
# ==========================================================================================

def fill(ch: str, n: int) -> bytes:
    return ch.encode() * n


def three_runs(max_holes: int = 8) -> Reassembler:
    """Runs [10,20) 'a', [30,40) 'b', [50,60) 'c'; next = 0."""
    r = Reassembler(100, max_holes)
    assert r.add(10, fill("a", 10)) == 0
    assert r.add(50, fill("c", 10)) == 0
    assert r.add(30, fill("b", 10)) == 0
    assert r.ranges() == [(10, 20), (30, 40), (50, 60)]
    assert (r.holes, r.held_ooo, r.next, r.readable) == (3, 30, 0, 0)
    return r


def test_reasm_in_order_fast_path():
    r = Reassembler(1000, 4)
    assert r.add(0, b"hello ") == 6
    assert r.add(6, b"world") == 5
    assert (r.next, r.readable, r.read_pos, r.window) == (11, 11, 0, 989)
    assert r.peek(5) == b"hello"
    assert r.read(6) == b"hello "
    assert (r.read_pos, r.readable, r.window) == (6, 5, 995)
    assert r.read() == b"world"
    assert r.read() == b""
    assert r.add(11, b"") == 0
    assert r.stats() == {"dup_bytes": 0, "trimmed_bytes": 0, "dropped_segments": 0,
                         "dropped_bytes": 0}


def test_reasm_duplicates_before_next():
    r = Reassembler(100, 4)
    r.add(0, b"abcdef")
    assert r.add(0, b"XYZ") == 0                # all old
    assert r.add(2, b"XXXXgh") == 2             # 4 old, 2 new
    assert r.dup_bytes == 7
    assert r.read() == b"abcdefgh"
    assert r.add(3, b"zz") == 0                 # consumed already: still a duplicate
    assert r.dup_bytes == 9


@pytest.mark.parametrize(
    "seg, ranges, dup",
    [
        ((2, 5), [(2, 5), (10, 20), (30, 40), (50, 60)], 0),      # before all, apart
        ((5, 10), [(5, 20), (30, 40), (50, 60)], 0),              # touches a run start
        ((20, 25), [(10, 25), (30, 40), (50, 60)], 0),            # touches a run end
        ((12, 18), [(10, 20), (30, 40), (50, 60)], 6),            # inside a run
        ((30, 40), [(10, 20), (30, 40), (50, 60)], 10),           # exactly a run
        ((8, 12), [(8, 20), (30, 40), (50, 60)], 2),              # over a left edge
        ((18, 22), [(10, 22), (30, 40), (50, 60)], 2),            # over a right edge
        ((22, 28), [(10, 20), (22, 28), (30, 40), (50, 60)], 0),  # inside a gap
        ((20, 30), [(10, 40), (50, 60)], 0),                      # exactly fills a gap
        ((15, 55), [(10, 60)], 20),                               # spans several runs
        ((5, 65), [(5, 65)], 30),                                 # covers all, both sides
        ((60, 70), [(10, 20), (30, 40), (50, 70)], 0),            # after the last, touching
        ((65, 70), [(10, 20), (30, 40), (50, 60), (65, 70)], 0),  # after the last, apart
    ],
)
def test_reasm_overlap_kinds(seg, ranges, dup):
    r = three_runs()
    s, e = seg
    assert r.add(s, fill("N", e - s)) == 0
    assert r.ranges() == ranges
    assert r.holes == len(ranges)
    assert r.dup_bytes == dup
    assert r.held_ooo == sum(b - a for a, b in ranges)
    # Fill everything and check that earlier bytes were never overwritten.
    old_runs = [(10, 20, "a"), (30, 40, "b"), (50, 60, "c")]
    expected = bytearray(fill("F", 100))
    expected[s:e] = fill("N", e - s)
    for a, b, ch in old_runs:
        expected[a:b] = fill(ch, b - a)
    assert r.add(0, fill("F", 100)) == 100
    assert (r.holes, r.held_ooo) == (0, 0)
    assert r.read() == bytes(expected)


def test_reasm_hole_fill_delivers_runs_in_order():
    r = three_runs()
    assert r.add(0, fill("0", 10)) == 20            # joins [10,20)
    assert (r.next, r.ranges()) == (20, [(30, 40), (50, 60)])
    assert r.add(40, fill("2", 10)) == 0            # bridges two runs, not the front
    assert r.ranges() == [(30, 60)]
    assert r.add(20, fill("1", 10)) == 40           # front gap closes everything
    assert (r.next, r.holes, r.held_ooo, r.readable) == (60, 0, 0, 60)
    assert r.read() == b"0" * 10 + b"a" * 10 + b"1" * 10 + b"b" * 10 + b"2" * 10 + b"c" * 10


def test_reasm_segment_from_before_next_spanning_runs():
    r = three_runs()
    r.add(0, fill("0", 5))
    assert r.add(0, fill("x", 70)) == 65            # [5,70): 5 old + 30 in runs are dup
    assert r.dup_bytes == 35
    assert r.read() == (b"0" * 5 + b"x" * 5 + b"a" * 10 + b"x" * 10 + b"b" * 10 + b"x" * 10
                        + b"c" * 10 + b"x" * 10)


def test_reasm_window_trims_and_moves_with_reads():
    r = Reassembler(100, 4)
    assert r.add(90, fill("z", 20)) == 0            # [90,100) kept, 10 trimmed
    assert (r.trimmed_bytes, r.ranges()) == (10, [(90, 100)])
    assert r.add(100, b"q") == 0 and r.trimmed_bytes == 11      # exactly at the edge
    assert r.add(1 << 40, b"far") == 0 and r.trimmed_bytes == 14
    assert r.add(2**64 - 2, b"wrap!") == 0 and r.trimmed_bytes == 19  # no uint64 overflow
    assert r.add(0, fill("a", 95)) == 100
    assert (r.window, r.readable) == (0, 100)
    assert r.add(100, b"x") == 0 and r.trimmed_bytes == 20      # fast path, zero window
    assert r.read(30) == b"a" * 30
    assert r.window == 30
    assert r.add(100, fill("b", 50)) == 30          # in-order, clipped to the window
    assert r.trimmed_bytes == 40
    assert r.read() == b"a" * 60 + b"z" * 10 + b"b" * 30
    assert (r.read_pos, r.next, r.window) == (130, 130, 100)


def test_reasm_total_held_never_exceeds_max_bytes():
    r = Reassembler(50, 8)
    r.add(0, fill("a", 20))
    r.add(30, fill("b", 40))                        # only [30,50) fits
    assert r.readable + r.held_ooo == 40
    assert r.ranges() == [(30, 50)]
    r.add(25, fill("c", 3))
    assert r.readable + r.held_ooo == 43 <= 50


def test_reasm_max_holes_bites_and_is_counted():
    r = Reassembler(200, 2)
    r.add(10, fill("a", 10))
    r.add(30, fill("b", 10))
    assert r.add(50, fill("c", 10)) == 0            # a third run: refused
    assert (r.dropped_segments, r.dropped_bytes, r.ranges()) == (1, 10, [(10, 20), (30, 40)])
    assert r.add(5, fill("d", 3)) == 0              # also a new run: refused
    assert r.dropped_segments == 2
    assert r.add(40, fill("e", 5)) == 0             # extends a run: accepted
    assert r.add(20, fill("f", 10)) == 0            # merges two runs: accepted
    assert r.ranges() == [(10, 45)]
    assert r.add(50, fill("g", 10)) == 0            # room again
    assert r.ranges() == [(10, 45), (50, 60)]
    assert r.add(0, fill("h", 3)) == 3              # in-order data is never refused
    assert r.dropped_segments == 2 and r.dropped_bytes == 13


def test_reasm_zero_holes_accepts_only_in_order():
    r = Reassembler(100, 0)
    assert r.add(5, b"later") == 0
    assert (r.dropped_segments, r.holes, r.held_ooo) == (1, 0, 0)
    assert r.add(0, b"01234") == 5
    assert r.add(3, b"34567") == 3                  # overlaps next: still in order
    assert r.read() == b"01234567"


def test_reasm_wraps_around_ring():
    r = Reassembler(64, 4)                          # allocation exactly 64
    stream = bytes(range(200))
    assert r.add(0, stream[:50]) == 50
    assert r.read() == stream[:50]
    # window is now [50, 114): OOO runs straddle the physical end at 64
    assert r.add(70, stream[70:100]) == 0
    assert r.add(60, stream[60:66]) == 0
    assert r.ranges() == [(60, 66), (70, 100)]
    assert r.add(100, stream[100:120]) == 0 and r.trimmed_bytes == 6
    assert r.add(50, stream[50:75]) == 64
    assert r.read(10) == stream[50:60]
    assert r.peek(100) == stream[60:114]
    buf = bytearray(100)
    assert r.readinto(buf) == 54 and bytes(buf[:54]) == stream[60:114]
    assert (r.read_pos, r.next, r.window) == (114, 114, 64)


def test_reasm_run_containing():
    r = three_runs()
    assert r.run_containing(10) == (10, 20)
    assert r.run_containing(19) == (10, 20)
    assert r.run_containing(20) is None
    assert r.run_containing(55) == (50, 60)
    assert r.run_containing(0) is None
    assert r.run_containing(99) is None


def test_reasm_resize():
    r = Reassembler(100, 4)                         # allocation 128
    stream = bytes(i * 13 % 251 for i in range(600))
    r.add(0, stream[:100])
    r.read(100)
    r.add(100, stream[100:140])                     # readable [100,140) straddles 128
    r.add(160, stream[160:195])                     # one out-of-order run
    assert r.ranges() == [(160, 195)]
    with pytest.raises(ValueError):
        r.resize(94)                                # held span is 195 - 100 = 95
    r.resize(400)
    assert (r.max_bytes, r.window, r.ranges()) == (400, 360, [(160, 195)])
    assert r.peek() == stream[100:140]
    assert r.add(140, stream[140:520]) == 360       # joins the run; clipped at 500
    assert r.dup_bytes == 35 and r.trimmed_bytes == 20
    assert r.read() == stream[100:500]
    r.resize(95)
    assert r.window == 95
    assert r.add(500, stream[500:600]) == 95
    assert r.read() == stream[500:595]


@pytest.mark.parametrize("args", [(0, 1), (-5, 1), (1 << 31, 1), (10, -1), (10, 1 << 20)])
def test_reasm_rejects_bad_limits(args):
    with pytest.raises(ValueError):
        Reassembler(*args)


def test_reasm_bad_arguments():
    r = Reassembler(10, 1)
    with pytest.raises(OverflowError):
        r.add(-1, b"x")
    with pytest.raises(TypeError):
        r.add(0, "text")
    assert r.add(0, memoryview(b"__ab__")[2:4]) == 2
    assert r.add(2, array.array("B", [99])) == 1
    assert r.read() == b"abc"


# ==========================================================================================
# Reassembler: reference model
# ==========================================================================================

class RefReasm:
    """Reference: a dict offset -> byte for out-of-order data and a bytearray of readable
    data, following the same documented rules one byte at a time."""

    def __init__(self, max_bytes: int, max_holes: int):
        self.max_bytes, self.max_holes = max_bytes, max_holes
        self.read_pos = self.next = 0
        self.ooo: dict[int, int] = {}
        self.readable = bytearray()
        self.dup = self.trimmed = self.dropped = self.dropped_bytes = 0

    @staticmethod
    def runs_of(keys) -> list[tuple[int, int]]:
        runs: list[list[int]] = []
        for k in sorted(keys):
            if runs and runs[-1][1] == k:
                runs[-1][1] = k + 1
            else:
                runs.append([k, k + 1])
        return [tuple(x) for x in runs]

    def ranges(self) -> list[tuple[int, int]]:
        return self.runs_of(self.ooo)

    def add(self, offset: int, data: bytes) -> int:
        limit = self.read_pos + self.max_bytes
        keep = []
        for i, b in enumerate(data):
            o = offset + i
            if o >= limit:
                self.trimmed += 1
            elif o < self.next:
                self.dup += 1
            else:
                keep.append((o, b))
        if not keep:
            return 0
        runs = self.runs_of(set(self.ooo) | {o for o, _ in keep})
        if sum(1 for s, _ in runs if s != self.next) > self.max_holes:
            self.dropped += 1
            self.dropped_bytes += len(keep)
            return 0
        for o, b in keep:
            if o in self.ooo:
                self.dup += 1
            else:
                self.ooo[o] = b
        start = self.next
        while self.next in self.ooo:
            self.readable.append(self.ooo.pop(self.next))
            self.next += 1
        return self.next - start

    def read(self, n: int) -> bytes:
        out = bytes(self.readable[:n])
        del self.readable[:n]
        self.read_pos += len(out)
        return out


def check_same(r: Reassembler, m: RefReasm) -> None:
    assert (r.next, r.read_pos, r.readable) == (m.next, m.read_pos, len(m.readable))
    assert r.ranges() == m.ranges()
    assert (r.held_ooo, r.holes) == (len(m.ooo), len(m.ranges()))
    assert r.window == m.max_bytes - len(m.readable)
    assert (r.dup_bytes, r.trimmed_bytes, r.dropped_segments, r.dropped_bytes) == (
        m.dup, m.trimmed, m.dropped, m.dropped_bytes)
    # bounded memory
    assert r.readable + r.held_ooo <= r.max_bytes
    assert r.holes <= r.max_holes


def _add_op(kind: str, near: int):
    # offsets relative to next (so most land near the window), arbitrary contents:
    # overlapping adds carry different bytes, which catches any overwrite. Half of them
    # land near `next` so the stream advances and the ring wraps.
    return st.tuples(st.just(kind), st.integers(-near, near) | st.integers(-30, 140),
                     st.builds(pattern, st.integers(0, 255), st.integers(0, 48)))


_read_ops = (st.tuples(st.just("read"), st.integers(0, 80)),
             st.tuples(st.just("peek"), st.integers(0, 80)))
reasm_ops = st.lists(st.one_of(_add_op("add", 8), *_read_ops), min_size=10, max_size=150)
#: With add_lazy (in-order data kept by reference) and settle.
lazy_ops = st.lists(st.one_of(_add_op("add", 8), _add_op("lazy", 2),
                              st.tuples(st.just("settle")), *_read_ops),
                    min_size=10, max_size=150)
reasm_sizes = st.sampled_from([1, 5, 63, 64, 65, 128]) | st.integers(1, 130)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_bytes=reasm_sizes, max_holes=st.sampled_from([0, 1, 2, 3, 5, 8, 64]),
       ops=reasm_ops)
def test_reasm_matches_reference(max_bytes, max_holes, ops):
    r, m = Reassembler(max_bytes, max_holes), RefReasm(max_bytes, max_holes)
    for op in ops:
        if op[0] == "add":
            off = max(0, m.next + op[1])
            assert r.add(off, op[2]) == m.add(off, op[2])
        elif op[0] == "read":
            assert r.read(op[1]) == m.read(op[1])
        else:
            assert r.peek(op[1]) == bytes(m.readable[:op[1]])
        check_same(r, m)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_bytes=reasm_sizes, max_holes=st.sampled_from([0, 1, 3, 64]), ops=lazy_ops)
def test_reasm_deferred_copy_matches_reference(max_bytes, max_holes, ops):
    """add_lazy keeps in-order bytes by reference until settle(): the same observable
    behaviour as add, and after settle() the caller's buffers may be overwritten (they
    are, here) without changing what is read."""
    r, m = Reassembler(max_bytes, max_holes), RefReasm(max_bytes, max_holes)
    lent: list = []                                 # buffers handed over since the last settle
    for op in ops:
        if op[0] in ("add", "lazy"):
            off = max(0, m.next + op[1])
            if op[0] == "add":
                assert r.add(off, op[2]) == m.add(off, op[2])
            else:
                buf = bytearray(op[2])
                lent.append(buf)
                assert r.add_lazy(off, buf) == m.add(off, op[2])
        elif op[0] == "settle":
            r.settle()
            assert r.nspans == 0 and r.span_bytes == 0
            for buf in lent:
                buf[:] = b"\xee" * len(buf)       # the link reuses its buffers
            lent.clear()
        elif op[0] == "read":
            assert r.read(op[1]) == m.read(op[1])
        else:
            assert r.peek(op[1]) == bytes(m.readable[:op[1]])
        check_same(r, m)
        assert r.span_bytes <= r.readable


def test_reasm_deferred_copy_spans_and_reset():
    r = Reassembler(100, 4)
    a, b = bytearray(b"0123456789"), bytearray(b"abcdefghij")
    assert r.add_lazy(0, a) == 10 and r.add_lazy(10, b) == 10
    assert (r.nspans, r.span_bytes, r.readable) == (2, 20, 20)
    assert r.read(4) == b"0123" and (r.nspans, r.span_bytes) == (2, 16)
    assert r.add(30, b"XY") == 0                    # out of order: into the ring
    assert r.add_lazy(20, bytearray(b"klmnopqrst")) == 12     # fills the hole: copied
    assert r.nspans == 2                            # nothing appended after ring data
    assert r.add_lazy(32, b"zz") == 2 and r.nspans == 2       # after ring data: copied
    r.settle()
    a[:] = b"#" * 10
    b[:] = b"#" * 10
    assert r.read() == b"456789abcdefghijklmnopqrstXYzz"
    late = bytearray(b"late")
    assert r.add_lazy(34, late) == 4 and r.nspans == 1
    r.reset()
    assert (r.nspans, r.span_bytes, r.readable, r.next) == (0, 0, 0, 0)
    many = [bytearray([i]) for i in range(40)]      # more spans than fit: the rest copied
    for i, one in enumerate(many):
        assert r.add_lazy(i, one) == 1
    assert r.nspans == 32 and r.readable == 40
    r.resize(200)                                   # settles first
    assert r.nspans == 0
    for one in many:
        one[0] = 0xFF
    assert r.read() == bytes(range(40))


@st.composite
def transfers(draw):
    """An original stream, cut into segments, delivered in a shuffled order with duplicates
    and overlapping retransmissions, reads interleaved."""
    length = draw(st.integers(1, 3000))
    stream = draw(st.binary(min_size=length, max_size=length))
    cuts = sorted(set(draw(st.lists(st.integers(1, length - 1), max_size=60))
                      if length > 1 else []))
    bounds = [0, *cuts, length]
    segs = [(a, b) for a, b in zip(bounds, bounds[1:])]
    extra = draw(st.lists(st.tuples(st.integers(0, length - 1), st.integers(1, 400)), max_size=20))
    segs += [(a, min(length, a + n)) for a, n in extra]
    segs += draw(st.lists(st.sampled_from(segs), max_size=10))          # duplicates
    order = draw(st.permutations(segs))
    reads = draw(st.lists(st.integers(0, 700), min_size=len(order), max_size=len(order)))
    return stream, order, reads


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=transfers(), max_bytes=st.integers(64, 2048), max_holes=st.integers(0, 6))
def test_reasm_delivers_original_stream(t, max_bytes, max_holes):
    stream, order, reads = t
    r = Reassembler(max_bytes, max_holes)
    out = bytearray()
    for (a, b), n in zip(order, reads):
        before = r.next
        got = r.add(a, stream[a:b])
        assert got == r.next - before
        assert r.readable + r.held_ooo <= max_bytes and r.holes <= max_holes
        out += r.read(n)
        assert bytes(out) == stream[:len(out)]
    # The sender retransmits from the reader's position until everything is through; a
    # segment at `next` is always accepted, so this ends within len(stream) rounds.
    for _ in range(len(stream) + 1):
        if r.next == len(stream):
            break
        r.add(r.next, stream[r.next:r.next + 1460])
        out += r.read()
    out += r.read()
    assert bytes(out) == stream
    assert (r.next, r.read_pos, r.holes, r.held_ooo) == (len(stream),) * 2 + (0, 0)


# ==========================================================================================
# C-level API from Cython (what the TCP engine cimports)
# ==========================================================================================

CIMPORT_USER = textwrap.dedent('''
    from fasttcp.storage._ring cimport SendRing
    from fasttcp.storage._reasm cimport Reassembler

    def ring_copy_out(SendRing s, unsigned long long offset, Py_ssize_t n):
        cdef unsigned char buf[4096]
        cdef Py_ssize_t k = s.copy_out(offset, buf, n)
        return k, (bytes(buf[:k]) if k > 0 else b"")

    def ring_chunk(SendRing s, unsigned long long offset):
        cdef const unsigned char* p
        cdef Py_ssize_t k = s.chunk_at(offset, &p)
        return bytes(p[:k]) if k > 0 else b""

    def ring_write(SendRing s, bytes data):
        return s.write_c(data, len(data)), s.held(), s.free_space()

    def ring_release(SendRing s, unsigned long long upto):
        s.release_c(upto)

    def reasm_add(Reassembler r, unsigned long long offset, bytes data):
        return r.add_c(offset, data, len(data))

    def reasm_read(Reassembler r, Py_ssize_t n):
        cdef unsigned char buf[4096]
        cdef Py_ssize_t k = r.read_into(buf, n)
        return bytes(buf[:k]) if k > 0 else b""

    def reasm_chunk_consume(Reassembler r, Py_ssize_t n):
        cdef const unsigned char* p
        cdef Py_ssize_t k = r.readable_chunk(&p)
        data = bytes(p[:k]) if k > 0 else b""
        r.consume(n)
        return data

    def reasm_info(Reassembler r, unsigned long long offset):
        return r.readable_c(), r.window_c(), r.run_index(offset), r.nruns
''')


@pytest.fixture(scope="module")
def cuser(tmp_path_factory):
    d = tmp_path_factory.mktemp("cimport_user")
    (d / "storage_cuser.pyx").write_text(CIMPORT_USER)
    (d / "setup.py").write_text(textwrap.dedent(f'''
        from setuptools import setup
        from Cython.Build import cythonize
        setup(ext_modules=cythonize("storage_cuser.pyx", include_path=[{str(ROOT)!r}],
                                    compiler_directives={{"language_level": 3}}, quiet=True))
    '''))
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=d,
                   check=True, capture_output=True)
    sys.path.insert(0, str(d))
    try:
        yield importlib.import_module("storage_cuser")
    finally:
        sys.path.remove(str(d))


def test_c_api_send_ring(cuser):
    s = SendRing(100)                               # allocation 128
    stream = bytes(range(256))
    assert cuser.ring_write(s, stream[:120]) == (100, 100, 0)
    cuser.ring_release(s, 90)
    assert cuser.ring_write(s, stream[100:200]) == (90, 100, 0)   # tail 190, wraps at 128
    assert cuser.ring_copy_out(s, 80, 10) == (-1, b"")            # released
    assert cuser.ring_copy_out(s, 100, 200) == (90, stream[100:190])
    assert cuser.ring_copy_out(s, 120, 20) == (20, stream[120:140])  # straddles the wrap
    assert cuser.ring_copy_out(s, 190, 5) == (0, b"")
    assert cuser.ring_chunk(s, 90) == stream[90:128]              # up to the wrap
    assert cuser.ring_chunk(s, 128) == stream[128:190]            # up to the tail
    assert cuser.ring_chunk(s, 190) == b""
    cuser.ring_release(s, 10_000)
    assert (s.head, len(s)) == (190, 0)


def test_c_api_reassembler(cuser):
    r = Reassembler(100, 4)                         # allocation 128
    stream = bytes(range(256))
    assert cuser.reasm_add(r, 0, stream[:100]) == 100
    assert cuser.reasm_read(r, 95) == stream[:95]
    assert cuser.reasm_add(r, 140, stream[140:150]) == 0
    assert cuser.reasm_info(r, 145) == (5, 95, 0, 1)
    assert cuser.reasm_info(r, 150) == (5, 95, -1, 1)
    assert cuser.reasm_add(r, 100, stream[100:140]) == 50
    assert cuser.reasm_chunk_consume(r, 10) == stream[95:128]     # up to the wrap
    assert cuser.reasm_chunk_consume(r, 1000) == stream[105:128]  # consume clamps
    assert (r.read_pos, r.readable) == (150, 0)
    # Deferred spans come first, one chunk each; consume walks across them.
    lent = [bytearray(stream[150:160]), bytearray(stream[160:170])]   # kept alive
    r.add_lazy(150, lent[0])
    r.add_lazy(160, lent[1])
    assert cuser.reasm_chunk_consume(r, 4) == stream[150:160]
    assert cuser.reasm_chunk_consume(r, 10) == stream[154:160]    # into the second span
    assert cuser.reasm_read(r, 100) == stream[164:170]
    assert (r.nspans, r.readable) == (0, 0)
