"""UDP datagrams per second (issue 15): a kernel UDP client against an asyncio echo
endpoint on fasttcp over TUN, and against the same endpoint on the kernel's sockets
across a veth pair, in alternating rounds of one run.

Run: ``pytest benchmarks/bench_udp.py`` (root and /dev/net/tun needed; skipped otherwise).

- The server is the same asyncio ``DatagramProtocol`` (echo) on both: through
  ``FastTcpStack.create_datagram_endpoint`` over a TunLink with offloads, or through
  ``loop.create_datagram_endpoint(sock=...)`` with a kernel socket in the veth namespace.
- The client is the same for both: a blocking kernel UDP socket in a thread of this
  process, in windows of ``WINDOW`` datagrams of 64 bytes (send the window, read its
  echoes), so neither side's queue overflows; a window's missing echoes are counted lost.
- ``x kernel (median of pairs)``: the median over the rounds of fasttcp's echoed
  datagrams per second over the kernel's, the order flipped every round. Both rounds
  share the 2 CPUs with the client thread (and the GIL), alike.
"""
from __future__ import annotations

import asyncio
import socket
import statistics
import time
from typing import Any, Dict, List, Tuple

from interop_util import US, VETH_B, make_host, tun_netns, veth_netns
from netns_util import TUN_MARKS, Background, sock_in

pytestmark = TUN_MARKS

PORT = 7
WINDOW = 32
PAIRS = 4


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


def _client(ns: str, server: str, n: int) -> Dict[str, float]:
    s = sock_in(ns, socket.AF_INET, socket.SOCK_DGRAM, timeout=0.5)
    s.connect((server, PORT))
    msg = bytes(64)
    got = 0
    t0 = time.perf_counter()
    for base in range(0, n, WINDOW):
        k = min(WINDOW, n - base)
        for _ in range(k):
            s.send(msg)
        for _ in range(k):
            try:
                s.recv(2048)
            except socket.timeout:
                break
            got += 1
    dt = time.perf_counter() - t0
    s.close()
    return {"sent": n, "echoed": got, "seconds": dt}


async def _serve_then(start_server: Any, ns: str, server: str, n: int) -> Dict[str, float]:
    await start_server()
    bg = Background(lambda: _client(ns, server, n))
    end = time.monotonic() + 120
    while bg.thread.is_alive() and time.monotonic() < end:
        await asyncio.sleep(0.005)
    return bg.join(1)  # type: ignore[return-value]


def _fasttcp_round(ns: str, link: Any, n: int) -> Dict[str, float]:
    import fasttcp.aio

    async def main() -> Dict[str, float]:
        stack = await fasttcp.aio.start(make_host(link), link)
        try:
            async def start() -> None:
                await stack.create_datagram_endpoint(_Echo, local_addr=(None, PORT))
            return await _serve_then(start, ns, US, n)
        finally:
            stack.close()
    return asyncio.run(main())


def _kernel_round(a: str, b: str, n: int) -> Dict[str, float]:
    async def main() -> Dict[str, float]:
        sock = sock_in(b, socket.AF_INET, socket.SOCK_DGRAM, timeout=None)
        sock.bind((VETH_B, PORT))
        sock.setblocking(False)
        transports: List[asyncio.BaseTransport] = []

        async def start() -> None:
            t, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Echo, sock=sock)
            transports.append(t)
        try:
            return await _serve_then(start, a, VETH_B, n)
        finally:
            for t in transports:
                t.close()
    return asyncio.run(main())


def test_udp_echo_paired_with_kernel(benchmark: Any) -> None:
    """20,000 datagrams a round (2,000 when benchmarks are disabled: the CI smoke)."""
    benchmark.group = "UDP echo datagrams/s: fasttcp (TUN) vs kernel (veth)"
    n = 2_000 if benchmark.disabled else 20_000
    pairs: List[Tuple[Dict[str, float], Dict[str, float]]] = []
    with veth_netns() as (a, b), tun_netns(offload=True) as (ns, link):
        _kernel_round(a, b, 500)                     # warm-ups, not counted
        _fasttcp_round(ns, link, 500)

        def run() -> None:
            if len(pairs) % 2:
                t = _fasttcp_round(ns, link, n)
                pairs.append((_kernel_round(a, b, n), t))
            else:
                k = _kernel_round(a, b, n)
                pairs.append((k, _fasttcp_round(ns, link, n)))

        benchmark.pedantic(run, rounds=1 if benchmark.disabled else PAIRS, iterations=1)

    def rate(r: Dict[str, float]) -> float:
        return r["echoed"] / r["seconds"]

    for k, t in pairs:
        assert k["echoed"] >= 0.99 * k["sent"] and t["echoed"] >= 0.99 * t["sent"]
    ratios = [rate(t) / rate(k) for k, t in pairs]
    info = benchmark.extra_info
    info["x kernel (median of pairs)"] = round(statistics.median(ratios), 3)
    info["x kernel per pair"] = [round(x, 2) for x in ratios]
    info["fasttcp datagrams/s"] = round(statistics.median(rate(t) for _, t in pairs))
    info["kernel datagrams/s"] = round(statistics.median(rate(k) for k, _ in pairs))
    info["lost (fasttcp, kernel)"] = (sum(t["sent"] - t["echoed"] for _, t in pairs),
                                      sum(k["sent"] - k["echoed"] for k, _ in pairs))
