"""The sans-IO host: addresses, demultiplexing, listeners, ICMP and timers."""
from fasttcp.host.host import Host, Listener
from fasttcp.host.settings import Settings

__all__ = ["Host", "Listener", "Settings"]
