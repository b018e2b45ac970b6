"""The TUN link's C loops (``TunIO``) on IPv4 and IPv6 frames, side by side in one run.

A datagram socket pair stands in for the TUN fd (it keeps frame boundaries), so this
measures only the link's own per-packet work: reading a batch and classifying each frame
(verifying the TCP checksum of a frame the kernel did not vouch for, past any IPv6
extension headers), and writing a batch (a TSO super-segment gets its virtio header and
pseudo-header sum). Each IPv6 case runs beside the same IPv4 case; the ratio is in
``extra_info``.

Run: ``pytest benchmarks/bench_tunio.py``; or, to compare built trees on identical work
(e.g. before/after a change), ``PYTHONPATH=TREE python benchmarks/bench_tunio.py`` per tree,
alternating: it prints ns per packet for each case as one JSON line.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

import pytest

from fasttcp.link._tunio import TunIO
from fasttcp.wire import checksum

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
BATCH = 64
V4 = ("10.77.0.1", "10.77.0.2")
V6 = ("fd77::1", "fd77::2")


def tcp_frame(version: int, payload: int, *, partial: bool = False) -> bytes:
    """An IP/TCP packet (20-byte TCP header) with a valid checksum, or with the
    pseudo-header sum only (``partial``, as the kernel hands it over)."""
    src, dst = V4 if version == 4 else V6
    data = os.urandom(payload)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1000, 2000, 5 << 4, 0x18, 65535,
                                0, 0) + data)
    if version == 4:
        s, d = socket.inet_pton(socket.AF_INET, src), socket.inet_pton(socket.AF_INET, dst)
        pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64,
                                   6, 0, s, d))
        ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    else:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s + d + struct.pack("!IxxxB", len(tcp), 6)
        ip = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, s, d))
    if partial:
        folded = ~checksum(pseudo) & 0xFFFF
        tcp[16:18] = struct.pack("!H", folded)
    else:
        tcp[16:18] = struct.pack("!H", checksum(pseudo + bytes(tcp)))
    return bytes(ip) + bytes(tcp)


def vnet_hdr(version: int, partial: bool) -> bytes:
    if not partial:
        return bytes(10)
    return struct.pack("<BBHHHH", 1, 0, 0, 0, 20 if version == 4 else 40, 16)


class Pair:
    """A TunIO (vnet headers on) on one end of a datagram socket pair."""

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.a, self.b):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 64 << 20)
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.io = TunIO(self.b.fileno(), True, BATCH)

    def fill(self, frames: list) -> None:
        for f in frames:
            self.a.send(f)

    def drain(self) -> None:
        try:
            while True:
                self.a.recv(70000)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.io.detach()
        self.a.close()
        self.b.close()


CASES = {
    # name: (direction, payload bytes, partial checksum, gso)
    "rx_verify_1460": ("rx", 1460, False, 0),
    "rx_partial_1460": ("rx", 1460, True, 0),
    "tx_plain_1460": ("tx", 1460, False, 0),
    "tx_tso_64k": ("tx", 65000 - 60, False, -1500),
}


def run_case(pair: Pair, name: str, version: int, rounds: int) -> float:
    """Median ns per packet over ``rounds`` batches of BATCH packets."""
    direction, payload, partial, gso = CASES[name]
    n = BATCH if payload < 4000 else 16
    frames = [tcp_frame(version, payload, partial=partial)] * n
    if direction == "rx":
        framed = [vnet_hdr(version, partial) + f for f in frames]
    times = []
    for _ in range(rounds):
        if direction == "rx":
            pair.fill(framed)
            t0 = time.perf_counter_ns()
            got = pair.io.recv_batch(n)
            times.append(time.perf_counter_ns() - t0)
            assert len(got) == n, (name, version, len(got))
        else:
            t0 = time.perf_counter_ns()
            sent = pair.io.send_batch(frames, gso)
            times.append(time.perf_counter_ns() - t0)
            assert sent == n
            pair.drain()
    times.sort()
    return times[len(times) // 2] / n


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("version", [4, 6])
def test_tunio(benchmark, pair, name, version):
    direction, payload, partial, gso = CASES[name]
    n = BATCH if payload < 4000 else 16
    frames = [tcp_frame(version, payload, partial=partial)] * n
    benchmark.group = f"tunio {name}"
    if direction == "rx":
        framed = [vnet_hdr(version, partial) + f for f in frames]

        def setup():
            pair.fill(framed)
            return (), {}

        benchmark.pedantic(lambda: pair.io.recv_batch(n), setup=setup, rounds=200,
                           warmup_rounds=2)
    else:
        def setup():
            pair.drain()
            return (), {}

        benchmark.pedantic(lambda: pair.io.send_batch(frames, gso), setup=setup,
                           rounds=200, warmup_rounds=2)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["ns/packet"] = round(stats.stats.median / n * 1e9, 1)
        # the other family on the same work, just measured (noise falls on both)
        other = run_case(pair, name, 10 - version, 50)
        mine = run_case(pair, name, version, 50)
        benchmark.extra_info[f"ratio IPv{version}/IPv{10 - version} time"] = \
            round(mine / other, 3)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    p = Pair()
    try:
        out = {f"{name}_v{v}": round(run_case(p, name, v, rounds), 1)
               for name in CASES for v in (4, 6)}
    except Exception as e:                   # a tree whose TunIO drops IPv6: IPv4 only
        out = {f"{name}_v4": round(run_case(p, name, 4, rounds), 1) for name in CASES}
        out["v6_error"] = str(e)
    finally:
        p.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
