"""Where a relayed flow goes: the choices ``Relay``'s ``upstream`` callback returns."""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional, Tuple, Union


class Direct:
    """Relay the flow with a kernel socket to its original destination."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Direct()"


class Refuse:
    """Refuse the flow: RST to a TCP client; a UDP flow is closed (its datagrams get no
    answer)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Refuse()"


class Socks5:
    """Relay through a SOCKS5 proxy: TCP with CONNECT (RFC 1928 4, python-socks), UDP with
    a UDP ASSOCIATE per flow (RFC 1928 7). ``username``/``password``: RFC 1929."""

    __slots__ = ("host", "port", "username", "password")

    def __init__(self, host: str, port: int, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.host, self.port = host, int(port)
        self.username, self.password = username, password

    def __repr__(self) -> str:
        return f"Socks5({self.host!r}, {self.port})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Socks5) and (self.host, self.port, self.username,
                                               self.password)
                == (other.host, other.port, other.username, other.password))

    def __hash__(self) -> int:
        return hash((self.host, self.port))


ProtocolFactory = Callable[[], Any]
#: An async callable that opens the upstream side itself: given a protocol factory, it
#: returns ``(transport, protocol)`` as ``loop.create_connection`` does.
Opener = Callable[[ProtocolFactory], Awaitable[Tuple[Any, Any]]]
UpstreamChoice = Union[Direct, Socks5, Refuse, Opener]
