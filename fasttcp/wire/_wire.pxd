# C-level interface of the wire layer: checksum, sequence arithmetic, segment descriptors,
# parse and build. Other Cython modules `cimport` this; nothing here touches Python objects
# except the SegmentBatch container.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.buffer cimport Py_buffer, PyBUF_SIMPLE, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE

cdef extern from "_csum.h" nogil:
    uint64_t ft_csum_partial(const unsigned char* p, size_t n, uint64_t acc)
    uint16_t ft_csum_fold(uint64_t s)
    uint64_t ft_add64(uint64_t a, uint64_t b)
    uint64_t ft_pseudo_sum_mem(uint32_t src_mem, uint32_t dst_mem, uint8_t proto, uint32_t length)
    uint64_t ft_pseudo6_sum(const unsigned char* addrs, uint8_t proto, uint32_t length)
    uint16_t ft_load16(const unsigned char* p)
    uint32_t ft_load32(const unsigned char* p)

# --- borrowing the bytes of any bytes-like object (every compiled module uses this) ------
cdef inline int get_buffer(object obj, Py_buffer* view, const unsigned char** base,
                           Py_ssize_t* n, bint pin=False) except -1:
    """Borrow obj's bytes: fast for bytes/bytearray, the buffer protocol for the rest.
    Returns 1 when `view` must be released.

    `pin`: the pointer must outlive Python code (other threads, or the caller's later
    calls). A bytearray then goes through the buffer protocol too, which makes resizing it
    raise BufferError instead of freeing the memory under us."""
    if PyBytes_CheckExact(obj):
        base[0] = <const unsigned char*>PyBytes_AS_STRING(obj)
        n[0] = PyBytes_GET_SIZE(obj)
        return 0
    if not pin and PyByteArray_Check(obj):
        base[0] = <const unsigned char*>PyByteArray_AS_STRING(obj)
        n[0] = PyByteArray_GET_SIZE(obj)
        return 0
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    base[0] = <const unsigned char*>view.buf
    n[0] = view.len
    return 1


# --- sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4; RFC 1982) -------------
cdef inline bint seq_lt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0

cdef inline bint seq_le(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) <= 0

cdef inline bint seq_gt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) > 0

cdef inline bint seq_ge(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) >= 0

cdef inline bint seq_between(uint32_t lo, uint32_t x, uint32_t hi) noexcept nogil:
    """lo <= x < hi on the circle (an empty range when lo == hi)."""
    return <uint32_t>(x - lo) < <uint32_t>(hi - lo)

cdef inline int32_t seq_diff(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b)

cdef inline uint32_t seq_max(uint32_t a, uint32_t b) noexcept nogil:
    return b if seq_lt(a, b) else a

cdef inline uint32_t seq_min(uint32_t a, uint32_t b) noexcept nogil:
    return a if seq_lt(a, b) else b

# --- byte order -----------------------------------------------------------------------------
cdef inline uint16_t rd16(const unsigned char* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t rd32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void wr16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xff

cdef inline void wr32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff

# --- constants --------------------------------------------------------------------------------
cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58
    # IPv6 next-header values of the extension headers (RFC 8200 4) and "no next header"
    IPV6_HOPOPTS = 0
    IPV6_ROUTING = 43
    IPV6_FRAGMENT = 44
    IPV6_NONXT = 59
    IPV6_DSTOPTS = 60
    # The longest chain of extension headers the parser walks (RFC 8200 4.1 allows each at
    # most once, destination options twice: 5 in a well-formed packet; RFC 7112 / RFC 9098:
    # a bounded walk). Longer chains are dropped as DROP_IPV6_EXT_CHAIN.
    IPV6_MAX_EXT_HEADERS = 8

    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PSH = 0x08
    TH_ACK = 0x10
    TH_URG = 0x20
    TH_ECE = 0x40
    TH_CWR = 0x80

    # SegDesc.opt_present bits
    OPT_MSS = 0x01
    OPT_WSCALE = 0x02
    OPT_SACK_PERM = 0x04
    OPT_TS = 0x08
    OPT_SACK = 0x10

    # parse_packet() flags
    PARSE_NO_TCP_CSUM = 0x01     # transport checksum already verified (offload)
    PARSE_NO_IP_CSUM = 0x02

    MAX_SACK_BLOCKS = 4

    # The ECN field of the IPv4 TOS byte (RFC 3168 section 5)
    IPTOS_ECN_MASK = 0x03
    IPTOS_ECN_ECT0 = 0x02
    IPTOS_ECN_CE = 0x03

# Why a packet was dropped: the index into the host's drop counters. Keep in step with
# DROP_REASON_NAMES in _wire.pyx.
cdef enum DropCode:
    DROP_NONE = 0
    DROP_NOT_BUFFER
    DROP_TRUNCATED_IP
    DROP_BAD_IP_VERSION
    DROP_BAD_IHL
    DROP_BAD_TOTAL_LENGTH
    DROP_BAD_IP_CHECKSUM
    DROP_FRAGMENT
    DROP_BAD_SOURCE
    DROP_UNSUPPORTED_PROTOCOL
    DROP_TRUNCATED_TCP
    DROP_BAD_DATA_OFFSET
    DROP_BAD_TCP_CHECKSUM
    DROP_BAD_OPTION
    DROP_BAD_PORT
    DROP_TRUNCATED_ICMP
    DROP_BAD_ICMP_CHECKSUM
    DROP_BAD_ICMP_QUOTE
    # --- IPv6 (issue 14) ---
    DROP_BAD_IPV6_EXT_HEADER        # an extension header truncated, misplaced or malformed
    DROP_IPV6_EXT_CHAIN             # more than IPV6_MAX_EXT_HEADERS extension headers
    DROP_IPV6_ROUTING_HEADER        # a routing header with segments left (we do not route)
    DROP_IPV6_BAD_OPTION            # an unrecognised option whose type says discard
    # --- UDP (issue 15) ---
    DROP_TRUNCATED_UDP              # fewer than 8 bytes of UDP header
    DROP_BAD_UDP_LENGTH             # UDP length < 8 or past the IP payload (RFC 768)
    DROP_BAD_UDP_CHECKSUM
    DROP_UDP6_ZERO_CHECKSUM         # IPv6 UDP checksum 0: invalid (RFC 8200 8.1)
    DROP_REASON_COUNT

# One parsed packet: header fields in host order and offsets into the original buffer.
# The payload is never copied.
#
# Both families share it. IPv4 addresses are the numbers src/dst. An IPv6 packet (ipver 6)
# has its 128-bit addresses where they always sit, at bytes 8..40 of the packet (the
# buffer the descriptor points into, or Packet.raw): they are never copied; src/dst then
# hold their low 32 bits, a hint only (a demux compares the 16 bytes).
ctypedef struct SegDesc:
    uint8_t reason          # DropCode; the other fields are valid only when 0
    uint8_t proto           # IPv6: the upper-layer next header, after extension headers
    uint8_t ttl             # IPv6: hop limit
    uint8_t tos             # IPv6: traffic class (the ECN field is its low 2 bits too)
    # IPv4 total length; IPv6 40 + payload length (the buffer may be longer: padding)
    uint32_t ip_len
    # IPv4 header length; IPv6 40 + extension headers: where the upper-layer header starts
    uint16_t ip_hl
    uint16_t frag           # IPv4 flags and fragment offset, raw
    uint32_t src            # addresses as numbers (host order); IPv6: low 32 bits
    uint32_t dst
    # TCP (UDP: sport, dport, payload_off, payload_len)
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint32_t ack            # for ICMP: the 32-bit rest of header (echo id/seq, MTU)
    uint16_t window         # unscaled
    uint16_t urg
    uint8_t flags           # TH_*
    uint8_t reserved        # the 4 reserved header bits (RFC 9293 section 3.1)
    uint16_t doff           # TCP header length in bytes
    uint32_t payload_off    # from the start of the buffer
    uint32_t payload_len
    uint8_t opt_present     # OPT_* bits
    uint8_t wscale          # as sent (clamping to 14 is the TCP layer's job, RFC 7323 2.3)
    uint16_t mss
    uint32_t tsval
    uint32_t tsecr
    uint8_t nsack
    # (ipver and ip_id fill the padding before sack: the struct stays 100 bytes, and the
    # other fields where they were before IPv6)
    uint8_t ipver           # 4 or 6
    uint16_t ip_id
    uint32_t sack[8]        # left, right edges
    # ICMP
    uint8_t icmp_type
    uint8_t icmp_code

# What build_tcp_into() writes. Options with their OPT_* bit set in opt_present are emitted.
# ipver 0 or 4 is IPv4 (src, dst); 6 is IPv6 (src6, dst6, flow: the 20-bit flow label;
# tos is the traffic class, ttl the hop limit). An IPv6 segment has no extension header:
# its TCP header is at byte 40.
ctypedef struct TcpOut:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint32_t ack
    uint8_t flags
    uint16_t window
    uint16_t urg
    uint8_t ttl
    uint8_t tos
    uint16_t ip_id
    bint df
    uint8_t opt_present
    uint8_t wscale
    uint16_t mss
    uint32_t tsval
    uint32_t tsecr
    uint8_t nsack
    uint32_t sack[8]
    bint no_tcp_csum        # leave the TCP checksum 0 (a TSO link fills it in)
    uint8_t ipver
    uint32_t flow
    unsigned char src6[16]
    unsigned char dst6[16]

# --- C-level functions (exported through the module's C API) --------------------------------
cdef uint16_t checksum_finish(uint64_t partial) noexcept nogil
cdef int parse_packet(const unsigned char* buf, Py_ssize_t n, SegDesc* d, int flags) noexcept nogil
cdef Py_ssize_t tcp_options_len(const TcpOut* t) noexcept nogil
cdef Py_ssize_t build_tcp_into(unsigned char* out, Py_ssize_t cap, const TcpOut* t,
                               const unsigned char* payload, Py_ssize_t plen) noexcept nogil
# The IP header length of a TcpOut's packet: 20 (IPv4) or 40 (IPv6).
cdef inline Py_ssize_t ip_header_len(const TcpOut* t) noexcept nogil:
    return 40 if t.ipver == 6 else 20
# The IPv4 (or IPv6) + TCP headers of a packet whose `plen` payload bytes follow elsewhere; the TCP
# checksum is left 0 (for t.no_tcp_csum: a TSO link fills it in). Returns the header length.
cdef Py_ssize_t build_tcp_headers(unsigned char* out, Py_ssize_t cap, const TcpOut* t,
                                  Py_ssize_t plen) noexcept nogil


cdef class SplitPacket:
    # A packet in up to three pieces - its headers, then payload that lives in `owner`'s
    # memory - so a link can write it with one writev and no copy. Anything else sees a
    # plain read-only buffer (made, once, on first use).
    cdef readonly bytes head
    cdef object owner
    cdef const unsigned char* p1
    cdef Py_ssize_t n1
    cdef const unsigned char* p2
    cdef Py_ssize_t n2
    cdef bytes flat
    cdef bytes _flatten(self)


cdef SplitPacket make_split_packet(bytes head, object owner, const unsigned char* p1,
                                   Py_ssize_t n1, const unsigned char* p2, Py_ssize_t n2)

cdef class SegmentBatch:
    cdef SegDesc* descs
    cdef const unsigned char** bases    # start of each packet's bytes
    cdef Py_buffer* views               # held buffers for non-bytes packets
    cdef unsigned char* held            # 1 where views[i] must be released
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity
    cdef list packets                   # keeps the buffers alive
    cdef int _reserve(self, Py_ssize_t n) except -1
    cdef void _release(self) noexcept
    cpdef Py_ssize_t parse(self, list packets, int flags=*) except -1
    cdef _check(self, Py_ssize_t i)


cdef class Packet:
    # A read-only view of one valid IPv4 or IPv6 packet; the state machine reads `d`
    # directly.
    cdef SegDesc d
    # the packet, trimmed to its IPv4 total length (IPv6: 40 + payload length)
    cdef readonly bytes raw
    cdef _need_tcp(self)
    cdef _need_icmp(self)
