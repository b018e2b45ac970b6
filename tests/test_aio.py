"""fasttcp.aio: hosts on an asyncio loop, with real transports, servers and streams.

Two fasttcp hosts in one event loop joined by an in-process packet pipe, a real UDP socket
pair on 127.0.0.1, or an AF_UNIX datagram socketpair (the file-descriptor driver path).
No root, no traffic off the machine. Every wait is bounded by ``asyncio.wait_for``.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import textwrap
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest

import fasttcp
import fasttcp.aio
from fasttcp import State
from fasttcp.aio import (DatagramSocketLink, FastTcpStack, QueuePacketIO, TcpTransport,
                         UdpPacketIO)
from fasttcp.link import LinkCapabilities

A, B = "10.0.0.1", "10.0.0.2"
MiB = 1 << 20
TEST_TIMEOUT = 20.0


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = TEST_TIMEOUT) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)
    return asyncio.run(bounded())


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def queue_stacks(**settings: Any) -> Tuple[FastTcpStack, FastTcpStack]:
    wa, wb = QueuePacketIO.pair()
    sa = await fasttcp.aio.start(fasttcp.Host(A, **settings), wa)
    sb = await fasttcp.aio.start(fasttcp.Host(B, **settings), wb)
    return sa, sb


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def echo_round_trip(server_stack: FastTcpStack, client_stack: FastTcpStack,
                          nbytes: int, port: int = 7) -> None:
    """Send nbytes through an echo server while reading the echo; check both sha256."""
    server = await server_stack.start_server(echo_handler, port)
    reader, writer = await client_stack.open_connection(server_stack.host.address, port)
    data = payload(nbytes, seed=nbytes)

    async def send_all() -> None:
        view = memoryview(data)
        for off in range(0, nbytes, 100_000):
            writer.write(view[off:off + 100_000])
            await writer.drain()
        writer.write_eof()

    async def recv_all() -> bytes:
        h = hashlib.sha256()
        got = 0
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        assert got == nbytes
        return h.digest()

    sender = asyncio.create_task(send_all())
    digest = await recv_all()
    await sender
    assert digest == hashlib.sha256(data).digest()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    conn = writer.get_extra_info("fasttcp_connection")
    assert conn.bytes_acked == nbytes and conn.bytes_received == nbytes
    assert conn.state in (State.TIME_WAIT, State.CLOSED, State.FIN_WAIT_2)


# ========================================================================================
# Bulk echo over three kinds of link
# ========================================================================================

def test_echo_4mib_each_way_in_process_queue() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        try:
            await echo_round_trip(sa, sb, 4 * MiB)
        finally:
            sa.close()
            sb.close()
        assert sa.stats["packets_in"] > 2000 and sb.stats["packets_in"] > 2000
        assert sa.host.stats().get("drop_internal_error", 0) == 0
    run(main)


def test_echo_4mib_each_way_over_udp_sockets() -> None:
    async def main() -> None:
        ua = await UdpPacketIO.create(("127.0.0.1", 0))              # learns its peer
        ub = await UdpPacketIO.create(("127.0.0.1", 0), ua.local_addr)
        assert ua.local_addr[1] != 0 and ub.local_addr[1] != 0
        sa = await fasttcp.aio.start(fasttcp.Host(A), ua)
        sb = await fasttcp.aio.start(fasttcp.Host(B), ub)
        try:
            await echo_round_trip(sa, sb, 4 * MiB)
        finally:
            sa.close()
            sb.close()
            ua.close()
            ub.close()
        assert ua.peer_addr == ub.local_addr
        assert ua.received > 2000 and ub.received > 2000
    run(main)


def test_echo_over_fd_link_with_eagain() -> None:
    """The add_reader / add_writer path: with a small socket send buffer, send_batch hits
    EAGAIN and the driver must finish the batch with add_writer."""
    async def main() -> None:
        la, lb = DatagramSocketLink.pair()
        for link in (la, lb):
            link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sa, sb = await echo_over_links(la, lb, 1 * MiB)
        assert sa.stats["send_deferred"] + sb.stats["send_deferred"] > 0
    run(main)


async def echo_over_links(la: Any, lb: Any, size: int, **driver: Any) -> Tuple[Any, Any]:
    """A stack on each link, an echo round trip of ``size`` bytes, everything closed;
    returns the two stacks (for their stats)."""
    sa = await fasttcp.aio.start(fasttcp.Host(A), la, **driver)
    sb = await fasttcp.aio.start(fasttcp.Host(B), lb, **driver)
    try:
        await echo_round_trip(sa, sb, size)
    finally:
        sa.close()
        sb.close()
        la.close()
        lb.close()
    return sa, sb


class BudgetLink(DatagramSocketLink):
    """A datagram link whose recv_batch takes a byte budget, as TunLink's does."""

    capabilities = LinkCapabilities(keeps_packets=False, recv_views=True, recv_max_bytes=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budgets: List[Optional[int]] = []
        self.largest = 0

    def recv_batch(self, max: int = 64, copy: bool = True,  # noqa: A002
                   max_bytes: Optional[int] = None) -> List[bytes]:
        self.budgets.append(max_bytes)
        out: List[bytes] = []
        got = 0
        while len(out) < max and (max_bytes is None or got < max_bytes):
            more = super().recv_batch(1)
            if not more:
                break
            out += more
            got += len(more[0])
        if got > self.largest:                 # (`max` is the link interface's argument)
            self.largest = got
        return out


def test_driver_reads_batches_within_its_byte_budget() -> None:
    """A link that takes max_bytes gets the driver's batch_bytes: each batch (and so the
    ACK that ends it) covers at most that much plus one packet."""
    async def main() -> None:
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        la, lb = BudgetLink(s1), BudgetLink(s2)
        await echo_over_links(la, lb, 1 * MiB, batch_bytes=8000)
        for link in (la, lb):
            assert link.budgets and set(link.budgets) == {8000}
            assert 8000 <= link.largest < 8000 + 1600      # one MTU-sized packet over
    run(main)


class ArenaLink(DatagramSocketLink):
    """Like TunLink's recv_batch(copy=False): memoryviews into one arena, scribbled over
    at the start of every call, so anything the host kept by reference past settle()
    would be corrupted. Declares takes_split_packets like TunLink (it writes at once)."""

    capabilities = LinkCapabilities(takes_split_packets=True, keeps_packets=False,
                                    recv_views=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arena = bytearray(256 * 2048)
        self.calls = 0

    def recv_batch(self, max: int = 64, copy: bool = True) -> List[Any]:  # noqa: A002
        self.calls += 1
        self.arena[:] = b"\xee" * len(self.arena)
        view, out, off = memoryview(self.arena), [], 0
        for p in super().recv_batch(min(max, 256)):
            view[off:off + len(p)] = p
            out.append(p if copy else view[off:off + len(p)])
            off += 2048
        return out


def test_driver_settles_deferred_data_before_the_next_read() -> None:
    """Two stacks whose links hand out views of one reused arena. A plain Protocol that
    pauses reading at first leaves the data kept by reference (defer_copy) unread across
    batches, so it must be copied before every next read; an echo on streams too. Both
    arrive intact."""
    async def main() -> None:
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        la, lb = ArenaLink(s1), ArenaLink(s2)
        sa = await fasttcp.aio.start(fasttcp.Host(A), la)
        sb = await fasttcp.aio.start(fasttcp.Host(B), lb)
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        class LateSink(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.buf = bytearray()
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                # Take a break after each delivery: what arrives meanwhile is not read
                # in its batch's dispatch.
                self.buf += data
                self.transport.pause_reading()
                loop.call_later(0.002, self.transport.resume_reading)

            def eof_received(self) -> bool:
                done.set_result(bytes(self.buf))
                return False

        try:
            server = await sa.create_server(LateSink, 9)
            data = payload(600_000, seed=9)
            reader, writer = await sb.open_connection(A, 9)
            writer.write(data)
            writer.write_eof()
            assert await asyncio.wait_for(done, 20) == data
            writer.close()
            server.close()
        finally:
            sa.close()
            sb.close()
        assert sa.defer_copy and sa.host.split_tx and la.calls > 10
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        await echo_over_links(ArenaLink(s1), ArenaLink(s2), 1 * MiB)
    run(main)


def test_split_tx_follows_the_link_type() -> None:
    """Only a link type that declares takes_split_packets gets SplitPackets; a wrapper
    that forwards attributes (and may keep packets) does not, nor does a PacketIO."""
    class Forwarding:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def recv_batch(self, max: int = 64) -> List[bytes]:  # noqa: A002
            return self.inner.recv_batch(max)

        def send_batch(self, packets: List[Any]) -> int:
            return self.inner.send_batch(packets)

        def fileno(self) -> int:
            return self.inner.fileno()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        host = fasttcp.Host(A)
        FastTcpStack(host, ArenaLink(s1))
        assert host.split_tx is True
        FastTcpStack(host, Forwarding(ArenaLink(s2)))
        assert host.split_tx is False
        host.split_tx = True
        FastTcpStack(host, QueuePacketIO.pair()[0])
        assert host.split_tx is False
    finally:
        s1.close()
        s2.close()


def test_deferred_packets_do_not_keep_split_packets() -> None:
    """What the link does not take now waits in the driver as bytes: a SplitPacket points
    into a send ring that moves on once the data is acknowledged."""
    from fasttcp.link import exchange
    from fasttcp.wire import SplitPacket

    client = fasttcp.Host(A, isn_secret=bytes(16), gso_max=65000)
    server = fasttcp.Host(B, isn_secret=bytes(16), gso_max=65000)
    client.split_tx = True
    lst = server.listen(80)
    c = client.connect((B, 80))
    exchange(client, server, 0.0)
    lst.accept()
    c.send(bytes(100_000))
    out = client.transmit(0.01)
    assert any(type(p) is SplitPacket for p in out)
    s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        drv = FastTcpStack(fasttcp.Host(A), ArenaLink(s1))
        drv._defer(out)
        assert [type(p) for p in drv._pending] == [bytes] * len(out)
        assert list(drv._pending) == [bytes(p) for p in out]
    finally:
        s1.close()
        s2.close()


def test_udp_socket_as_fd_link() -> None:
    async def main() -> None:
        s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        la = DatagramSocketLink(s1, peer=s2.getsockname())
        lb = DatagramSocketLink(s2, peer=s1.getsockname())
        await echo_over_links(la, lb, 512 * 1024)
    run(main)


# ========================================================================================
# Plain protocols, flow control, half-close, errors
# ========================================================================================

async def close_all(tr: Any, proto: Any, server: Any, *stacks: FastTcpStack) -> None:
    """Close a client transport and wait for connection_lost, then the server, then the
    stacks."""
    tr.close()
    await proto.lost
    server.close()
    for stack in stacks:
        stack.close()


class Recorder(asyncio.Protocol):
    """A plain asyncio protocol that records every callback."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.keep_open_on_eof = keep_open_on_eof
        self.transport: Optional[TcpTransport] = None
        self.events: List[str] = []
        self.data = bytearray()
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.eof = asyncio.Event()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert self.events[0] == "made" and "eof" not in self.events
        self.data += data

    def eof_received(self) -> Optional[bool]:
        self.events.append("eof")
        self.eof.set()
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.paused.set()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.resumed.set()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def test_plain_protocol_runs_unchanged() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        server = await sa.create_server(Echo, 9000)
        tr, proto = await sb.create_connection(Recorder, A, 9000)
        assert isinstance(tr, asyncio.Transport) and isinstance(tr, TcpTransport)
        assert tr.get_extra_info("peername") == (A, 9000)
        sock_ip, sock_port = tr.get_extra_info("sockname")
        assert sock_ip == B and 49152 <= sock_port <= 65535
        conn = tr.get_extra_info("fasttcp_connection")
        assert isinstance(conn, fasttcp.Connection) and conn.state == State.ESTABLISHED
        assert tr.get_extra_info("nonexistent", 42) == 42
        assert tr.can_write_eof() and tr.is_reading() and not tr.is_closing()
        assert tr.get_protocol() is proto
        msg = b"".join(b"line %d\n" % i for i in range(2000))
        tr.writelines([msg[:1000], msg[1000:]])
        for _ in range(2000):
            if len(proto.data) >= len(msg):
                break
            await asyncio.sleep(0.005)
        assert bytes(proto.data) == msg
        tr.close()
        assert tr.is_closing()
        assert await proto.lost is None
        assert proto.events == ["made", "lost"]
        tr.write(b"ignored after close")              # dropped, no exception
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_small_writes_coalesce_into_few_segments() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 9001)
        tr, proto = await sb.create_connection(Recorder, A, 9001)
        await asyncio.sleep(0.02)
        peer = srv[0].transport
        before = sb.stats["packets_out"]
        for i in range(1000):                         # 10,000 bytes in one loop turn
            tr.write(b"%09d\n" % i)
        for _ in range(1000):
            if len(peer.get_protocol().data) >= 10_000:
                break
            await asyncio.sleep(0.005)
        assert bytes(peer.get_protocol().data) == b"".join(b"%09d\n" % i for i in range(1000))
        sent = sb.stats["packets_out"] - before
        assert 7 <= sent <= 12, sent                  # ceil(10000 / 1460) = 7 segments
        await close_all(tr, proto, server, sa, sb)
    run(main)


def test_write_keeps_views_of_bytes_and_copies_only_what_the_caller_may_change() -> None:
    """write() hands a mutable buffer straight to the send buffer and copies only what
    does not fit (the caller may reuse the buffer once write() returns, even resize it);
    bytes and views of bytes are kept by reference; any layout arrives in order."""
    import array
    import ctypes

    async def main() -> None:
        sa, sb = await queue_stacks(snd_buf=16384)    # most of each write waits
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 9002)
        tr, proto = await sb.create_connection(Recorder, A, 9002)
        for _ in range(200):
            if srv:
                break
            await asyncio.sleep(0.005)
        mutable = bytearray(payload(100_000, 1))
        expected = bytes(mutable)
        tr.write(mutable)
        assert 0 < tr.get_write_buffer_size() < len(mutable)
        mutable[:] = bytes(len(mutable))              # reused at once, and resized
        mutable.extend(b"more")
        words = array.array("I", range(5000))       # another format: sent as its bytes
        tr.write(memoryview(words))
        expected += words.tobytes()
        words[0] = 123456
        strided = payload(3000, 2)
        tr.write(memoryview(strided)[::3])          # not contiguous: flattened once
        expected += strided[::3]
        kept = payload(50_000, 3)
        tr.write(memoryview(kept)[7:])
        expected += kept[7:]
        assert any(v.obj is kept for v in tr._wbuf)   # a view of the bytes, no copy
        grid = (ctypes.c_uint8 * 4 * 3)(*[(ctypes.c_uint8 * 4)(*range(i, i + 4))
                                          for i in range(3)])
        tr.write(memoryview(grid))                  # 2-D, format '<B': its 12 bytes
        expected += bytes(grid)
        tr.write(bytearray())
        tr.write(memoryview(b""))
        tr.write(memoryview((ctypes.c_uint8 * 4 * 0)()))   # empty, shape (0, 4)
        tr.write_eof()
        await asyncio.wait_for(srv[0].eof.wait(), 10)
        assert bytes(srv[0].data) == expected
        assert tr.get_write_buffer_size() == 0
        await close_all(tr, proto, server, sa, sb)
    run(main)


def test_every_kind_of_buffer_written_alone_is_sent() -> None:
    """Each kind of buffer as the only write on an idle connection, larger than the send
    buffer (so the transport keeps the rest): nothing may wait in the transport for an
    ACK that never comes."""
    import array

    async def main() -> None:
        sa, sb = await queue_stacks(snd_buf=8192)
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 9003)
        tr, proto = await sb.create_connection(Recorder, A, 9003)
        expected = b""
        blob = payload(40_000, 9)
        await asyncio.sleep(0.05)                     # handshake over: nothing in flight
        kept = []
        for data, wire in ((memoryview(blob)[::2], blob[::2]), (blob, blob),
                           (memoryview(blob)[1:], blob[1:]), (bytearray(blob), blob),
                           (memoryview(bytearray(blob)), blob),
                           (memoryview(array.array("H", blob[:100])), blob[:100])):
            await asyncio.sleep(0.02)                 # every ACK in: the connection idles
            tr.write(data)
            kept.append(tr.get_write_buffer_size())
            expected += wire
            for _ in range(400):
                if srv and len(srv[0].data) == len(expected):
                    break
                await asyncio.sleep(0.005)
            assert bytes(srv[0].data) == expected, type(data)
        assert tr.get_write_buffer_size() == 0
        assert max(kept) > 0                          # the transport did keep some
        await close_all(tr, proto, server, sa, sb)
    run(main)


class AsyncSendIO:
    """A PacketIO whose send() is a coroutine: the driver must await it before the next."""

    def __init__(self, inner: QueuePacketIO) -> None:
        self.inner = inner
        self.busy = False
        self.calls = 0

    async def recv(self) -> List[bytes]:
        return await self.inner.recv()

    async def send(self, packets: List[bytes]) -> None:
        assert not self.busy, "driver sent again before the previous send finished"
        self.busy = True
        self.calls += 1
        await asyncio.sleep(0)
        self.inner.send(packets)
        self.busy = False


def test_packet_io_with_awaitable_send() -> None:
    async def main() -> None:
        qa, qb = QueuePacketIO.pair()
        wa, wb = AsyncSendIO(qa), AsyncSendIO(qb)
        sa = await fasttcp.aio.start(fasttcp.Host(A), wa)
        sb = await fasttcp.aio.start(fasttcp.Host(B), wb)
        await echo_round_trip(sa, sb, 512 * 1024)
        assert wa.calls > 10 and wb.calls > 10
        assert sa.stats["send_deferred"] + sb.stats["send_deferred"] > 0
        sa.close()
        sb.close()
    run(main)


def test_protocol_exception_resets_connection() -> None:
    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bug in the protocol")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: List[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Broken()) or srv[-1], 89)
        tr, proto = await sb.create_connection(Recorder, A, 89)
        tr.write(b"boom")
        assert isinstance(await proto.lost, ConnectionResetError)
        assert isinstance(await srv[0].lost, ValueError)
        assert any(isinstance(c.get("exception"), ValueError) for c in reported)
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_flow_control_pause_and_resume_writing() -> None:
    """A reader that pauses fills its window, then the writer's engine buffer, then the
    transport buffer: the writing protocol gets pause_writing, and resume_writing once the
    reader resumes."""
    buf = 64 * 1024

    async def main() -> None:
        sa, sb = await queue_stacks(rcv_buf=buf, snd_buf=buf)
        srv: List[Recorder] = []

        def factory() -> Recorder:
            p = Recorder()
            srv.append(p)
            return p

        server = await sa.create_server(factory, 9002)
        tr, writer = await sb.create_connection(Recorder, A, 9002)
        tr.set_write_buffer_limits(high=32 * 1024)
        assert tr.get_write_buffer_limits() == (8 * 1024, 32 * 1024)
        await asyncio.sleep(0.05)
        reader = srv[0]
        reader.transport.pause_reading()
        assert not reader.transport.is_reading()
        data = payload(2 * MiB, seed=7)
        off = 0
        for _ in range(10_000):
            if writer.paused.is_set() or off >= len(data):
                break
            tr.write(data[off:off + 8192])
            off += 8192
            for _ in range(5):
                await asyncio.sleep(0)
        assert writer.paused.is_set(), "pause_writing never came"
        # Everything in between is full: the reader's buffer, the writer's send buffer.
        await asyncio.sleep(0.1)
        rconn = reader.transport.get_extra_info("fasttcp_connection")
        # (Sender SWS avoidance may leave less than one MSS of the window unused.)
        assert buf - 1460 <= rconn.readable <= buf and len(reader.data) == 0
        assert tr.get_write_buffer_size() > 32 * 1024
        assert off >= 2 * buf
        reader.transport.resume_reading()
        await asyncio.wait_for(writer.resumed.wait(), 10)
        assert writer.events[1:3] == ["pause_writing", "resume_writing"]
        while off < len(data):                        # the rest, honouring the signals
            if writer.paused.is_set() and writer.events[-1] == "pause_writing":
                writer.resumed.clear()
                await asyncio.wait_for(writer.resumed.wait(), 10)
            tr.write(data[off:off + 65536])
            off += 65536
            await asyncio.sleep(0)
        tr.write_eof()
        await asyncio.wait_for(reader.eof.wait(), 10)
        assert hashlib.sha256(reader.data).digest() == hashlib.sha256(data).digest()
        assert await reader.lost is None              # eof_received -> None: closed
        tr.close()
        assert await writer.lost is None
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_write_eof_half_close_with_streams() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()                 # until the client's FIN
        assert reader.at_eof()
        # Still writable after the peer's EOF: StreamReaderProtocol keeps it half-open.
        writer.write(b"got %d bytes: " % len(request) + hashlib.sha256(request).digest())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        sa, sb = await queue_stacks()
        server = await sa.start_server(handler, 80)
        reader, writer = await sb.open_connection(A, 80)
        assert writer.can_write_eof()
        body = payload(300_000, seed=3)
        writer.write(body)
        writer.write_eof()
        with pytest.raises(RuntimeError):
            writer.write(b"more")
        reply = await reader.read()
        assert reply == b"got 300000 bytes: " + hashlib.sha256(body).digest()
        conn = writer.get_extra_info("fasttcp_connection")
        assert conn.state in (State.FIN_WAIT_2, State.TIME_WAIT)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_eof_received_true_keeps_transport_half_open() -> None:
    class Answer(Recorder):
        def eof_received(self) -> bool:
            super().eof_received()
            self.transport.write(b"after eof:" + bytes(self.data))   # type: ignore
            self.transport.close()                                    # type: ignore
            return True

    async def main() -> None:
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Answer()) or srv[-1], 81)
        tr, proto = await sb.create_connection(Recorder, A, 81)
        tr.write(b"question")
        tr.write_eof()
        assert await proto.lost is None
        assert bytes(proto.data) == b"after eof:question"
        assert proto.events == ["made", "eof", "lost"]
        assert srv[0].events == ["made", "eof", "lost"]
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_abort_gives_connection_reset_on_peer() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.read(1000):
                    pass
                got.set_result("eof")
            except Exception as exc:                  # the expected path
                got.set_result(exc)

        server = await sa.start_server(handler, 82)
        # Plain protocol side: check connection_lost gets the engine's reset error too.
        srv: List[Recorder] = []
        server2 = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 83)

        reader, writer = await sb.open_connection(A, 82)
        writer.write(b"x" * 5000)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        exc = await got
        assert isinstance(exc, ConnectionResetError), exc
        assert isinstance(exc, fasttcp.ConnectionReset)

        tr, _ = await sb.create_connection(Recorder, A, 83)
        await asyncio.sleep(0.05)
        tr.abort()
        lost = await srv[0].lost
        assert isinstance(lost, ConnectionResetError)
        server.close()
        server2.close()
        await server.wait_closed()
        await server2.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_writer_sees_reset_when_peer_aborts() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 84)
        reader, writer = await sb.open_connection(A, 84)
        await asyncio.sleep(0.05)
        srv[0].transport.abort()
        with pytest.raises(ConnectionResetError):
            for _ in range(1000):
                await reader.read(100)                # raises once the RST arrived
        with pytest.raises(ConnectionResetError):
            writer.write(b"data")
            await writer.drain()
        server.close()
        sa.close()
        sb.close()
    run(main)


def test_connect_to_closed_port_is_refused() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        with pytest.raises(ConnectionRefusedError):
            await sb.open_connection(A, 4444)
        with pytest.raises(ConnectionRefusedError):
            await sb.create_connection(asyncio.Protocol, A, 4444)
        assert not sb.host.connections()
        sa.close()
        sb.close()
    run(main)


def test_connect_without_answer_times_out() -> None:
    async def main() -> None:
        wire_a, _ = QueuePacketIO.pair()              # nobody at the far end
        s = await fasttcp.aio.start(
            fasttcp.Host(A, initial_rto=0.02, min_rto=0.02, syn_retries=2), wire_a)
        with pytest.raises(TimeoutError):
            await s.open_connection(B, 80)
        assert s.host.stats()["syns_out"] == 3
        s.close()
    run(main)


def test_cancelled_connect_resets_connection() -> None:
    async def main() -> None:
        wire_a, _ = QueuePacketIO.pair()
        s = await fasttcp.aio.start(fasttcp.Host(A), wire_a)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s.open_connection(B, 80), 0.05)
        assert not s.host.connections()
        s.close()
    run(main)


def test_server_close_and_wait_closed() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 85)
        assert server.is_serving() and server.get_loop() is asyncio.get_running_loop()
        tr, proto = await sb.create_connection(Recorder, A, 85)
        await asyncio.sleep(0.02)
        server.close()
        assert not server.is_serving()
        # Not listening any more: a new connection is refused ...
        with pytest.raises(ConnectionRefusedError):
            await sb.create_connection(Recorder, A, 85)
        # ... but the accepted one lives on, and wait_closed waits for it.
        waiter = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        tr.write(b"still here")
        tr.close()
        await asyncio.wait_for(waiter, 10)
        assert bytes(srv[0].data) == b"still here"
        assert srv[0].events == ["made", "eof", "lost"]
        await server.wait_closed()                    # closed and idle: returns at once
        sa.close()
        sb.close()
    run(main)


def test_serve_forever_and_context_manager() -> None:
    async def main() -> None:
        wa, wb = QueuePacketIO.pair()
        async with FastTcpStack(fasttcp.Host(A), wa) as sa, \
                FastTcpStack(fasttcp.Host(B), wb) as sb:
            server = await sa.start_server(echo_handler, 86, start_serving=False)
            assert not server.is_serving()
            task = asyncio.create_task(server.serve_forever())
            await asyncio.sleep(0)
            assert server.is_serving()
            reader, writer = await sb.open_connection(A, 86)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
        assert sa.closed and sb.closed
    run(main)


def test_stack_close_resets_open_connections() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        srv: List[Recorder] = []
        server = await sa.create_server(lambda: srv.append(Recorder()) or srv[-1], 87)
        tr, proto = await sb.create_connection(Recorder, A, 87)
        await asyncio.sleep(0.02)
        sb.close()                                    # RST goes out with the last flush
        assert await proto.lost is None
        assert isinstance(await srv[0].lost, ConnectionResetError)
        server.close()
        sa.close()
    run(main)


def test_many_concurrent_connections() -> None:
    async def main() -> None:
        sa, sb = await queue_stacks()
        server = await sa.start_server(echo_handler, 88)

        async def client(i: int) -> bytes:
            reader, writer = await sb.open_connection(A, 88)
            msg = payload(20_000 + i, seed=i)
            writer.write(msg)
            writer.write_eof()
            back = await reader.read()
            writer.close()
            await writer.wait_closed()
            return hashlib.sha256(back).digest() == hashlib.sha256(msg).digest()

        results = await asyncio.gather(*(client(i) for i in range(40)))
        assert all(results)
        server.close()
        await server.wait_closed()
        sa.close()
        sb.close()
    run(main)


def test_usage_docstring_runs(capsys: pytest.CaptureFixture) -> None:
    doc = fasttcp.aio.__doc__
    assert doc is not None
    code = textwrap.dedent(doc.split("::\n\n", 1)[1].split("\n``stack", 1)[0])
    exec(compile(code, "fasttcp.aio docstring", "exec"), {"__name__": "docstring"})
    assert capsys.readouterr().out == "b'hello, user-space TCP'\n"


def test_link_kinds_are_checked() -> None:
    from fasttcp.aio import PacketIO
    from fasttcp.link import MemoryLink

    async def main() -> None:
        qa, _ = QueuePacketIO.pair()
        assert isinstance(qa, PacketIO)
        ma, _ = MemoryLink.pair()
        with pytest.raises(TypeError, match="QueuePacketIO"):
            FastTcpStack(fasttcp.Host(A), ma)               # no fd to wait on
        with pytest.raises(TypeError):
            FastTcpStack(fasttcp.Host(A), object())
    run(main)
