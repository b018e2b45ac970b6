"""``Relay``: what a stack intercepts, relayed flow by flow (see the package docstring)."""
from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from fasttcp.relay.pump import (READ_SIZE, Flow, _hostport, _refuse, _reset, _TcpFlow,
                                 _TcpUpstream, _UdpFlow, _UdpUpstream)
from fasttcp.relay.socks5 import _CONNECT_ERRORS, _socks5_connect, _socks5_udp_associate
from fasttcp.relay.upstream import Direct, Refuse, Socks5


log = logging.getLogger("fasttcp.relay")

# ==========================================================================================
# The relay
# ==========================================================================================

_STAT_KEYS = ("tcp_flows", "tcp_connecting", "udp_flows", "tcp_flows_total",
              "tcp_refused_upstream", "tcp_refused_limit", "tcp_dropped_limit",
              "tcp_refused_by_choice", "tcp_client_gone", "tcp_client_resets",
              "tcp_upstream_resets", "udp_flows_total", "udp_refused", "udp_open_failed",
              "udp_dropped", "udp_unreachable", "udp_client_unreachable",
              "bytes_up", "bytes_down")


class Relay:
    """Relay what ``stack`` intercepts in ``routes`` (CIDR prefixes of either family) to
    its original destination; see the module docstring.

    ``upstream(flow)`` (sync or async; None: always :class:`Direct`) returns a
    :class:`Direct`, :class:`Socks5`, :class:`Refuse` or an opener for each new flow.
    ``udp`` False leaves UDP alone. ``udp_timeout``: seconds an idle UDP flow lives.
    ``max_flows``: TCP flows at once (and UDP flows at once); ``max_connecting``: TCP flows
    at once whose upstream connection is still being made; ``connect_timeout``: seconds
    the upstream connection may take before the client is refused.

    ``await relay.start()`` starts intercepting; ``await relay.close()`` stops, and resets
    every flow still open. Also an async context manager.
    """

    def __init__(self, stack: Any, routes: Iterable[str], *,
                 upstream: Optional[Callable[[Flow], Any]] = None, udp: bool = True,
                 udp_timeout: float = 60.0, max_flows: int = 4096, max_connecting: int = 512,
                 connect_timeout: float = 10.0) -> None:
        self.stack = stack
        self.routes: Tuple[str, ...] = tuple(str(r) for r in routes)
        if not self.routes:
            raise ValueError("a relay needs at least one route")
        if max_flows < 1 or max_connecting < 1:
            raise ValueError("max_flows and max_connecting must be at least 1")
        if udp_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("udp_timeout and connect_timeout must be more than 0")
        self.upstream = upstream
        self.udp = udp
        self.udp_timeout = float(udp_timeout)
        self.max_flows = int(max_flows)
        self.max_connecting = int(max_connecting)
        self.connect_timeout = float(connect_timeout)
        self._rbuf = memoryview(bytearray(READ_SIZE))      # fasttcp side -> upstream
        self._ubuf = memoryview(bytearray(READ_SIZE))      # upstream -> fasttcp side
        self._tcp: Set[_TcpFlow] = set()
        self._udp: Set[_UdpFlow] = set()
        self._connecting: Dict[_TcpFlow, Tuple["asyncio.Task[None]", Any]] = {}
        self._counts: Dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._bytes = [0, 0]                 # of flows that have ended
        self._icpt: Any = None
        self._uicpt: Any = None
        self._closed = False

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._icpt is not None:
            raise RuntimeError("relay already started")
        self._icpt = self.stack.intercept(list(self.routes), self._on_tcp)
        if self.udp:
            self._uicpt = self.stack.intercept_udp(list(self.routes), self._udp_factory,
                                                   idle_timeout=self.udp_timeout,
                                                   max_flows=self.max_flows)

    async def close(self) -> None:
        """Stop intercepting; reset every TCP flow (both sides) and close every UDP flow."""
        if self._closed:
            return
        self._closed = True
        for icpt in (self._icpt, self._uicpt):
            if icpt is not None:
                icpt.close()
        for task, _iflow in list(self._connecting.values()):
            task.cancel()
        for flow in list(self._tcp):
            if flow.ct is not None:
                flow.ct.abort()
            _reset(flow.ut)
        for uflow in list(self._udp):
            if uflow.ct is not None:
                uflow.ct.close()
            if uflow.ut is not None:
                uflow.ut.close()
        tasks = [t for t, _ in self._connecting.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await asyncio.sleep(0)               # connection_lost callbacks
        self.stack.kick()

    async def __aenter__(self) -> "Relay":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # --- what is going on -----------------------------------------------------------------

    def flows(self) -> List[Flow]:
        return [*self._tcp, *self._udp]

    def stats(self) -> Dict[str, int]:
        out = dict(self._counts)
        out["tcp_flows"] = len(self._tcp)
        out["tcp_connecting"] = len(self._connecting)
        out["udp_flows"] = len(self._udp)
        up, down = self._bytes
        for f in self._tcp:
            up += f.bytes_up
            down += f.bytes_down
        for u in self._udp:
            up += u.bytes_up
            down += u.bytes_down
        out["bytes_up"], out["bytes_down"] = up, down
        return out

    def _count(self, key: str) -> None:
        self._counts[key] += 1

    def _forget(self, flow: Flow) -> None:
        if isinstance(flow, _TcpFlow):
            self._tcp.discard(flow)
        else:
            self._udp.discard(flow)
        self._bytes[0] += flow.bytes_up
        self._bytes[1] += flow.bytes_down

    async def _choose(self, flow: Flow) -> Any:
        if self.upstream is None:
            return _DIRECT
        choice = self.upstream(flow)
        if inspect.isawaitable(choice):
            choice = await choice
        return _DIRECT if choice is None else choice

    # --- TCP ------------------------------------------------------------------------------

    def _on_tcp(self, iflow: Any) -> None:
        """A new intercepted TCP flow (its SYN, before any answer)."""
        if self._closed:
            _refuse(iflow)
            return
        if len(self._tcp) >= self.max_flows:
            self._count("tcp_refused_limit")
            _refuse(iflow)
            return
        if len(self._connecting) >= self.max_connecting:
            self._count("tcp_dropped_limit")
            try:
                iflow.drop()
            except ConnectionError:
                pass
            return
        flow = _TcpFlow(self, iflow.remote_address, iflow.local_address)
        self._tcp.add(flow)
        self._counts["tcp_flows_total"] += 1
        task = asyncio.get_running_loop().create_task(self._open_tcp(flow, iflow))
        self._connecting[flow] = (task, iflow)

    async def _open_tcp(self, flow: _TcpFlow, iflow: Any) -> None:
        """Connect upstream (within connect_timeout), then complete the client's handshake;
        refuse the client if the upstream cannot be had."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        expired: List[bool] = []

        def expire() -> None:            # a timer, not wait_for: no second task per flow
            expired.append(True)
            if task is not None:
                task.cancel()
        timer = loop.call_later(self.connect_timeout, expire)
        try:
            try:
                up = await self._connect_tcp(flow)
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            if not expired:                  # the relay is closing
                _reset(flow.ut)
                _refuse(iflow)
                flow._end()
                self._connecting.pop(flow, None)
                raise
            up = False
            log.debug("relay: %r: upstream timed out", flow)
        except _CONNECT_ERRORS as e:
            # Refused, unreachable, or the proxy said no (RFC 1928 6 REP != 0).
            log.debug("relay: %r: upstream failed: %r", flow, e)
            up = False
        except BaseException:
            self._connecting.pop(flow, None)
            _reset(flow.ut)
            _refuse(iflow)
            flow._end()
            raise
        self._connecting.pop(flow, None)
        if up is None:                       # Refuse()
            self._count("tcp_refused_by_choice")
            _refuse(iflow)
            flow._end()
            return
        ut = flow.ut
        if not up or ut is None or ut.is_closing():
            # Refused, unreachable, timed out, or connected and reset at once: the client
            # gets RST, as from a closed port.
            self._count("tcp_refused_upstream")
            _reset(ut)
            _refuse(iflow)
            flow._end()
            return
        # asyncio's socket transport sends what it is given or copies the rest at once, so
        # it may be handed views of the shared read buffer; any other transport gets bytes.
        flow.copy = type(ut).__module__ != "asyncio.selector_events"
        try:
            await iflow.accept(lambda: flow)
        except ConnectionError:
            self._count("tcp_client_gone")
            _reset(ut)
            flow._end()
        except OSError:
            # The host holds max_connections already (ENOBUFS): the flow is still
            # pending, and is refused like any other we cannot take.
            self._count("tcp_refused_limit")
            _reset(ut)
            _refuse(iflow)
            flow._end()
        except asyncio.CancelledError:
            _reset(ut)
            flow._end()
            raise

    async def _connect_tcp(self, flow: _TcpFlow) -> Optional[bool]:
        """Open the upstream side as ``upstream(flow)`` says: True once it is connected,
        None for Refuse(); connection errors are raised."""
        loop = asyncio.get_running_loop()
        choice = await self._choose(flow)
        dest = flow.destination
        if isinstance(choice, Refuse):
            return None
        if isinstance(choice, Direct):
            flow.via = "direct"
            await loop.create_connection(lambda: _TcpUpstream(flow), dest[0], dest[1])
        elif isinstance(choice, Socks5):
            flow.via = f"socks5 {_hostport((choice.host, choice.port))}"
            sock = await _socks5_connect(choice, dest, self.connect_timeout)
            try:
                await loop.create_connection(lambda: _TcpUpstream(flow), sock=sock)
            except BaseException:
                sock.close()
                raise
        elif callable(choice):
            flow.via = getattr(choice, "__name__", "opener")
            await choice(lambda: _TcpUpstream(flow))
        else:
            raise TypeError(f"upstream() returned {choice!r}: not Direct, Socks5, Refuse "
                            "or an opener")
        return True

    # --- UDP ------------------------------------------------------------------------------

    def _udp_factory(self, destination: Tuple[Any, ...], client: Tuple[Any, ...]) -> _UdpFlow:
        flow = _UdpFlow(self, destination, client)
        self._udp.add(flow)
        self._counts["udp_flows_total"] += 1
        return flow

    def _start_udp(self, flow: _UdpFlow) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self._open_udp(flow))

    async def _open_udp(self, flow: _UdpFlow) -> None:
        loop = asyncio.get_running_loop()
        ut: Any = None
        try:
            choice = await self._choose(flow)
            if isinstance(choice, Refuse):
                self._count("udp_refused")
                flow.ct.close()
                return
            if isinstance(choice, Socks5):
                flow.via = f"socks5 {_hostport((choice.host, choice.port))}"
                ut = await _socks5_udp_associate(choice, flow, self.connect_timeout)
            elif isinstance(choice, Direct):
                flow.via = "direct"
                dest = flow.destination
                family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
                ut, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpUpstream(flow), remote_addr=(dest[0], dest[1]),
                    family=family)
            elif callable(choice):
                flow.via = getattr(choice, "__name__", "opener")
                ut, _ = await asyncio.wait_for(choice(lambda: _UdpUpstream(flow)),
                                               self.connect_timeout)
            else:
                raise TypeError(f"upstream() returned {choice!r}")
        except (OSError, EOFError, asyncio.TimeoutError) as e:
            log.debug("relay: %r: upstream failed: %r", flow, e)
            self._count("udp_open_failed")
            if flow.ct is not None:
                flow.ct.close()
            return
        if flow.done:
            ut.close()
            return
        flow.ut = ut
        pending, flow.pending = flow.pending, None
        for data in pending or ():
            ut.sendto(data)


_DIRECT = Direct()
