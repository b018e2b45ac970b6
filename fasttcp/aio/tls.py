"""TLS over fasttcp transports, on any event loop.

The TLS record layer is asyncio's own: :class:`asyncio.sslproto.SSLProtocol` (an
:class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO`) runs as the protocol of a
:class:`~fasttcp.aio.TcpTransport` and gives the application an ``_SSLProtocolTransport``,
exactly what ``loop.create_connection(ssl=...)`` builds over a socket. It is pure Python
and needs only the public loop API, so it works under uvloop too, whose ``loop.start_tls``
accepts only uvloop's own transport classes. The handshake, close_notify on close, the
handshake and shutdown timeouts, flow control, and ``write_eof`` (not supported over TLS)
all behave as with asyncio's sockets.
"""
from __future__ import annotations

import asyncio
import ssl as _ssl
import sys
from asyncio import sslproto
from typing import Any, Optional, Union

__all__ = ["check_ssl_args", "make_ssl_protocol", "start_tls"]

SslArg = Union[None, bool, _ssl.SSLContext]


def check_ssl_args(ssl: SslArg, server_hostname: Optional[str],
                   ssl_handshake_timeout: Optional[float],
                   ssl_shutdown_timeout: Optional[float]) -> None:
    """The argument checks asyncio's create_connection / create_server make."""
    if ssl is not None and not isinstance(ssl, (bool, _ssl.SSLContext)):
        raise TypeError(f"ssl is expected to be a bool or an ssl.SSLContext, got {ssl!r}")
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    for name, value in (("ssl_handshake_timeout", ssl_handshake_timeout),
                        ("ssl_shutdown_timeout", ssl_shutdown_timeout)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} should be a positive number, got {value}")
    if ssl_shutdown_timeout is not None:
        if not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sys.version_info < (3, 11):
            raise ValueError("ssl_shutdown_timeout needs Python 3.11 (asyncio's TLS layer)")


def make_ssl_protocol(loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol,
                      ssl: SslArg, waiter: asyncio.Future, *, server_side: bool,
                      server_hostname: Optional[str], call_connection_made: bool = True,
                      ssl_handshake_timeout: Optional[float] = None,
                      ssl_shutdown_timeout: Optional[float] = None
                      ) -> sslproto.SSLProtocol:
    """asyncio's TLS protocol for ``app_protocol``; ``ssl=True`` means a default context
    (as in asyncio). ``waiter`` gets the handshake's outcome."""
    kwargs: Any = {"ssl_handshake_timeout": ssl_handshake_timeout}
    if ssl_shutdown_timeout is not None:          # 3.11+ (check_ssl_args)
        kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    context = None if isinstance(ssl, bool) else ssl
    # None: SSLProtocol makes asyncio's default client context (typeshed omits None).
    return sslproto.SSLProtocol(
        loop, app_protocol, context, waiter, server_side,  # type: ignore[arg-type]
        server_hostname, call_connection_made=call_connection_made, **kwargs)


async def start_tls(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                    sslcontext: _ssl.SSLContext, *, server_side: bool = False,
                    server_hostname: Optional[str] = None,
                    ssl_handshake_timeout: Optional[float] = None,
                    ssl_shutdown_timeout: Optional[float] = None) -> asyncio.Transport:
    """Upgrade an open ``transport`` (whose protocol is ``protocol``) to TLS; returns the
    new transport ``protocol`` uses from now on. The steps of asyncio's
    ``BaseEventLoop.start_tls``, on whatever loop is running."""
    if not isinstance(sslcontext, _ssl.SSLContext):
        raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                        f"got {sslcontext!r}")
    if not getattr(transport, "_start_tls_compatible", False):
        raise TypeError(f"transport {transport!r} is not supported by start_tls()")
    if ssl_shutdown_timeout is not None and sys.version_info < (3, 11):
        raise ValueError("ssl_shutdown_timeout needs Python 3.11 (asyncio's TLS layer)")
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    ssl_protocol = make_ssl_protocol(
        loop, protocol, sslcontext, waiter, server_side=server_side,
        server_hostname=server_hostname, call_connection_made=False,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    # Paused first, so that no data reaches the TLS protocol before connection_made().
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    conmade_cb = loop.call_soon(ssl_protocol.connection_made, transport)
    resume_cb = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        conmade_cb.cancel()
        resume_cb.cancel()
        raise
    return ssl_protocol._app_transport
