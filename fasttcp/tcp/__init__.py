"""TCP: the RFC 9293 engine, and its public policy and error types.

The extension point is :class:`CongestionControl`: subclass it and pass the class as the
``congestion`` setting of :class:`fasttcp.Host` (or register it in :data:`ALGORITHMS` under
a name). This package imports nothing from :mod:`fasttcp.host`.
"""
from fasttcp.tcp.congestion import (ALGORITHMS, INFINITE_SSTHRESH, CongestionControl, NewReno,
                                    resolve, rfc6928_initial_window)
from fasttcp.tcp.cubic import Cubic
from fasttcp.tcp.errors import (ConnectionAborted, ConnectionClosed, ConnectionRefused,
                                ConnectionReset, ConnectionTimedOut, TcpError)
from fasttcp.tcp.states import State

__all__ = [
    "ALGORITHMS", "INFINITE_SSTHRESH", "CongestionControl", "ConnectionAborted",
    "ConnectionClosed", "ConnectionRefused", "ConnectionReset", "ConnectionTimedOut", "Cubic",
    "NewReno", "State", "TcpError", "resolve", "rfc6928_initial_window",
]
