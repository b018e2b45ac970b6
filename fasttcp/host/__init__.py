"""The sans-IO host: addresses, demultiplexing, listeners, UDP, ICMP and timers."""
from fasttcp.host.host import Host, Listener
from fasttcp.host.settings import Settings
from fasttcp.host.udp import UdpEndpoint, UdpFlow, UdpInterceptor

__all__ = ["Host", "Listener", "Settings", "UdpEndpoint", "UdpFlow", "UdpInterceptor"]
