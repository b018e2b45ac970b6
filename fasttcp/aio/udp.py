"""UDP on the event loop (issue 15): ``FastTcpStack.create_datagram_endpoint`` and
``FastTcpStack.intercept_udp``.

The transports are real :class:`asyncio.DatagramTransport` s over the host's
:class:`~fasttcp.host.udp.UdpEndpoint` / :class:`~fasttcp.host.udp.UdpFlow`: the driver
routes the host's readiness to ``_on_ready`` (as for TCP), which hands every queued
datagram to ``datagram_received`` and errors to ``error_received``, in asyncio's order.
A datagram is handed to the host at once (it leaves at the driver's next flush), so the
write buffer is always empty and ``pause_writing`` never comes.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Tuple

from fasttcp.host.udp import UdpEndpoint, UdpFlow, UdpInterceptor

if TYPE_CHECKING:
    from fasttcp.aio.driver import Driver

__all__ = ["AioUdpInterceptor", "UdpFlowTransport", "UdpTransport"]

#: protocol_factory(flow_local_address, flow_remote_address) of ``intercept_udp``
FlowProtocolFactory = Callable[[Tuple[Any, ...], Tuple[Any, ...]], asyncio.DatagramProtocol]


class _Base(asyncio.DatagramTransport):
    def __init__(self, driver: "Driver", key: Any, protocol: asyncio.DatagramProtocol,
                 sockname: Tuple[Any, ...], peername: Optional[Tuple[Any, ...]]) -> None:
        super().__init__()
        self._driver = driver
        self._key = key
        self._protocol = protocol
        self._closing = False
        self._extra = {"sockname": sockname, "peername": peername}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_write_buffer_size(self) -> int:
        return 0                    # handed to the host at once

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._release()
        self._driver.unregister(self._key)
        self._driver.kick()
        self._driver.loop.call_soon(self._protocol.connection_lost, None)

    def _release(self) -> None:
        raise NotImplementedError


class UdpTransport(_Base):
    """``create_datagram_endpoint``'s transport over a bound :class:`UdpEndpoint`."""

    def __init__(self, driver: "Driver", ep: UdpEndpoint, protocol: asyncio.DatagramProtocol,
                 peername: Optional[Tuple[Any, ...]]) -> None:
        super().__init__(driver, ep, protocol, ep.local_address, peername)
        self._ep = ep

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return                    # as asyncio after close(): silently dropped
        peer = self._extra["peername"]
        if peer is not None and addr is not None and tuple(addr)[:2] != tuple(peer)[:2]:
            raise ValueError(f"Invalid address: must be None or {peer}")
        try:
            self._ep.sendto(data, None if peer is not None else addr)
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        self._driver.kick()

    def _release(self) -> None:
        self._ep.close()

    def _on_ready(self) -> None:
        ep = self._ep
        proto = self._protocol
        while not self._closing:
            try:
                got = ep.recvfrom()
            except OSError as exc:
                proto.error_received(exc)
                continue
            if got is None:
                return
            proto.datagram_received(got[0], got[1])


class UdpFlowTransport(_Base):
    """The transport of one intercepted flow: ``sendto(data)`` answers the client from the
    original destination; ``unreachable(code)`` sends it ICMP destination unreachable. An
    ICMP error from the client about the flow's datagram comes to ``error_received`` (as
    asyncio's connected datagram transports), and the transport stays open."""

    def __init__(self, driver: "Driver", flow: UdpFlow,
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__(driver, flow, protocol, flow.local_address, flow.remote_address)
        self._flow = flow

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        peer = self._flow.remote_address
        if addr is not None and tuple(addr)[:2] != peer[:2]:
            raise ValueError(f"Invalid address: must be None or {peer}")
        try:
            self._flow.send(data)
        except OSError as exc:              # a pending ICMP error, as UdpTransport's
            self._protocol.error_received(exc)
            return
        self._driver.kick()

    def unreachable(self, code: int = 3) -> None:
        """ICMP (type 3) / ICMPv6 (type 1) destination unreachable to the client, quoting
        its last datagram (default code 3: port unreachable; for IPv6 pass 4)."""
        self._flow.unreachable(code)
        self._driver.kick()

    def _release(self) -> None:
        self._flow.close()

    def _on_ready(self) -> None:
        flow = self._flow
        proto = self._protocol
        client = flow.remote_address
        while not self._closing:
            try:
                data = flow.recv()
            except OSError as exc:          # an ICMP error from the client (the flow lives)
                proto.error_received(exc)
                continue
            if data is None:
                break
            proto.datagram_received(data, client)
        if flow.closed and not self._closing:       # idle timeout
            self.close()


class AioUdpInterceptor:
    """``FastTcpStack.intercept_udp``: a protocol per intercepted flow."""

    def __init__(self, driver: "Driver", ui: UdpInterceptor,
                 protocol_factory: FlowProtocolFactory) -> None:
        self._driver = driver
        self.interceptor = ui
        self._factory = protocol_factory

    @property
    def prefixes(self) -> Tuple[str, ...]:
        return self.interceptor.prefixes

    def _on_ready(self) -> None:
        while True:
            flow = self.interceptor.accept()
            if flow is None:
                return
            protocol = self._factory(flow.local_address, flow.remote_address)
            transport = UdpFlowTransport(self._driver, flow, protocol)
            self._driver.register(flow, transport)
            protocol.connection_made(transport)
            transport._on_ready()

    def close(self) -> None:
        """Stop intercepting (flows already made live on)."""
        self.interceptor.close()
        self._driver.unregister(self.interceptor)


def _bind_args(local_addr: Optional[Tuple[Any, ...]]) -> Tuple[int, Optional[str]]:
    if local_addr is None:
        return 0, None
    address = local_addr[0] or None
    if address in ("0.0.0.0", "::"):
        address = None
    return int(local_addr[1]), address


def _prefix_list(prefixes: Iterable[str]) -> Iterable[str]:
    return [prefixes] if isinstance(prefixes, str) else list(prefixes)
