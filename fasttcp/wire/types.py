"""Python-level names of the wire layer: flags, drop reasons, TCP options, errors.

Pure Python on purpose: these are read by people, tests and the slow path; the compiled
module (`_wire`) checks at import that its C enums agree with them.
"""
from __future__ import annotations

import enum
from typing import Optional, Sequence, Tuple


class TcpFlags(enum.IntFlag):
    """TCP header flags (RFC 9293 section 3.1; ECE/CWR from RFC 3168)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    def letters(self) -> str:
        """Flags as scapy and tcpdump spell them, e.g. ``"SA"`` for SYN+ACK."""
        order = "FSRPAUEC"
        return "".join(ch for bit, ch in enumerate(order) if self & (1 << bit))


class DropReason(enum.IntEnum):
    """Why an incoming packet was dropped; each is a counter in the host's statistics."""

    NONE = 0
    NOT_BUFFER = 1             # not a bytes-like object
    TRUNCATED_IP = 2           # shorter than an IPv4 header, or than its IHL
    BAD_IP_VERSION = 3
    BAD_IHL = 4                # IHL < 5
    BAD_TOTAL_LENGTH = 5       # total length < IHL, or past the end of the buffer
    BAD_IP_CHECKSUM = 6
    FRAGMENT = 7               # MF set or non-zero offset: needs reassembly
    BAD_SOURCE = 8             # broadcast, multicast, class E or 0.0.0.0 (RFC 1122 3.2.1.3)
    UNSUPPORTED_PROTOCOL = 9
    TRUNCATED_TCP = 10         # fewer than 20 bytes of TCP header
    BAD_DATA_OFFSET = 11       # data offset < 5 or past the segment
    BAD_TCP_CHECKSUM = 12
    BAD_OPTION = 13            # option length 0/1, overrunning, or wrong for its kind
    BAD_PORT = 14              # source or destination port 0
    TRUNCATED_ICMP = 15
    BAD_ICMP_CHECKSUM = 16
    BAD_ICMP_QUOTE = 17        # an ICMP error whose quoted IPv4 header + 8 bytes is missing
    # --- IPv6 (issue 14) ---
    BAD_IPV6_EXT_HEADER = 18   # an extension header truncated, misplaced or malformed
    IPV6_EXT_CHAIN = 19        # a chain of more extension headers than the parser walks
    IPV6_ROUTING_HEADER = 20   # a routing header with segments left (a host does not route)
    IPV6_BAD_OPTION = 21       # an unrecognised option whose type says "discard" (RFC 8200 4.2)
    # --- UDP (issue 15) ---
    TRUNCATED_UDP = 22         # fewer than 8 bytes of UDP header
    BAD_UDP_LENGTH = 23        # UDP length < 8 or past the IP payload (RFC 768)
    BAD_UDP_CHECKSUM = 24
    UDP6_ZERO_CHECKSUM = 25    # IPv6 UDP checksum 0 is invalid (RFC 8200 8.1)


class MalformedPacket(ValueError):
    """Raised by :func:`fasttcp.wire.parse` for a packet the stack would drop."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(f"malformed packet: {reason.name}")
        self.reason = reason


class IcmpType(enum.IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class TcpOptions:
    """The TCP options fasttcp understands (RFC 9293, 7323, 2018).

    ``timestamps`` is ``(tsval, tsecr)`` or ``None``; ``sack`` is a sequence of
    ``(left, right)`` edges. Unknown options are skipped when parsing and never built.
    """

    __slots__ = ("mss", "wscale", "sack_permitted", "timestamps", "sack")

    def __init__(
        self,
        mss: Optional[int] = None,
        wscale: Optional[int] = None,
        sack_permitted: bool = False,
        timestamps: Optional[Tuple[int, int]] = None,
        sack: Sequence[Tuple[int, int]] = (),
    ) -> None:
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        # Tuples whatever sequences were given, so that equality and hashing work.
        self.timestamps = None if timestamps is None else tuple(timestamps)
        self.sack = tuple(tuple(block) for block in sack)

    def _key(self) -> tuple:
        return (self.mss, self.wscale, self.sack_permitted, self.timestamps, self.sack)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TcpOptions) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __bool__(self) -> bool:
        return any((self.mss is not None, self.wscale is not None, self.sack_permitted,
                    self.timestamps is not None, bool(self.sack)))

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in self.__slots__
                 if getattr(self, name) not in (None, False, ())]
        return f"TcpOptions({', '.join(parts)})"
