"""Links: where packets enter and leave a host.

A link moves whole IP packets (IPv4 or IPv6): a batch link with ``recv_batch(max)`` /
``send_batch(packets)`` / ``fileno()``, or a :class:`PacketIO` with ``await recv()`` /
``send(packets)``. Every link declares a :class:`LinkCapabilities` record (MTU, checksum
and segmentation offloads, whether it takes SplitPackets or keeps packets...); the contract
is written out in :mod:`fasttcp.link.capabilities`. For tests and simulations:

- :class:`MemoryLink` - an in-process pair of bounded packet queues.
- :class:`FaultyLink` / :class:`FaultConfig` - a seeded, deterministic fault injector in
  virtual time (loss, duplication, reordering, corruption, delay, jitter, rate limit with a
  tail-drop queue, MTU); a pipe for :class:`NetSim`, or a wrapper around a link.
- :class:`NetSim` - a virtual-time network driving sans-IO hosts.
- :class:`PcapWriter`, :class:`PcapLink`, :class:`RecordingHost` - pcap capture.
- :class:`QueuePacketIO` - a PacketIO pair on asyncio queues, two stacks in one loop.

For real peers:

- :class:`TunLink` - a Linux TUN device (pyroute2 for all netlink work, optionally inside a
  network namespace), batched non-blocking I/O in Cython, checksum/TSO offloads.
- :class:`DatagramSocketLink` - a batch link over a datagram socket (UDP, AF_UNIX).
- :class:`UdpPacketIO` - a PacketIO carrying IPv4 packets in UDP datagrams, no root needed.
- :mod:`fasttcp.link.netns` - create, enter and remove network namespaces.
"""
from fasttcp.link.capabilities import BatchLink, LinkCapabilities, capabilities_of
from fasttcp.link.datagram import DatagramSocketLink
from fasttcp.link.faults import FaultConfig, FaultStats, FaultyLink
from fasttcp.link.memory import MemoryLink, exchange
from fasttcp.link.netsim import NetSim, SimulationDidNotConverge
from fasttcp.link.packet_io import PacketIO, QueuePacketIO, UdpPacketIO
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
    "BatchLink", "DatagramSocketLink", "FaultConfig", "FaultStats", "FaultyLink",
    "LINKTYPE_IPV4", "LINKTYPE_RAW", "LinkCapabilities", "MemoryLink", "NetSim", "PacketIO",
    "PcapLink", "PcapWriter", "QueuePacketIO", "RecordingHost", "SimulationDidNotConverge",
    "TunLink", "UdpPacketIO", "capabilities_of", "exchange", "read_pcap", "tun_available",
]
