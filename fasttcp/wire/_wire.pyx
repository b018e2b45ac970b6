# cython: language_level=3
"""Compiled wire layer: Internet checksum, IPv4/IPv6/TCP/UDP/ICMP/ICMPv6 parse and build,
batch parse.

Views over caller-owned buffers in the smoltcp manner: the C-level parser fills a SegDesc
(numbers and offsets, nothing copied); the Python `Packet` view reads from one lazily.
"""
from cpython.buffer cimport PyBuffer_FillInfo, PyBuffer_Release
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset

import ipaddress
from socket import AF_INET6, inet_ntop, inet_pton

from fasttcp.wire.types import DropReason, MalformedPacket, TcpFlags, TcpOptions

cdef extern from "_csum.h" nogil:
    bint ft_unlikely(bint x)
    void ft_csum_select(int force)
    const char* ft_csum_impl_name
    ctypedef uint64_t (*ft_csum_fn)(const unsigned char*, size_t, uint64_t)
    ft_csum_fn ft_csum_impl

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t ntohs(uint16_t)
    uint16_t htons(uint16_t)
    uint32_t htonl(uint32_t)

ft_csum_select(0)

# The C enum and the Python enum must agree: the host indexes its counters with the former
# and names them with the latter.
if len(DropReason) != DROP_REASON_COUNT:
    raise ImportError("fasttcp.wire: DropReason out of step with the compiled DropCode enum")
assert DropReason.BAD_ICMP_QUOTE == DROP_BAD_ICMP_QUOTE and DropReason.BAD_OPTION == DROP_BAD_OPTION

COMPILED = True


# ============================================================================================
# Checksum
# ============================================================================================

cdef uint16_t checksum_finish(uint64_t partial) noexcept nogil:
    """The checksum field for a partial sum, as a native-order value to store with memcpy."""
    return <uint16_t>~ft_csum_fold(partial)


def checksum(data) -> int:
    """RFC 1071 checksum of a bytes-like object: the value of the checksum field (the one's
    complement of the one's complement sum), as ``scapy.utils.checksum`` returns it."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int held = get_buffer(data, &view, &p, &n, True)    # summed without the GIL
    cdef uint64_t s
    if n < 32768:
        s = ft_csum_partial(p, <size_t>n, 0)     # dropping the GIL costs more than this
    else:
        with nogil:
            s = ft_csum_partial(p, <size_t>n, 0)
    if held:
        PyBuffer_Release(&view)
    return ntohs(checksum_finish(s))


def ones_sum(data, int initial=0) -> int:
    """The folded 16-bit one's complement sum of data (big-endian words), plus `initial`."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int held = get_buffer(data, &view, &p, &n)
    cdef uint64_t s = ft_csum_partial(p, <size_t>n, htons(<uint16_t>initial))
    if held:
        PyBuffer_Release(&view)
    return ntohs(ft_csum_fold(s))


def checksum_update(int old_checksum, old, new) -> int:
    """Incrementally update a checksum field after 16-bit words change (RFC 1624 eqn. 3:
    HC' = ~(~HC + ~m + m')). `old`/`new` are a 16-bit int each, or equal-length
    even-sized bytes-like objects."""
    cdef uint32_t s = (~old_checksum) & 0xffff
    if isinstance(old, int):
        s += ((~old) & 0xffff) + (new & 0xffff)
    else:
        if len(old) != len(new) or len(old) % 2:
            raise ValueError("old and new must be bytes of the same even length")
        s += (~ones_sum(old)) & 0xffff
        s += ones_sum(new)
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def pseudo_header_checksum(src, dst, int proto, segment) -> int:
    """Checksum field of a TCP/UDP/ICMPv6 message over the IPv4 pseudo-header (RFC 9293
    3.1), or the IPv6 one (RFC 8200 8.1) for IPv6 addresses."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef uint64_t s
    cdef uint32_t s_ip = 0, d_ip = 0
    cdef bytes addrs = None
    if _family(src) == 6:
        addrs = _addr6(src) + _addr6(dst)
    else:
        s_ip = _addr(src)
        d_ip = _addr(dst)
    cdef int held = get_buffer(segment, &view, &p, &n)
    if addrs is not None:
        s = ft_pseudo6_sum(<const unsigned char*>PyBytes_AS_STRING(addrs), <uint8_t>proto,
                           <uint32_t>n)
    else:
        s = ft_pseudo_sum_mem(htonl(s_ip), htonl(d_ip), <uint8_t>proto, <uint32_t>n)
    s = ft_csum_partial(p, <size_t>n, s)
    if held:
        PyBuffer_Release(&view)
    return ntohs(checksum_finish(s))


def checksum_implementation() -> str:
    """Which checksum kernel runs here: ``"avx2"``, ``"adc"`` or ``"portable"``."""
    return ft_csum_impl_name.decode()


def select_checksum_implementation(str name) -> str:
    """Force a checksum kernel (for tests and benchmarks); ``"best"`` restores the default.
    Returns the one in force (a kernel the CPU lacks falls back)."""
    codes = {"best": 0, "portable": 1, "adc": 2, "avx2": 3}
    if name not in codes:
        raise ValueError(f"unknown checksum implementation {name!r}")
    ft_csum_select(codes[name])
    return checksum_implementation()


# ============================================================================================
# Sequence numbers (Python wrappers of the inline C functions in _wire.pxd)
# ============================================================================================

def seq_lt_py(uint32_t a, uint32_t b) -> bool:
    return seq_lt(a, b)


def seq_le_py(uint32_t a, uint32_t b) -> bool:
    return seq_le(a, b)


def seq_gt_py(uint32_t a, uint32_t b) -> bool:
    return seq_gt(a, b)


def seq_ge_py(uint32_t a, uint32_t b) -> bool:
    return seq_ge(a, b)


def seq_between_py(uint32_t lo, uint32_t x, uint32_t hi) -> bool:
    return seq_between(lo, x, hi)


def seq_diff_py(uint32_t a, uint32_t b) -> int:
    return seq_diff(a, b)


def seq_add(uint32_t a, long long n) -> int:
    return <uint32_t>(a + <uint32_t>(n & 0xffffffff))


# ============================================================================================
# Parse
# ============================================================================================

cdef inline int _bad_source(uint32_t src) noexcept nogil:
    # RFC 1122 3.2.1.3: a datagram from a broadcast, multicast or class E address, or from
    # "this host" (0.0.0.0), cannot be a TCP peer.
    return src == 0 or (src >> 28) >= 0xE


# One copy of the option parser per family: a fused parameter (its value unused) makes
# Cython emit two C functions from this one source, each with a single caller, so the
# compiler inlines the IPv4 one into parse_packet as it did before IPv6 had a caller too.
ctypedef fused _family_copy:
    uint8_t
    uint16_t


cdef inline int _parse_tcp_options(const unsigned char* seg, uint16_t doff, SegDesc* d,
                                   _family_copy family) noexcept nogil:
    cdef uint16_t i = 20
    cdef uint8_t kind, olen, k, nblocks
    while i < doff:
        kind = seg[i]
        if kind == 0:           # End of Option List
            break
        if kind == 1:           # No-Operation
            i += 1
            continue
        if i + 1 >= doff:       # no room for the length byte
            return DROP_BAD_OPTION
        olen = seg[i + 1]
        # RFC 9293 3.1 (MUST-7): an illegal length (0, 1, overrunning) is an error.
        if olen < 2 or i + olen > doff:
            return DROP_BAD_OPTION
        if kind == 2:           # MSS
            if olen != 4:
                return DROP_BAD_OPTION
            d.mss = rd16(seg + i + 2)
            d.opt_present |= OPT_MSS
        elif kind == 3:         # window scale (RFC 7323 2.2)
            if olen != 3:
                return DROP_BAD_OPTION
            d.wscale = seg[i + 2]
            d.opt_present |= OPT_WSCALE
        elif kind == 4:         # SACK permitted (RFC 2018)
            if olen != 2:
                return DROP_BAD_OPTION
            d.opt_present |= OPT_SACK_PERM
        elif kind == 5:         # SACK blocks (RFC 2018 3)
            if olen < 10 or (olen - 2) % 8:
                return DROP_BAD_OPTION
            nblocks = (olen - 2) // 8          # <= 4: options are at most 40 bytes
            for k in range(nblocks):
                d.sack[2 * k] = rd32(seg + i + 2 + 8 * k)
                d.sack[2 * k + 1] = rd32(seg + i + 6 + 8 * k)
            d.nsack = nblocks
            d.opt_present |= OPT_SACK
        elif kind == 8:         # timestamps (RFC 7323 3.2)
            if olen != 10:
                return DROP_BAD_OPTION
            d.tsval = rd32(seg + i + 2)
            d.tsecr = rd32(seg + i + 6)
            d.opt_present |= OPT_TS
        # Unknown kinds are skipped by their length (RFC 9293 MUST-6).
        i += olen
    return DROP_NONE


cdef int _parse_tcp6(const unsigned char* buf, uint32_t slen, uint32_t hl, SegDesc* d,
                     int flags) noexcept nogil:
    """The TCP header of an IPv6 packet at `buf + hl` (`slen` bytes to the end of the
    datagram), checksummed over the IPv6 pseudo-header (RFC 8200 8.1). The same steps as
    the IPv4 path in parse_packet, which keeps its own copy inline (IPv4 must not pay a
    call)."""
    cdef const unsigned char* seg = buf + hl
    cdef uint64_t pseudo
    cdef uint16_t doff
    if slen < 20:
        d.reason = DROP_TRUNCATED_TCP
        return d.reason
    doff = (seg[12] >> 4) * 4
    if doff < 20 or doff > slen:
        d.reason = DROP_BAD_DATA_OFFSET
        return d.reason
    if not (flags & PARSE_NO_TCP_CSUM):
        pseudo = ft_pseudo6_sum(buf + 8, IPPROTO_TCP, slen)
        if ft_csum_fold(ft_csum_partial(seg, slen, pseudo)) != 0xFFFF:
            d.reason = DROP_BAD_TCP_CHECKSUM
            return d.reason
    d.sport = rd16(seg)
    d.dport = rd16(seg + 2)
    if d.sport == 0 or d.dport == 0:
        d.reason = DROP_BAD_PORT
        return d.reason
    d.seq = rd32(seg + 4)
    d.ack = rd32(seg + 8)
    d.reserved = seg[12] & 0x0F
    d.flags = seg[13]
    d.window = rd16(seg + 14)
    d.urg = rd16(seg + 18)
    d.doff = doff
    if doff > 20:
        d.reason = _parse_tcp_options(seg, doff, d, <uint16_t>6)
        if d.reason:
            return d.reason
    d.payload_off = hl + doff
    d.payload_len = slen - doff
    return DROP_NONE


cdef int _parse_udp(const unsigned char* buf, uint32_t slen, uint32_t hl, SegDesc* d,
                    int flags) noexcept nogil:
    """The UDP header at `buf + hl` (`slen` bytes to the end of the IP datagram), either
    family (RFC 768; RFC 8200 8.1). Out of the TCP path's line: UDP goes to the slow path.

    The UDP length must lie within the IP payload (less: the rest is padding, trimmed as
    Linux's udp_rcv does; more: dropped). The checksum covers the UDP length; an IPv4
    checksum of 0 means none was sent (RFC 768), an IPv6 one of 0 is invalid (RFC 8200
    8.1: Linux udp6_csum_init drops it). PARSE_NO_TCP_CSUM (TUN offload: the kernel or the
    link verified it, or it is a local partial checksum) skips the verification, as for
    TCP."""
    cdef const unsigned char* seg = buf + hl
    cdef uint32_t ulen
    cdef uint16_t field
    cdef uint64_t pseudo
    if slen < 8:
        d.reason = DROP_TRUNCATED_UDP
        return d.reason
    ulen = rd16(seg + 4)
    if ulen < 8 or ulen > slen:
        d.reason = DROP_BAD_UDP_LENGTH
        return d.reason
    field = rd16(seg + 6)
    if d.ipver == 6:
        if field == 0:
            d.reason = DROP_UDP6_ZERO_CHECKSUM
            return d.reason
    if field != 0 and not (flags & PARSE_NO_TCP_CSUM):
        if d.ipver == 6:
            pseudo = ft_pseudo6_sum(buf + 8, IPPROTO_UDP, ulen)
        else:
            pseudo = ft_pseudo_sum_mem(ft_load32(buf + 12), ft_load32(buf + 16), IPPROTO_UDP,
                                       ulen)
        if ft_csum_fold(ft_csum_partial(seg, ulen, pseudo)) != 0xFFFF:
            d.reason = DROP_BAD_UDP_CHECKSUM
            return d.reason
    d.sport = rd16(seg)             # 0: no reply port (RFC 768), allowed
    d.dport = rd16(seg + 2)
    if d.dport == 0:
        d.reason = DROP_BAD_PORT
        return d.reason
    d.flags = 0
    d.doff = 8
    d.payload_off = hl + 8
    d.payload_len = ulen - 8
    return DROP_NONE


ctypedef int (*_udp_fn)(const unsigned char*, uint32_t, uint32_t, SegDesc*,
                        int) noexcept nogil
cdef _udp_fn _udp_parser = _parse_udp


cdef int parse_packet(const unsigned char* buf, Py_ssize_t n, SegDesc* d, int flags) noexcept nogil:
    """Validate and decode one IPv4 or IPv6 packet into `d`; returns d.reason (0 when
    accepted)."""
    cdef uint16_t hl, total, slen, doff
    cdef const unsigned char* seg
    cdef uint64_t s
    cdef uint8_t qhl
    d.reason = DROP_NONE
    d.opt_present = 0
    d.nsack = 0
    d.payload_len = 0
    if n < 20:
        d.reason = DROP_TRUNCATED_IP
        return d.reason
    if ft_unlikely((buf[0] >> 4) != 4):
        if (buf[0] >> 4) == 6:
            # Out of line (a call through a pointer the compiler does not inline), so the
            # IPv4 path keeps its code layout and registers.
            return _ipv6_parser(buf, n, d, flags)
        d.reason = DROP_BAD_IP_VERSION
        return d.reason
    d.ipver = 4
    hl = (buf[0] & 0x0F) * 4
    if hl < 20:
        d.reason = DROP_BAD_IHL
        return d.reason
    if hl > n:
        d.reason = DROP_TRUNCATED_IP
        return d.reason
    # A corrupted header usually shows first as a bad checksum, so check it before trusting
    # the length fields (RFC 791 3.1: options are covered too).
    if not (flags & PARSE_NO_IP_CSUM) and ft_csum_fold(ft_csum_partial(buf, hl, 0)) != 0xFFFF:
        d.reason = DROP_BAD_IP_CHECKSUM
        return d.reason
    total = rd16(buf + 2)
    if total < hl or total > n:
        d.reason = DROP_BAD_TOTAL_LENGTH
        return d.reason
    d.ip_hl = hl
    d.ip_len = total
    d.tos = buf[1]
    d.ip_id = rd16(buf + 4)
    d.frag = rd16(buf + 6)
    d.ttl = buf[8]              # RFC 1122 3.2.1.7: a host does not drop for a low TTL
    d.proto = buf[9]
    d.src = rd32(buf + 12)
    d.dst = rd32(buf + 16)
    if d.frag & 0x3FFF:         # MF or a fragment offset: reassembly is the host's job
        d.reason = DROP_FRAGMENT
        return d.reason
    if _bad_source(d.src):
        d.reason = DROP_BAD_SOURCE
        return d.reason
    seg = buf + hl
    slen = total - hl
    if d.proto == IPPROTO_TCP:
        if slen < 20:
            d.reason = DROP_TRUNCATED_TCP
            return d.reason
        doff = (seg[12] >> 4) * 4
        if doff < 20 or doff > slen:
            d.reason = DROP_BAD_DATA_OFFSET
            return d.reason
        if not (flags & PARSE_NO_TCP_CSUM):
            s = ft_pseudo_sum_mem(ft_load32(buf + 12), ft_load32(buf + 16), IPPROTO_TCP, slen)
            if ft_csum_fold(ft_csum_partial(seg, slen, s)) != 0xFFFF:
                d.reason = DROP_BAD_TCP_CHECKSUM
                return d.reason
        d.sport = rd16(seg)
        d.dport = rd16(seg + 2)
        if d.sport == 0 or d.dport == 0:
            d.reason = DROP_BAD_PORT
            return d.reason
        d.seq = rd32(seg + 4)
        d.ack = rd32(seg + 8)
        d.reserved = seg[12] & 0x0F
        d.flags = seg[13]
        d.window = rd16(seg + 14)
        d.urg = rd16(seg + 18)
        d.doff = doff
        if doff > 20:
            d.reason = _parse_tcp_options(seg, doff, d, <uint8_t>4)
            if d.reason:
                return d.reason
        d.payload_off = hl + doff
        d.payload_len = slen - doff
        return DROP_NONE
    if d.proto == IPPROTO_ICMP:
        if slen < 8:
            d.reason = DROP_TRUNCATED_ICMP
            return d.reason
        if ft_csum_fold(ft_csum_partial(seg, slen, 0)) != 0xFFFF:
            d.reason = DROP_BAD_ICMP_CHECKSUM
            return d.reason
        d.icmp_type = seg[0]
        d.icmp_code = seg[1]
        d.ack = rd32(seg + 4)   # "rest of header": echo id/seq, or MTU for frag-needed
        d.payload_off = hl + 8
        d.payload_len = slen - 8
        if d.icmp_type == 3 or d.icmp_type == 11 or d.icmp_type == 12:
            # An error quotes the offending IPv4 header and at least 8 bytes (RFC 792).
            if slen < 8 + 20 + 8 or (seg[8] >> 4) != 4:
                d.reason = DROP_BAD_ICMP_QUOTE
                return d.reason
            qhl = (seg[8] & 0x0F) * 4
            if qhl < 20 or slen < 8 + qhl + 8:
                d.reason = DROP_BAD_ICMP_QUOTE
                return d.reason
        return DROP_NONE
    if d.proto == IPPROTO_UDP:
        return _udp_parser(buf, slen, hl, d, flags)
    d.reason = DROP_UNSUPPORTED_PROTOCOL
    return d.reason


cdef inline bint _bad_source6(const unsigned char* a) noexcept nogil:
    # RFC 4291 2.7: a multicast address is never a source; the unspecified address (2.5.2)
    # is not a TCP peer (RFC 9293 3.10.7.2: a SYN from it is ignored, as Linux does).
    cdef int i
    if a[0] == 0xFF:
        return True
    for i in range(16):
        if a[i]:
            return False
    return True


cdef int _ipv6_options(const unsigned char* p, uint32_t n) noexcept nogil:
    """The TLV options of a hop-by-hop or destination options header (RFC 8200 4.2), `p`
    after its two fixed bytes: Pad1 and PadN are skipped, and so are other options whose
    type's two high bits are 00; any other unrecognised option means discard (01), or
    discard and maybe an ICMP Parameter Problem (10, 11), which a host on a TUN need not
    send. Router Alert (RFC 2711) is recognised."""
    cdef uint32_t i = 0, olen
    cdef uint8_t kind
    while i < n:
        kind = p[i]
        if kind == 0:                   # Pad1
            i += 1
            continue
        if i + 2 > n:
            return DROP_BAD_IPV6_EXT_HEADER
        olen = 2 + <uint32_t>p[i + 1]
        if i + olen > n:
            return DROP_BAD_IPV6_EXT_HEADER
        if kind != 1 and kind != 5 and (kind >> 6) != 0:
            return DROP_IPV6_BAD_OPTION
        i += olen
    return DROP_NONE


cdef int _parse_ipv6(const unsigned char* buf, Py_ssize_t n, SegDesc* d, int flags) noexcept nogil:
    """An IPv6 packet (RFC 8200): the fixed header, the extension header chain (bounded),
    then TCP or ICMPv6 as for IPv4."""
    cdef uint32_t plen, end, off, hlen, slen
    cdef uint8_t nh
    cdef int count = 0, r
    cdef uint16_t fo
    cdef const unsigned char* seg
    d.ipver = 6
    if n < 40:
        d.reason = DROP_TRUNCATED_IP
        return d.reason
    plen = rd16(buf + 4)
    # RFC 8200 3: the payload length counts the extension headers; one past the buffer is a
    # lie (a jumbogram's 0, RFC 2675, never comes over a link with a 64 KiB MTU).
    end = 40 + plen
    if end > n:
        d.reason = DROP_BAD_TOTAL_LENGTH
        return d.reason
    d.ip_len = end
    d.tos = <uint8_t>(((buf[0] & 0x0F) << 4) | (buf[1] >> 4))
    d.ttl = buf[7]
    d.ip_id = 0
    d.frag = 0
    d.src = rd32(buf + 20)
    d.dst = rd32(buf + 36)
    if _bad_source6(buf + 8):
        d.reason = DROP_BAD_SOURCE
        return d.reason
    nh = buf[6]
    off = 40
    while (nh == IPV6_HOPOPTS or nh == IPV6_ROUTING or nh == IPV6_DSTOPTS
           or nh == IPV6_FRAGMENT):
        count += 1
        if count > IPV6_MAX_EXT_HEADERS:
            d.reason = DROP_IPV6_EXT_CHAIN
            return d.reason
        # RFC 8200 4.1: Hop-by-Hop Options only right after the IPv6 header.
        if nh == IPV6_HOPOPTS and off != 40:
            d.reason = DROP_BAD_IPV6_EXT_HEADER
            return d.reason
        if off + 8 > end:
            d.reason = DROP_BAD_IPV6_EXT_HEADER
            return d.reason
        if nh == IPV6_FRAGMENT:
            # RFC 8200 4.5: 8 bytes; offset (13 bits) and M. Offset 0 without M is an
            # atomic fragment (RFC 6946 4): processed at once, never reassembled.
            fo = rd16(buf + off + 2)
            if (fo & 0xFFF9) != 0:       # an offset or M: a real fragment
                d.frag = fo
                d.ip_hl = <uint16_t>off  # where the fragment header sits
                d.reason = DROP_FRAGMENT
                return d.reason
            hlen = 8
        else:
            hlen = (<uint32_t>buf[off + 1] + 1) * 8
            if off + hlen > end:
                d.reason = DROP_BAD_IPV6_EXT_HEADER
                return d.reason
            if nh == IPV6_ROUTING:
                # RFC 8200 4.4: with Segments Left non-zero the packet is for a later hop:
                # a host (which forwards nothing) discards it (Linux ipv6_rthdr_rcv on a
                # host without forwarding: the same).
                if buf[off + 3] != 0:
                    d.reason = DROP_IPV6_ROUTING_HEADER
                    return d.reason
            else:
                r = _ipv6_options(buf + off + 2, hlen - 2)
                if r:
                    d.reason = <uint8_t>r
                    return d.reason
        nh = buf[off]
        off += hlen
    d.proto = nh
    d.ip_hl = <uint16_t>off
    seg = buf + off
    slen = end - off
    if nh == IPPROTO_TCP:
        return _parse_tcp6(buf, slen, off, d, flags)
    if nh == IPPROTO_ICMPV6:
        if slen < 8:
            d.reason = DROP_TRUNCATED_ICMP
            return d.reason
        # RFC 4443 2.3: the checksum covers the IPv6 pseudo-header; no offload does it.
        if ft_csum_fold(ft_csum_partial(seg, slen, ft_pseudo6_sum(buf + 8, IPPROTO_ICMPV6,
                                                                  slen))) != 0xFFFF:
            d.reason = DROP_BAD_ICMP_CHECKSUM
            return d.reason
        d.icmp_type = seg[0]
        d.icmp_code = seg[1]
        d.ack = rd32(seg + 4)       # echo id/seq; the MTU of Packet Too Big; the pointer
        d.payload_off = off + 8
        d.payload_len = slen - 8
        if d.icmp_type < 128:
            # An error (RFC 4443 2.1) quotes as much of the invoking packet as fits: its
            # IPv6 header at least, and the 8 bytes of TCP after it that name the
            # connection (where extension headers push them is the host's to find).
            if slen < 8 + 40 + 8 or (seg[8] >> 4) != 6:
                d.reason = DROP_BAD_ICMP_QUOTE
                return d.reason
        return DROP_NONE
    if nh == IPPROTO_UDP:
        return _parse_udp(buf, slen, off, d, flags)
    d.reason = DROP_UNSUPPORTED_PROTOCOL
    return d.reason


ctypedef int (*_parser_fn)(const unsigned char*, Py_ssize_t, SegDesc*, int) noexcept nogil
cdef _parser_fn _ipv6_parser = _parse_ipv6


# ============================================================================================
# Build
# ============================================================================================

cdef Py_ssize_t tcp_options_len(const TcpOut* t) noexcept nogil:
    cdef Py_ssize_t n = 0, room, k
    if t.opt_present & OPT_MSS:
        n += 4
    if t.opt_present & OPT_TS:
        n += 12                 # carries SACK-permitted in its padding when both are set
    elif t.opt_present & OPT_SACK_PERM:
        n += 4
    if t.opt_present & OPT_WSCALE:
        n += 4
    if (t.opt_present & OPT_SACK) and t.nsack:
        room = (40 - n - 4) // 8
        k = t.nsack if t.nsack < room else room
        if k > 0:
            n += 4 + 8 * k
    return n


cdef Py_ssize_t _write_tcp_options(unsigned char* p, const TcpOut* t) noexcept nogil:
    """Options in the layout Linux uses, every option 4-byte aligned with NOPs."""
    cdef Py_ssize_t n = 0, room, k, i
    if t.opt_present & OPT_MSS:
        p[0] = 2; p[1] = 4; wr16(p + 2, t.mss)
        n = 4
    if t.opt_present & OPT_TS:
        if t.opt_present & OPT_SACK_PERM:
            p[n] = 4; p[n + 1] = 2
        else:
            p[n] = 1; p[n + 1] = 1
        p[n + 2] = 8; p[n + 3] = 10
        wr32(p + n + 4, t.tsval)
        wr32(p + n + 8, t.tsecr)
        n += 12
    elif t.opt_present & OPT_SACK_PERM:
        p[n] = 1; p[n + 1] = 1; p[n + 2] = 4; p[n + 3] = 2
        n += 4
    if t.opt_present & OPT_WSCALE:
        p[n] = 1; p[n + 1] = 3; p[n + 2] = 3; p[n + 3] = t.wscale
        n += 4
    if (t.opt_present & OPT_SACK) and t.nsack:
        room = (40 - n - 4) // 8
        k = t.nsack if t.nsack < room else room
        if k > 0:
            p[n] = 1; p[n + 1] = 1; p[n + 2] = 5; p[n + 3] = <unsigned char>(2 + 8 * k)
            n += 4
            for i in range(k):
                wr32(p + n, t.sack[2 * i])
                wr32(p + n + 4, t.sack[2 * i + 1])
                n += 8
    return n


cdef inline void _write_ipv4_header(unsigned char* out, uint16_t total, uint8_t proto,
                                    uint32_t src, uint32_t dst, uint8_t ttl, uint8_t tos,
                                    uint16_t ip_id, bint df) noexcept nogil:
    cdef uint16_t c
    out[0] = 0x45
    out[1] = tos
    wr16(out + 2, total)
    wr16(out + 4, ip_id)
    wr16(out + 6, 0x4000 if df else 0)
    out[8] = ttl
    out[9] = proto
    out[10] = 0
    out[11] = 0
    wr32(out + 12, src)
    wr32(out + 16, dst)
    c = checksum_finish(ft_csum_partial(out, 20, 0))
    memcpy(out + 10, &c, 2)


cdef inline void _write_ipv6_header(unsigned char* out, uint16_t plen, uint8_t nh,
                                    const unsigned char* src, const unsigned char* dst,
                                    uint8_t hop_limit, uint8_t tclass,
                                    uint32_t flow) noexcept nogil:
    """The 40-byte IPv6 header (RFC 8200 3)."""
    wr32(out, (<uint32_t>6 << 28) | (<uint32_t>tclass << 20) | (flow & 0xFFFFF))
    wr16(out + 4, plen)
    out[6] = nh
    out[7] = hop_limit
    memcpy(out + 8, src, 16)
    memcpy(out + 24, dst, 16)


cdef Py_ssize_t build_tcp_headers(unsigned char* out, Py_ssize_t cap, const TcpOut* t,
                                  Py_ssize_t plen) noexcept nogil:
    cdef Py_ssize_t doff = 20 + tcp_options_len(t)
    cdef Py_ssize_t ihl = ip_header_len(t)
    cdef Py_ssize_t total = ihl + doff + plen
    cdef unsigned char* th = out + ihl
    if plen < 0 or ihl + doff > cap or total - (40 if ihl == 40 else 0) > 65535:
        return -1
    if ihl == 40:
        # RFC 8200 3: the payload length does not count the fixed header (a TSO
        # super-segment may be 65535 + 40 bytes long).
        _write_ipv6_header(out, <uint16_t>(total - 40), IPPROTO_TCP, t.src6, t.dst6,
                           t.ttl, t.tos, t.flow)
    else:
        _write_ipv4_header(out, <uint16_t>total, IPPROTO_TCP, t.src, t.dst,
                           t.ttl, t.tos, t.ip_id, t.df)
    wr16(th, t.sport)
    wr16(th + 2, t.dport)
    wr32(th + 4, t.seq)
    wr32(th + 8, t.ack)
    th[12] = <unsigned char>((doff // 4) << 4)
    th[13] = t.flags
    wr16(th + 14, t.window)
    th[16] = 0
    th[17] = 0
    wr16(th + 18, t.urg)
    _write_tcp_options(th + 20, t)
    return ihl + doff


cdef Py_ssize_t build_tcp_into(unsigned char* out, Py_ssize_t cap, const TcpOut* t,
                               const unsigned char* payload, Py_ssize_t plen) noexcept nogil:
    """Write an IPv4 (or IPv6) + TCP packet with options, payload and the checksums into
    `out`. Returns its length, or -1 when it does not fit `cap` or the length field."""
    cdef Py_ssize_t olen = tcp_options_len(t)
    cdef Py_ssize_t doff = 20 + olen
    cdef Py_ssize_t ihl = ip_header_len(t)
    cdef Py_ssize_t total = ihl + doff + plen
    cdef unsigned char* th = out + ihl
    cdef uint16_t c
    cdef uint64_t s
    if plen < 0 or total > cap or total - (40 if ihl == 40 else 0) > 65535:
        return -1
    build_tcp_headers(out, cap, t, plen)
    if plen and payload != th + doff:
        memcpy(th + doff, payload, plen)
    if t.no_tcp_csum:
        return total
    if ihl == 40:
        s = ft_pseudo6_sum(out + 8, IPPROTO_TCP, <uint32_t>(doff + plen))
    else:
        s = ft_pseudo_sum_mem(ft_load32(out + 12), ft_load32(out + 16), IPPROTO_TCP,
                              <uint32_t>(doff + plen))
    c = checksum_finish(ft_csum_partial(th, doff + plen, s))
    memcpy(th + 16, &c, 2)
    return total


cdef uint32_t _addr(object a) except? 0xFFFFFFFF:
    """An IPv4 address given as dotted text, an int, or 4 bytes, as a host-order number."""
    if isinstance(a, int):
        if not 0 <= a <= 0xFFFFFFFF:
            raise ValueError(f"IPv4 address out of range: {a}")
        return a
    if isinstance(a, str):
        parts = a.split(".")
        if len(parts) != 4:
            raise ValueError(f"not an IPv4 address: {a!r}")
        v = 0
        for part in parts:
            if not part.isdigit() or int(part) > 255:
                raise ValueError(f"not an IPv4 address: {a!r}")
            v = (v << 8) | int(part)
        return v
    b = bytes(a)
    if len(b) != 4:
        raise ValueError("an IPv4 address is 4 bytes")
    return int.from_bytes(b, "big")


def ip_to_int(a) -> int:
    """IPv4 address (text, int or 4 bytes) as a host-order int."""
    return _addr(a)


def int_to_ip(uint32_t v) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


cdef int _family(object a) except -1:
    """6 for an IPv6 address (text with a colon, 16 bytes, an IPv6Address), else 4."""
    if isinstance(a, str):
        return 6 if ":" in a else 4
    if isinstance(a, int):
        return 4
    if isinstance(a, ipaddress.IPv6Address):
        return 6
    if isinstance(a, ipaddress.IPv4Address):
        return 4
    try:
        return 6 if len(a) == 16 else 4
    except TypeError:
        return 4


cdef bytes _addr6(object a):
    """An IPv6 address given as text, 16 bytes or an IPv6Address, as its 16 bytes."""
    cdef bytes b
    if isinstance(a, str):
        try:
            return inet_pton(AF_INET6, a.split("%", 1)[0])
        except OSError:
            raise ValueError(f"not an IPv6 address: {a!r}") from None
    if isinstance(a, ipaddress.IPv6Address):
        return a.packed
    if isinstance(a, int):
        raise ValueError("give an IPv6 address as text or 16 bytes, not an int")
    b = bytes(a)
    if len(b) != 16:
        raise ValueError("an IPv6 address is 16 bytes")
    return b


def ip_version(a) -> int:
    """6 for an IPv6 address (text with a colon, 16 bytes, an ``IPv6Address``), else 4."""
    return _family(a)


def ip6_to_bytes(a) -> bytes:
    """An IPv6 address (text, 16 bytes or ``IPv6Address``) as its 16 bytes."""
    return _addr6(a)


def bytes_to_ip6(b) -> str:
    """16 bytes as the canonical text of an IPv6 address (RFC 5952)."""
    cdef bytes v = bytes(b)
    if len(v) != 16:
        raise ValueError("an IPv6 address is 16 bytes")
    return inet_ntop(AF_INET6, v)


cdef int _fill_options(TcpOut* t, object options) except -1:
    t.opt_present = 0
    t.nsack = 0
    if options is None:
        return 0
    if options.mss is not None:
        t.opt_present |= OPT_MSS
        t.mss = options.mss
    if options.wscale is not None:
        t.opt_present |= OPT_WSCALE
        t.wscale = options.wscale
    if options.sack_permitted:
        t.opt_present |= OPT_SACK_PERM
    if options.timestamps is not None:
        t.opt_present |= OPT_TS
        t.tsval = options.timestamps[0]
        t.tsecr = options.timestamps[1]
    if options.sack:
        if len(options.sack) > MAX_SACK_BLOCKS:
            raise ValueError("at most 4 SACK blocks")
        t.opt_present |= OPT_SACK
        for i, (left, right) in enumerate(options.sack):
            t.sack[2 * i] = left
            t.sack[2 * i + 1] = right
        t.nsack = len(options.sack)
    return 0


def build_tcp(src, dst, int sport, int dport, uint32_t seq, uint32_t ack=0, int flags=TH_ACK,
              int window=65535, payload=b"", options=None, int urg=0, int ttl=64,
              int ip_id=0, int tos=0, bint df=True, int flow=0) -> bytes:
    """A complete IPv4 + TCP packet with correct padding and checksums; an IPv6 one (no
    extension headers; `ttl` is the hop limit, `tos` the traffic class, `flow` the flow
    label) when the addresses are IPv6.

    `options` is a :class:`TcpOptions` (or None). With timestamps present, at most 3 SACK
    blocks fit the 40 bytes of option space; extra blocks are left out, as RFC 2018 says.
    """
    cdef TcpOut t
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t plen, total
    if not (0 < sport < 65536 and 0 < dport < 65536):
        raise ValueError("ports must be 1..65535")
    if not (0 <= window < 65536 and 0 <= urg < 65536 and 0 <= flags < 256):
        raise ValueError("window, urg must be 16-bit and flags 8-bit")
    if not (0 < ttl < 256):
        raise ValueError("TTL must be 1..255 (RFC 1122 3.2.1.7: never send TTL 0)")
    memset(&t, 0, sizeof(t))
    if _family(src) == 6 or _family(dst) == 6:
        if not 0 <= flow < (1 << 20):
            raise ValueError("the flow label is 20 bits")
        t.ipver = 6
        t.flow = flow
        memcpy(t.src6, <const unsigned char*>PyBytes_AS_STRING(_addr6(src)), 16)
        memcpy(t.dst6, <const unsigned char*>PyBytes_AS_STRING(_addr6(dst)), 16)
    else:
        t.src = _addr(src)
        t.dst = _addr(dst)
    t.sport = sport
    t.dport = dport
    t.seq = seq
    t.ack = ack
    t.flags = flags
    t.window = window
    t.urg = urg
    t.ttl = ttl
    t.tos = tos
    t.ip_id = ip_id
    t.df = df
    _fill_options(&t, options)
    cdef int held = get_buffer(payload, &view, &p, &plen)
    try:
        total = ip_header_len(&t) + 20 + tcp_options_len(&t) + plen
        if total - (40 if t.ipver == 6 else 0) > 65535:
            raise ValueError("packet longer than the length field allows")
        out = PyBytes_FromStringAndSize(NULL, total)
        build_tcp_into(<unsigned char*>PyBytes_AS_STRING(out), total, &t, p, plen)
        return out
    finally:
        if held:
            PyBuffer_Release(&view)


def build_ipv4(src, dst, int proto, payload=b"", int ttl=64, int ip_id=0, int tos=0,
               bint df=True) -> bytes:
    """An IPv4 packet (no options) around `payload`, with its header checksum."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t plen
    cdef uint32_t s_ip = _addr(src), d_ip = _addr(dst)
    if not (0 < ttl < 256):
        raise ValueError("TTL must be 1..255")
    cdef int held = get_buffer(payload, &view, &p, &plen)
    try:
        if plen + 20 > 65535:
            raise ValueError("packet longer than 65535 bytes")
        out = PyBytes_FromStringAndSize(NULL, 20 + plen)
        _write_ipv4_header(<unsigned char*>PyBytes_AS_STRING(out), <uint16_t>(20 + plen),
                           <uint8_t>proto, s_ip, d_ip, <uint8_t>ttl, <uint8_t>tos,
                           <uint16_t>ip_id, df)
        memcpy(PyBytes_AS_STRING(out) + 20, p, plen)
        return out
    finally:
        if held:
            PyBuffer_Release(&view)


def build_icmp(src, dst, int icmp_type, int code, uint32_t rest=0, data=b"", int ttl=64,
               int ip_id=0) -> bytes:
    """An IPv4 + ICMP packet; `rest` is the 32-bit rest-of-header field (RFC 792)."""
    cdef bytearray msg = bytearray(8) + bytearray(data)
    msg[0] = icmp_type
    msg[1] = code
    msg[4:8] = rest.to_bytes(4, "big")
    c = checksum(msg)
    msg[2] = c >> 8
    msg[3] = c & 0xFF
    return build_ipv4(src, dst, IPPROTO_ICMP, msg, ttl=ttl, ip_id=ip_id, df=False)


def build_icmp_echo(src, dst, int ident, int seq, data=b"", bint reply=False,
                    int ttl=64) -> bytes:
    """An echo request (or reply, RFC 792) with identifier, sequence number and data."""
    # In uint32_t: as C ints, an identifier >= 0x8000 shifted left by 16 went negative.
    cdef uint32_t rest = (<uint32_t>(ident & 0xFFFF) << 16) | <uint32_t>(seq & 0xFFFF)
    return build_icmp(src, dst, 0 if reply else 8, 0, rest, data, ttl=ttl)


def build_icmp_unreachable(src, dst, int code, original, int mtu=0, int ttl=64) -> bytes:
    """A destination-unreachable error quoting `original` (its IPv4 header and first 8 data
    bytes, RFC 792; RFC 1191 puts the next-hop MTU in the low 16 bits for code 4)."""
    orig = bytes(original)
    if len(orig) < 20:
        raise ValueError("the quoted packet needs a whole IPv4 header")
    quote = orig[:(orig[0] & 0x0F) * 4 + 8]
    return build_icmp(src, dst, 3, code, mtu & 0xFFFF if code == 4 else 0, quote, ttl=ttl)


def build_ipv6(src, dst, int next_header, payload=b"", int hop_limit=64, int tclass=0,
               int flow=0) -> bytes:
    """An IPv6 packet (RFC 8200 3) around `payload` (which starts with any extension
    headers `next_header` names)."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t plen
    cdef bytes s6 = _addr6(src), d6 = _addr6(dst)
    if not 0 <= hop_limit < 256 or not 0 <= tclass < 256 or not 0 <= flow < (1 << 20):
        raise ValueError("hop limit and traffic class are 8 bits, the flow label 20")
    cdef int held = get_buffer(payload, &view, &p, &plen)
    try:
        if plen > 65535:
            raise ValueError("payload longer than 65535 bytes")
        out = PyBytes_FromStringAndSize(NULL, 40 + plen)
        _write_ipv6_header(<unsigned char*>PyBytes_AS_STRING(out), <uint16_t>plen,
                           <uint8_t>next_header, <const unsigned char*>PyBytes_AS_STRING(s6),
                           <const unsigned char*>PyBytes_AS_STRING(d6), <uint8_t>hop_limit,
                           <uint8_t>tclass, <uint32_t>flow)
        memcpy(PyBytes_AS_STRING(out) + 40, p, plen)
        return out
    finally:
        if held:
            PyBuffer_Release(&view)


def build_icmpv6(src, dst, int icmp_type, int code, uint32_t rest=0, data=b"",
                 int hop_limit=64) -> bytes:
    """An IPv6 + ICMPv6 packet (RFC 4443 2.1); `rest` is the 32-bit field after the
    checksum. The checksum covers the IPv6 pseudo-header (RFC 4443 2.3)."""
    cdef bytearray msg = bytearray(8) + bytearray(data)
    msg[0] = icmp_type
    msg[1] = code
    msg[4:8] = rest.to_bytes(4, "big")
    c = pseudo_header_checksum(src, dst, IPPROTO_ICMPV6, msg)
    msg[2] = c >> 8
    msg[3] = c & 0xFF
    return build_ipv6(src, dst, IPPROTO_ICMPV6, msg, hop_limit=hop_limit)


def build_icmpv6_echo(src, dst, int ident, int seq, data=b"", bint reply=False,
                      int hop_limit=64) -> bytes:
    """An ICMPv6 echo request (128) or reply (129), RFC 4443 4.1/4.2."""
    cdef uint32_t rest = (<uint32_t>(ident & 0xFFFF) << 16) | <uint32_t>(seq & 0xFFFF)
    return build_icmpv6(src, dst, 129 if reply else 128, 0, rest, data, hop_limit=hop_limit)


def build_icmpv6_error(src, dst, int icmp_type, int code, original, uint32_t rest=0,
                       int hop_limit=64) -> bytes:
    """An ICMPv6 error (destination unreachable 1, packet too big 2 with the MTU in
    `rest`, time exceeded 3, parameter problem 4) quoting as much of `original` as keeps
    the error within the minimum IPv6 MTU of 1280 bytes (RFC 4443 2.4 (c))."""
    orig = bytes(original)
    if len(orig) < 40 or orig[0] >> 4 != 6:
        raise ValueError("the quoted packet needs a whole IPv6 header")
    return build_icmpv6(src, dst, icmp_type, code, rest, orig[:1280 - 48],
                        hop_limit=hop_limit)


# --- UDP (RFC 768) ---------------------------------------------------------------------------

cdef void _write_udp(unsigned char* u, uint16_t sport, uint16_t dport,
                     const unsigned char* payload, Py_ssize_t plen, uint64_t pseudo) noexcept nogil:
    """The UDP header and payload at `u`, checksummed over `pseudo` + the datagram. A sum
    of 0 goes out as 0xFFFF (RFC 768; RFC 8200 8.1: 0 means "none" / is invalid)."""
    cdef uint16_t c
    wr16(u, sport)
    wr16(u + 2, dport)
    wr16(u + 4, <uint16_t>(8 + plen))
    u[6] = 0
    u[7] = 0
    memcpy(u + 8, payload, plen)
    c = checksum_finish(ft_csum_partial(u, <size_t>(8 + plen), pseudo))
    if c == 0:
        c = 0xFFFF
    memcpy(u + 6, &c, 2)


cdef list _udp_packets(src, dst, int sport, int dport, payload, int mtu, uint32_t ident,
                       int ttl, int tos, int flow, bint df):
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t plen, ulen, hl, chunk, off, n
    cdef uint32_t s_ip = 0, d_ip = 0
    cdef bytes s6 = None, d6 = None, seg, pkt
    cdef unsigned char* o
    cdef unsigned char* u
    cdef uint16_t c
    cdef uint64_t pseudo
    cdef bint v6 = _family(src) == 6 or _family(dst) == 6
    cdef list out = []
    if not (0 <= sport < 65536 and 0 < dport < 65536):
        raise ValueError("ports must be 0..65535 (source) and 1..65535 (destination)")
    if not (0 < ttl < 256) or not 0 <= tos < 256 or not 0 <= flow < (1 << 20):
        raise ValueError("TTL 1..255, TOS 8 bits, flow label 20 bits")
    if v6:
        s6 = _addr6(src)
        d6 = _addr6(dst)
    else:
        s_ip = _addr(src)
        d_ip = _addr(dst)
    hl = 40 if v6 else 20
    cdef int held = get_buffer(payload, &view, &p, &plen)
    try:
        ulen = 8 + plen
        if ulen > 65535 or (not v6 and ulen + 20 > 65535):
            raise ValueError("datagram longer than the UDP length field allows")
        if v6:
            pseudo = ft_pseudo6_sum(<const unsigned char*>PyBytes_AS_STRING(s6 + d6),
                                    IPPROTO_UDP, <uint32_t>ulen)
        else:
            pseudo = ft_pseudo_sum_mem(htonl(s_ip), htonl(d_ip), IPPROTO_UDP, <uint32_t>ulen)
        if mtu <= 0 or hl + ulen <= mtu:
            pkt = PyBytes_FromStringAndSize(NULL, hl + ulen)
            o = <unsigned char*>PyBytes_AS_STRING(pkt)
            if v6:
                _write_ipv6_header(o, <uint16_t>ulen, IPPROTO_UDP,
                                   <const unsigned char*>PyBytes_AS_STRING(s6),
                                   <const unsigned char*>PyBytes_AS_STRING(d6),
                                   <uint8_t>ttl, <uint8_t>tos, <uint32_t>flow)
            else:
                _write_ipv4_header(o, <uint16_t>(20 + ulen), IPPROTO_UDP, s_ip, d_ip,
                                   <uint8_t>ttl, <uint8_t>tos, <uint16_t>ident, df)
            _write_udp(o + hl, <uint16_t>sport, <uint16_t>dport, p, plen, pseudo)
            out.append(pkt)
            return out
        # Fragment (RFC 791 2.3 / RFC 8200 4.5): every fragment but the last carries a
        # multiple of 8 bytes; IPv4 fragments have DF clear, IPv6 ones a Fragment header.
        chunk = ((mtu - hl - (8 if v6 else 0)) // 8) * 8
        if chunk < 8:
            raise ValueError("MTU too small to fragment into")
        seg = PyBytes_FromStringAndSize(NULL, ulen)
        u = <unsigned char*>PyBytes_AS_STRING(seg)
        _write_udp(u, <uint16_t>sport, <uint16_t>dport, p, plen, pseudo)
        off = 0
        while off < ulen:
            n = ulen - off if ulen - off <= chunk else chunk
            if v6:
                pkt = PyBytes_FromStringAndSize(NULL, 48 + n)
                o = <unsigned char*>PyBytes_AS_STRING(pkt)
                _write_ipv6_header(o, <uint16_t>(8 + n), IPV6_FRAGMENT,
                                   <const unsigned char*>PyBytes_AS_STRING(s6),
                                   <const unsigned char*>PyBytes_AS_STRING(d6),
                                   <uint8_t>ttl, <uint8_t>tos, <uint32_t>flow)
                o[40] = IPPROTO_UDP
                o[41] = 0
                wr16(o + 42, <uint16_t>(off | (1 if off + n < ulen else 0)))
                wr32(o + 44, ident)
                memcpy(o + 48, u + off, n)
            else:
                pkt = PyBytes_FromStringAndSize(NULL, 20 + n)
                o = <unsigned char*>PyBytes_AS_STRING(pkt)
                _write_ipv4_header(o, <uint16_t>(20 + n), IPPROTO_UDP, s_ip, d_ip,
                                   <uint8_t>ttl, <uint8_t>tos, <uint16_t>ident, False)
                wr16(o + 6, <uint16_t>((off >> 3) | (0x2000 if off + n < ulen else 0)))
                o[10] = 0
                o[11] = 0
                c = checksum_finish(ft_csum_partial(o, 20, 0))
                memcpy(o + 10, &c, 2)
                memcpy(o + 20, u + off, n)
            out.append(pkt)
            off += n
        return out
    finally:
        if held:
            PyBuffer_Release(&view)


def build_udp(src, dst, int sport, int dport, payload=b"", int ttl=64, int ip_id=0,
              int tos=0, bint df=False, int flow=0) -> bytes:
    """A complete IPv4 + UDP packet (RFC 768) with its checksum computed in C; an IPv6 one
    (no extension headers; `ttl` is the hop limit, `tos` the traffic class, `flow` the
    flow label) when the addresses are IPv6. Source port 0 means "no reply port"."""
    return _udp_packets(src, dst, sport, dport, payload, 0, <uint32_t>(ip_id & 0xFFFF), ttl,
                        tos, flow, df)[0]


def build_udp_fragments(src, dst, int sport, int dport, payload=b"", int mtu=1500,
                        uint32_t ident=0, int ttl=64, int tos=0, int flow=0,
                        bint df=True) -> list:
    """The packets of one UDP datagram on a link of `mtu` bytes: one packet when it fits
    (IPv4: DF as `df`, as Linux's IP_PMTUDISC_WANT sets it), else fragments (IPv4:
    identification `ident` & 0xFFFF, DF clear, RFC 791; IPv6: a Fragment header with the
    32-bit `ident`, RFC 8200 4.5). The UDP checksum covers the whole datagram."""
    if mtu < (1280 if _family(src) == 6 or _family(dst) == 6 else 68):
        raise ValueError("MTU below the family's minimum (68, RFC 791; 1280, RFC 8200 5)")
    return _udp_packets(src, dst, sport, dport, payload, mtu,
                        ident if (_family(src) == 6 or _family(dst) == 6) else ident & 0xFFFF,
                        ttl, tos, flow, df)


# ============================================================================================
# Python views
# ============================================================================================

cdef class SplitPacket:
    """A packet whose payload lives in someone else's memory (e.g. a send ring): the
    headers in :attr:`head`, then up to two payload pieces. ``len()`` is the whole
    packet; the buffer protocol and ``bytes()`` give it contiguous (copied once, on first
    use). Made by the engine for links that write scatter lists (``TunLink``), and only
    valid while that memory is unchanged: such a link writes it at once."""

    def __cinit__(self):
        self.n1 = self.n2 = 0
        self.head = b""

    def __init__(self, *args, **kwargs):
        raise TypeError("SplitPacket objects are made by the engine (Host.split_tx)")

    def __len__(self) -> int:
        return len(self.head) + self.n1 + self.n2

    cdef bytes _flatten(self):
        cdef Py_ssize_t h
        cdef unsigned char* p
        if self.flat is None:
            h = len(self.head)
            flat = PyBytes_FromStringAndSize(NULL, h + self.n1 + self.n2)
            p = <unsigned char*>PyBytes_AS_STRING(flat)
            memcpy(p, PyBytes_AS_STRING(self.head), h)
            if self.n1:
                memcpy(p + h, self.p1, self.n1)
            if self.n2:
                memcpy(p + h + self.n1, self.p2, self.n2)
            self.flat = flat
            self.owner = None                        # the copy no longer needs it
        return self.flat

    def __getbuffer__(self, Py_buffer* view, int flags):
        cdef bytes flat = self._flatten()
        PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(flat), len(flat), 1, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass

    def __bytes__(self) -> bytes:
        return self._flatten()

    def __repr__(self) -> str:
        return f"<SplitPacket {len(self.head)} + {self.n1} + {self.n2} bytes>"


cdef SplitPacket make_split_packet(bytes head, object owner, const unsigned char* p1,
                                   Py_ssize_t n1, const unsigned char* p2, Py_ssize_t n2):
    cdef SplitPacket sp = SplitPacket.__new__(SplitPacket)
    sp.head = head
    sp.owner = owner
    sp.p1 = p1
    sp.n1 = n1
    sp.p2 = p2
    sp.n2 = n2
    return sp


cdef class Packet:
    """A read-only view of one valid IPv4 or IPv6 packet (TCP, ICMP, ICMPv6 or other
    protocol). For IPv6, ``ttl`` is the hop limit, ``tos`` the traffic class,
    ``ip_header_len`` the fixed header and the extension headers, and ``proto`` the
    upper-layer protocol after them."""

    @property
    def version(self) -> int:
        return self.d.ipver

    @property
    def is_ipv6(self) -> bool:
        return self.d.ipver == 6

    @property
    def src(self) -> str:
        if self.d.ipver == 6:
            return inet_ntop(AF_INET6, self.raw[8:24])
        return int_to_ip(self.d.src)

    @property
    def dst(self) -> str:
        if self.d.ipver == 6:
            return inet_ntop(AF_INET6, self.raw[24:40])
        return int_to_ip(self.d.dst)

    @property
    def src_int(self) -> int:
        """The source address as a number (128 bits for IPv6)."""
        if self.d.ipver == 6:
            return int.from_bytes(self.raw[8:24], "big")
        return self.d.src

    @property
    def dst_int(self) -> int:
        if self.d.ipver == 6:
            return int.from_bytes(self.raw[24:40], "big")
        return self.d.dst

    @property
    def src_bytes(self) -> bytes:
        """The source address as it sits in the header (4 or 16 bytes)."""
        return self.raw[8:24] if self.d.ipver == 6 else self.raw[12:16]

    @property
    def dst_bytes(self) -> bytes:
        return self.raw[24:40] if self.d.ipver == 6 else self.raw[16:20]

    @property
    def flow_label(self) -> int:
        """The IPv6 flow label (0 for IPv4)."""
        if self.d.ipver == 6:
            return int.from_bytes(self.raw[1:4], "big") & 0xFFFFF
        return 0

    @property
    def ttl(self) -> int:
        return self.d.ttl

    @property
    def tos(self) -> int:
        return self.d.tos

    @property
    def ip_id(self) -> int:
        return self.d.ip_id

    @property
    def ip_flags(self) -> int:
        """The 3 IPv4 flag bits (reserved, DF, MF) as in scapy: DF = 2, MF = 1 (0 for
        IPv6)."""
        return self.d.frag >> 13 if self.d.ipver == 4 else 0

    @property
    def frag_offset(self) -> int:
        return self.d.frag & 0x1FFF if self.d.ipver == 4 else 0

    @property
    def proto(self) -> int:
        return self.d.proto

    @property
    def ip_header_len(self) -> int:
        return self.d.ip_hl

    @property
    def total_length(self) -> int:
        return self.d.ip_len

    @property
    def is_tcp(self) -> bool:
        return self.d.proto == IPPROTO_TCP

    @property
    def is_udp(self) -> bool:
        return self.d.proto == IPPROTO_UDP

    @property
    def is_icmp(self) -> bool:
        """ICMP of the packet's family: ICMP for IPv4, ICMPv6 for IPv6."""
        return self.d.proto == (IPPROTO_ICMPV6 if self.d.ipver == 6 else IPPROTO_ICMP)

    # --- TCP ---
    @property
    def sport(self) -> int:
        if self.d.proto != IPPROTO_UDP:
            self._need_tcp()
        return self.d.sport

    @property
    def dport(self) -> int:
        if self.d.proto != IPPROTO_UDP:
            self._need_tcp()
        return self.d.dport

    @property
    def seq(self) -> int:
        self._need_tcp()
        return self.d.seq

    @property
    def ack(self) -> int:
        self._need_tcp()
        return self.d.ack

    @property
    def flags(self) -> TcpFlags:
        self._need_tcp()
        return TcpFlags(self.d.flags)

    @property
    def flag_bits(self) -> int:
        """The TCP flags as a plain int (cheaper than `flags` on hot paths)."""
        self._need_tcp()
        return self.d.flags

    @property
    def payload_len(self) -> int:
        return self.d.payload_len

    @property
    def opt_bits(self) -> int:
        """Which options are present, as OPT_* bits (MSS 1, WSCALE 2, SACK_PERM 4, TS 8,
        SACK 16): a cheap test before building `options`."""
        self._need_tcp()
        return self.d.opt_present

    # The parser writes tsval/tsecr only when the option is there; a batch reuses its
    # descriptors, so without the check a packet would show the previous one's values.
    @property
    def tsval(self) -> int:
        """TSval of the timestamps option (RFC 7323 3.2), 0 when there is none."""
        self._need_tcp()
        return self.d.tsval if self.d.opt_present & OPT_TS else 0

    @property
    def tsecr(self) -> int:
        """TSecr of the timestamps option, 0 when there is none."""
        self._need_tcp()
        return self.d.tsecr if self.d.opt_present & OPT_TS else 0

    @property
    def sack_blocks(self) -> list:
        self._need_tcp()
        return [(self.d.sack[2 * i], self.d.sack[2 * i + 1]) for i in range(self.d.nsack)]

    @property
    def reserved(self) -> int:
        self._need_tcp()
        return self.d.reserved

    @property
    def window(self) -> int:
        self._need_tcp()
        return self.d.window

    @property
    def urgent(self) -> int:
        self._need_tcp()
        return self.d.urg

    @property
    def data_offset(self) -> int:
        """TCP header length in bytes."""
        self._need_tcp()
        return self.d.doff

    @property
    def options(self) -> TcpOptions:
        self._need_tcp()
        o = self.d.opt_present
        return TcpOptions(
            mss=self.d.mss if o & OPT_MSS else None,
            wscale=self.d.wscale if o & OPT_WSCALE else None,
            sack_permitted=bool(o & OPT_SACK_PERM),
            timestamps=(self.d.tsval, self.d.tsecr) if o & OPT_TS else None,
            sack=[(self.d.sack[2 * i], self.d.sack[2 * i + 1]) for i in range(self.d.nsack)],
        )

    @property
    def payload(self) -> bytes:
        """TCP or UDP data, ICMP data after the 8-byte header, or the IP payload
        otherwise."""
        if self.d.proto == IPPROTO_TCP or self.d.proto == IPPROTO_UDP or self.is_icmp:
            return self.raw[self.d.payload_off:self.d.payload_off + self.d.payload_len]
        return self.raw[self.d.ip_hl:self.d.ip_len]

    # --- ICMP ---
    @property
    def icmp_type(self) -> int:
        self._need_icmp()
        return self.d.icmp_type

    @property
    def icmp_code(self) -> int:
        self._need_icmp()
        return self.d.icmp_code

    @property
    def icmp_id(self) -> int:
        self._need_icmp()
        return self.d.ack >> 16

    @property
    def icmp_seq(self) -> int:
        self._need_icmp()
        return self.d.ack & 0xFFFF

    @property
    def icmp_mtu(self) -> int:
        """Next-hop MTU of a fragmentation-needed error (RFC 1191) or of an ICMPv6 Packet
        Too Big (RFC 4443 3.2, 32 bits), else 0."""
        self._need_icmp()
        if self.d.ipver == 6:
            return self.d.ack if self.d.icmp_type == 2 else 0
        return self.d.ack & 0xFFFF if self.d.icmp_type == 3 and self.d.icmp_code == 4 else 0

    @property
    def is_icmp_error(self) -> bool:
        """An ICMP error that quotes a packet (IPv4 3, 11, 12; ICMPv6 below 128)."""
        self._need_icmp()
        if self.d.ipver == 6:
            return self.d.icmp_type < 128
        return self.d.icmp_type in (3, 11, 12)

    @property
    def quoted(self):
        """For an ICMP error: the quoted packet's (src, dst, proto, sport, dport, seq) —
        ports (TCP, UDP) and seq (TCP) are read from its first 8 bytes, else None. For
        ICMPv6 the quoted extension headers are walked (bounded) to the upper layer;
        None when the quote ends first."""
        self._need_icmp()
        if not self.is_icmp_error:
            return None
        q = self.raw[self.d.payload_off:self.d.payload_off + self.d.payload_len]
        if self.d.ipver == 6:
            return _quoted6(q)
        qhl = (q[0] & 0x0F) * 4
        src = int_to_ip(int.from_bytes(q[12:16], "big"))
        dst = int_to_ip(int.from_bytes(q[16:20], "big"))
        proto = q[9]
        if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
            t = q[qhl:qhl + 8]
            return (src, dst, proto, int.from_bytes(t[0:2], "big"),
                    int.from_bytes(t[2:4], "big"),
                    int.from_bytes(t[4:8], "big") if proto == IPPROTO_TCP else None)
        return (src, dst, proto, None, None, None)

    cdef _need_tcp(self):
        if self.d.proto != IPPROTO_TCP:
            raise AttributeError("not a TCP packet")

    cdef _need_icmp(self):
        if not self.is_icmp:
            raise AttributeError("not an ICMP packet")

    def summary(self) -> str:
        if self.d.proto == IPPROTO_TCP:
            return (f"{self.src}:{self.d.sport} > {self.dst}:{self.d.dport} "
                    f"[{TcpFlags(self.d.flags).letters()}] seq={self.d.seq} ack={self.d.ack} "
                    f"win={self.d.window} len={self.d.payload_len} {self.options!r}")
        if self.is_icmp:
            kind = "ICMPv6" if self.d.ipver == 6 else "ICMP"
            return f"{self.src} > {self.dst} {kind} type={self.d.icmp_type} code={self.d.icmp_code}"
        if self.d.proto == IPPROTO_UDP:
            return (f"{self.src}:{self.d.sport} > {self.dst}:{self.d.dport} UDP "
                    f"len={self.d.payload_len}")
        return f"{self.src} > {self.dst} proto={self.d.proto}"

    def __repr__(self) -> str:
        return f"<Packet {self.summary()}>"


def _quoted6(bytes q):
    """(src, dst, proto, sport, dport, seq) of the IPv6 packet an ICMPv6 error quotes."""
    src = inet_ntop(AF_INET6, q[8:24])
    dst = inet_ntop(AF_INET6, q[24:40])
    nh = q[6]
    off = 40
    for _ in range(IPV6_MAX_EXT_HEADERS):
        if nh not in (IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS, IPV6_FRAGMENT):
            break
        if off + 8 > len(q):
            return None
        if nh == IPV6_FRAGMENT and int.from_bytes(q[off + 2:off + 4], "big") & 0xFFF8:
            return (src, dst, IPV6_FRAGMENT, None, None, None)   # no upper header here
        hlen = 8 if nh == IPV6_FRAGMENT else (q[off + 1] + 1) * 8
        nh = q[off]
        off += hlen
    else:
        return None
    if nh == IPPROTO_TCP or nh == IPPROTO_UDP:
        if off + 8 > len(q):
            return None
        t = q[off:off + 8]
        return (src, dst, nh, int.from_bytes(t[0:2], "big"), int.from_bytes(t[2:4], "big"),
                int.from_bytes(t[4:8], "big") if nh == IPPROTO_TCP else None)
    return (src, dst, nh, None, None, None)


def parse(packet, *, bint verify_checksums=True) -> Packet:
    """Parse and validate one IPv4 or IPv6 packet. Raises :class:`MalformedPacket` (with a
    :class:`DropReason`) for anything the stack would drop, and nothing else.

    ``verify_checksums=False`` skips the IPv4 header, TCP and UDP checksums (for packets a
    NIC or TUN offload has verified); ICMP checksums, which no offload covers, are always
    checked, and so is an IPv6 UDP checksum of 0 (invalid, RFC 8200 8.1)."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int held
    cdef Packet pk = Packet.__new__(Packet)
    cdef int flags = 0 if verify_checksums else (PARSE_NO_TCP_CSUM | PARSE_NO_IP_CSUM)
    try:
        held = get_buffer(packet, &view, &p, &n)
    except (TypeError, ValueError, BufferError):
        raise MalformedPacket(DropReason.NOT_BUFFER) from None
    try:
        parse_packet(p, n, &pk.d, flags)
        if pk.d.reason:
            raise MalformedPacket(DropReason(pk.d.reason))
        pk.raw = PyBytes_FromStringAndSize(<const char*>p, pk.d.ip_len)
    finally:
        if held:
            PyBuffer_Release(&view)
    return pk


# ============================================================================================
# Batch parse
# ============================================================================================

cdef class SegmentBatch:
    """Descriptors for a whole batch of packets, parsed in one call without copying.

    Reusable: `parse()` overwrites the previous batch. The batch holds its own references
    to the packets (and buffer exports of non-bytes ones) while the descriptors point into
    them, so the caller may reuse its list at once.
    """

    def __cinit__(self, Py_ssize_t capacity=64):
        self.descs = NULL
        self.bases = NULL
        self.views = NULL
        self.held = NULL
        self.count = 0
        self.capacity = 0
        self.packets = []
        self._reserve(capacity if capacity > 0 else 1)

    def __dealloc__(self):
        self._release()
        free(self.descs)
        free(self.bases)
        free(self.views)
        free(self.held)

    cdef int _reserve(self, Py_ssize_t n) except -1:
        if n <= self.capacity:
            return 0
        self._release()   # realloc moves the Py_buffer structs: release them first
        descs = <SegDesc*>realloc(self.descs, n * sizeof(SegDesc))
        if descs == NULL:
            raise MemoryError()
        self.descs = descs
        bases = <const unsigned char**>realloc(self.bases, n * sizeof(unsigned char*))
        if bases == NULL:
            raise MemoryError()
        self.bases = bases
        views = <Py_buffer*>realloc(self.views, n * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
        self.views = views
        held = <unsigned char*>realloc(self.held, n)
        if held == NULL:
            raise MemoryError()
        self.held = held
        memset(self.held, 0, n)
        self.capacity = n
        return 0

    cdef void _release(self) noexcept:
        cdef Py_ssize_t i
        for i in range(self.count):
            if self.held[i]:
                PyBuffer_Release(&self.views[i])
                self.held[i] = 0
        self.count = 0
        self.packets = []

    cpdef Py_ssize_t parse(self, list packets, int flags=0) except -1:
        """Parse every packet of the list; returns how many were accepted."""
        cdef Py_ssize_t i, n = PyList_GET_SIZE(packets), ok = 0
        cdef object obj
        cdef const unsigned char* base
        cdef Py_ssize_t ln
        self._release()
        self._reserve(n)
        # Our own references: the caller may clear or refill its list (a link reusing its
        # receive list) while the descriptors still point into the packets.
        self.packets = packets[:]
        self.count = n
        for i in range(n):
            obj = <object>PyList_GET_ITEM(self.packets, i)
            if PyBytes_CheckExact(obj):
                base = <const unsigned char*>PyBytes_AS_STRING(obj)
                ln = PyBytes_GET_SIZE(obj)
            else:
                try:
                    # Pinned: a bytearray resized later must not free what we point at.
                    self.held[i] = get_buffer(obj, &self.views[i], &base, &ln, True)
                except (TypeError, ValueError, BufferError):
                    self.bases[i] = NULL
                    self.descs[i].reason = DROP_NOT_BUFFER
                    continue
            self.bases[i] = base
            if parse_packet(base, ln, &self.descs[i], flags) == DROP_NONE:
                ok += 1
        return ok

    def __len__(self) -> int:
        return self.count

    def reason(self, Py_ssize_t i) -> DropReason:
        self._check(i)
        return DropReason(self.descs[i].reason)

    def reasons(self) -> list:
        return [DropReason(self.descs[i].reason) for i in range(self.count)]

    def packet(self, Py_ssize_t i) -> Packet:
        """The Python view of an accepted packet i."""
        self._check(i)
        if self.descs[i].reason:
            raise MalformedPacket(DropReason(self.descs[i].reason))
        cdef Packet pk = Packet.__new__(Packet)
        pk.d = self.descs[i]
        pk.raw = PyBytes_FromStringAndSize(<const char*>self.bases[i], self.descs[i].ip_len)
        return pk

    cdef _check(self, Py_ssize_t i):
        if not 0 <= i < self.count:
            raise IndexError(i)


def parse_batch(list packets, *, bint verify_checksums=True) -> SegmentBatch:
    """Parse a list of packets into a new :class:`SegmentBatch`."""
    cdef SegmentBatch b = SegmentBatch(max(len(packets), 1))
    b.parse(packets, 0 if verify_checksums else (PARSE_NO_TCP_CSUM | PARSE_NO_IP_CSUM))
    return b
