"""The standard asyncio streams (StreamReader / StreamWriter) over fasttcp transports.

The same objects ``asyncio.open_connection`` / ``asyncio.start_server`` return, built the
same way: an :class:`asyncio.StreamReaderProtocol` on a :class:`~fasttcp.aio.TcpTransport`.
The stack object exposes these as ``stack.open_connection`` and ``stack.start_server``.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from fasttcp.aio import FastTcpStack
    from fasttcp.aio.transport import Server

__all__ = ["open_connection", "start_server"]

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
