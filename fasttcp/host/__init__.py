"""The sans-IO host: addresses, demultiplexing, listeners, ICMP and timers."""
from fasttcp.host.host import Host, Interceptor, Listener, PendingFlow
from fasttcp.host.settings import Settings

__all__ = ["Host", "Interceptor", "Listener", "PendingFlow", "Settings"]
