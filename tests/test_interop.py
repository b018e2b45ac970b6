"""fasttcp against the Linux kernel's TCP over a TUN device.

Each test makes its own network namespace with a TUN device in it (kernel 10.77.0.1/24,
fasttcp 10.77.0.2; ``interop_util.tun_netns``) and removes both afterwards, also on failure.
fasttcp runs on an asyncio loop in the test process; the kernel side is sockets created in
the namespace (used from threads), curl, or a subprocess that entered the namespace. The
oracle is the kernel itself: what one side sent must arrive at the other byte for byte
(SHA-256), and the kernel's errors (ECONNREFUSED, resets) must be the ones TCP prescribes.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import http.server
import json
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from typing import Any, List, Tuple

import pytest

from interop_util import (KERNEL, US, inet_checksum, make_host, recv_to_eof, run_async,
                          script_cmd, send_and_read_to_eof, sha256_file, stall_report,
                          tun_netns)
from netns_util import TUN_MARKS, Background, sock_in, temp_netns, unique_ifname, wait_until

from fasttcp.aio import FastTcpStack
from fasttcp.cli import servers
from fasttcp.cli.servers import HttpServer, generated_body
import fasttcp as _fasttcp

# Child processes import the same fasttcp as this one (the installed package in CI; the
# in-place build in a checkout) and start outside the source tree: `python -m` puts the
# working directory first on sys.path, where an unbuilt source tree would shadow it.
CHILD_CWD = "/"
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(_fasttcp.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

pytestmark = TUN_MARKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def in_thread(fn, *args) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ==========================================================================================
# Bulk transfers
# ==========================================================================================

@needs_curl
@pytest.mark.parametrize("offload,size", [(True, 64 << 20), (False, 16 << 20)],
                         ids=["offload-64MiB", "no-offload-16MiB"])
def test_curl_downloads_from_fasttcp_http(tmp_path, offload, size):
    out = tmp_path / "body"
    with tun_netns(offload=offload) as (ns, link):
        host = make_host(link)
        http = HttpServer(size=size)

        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(http, 80)
                proc = await asyncio.create_subprocess_exec(
                    *script_cmd(ns, "exec", "--", CURL, "-sS", "--max-time", "60", "-o",
                                str(out), "-w", "%{http_code} %{size_download}",
                                f"http://{US}/file"),
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
    assert n == size
    assert digest == sha(generated_body(size))
    assert http.requests == 1
    st = host.stats()
    assert st.get("drop_bad_tcp_checksum", 0) == 0
    if offload:
        assert link_stats["tx_gso_packets"] > 0             # TSO super-segments went out


def _kernel_client_echo(size: int, offload: bool, loss: float = 0.0, seed: int = 0,
                        timeout: float = 120) -> None:
    """A kernel client sends ``size`` random bytes through fasttcp's echo service while it
    reads them back; with ``loss``, the TUN link loses that share of the packets each way
    (a seeded FaultyLink)."""
    from fasttcp.link import FaultConfig, FaultyLink

    data = os.urandom(size)
    with tun_netns(offload=offload) as (ns, tun):
        host = make_host(tun)
        link = tun
        if loss:
            link = FaultyLink(FaultConfig(seed=seed, loss=loss), link=tun,
                              rx=FaultConfig(seed=seed + 1, loss=loss))
        sock = sock_in(ns, timeout=60)

        def client() -> str:
            sock.connect((US, 7))

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

        async def main() -> str:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(servers.echo, 7)
                try:
                    return await in_thread(client)
                except BaseException:
                    # Before the stack closes (and resets the connection): where it stood.
                    print(stall_report(host, sock))
                    raise
                finally:
                    server.close()

        try:
            digest = run_async(main(), timeout)
        finally:
            sock.close()
    assert digest == sha(data)


@pytest.mark.parametrize("offload,size", [(True, 64 << 20), (False, 16 << 20)],
                         ids=["offload-64MiB", "no-offload-16MiB"])
def test_kernel_client_echo(offload, size):
    """Random bytes both ways at once through fasttcp's echo service (with offloads the
    kernel's 64 KB TSO super-packets arrive whole and fasttcp sends TSO back)."""
    _kernel_client_echo(size, offload)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_client_echo_through_loss(seed):
    """The same with 3% of the packets lost each way (whole TSO super-packets): both
    buffers fill, fasttcp's receive window shuts while its own data waits for the kernel's
    ACKs. Those ACKs arrive at the window's right edge or on data into the shut window,
    and must be taken, or the two ends wait for each other (the hang this test caught)."""
    _kernel_client_echo(16 << 20, True, loss=0.03, seed=seed, timeout=90)


class _BodyHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


class _NsHttpServer(http.server.HTTPServer):
    """http.server on a listening socket created inside a namespace. server_bind is
    socketserver's: HTTPServer's would look the address up in DNS (getfqdn)."""

    def __init__(self, ns: str, addr, handler) -> None:
        super().__init__(addr, handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock_in(ns, timeout=None)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = addr
        self.server_activate()


def test_fasttcp_client_downloads_from_kernel_http_server():
    size = 32 << 20
    body = os.urandom(size)
    handler = type("H", (_BodyHandler,), {"body": body})
    with tun_netns() as (ns, link):
        host = make_host(link)
        srv = _NsHttpServer(ns, (KERNEL, 8080), handler)
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
        th.start()

        async def main() -> Tuple[int, str]:
            async with FastTcpStack(host, link) as stack:
                reader, writer = await stack.open_connection(KERNEL, 8080)
                writer.write(f"GET /x HTTP/1.1\r\nHost: {KERNEL}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                h = hashlib.sha256()
                n = 0
                for _ in range(size):                   # bounded; ends at EOF
                    chunk = await reader.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                writer.close()
                return n, h.hexdigest()

        try:
            n, digest = run_async(main(), 60)
        finally:
            srv.shutdown()
            srv.server_close()
            th.join(10)
    assert n == size
    assert digest == sha(body)


# ==========================================================================================
# Many connections
# ==========================================================================================

def test_200_concurrent_kernel_connections():
    n = 200
    with tun_netns() as (ns, link):
        host = make_host(link, msl=0.05)          # TIME-WAIT 0.1 s
        socks = [sock_in(ns, timeout=None) for _ in range(n)]
        for s in socks:
            s.setblocking(False)
        handled: List[int] = []

        async def handler(reader, writer) -> None:
            line = await reader.readline()
            handled.append(int(line.split()[1]))
            writer.write(b"resp " + line.split()[1] + b"\n")
            await writer.drain()
            writer.close()                       # fasttcp closes first: it holds TIME-WAIT

        async def one(i: int, s: socket.socket) -> bytes:
            loop = asyncio.get_running_loop()
            await loop.sock_connect(s, (US, 80))
            await loop.sock_sendall(s, b"req %d\n" % i)
            got = b""
            for _ in range(100):
                chunk = await loop.sock_recv(s, 4096)
                if not chunk:
                    s.close()                    # the kernel's FIN: fasttcp -> TIME-WAIT
                    return got
                got += chunk
            raise AssertionError("no EOF")

        async def main():
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80, backlog=n)
                replies = await asyncio.gather(*(one(i, s) for i, s in enumerate(socks)))
                for _ in range(400):              # TIME-WAIT ends: the table empties
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
    assert sorted(handled) == list(range(n))
    assert left == 0 and st["connections"] == 0 and st["time_wait"] == 0, st
    assert st["passive_opens"] == n, st
    assert st.get("state_established", 0) == n, st
    assert st.get("fins_out", 0) == n, st
    assert st.get("state_time_wait", 0) == n, st
    assert st.get("state_closed", 0) == n, st
    assert st.get("rsts_out", 0) == 0, st
    assert st.get("drop_listen_overflow", 0) == 0, st
    assert st["segments_in"] <= st["packets_in"], st


# ==========================================================================================
# Half-close, resets, refusals, ICMP
# ==========================================================================================

def test_kernel_half_close_fasttcp_still_replies():
    with tun_netns() as (ns, link):
        host = make_host(link)
        sock = sock_in(ns)
        got: List[bytes] = []

        async def handler(reader, writer) -> None:
            data = await reader.read()                      # to EOF (the kernel's FIN)
            got.append(data)
            writer.write(b"you sent %d bytes" % len(data))
            await writer.drain()
            writer.close()

        def client() -> bytes:
            sock.connect((US, 80))
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


def test_fasttcp_half_close_kernel_still_sends():
    with tun_netns() as (ns, link):
        host = make_host(link)
        ls = sock_in(ns)
        ls.bind((KERNEL, 9000))
        ls.listen(1)

        def kernel_server() -> bytes:
            c, _ = ls.accept()
            c.settimeout(10)
            try:
                data = bytearray()
                for _ in range(1000):                       # to fasttcp's FIN
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(b"after your EOF: " + bytes(data))
                return bytes(data)
            finally:
                c.close()

        async def main():
            async with FastTcpStack(host, link) as stack:
                srv = asyncio.ensure_future(in_thread(kernel_server))
                reader, writer = await stack.open_connection(KERNEL, 9000)
                writer.write(b"hello kernel")
                writer.write_eof()
                reply = await reader.read()
                writer.close()
                return await srv, reply

        try:
            seen, reply = run_async(main(), 30)
        finally:
            ls.close()
    assert seen == b"hello kernel"
    assert reply == b"after your EOF: hello kernel"


def test_orphaned_fin_wait_2_ends_when_the_kernel_never_closes():
    """fasttcp replies and closes; the kernel reads the EOF but keeps its socket open
    (CLOSE-WAIT forever). fasttcp's closed connection must not sit in FIN-WAIT-2 forever:
    like Linux's tcp_fin_timeout it goes after 2*MSL."""
    with tun_netns() as (ns, link):
        host = make_host(link, msl=0.05)
        sock = sock_in(ns)

        async def handler(reader, writer) -> None:
            writer.write(b"bye")
            await writer.drain()
            writer.close()

        def client() -> bytes:
            sock.connect((US, 80))
            return sock.recv(10) + sock.recv(10)          # b"bye", then EOF (b"")

        async def main():
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80)
                got = await in_thread(client)
                states = []
                for _ in range(300):                      # bounded: about 3 s
                    conns = host.connections()
                    if not conns:
                        break
                    states.append(conns[0].state.rfc_name)
                    await asyncio.sleep(0.01)
                server.close()
                return got, states, host.stats()

        try:
            got, states, st = run_async(main(), 30)
        finally:
            sock.close()                                  # only now does the kernel close
    assert got == b"bye"
    assert "FIN-WAIT-2" in states, states
    assert st["connections"] == 0 and st["time_wait"] == 0, st
    assert st.get("state_fin_wait_2", 0) == 1 and st.get("state_time_wait", 0) == 0, st


def test_kernel_reset_gives_connection_reset_error():
    with tun_netns() as (ns, link):
        host = make_host(link)
        sock = sock_in(ns)
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

        def client() -> bytes:
            sock.connect((US, 80))
            hi = sock.recv(2)
            # SO_LINGER with a zero timeout: close() sends RST (RFC 9293 3.6 abort).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return hi

        async def main() -> bytes:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(handler, 80)
                hi = await in_thread(client)
                for _ in range(500):
                    if outcome:
                        break
                    await asyncio.sleep(0.01)
                server.close()
                return hi

        try:
            hi = run_async(main(), 30)
        finally:
            sock.close()
        st = host.stats()
    assert hi == b"hi"
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionResetError), outcome
    assert st["connections"] == 0, st


def test_refused_both_ways():
    with tun_netns() as (ns, link):
        host = make_host(link)
        sock = sock_in(ns)

        def kernel_connect() -> int:
            try:
                sock.connect((US, 4444))                    # nothing listens there
            except OSError as e:
                return e.errno
            return 0

        async def main():
            async with FastTcpStack(host, link) as stack:
                await stack.start_server(servers.echo, 7)   # a listener, but not on 4444
                err = await in_thread(kernel_connect)
                try:
                    await stack.open_connection(KERNEL, 4445)
                except ConnectionRefusedError as e:
                    refused = e
                else:
                    refused = None
                return err, refused

        try:
            err, refused = run_async(main(), 30)
        finally:
            sock.close()
        st = host.stats()
    assert err == errno.ECONNREFUSED
    assert isinstance(refused, ConnectionRefusedError)
    assert st.get("rsts_out", 0) >= 1, st
    assert st["connections"] == 0, st


def test_ping_is_answered():
    with tun_netns() as (ns, link):
        host = make_host(link)
        raw = sock_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP, timeout=5)

        def ping(seq: int) -> bytes:
            payload = b"fasttcp ping %d " % seq + bytes(range(32))
            hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq)
            pkt = hdr[:2] + struct.pack("!H", inet_checksum(hdr + payload)) + hdr[4:]
            raw.sendto(pkt + payload, (US, 0))
            for _ in range(50):
                data, (src, _) = raw.recvfrom(65535)
                ihl = (data[0] & 15) * 4
                icmp = data[ihl:]
                if src != US or icmp[0] != 0:
                    continue
                assert inet_checksum(icmp) == 0, "bad ICMP checksum"
                typ, code, _c, ident, rseq = struct.unpack("!BBHHH", icmp[:8])
                assert (typ, code, ident, rseq) == (0, 0, 0x4242, seq)
                return icmp[8:]
            raise AssertionError("no echo reply")

        async def main():
            async with FastTcpStack(host, link):
                return [await in_thread(ping, i) for i in (1, 2, 3)]

        try:
            payloads = run_async(main(), 30)
        finally:
            raw.close()
        st = host.stats()
    assert payloads == [b"fasttcp ping %d " % i + bytes(range(32)) for i in (1, 2, 3)]
    assert st.get("icmp_echo_replies", 0) == 3, st


# ==========================================================================================
# The command line
# ==========================================================================================

def test_fasttcp_demo_command():
    r = subprocess.run([sys.executable, "-m", "fasttcp", "demo", "--size", "8M"],
                       cwd=CHILD_CWD, env=CHILD_ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sha256 matches" in r.stdout, r.stdout
    assert "TUN demo unavailable" not in r.stdout, r.stdout


@needs_curl
def test_serve_and_stats_while_curl_runs(tmp_path):
    size = 32 << 20
    ctl = str(tmp_path / "ctl.sock")
    out = str(tmp_path / "body")
    tun = unique_ifname("fts")
    with temp_netns() as ns:
        serve = subprocess.Popen(
            [sys.executable, "-m", "fasttcp", "serve", "http", "--netns", ns, "--tun", tun,
             "--size", str(size), "--duration", "60", "--control", ctl],
            cwd=CHILD_CWD, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        curl = None
        try:
            assert wait_until(lambda: os.path.exists(ctl) or serve.poll() is not None, 20)
            assert serve.poll() is None, serve.communicate()
            # 32 MiB at 8 MB/s: about four seconds in which to look at the connection (the
            # stats commands are processes of their own, slow to start on a busy machine).
            curl = subprocess.Popen(
                script_cmd(ns, "exec", "--", CURL, "-sS", "--max-time", "60",
                           "--limit-rate", "8M", "-o", out, f"http://{US}/f"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            seen: List[dict] = []

            def established() -> bool:
                r = subprocess.run([sys.executable, "-m", "fasttcp", "stats", "--control",
                                    ctl, "--json"], cwd=CHILD_CWD, env=CHILD_ENV,
                                   capture_output=True,
                                   text=True, timeout=20)
                assert r.returncode == 0, r.stderr
                data = json.loads(r.stdout)
                if any(c["state"] == "ESTABLISHED" and c["remote"].startswith(KERNEL + ":")
                       and c["bytes_acked"] > 0 for c in data["connections"]):
                    seen.append(data)
                    return True
                return False

            assert wait_until(established, 20, 0.1), "no established connection in stats"
            text = subprocess.run([sys.executable, "-m", "fasttcp", "stats", "--control", ctl],
                                  cwd=CHILD_CWD, env=CHILD_ENV, capture_output=True, text=True,
                                  timeout=20)
            assert text.returncode == 0 and "ESTABLISHED" in text.stdout, text.stdout
            _, err = curl.communicate(timeout=60)
            assert curl.returncode == 0, err
        finally:
            if curl is not None and curl.poll() is None:
                curl.kill()
                curl.wait(10)
            if serve.poll() is None:
                serve.terminate()                 # SIGTERM: a clean stop
            sout, serr = serve.communicate(timeout=30)
    assert serve.returncode == 0, serr
    assert "fasttcp serving http" in sout
    data = seen[0]
    assert data["address"] == US
    assert data["stats"]["passive_opens"] >= 1
    assert data["stats"]["packets_in"] > 0 and data["stats"]["packets_out"] > 0
    assert data["link"]["rx_packets"] > 0, data["link"]
    n, digest = sha256_file(out)
    assert n == size and digest == sha(generated_body(size))


# ==========================================================================================
# ECN (RFC 3168) with the kernel
# ==========================================================================================

TCPI_OPT_ECN = 8


def _kernel_ecn(sock: socket.socket) -> bool:
    """The kernel's TCP_INFO tcpi_options has TCPI_OPT_ECN: ECN was negotiated."""
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[5] & TCPI_OPT_ECN)


def _ns_ect0_in(ns: str) -> int:
    """IpExt InECT0Pkts of namespace ``ns`` (packets the kernel received marked ECT(0))."""
    from fasttcp.link.netns import entered
    with entered(ns), open("/proc/thread-self/net/netstat") as f:
        rows = [line.split() for line in f if line.startswith("IpExt:")]
    return int(rows[1][rows[0].index("InECT0Pkts")])


def test_ecn_with_the_kernel_both_ways():
    """net.ipv4.tcp_ecn=1 inside the test's namespace only: the kernel asks for ECN on its
    SYNs and accepts it on ours. A kernel client to fasttcp's echo service and a fasttcp
    client (ecn=1) to a kernel sink both negotiate it, the kernel receives ECT(0) data from
    us, and both transfers are byte-exact."""
    from fasttcp.link.netns import entered
    data = os.urandom(4 << 20)
    with open("/proc/sys/net/ipv4/tcp_ecn") as f:
        host_setting = f.read()
    with tun_netns() as (ns, link):
        with entered(ns):
            with open("/proc/sys/net/ipv4/tcp_ecn", "w") as f:
                f.write("1")
            with open("/proc/sys/net/ipv4/tcp_ecn") as f:
                assert f.read().strip() == "1"
        with open("/proc/sys/net/ipv4/tcp_ecn") as f:
            assert f.read() == host_setting          # the host's own setting is untouched
        host = make_host(link, ecn=1)
        client = sock_in(ns, timeout=60)
        listener = sock_in(ns, timeout=60)
        listener.bind((KERNEL, 9000))
        listener.listen(1)
        ect0_before = _ns_ect0_in(ns)

        def kernel_client() -> Tuple[str, bool]:
            client.connect((US, 7))
            tx = Background(lambda: (client.sendall(data), client.shutdown(socket.SHUT_WR)))
            h = hashlib.sha256()
            n = recv_to_eof(client, h, limit=len(data))
            tx.join(60)
            assert n == len(data), n
            return h.hexdigest(), _kernel_ecn(client)

        def kernel_sink() -> Tuple[str, bool]:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(60)
                h = hashlib.sha256()
                n = recv_to_eof(conn, h, limit=len(data))
                ecn = _kernel_ecn(conn)
                conn.sendall(str(n).encode())
            return h.hexdigest(), ecn

        async def main() -> Any:
            async with FastTcpStack(host, link) as stack:
                server = await stack.start_server(servers.echo, 7)
                echo = await in_thread(kernel_client)
                server.close()
                sink = asyncio.ensure_future(in_thread(kernel_sink))
                reader, writer = await stack.open_connection(KERNEL, 9000)
                writer.write(data)
                await writer.drain()
                writer.write_eof()
                reply = await reader.read(100)
                writer.close()
                return echo, await sink, reply

        try:
            echo, sink, reply = run_async(main(), 120)
            ect0 = _ns_ect0_in(ns) - ect0_before
        finally:
            client.close()
            listener.close()
    assert echo == (sha(data), True)                 # kernel -> fasttcp: ECN, byte-exact
    assert sink == (sha(data), True) and reply == str(len(data)).encode()
    assert host.stats()["ecn_negotiated"] == 2       # both connections
    # Our data went out ECT(0) (some 2 x 4 MiB in segments or TSO super-segments).
    assert ect0 >= 2 * len(data) // 65536
