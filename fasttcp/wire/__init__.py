"""Wire layer: IPv4/IPv6/TCP/UDP/ICMP/ICMPv6 views and builders, Internet checksum,
sequence arithmetic.

Everything here is compiled (``_wire.pyx``); this module only names the public API.
"""
from fasttcp.wire._wire import (
    COMPILED,
    Packet,
    SegmentBatch,
    SplitPacket,
    build_icmp,
    build_icmp_echo,
    build_icmp_unreachable,
    build_icmpv6,
    build_icmpv6_echo,
    build_icmpv6_error,
    build_ipv4,
    build_ipv6,
    build_tcp,
    build_udp,
    build_udp_fragments,
    bytes_to_ip6,
    checksum,
    checksum_implementation,
    checksum_update,
    int_to_ip,
    ip6_to_bytes,
    ip_to_int,
    ip_version,
    ones_sum,
    parse,
    parse_batch,
    pseudo_header_checksum,
    select_checksum_implementation,
    seq_add,
)
from fasttcp.wire._wire import seq_between_py as seq_between
from fasttcp.wire._wire import seq_diff_py as seq_diff
from fasttcp.wire._wire import seq_ge_py as seq_ge
from fasttcp.wire._wire import seq_gt_py as seq_gt
from fasttcp.wire._wire import seq_le_py as seq_le
from fasttcp.wire._wire import seq_lt_py as seq_lt
from fasttcp.wire.types import DropReason, IcmpType, MalformedPacket, TcpFlags, TcpOptions

__all__ = [
    "COMPILED", "DropReason", "IcmpType", "MalformedPacket", "Packet", "SegmentBatch",
    "SplitPacket", "TcpFlags", "TcpOptions", "build_icmp", "build_icmp_echo",
    "build_icmp_unreachable", "build_icmpv6", "build_icmpv6_echo", "build_icmpv6_error",
    "build_ipv4", "build_ipv6", "build_tcp", "build_udp", "build_udp_fragments",
    "bytes_to_ip6", "checksum",
    "checksum_implementation", "checksum_update", "int_to_ip", "ip6_to_bytes", "ip_to_int",
    "ip_version", "ones_sum",
    "parse", "parse_batch", "pseudo_header_checksum", "select_checksum_implementation",
    "seq_add", "seq_between", "seq_diff", "seq_ge", "seq_gt", "seq_le", "seq_lt",
]
