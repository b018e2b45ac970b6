"""Compare the engine of two or more source trees on identical work, alternating them.

    python benchmarks/ab_trees.py [--rounds N] TREE [TREE ...]

Each TREE is a checkout with its extensions built in place (``python setup.py build_ext
--inplace``), e.g. a ``git worktree`` of an older commit beside this one. Every measure runs
in a fresh process per tree (``PYTHONPATH=TREE``), the trees taking turns in every round, so
a slow phase of a shared machine falls on all of them. It uses only what every tree has
(``Host`` and ``fasttcp.link.exchange``), so the work is the same whatever else changed:

- ``bulk1500`` / ``bulk65535``: 16 MiB between two hosts, Gbit/s (best of 2);
- ``conn``: connections/s (open, one request/response, close; best of 2);
- ``rr``: µs per request/response on one kept-alive connection (best of 3 × 10,000);
- ``idle``: bytes per idle ESTABLISHED connection (tracemalloc, 5,000 pairs).

Prints the median per tree and measure. (Not a pytest benchmark: it needs several builds.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

MEASURES = ("bulk1500", "bulk65535", "conn", "rr", "idle")

CHILD = r'''
import gc, json, sys, time, tracemalloc
from fasttcp import Host
from fasttcp.link import exchange

SECRET = bytes(16)


def pair(**kw):
    a = Host("10.0.0.1", isn_secret=SECRET, **kw)
    b = Host("10.0.0.2", isn_secret=SECRET, **kw)
    return a, b


def bulk(size, mtu):
    a, b = pair(mtu=mtu)
    lst = b.listen(80)
    now = 0.0
    c = a.connect(("10.0.0.2", 80))
    exchange(a, b, now)
    s = lst.accept()
    view = memoryview(bytes(range(256)) * 4096)
    sent = got = 0
    t0 = time.perf_counter()
    while got < size:
        while sent < size:
            n = c.send(view[sent % len(view):])
            if not n:
                break
            sent += n
        exchange(a, b, now)
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
        exchange(a, b, now)
        now += 0.0002
        a.transmit(now)
        b.transmit(now)
    return size * 8 / (time.perf_counter() - t0) / 1e9


def conn(n=500):
    a, b = pair(msl=0.0005)
    lst = b.listen(80, backlog=n)
    now = 0.0
    t0 = time.perf_counter()
    for _ in range(n):
        c = a.connect(("10.0.0.2", 80))
        exchange(a, b, now)
        s = lst.accept()
        c.send(b"GET / HTTP/1.1\r\n\r\n")
        exchange(a, b, now)
        s.recv()
        s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        s.close()
        exchange(a, b, now)
        c.recv()
        c.close()
        exchange(a, b, now)
        now += 0.001
        a.transmit(now)
        b.transmit(now)
    t = time.perf_counter() - t0
    assert not a.connections() and not b.connections()
    return n / t


def rr():
    a, b = pair()
    lst = b.listen(80)
    c = a.connect(("10.0.0.2", 80))
    exchange(a, b, 0.0)
    s = lst.accept()
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + bytes(1024)
    now = [0.0]

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            c.send(req)
            exchange(a, b, now[0])
            s.recv()
            s.send(resp)
            exchange(a, b, now[0])
            c.recv()
            now[0] += 0.0005
        return (time.perf_counter() - t0) / n * 1e6
    run(2000)
    return min(run(10000) for _ in range(3))


def idle(n=5000):
    gc.collect()
    tracemalloc.start()
    s0 = tracemalloc.take_snapshot()
    a = Host("10.0.0.1", isn_secret=SECRET, max_connections=4 * n)
    b = Host("10.0.0.2", isn_secret=SECRET, max_connections=4 * n, syn_backlog=n, backlog=n)
    lst = b.listen(80)
    conns = []
    for i in range(n):
        conns.append(a.connect(("10.0.0.2", 80)))
        if i % 100 == 99:
            exchange(a, b, 0.0)
    exchange(a, b, 0.0)
    accepted = []
    while (x := lst.accept()) is not None:
        accepted.append(x)
    assert len(accepted) == n
    gc.collect()
    s1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(d.size_diff for d in s1.compare_to(s0, "filename")) / (2 * n)


what = sys.argv[1]
if what.startswith("bulk"):
    value = max(bulk(16 << 20, int(what[4:])) for _ in range(2))
elif what == "conn":
    value = max(conn() for _ in range(2))
elif what == "rr":
    value = rr()
else:
    value = idle()
print(json.dumps(value))
'''


def measure(tree: str, what: str) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, what], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{tree} {what}: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--measure", action="append", choices=MEASURES)
    ap.add_argument("trees", nargs="+")
    args = ap.parse_args()
    results: Dict[Tuple[str, str], List[float]] = {}
    for _ in range(args.rounds):
        for what in args.measure or MEASURES:
            for tree in args.trees:
                results.setdefault((what, tree), []).append(measure(tree, what))
    for what in args.measure or MEASURES:
        cells = [f"{tree}: {statistics.median(results[(what, tree)]):,.1f}"
                 for tree in args.trees]
        print(f"{what:10s} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
