"""TLS goodput: the same asyncio streams handler with ``ssl=`` on fasttcp over TUN and on
the kernel's sockets across a veth pair, in alternating rounds of one run.

Run: ``pytest benchmarks/bench_tls.py`` (root and /dev/net/tun needed; skipped otherwise).

- The application is ``tls_peer.handle`` (``GET n``: the server writes n bytes; ``PUT n``:
  it reads n bytes), with a certificate from a CA made here (trustme). fasttcp serves it
  through ``FastTcpStack.start_server(..., ssl=ctx)`` in this process over a TunLink with
  offloads; the kernel baseline serves the very same function with
  ``asyncio.start_server(..., ssl=ctx)`` in a process of its own in a veth namespace.
- The client is the same for both: ``tls_peer.py client``, a blocking TLS socket of the
  kernel's in a process of its own, timed from ``connect()`` to the server's ``ok``.
- ``x kernel (median of pairs)``: the median over the rounds of fasttcp's goodput over the
  kernel's, the order flipped every round (this VM's slow phases hit both of a pair).
  Goal: >= 1.0.
"""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

import tls_peer                                   # beside this file
from interop_util import US, VETH_B, make_host, script_cmd, tun_netns, veth_netns
from netns_util import TUN_MARKS

trustme = pytest.importorskip("trustme")

pytestmark = TUN_MARKS

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "tls_peer.py")
PORT = 5443
GIB = 1 << 30
PAIRS = 4
TIMEOUT = 300.0



@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("bench.test")
    d = tmp_path_factory.mktemp("tls")
    paths = {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths


def _peer(ns: str, *args: str) -> List[str]:
    return script_cmd(ns, "exec", "--", sys.executable, PEER, *args)


def _client(ns: str, addr: str, ca: str, verb: str, size: int) -> dict:
    out = subprocess.run(_peer(ns, "client", "--connect", f"{addr}:{PORT}", "--ca", ca,
                               verb, str(size)),
                         capture_output=True, timeout=TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"TLS client failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


async def _fasttcp_round(ns: str, link, certs: Dict[str, str], verb: str,
                         size: int) -> dict:
    from fasttcp.aio import FastTcpStack

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    host = make_host(link)
    async with FastTcpStack(host, link) as stack:
        server = await stack.start_server(tls_peer.handle, PORT, ssl=ctx)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, _client, ns, US, certs["ca"], verb, size)
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize("verb", ["GET", "PUT"])
def test_tls_paired_with_kernel(benchmark, certs, verb):
    """1 GiB through TLS each round (16 MiB when benchmarks are disabled: the CI smoke)."""
    benchmark.group = f"TLS {verb} fasttcp (TUN) vs kernel (veth)"
    size = 16 << 20 if benchmark.disabled else GIB
    pairs: List[Tuple[dict, dict]] = []
    with veth_netns() as (a, b), tun_netns(offload=True) as (ns, link):
        kernel = subprocess.Popen(
            _peer(b, "serve", "--listen", f"{VETH_B}:{PORT}", "--cert", certs["cert"],
                  "--key", certs["key"], "--count", str(PAIRS + 1)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert kernel.stdout.readline().strip() == b"ready", kernel.stderr.read()

            def ours() -> dict:
                return asyncio.run(_fasttcp_round(ns, link, certs, verb, size))

            def theirs() -> dict:
                return _client(a, VETH_B, certs["ca"], verb, size)

            theirs()                                   # warm-ups, not counted
            asyncio.run(_fasttcp_round(ns, link, certs, verb, 1 << 20))

            def run() -> None:
                if len(pairs) % 2:
                    t = ours()
                    pairs.append((theirs(), t))
                else:
                    k = theirs()
                    pairs.append((k, ours()))

            benchmark.pedantic(run, rounds=1 if benchmark.disabled else PAIRS,
                               iterations=1)
        finally:
            if kernel.poll() is None:
                kernel.kill()
            kernel.wait(10)

    def gbit(r: dict) -> float:
        return r["bytes"] * 8 / r["seconds"] / 1e9

    ratios = [gbit(t) / gbit(k) for k, t in pairs]
    info = benchmark.extra_info
    info["x kernel (median of pairs)"] = round(statistics.median(ratios), 3)
    info["x kernel per pair"] = [round(x, 2) for x in ratios]
    info["fasttcp Gbit/s"] = round(statistics.median(gbit(t) for _, t in pairs), 3)
    info["kernel Gbit/s"] = round(statistics.median(gbit(k) for k, _ in pairs), 3)
