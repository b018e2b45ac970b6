"""A fasttcp Host speaking IPv6 to the Linux kernel over a TUN device (issue 14's interop
list): curl -6 and Python sockets both directions, offload on and off, byte-exact; half-
close; resets and refusals; 200 concurrent connections; ping -6; a real ICMPv6 Packet Too
Big from a router namespace with a 1280-byte link; and one dual-stack Host serving both
families at once. Each test makes its own namespaces (interop_util) and removes them."""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from typing import Any, List, Tuple

import pytest

from interop_util import (KERNEL6, US, US6, curl_argv, make_host, ping, recv_to_eof,
                          router_netns, run_async, script_cmd, send_and_read_to_eof,
                          sha256_file, stall_report, tun_netns)
from netns_util import TUN_MARKS, Background, sock_in

import fasttcp as _fasttcp
from fasttcp.aio import FastTcpStack
from fasttcp.cli import servers
from fasttcp.cli.servers import HttpServer, generated_body

pytestmark = TUN_MARKS

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
V6 = socket.AF_INET6
# Child processes import the fasttcp these tests import, from "/" (not the checkout).
CHILD_CWD = "/"
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(_fasttcp.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def in_thread(fn, *args) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@needs_curl
@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_curl6_downloads_from_fasttcp_http(tmp_path, offload):
    size = 64 << 20
    out = tmp_path / "body"
    with tun_netns(offload=offload, family="ipv6") as (ns, link):
        host = make_host(link)
        http = HttpServer(size=size)

        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(http, 80)
                proc = await asyncio.create_subprocess_exec(
                    *script_cmd(ns, "exec", "--", *curl_argv(
                        US6, 80, "/file", ("--max-time", "60", "-o", str(out), "-w",
                                           "%{http_code} %{size_download}"), curl=CURL)),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                stdout, stderr = await proc.communicate()
                server.close()
                link_stats.update(link.stats())
                return subprocess.CompletedProcess([], proc.returncode, stdout, stderr)

        link_stats: dict = {}
        r = run_async(main(), 90)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["200", str(size)]
    n, digest = sha256_file(str(out))
    assert n == size and digest == sha(generated_body(size))
    st = host.stats()
    assert st.get("drop_bad_tcp_checksum", 0) == 0, st
    if offload:
        assert link_stats["tx_gso_packets"] > 0, link_stats     # TSO6 super-segments out


@pytest.mark.parametrize("offload,size", [(True, 32 << 20), (False, 8 << 20)],
                         ids=["offload-32MiB", "no-offload-8MiB"])
def test_kernel_client_echo_over_ipv6(offload, size):
    """Random bytes both ways at once through fasttcp's echo service over IPv6 (with
    offloads the kernel's TSO6 super-packets arrive whole and fasttcp sends TSO6 back)."""
    data = os.urandom(size)
    with tun_netns(offload=offload, family="ipv6") as (ns, link):
        host = make_host(link)
        sock = sock_in(ns, V6, timeout=60)

        def client() -> str:
            sock.connect((US6, 7))

            def sender() -> None:
                view = memoryview(data)
                for off in range(0, size, 1 << 20):
                    sock.sendall(view[off:off + (1 << 20)])
                sock.shutdown(socket.SHUT_WR)

            tx = Background(sender)
            h = hashlib.sha256()
            n = recv_to_eof(sock, h, limit=size)
            tx.join(60)
            assert n == size, n
            return h.hexdigest()

        async def main() -> Tuple[str, Any]:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(servers.echo, 7)
                digest = await in_thread(client)
                peer = sock.getsockname()
                server.close()
                return digest, peer

        try:
            digest, kernel_end = run_async(main(), 120)
        except BaseException:
            print(stall_report(host, sock))
            raise
        finally:
            sock.close()
    assert digest == sha(data)
    assert kernel_end[0] == KERNEL6


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_fasttcp_client_downloads_from_kernel_over_ipv6(offload):
    """The kernel sends: fasttcp connects to a kernel server on [KERNEL6] and reads 64 MiB;
    the asyncio peername is the socket module's 4-tuple."""
    size = 64 << 20
    with tun_netns(offload=offload, family="ipv6") as (ns, link):
        host = make_host(link)
        ls = sock_in(ns, V6)
        ls.bind((KERNEL6, 9000))
        ls.listen(1)
        body = os.urandom(size)

        def kernel_server() -> Tuple[str, int]:
            c, addr = ls.accept()
            try:
                c.sendall(body)
            finally:
                c.close()
            return addr[0], addr[1]

        async def main():
            async with FastTcpStack(host, link) as stack:
                srv = asyncio.ensure_future(in_thread(kernel_server))
                reader, writer = await stack.open_connection(KERNEL6, 9000)
                peer = writer.get_extra_info("peername")
                sockname = writer.get_extra_info("sockname")
                h = hashlib.sha256()
                n = 0
                for _ in range(size):                       # bounded; ends at EOF
                    chunk = await reader.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                writer.close()
                return n, h.hexdigest(), peer, sockname, await srv

        try:
            n, digest, peer, sockname, kernel_saw = run_async(main(), 60)
        finally:
            ls.close()
    assert n == size and digest == sha(body)
    assert peer == (KERNEL6, 9000, 0, 0)
    assert sockname[0] == US6 and len(sockname) == 4
    assert kernel_saw == (US6, sockname[1])


def test_200_concurrent_kernel_connections_over_ipv6():
    n = 200
    with tun_netns(family="ipv6") as (ns, link):
        host = make_host(link, msl=0.05)
        socks = [sock_in(ns, V6, timeout=None) for _ in range(n)]
        for s in socks:
            s.setblocking(False)

        async def handler(reader, writer) -> None:
            line = await reader.readline()
            writer.write(b"resp " + line.split()[1] + b"\n")
            await writer.drain()
            writer.close()

        async def one(i: int, s: socket.socket) -> bytes:
            loop = asyncio.get_running_loop()
            await loop.sock_connect(s, (US6, 80))
            await loop.sock_sendall(s, b"req %d\n" % i)
            got = b""
            for _ in range(100):
                chunk = await loop.sock_recv(s, 4096)
                if not chunk:
                    s.close()
                    return got
                got += chunk
            raise AssertionError("no EOF")

        async def main():
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80, backlog=n)
                replies = await asyncio.gather(*(one(i, s) for i, s in enumerate(socks)))
                for _ in range(400):
                    if not host.connections():
                        break
                    await asyncio.sleep(0.01)
                server.close()
                await server.wait_closed()
                return replies, host.stats(), len(host.connections())

        try:
            replies, st, left = run_async(main(), 60)
        finally:
            for s in socks:
                s.close()
    assert replies == [b"resp %d\n" % i for i in range(n)]
    assert left == 0 and st["connections"] == 0, st
    assert st["passive_opens"] == n and st.get("rsts_out", 0) == 0, st


def test_half_close_over_ipv6():
    """The kernel shuts down its side; fasttcp reads to EOF and still replies."""
    with tun_netns(family="ipv6") as (ns, link):
        host = make_host(link)
        sock = sock_in(ns, V6)
        got: List[bytes] = []

        async def handler(reader, writer) -> None:
            data = await reader.read()
            got.append(data)
            writer.write(b"you sent %d bytes" % len(data))
            await writer.drain()
            writer.close()

        def client() -> bytes:
            sock.connect((US6, 80))
            return send_and_read_to_eof(sock, b"x" * 100_000, max_reads=1000)

        async def main() -> bytes:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80)
                reply = await in_thread(client)
                server.close()
                return reply

        try:
            reply = run_async(main(), 30)
        finally:
            sock.close()
    assert got == [b"x" * 100_000]
    assert reply == b"you sent 100000 bytes"


def test_reset_and_refused_over_ipv6():
    """A kernel abort (SO_LINGER 0) reaches the handler as ConnectionResetError; a SYN to
    a closed port is refused both ways (RST; RFC 9293 3.10.7.1)."""
    with tun_netns(family="ipv6") as (ns, link):
        host = make_host(link)
        sock = sock_in(ns, V6)
        other = sock_in(ns, V6)
        outcome: List[Any] = []

        async def handler(reader, writer) -> None:
            writer.write(b"hi")
            await writer.drain()
            try:
                for _ in range(100):
                    if not await reader.read(65536):
                        outcome.append("eof")
                        break
            except ConnectionResetError as e:
                outcome.append(e)
            writer.close()

        def client() -> Tuple[bytes, int]:
            sock.connect((US6, 80))
            hi = sock.recv(2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            try:
                other.connect((US6, 4444))               # nothing listens there
            except OSError as e:
                return hi, e.errno
            return hi, 0

        async def main():
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80)
                hi, err = await in_thread(client)
                for _ in range(500):
                    if outcome:
                        break
                    await asyncio.sleep(0.01)
                try:
                    await stack.open_connection(KERNEL6, 4445)
                except ConnectionRefusedError as e:
                    refused = e
                else:
                    refused = None
                server.close()
                return hi, err, refused

        try:
            hi, err, refused = run_async(main(), 30)
        finally:
            sock.close()
            other.close()
        st = host.stats()
    assert hi == b"hi"
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionResetError), outcome
    assert err == errno.ECONNREFUSED
    assert isinstance(refused, ConnectionRefusedError)
    assert st["connections"] == 0, st


def test_ping6_is_answered():
    with tun_netns(family="ipv6") as (ns, link):
        host = make_host(link)

        async def main() -> List[float]:
            async with FastTcpStack(host, link):
                return await in_thread(ping, ns, US6, 3)

        rtts = run_async(main(), 30)
        st = host.stats()
    assert len(rtts) == 3
    assert st.get("icmp_echo_replies", 0) == 3, st


def test_packet_too_big_from_a_real_router():
    """fasttcp uploads to a kernel server behind a router whose next link is 1280 bytes:
    the router's ICMPv6 Packet Too Big (RFC 4443 3.2) lowers fasttcp's path MTU (RFC
    8201) and the transfer is byte-exact, with no segment larger than the path."""
    size = 4 << 20
    body = os.urandom(size)
    with router_netns(offload=False) as net:
        # The server's end of the narrow veth stays 1500 wide, so its SYN-ACK offers an MSS
        # of 1440: only the router's 1280-byte hop is narrow, and only it can say so.
        from fasttcp.link import netns as netns_mod
        with netns_mod.iproute(net.server_ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="vs1")[0], mtu=1500)
        host = make_host(net.link)
        ls = sock_in(net.server_ns, V6)
        ls.bind((net.server, 9000))
        ls.listen(1)

        def kernel_sink() -> Tuple[int, str]:
            c, _ = ls.accept()
            c.settimeout(30)
            try:
                h = hashlib.sha256()
                return recv_to_eof(c, h, limit=size), h.hexdigest()
            finally:
                c.close()

        async def main():
            async with FastTcpStack(host, net.link) as stack:
                srv = asyncio.ensure_future(in_thread(kernel_sink))
                reader, writer = await stack.open_connection(net.server, 9000)
                conn = writer.get_extra_info("connection")
                writer.write(body)
                await writer.drain()
                writer.write_eof()
                n, digest = await srv
                mss = conn.info().mss if conn is not None else None
                writer.close()
                return n, digest, mss

        try:
            n, digest, mss = run_async(main(), 60)
        finally:
            ls.close()
        st = host.stats()
    assert n == size and digest == sha(body)
    assert st.get("pmtu_updates", 0) >= 1, " ".join(f"{k}={v}" for k, v in sorted(st.items()) if v)
    if mss is not None:
        assert mss <= 1280 - 60, mss                  # IPv6 + TCP headers (RFC 8201)


def test_dual_stack_host_serves_both_families_at_once():
    """One Host on both addresses: a kernel client of each family talks to the same echo
    listener at the same time."""
    with tun_netns(family="dual") as (ns, link):
        host = make_host(link)
        s4 = sock_in(ns, socket.AF_INET, timeout=20)
        s6 = sock_in(ns, V6, timeout=20)

        def client(sock: socket.socket, addr: Tuple[str, int], data: bytes) -> bytes:
            sock.connect(addr)
            return send_and_read_to_eof(sock, data)

        d4, d6 = os.urandom(1 << 20), os.urandom(1 << 20)

        async def main():
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(servers.echo, 7)
                r4, r6 = await asyncio.gather(in_thread(client, s4, (US, 7), d4),
                                              in_thread(client, s6, (US6, 7), d6))
                server.close()
                return r4, r6

        try:
            r4, r6 = run_async(main(), 60)
        finally:
            s4.close()
            s6.close()
    assert r4 == d4 and r6 == d6


def test_serve_echo_on_both_families_from_the_cli():
    """``fasttcp serve echo --address 10.77.0.2 --address fd77::2`` answers a kernel
    client of each family."""
    from netns_util import temp_netns, unique_ifname

    tun = unique_ifname("fts")
    with temp_netns() as ns:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fasttcp", "serve", "echo", "--netns", ns, "--tun", tun,
             "--address", US, "--address", US6, "--port", "7"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=CHILD_CWD, env=CHILD_ENV)
        try:
            answers = []
            for family, addr in ((socket.AF_INET, US), (V6, US6)):
                for _ in range(100):                       # the server comes up (bounded)
                    s = sock_in(ns, family, timeout=5)
                    try:
                        s.connect((addr, 7))
                        break
                    except OSError:
                        s.close()
                        if proc.poll() is not None:
                            raise AssertionError(proc.stderr.read().decode()) from None
                        time.sleep(0.1)
                else:
                    raise AssertionError(f"serve did not answer on {addr}")
                try:
                    assert s.getpeername()[0] == addr
                    s.sendall(b"hello " + addr.encode())
                    s.shutdown(socket.SHUT_WR)
                    answers.append(recv_to_eof(s, limit=1 << 10))
                finally:
                    s.close()
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
    assert answers == [len(b"hello " + US.encode()), len(b"hello " + US6.encode())]
    assert proc.returncode in (0, -15), err.decode()
    assert f"[{US6}]:7" in (out + err).decode(), (out + err).decode()


def test_fasttcp_demo_over_ipv6():
    r = subprocess.run([sys.executable, "-m", "fasttcp", "demo", "--ipv6", "--size", "8M"],
                       cwd=CHILD_CWD, env=CHILD_ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sha256 matches" in r.stdout, r.stdout
    assert "IPv6" in r.stdout and "TUN demo unavailable" not in r.stdout, r.stdout
