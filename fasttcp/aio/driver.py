"""Run a sans-IO :class:`fasttcp.Host` on an asyncio event loop.

The :class:`Driver` owns the three calls the host needs (``receive``, ``transmit``,
``poll_at``) and learns everything about the link from its capabilities record
(:class:`~fasttcp.link.LinkCapabilities`, read once with
:func:`~fasttcp.link.capabilities_of`):

- input: for a batch link, ``loop.add_reader(link.fileno())`` reads batches with
  ``recv_batch`` (at most ``max_batches`` per callback, so one busy link cannot starve the
  loop; at most ``batch_bytes`` per batch where the record says ``recv_max_bytes``); for a
  :class:`~fasttcp.link.PacketIO` (``packet_io``), a task awaits ``recv()`` and yields
  to the loop every ``max_batches`` batches. Every batch goes to ``host.receive(batch,
  loop.time(), caps.parse_flags, defer_copy)``, then readiness is dispatched and
  ``host.settle()`` copies what in-order data is left before the next read.
- after every batch, timer and user call: ``host.pop_ready()`` is dispatched to the
  registered transports/servers, then ``host.transmit(now)`` goes out on the link. User
  calls (write, close...) only mark the driver dirty: one ``call_soon`` flush per loop turn
  serves all of them, so many small writes leave as full segments.
- timers: one ``loop.call_at(host.poll_at())``, re-armed after every service; for a link
  that ``delays_packets`` (a FaultyLink wrapper), a second one calls ``link.flush()`` (and
  reads the link, for received packets it delayed) by ``link.next_arrival()``.
- output backpressure: when ``send_batch`` writes fewer packets than given (EAGAIN), the
  rest is kept (at most ``max_pending`` packets; beyond that they are dropped like a full
  device queue) and ``loop.add_writer`` finishes the job.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from fasttcp.host.host import Host
from fasttcp.link.capabilities import LinkCapabilities, capabilities_of
from fasttcp.wire import SplitPacket

__all__ = ["Driver"]

log = logging.getLogger("fasttcp.aio")

#: Dispatch rounds (pop_ready -> callbacks -> transmit) per service before yielding.
_MAX_ROUNDS = 8


#: Most bytes read per batch (a link whose record says ``recv_max_bytes``). Every batch ends
#: with one ACK per connection; 64 KB TSO super-packets would otherwise make a batch a
#: whole receive window, and the sender waits for that ACK with nothing in flight.
BATCH_BYTES = 512 * 1024


class Driver:
    """Drives ``host`` over ``link`` on the running event loop (see the module docstring).

    ``link`` is either a batch link with a file descriptor (``recv_batch`` / ``send_batch``
    / ``fileno``, e.g. a TUN link or :class:`~fasttcp.link.DatagramSocketLink`) or a
    :class:`~fasttcp.link.PacketIO`; its capabilities record says which (a link that
    declares none gets the defaults of :func:`~fasttcp.link.capabilities_of`: plain
    packets, no offloads). Objects registered with :meth:`register` (keyed by the host's
    Connection or Listener) get ``_on_ready()`` when the host reports them.
    """

    def __init__(self, host: Host, link: Any, *, loop: Optional[asyncio.AbstractEventLoop] = None,
                 batch_size: int = 256, max_batches: int = 16, max_pending: int = 8192,
                 batch_bytes: int = BATCH_BYTES, defer_copy: bool = True) -> None:
        self.host = host
        self.link = link
        self._loop = loop
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.defer_copy = defer_copy
        self.max_batches = max_batches
        self.max_pending = max_pending
        caps = capabilities_of(link)
        self.capabilities: LinkCapabilities = caps
        if caps.packet_io:
            self._fd: Optional[int] = None
            self._io: Any = link
        else:
            try:
                self._fd = link.fileno()
            except (OSError, ValueError, AttributeError) as e:  # io.UnsupportedOperation too
                raise TypeError(f"{type(link).__name__} has no file descriptor for the event "
                                f"loop; in one process use QueuePacketIO") from e
            self._io = None
        # The host's one link-dependent switch: SplitPackets (headers plus views of the
        # send ring, no copy) only for a link that writes them at once and keeps nothing.
        host.split_tx = caps.split_packets
        self._parse_flags = caps.parse_flags
        self._recv_views = caps.recv_views
        self._recv_budget = caps.recv_max_bytes
        self._delays_packets = caps.delays_packets
        self._link_timer: Optional[asyncio.TimerHandle] = None
        self._link_timer_when: Optional[float] = None
        self._handlers: Dict[Any, Any] = {}
        self._started = False
        self._closed = False
        self._servicing = False
        self._flush_handle: Optional[asyncio.Handle] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when: Optional[float] = None
        self._carry: Optional[set] = None          # readiness popped but not dispatched yet
        self._pump: Optional[asyncio.Task] = None
        self._pending: Deque[bytes] = deque()      # packets the link did not take yet
        self._send_busy = False                    # waiting for writable fd / awaitable send
        self.stats: Dict[str, int] = {"batches_in": 0, "packets_in": 0, "packets_out": 0,
                                      "send_deferred": 0, "send_dropped": 0,
                                      "callback_errors": 0}

    # ===================================================================================
    # Life cycle
    # ===================================================================================

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def start(self) -> None:
        """Attach to the event loop (idempotent). Needs the loop (or a running one)."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError("driver is closed")
        loop = self.loop
        self._started = True
        if self._fd is not None:
            loop.add_reader(self._fd, self._on_readable)
        else:
            self._pump = loop.create_task(self._pump_io(), name="fasttcp-packet-io")
        self._service()

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def close(self) -> None:
        """Detach from the loop: stop reading, cancel the timer. Sends what is queued now
        (best effort); packets the link has not taken are dropped."""
        if self._closed:
            return
        if self._started:
            try:
                self._service()                    # let last RSTs / FINs out
            except Exception:                      # pragma: no cover - best effort
                log.exception("fasttcp: final flush failed")
        self._closed = True
        loop = self._loop
        if self._fd is not None and self._started and loop is not None:
            loop.remove_reader(self._fd)
            if self._send_busy:
                loop.remove_writer(self._fd)
        if self._pump is not None:
            self._pump.cancel()
        for h in (self._timer, self._flush_handle, self._link_timer):
            if h is not None:
                h.cancel()
        self._timer = self._flush_handle = self._link_timer = None
        self._pending.clear()
        self._handlers.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    # ===================================================================================
    # Registration and user-call kicks
    # ===================================================================================

    def register(self, key: Any, handler: Any) -> None:
        """Route host readiness of ``key`` (a Connection or Listener) to ``handler._on_ready``."""
        self._handlers[key] = handler

    def unregister(self, key: Any) -> None:
        self._handlers.pop(key, None)

    def kick(self) -> None:
        """User code changed engine state: flush once, soon (many calls coalesce)."""
        if self._servicing or self._flush_handle is not None or self._closed:
            return
        self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._closed:
            self._service()

    # ===================================================================================
    # Input
    # ===================================================================================

    def _on_readable(self) -> None:
        recv_batch = self.link.recv_batch
        parse_flags = self._parse_flags
        read_kw: Dict[str, Any] = {}
        if self._recv_views:
            read_kw["copy"] = False
        if self._recv_budget:
            read_kw["max_bytes"] = self.batch_bytes
        for _ in range(self.max_batches):
            try:
                # Views into the link's receive arena when it offers them: the host has
                # copied what it keeps by host.settle(), and the next read comes after.
                # That saves a copy and a 64 KB allocation per TSO super-packet (whose
                # malloc/free churn at the heap top made glibc trim and refault pages).
                batch = recv_batch(self.batch_size, **read_kw)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.error("fasttcp: link read failed: %r", e)
                break
            if not batch:
                break
            self._ingest(batch, parse_flags)
            if self._closed:
                return
        if self._delays_packets:
            self._arm_link_timer()                # packets it read may arrive later

    def _ingest(self, batch: List[Any], parse_flags: int) -> None:
        """One batch into the host, readiness dispatched, output sent. In-order data stays
        in the batch's buffers (no copy into the receive ring) until the dispatch reads
        it; settle() copies what is left before the next read reuses them."""
        self.stats["batches_in"] += 1
        self.stats["packets_in"] += len(batch)
        host = self.host
        try:
            host.receive(batch, self.loop.time(), parse_flags, self.defer_copy)
            self._service()
        finally:
            host.settle()

    async def _pump_io(self) -> None:
        io = self._io
        n = 0
        while not self._closed:
            try:
                batch = await io.recv()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("fasttcp: packet source failed, driver stops reading: %r", e)
                return
            if not batch:
                continue
            if type(batch) is not list:
                batch = list(batch)
            self._ingest(batch, self._parse_flags)
            n += 1
            if n >= self.max_batches:
                # recv() need not suspend when data is waiting: let the loop breathe.
                n = 0
                await asyncio.sleep(0)

    def _on_timer(self) -> None:
        self._timer = None
        # A timer callback can run a hair before its deadline (clock resolution): never
        # let the host see a time before the one it asked for.
        when = self._timer_when
        now = self.loop.time()
        self._service(now if when is None or now >= when else when)

    # ===================================================================================
    # Service: dispatch readiness, transmit, re-arm the timer
    # ===================================================================================

    def _service(self, now: Optional[float] = None) -> None:
        host = self.host
        if now is None:
            now = self.loop.time()
        self._servicing = True
        try:
            ready = host.pop_ready()
            if self._carry:
                ready |= self._carry
                self._carry = None
            for _ in range(_MAX_ROUNDS):
                if ready:
                    self._dispatch(ready)
                    if self._closed:              # a callback closed the stack
                        return
                out = host.transmit(now)
                if out:
                    self._send(out)
                ready = host.pop_ready()
                if not ready:
                    break
            else:
                self._carry = ready               # more to do: continue next loop turn
        finally:
            self._servicing = False
        if self._carry:
            self.kick()
        self._arm_timer()

    def _dispatch(self, ready: Any) -> None:
        handlers = self._handlers
        for obj in ready:
            h = handlers.get(obj)
            if h is None:
                continue
            try:
                h._on_ready()
            except Exception as e:                 # a protocol callback raised
                self.stats["callback_errors"] += 1
                self.loop.call_exception_handler({
                    "message": "fasttcp: exception in a protocol or transport callback",
                    "exception": e, "handler": h})

    def _arm_timer(self) -> None:
        if self._closed:
            return
        when = self.host.poll_at()
        t = self._timer
        if when is None:
            if t is not None:
                t.cancel()
                self._timer = None
                self._timer_when = None
            return
        if t is not None:
            # A deadline that moved later (every ACK pushes the RTO) keeps the armed
            # timer: waking early is harmless and cheaper than a new heap entry each time.
            if t.when() <= when:
                return
            t.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_when = when

    # ===================================================================================
    # Output
    # ===================================================================================

    def _send(self, packets: List[bytes]) -> None:
        if self._closed:
            return
        self.stats["packets_out"] += len(packets)
        if self._send_busy or self._pending:
            self._defer(packets)
            return
        self._write(packets)

    def _defer(self, packets: Any) -> None:
        room = self.max_pending - len(self._pending)
        if room < len(packets):
            self.stats["send_dropped"] += len(packets) - max(room, 0)
            packets = list(packets)[:max(room, 0)]
        # A SplitPacket points into a send ring that moves on: what waits is copied.
        self._pending.extend([bytes(p) if type(p) is SplitPacket else p for p in packets])
        self.stats["send_deferred"] += len(packets)

    def _write(self, packets: List[bytes]) -> None:
        """Hand ``packets`` to the link; keep what it does not take."""
        if self._fd is not None:
            try:
                n = self.link.send_batch(packets)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                log.error("fasttcp: link write failed, %d packets lost: %r", len(packets), e)
                return
            if self._delays_packets:
                self._arm_link_timer()
            if n is None or n >= len(packets):
                return
            self._defer(packets[n:])
            self._send_busy = True
            self.loop.add_writer(self._fd, self._on_writable)
            return
        try:
            r = self._io.send(packets)
        except Exception as e:
            log.error("fasttcp: packet sink failed, %d packets lost: %r", len(packets), e)
            return
        if r is not None and inspect.isawaitable(r):
            self._send_busy = True
            fut = asyncio.ensure_future(r)
            fut.add_done_callback(self._io_send_done)

    def _arm_link_timer(self) -> None:
        """A link that delays packets (a FaultyLink wrapper) passes them on only when
        flushed: wake up by its next arrival, which is a time on the link's clock."""
        link = self.link
        when = link.next_arrival()
        if when is None or self._closed:
            return
        t = self._link_timer
        if t is not None:
            if self._link_timer_when is not None and self._link_timer_when <= when:
                return
            t.cancel()
        self._link_timer = self.loop.call_later(max(0.0, when - link.clock()),
                                                self._on_link_timer)
        self._link_timer_when = when

    def _on_link_timer(self) -> None:
        self._link_timer = self._link_timer_when = None
        if self._closed:
            return
        try:
            self.link.flush()
        except OSError as e:
            log.error("fasttcp: link flush failed: %r", e)
        if self._fd is not None:
            # Received packets it delayed (FaultyLink's rx pipe) are due now: read them.
            self._on_readable()
            if self._closed:
                return
        self._arm_link_timer()

    def _on_writable(self) -> None:
        self.loop.remove_writer(self._fd)
        self._send_busy = False
        self._drain_pending()

    def _io_send_done(self, fut: asyncio.Future) -> None:
        self._send_busy = False
        if not fut.cancelled() and fut.exception() is not None:
            log.error("fasttcp: packet sink failed: %r", fut.exception())
        if not self._closed:
            self._drain_pending()

    def _drain_pending(self) -> None:
        if not self._pending:
            return
        packets = list(self._pending)
        self._pending.clear()
        self._write(packets)

    # ===================================================================================

    def __repr__(self) -> str:
        kind = f"fd={self._fd}" if self._fd is not None else type(self._io).__name__
        return f"<{type(self).__name__} {self.host.address} {kind} handlers={len(self._handlers)}>"
