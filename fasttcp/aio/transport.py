"""asyncio transports and servers over fasttcp connections.

:class:`TcpTransport` implements the whole :class:`asyncio.Transport` contract on a
:class:`fasttcp.Connection`, so any asyncio Protocol runs unchanged (an
:class:`asyncio.BufferedProtocol` gets the data copied straight into its buffer). Writes the
engine's send buffer does not take yet wait in the transport (``get_write_buffer_size``) and
are fed as send space opens; above the high-water mark the protocol gets
``pause_writing()``, below the low-water mark ``resume_writing()``. ``pause_reading()``
stops delivery: the engine's receive buffer fills and its window closes, which is the peer's
flow control.

:class:`Server` is the :class:`asyncio.AbstractServer` of a listening port.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
from asyncio import constants
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Iterable, List, Optional, Set, Tuple

from fasttcp.aio.tls import make_ssl_protocol
from fasttcp.tcp.states import State

if TYPE_CHECKING:  # pragma: no cover
    import ssl as _ssl

    from fasttcp.aio.driver import Driver
    from fasttcp.tcp.connection import Connection

__all__ = ["Server", "TcpTransport", "sendfile_by_writes"]

log = logging.getLogger("fasttcp.aio")


def _copies_at_once(protocol: Any) -> bool:
    """asyncio's own StreamReaderProtocol copies what data_received() gets into its
    StreamReader's buffer before returning, so it may be handed memoryviews of the
    engine's receive buffer (one copy fewer per byte). Any other protocol may keep the
    object: it gets bytes."""
    return type(protocol) is asyncio.StreamReaderProtocol


def _immutable_view(data: Any) -> bool:
    """A contiguous memoryview of a bytes object: its bytes can never change, so the
    transport may keep the view instead of a copy."""
    return type(data) is memoryview and type(data.obj) is bytes and data.c_contiguous


#: Most bytes sendfile() reads at once.
SENDFILE_CHUNK = 256 * 1024


def _check_sendfile_params(file: Any, offset: int, count: Optional[int]) -> None:
    """The checks of asyncio's loop.sendfile()."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")


def _read_at(file: Any, fd: Optional[int], buf: memoryview, pos: int) -> int:
    """Read into ``buf`` from ``pos``: pread on a file descriptor (the file position is
    left alone), seek and readinto otherwise."""
    if fd is not None:
        return os.preadv(fd, [buf], pos)
    file.seek(pos)
    return file.readinto(buf) or 0


#: Most bytes handed to data_received() per call.
READ_CHUNK = 256 * 1024
#: asyncio's default write-buffer limits.
DEFAULT_HIGH_WATER = 64 * 1024


class TcpTransport(asyncio.transports._FlowControlMixin, asyncio.Transport):
    """An :class:`asyncio.Transport` over one fasttcp connection.

    Extra info: ``peername``, ``sockname`` (``(ip, port)`` tuples; ``(ip, port, 0, 0)``
    for IPv6, as asyncio's), ``fasttcp_connection``
    (the :class:`fasttcp.Connection`), ``fasttcp_stack`` (the driver); ``socket`` is None.

    ``connection_lost(exc)`` gets None after :meth:`close` / :meth:`abort` or an orderly end,
    and the connection's error otherwise: ConnectionResetError (peer RST), TimeoutError
    (retransmissions or keepalive ran out).

    TLS: ``loop.start_tls()`` accepts it on asyncio's own loops (``_start_tls_compatible``);
    :meth:`FastTcpStack.start_tls` on any loop. ``loop.sendfile()`` takes asyncio's
    read-and-write fallback (``_sendfile_compatible``); :meth:`sendfile` (and
    :meth:`FastTcpStack.sendfile`) reads straight into the free space of the send buffer.
    """

    # The flags asyncio's BaseEventLoop checks (start_tls, sendfile). Its sendfile fallback
    # also wants a _FlowControlMixin (the base above: _loop and _protocol_paused, which
    # mean the same here; this class overrides all its methods).
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, stack: "Driver", conn: "Connection", protocol: asyncio.BaseProtocol,
                 server: Optional["Server"] = None) -> None:
        super().__init__(extra={
            "peername": tuple(conn.remote_address),
            "sockname": tuple(conn.local_address),
            "fasttcp_connection": conn,
            "fasttcp_stack": stack,
            "socket": None,
        }, loop=stack.loop)
        self._loop: asyncio.AbstractEventLoop = stack.loop
        self._stack = stack
        self._conn = conn
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._zero_copy = _copies_at_once(protocol)
        self._server = server
        self._wbuf: Deque[memoryview] = deque()
        self._wsize = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._protocol_paused = False
        self._paused = False               # pause_reading()
        self._closing = False              # close() or abort() called, or connection lost
        self._eof_requested = False        # write_eof() called
        self._shut = False                 # ... and the engine was told (FIN queued)
        self._eof_delivered = False
        self._lost = False                 # connection_lost scheduled
        self._dropped_writes = 0
        self._space_waiter: Optional[asyncio.Future] = None     # sendfile() waits here
        self._sendfile_active = False
        if server is not None:
            server._attach(self)
        stack.register(conn, self)

    def _start(self) -> None:
        """connection_made, then whatever the connection already has (data, EOF, error)."""
        self._protocol.connection_made(self)
        self._on_ready()
        self._stack.kick()

    # ===================================================================================
    # Engine events (called by the driver)
    # ===================================================================================

    def _on_ready(self) -> None:
        if self._lost:
            return
        conn = self._conn
        if not self._paused and not self._closing:
            proto = self._protocol
            try:
                if self._buffered:
                    self._deliver_buffered(proto)
                else:
                    while conn.readable:
                        if self._zero_copy:
                            # Views into the receive buffer: StreamReader copies them.
                            if not conn.recv_to(proto.data_received, READ_CHUNK):
                                break
                        else:
                            data = conn.recv(READ_CHUNK)
                            if not data:
                                break
                            proto.data_received(data)         # type: ignore[attr-defined]
                        if self._paused or self._closing:
                            break
                if (conn.eof and not self._eof_delivered and not self._paused
                        and not self._closing):
                    self._eof_delivered = True
                    # asyncio contract: a false value closes the transport, a true value
                    # keeps it half-open (the protocol closes it later).
                    if not proto.eof_received():              # type: ignore[attr-defined]
                        self.close()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # As asyncio's own transports do: report, reset, connection_lost(exc).
                self._loop.call_exception_handler({
                    "message": "fasttcp: protocol.data_received() or eof_received() failed",
                    "exception": exc, "transport": self, "protocol": proto})
                self._fatal(exc)
                return
        if self._lost:
            return
        self._feed()
        if self._lost or conn.state != State.CLOSED:
            return
        if conn.error is not None:
            self._lose(conn.error)
        elif self._closing or (not self._paused and (self._eof_delivered or not conn.eof)):
            # An orderly end in both directions (and everything delivered).
            self._lose(None)

    def _deliver_buffered(self, proto: Any) -> None:
        """asyncio.BufferedProtocol: the engine copies straight into the protocol's buffer
        (get_buffer / buffer_updated), with no bytes object in between."""
        conn = self._conn
        while True:
            n = conn.readable
            if n <= 0:
                return
            buf = proto.get_buffer(n)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
            k = conn.recv_into(buf)
            if not k:
                return
            proto.buffer_updated(k)
            if self._paused or self._closing:
                return

    def _feed(self) -> None:
        """Move buffered writes into the engine's send buffer as far as it has room."""
        wbuf = self._wbuf
        if wbuf:
            conn = self._conn
            try:
                while wbuf and conn.send_space > 0:
                    chunk = wbuf[0]
                    n = conn.send(chunk)
                    if n <= 0:
                        break
                    self._wsize -= n
                    if n < len(chunk):
                        wbuf[0] = chunk[n:]
                        break
                    wbuf.popleft()
            except OSError as exc:
                self._fatal(exc)
                return
            self._maybe_resume_protocol()
        if not wbuf:
            waiter = self._space_waiter
            if waiter is not None and self._conn.send_space > 0 and not waiter.done():
                waiter.set_result(None)
            if self._eof_requested and not self._shut:
                self._shut = True
                self._conn.shutdown()
                self._stack.kick()
            if self._closing and not self._lost:
                self._finish_close()

    # ===================================================================================
    # asyncio.WriteTransport
    # ===================================================================================

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing:
            # Like asyncio: writes after close/abort/loss are dropped (warned past a few).
            self._dropped_writes += 1
            if self._dropped_writes == 5:
                log.warning("fasttcp: write() on a closed transport (data dropped)")
            return
        if type(data) is bytes or _immutable_view(data):
            self._write_kept(memoryview(data))
            return
        # The caller may reuse its buffer once write() returns: what the engine takes now
        # goes straight into its send ring, and only the rest is copied to be kept.
        if type(data) is bytearray and data and not self._wbuf:    # the common case
            n = self._send_now(data)
            if n is None or n == len(data):
                return
            with memoryview(data) as given:
                rest = given[n:].tobytes()
        else:
            with memoryview(data) as given:
                if not given.c_contiguous:                # flattened once, then as bytes
                    self._write_kept(memoryview(given.tobytes()))
                    return
                if not given.nbytes:
                    return
                with given.cast("B") as flat:
                    n = 0 if self._wbuf else self._send_now(flat)
                    if n is None or n == len(flat):
                        return
                    rest = flat[n:].tobytes()
        self._queue(memoryview(rest))

    def _write_kept(self, view: memoryview) -> None:
        """Write bytes nobody can change: a view of them is kept, not a copy."""
        if not view.nbytes:
            return
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        n = 0 if self._wbuf else self._send_now(view)
        if n is not None and n < len(view):
            self._queue(view[n:])

    def _queue(self, view: memoryview) -> None:
        """Keep ``view`` (of bytes nobody changes) until the send buffer has room."""
        self._wbuf.append(view)
        self._wsize += len(view)
        self._maybe_pause_protocol()

    def _send_now(self, view: memoryview) -> Optional[int]:
        """Hand ``view`` to the engine's send buffer; how much it took, or None if the
        connection failed (the transport is then closing)."""
        try:
            n = self._conn.send(view)
        except OSError as exc:
            self._fatal(exc)
            return None
        if n:
            self._stack.kick()
        return n

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self.write(b"".join(list_of_data))

    async def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Send ``count`` bytes (all to the end when None) of the regular ``file`` (binary
        mode) from ``offset``; returns the bytes sent, leaves the file position after them
        (also on error), like ``loop.sendfile``. Each read fills at most the send buffer's
        free space (and SENDFILE_CHUNK), in a worker thread, once earlier writes have all
        reached the engine: the file is never held in memory and the protocol is never
        paused."""
        _check_sendfile_params(file, offset, count)
        if self._eof_requested:
            raise RuntimeError("Cannot call sendfile() after write_eof()")
        if self._closing:
            raise RuntimeError("Transport is closing")
        if self._sendfile_active:
            raise RuntimeError("another sendfile() is in progress")
        self._sendfile_active = True
        try:
            fd: Optional[int] = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            fd = None
        end = None if count is None else offset + count
        pos = offset
        buf = bytearray(SENDFILE_CHUNK)
        view = memoryview(buf)
        try:
            while end is None or pos < end:
                await self._send_space()
                want = min(SENDFILE_CHUNK, max(self._conn.send_space, 1))
                if end is not None:
                    want = min(want, end - pos)
                n = await self._loop.run_in_executor(None, _read_at, file, fd, view[:want],
                                                     pos)
                if not n:
                    break                                   # end of file
                if self._closing:
                    raise ConnectionResetError("connection lost during sendfile()")
                self.write(view[:n])      # into the send ring: its free space only grew
                pos += n
        finally:
            self._sendfile_active = False
            self._space_waiter = None
            if pos > offset:
                file.seek(pos)
        return pos - offset

    async def _send_space(self) -> None:
        """Until every earlier write reached the engine and its send buffer has room."""
        while self._wbuf or self._conn.send_space <= 0:
            if self._closing:
                raise ConnectionResetError("connection lost during sendfile()")
            self._space_waiter = self._loop.create_future()
            await self._space_waiter
        self._space_waiter = None

    def write_eof(self) -> None:
        """Half-close: FIN after everything written so far; reading goes on."""
        if self._eof_requested or self._closing:
            return
        self._eof_requested = True
        if not self._wbuf:
            self._shut = True
            self._conn.shutdown()
            self._stack.kick()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the engine's send buffer."""
        return self._wsize

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None,
                                low: Optional[int] = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._wsize <= self._high or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()                    # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self._wsize > self._low:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()                   # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    # ===================================================================================
    # asyncio.ReadTransport
    # ===================================================================================

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        """Stop data_received(); the engine buffers, then its window closes."""
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._loop.call_soon(self._resume_delivery)

    def _resume_delivery(self) -> None:
        self._on_ready()
        self._stack.kick()          # recv() may have opened the window: announce it

    # ===================================================================================
    # asyncio.BaseTransport
    # ===================================================================================

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after the buffered writes went to the engine; FIN follows them.
        As with a kernel socket, closing with received data unread resets the connection."""
        if self._closing:
            return
        self._closing = True
        if not self._wbuf:
            self._finish_close()

    def abort(self) -> None:
        """Reset the connection (RST) now; buffered writes are discarded."""
        if self._lost:
            return
        self._wbuf.clear()
        self._wsize = 0
        self._conn.abort()
        self._stack.kick()
        self._lose(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._zero_copy = _copies_at_once(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # ===================================================================================
    # Ending
    # ===================================================================================

    def _finish_close(self) -> None:
        self._conn.close()
        self._stack.kick()
        self._lose(None)

    def _fatal(self, exc: BaseException) -> None:
        conn = self._conn
        if conn.error is not None:
            exc = conn.error
        elif conn.state != State.CLOSED:
            conn.abort()
            self._stack.kick()
        self._lose(exc)

    def _force_close(self, exc: Optional[BaseException]) -> None:
        """asyncio's transport-internal contract (its TLS layer calls it on a fatal
        error): drop buffered writes, close now, connection_lost(exc)."""
        if self._lost:
            return
        self._wbuf.clear()
        self._wsize = 0
        if self._conn.state != State.CLOSED:
            self._conn.close()
            self._stack.kick()
        self._lose(exc)

    def _lose(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._wbuf.clear()
        self._wsize = 0
        self._stack.unregister(self._conn)
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        waiter, self._space_waiter = self._space_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc if isinstance(exc, Exception)
                                 else ConnectionResetError("connection lost during sendfile()"))
        try:
            self._protocol.connection_lost(exc)
        finally:
            server, self._server = self._server, None
            if server is not None:
                server._detach(self)

    def __repr__(self) -> str:
        la, lp = self._conn.local_address[:2]
        ra, rp = self._conn.remote_address[:2]
        st = "closed" if self._lost else "closing" if self._closing else "open"
        return (f"<TcpTransport {la}:{lp} -> {ra}:{rp} {st} "
                f"{self._conn.state.rfc_name} wbuf={self._wsize}>")


class _Connector:
    """Waits for an active open to finish (the driver calls _on_ready)."""

    def __init__(self, conn: "Connection", fut: asyncio.Future) -> None:
        self.conn = conn
        self.fut = fut

    def _on_ready(self) -> None:
        if self.fut.done():
            return
        st = self.conn.state
        if st == State.CLOSED:
            self.fut.set_exception(self.conn.error
                                   or ConnectionRefusedError("connection refused"))
        elif st not in (State.SYN_SENT, State.SYN_RECEIVED):
            self.fut.set_result(None)


class Server(asyncio.AbstractServer):
    """A listening port serving a protocol factory, like :class:`asyncio.Server`.

    :meth:`wait_closed` returns once the server is closed and every connection it accepted
    has been lost (Python 3.12 semantics). ``sockets`` is empty: there are none.
    """

    def __init__(self, stack: "Driver", protocol_factory: Callable[[], asyncio.BaseProtocol],
                 port: int, backlog: Optional[int] = None, *,
                 ssl: Optional["_ssl.SSLContext"] = None,
                 ssl_handshake_timeout: Optional[float] = None,
                 ssl_shutdown_timeout: Optional[float] = None,
                 address: Optional[str] = None) -> None:
        self._stack = stack
        self._address = address
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._loop = stack.loop
        self._factory = protocol_factory
        self.port = port
        self._backlog = backlog
        self.listener = None
        self._transports: Set[TcpTransport] = set()
        self._waiters: List[asyncio.Future] = []
        self._serving_forever_fut: Optional[asyncio.Future] = None
        self._closed = False

    # --- accepting ---

    def _start_listening(self) -> None:
        if self.listener is not None or self._closed:
            return
        self.listener = self._stack.host.listen(self.port, self._backlog, self._address)
        self._stack.register(self.listener, self)

    def _on_ready(self) -> None:
        lst = self.listener
        if lst is None or self._closed:
            return
        while True:
            conn = lst.accept()
            if conn is None:
                return
            try:
                protocol = self._factory()
                if self._ssl is not None:
                    protocol = self._tls_protocol(protocol)
            except Exception as exc:
                conn.abort()
                self._loop.call_exception_handler({
                    "message": "fasttcp: protocol factory failed", "exception": exc,
                    "server": self})
                continue
            transport = TcpTransport(self._stack, conn, protocol, server=self)
            try:
                transport._start()
            except Exception as exc:
                transport.abort()
                self._loop.call_exception_handler({
                    "message": "fasttcp: connection_made failed", "exception": exc,
                    "transport": transport, "protocol": protocol})

    def _tls_protocol(self, app_protocol: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
        """asyncio's TLS protocol around ``app_protocol``, which gets connection_made() once
        the handshake is done. A failed handshake closes the connection; like asyncio, it is
        reported to the exception handler only in debug mode."""
        waiter = self._loop.create_future()
        tls = make_ssl_protocol(self._loop, app_protocol, self._ssl, waiter, server_side=True,
                                server_hostname=None,
                                ssl_handshake_timeout=self._ssl_handshake_timeout,
                                ssl_shutdown_timeout=self._ssl_shutdown_timeout)
        app_transport = tls._app_transport

        def handshake_done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                return
            app_transport.close()
            if self._loop.get_debug():
                self._loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc, "protocol": app_protocol, "transport": app_transport})

        waiter.add_done_callback(handshake_done)
        return tls

    def _attach(self, transport: TcpTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: TcpTransport) -> None:
        self._transports.discard(transport)
        self._wakeup()

    def _wakeup(self) -> None:
        if not self._closed or self._transports:
            return
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # --- asyncio.AbstractServer ---

    def close(self) -> None:
        """Stop listening (connections not yet accepted are reset); accepted ones go on."""
        if self._closed:
            return
        self._closed = True
        lst, self.listener = self.listener, None
        if lst is not None:
            self._stack.unregister(lst)
            lst.close()
            self._stack.kick()
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
        self._wakeup()

    def close_clients(self) -> None:
        for t in list(self._transports):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._transports):
            t.abort()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self.listener is not None and not self._closed

    @property
    def sockets(self) -> Tuple[()]:
        return ()

    async def start_serving(self) -> None:
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_listening()

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_listening()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        if self._closed and not self._transports:
            return
        w = self._loop.create_future()
        self._waiters.append(w)
        await w

    def __repr__(self) -> str:
        st = "serving" if self.is_serving() else "closed" if self._closed else "idle"
        return f"<fasttcp Server :{self.port} {st} connections={len(self._transports)}>"


class _SendfileFlow(asyncio.Protocol):
    """Stands in for the protocol of a transport while a file goes through its write():
    catches pause_writing / resume_writing so the sender can wait (asyncio's
    _SendfileFallbackProtocol, for any transport with asyncio's flow control)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._proto = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        high = transport.get_write_buffer_limits()[1]
        paused = getattr(transport, "_protocol_paused",
                         transport.get_write_buffer_size() > high)
        self._was_paused = paused
        self._ready: Optional[asyncio.Future] = (
            asyncio.get_running_loop().create_future() if paused else None)
        transport.pause_reading()
        transport.set_protocol(self)

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._ready is not None:
            await self._ready

    def pause_writing(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._ready is not None:
            self._ready.set_result(None)
            self._ready = None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc or ConnectionError("Connection is closed by peer"))
        self._proto.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self) -> Optional[bool]:
        raise RuntimeError("Invalid state: reading should be paused")

    def restore(self) -> None:
        t = self._transport
        t.set_protocol(self._proto)
        if self._resume_reading:
            t.resume_reading()
        # The protocol's pause_writing / resume_writing calls must stay paired.
        if self._ready is not None:
            self._ready.cancel()
            if not self._was_paused:
                self._proto.pause_writing()       # type: ignore[attr-defined]
        elif self._was_paused:
            self._proto.resume_writing()          # type: ignore[attr-defined]


async def sendfile_by_writes(transport: asyncio.Transport, file: Any, offset: int = 0,
                             count: Optional[int] = None) -> int:
    """``loop.sendfile``'s fallback for any flow-controlled transport (TLS): chunks read in
    a worker thread go through ``write()``, each after the transport drained."""
    _check_sendfile_params(file, offset, count)
    loop = asyncio.get_running_loop()
    flow = _SendfileFlow(transport)
    sent = 0
    try:
        while count is None or sent < count:
            want = SENDFILE_CHUNK if count is None else min(SENDFILE_CHUNK, count - sent)
            await flow.drain()
            file.seek(offset + sent)
            chunk = await loop.run_in_executor(None, file.read, want)
            if not chunk:
                break
            transport.write(chunk)
            sent += len(chunk)
        await flow.drain()
    finally:
        file.seek(offset + sent)
        flow.restore()
    return sent
