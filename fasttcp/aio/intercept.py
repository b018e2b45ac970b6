"""TCP interception on the event loop: :meth:`FastTcpStack.intercept` (the sans-IO side is
:meth:`fasttcp.Host.intercept` with ``decide=True``; docs/ARCHITECTURE.md "Interception").

Every new TCP flow to a destination inside the prefixes is handed to ``on_flow`` as an
:class:`InterceptedFlow` before the handshake completes; the application accepts it (and
gets a normal :class:`TcpTransport` whose ``sockname`` is the original destination),
refuses it (the client gets a RST: "Connection refused") or drops it.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Tuple, Union

from fasttcp.aio.transport import TcpTransport

if TYPE_CHECKING:                                   # pragma: no cover
    from fasttcp.aio import FastTcpStack
    from fasttcp.host.host import Interceptor, PendingFlow

__all__ = ["AioInterceptor", "InterceptedFlow"]


class InterceptedFlow:
    """A new TCP flow to an intercepted destination, waiting for a decision.

    ``local_address`` is the original destination and ``remote_address`` the client, as
    ``sockname`` / ``peername`` ((host, port), or (host, port, 0, 0) for IPv6)."""

    def __init__(self, owner: "AioInterceptor", pf: "PendingFlow") -> None:
        self._owner = owner
        self._pf = pf
        self.local_address: Tuple[Any, ...] = pf.local_address
        self.remote_address: Tuple[Any, ...] = pf.remote_address

    async def accept(self, protocol_factory: Callable[[], asyncio.BaseProtocol]
                     ) -> Tuple[TcpTransport, asyncio.BaseProtocol]:
        """Complete the handshake; returns ``(transport, protocol)`` once the connection
        is established. Raises ConnectionError when the client reset or gave up first,
        or the flow expired (settings.intercept_pending_timeout) or was decided before;
        cancelling resets the connection."""
        stack = self._owner._stack
        stack.host.advance_clock(stack.loop.time())
        conn = self._pf.accept()           # ConnectionError when no longer pending
        try:
            return await stack._established(conn, protocol_factory)
        except ConnectionError:
            raise
        except OSError as exc:                   # e.g. the SYN-ACK retries ran out
            raise ConnectionError(f"the client did not complete the handshake: "
                                  f"{exc}") from exc

    def refuse(self) -> None:
        """Reset the client as a closed port would (its connect() fails with
        ECONNREFUSED). Raises ConnectionError when the flow is no longer pending."""
        self._pf.refuse()
        self._owner._stack.kick()

    def drop(self) -> None:
        """Forget the flow without an answer (the client's next SYN comes back as a new
        flow). Raises ConnectionError when the flow is no longer pending."""
        self._pf.drop()

    @property
    def pending(self) -> bool:
        """Whether the flow still waits for accept(), refuse() or drop()."""
        return bool(self._pf.pending)

    def __repr__(self) -> str:
        return f"<InterceptedFlow {self.remote_address} > {self.local_address}>"


class AioInterceptor:
    """The handle :meth:`FastTcpStack.intercept` returns: :meth:`close` stops
    intercepting (connections already accepted go on)."""

    def __init__(self, stack: "FastTcpStack", prefixes: Union[str, Iterable[str]],
                 on_flow: Callable[[InterceptedFlow], Any],
                 backlog: Optional[int] = None) -> None:
        self._stack = stack
        self._on_flow = on_flow
        self.interceptor: Optional["Interceptor"] = stack.host.intercept(
            prefixes, decide=True, backlog=backlog)
        self.prefixes: Tuple[str, ...] = self.interceptor.prefixes
        stack.register(self.interceptor, self)

    def _on_ready(self) -> None:
        icpt = self.interceptor
        if icpt is None:
            return
        for pf in icpt.pop_pending():
            flow = InterceptedFlow(self, pf)
            try:
                self._on_flow(flow)
            except Exception as exc:
                # A failing handler must not leave the client waiting for the timeout.
                if pf.pending:
                    pf.refuse()
                    self._stack.kick()
                self._stack.loop.call_exception_handler({
                    "message": "fasttcp: intercept on_flow callback failed",
                    "exception": exc, "flow": flow})
        # Accepted flows are awaited by InterceptedFlow.accept (a _Connector each): the
        # interceptor's own queue of established connections is only emptied.
        while icpt.accept() is not None:
            pass

    def close(self) -> None:
        """Stop intercepting: packets to the prefixes are no longer taken (not our
        addresses), pending flows are forgotten; accepted connections go on."""
        icpt, self.interceptor = self.interceptor, None
        if icpt is None:
            return
        self._stack.unregister(icpt)
        icpt.close()
        self._stack.kick()

    def is_closed(self) -> bool:
        return self.interceptor is None

    def __repr__(self) -> str:
        return f"<AioInterceptor {', '.join(self.prefixes)}>"
