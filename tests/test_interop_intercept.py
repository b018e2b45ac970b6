"""Interception against the Linux kernel: inside a private namespace, 10.99.0.0/16 and
fd00:99::/64 are routed into the TUN device; kernel clients (Python sockets, curl)
connect to addresses there, and fasttcp (``FastTcpStack.intercept``) serves them as the
original destinations, refuses some (ECONNREFUSED at once), and carries 64 MiB byte-exact
through one intercepted connection with offloads on. Each test makes its own namespace
(interop_util.tun_netns) and removes it."""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Tuple

import pytest

from interop_util import (WhoAmI, curl_argv, make_host, route_into_tun, run_async,
                          script_cmd, tun_netns)
from netns_util import TUN_MARKS, Background, sock_in

from fasttcp.aio import FastTcpStack, InterceptedFlow

pytestmark = TUN_MARKS

CURL = shutil.which("curl")
PREFIX4, PREFIX6 = "10.99.0.0/16", "fd00:99::/64"


async def in_thread(fn, *args) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class HashSink(asyncio.Protocol):
    """Hashes everything received; at EOF answers "<bytes> <sha256>\\n" and closes."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h = hashlib.sha256()
        self.n = 0

    def data_received(self, data: bytes) -> None:
        self.h.update(data)
        self.n += len(data)

    def eof_received(self) -> None:
        self.transport.write(f"{self.n} {self.h.hexdigest()}\n".encode())
        self.transport.close()


def _read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    for _ in range(10_000):
        b = sock.recv(65536)
        if not b:
            break
        out += b
    return bytes(out)


def test_kernel_clients_reach_intercepted_destinations_and_refusals() -> None:
    with tun_netns(offload=True, family="dual") as (ns, link):
        route_into_tun(ns, link, [PREFIX4, PREFIX6])
        host = make_host(link)
        seen: List[Tuple[Any, Any]] = []

        def client(dst: str, port: int) -> Tuple[bytes, Any]:
            family = socket.AF_INET6 if ":" in dst else socket.AF_INET
            s = sock_in(ns, family, timeout=10)
            try:
                s.connect((dst, port))
                s.sendall(b"ping " + dst.encode())
                s.shutdown(socket.SHUT_WR)
                return _read_all(s), s.getsockname()
            finally:
                s.close()

        def refused(dst: str, port: int) -> float:
            family = socket.AF_INET6 if ":" in dst else socket.AF_INET
            s = sock_in(ns, family, timeout=10)
            t0 = time.monotonic()
            try:
                with pytest.raises(ConnectionRefusedError):
                    s.connect((dst, port))
            finally:
                s.close()
            return time.monotonic() - t0

        async def main() -> Dict[str, Any]:
            async with FastTcpStack(host, link) as stack:
                def on_flow(flow: InterceptedFlow) -> None:
                    seen.append((flow.local_address, flow.remote_address))
                    if flow.local_address[1] == 81:
                        flow.refuse()
                    else:
                        asyncio.ensure_future(flow.accept(WhoAmI))

                icpt = stack.intercept([PREFIX4, PREFIX6], on_flow)
                out: Dict[str, Any] = {}
                for dst, port in (("10.99.0.5", 8080), ("10.99.7.7", 443),
                                  ("10.99.200.1", 22), ("fd00:99::5", 8080)):
                    out[f"{dst}:{port}"] = await in_thread(client, dst, port)
                out["refused4"] = await in_thread(refused, "10.99.0.5", 81)
                out["refused6"] = await in_thread(refused, "fd00:99::7", 81)
                if CURL is not None:
                    proc = await asyncio.create_subprocess_exec(
                        *script_cmd(ns, "exec", "--", *curl_argv(
                            "10.99.3.3", 81, "/", ("-v", "--max-time", "10"), curl=CURL)),
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    _, err = await proc.communicate()
                    out["curl"] = (proc.returncode, err.decode())
                icpt.close()
                return out

        out = run_async(main(), 60)
    for dst, port in (("10.99.0.5", 8080), ("10.99.7.7", 443), ("10.99.200.1", 22),
                      ("fd00:99::5", 8080)):
        data, sockname = out[f"{dst}:{port}"]
        assert data == f"{dst} {port}\n".encode() + b"ping " + dst.encode()
        assert any(la[:2] == (dst, port) and ra[:2] == sockname[:2] for la, ra in seen)
    assert out["refused4"] < 1.0 and out["refused6"] < 1.0
    if CURL is not None:
        code, err = out["curl"]
        # CURLE_COULDNT_CONNECT; -v shows the connect() error itself (ECONNREFUSED).
        assert code == 7 and "Connection refused" in err, err
    st = host.stats()
    assert st["intercept_accepted"] == 4 and st["intercept_refused"] >= 2
    assert "drop_not_for_us" not in st


def test_64_mib_byte_exact_through_one_intercepted_connection() -> None:
    size = 64 << 20
    data = os.urandom(size)
    with tun_netns(offload=True) as (ns, link):
        route_into_tun(ns, link, [PREFIX4])
        host = make_host(link)

        def client() -> bytes:
            s = sock_in(ns, timeout=60)
            try:
                s.connect(("10.99.0.5", 8080))
                view = memoryview(data)
                for off in range(0, size, 1 << 20):
                    s.sendall(view[off:off + (1 << 20)])
                s.shutdown(socket.SHUT_WR)
                return _read_all(s)
            finally:
                s.close()

        async def main() -> Tuple[bytes, Dict[str, int]]:
            async with FastTcpStack(host, link) as stack:
                stack.intercept(PREFIX4, lambda flow: asyncio.ensure_future(
                    flow.accept(HashSink)))
                tx = Background(client)
                for _ in range(6000):
                    if not tx.thread.is_alive():
                        break
                    await asyncio.sleep(0.01)
                tx.join(5)
                return tx.result, link.stats()

        reply, link_stats = run_async(main(), 90)
    assert reply == f"{size} {hashlib.sha256(data).hexdigest()}\n".encode()
    st = host.stats()
    # The bulk of it took the C fast path, as for a connection to an own address.
    assert st["fast_path_segments"] > st["segments_in"] // 2, st
    assert st.get("drop_bad_tcp_checksum", 0) == 0, st


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_downloads_from_intercepted_destinations(tmp_path) -> None:
    """curl (the kernel's TCP) fetches from two intercepted destinations of either family,
    served by fasttcp's HttpServer on each accepted flow: byte-exact."""
    from fasttcp.cli.servers import HttpServer, generated_body

    size = 16 << 20
    with tun_netns(offload=True, family="dual") as (ns, link):
        route_into_tun(ns, link, [PREFIX4, PREFIX6])
        host = make_host(link)
        http = HttpServer(size=size)

        async def main() -> List[Tuple[int, bytes, bytes]]:
            loop = asyncio.get_running_loop()

            def factory() -> asyncio.StreamReaderProtocol:
                return asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), http,
                                                    loop=loop)

            async with FastTcpStack(host, link) as stack:
                stack.intercept([PREFIX4, PREFIX6],
                                lambda flow: asyncio.ensure_future(flow.accept(factory)))
                results = []
                for i, (dst, port) in enumerate((("10.99.0.5", 8080), ("fd00:99::9", 443))):
                    out = tmp_path / f"body{i}"
                    proc = await asyncio.create_subprocess_exec(
                        *script_cmd(ns, "exec", "--", *curl_argv(
                            dst, port, "/file", ("--max-time", "30", "-o", str(out), "-w",
                                                 "%{http_code} %{size_download}"),
                            curl=CURL)),
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                    stdout, stderr = await proc.communicate()
                    results.append((proc.returncode, stdout, stderr))
                return results

        results = run_async(main(), 90)
    body = hashlib.sha256(generated_body(size)).hexdigest()
    for i, (code, stdout, stderr) in enumerate(results):
        assert code == 0, stderr.decode()
        assert stdout.decode().split() == ["200", str(size)]
        assert hashlib.sha256((tmp_path / f"body{i}").read_bytes()).hexdigest() == body
    assert host.stats()["intercept_accepted"] == 2
