"""Both ends of the TLS goodput benchmark (bench_tls.py).

- :func:`handle` is the application: an asyncio streams handler that reads one request
  line, ``GET n`` (send n bytes) or ``PUT n`` (read n bytes), does it and answers ``ok``.
  bench_tls.py runs it on fasttcp in its own process, and this file runs the very same
  function on the kernel's sockets (``serve``), so the two differ only in the stack.
- ``client`` is the kernel-side client: a blocking TLS socket that makes one request and
  prints ``{"seconds": ..., "bytes": ...}`` as JSON, timed from just before ``connect()``
  to the final ``ok`` (every byte delivered through TLS).

Run inside a namespace by ``interop_util.py --netns NS exec -- python tls_peer.py ...``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
import time
from typing import List, Optional, Tuple

CHUNK = 1 << 20
_BLOCK = bytes(range(256)) * (CHUNK // 256)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``GET n``: write n bytes; ``PUT n``: read n bytes. Then ``ok`` and close."""
    try:
        verb, n = (await reader.readline()).split()
        size = int(n)
        if verb == b"GET":
            view = memoryview(_BLOCK)
            while size > 0:
                writer.write(view[:min(size, CHUNK)])
                size -= CHUNK
                await writer.drain()
        else:
            while size > 0:
                data = await reader.read(min(size, 4 * CHUNK))
                if not data:
                    raise ConnectionError("client went away")
                size -= len(data)
        writer.write(b"ok\n")
        await writer.drain()
    finally:
        writer.close()


def _hostport(text: str) -> Tuple[str, int]:
    h, p = text.rsplit(":", 1)
    return h, int(p)


def client(addr: Tuple[str, int], ca: str, verb: str, size: int) -> dict:
    ctx = ssl.create_default_context(cafile=ca)
    buf = bytearray(CHUNK)
    view = memoryview(_BLOCK)
    t0 = time.perf_counter()
    with socket.create_connection(addr, timeout=60) as raw:
        with ctx.wrap_socket(raw, server_hostname="bench.test") as s:
            s.sendall(f"{verb} {size}\n".encode())
            left = size
            if verb == "GET":
                while left > 0:
                    n = s.recv_into(buf)
                    if not n:
                        raise ConnectionError("server closed early")
                    left -= n
            else:
                while left > 0:
                    s.sendall(view[:min(left, CHUNK)])
                    left -= CHUNK
            tail = b""
            while not tail.endswith(b"ok\n"):
                more = s.recv(64)
                if not more:
                    raise ConnectionError(f"no ok from the server (left {left})")
                tail += more
    return {"seconds": time.perf_counter() - t0, "bytes": size}


def serve(addr: Tuple[str, int], cert: str, key: str, count: int) -> None:
    """``handle`` on asyncio over the kernel's sockets, for ``count`` connections."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def main() -> None:
        done = asyncio.Event()
        served = 0

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            try:
                await handle(reader, writer)
            finally:
                served += 1
                if served >= count:
                    done.set()

        server = await asyncio.start_server(one, addr[0], addr[1], ssl=ctx,
                                            reuse_address=True)
        print("ready", flush=True)
        try:
            await asyncio.wait_for(done.wait(), 300)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", type=_hostport, required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("verb", choices=["GET", "PUT"])
    c.add_argument("bytes", type=int)
    s = sub.add_parser("serve")
    s.add_argument("--listen", type=_hostport, required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--count", type=int, default=1)
    args = ap.parse_args(argv)
    if args.mode == "client":
        print(json.dumps(client(args.connect, args.ca, args.verb, args.bytes)), flush=True)
    else:
        serve(args.listen, args.cert, args.key, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
