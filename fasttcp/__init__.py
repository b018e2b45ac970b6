"""fasttcp: a user-space TCP/IP stack for Python with a typed-Cython hot path.

The sans-IO core is :class:`Host`: feed it packets with :meth:`Host.receive`, take packets
from :meth:`Host.transmit`, and ask :meth:`Host.poll_at` when to come back.
"""
from fasttcp.host.host import Host, Interceptor, Listener, PendingFlow
from fasttcp.host.settings import Settings
from fasttcp.host.udp import UdpEndpoint, UdpFlow, UdpInterceptor
from fasttcp.tcp.connection import Connection, ConnectionInfo
from fasttcp.tcp.errors import (ConnectionAborted, ConnectionClosed, ConnectionRefused,
                                ConnectionReset, ConnectionTimedOut, TcpError)
from fasttcp.tcp.states import State

__version__ = "0.1.0"

__all__ = [
    "Connection", "ConnectionAborted", "ConnectionClosed", "ConnectionInfo",
    "ConnectionRefused", "ConnectionReset", "ConnectionTimedOut", "Host", "Interceptor",
    "Listener", "PendingFlow", "Settings", "State", "TcpError", "UdpEndpoint", "UdpFlow",
    "UdpInterceptor", "__version__",
]
