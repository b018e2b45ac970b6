"""The standard asyncio streams (StreamReader / StreamWriter) over fasttcp transports.

The same objects ``asyncio.open_connection`` / ``asyncio.start_server`` return, built the
same way: an :class:`asyncio.StreamReaderProtocol` on a :class:`~fasttcp.aio.TcpTransport`.
The stack object exposes these as ``stack.open_connection`` and ``stack.start_server``.
"""
from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from fasttcp.aio import FastTcpStack
    from fasttcp.aio.transport import Server

__all__ = ["open_connection", "start_server", "start_tls"]

#: asyncio's default StreamReader buffer limit.
DEFAULT_LIMIT = 2 ** 16

ClientConnectedCb = Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                             Union[None, Awaitable[None]]]


async def open_connection(stack: "FastTcpStack", host: str, port: int, *,
                          limit: int = DEFAULT_LIMIT, **kwargs: Any
                          ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``host:port`` through ``stack``; returns ``(reader, writer)``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await stack.create_connection(lambda: protocol, host, port, **kwargs)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def start_server(stack: "FastTcpStack", client_connected_cb: ClientConnectedCb,
                       port: int, *, limit: int = DEFAULT_LIMIT, **kwargs: Any) -> "Server":
    """Listen on ``port``; ``client_connected_cb(reader, writer)`` runs per connection (a
    coroutine function becomes a task). ``kwargs`` go to ``stack.create_server``
    (``backlog``, ``start_serving``, ``ssl``, ...)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await stack.create_server(factory, port, **kwargs)


async def start_tls(stack: "FastTcpStack", writer: asyncio.StreamWriter,
                    sslcontext: _ssl.SSLContext, *, server_hostname: Optional[str] = None,
                    ssl_handshake_timeout: Optional[float] = None,
                    ssl_shutdown_timeout: Optional[float] = None) -> None:
    """Upgrade the streams of ``writer`` (and its reader) to TLS, on any event loop: what
    ``StreamWriter.start_tls`` does, with ``stack.start_tls`` in place of the loop's
    (uvloop's refuses fasttcp transports). The server side is the one ``start_server``
    made, as in asyncio."""
    protocol: Any = writer._protocol                  # type: ignore[attr-defined]
    server_side = protocol._client_connected_cb is not None
    await writer.drain()
    transport = await stack.start_tls(writer.transport, protocol, sslcontext,
                                      server_side=server_side,
                                      server_hostname=server_hostname,
                                      ssl_handshake_timeout=ssl_handshake_timeout,
                                      ssl_shutdown_timeout=ssl_shutdown_timeout)
    # The stream objects now write through, and report the extra info of, the TLS
    # transport: the steps of StreamWriter.start_tls and StreamReaderProtocol._replace_writer.
    writer._transport = transport                     # type: ignore[attr-defined]
    protocol._stream_writer = writer
    protocol._transport = transport
    protocol._over_ssl = True
