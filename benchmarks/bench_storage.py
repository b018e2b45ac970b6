"""Stream storage throughput: the receive assembler (in order and reorder-heavy) and the send
ring, from Python and from Cython through the C-level methods the TCP engine cimports, beside
a pure-Python bytearray buffer measured in the same run.

Run: ``pytest benchmarks/bench_storage.py`` (figures per call of SEGS segments; ns/segment
and GB/s are in each benchmark's ``extra_info``, printed by ``python benchmarks/report.py``).
The Cython driver is compiled into a temporary directory on first use (a few seconds).
"""
import array
import importlib.util
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from benchutil import median_seconds

from fasttcp.storage import Reassembler, SendRing

MSS = 1460
SEGS = 256                     # segments per benchmarked call
WINDOW = 1 << 20               # max_bytes of the receive buffer
SEG = bytes(i & 0xFF for i in range(MSS))
ROOT = Path(__file__).resolve().parents[1]

C_DRIVER = textwrap.dedent('''
    from libc.stdint cimport uint64_t
    from fasttcp.storage._reasm cimport Reassembler
    from fasttcp.storage._ring cimport SendRing

    cdef unsigned char sink[1 << 16]

    def reasm_in_order(Reassembler r, bytes seg, Py_ssize_t count):
        cdef const unsigned char* p = seg
        cdef Py_ssize_t n = len(seg), i
        for i in range(count):
            r.add_c(r.next, p, n)
            if r.readable_c() >= 32768:          # the reader drains 32 KiB at a time
                r.read_into(sink, 1 << 16)
        while r.read_into(sink, 1 << 16):
            pass

    def reasm_offsets(Reassembler r, bytes seg, const uint64_t[:] rel):
        cdef const unsigned char* p = seg
        cdef Py_ssize_t n = len(seg), i
        cdef uint64_t base = r.next
        for i in range(rel.shape[0]):
            r.add_c(base + rel[i], p, n)
            if r.readable_c() >= 32768:
                r.read_into(sink, 1 << 16)
        while r.read_into(sink, 1 << 16):
            pass

    def ring_send(SendRing s, bytes seg, Py_ssize_t count):
        # queue, build one segment from the ring, then its ACK releases it
        cdef const unsigned char* p = seg
        cdef Py_ssize_t n = len(seg), i
        for i in range(count):
            s.write_c(p, n)
            s.copy_out(s.tail - n, sink, n)
            s.release_c(s.tail)
''')


@pytest.fixture(scope="module")
def cdrv():
    d = Path(tempfile.mkdtemp(prefix="fasttcp_bench_storage_"))
    (d / "storage_cdriver.pyx").write_text(C_DRIVER)
    (d / "setup.py").write_text(textwrap.dedent(f'''
        from setuptools import setup
        from Cython.Build import cythonize
        setup(ext_modules=cythonize("storage_cdriver.pyx", include_path=[{str(ROOT)!r}],
              compiler_directives={{"language_level": 3, "boundscheck": False,
                                   "wraparound": False}}, quiet=True))
    '''))
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=d,
                   check=True, capture_output=True)
    # Loaded from its file: nothing is added to sys.path.
    so = next(d.glob("storage_cdriver*.so"))
    spec = importlib.util.spec_from_file_location("storage_cdriver", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(benchmark, segments: int = SEGS, seg_bytes: int = MSS) -> None:
    t = median_seconds(benchmark)         # robust to the shared machine's noise
    if t is None:
        return
    benchmark.extra_info["ns/segment"] = round(t / segments * 1e9, 1)
    benchmark.extra_info["GB/s"] = round(segments * seg_bytes / t / 1e9, 2)


def _block_shuffle(nsegs: int, block: int, seed: int = 1) -> list:
    """Segment indexes in order of arrival: each block of `block` segments arrives in a random
    order (a reorder-heavy path: up to block/2 holes at once)."""
    rnd = random.Random(seed)
    order = []
    for b in range(0, nsegs, block):
        idx = list(range(b, min(b + block, nsegs)))
        rnd.shuffle(idx)
        order += idx
    return order


# --- receive: in order ------------------------------------------------------------------------

def test_reasm_in_order_python(benchmark):
    """add() each segment, read() every 16 segments (≈23 KiB), from Python."""
    r = Reassembler(WINDOW, 32)
    benchmark.group = "receive in order"

    def run():
        add, read = r.add, r.read
        for i in range(SEGS):
            add(r.next, SEG)
            if i & 15 == 15:
                read()
        read()

    benchmark(run)
    _record(benchmark)


def test_reasm_in_order_python_readinto(benchmark):
    """add() each segment, readinto() a reused buffer every 16 segments."""
    r = Reassembler(WINDOW, 32)
    buf = bytearray(1 << 16)
    benchmark.group = "receive in order"

    def run():
        add, readinto = r.add, r.readinto
        for i in range(SEGS):
            add(r.next, SEG)
            if i & 15 == 15:
                readinto(buf)
        readinto(buf)

    benchmark(run)
    _record(benchmark)


def test_reasm_in_order_cython(benchmark, cdrv):
    """add_c + read_into from Cython: what the engine's fast path pays per segment."""
    r = Reassembler(WINDOW, 32)
    benchmark.group = "receive in order"
    benchmark(cdrv.reasm_in_order, r, SEG, SEGS)
    _record(benchmark)


def test_bytearray_buffer_reference(benchmark):
    """Reference: a pure-Python receive buffer (bytearray append, slice+delete to read)."""
    buf = bytearray()
    benchmark.group = "receive in order"

    def run():
        for i in range(SEGS):
            buf.extend(SEG)
            if i & 15 == 15:
                bytes(buf)
                buf.clear()
        buf.clear()

    benchmark(run)
    _record(benchmark)


# --- receive: reordered ----------------------------------------------------------------------

@pytest.mark.parametrize("block", [4, 16])
def test_reasm_reordered_python(benchmark, block):
    r = Reassembler(WINDOW, 32)
    rel = [i * MSS for i in _block_shuffle(SEGS, block)]
    benchmark.group = "receive reordered"
    benchmark.name = f"reasm reordered python (shuffled blocks of {block})"

    def run():
        add, read = r.add, r.read
        base = r.next
        for k, off in enumerate(rel):
            add(base + off, SEG)
            if k & 15 == 15:
                read()
        read()

    benchmark(run)
    _record(benchmark)


@pytest.mark.parametrize("block", [4, 16, 64])
def test_reasm_reordered_cython(benchmark, cdrv, block):
    r = Reassembler(WINDOW, 64)
    rel = array.array("Q", [i * MSS for i in _block_shuffle(SEGS, block)])
    benchmark.group = "receive reordered"
    benchmark.name = f"reasm reordered cython (shuffled blocks of {block})"
    benchmark(cdrv.reasm_offsets, r, SEG, rel)
    assert r.dropped_segments == 0 and r.holes == 0
    _record(benchmark)


def test_reasm_duplicates_cython(benchmark, cdrv):
    """Every segment arrives twice (a spurious retransmission of everything)."""
    r = Reassembler(WINDOW, 32)
    rel = array.array("Q", [i * MSS for i in range(SEGS // 2) for _ in (0, 1)])
    benchmark.group = "receive reordered"
    benchmark(cdrv.reasm_offsets, r, SEG, rel)
    _record(benchmark)


# --- send ring --------------------------------------------------------------------------------

def test_send_ring_python(benchmark):
    """write(), peek() the segment to send, release() it as if acknowledged."""
    s = SendRing(WINDOW)
    benchmark.group = "send ring"

    def run():
        write, peek, release = s.write, s.peek, s.release
        for _ in range(SEGS):
            write(SEG)
            peek(s.tail - MSS, MSS)
            release(s.tail)

    benchmark(run)
    _record(benchmark)


def test_send_ring_cython(benchmark, cdrv):
    s = SendRing(WINDOW)
    benchmark.group = "send ring"
    benchmark(cdrv.ring_send, s, SEG, SEGS)
    _record(benchmark)
