"""Links: where packets enter and leave a host.

A link moves whole IPv4 packets in batches: ``recv_batch(max)`` and ``send_batch(packets)``
(see DESIGN.md, "Links"). For tests and simulations:

- :class:`MemoryLink` - an in-process pair of bounded packet queues.
- :class:`FaultyLink` / :class:`FaultConfig` - a seeded, deterministic fault injector in
  virtual time (loss, duplication, reordering, corruption, delay, jitter, rate limit with a
  tail-drop queue, MTU); a pipe for :class:`NetSim`, or a wrapper around a link.
- :class:`NetSim` - a virtual-time network driving sans-IO hosts.
- :class:`PcapWriter`, :class:`PcapLink`, :class:`RecordingHost` - pcap capture.

For real peers:

- :class:`TunLink` - a Linux TUN device (pyroute2 for all netlink work, optionally inside a
  network namespace), batched non-blocking I/O in Cython, checksum/TSO offloads.
- :mod:`fasttcp.link.netns` - create, enter and remove network namespaces.
"""
from fasttcp.link.faults import FaultConfig, FaultStats, FaultyLink
from fasttcp.link.memory import MemoryLink, exchange
from fasttcp.link.netsim import NetSim, SimulationDidNotConverge
from fasttcp.link.tun import TunLink, tun_available
from fasttcp.link.pcap import (
    LINKTYPE_IPV4,
    LINKTYPE_RAW,
    PcapLink,
    PcapWriter,
    RecordingHost,
    read_pcap,
)

__all__ = [
    "FaultConfig", "FaultStats", "FaultyLink", "LINKTYPE_IPV4", "LINKTYPE_RAW",
    "MemoryLink", "NetSim", "PcapLink", "PcapWriter", "RecordingHost",
    "SimulationDidNotConverge", "TunLink", "exchange", "read_pcap", "tun_available",
]
