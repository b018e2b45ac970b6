"""Typed connection errors; each is also the built-in exception asyncio users expect."""


class TcpError(OSError):
    """Base of the errors a connection reports."""


class ConnectionRefused(TcpError, ConnectionRefusedError):
    """The peer answered our SYN with a RST (or an ICMP port unreachable)."""


class ConnectionReset(TcpError, ConnectionResetError):
    """The peer reset an established connection."""


class ConnectionTimedOut(TcpError, TimeoutError):
    """Retransmissions or keepalive probes ran out (RFC 9293 3.8.3, RFC 1122 4.2.3.5)."""


class ConnectionAborted(TcpError, ConnectionAbortedError):
    """This side aborted the connection (abort(), or a listener closed before accept)."""


class ConnectionClosed(TcpError, BrokenPipeError):
    """A send after shutdown()/close() ("connection closing", RFC 9293 3.10.4)."""
