"""Wire-layer throughput: checksum, batch parse, build — each beside a reference measured
in the same run (a pure-Python checksum, scapy's parser, a bytes copy of the same buffer).

Run: ``pytest benchmarks/bench_wire.py`` (figures per call; GB/s and ns/packet are in each
benchmark's ``extra_info`` and printed by ``python benchmarks/report.py``).
"""
import os

import pytest
from benchutil import median_seconds

from fasttcp.wire import (SegmentBatch, TcpOptions, build_tcp, checksum,
                          checksum_implementation, select_checksum_implementation)

SIZES = [64, 1500, 65536]
RNG = os.urandom


def py_checksum(data: bytes) -> int:
    """The straightforward RFC 1071 loop, as a Python programmer would write it."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _record(benchmark, nbytes: int = 0, packets: int = 0) -> None:
    mean = median_seconds(benchmark)      # robust to the shared machine's noise
    if mean is None:
        return
    if nbytes:
        benchmark.extra_info["GB/s"] = round(nbytes / mean / 1e9, 2)
    if packets:
        benchmark.extra_info["ns/packet"] = round(mean / packets * 1e9, 1)
    benchmark.extra_info["checksum_kernel"] = checksum_implementation()


def _run(benchmark, fn, *args, iterations=1000):
    """Many calls per timed round, so the timer's own overhead (~50 ns) does not swamp
    operations that take tens of nanoseconds."""
    return benchmark.pedantic(fn, args=args, iterations=iterations, rounds=100,
                              warmup_rounds=2)


@pytest.mark.parametrize("size", SIZES)
def test_checksum_fasttcp(benchmark, size):
    buf = RNG(size)
    benchmark.group = f"checksum {size} B"
    _run(benchmark, checksum, buf, iterations=1000 if size < 65536 else 100)
    _record(benchmark, nbytes=size)


@pytest.mark.parametrize("kernel", ["portable", "adc", "avx2"])
def test_checksum_kernels_64k(benchmark, kernel):
    buf = RNG(65536)
    benchmark.group = "checksum 65536 B"
    benchmark.name = f"checksum kernel {kernel}"
    used = select_checksum_implementation(kernel)
    try:
        _run(benchmark, checksum, buf, iterations=100)
    finally:
        select_checksum_implementation("best")
    benchmark.extra_info["kernel"] = used
    _record(benchmark, nbytes=65536)


@pytest.mark.parametrize("size", [64, 1500])
def test_checksum_pure_python_reference(benchmark, size):
    buf = RNG(size)
    benchmark.group = f"checksum {size} B"
    assert py_checksum(buf) == checksum(buf)
    benchmark(py_checksum, buf)
    _record(benchmark, nbytes=size)


def test_copy_64k_reference(benchmark):
    """memcpy of the same 64 KiB through bytes(): the 'memory speed' yardstick."""
    src = bytearray(RNG(65536))
    benchmark.group = "checksum 65536 B"
    _run(benchmark, bytes, src, iterations=100)
    _record(benchmark, nbytes=65536)


def _data_packets(n: int, family: int = 4) -> list:
    """n full 1500-byte data segments (IPv6: 20 bytes less payload)."""
    opts = TcpOptions(timestamps=(123456, 654321))
    a, b, size = ("10.0.0.1", "10.0.0.2", 1448) if family == 4 else ("fd00::1", "fd00::2",
                                                                       1428)
    return [build_tcp(a, b, 40000, 80, 1000 + size * i, 77, 0x18, 512, RNG(size), opts)
            for i in range(n)]


@pytest.mark.parametrize("family", [4, 6])
def test_batch_parse_64x1500(benchmark, family):
    packets = _data_packets(64, family)
    assert all(len(p) == 1500 for p in packets)
    batch = SegmentBatch(64)
    benchmark.group = "parse 64 x 1500 B"
    assert _run(benchmark, batch.parse, packets, iterations=100) == 64
    _record(benchmark, nbytes=64 * 1500, packets=64)


@pytest.mark.parametrize("family", [4, 6])
def test_batch_parse_64x1500_no_checksum(benchmark, family):
    """The same with checksums verified by the NIC/TUN offload (flag PARSE_NO_*_CSUM)."""
    packets = _data_packets(64, family)
    batch = SegmentBatch(64)
    benchmark.group = "parse 64 x 1500 B"
    assert _run(benchmark, batch.parse, packets, 3, iterations=100) == 64
    _record(benchmark, nbytes=64 * 1500, packets=64)


def test_scapy_parse_reference(benchmark):
    scapy = pytest.importorskip("scapy.all")
    packets = _data_packets(8)
    benchmark.group = "parse 64 x 1500 B"

    def parse_all():
        for p in packets:
            scapy.IP(p).getlayer(scapy.TCP).seq  # noqa: B018 - the parse is what is timed
    benchmark(parse_all)
    _record(benchmark, packets=8)


def test_build_data_segment_with_options(benchmark):
    payload = RNG(1448)
    opts = TcpOptions(timestamps=(1, 2), sack=[(100, 200)])
    benchmark.group = "build 1500 B segment"
    _run(benchmark, build_tcp, "10.0.0.1", "10.0.0.2", 40000, 80, 1000, 77, 0x18, 512,
         payload, opts, iterations=200)
    _record(benchmark, packets=1)


@pytest.mark.parametrize("family", [4, 6])
def test_build_data_segment_c_level(benchmark, family):
    """The engine's own path: Tcb.build (C struct in, packet out, payload from the send
    ring), via a pure ACK + 1448-byte segments of a live connection (1428 for IPv6)."""
    from fasttcp import Host
    a, b, size = ("10.0.0.1", "10.0.0.2", 1448) if family == 4 else ("fd00::1", "fd00::2",
                                                                       1428)
    client, server = Host(a), Host(b)
    server.listen(80)
    conn = client.connect((b, 80))
    for _ in range(4):
        server.receive(client.transmit(0.0), 0.0)
        client.receive(server.transmit(0.0), 0.0)
    conn.send(RNG(size))
    out = []
    benchmark.group = "build 1500 B segment"

    def build():
        out.clear()
        conn._send_segment(1, size, 0.0, out, True)
    _run(benchmark, build, iterations=200)
    assert len(out[0]) == 1500
    _record(benchmark, packets=1)
