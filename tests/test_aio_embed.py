"""fasttcp.aio as a drop-in asyncio transport: TLS (``ssl=``, ``start_tls``), sendfile and
host names, on asyncio's default loop and on uvloop.

Two fasttcp hosts in one process joined by an in-process packet pipe; certificates come
from a CA made in the test (trustme). Every wait is bounded by ``asyncio.wait_for``.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import sys
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest
import trustme

import fasttcp
import fasttcp.aio
from fasttcp.aio import FastTcpStack, QueuePacketIO, TcpTransport

A, B = "10.0.0.1", "10.0.0.2"
MiB = 1 << 20
TEST_TIMEOUT = 30.0
NAME = "server.test"

LOOPS = ["asyncio", "uvloop"]


def run(coro_fn: Callable[[], Awaitable[Any]], loop_kind: str = "asyncio",
        timeout: float = TEST_TIMEOUT) -> Any:
    """Run on asyncio's default loop or on uvloop, bounded in time."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)
    if loop_kind == "asyncio":
        return asyncio.run(bounded())
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(bounded())
    finally:
        loop.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def contexts(ca: trustme.CA) -> Tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for NAME and A, client context trusting the CA)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(NAME, A).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def stacks(**kwargs: Any) -> Tuple[FastTcpStack, FastTcpStack]:
    """Server stack on A, client stack on B (``kwargs`` for the client's)."""
    wa, wb = QueuePacketIO.pair()
    sa = FastTcpStack(fasttcp.Host(A), wa)
    sb = FastTcpStack(fasttcp.Host(B), wb, **kwargs)
    sa.start()
    sb.start()
    return sa, sb


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class Recorder(asyncio.Protocol):
    """Records what a protocol is told."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.data = bytearray()
        self.events: List[str] = []
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport                    # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> Optional[bool]:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


# ==========================================================================================
# TLS
# ==========================================================================================

@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_streams_echo_random_bytes(contexts, loop_kind):
    """start_server(ssl=) and open_connection(ssl=, server_hostname=): 1 MiB each way
    arrives intact, the certificate was checked against the name, TLS 1.3 was spoken."""
    sctx, cctx = contexts
    data = os.urandom(MiB)

    async def main() -> Tuple[str, Any, Any]:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 443, ssl=sctx)
        reader, writer = await sb.open_connection(A, 443, ssl=cctx, server_hostname=NAME)
        sender = asyncio.ensure_future(_write_all(writer, data))
        got = await reader.readexactly(len(data))
        await sender
        peercert = writer.get_extra_info("peercert")
        version = writer.get_extra_info("ssl_object").version()
        assert writer.get_extra_info("peername") == (A, 443)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
        return sha(got), peercert, version

    digest, peercert, version = run(main, loop_kind)
    assert digest == sha(data)
    assert ("DNS", NAME) in peercert["subjectAltName"]
    assert version == "TLSv1.3"


async def _write_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    view = memoryview(data)
    for off in range(0, len(data), 64 << 10):
        writer.write(view[off:off + (64 << 10)])
        await writer.drain()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_protocols_and_close_notify(contexts, loop_kind):
    """create_server(ssl=) / create_connection(ssl=) with plain Protocols: the server's
    protocol is made only after the handshake; the client's close() sends close_notify,
    which the server's protocol sees as eof_received before connection_lost(None)."""
    sctx, cctx = contexts

    async def main() -> Tuple[List[str], bytes, Any, bool, bool]:
        sa, sb = await stacks()
        accepted: List[Recorder] = []

        def factory() -> Recorder:
            accepted.append(Recorder())
            return accepted[-1]

        server = await sa.create_server(factory, 443, ssl=sctx)
        transport, client = await sb.create_connection(Recorder, A, 443, ssl=cctx,
                                                       server_hostname=NAME)
        assert client.events == ["made"] and client.transport is transport
        assert not isinstance(transport, TcpTransport)     # the TLS transport over one
        transport.write(b"hello over TLS")
        for _ in range(200):
            if accepted and bytes(accepted[0].data) == b"hello over TLS":
                break
            await asyncio.sleep(0.005)
        can_eof = transport.can_write_eof()
        try:
            transport.write_eof()
            raised = False
        except NotImplementedError:
            raised = True
        transport.close()
        exc = await accepted[0].lost
        await client.lost
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
        return accepted[0].events, bytes(accepted[0].data), exc, can_eof, raised

    events, data, exc, can_eof, raised = run(main, loop_kind)
    assert data == b"hello over TLS"
    assert events == ["made", "eof", "lost"]
    assert exc is None
    assert can_eof is False and raised           # no half-close over TLS, as in asyncio


def test_tls_server_hostname_defaults_to_host_and_is_checked(contexts):
    """Without server_hostname the host argument is the name checked; a certificate that
    does not name it fails the handshake with SSLCertVerificationError."""
    sctx, cctx = contexts

    async def main() -> Tuple[Any, Any]:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 443, ssl=sctx)
        _, w = await sb.open_connection(A, 443, ssl=cctx)          # the cert names A too
        ok = w.get_extra_info("ssl_object").server_hostname
        w.close()
        await w.wait_closed()
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            await sb.open_connection(A, 443, ssl=cctx, server_hostname="other.test")
        server.close()
        sa.close()
        sb.close()
        return ok, err.value

    ok, err = run(main)
    assert ok == A
    assert "other.test" in str(err)


def test_tls_untrusted_certificate_is_refused(contexts):
    """ssl=True uses the default trust store: a certificate from the test CA fails."""
    sctx, _ = contexts

    async def main() -> None:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 443, ssl=sctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            await sb.open_connection(A, 443, ssl=True, server_hostname=NAME)
        server.close()
        sa.close()
        sb.close()

    run(main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_handshake_timeout_aborts(contexts, loop_kind):
    """A peer that never answers the ClientHello: ConnectionAbortedError after
    ssl_handshake_timeout (asyncio's behaviour), and the TCP connection is closed."""
    _, cctx = contexts

    async def main() -> Tuple[float, List[Any]]:
        sa, sb = await stacks()
        silent: List[asyncio.StreamWriter] = []

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)
            await reader.read()                  # reads the ClientHello, answers nothing

        server = await sa.start_server(mute, 443)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ConnectionAbortedError):
            await sb.open_connection(A, 443, ssl=cctx, server_hostname=NAME,
                                     ssl_handshake_timeout=0.3)
        elapsed = loop.time() - t0
        for _ in range(200):
            if not list(sb.host.connections()):
                break
            await asyncio.sleep(0.01)
        left = list(sb.host.connections())
        server.close()
        sa.close()
        sb.close()
        return elapsed, [c for c in left if c.state.synchronized and
                         c.state.name in ("ESTABLISHED", "CLOSE_WAIT")]

    elapsed, open_left = run(main, loop_kind)
    assert 0.3 - 0.002 <= elapsed < 5           # uvloop's timers round to milliseconds
    assert open_left == []


def test_ssl_argument_checks(contexts):
    """asyncio's argument checks: TLS options without ssl, a non-context server ssl."""
    sctx, _ = contexts

    async def main() -> None:
        sa, sb = await stacks()
        with pytest.raises(ValueError, match="server_hostname"):
            await sb.create_connection(asyncio.Protocol, A, 443, server_hostname=NAME)
        with pytest.raises(ValueError, match="ssl_handshake_timeout"):
            await sb.open_connection(A, 443, ssl_handshake_timeout=1.0)
        with pytest.raises(TypeError, match="SSLContext"):
            await sa.create_server(asyncio.Protocol, 443, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout"):
            await sa.start_server(echo, 443, ssl_handshake_timeout=1.0)
        with pytest.raises(ValueError, match="positive"):
            await sb.open_connection(A, 443, ssl=sctx, ssl_handshake_timeout=0)
        sa.close()
        sb.close()

    run(main)


class LineUpgrade(asyncio.Protocol):
    """A plain-text line, then TLS through ``upgrade(transport, protocol)``: the
    STARTTLS pattern (SMTP, IMAP, proxies)."""

    def __init__(self, upgrade: Callable[..., Awaitable[asyncio.Transport]]) -> None:
        self.upgrade = upgrade
        self.upgraded: asyncio.Future = asyncio.get_running_loop().create_future()
        self.data = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\n" in self.data and not self.upgraded.done():
            self.data.clear()
            task = asyncio.ensure_future(self.upgrade(self.transport, self))
            task.add_done_callback(lambda t: self.upgraded.set_result(t.result()))


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stack_start_tls_upgrades_both_sides(contexts, loop_kind):
    """FastTcpStack.start_tls on both ends after a plain STARTTLS line; then data flows
    encrypted both ways. Works on uvloop, whose own loop.start_tls refuses the transport."""
    sctx, cctx = contexts

    async def main() -> Tuple[bytes, str]:
        sa, sb = await stacks()

        async def server_upgrade(t: asyncio.Transport, p: asyncio.BaseProtocol
                                 ) -> asyncio.Transport:
            return await sa.start_tls(t, p, sctx, server_side=True)

        srv_proto: List[LineUpgrade] = []
        server = await sa.create_server(
            lambda: srv_proto.append(LineUpgrade(server_upgrade)) or srv_proto[-1], 25)
        transport, client = await sb.create_connection(Recorder, A, 25)
        transport.write(b"STARTTLS\n")
        tls = await sb.start_tls(transport, client, cctx, server_hostname=NAME)
        server_tls = await asyncio.wait_for(srv_proto[0].upgraded, 10)
        tls.write(b"ping")
        while bytes(srv_proto[0].data) != b"ping":
            await asyncio.sleep(0.005)
        server_tls.write(b"pong")
        while bytes(client.data) != b"pong":
            await asyncio.sleep(0.005)
        version = tls.get_extra_info("ssl_object").version()
        tls.close()
        await client.lost
        server.close()
        sa.close()
        sb.close()
        return bytes(client.data), version

    data, version = run(main, loop_kind)
    assert data == b"pong"
    assert version.startswith("TLS")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is 3.11+")
def test_loop_start_tls_on_default_loop(contexts):
    """asyncio's own loop.start_tls (here through StreamWriter.start_tls on both sides)
    accepts a TcpTransport: the STARTTLS line, then TLS."""
    sctx, cctx = contexts

    async def main() -> bytes:
        sa, sb = await stacks()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            await writer.start_tls(sctx)
            writer.write(b"secret: " + await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await sa.start_server(handler, 25)
        reader, writer = await sb.open_connection(A, 25)
        writer.write(b"STARTTLS\n")
        await writer.start_tls(cctx, server_hostname=NAME)
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"ping")
        got = await reader.read()
        writer.close()
        server.close()
        sa.close()
        sb.close()
        return got

    assert run(main) == b"secret: ping"


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stack_start_tls_stream_upgrades_streams(contexts, loop_kind):
    """stack.start_tls_stream: StreamWriter.start_tls for fasttcp streams on any loop;
    the reader and writer on both sides go on over TLS (and half-close is gone)."""
    sctx, cctx = contexts

    async def main() -> Tuple[bytes, bool, bool]:
        sa, sb = await stacks()
        seen: List[bool] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            await sa.start_tls_stream(writer, sctx)
            seen.append(writer.get_extra_info("ssl_object").server_side)
            writer.write(b"secret: " + await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await sa.start_server(handler, 25)
        reader, writer = await sb.open_connection(A, 25)
        writer.write(b"STARTTLS\n")
        await sb.start_tls_stream(writer, cctx, server_hostname=NAME)
        client_side = not writer.get_extra_info("ssl_object").server_side
        writer.write(b"ping")
        got = await reader.read()
        can_eof = writer.can_write_eof()
        writer.close()
        server.close()
        sa.close()
        sb.close()
        return got, seen == [True] and client_side, can_eof

    got, sides_ok, can_eof = run(main, loop_kind)
    assert got == b"secret: ping"
    assert sides_ok
    assert can_eof is False


def test_uvloop_start_tls_refuses_foreign_transports():
    """Why FastTcpStack.start_tls exists: uvloop's loop.start_tls checks for its own
    transport classes, so no foreign transport can pass it."""
    async def main() -> None:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 7)
        transport, proto = await sb.create_connection(Recorder, A, 7)
        with pytest.raises(TypeError, match="not supported by start_tls"):
            await asyncio.get_running_loop().start_tls(transport, proto,
                                                       ssl.create_default_context())
        transport.close()
        server.close()
        sa.close()
        sb.close()

    run(main, "uvloop")


# ==========================================================================================
# sendfile
# ==========================================================================================

@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Tuple[str, bytes]:
    data = os.urandom(3 * MiB + 12345)
    path = tmp_path_factory.mktemp("sendfile") / "blob"
    path.write_bytes(data)
    return str(path), data


async def _receive(stack: FastTcpStack, port: int) -> Tuple[Any, asyncio.Future]:
    """A server that reads one connection to EOF; the future gets the bytes."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.read())
        writer.close()

    return await stack.start_server(sink, port), got


@pytest.mark.parametrize("how", ["loop.sendfile", "stack.sendfile"])
def test_sendfile_plain(blob, how):
    """loop.sendfile (asyncio's fallback, allowed by _sendfile_compatible) and
    stack.sendfile (straight into the send buffer): a whole file, then a slice of it
    (offset and count), byte-exact, with the file position after what was sent."""
    path, data = blob

    async def main() -> Tuple[bytes, List[int], List[int]]:
        sa, sb = await stacks()
        server, got = await _receive(sa, 80)
        _, writer = await sb.open_connection(A, 80)
        send = (asyncio.get_running_loop().sendfile if how == "loop.sendfile"
                else sb.sendfile)
        writer.write(b"head:")
        counts, positions = [], []
        with open(path, "rb") as f:
            counts.append(await send(writer.transport, f))
            positions.append(f.tell())
            counts.append(await send(writer.transport, f, 1000, MiB + 7))
            positions.append(f.tell())
        writer.write(b":tail")
        writer.write_eof()
        body = await got
        writer.close()
        server.close()
        sa.close()
        sb.close()
        return body, counts, positions

    body, counts, positions = run(main)
    assert counts == [len(data), MiB + 7]
    assert positions == [len(data), 1000 + MiB + 7]
    assert sha(body) == sha(b"head:" + data + data[1000:1000 + MiB + 7] + b":tail")


def test_stack_sendfile_waits_for_the_peer(blob):
    """Flow control: while the receiver does not read, sendfile blocks once the send
    buffer and the peer's window are full, with nothing queued in the transport (the file
    is not read ahead into memory); the whole file arrives once the peer reads."""
    path, data = blob

    async def main() -> Tuple[bool, int, int, bytes]:
        sa, sb = await stacks()
        readers: List[asyncio.StreamReader] = []
        writers: List[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.pause_reading()
            readers.append(reader)
            writers.append(writer)

        server = await sa.start_server(hold, 80)
        _, writer = await sb.open_connection(A, 80)
        with open(path, "rb") as f:
            task = asyncio.ensure_future(sb.sendfile(writer.transport, f))
            await asyncio.sleep(0.5)
            blocked = not task.done()
            queued = writer.transport.get_write_buffer_size()
            conn = writer.get_extra_info("fasttcp_connection")
            in_engine = conn.unsent + conn.in_flight
            writers[0].transport.resume_reading()
            reading = asyncio.ensure_future(readers[0].read())
            sent = await task
        writer.write_eof()
        body = await reading
        assert sent == len(data)
        writer.close()
        writers[0].close()
        server.close()
        sa.close()
        sb.close()
        return blocked, queued, in_engine, body

    blocked, queued, in_engine, body = run(main)
    assert blocked
    assert queued == 0
    assert in_engine < len(data)
    assert sha(body) == sha(data)


def test_stack_sendfile_raises_when_the_peer_resets(blob):
    """A peer that resets while sendfile waits for room: sendfile raises the connection's
    ConnectionResetError, the file position is after what went into the send buffer."""
    path, data = blob

    async def main() -> Tuple[int, int]:
        sa, sb = await stacks()
        writers: List[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.pause_reading()
            writers.append(writer)

        server = await sa.start_server(hold, 80)
        _, writer = await sb.open_connection(A, 80)
        with open(path, "rb") as f:
            task = asyncio.ensure_future(sb.sendfile(writer.transport, f))
            await asyncio.sleep(0.3)
            assert not task.done()
            writers[0].transport.abort()
            with pytest.raises(ConnectionResetError):
                await task
            pos = f.tell()
        server.close()
        sa.close()
        sb.close()
        return pos, len(data)

    pos, size = run(main)
    assert 0 < pos < size


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stack_sendfile_over_tls(contexts, blob, loop_kind):
    """stack.sendfile on the TLS transport (chunks through write() with drain, on any
    loop): byte-exact at the other end."""
    sctx, cctx = contexts
    path, data = blob

    async def main() -> Tuple[bytes, int]:
        sa, sb = await stacks()
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.readexactly(len(data)))
            writer.close()

        server = await sa.start_server(sink, 443, ssl=sctx)
        _, writer = await sb.open_connection(A, 443, ssl=cctx, server_hostname=NAME)
        with open(path, "rb") as f:
            sent = await sb.sendfile(writer.transport, f)
        writer.write(b"")
        await writer.drain()                      # the stream protocol still works
        body = await got
        writer.close()
        server.close()
        sa.close()
        sb.close()
        return body, sent

    body, sent = run(main, loop_kind)
    assert sent == len(data)
    assert sha(body) == sha(data)


def test_sendfile_argument_checks(blob, tmp_path):
    """loop.sendfile's checks: a text-mode file, a bad offset or count, a closing
    transport."""
    path, _ = blob
    text = tmp_path / "t.txt"
    text.write_text("text")

    async def main() -> None:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 7)
        _, writer = await sb.open_connection(A, 7)
        t = writer.transport
        with open(text) as f, pytest.raises(ValueError, match="binary"):
            await sb.sendfile(t, f)
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await sb.sendfile(t, f, -1)
            with pytest.raises(ValueError):
                await sb.sendfile(t, f, 0, 0)
            writer.close()
            with pytest.raises(RuntimeError, match="closing"):
                await sb.sendfile(t, f)
        server.close()
        sa.close()
        sb.close()

    run(main)


# ==========================================================================================
# Host names
# ==========================================================================================

def test_default_resolver_is_the_loops_getaddrinfo():
    """A name goes to loop.getaddrinfo (replaceable on the loop); an IPv4 literal never
    does. The name is the default server_hostname for TLS too."""
    async def main() -> List[Tuple[str, int]]:
        sa, sb = await stacks()
        server = await sa.start_server(echo, 7)
        loop = asyncio.get_running_loop()
        asked: List[Tuple[str, int]] = []

        async def getaddrinfo(host: str, port: int, **kw: Any) -> List[Tuple[Any, ...]]:
            asked.append((host, port))
            assert kw["family"] == socket.AF_INET and kw["type"] == socket.SOCK_STREAM
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (A, port))]

        loop.getaddrinfo = getaddrinfo            # type: ignore[method-assign]
        r, w = await sb.open_connection("echo.example", 7)
        w.write(b"by name")
        w.write_eof()
        assert await r.read() == b"by name"
        assert w.get_extra_info("peername") == (A, 7)
        w.close()
        r, w = await sb.open_connection(A, 7)
        w.close()
        server.close()
        sa.close()
        sb.close()
        return asked

    assert run(main) == [("echo.example", 7)]


def test_resolver_argument_and_tls_name(contexts):
    """FastTcpStack(resolver=...) answers names; with ssl the certificate is checked
    against the name given, not the address it resolved to."""
    sctx, cctx = contexts
    asked: List[str] = []

    async def resolver(host: str, port: int, **kw: Any) -> List[Tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (A, port))]

    async def main() -> str:
        sa, sb = await stacks(resolver=resolver)
        assert sb.resolver is resolver
        server = await sa.start_server(echo, 443, ssl=sctx)
        _, w = await sb.open_connection(NAME, 443, ssl=cctx)
        name = w.get_extra_info("ssl_object").server_hostname
        w.close()
        await w.wait_closed()
        server.close()
        sa.close()
        sb.close()
        return name

    assert run(main) == NAME
    assert asked == [NAME]


def test_failed_lookup_raises_gaierror_and_refusals_propagate():
    """The resolver's socket.gaierror reaches the caller unchanged (as with asyncio); a
    name with no IPv4 address is an OSError; a refused connection to a resolved address
    is ConnectionRefusedError."""
    async def resolver(host: str, port: int, **kw: Any) -> List[Tuple[Any, ...]]:
        if host == "missing.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "v6only.test":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (A, port))]

    async def main() -> None:
        sa, sb = await stacks(resolver=resolver)
        with pytest.raises(socket.gaierror) as err:
            await sb.open_connection("missing.test", 80)
        assert err.value.errno == socket.EAI_NONAME
        with pytest.raises(OSError, match="no IPv4 address"):
            await sb.open_connection("v6only.test", 80)
        with pytest.raises(ConnectionRefusedError):
            await sb.open_connection("closed.test", 81)
        sa.close()
        sb.close()

    run(main)


# ==========================================================================================
# TLS: failures and cancellation
# ==========================================================================================

def test_tls_cancelled_handshake_resets_and_frees_the_connection(contexts):
    """Cancelling open_connection(ssl=) during the handshake raises CancelledError and
    leaves no open connection behind on either host."""
    _, cctx = contexts

    async def main() -> Tuple[List[Any], List[Any]]:
        sa, sb = await stacks()

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await sa.start_server(mute, 443)
        task = asyncio.ensure_future(sb.open_connection(A, 443, ssl=cctx,
                                                        server_hostname=NAME))
        for _ in range(200):
            if any(c.state.name == "ESTABLISHED" for c in sb.host.connections()):
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(300):
            live = [c for c in list(sa.host.connections()) + list(sb.host.connections())
                    if c.state.name in ("ESTABLISHED", "CLOSE_WAIT", "SYN_SENT")]
            if not live:
                break
            await asyncio.sleep(0.01)
        server.close()
        sa.close()
        sb.close()
        return live, [c for c in sb.host.connections() if c.state.name == "ESTABLISHED"]

    live, established = run(main)
    assert live == [] and established == []


def test_tls_server_drops_a_failed_handshake_quietly(contexts):
    """A client that speaks no TLS to a TLS server: the connection is closed, the
    application's protocol is never made, nothing reaches the exception handler (asyncio
    reports it only in debug mode); the next good client is served."""
    sctx, cctx = contexts

    async def main() -> Tuple[bytes, List[str], List[Any], bytes]:
        sa, sb = await stacks()
        loop = asyncio.get_running_loop()
        reported: List[Any] = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        made: List[str] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            made.append("made")
            await echo(reader, writer)

        server = await sa.start_server(handler, 443, ssl=sctx)
        reader, writer = await sb.open_connection(A, 443)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        try:
            answer = await reader.read()                # a TLS alert, then EOF
        except ConnectionResetError:
            answer = b"reset"
        writer.close()
        r2, w2 = await sb.open_connection(A, 443, ssl=cctx, server_hostname=NAME)
        w2.write(b"fine")
        got = await r2.readexactly(4)
        w2.close()
        await w2.wait_closed()
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
        return answer, made, reported, got

    answer, made, reported, got = run(main)
    assert not answer.startswith(b"HTTP")
    assert made == ["made"]                            # only the good client
    assert reported == []
    assert got == b"fine"
