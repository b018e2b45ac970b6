"""Classic pcap files (not pcapng) of raw IP packets, and wrappers that record traffic.

Format: a 24-byte global header (magic 0xA1B2C3D4 = microsecond timestamps, version 2.4,
snap length, link type) and per packet a 16-byte record header (seconds, microseconds,
captured length, original length) followed by the bytes. Written little-endian; readers
tell the byte order from the magic. The link type is LINKTYPE_RAW (101: the packet starts
with its IP header, IPv4 or IPv6) or LINKTYPE_IPV4 (228, IPv4 only), so no fake Ethernet
header is needed.

- :class:`PcapWriter` writes a file; ``writer.tap(netsim)`` records a simulation.
- :class:`PcapLink` wraps any link and records what is sent and received through it.
- :class:`RecordingHost` wraps a sans-IO host and records what it receives and transmits.
"""
from __future__ import annotations

import os
import struct
import time
from typing import IO, Any, Callable, Iterable, Optional, Union

from fasttcp.link.capabilities import LinkCapabilities, capabilities_of
from fasttcp.link._tunio import RX_FLAG_CSUM_PARTIAL
from fasttcp.wire import checksum, pseudo_header_checksum

__all__ = ["LINKTYPE_RAW", "LINKTYPE_IPV4", "PcapWriter", "PcapLink", "RecordingHost",
           "complete_checksum", "read_pcap"]

LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Write packets to a classic pcap file with microsecond timestamps.

    ``path_or_file`` is a path (opened, and closed by :meth:`close`) or a binary file object
    (left open). Timestamps are seconds as floats (virtual or epoch time), rounded to the
    microsecond. Packets longer than ``snaplen`` are cut, keeping their original length in
    the record.
    """

    def __init__(
        self,
        path_or_file: Union[str, os.PathLike, IO[bytes]],
        linktype: int = LINKTYPE_RAW,
        snaplen: int = 65535,
    ) -> None:
        if linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4):
            raise ValueError("linktype must be LINKTYPE_RAW (101) or LINKTYPE_IPV4 (228)")
        if snaplen < 1:
            raise ValueError("snaplen must be positive")
        if isinstance(path_or_file, (str, os.PathLike)):
            self._file: IO[bytes] = open(path_or_file, "wb")
            self._owns = True
        else:
            self._file = path_or_file
            self._owns = False
        self.linktype = linktype
        self.snaplen = snaplen
        self.count = 0
        self.closed = False
        self._file.write(_GLOBAL.pack(_MAGIC_US, 2, 4, 0, 0, snaplen, linktype))

    def write(self, packet: bytes, timestamp: float) -> None:
        """Append one packet seen at ``timestamp`` seconds."""
        if self.closed:
            raise ValueError("write to a closed PcapWriter")
        usec = round(timestamp * 1_000_000)
        if usec < 0:
            raise ValueError("pcap timestamps cannot be negative")
        sec, usec = divmod(usec, 1_000_000)
        n = len(packet)
        cap = n if n <= self.snaplen else self.snaplen
        f = self._file
        f.write(_RECORD.pack(sec, usec, cap, n))
        f.write(packet if cap == n else bytes(packet[:cap]))
        self.count += 1

    def write_batch(self, packets: Iterable[bytes], timestamp: float) -> None:
        for p in packets:
            self.write(p, timestamp)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._owns:
            self._file.close()
        else:
            self._file.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tap(self, netsim: Any, *, received: bool = False, host: Any = None) -> Callable:
        """Record a :class:`~fasttcp.link.NetSim`: every packet as sent (before faults), or
        with ``received=True`` every packet as delivered (after faults). ``host`` limits the
        capture to what that host sends (or receives). Returns the tap, to remove it from
        ``netsim.taps`` / ``netsim.rx_taps`` later.
        """
        write = self.write

        if host is None:
            def tap(now: float, _host: Any, packet: bytes) -> None:
                write(packet, now)
        else:
            def tap(now: float, h: Any, packet: bytes) -> None:
                if h is host:
                    write(packet, now)

        (netsim.rx_taps if received else netsim.taps).append(tap)
        return tap


class PcapLink:
    """A link that records everything sent and received through ``link`` to ``writer``.

    ``clock`` gives the timestamps (wall clock by default; pass the virtual clock in a
    simulation). Other attributes are those of the wrapped link.

    ``complete_checksums`` (default True): a received packet whose checksum an offload left
    partial (the link's ``last_rx_flags`` has ``RX_FLAG_CSUM_PARTIAL`` for it, as a
    :class:`~fasttcp.link.TunLink` with offloads reports) is recorded with its TCP or UDP
    checksum computed, so Wireshark does not flag every packet the local kernel sent. Only
    the capture's copy changes; the packet handed on is the link's. Checksums that were
    not partial are recorded as they came, wrong ones included. False records every
    packet exactly as the link delivered it.
    """

    def __init__(self, link: Any, writer: PcapWriter,
                 clock: Optional[Callable[[], float]] = None, *,
                 complete_checksums: bool = True) -> None:
        self.link = link
        self.writer = writer
        self.clock: Callable[[], float] = clock if clock is not None else time.time
        self.complete_checksums = complete_checksums
        #: Received packets recorded with a completed checksum.
        self.checksums_completed = 0

    @property
    def capabilities(self) -> LinkCapabilities:
        """The wrapped link's, less what this wrapper does not pass on: plain packets
        only (the capture writes each as bytes), and ``recv_batch(max)`` without options."""
        return capabilities_of(self.link).replace(
            takes_split_packets=False, recv_views=False, recv_max_bytes=False)

    def send_batch(self, packets: Iterable[bytes]) -> Any:
        packets = list(packets)
        now = self.clock()
        for p in packets:
            self.writer.write(p, now)
        return self.link.send_batch(packets)

    def recv_batch(self, max: int = 64) -> list[bytes]:  # noqa: A002 - the link interface name
        packets = self.link.recv_batch(max)
        if packets:
            now = self.clock()
            flags = b""
            if self.complete_checksums:
                flags = getattr(self.link, "last_rx_flags", b"") or b""
            write = self.writer.write
            for i, p in enumerate(packets):
                if i < len(flags) and flags[i] & RX_FLAG_CSUM_PARTIAL:
                    fixed = complete_checksum(p)
                    if fixed is not None:
                        self.checksums_completed += 1
                        p = fixed
                write(p, now)
        return packets

    def fileno(self) -> int:
        return self.link.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.link, name)


def complete_checksum(packet: Any) -> Optional[bytes]:
    """A copy of an IPv4 or IPv6 TCP or UDP packet with its transport checksum computed
    over the pseudo-header and the whole segment; None for anything else (other protocols,
    IP fragments, IPv6 extension headers, truncated or malformed packets)."""
    b = bytearray(packet)
    if len(b) >= 40 and b[0] >> 4 == 6:
        return _complete_checksum6(b)
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 15) * 4
    total = int.from_bytes(b[2:4], "big")
    proto = b[9]
    field = {6: 16, 17: 6}.get(proto)
    if (field is None or ihl < 20 or total > len(b) or ihl + field + 2 > total
            or int.from_bytes(b[6:8], "big") & 0x3FFF):           # MF or a fragment offset
        return None
    b[ihl + field:ihl + field + 2] = b"\0\0"
    c = pseudo_header_checksum(bytes(b[12:16]), bytes(b[16:20]), proto,
                               memoryview(b)[ihl:total])
    if proto == 17 and c == 0:
        c = 0xFFFF                                 # RFC 768: 0 means "no checksum"
    b[ihl + field:ihl + field + 2] = c.to_bytes(2, "big")
    return bytes(b)


def _complete_checksum6(b: bytearray) -> Optional[bytes]:
    """complete_checksum for IPv6: the upper-layer header right after the fixed header
    (where the kernel's partial checksums are), the pseudo-header of RFC 8200 8.1."""
    total = 40 + int.from_bytes(b[4:6], "big")
    proto = b[6]
    field = {6: 16, 17: 6}.get(proto)
    if field is None or total > len(b) or 40 + field + 2 > total:
        return None
    b[40 + field:40 + field + 2] = b"\0\0"
    c = checksum(bytes(b[8:40]) + struct.pack("!IxxxB", total - 40, proto)
                 + bytes(b[40:total]))
    if proto == 17 and c == 0:
        c = 0xFFFF                                 # RFC 8200 8.1: never 0 for UDP
    b[40 + field:40 + field + 2] = c.to_bytes(2, "big")
    return bytes(b)


class RecordingHost:
    """Forwards the three sans-IO calls to ``host``, recording packets it receives and
    transmits, stamped with the ``now`` it is given. Other attributes are the host's."""

    def __init__(self, host: Any, writer: PcapWriter) -> None:
        self.host = host
        self.writer = writer

    @property
    def address(self) -> str:
        return self.host.address

    def receive(self, packets: list[bytes], now: float, *args: Any, **kwargs: Any) -> None:
        """Record, then ``host.receive(packets, now, ...)`` with whatever else was given
        (a Host takes ``parse_flags`` and ``defer_copy``)."""
        for p in packets:
            self.writer.write(p, now)
        self.host.receive(packets, now, *args, **kwargs)

    def transmit(self, now: float) -> list[bytes]:
        out = self.host.transmit(now)
        for p in out:
            self.writer.write(p, now)
        return out

    def poll_at(self) -> Optional[float]:
        return self.host.poll_at()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)


def read_pcap(
    path_or_file: Union[str, os.PathLike, IO[bytes]],
) -> tuple[int, list[tuple[float, bytes]]]:
    """Read a classic pcap file: ``(linktype, [(timestamp, packet), ...])``.

    Accepts either byte order and microsecond or nanosecond magic. The captured bytes are
    returned (shorter than the original if the snap length cut them).
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            data = f.read()
    else:
        data = path_or_file.read()
    if len(data) < 24:
        raise ValueError("not a pcap file: shorter than its global header")
    for order in "<>":
        magic = struct.unpack_from(order + "I", data, 0)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise ValueError("not a classic pcap file (bad magic)")
    scale = 1e-6 if magic == _MAGIC_US else 1e-9
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(order + "IIII")
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, cap, _orig = rec.unpack_from(data, off)
        off += 16
        if off + cap > len(data):
            raise ValueError("pcap file truncated inside a packet")
        out.append((sec + frac * scale, data[off:off + cap]))
        off += cap
    return linktype, out
