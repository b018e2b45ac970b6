"""fasttcp as a drop-in asyncio transport for real libraries, against the Linux kernel over
a TUN device: HTTPS clients (aiohttp, httpx) to a kernel TLS server, aiohttp servers
(HTTP and HTTPS, ``web.FileResponse`` through ``loop.sendfile``) and ``serve http --root``
fetched by curl.

Each test makes its own namespace with a TUN device in it (``interop_util.tun_netns``:
kernel 10.77.0.1/24, fasttcp 10.77.0.2) and removes both afterwards. Certificates come
from a CA made in the test (trustme). Bodies are checked byte for byte (SHA-256).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
from typing import Any, List, Optional, Tuple

import pytest
import trustme

from interop_util import KERNEL, US, make_host, run_async, script_cmd, sha256_file, tun_netns
from netns_util import TUN_MARKS, Background, sock_in

from fasttcp.aio import FastTcpStack, TcpTransport
from fasttcp.cli.servers import HttpServer

pytestmark = TUN_MARKS

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
MiB = 1 << 20
KERNEL_NAME = "kernel.test"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Tuple[str, bytes]:
    data = os.urandom(8 * MiB + 4321)
    path = tmp_path_factory.mktemp("www") / "blob.bin"
    path.write_bytes(data)
    return str(path), data


def run_loop(coro: Any, loop_kind: str, timeout: float = 60.0) -> Any:
    if loop_kind == "asyncio":
        return run_async(coro, timeout)
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


# ==========================================================================================
# Clients to a kernel TLS server
# ==========================================================================================

class KernelTlsServer:
    """An HTTPS/1.1 server on the kernel side (a thread with a socket in the namespace):
    answers ``count`` connections with ``body``; records the SNI names it was sent."""

    def __init__(self, ns: str, ctx: ssl.SSLContext, body: bytes, count: int) -> None:
        self.sni: List[Optional[str]] = []
        ctx.sni_callback = lambda obj, name, _ctx: self.sni.append(name)
        self.sock = sock_in(ns, timeout=30)
        self.sock.bind((KERNEL, 8443))
        self.sock.listen(8)

        def serve() -> int:
            for _ in range(count):
                conn, _ = self.sock.accept()
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                b"Connection: close\r\n\r\n" % len(body))
                    tls.sendall(body)
                    try:
                        tls.unwrap()               # close_notify, then the TCP close
                    except (ConnectionResetError, BrokenPipeError):
                        # The client closed first (Connection: close): our close_notify
                        # then reaches a closed socket, which answers with RST, as
                        # Linux does (TCPAbortOnData). The body was delivered already.
                        pass
            return count

        self.thread = Background(serve)

    def join(self) -> None:
        try:
            self.thread.join(30)
        finally:
            self.sock.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_aiohttp_client_https_to_kernel(ca, loop_kind):
    """aiohttp's ClientSession over fasttcp (a connector whose connections are
    stack.create_connection(ssl=, server_hostname=)): 2 MiB over HTTPS from the kernel,
    certificate checked, on asyncio's loop and on uvloop."""
    aiohttp = pytest.importorskip("aiohttp")
    body = os.urandom(2 * MiB)

    class FastTcpConnector(aiohttp.TCPConnector):
        def __init__(self, stack: FastTcpStack, **kw: Any) -> None:
            super().__init__(**kw)
            self.stack = stack

        async def _wrap_create_connection(self, factory: Any, *, addr_infos: Any,
                                          **kw: Any) -> Tuple[Any, Any]:
            ip, port = addr_infos[0][4][:2]
            return await self.stack.create_connection(
                factory, ip, port, ssl=kw["ssl"], server_hostname=kw["server_hostname"])

    with tun_netns() as (ns, link):
        srv = KernelTlsServer(ns, server_context(ca, KERNEL), body, 1)
        try:
            async def main() -> Tuple[int, bytes]:
                async with FastTcpStack(make_host(link), link) as stack:
                    connector = FastTcpConnector(stack)
                    async with aiohttp.ClientSession(connector=connector) as session:
                        async with session.get(f"https://{KERNEL}:8443/blob",
                                               ssl=client_context(ca)) as resp:
                            return resp.status, await resp.read()

            status, got = run_loop(main(), loop_kind)
        finally:
            srv.join()
    assert status == 200
    assert sha(got) == sha(body)
    assert srv.sni == [None]              # an IP address: no SNI, as with kernel sockets


class FastTcpHttpcoreBackend:
    """httpcore's network backend on a FastTcpStack: TCP by stack.open_connection (names
    through the stack's resolver); TLS by StreamWriter.start_tls (asyncio's
    loop.start_tls on the TcpTransport) or by stack.start_tls_stream (any loop)."""

    def __init__(self, stack: FastTcpStack, stack_tls: bool) -> None:
        self.stack = stack
        self.stack_tls = stack_tls

    async def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                          local_address: Optional[str] = None,
                          socket_options: Any = None) -> "FastTcpHttpcoreStream":
        reader, writer = await asyncio.wait_for(self.stack.open_connection(host, port),
                                                timeout)
        return FastTcpHttpcoreStream(reader, writer, self.stack if self.stack_tls else None)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FastTcpHttpcoreStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 stack: Optional[FastTcpStack]) -> None:
        self.reader, self.writer, self.stack = reader, writer, stack

    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        return await asyncio.wait_for(self.reader.read(max_bytes), timeout)

    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self.writer.write(buffer)
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def aclose(self) -> None:
        self.writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: Optional[str] = None,
                        timeout: Optional[float] = None) -> "FastTcpHttpcoreStream":
        if self.stack is not None:
            await self.stack.start_tls_stream(self.writer, ssl_context,
                                              server_hostname=server_hostname,
                                              ssl_handshake_timeout=timeout)
        else:
            await self.writer.start_tls(ssl_context, server_hostname=server_hostname,
                                        ssl_handshake_timeout=timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self.reader.at_eof()
        return self.writer.get_extra_info(info)


@pytest.mark.parametrize("loop_kind,tls", [("asyncio", "loop.start_tls"),
                                          ("asyncio", "stack.start_tls_stream"),
                                          ("uvloop", "stack.start_tls_stream")])
def test_httpx_client_https_to_kernel_by_name(ca, loop_kind, tls):
    """httpx over fasttcp: https://kernel.test (the stack's resolver maps the name), TLS
    by asyncio's loop.start_tls on the TcpTransport or by the stack's (also on uvloop);
    the kernel server got the name as SNI and the certificate was checked against it. Two
    requests, two connections; an unknown name raises the resolver's gaierror."""
    if tls == "loop.start_tls" and sys.version_info < (3, 11):
        pytest.skip("StreamWriter.start_tls is 3.11+")
    httpx = pytest.importorskip("httpx")
    httpcore = pytest.importorskip("httpcore")
    body = os.urandom(3 * MiB)

    async def resolver(host: str, port: int, **kw: Any) -> List[Tuple[Any, ...]]:
        if host != KERNEL_NAME:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (KERNEL, port))]

    with tun_netns() as (ns, link):
        srv = KernelTlsServer(ns, server_context(ca, KERNEL_NAME), body, 2)
        try:
            async def main() -> List[Tuple[int, bytes]]:
                out = []
                async with FastTcpStack(make_host(link), link, resolver=resolver) as stack:
                    cctx = client_context(ca)
                    transport = httpx.AsyncHTTPTransport(verify=cctx)
                    transport._pool = httpcore.AsyncConnectionPool(
                        ssl_context=cctx,
                        network_backend=FastTcpHttpcoreBackend(stack, tls != "loop.start_tls"))
                    async with httpx.AsyncClient(transport=transport) as client:
                        for _ in range(2):
                            r = await client.get(f"https://{KERNEL_NAME}:8443/blob")
                            out.append((r.status_code, r.content))
                        with pytest.raises(socket.gaierror):      # from the resolver
                            await client.get("https://missing.test:8443/")
                return out

            results = run_loop(main(), loop_kind)
        finally:
            srv.join()
    assert [s for s, _ in results] == [200, 200]
    assert all(sha(b) == sha(body) for _, b in results)
    assert srv.sni == [KERNEL_NAME, KERNEL_NAME]


# ==========================================================================================
# Servers on fasttcp, fetched by curl
# ==========================================================================================

async def curl(ns: str, *args: str) -> subprocess.CompletedProcess:
    proc = await asyncio.create_subprocess_exec(
        *script_cmd(ns, "exec", "--", CURL or "curl", "-sS", "--max-time", "60",
                    "-w", "%{http_code} %{size_download}\\n", *args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await proc.communicate()
    return subprocess.CompletedProcess([], proc.returncode, stdout, stderr)


async def aiohttp_site(stack: FastTcpStack, path: str, port: int,
                       ssl_ctx: Optional[ssl.SSLContext] = None) -> Tuple[Any, Any]:
    """An aiohttp app with ``/blob`` (web.FileResponse) and ``/hello`` on ``port`` of the
    stack: its request handler factory is an ordinary protocol factory."""
    from aiohttp import web

    async def hello(request: Any) -> Any:
        return web.Response(text=f"hello over {request.scheme}")

    async def blob(request: Any) -> Any:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/blob", blob)
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    server = await stack.create_server(runner.server, port, ssl=ssl_ctx)
    return runner, server


def count_sendfile_calls(calls: List[type]) -> None:
    """Record the transport type of each loop.sendfile() call (aiohttp's FileResponse
    makes one per file)."""
    loop = asyncio.get_running_loop()
    original = loop.sendfile

    async def sendfile(transport: Any, *args: Any, **kwargs: Any) -> int:
        calls.append(type(transport))
        return await original(transport, *args, **kwargs)

    loop.sendfile = sendfile                         # type: ignore[method-assign]


@needs_curl
def test_aiohttp_file_response_by_loop_sendfile(blob, tmp_path):
    """aiohttp's web.FileResponse on a fasttcp TcpTransport: loop.sendfile takes it (no
    'sendfile is not supported'), curl gets all 8 MiB byte for byte."""
    pytest.importorskip("aiohttp")
    path, data = blob
    out = tmp_path / "out"
    calls: List[type] = []
    with tun_netns() as (ns, link):
        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(make_host(link), link) as stack:
                count_sendfile_calls(calls)
                runner, server = await aiohttp_site(stack, path, 8080)
                r = await curl(ns, "-o", str(out), f"http://{US}:8080/blob")
                server.close()
                await runner.cleanup()
                return r

        r = run_async(main(), 90)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["200", str(len(data))]
    assert sha256_file(str(out)) == (len(data), sha(data))
    assert calls == [TcpTransport]


@needs_curl
def test_aiohttp_https_server_on_fasttcp(ca, blob, tmp_path):
    """An aiohttp HTTPS server on fasttcp (create_server(ssl=)): curl, trusting the test
    CA, fetches a page and an 8 MiB FileResponse (loop.sendfile on the TLS transport) over
    one kept-alive connection, byte for byte."""
    pytest.importorskip("aiohttp")
    path, data = blob
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    out_hello, out_blob = tmp_path / "hello", tmp_path / "blob"
    calls: List[type] = []
    with tun_netns() as (ns, link):
        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(make_host(link), link) as stack:
                count_sendfile_calls(calls)
                runner, server = await aiohttp_site(stack, path, 443,
                                                    server_context(ca, US))
                r = await curl(ns, "--cacert", str(ca_pem),
                               "-o", str(out_hello), f"https://{US}/hello",
                               "-o", str(out_blob), f"https://{US}/blob")
                server.close()
                await runner.cleanup()
                return r

        r = run_async(main(), 90)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["200", "16", "200", str(len(data))]
    assert out_hello.read_text() == "hello over https"
    assert [c.__name__ for c in calls] == ["_SSLProtocolTransport"]
    assert sha256_file(str(out_blob)) == (len(data), sha(data))


@needs_curl
def test_serve_http_root_sends_files_by_sendfile(blob, tmp_path, monkeypatch):
    """``serve http --root``'s handler sends files with the stack's sendfile: an 8 MiB
    file and a small one, one kept-alive connection, byte for byte."""
    path, data = blob
    root = os.path.dirname(path)
    small = os.path.join(root, "small.txt")
    with open(small, "wb") as f:
        f.write(b"small file\n")
    sent: List[int] = []
    original = FastTcpStack.sendfile

    async def counting(self: FastTcpStack, *args: Any, **kwargs: Any) -> int:
        n = await original(self, *args, **kwargs)
        sent.append(n)
        return n

    monkeypatch.setattr(FastTcpStack, "sendfile", counting)
    out_big, out_small = tmp_path / "big", tmp_path / "small"
    http = HttpServer(root=root)
    with tun_netns() as (ns, link):
        async def main() -> subprocess.CompletedProcess:
            async with FastTcpStack(make_host(link), link) as stack:
                server = await stack.start_server(http, 80)
                r = await curl(ns, "-o", str(out_big), f"http://{US}/blob.bin",
                               "-o", str(out_small), f"http://{US}/small.txt")
                server.close()
                return r

        r = run_async(main(), 90)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["200", str(len(data)), "200", "11"]
    assert sha256_file(str(out_big)) == (len(data), sha(data))
    assert out_small.read_bytes() == b"small file\n"
    assert sent == [len(data), 11]
    assert http.requests == 2
