"""The sans-IO host: addresses, demultiplexing, listeners, interception, UDP, ICMP and
timers."""
from fasttcp.host.host import Host, Interceptor, Listener, PendingFlow
from fasttcp.host.settings import Settings
from fasttcp.host.udp import UdpEndpoint, UdpFlow, UdpInterceptor

__all__ = ["Host", "Interceptor", "Listener", "PendingFlow", "Settings", "UdpEndpoint",
           "UdpFlow", "UdpInterceptor"]
