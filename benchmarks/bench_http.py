"""HTTP requests per second with ``wrk``: fasttcp against the kernel, side by side in one run.

Run: ``pytest benchmarks/bench_http.py`` (root, /dev/net/tun and the ``wrk`` Debian package
needed; skipped with the reason otherwise).

What is measured. ``wrk`` (one thread, ``CONNS`` connections, ``--latency``) asks for 1 KiB
bodies from the same handler, ``fasttcp.cli.servers.HttpServer(size=1024)`` (what
``fasttcp serve http --size 1024`` serves):

- ``fasttcp``: on fasttcp's asyncio streams in this process, over a ``TunLink`` (offloads
  on, MTU 1500) in a private namespace; the Host as ``fasttcp serve`` makes it.
- ``kernel``: on ``asyncio.start_server`` (the kernel's sockets) in a process of its own
  (``interop_util.py aio-http``), across a veth pair between two namespaces.

in two modes: ``close`` (``-H 'Connection: close'``: a new connection per request, the
server closes first and holds TIME-WAIT, so the client's port reuse meets it) and
``keepalive`` (HTTP/1.1 persistent connections). Each round is a pair, kernel and
fasttcp, alternating which goes first (the 2 cores are shared with other work: only
ratios of one pair mean much); ``x kernel`` in extra_info is the median of the per-pair
ratios of requests/s, with every pair's figures, p50 and p99 latency (ms) and wrk's
socket errors beside it. A fresh Host serves each fasttcp round, a fresh veth pair and
server process each kernel round.

Every namespace is private and removed afterwards; the only addresses used are
10.77.x.0/24 inside them; every wrk run lasts ``SECONDS`` (1 s in the one-shot smoke run).
"""
from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import pytest

import interop_util
from interop_util import US, VETH_B, make_host, script_cmd, tun_netns, veth_netns
from netns_util import TUN_MARKS

pytestmark = TUN_MARKS

WRK = shutil.which("wrk")
PORT = 8080
SIZE = 1024
CONNS = 50
SECONDS = 3
ROUNDS = 3
MODES = {"close": ["-H", "Connection: close"], "keepalive": []}
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_cmd(ns: str, address: str, mode: str, seconds: int) -> List[str]:
    return script_cmd(ns, "exec", "--", WRK, "-t1", f"-c{CONNS}", f"-d{seconds}s",
                      "--latency", "--timeout", "5s", *MODES[mode],
                      f"http://{address}:{PORT}/")


def parse_wrk(text: str) -> Dict[str, float]:
    """requests/s, p50 and p99 latency (ms) and socket errors from wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"no wrk report: {text[-2000:]}")
    res = {"rps": float(rps.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        res[f"p{pct}_ms"] = float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    res["socket_errors"] = sum(int(x) for x in errs.groups()) if errs else 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non_2xx"] = int(bad.group(1)) if bad else 0
    return res


def _run_wrk(cmd: List[str], seconds: int) -> Dict[str, float]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr[-2000:]}")
    return parse_wrk(r.stdout)


async def _fasttcp_round(ns: str, link, mode: str, seconds: int) -> Dict[str, float]:
    from fasttcp.aio import FastTcpStack
    from fasttcp.cli.servers import HttpServer

    host = make_host(link)
    async with FastTcpStack(host, link) as stack:
        server = await stack.start_server(HttpServer(size=SIZE), PORT)
        proc = await asyncio.create_subprocess_exec(
            *_wrk_cmd(ns, US, mode, seconds), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
        server.close()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-2000:]}")
    res = parse_wrk(out.decode())
    st = host.stats()
    for key in ("time_wait_reopened", "challenge_acks_out", "retransmitted_segments",
                "drop_listen_overflow", "syn_cookies_sent"):
        res[key] = st.get(key, 0)
    return res


@contextmanager
def _kernel_http_server(ns: str) -> Iterator[None]:
    """The same handler on asyncio over the kernel's sockets in ``ns``, until the end."""
    server = subprocess.Popen(
        script_cmd(ns, "aio-http", "--listen", f"{VETH_B}:{PORT}", "--bytes", str(SIZE)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.stdout.readline().strip() == b"ready", server.stderr.read()
        yield
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _missing() -> Optional[str]:
    if WRK is None:
        return "wrk is not installed (Debian package wrk)"
    return None


@pytest.mark.parametrize("mode", list(MODES))
def test_http_wrk_paired(benchmark, mode):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    benchmark.group = f"HTTP wrk -c{CONNS} {mode}"
    seconds = 1 if benchmark.disabled else SECONDS
    pairs: List[Dict[str, Dict[str, float]]] = []
    with tun_netns(offload=True) as (ns, link):
        def kernel_round() -> Dict[str, float]:
            # A fresh pair of namespaces each round, as fasttcp gets a fresh Host: the
            # kernel client's TIME-WAIT sockets of one round (wrk often closes before the
            # server's FIN arrives) would exhaust its ports in a later one.
            with veth_netns() as (a, b), _kernel_http_server(b):
                return _run_wrk(_wrk_cmd(a, VETH_B, mode, seconds), seconds)

        def fasttcp_round() -> Dict[str, float]:
            return interop_util.run_async(_fasttcp_round(ns, link, mode, seconds),
                                          seconds + 90)

        def run() -> None:
            pair: Dict[str, Dict[str, float]] = {}
            order = [("kernel", kernel_round), ("fasttcp", fasttcp_round)]
            if len(pairs) % 2:
                order.reverse()
            for name, fn in order:
                pair[name] = fn()
            pairs.append(pair)

        benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    ratios = [p["fasttcp"]["rps"] / p["kernel"]["rps"] for p in pairs]
    info = benchmark.extra_info
    info["x kernel (median of pairs)"] = round(statistics.median(ratios), 3)
    info["x kernel (pairs)"] = [round(r, 3) for r in ratios]
    for name in ("fasttcp", "kernel"):
        info[f"{name} requests/s"] = [round(p[name]["rps"]) for p in pairs]
        info[f"{name} p50 ms"] = [round(p[name]["p50_ms"], 3) for p in pairs]
        info[f"{name} p99 ms"] = [round(p[name]["p99_ms"], 3) for p in pairs]
        info[f"{name} socket errors"] = [int(p[name]["socket_errors"]) for p in pairs]
    for key in ("time_wait_reopened", "challenge_acks_out", "retransmitted_segments",
                "drop_listen_overflow", "syn_cookies_sent"):
        info[f"fasttcp {key}"] = [int(p["fasttcp"][key]) for p in pairs]
    for p in pairs:
        for name in ("fasttcp", "kernel"):
            assert p[name]["rps"] > 0 and p[name]["non_2xx"] == 0, (name, p)
