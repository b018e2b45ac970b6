# cython: language_level=3
"""IPv4 and IPv6 fragment reassembly (RFC 791 section 3.2, in the spirit of RFC 815; RFC
8200 section 4.5).

The wire layer drops a fragment with ``DropReason.FRAGMENT``; the host can hand it to a
:class:`FragmentReassembler`, which returns the whole datagram once every fragment is in.

Fragments belong together when they share (source, destination, protocol, identification)
(RFC 791 section 2.3). Each datagram keeps its received payload ranges sorted and disjoint
(the holes of RFC 815 are the gaps between them) with the bytes of each range; completion is
"the last fragment (MF = 0) fixed the length, the first (offset 0) gave the header, and the
ranges add up to the length". The result is the first fragment's header with MF and the
offset cleared (DF and the reserved bit as they were), the total length set and the header
checksum recomputed, followed by the payload.

Hostile input, after RFC 5722 (written for IPv6, applied here to IPv4 too):
  - overlapping fragments discard the whole datagram, and the fragments of it that are
    still to come (a tombstone stays until the datagram's timeout); exact duplicates (same
    range, same bytes), which a network may produce, are ignored instead;
  - a datagram that would exceed 65535 bytes is discarded the same way (ping of death);
  - memory is bounded: ``max_bytes`` caps the bytes held (each fragment is charged its
    whole IPv4 length, so tiny fragments cost their headers too), ``max_datagrams`` the
    datagrams in progress; when either would be exceeded the oldest datagram is evicted;
  - a datagram not complete ``timeout`` seconds after its first fragment arrived is dropped
    (RFC 791's reassembly timer; RFC 1122 3.3.2 suggests 60-120 s);
  - ``add`` never raises on the packet's contents: malformed fragments are counted in
    ``bad``.

IPv6 (RFC 8200 4.5): fragments belong together when they share (source, destination,
identification); the per-fragment headers (the IPv6 header and the extension headers before
the Fragment header) are the offset-0 fragment's, and the reassembled packet is them
followed by the payload, the Fragment header gone (the Next Header field before it takes
its value) and the payload length set. The same limits, overlap rule (RFC 5722, with
Errata 3089 for exact duplicates, as Linux) and timer hold; a fragment whose reassembled
payload would exceed 65535 bytes is discarded with its datagram. Atomic fragments (offset 0,
M clear, RFC 6946) never come here: the wire layer takes them as whole packets.

Time comes only from the ``now`` arguments. Datagrams expire in the order they were
created, which is the order of ``now`` as long as the caller's clock does not go backwards.
"""
from cpython.buffer cimport PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free as c_free, realloc
from libc.string cimport memcpy, memmove

from fasttcp.wire._wire cimport (IPV6_DSTOPTS, IPV6_FRAGMENT, IPV6_HOPOPTS,
                                 IPV6_MAX_EXT_HEADERS, IPV6_ROUTING, checksum_finish,
                                 ft_csum_fold, ft_csum_partial, get_buffer, rd16, rd32, wr16)

COMPILED = True

#: RFC 791 section 3.1: the total length field is 16 bits.
MAX_DATAGRAM = 65535

cdef enum:
    IP_MF = 0x2000
    IP_OFFMASK = 0x1FFF
    IP_KEEP_FLAGS = 0xC000          # reserved bit and DF survive reassembly

# What a fragment header says (parsed and validated in C).
# IPv6: hl counts up to the data (the Fragment header included); unfrag is the length
# of the per-fragment headers (0 for IPv4) and nh_at where the Next Header byte naming
# the Fragment header sits.
ctypedef struct FragHdr:
    Py_ssize_t hl                   # header length in bytes
    Py_ssize_t unfrag
    Py_ssize_t nh_at
    int ver
    Py_ssize_t total                # IPv4 total length
    uint32_t start                  # payload offset in the datagram, bytes
    uint32_t end                    # start + payload length
    bint more                       # MF


cdef enum HdrResult:
    HDR_FRAGMENT = 0
    HDR_WHOLE = 1                   # a valid packet that is not a fragment
    HDR_BAD = 2


cdef HdrResult _parse_header(const unsigned char* buf, Py_ssize_t n,
                             FragHdr* h) noexcept nogil:
    """RFC 791 section 3.1 checks, as the wire layer's parse_packet does them, plus the
    fragment rules of section 3.2."""
    cdef uint16_t frag
    cdef Py_ssize_t plen
    if n >= 1 and (buf[0] >> 4) == 6:
        return _parse_header6(buf, n, h)
    h.ver = 4
    h.unfrag = 0
    if n < 20 or (buf[0] >> 4) != 4:
        return HDR_BAD
    h.hl = (buf[0] & 0x0F) * 4
    if h.hl < 20 or h.hl > n:
        return HDR_BAD
    if ft_csum_fold(ft_csum_partial(buf, h.hl, 0)) != 0xFFFF:
        return HDR_BAD
    h.total = rd16(buf + 2)
    if h.total < h.hl or h.total > n:          # longer buffers: link padding, ignored
        return HDR_BAD
    frag = rd16(buf + 6)
    h.more = (frag & IP_MF) != 0
    h.start = (frag & IP_OFFMASK) * 8
    plen = h.total - h.hl
    h.end = h.start + <uint32_t>plen
    if not h.more and h.start == 0:
        return HDR_WHOLE
    # "the data of all but the last fragment ... must be a multiple of 8 octets" (3.2); a
    # non-last fragment without data says nothing and is refused too.
    if h.more and (plen == 0 or (plen & 7) != 0):
        return HDR_BAD
    return HDR_FRAGMENT


cdef HdrResult _parse_header6(const unsigned char* buf, Py_ssize_t n,
                              FragHdr* h) noexcept nogil:
    """An IPv6 fragment (RFC 8200 4.5): the extension headers before the Fragment header
    (bounded, as the wire layer walks them), then the Fragment header's offset and M."""
    cdef Py_ssize_t off = 40, nh_at = 6, plen, hlen
    cdef uint8_t nh
    cdef uint16_t fo
    cdef int count = 0
    h.ver = 6
    if n < 40:
        return HDR_BAD
    h.total = 40 + <Py_ssize_t>rd16(buf + 4)
    if h.total > n:
        return HDR_BAD
    nh = buf[6]
    while nh != IPV6_FRAGMENT:
        count += 1
        if count > IPV6_MAX_EXT_HEADERS or off + 8 > h.total:
            return HDR_BAD
        if nh != IPV6_HOPOPTS and nh != IPV6_ROUTING and nh != IPV6_DSTOPTS:
            return HDR_WHOLE                # no Fragment header: not a fragment
        if nh == IPV6_HOPOPTS and off != 40:
            return HDR_BAD
        hlen = (<Py_ssize_t>buf[off + 1] + 1) * 8
        nh_at = off
        nh = buf[off]
        off += hlen
    if off + 8 > h.total:
        return HDR_BAD
    fo = rd16(buf + off + 2)
    h.unfrag = off
    h.nh_at = nh_at
    h.hl = off + 8
    h.more = (fo & 1) != 0
    h.start = (fo & 0xFFF8)
    plen = h.total - h.hl
    h.end = h.start + <uint32_t>plen
    if not h.more and h.start == 0:
        return HDR_WHOLE                    # atomic (RFC 6946): the parser's to take
    # RFC 8200 4.5: a fragment with M set whose length is not a multiple of 8 is
    # discarded (Linux also refuses an empty one).
    if h.more and (plen == 0 or (plen & 7) != 0):
        return HDR_BAD
    return HDR_FRAGMENT


cdef inline object _key6(const unsigned char* buf, Py_ssize_t frag_at):
    # RFC 8200 4.5: (source, destination, identification); bytes, never equal to an
    # IPv4 key (an int).
    cdef bytes k = PyBytes_FromStringAndSize(NULL, 36)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(k)
    memcpy(p, buf + 8, 32)
    memcpy(p + 32, buf + frag_at + 4, 4)
    return k


cdef inline object _key(const unsigned char* buf):
    # (source, destination, protocol, identification) as one 88-bit integer.
    cdef uint64_t low = ((<uint64_t>rd32(buf + 16) << 24) | (<uint64_t>buf[9] << 16)
                         | rd16(buf + 4))
    return (<object>rd32(buf + 12) << 56) | <object>low


cdef class _Datagram:
    def __cinit__(self, double now):
        self.first_seen = now
        self.header = None
        self.total = -1
        self.have = 0
        self.held = 0
        self.dead = False
        self.starts = NULL
        self.ends = NULL
        self.n = 0
        self.cap = 0
        self.pieces = []

    def __dealloc__(self):
        c_free(self.starts)
        c_free(self.ends)

    cdef Py_ssize_t find(self, uint32_t start) noexcept nogil:
        """Index of the first range starting at or after `start` (binary search)."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.starts[mid] < start:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef int insert(self, Py_ssize_t i, uint32_t start, uint32_t end, bytes piece) except -1:
        cdef Py_ssize_t cap
        cdef uint32_t* p
        if self.n == self.cap:
            cap = self.cap * 2 if self.cap else 8
            p = <uint32_t*>realloc(self.starts, cap * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.starts = p
            p = <uint32_t*>realloc(self.ends, cap * sizeof(uint32_t))
            if p == NULL:
                raise MemoryError()
            self.ends = p
            self.cap = cap
        if i < self.n:
            memmove(self.starts + i + 1, self.starts + i, (self.n - i) * sizeof(uint32_t))
            memmove(self.ends + i + 1, self.ends + i, (self.n - i) * sizeof(uint32_t))
        self.starts[i] = start
        self.ends[i] = end
        self.n += 1
        self.pieces.insert(i, piece)
        self.have += end - start
        return 0

    cdef void release(self) noexcept:
        """Forget the data (the datagram is done with, or a tombstone from now on)."""
        self.pieces = []
        self.n = 0
        self.have = 0
        self.header = None


cdef class FragmentReassembler:
    """Reassembles IPv4 datagrams from their fragments. See the module docstring.

    ``add(packet, now)`` takes one IPv4 packet that is a fragment and returns the whole
    datagram as bytes when this fragment completed it, else None (a packet that is not a
    fragment at all is returned as it is). ``expire(now)`` drops datagrams older than
    ``timeout``; ``add`` calls it first.
    """

    def __init__(self, Py_ssize_t max_bytes=1 << 20, Py_ssize_t max_datagrams=64,
                 double timeout=30.0):
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if max_datagrams < 1:
            raise ValueError("max_datagrams must be positive")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.table = {}
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.held_bytes = 0

    @property
    def datagrams(self) -> int:
        """Datagrams in progress (tombstones of discarded ones included)."""
        return len(self.table)

    def stats(self) -> dict:
        return {
            "fragments_in": self.fragments_in, "reassembled": self.reassembled,
            "overlaps": self.overlaps, "timeouts": self.timeouts, "evicted": self.evicted,
            "too_big": self.too_big, "bad": self.bad, "duplicates": self.duplicates,
            "discarded": self.discarded, "unfragmented": self.unfragmented,
            "held_bytes": self.held_bytes, "datagrams": len(self.table),
        }

    def __repr__(self) -> str:
        return (f"<FragmentReassembler datagrams={len(self.table)} held={self.held_bytes}"
                f"/{self.max_bytes} reassembled={self.reassembled}>")

    # --- internals ------------------------------------------------------------------------
    cdef void _drop(self, object key, _Datagram d) noexcept:
        self.held_bytes -= d.held
        d.held = 0
        d.release()
        try:
            del self.table[key]
        except KeyError:
            pass

    cdef void _bury(self, _Datagram d) noexcept:
        # RFC 5722: discard the datagram and the fragments of it still to come.
        self.held_bytes -= d.held
        d.held = 0
        d.release()
        d.dead = True

    cdef bint _evict_oldest(self) except -1:
        """Drop the oldest datagram; False when there is none."""
        cdef _Datagram d
        if not self.table:
            return False
        key = next(iter(self.table))
        d = self.table[key]
        if not d.dead:
            self.evicted += 1
        self._drop(key, d)
        return True

    def expire(self, double now) -> int:
        """Drop datagrams whose first fragment is ``timeout`` or more seconds old; returns
        how many incomplete datagrams timed out (tombstones go silently)."""
        cdef _Datagram d
        cdef int n = 0
        cdef double limit = now - self.timeout
        while self.table:
            key = next(iter(self.table))
            d = self.table[key]
            if not d.first_seen <= limit:
                break                       # creation order: the rest are younger
            if not d.dead:
                self.timeouts += 1
                n += 1
            self._drop(key, d)
        return n

    def add(self, packet, double now):
        """Add one fragment; returns the reassembled IPv4 packet (bytes) or None."""
        cdef Py_buffer view
        cdef const unsigned char* buf
        cdef Py_ssize_t n
        self.fragments_in += 1
        self.expire(now)
        cdef int held
        try:
            held = get_buffer(packet, &view, &buf, &n)
        except Exception:                   # not a bytes-like object
            self.bad += 1
            return None
        try:
            return self._add(buf, n, now)
        finally:
            if held:
                PyBuffer_Release(&view)

    cdef object _add(self, const unsigned char* buf, Py_ssize_t n, double now):
        cdef FragHdr h
        cdef HdrResult r = _parse_header(buf, n, &h)
        cdef _Datagram d
        cdef Py_ssize_t i = 0, cost, hl0
        cdef bint dup
        if r == HDR_BAD:
            self.bad += 1
            return None
        if r == HDR_WHOLE:
            self.unfragmented += 1
            return PyBytes_FromStringAndSize(<const char*>buf, h.total)

        key = _key6(buf, h.unfrag) if h.ver == 6 else _key(buf)
        d = self.table.get(key)
        if d is None:
            while len(self.table) >= self.max_datagrams:
                self._evict_oldest()
            d = _Datagram(now)
            self.table[key] = d
        if d.dead:
            self.discarded += 1
            return None

        # RFC 791: at most 65535 bytes in all; the header is at least 20 bytes, exactly
        # that of the first fragment once it is here. RFC 8200 4.5: the reassembled
        # payload length (the per-fragment extension headers and the data) fits 16 bits.
        if h.ver == 6:
            hl0 = (len(d.header) if d.header is not None else h.unfrag) - 40
        else:
            hl0 = len(d.header) if d.header is not None else (h.hl if h.start == 0 else 20)
        if hl0 + <Py_ssize_t>h.end > MAX_DATAGRAM:
            self.too_big += 1
            self._bury(d)
            return None

        # The last fragment fixes the length; every fragment must agree with it.
        if not h.more:
            if d.total >= 0 and d.total != h.end:
                self.overlaps += 1
                self._bury(d)
                return None
            if d.n and d.ends[d.n - 1] > h.end:
                self.overlaps += 1          # data already held beyond the end
                self._bury(d)
                return None
        elif d.total >= 0 and h.end > <uint32_t>d.total:
            self.overlaps += 1
            self._bury(d)
            return None

        # Overlap and duplicate detection against the sorted disjoint ranges.
        dup = False
        if h.end > h.start:
            i = d.find(h.start)
            if i < d.n and d.starts[i] == h.start and d.ends[i] == h.end:
                dup = (<bytes>d.pieces[i]) == PyBytes_FromStringAndSize(
                    <const char*>buf + h.hl, h.end - h.start)
                if not dup:
                    self.overlaps += 1
                    self._bury(d)
                    return None
            elif (i > 0 and d.ends[i - 1] > h.start) or (i < d.n and d.starts[i] < h.end):
                self.overlaps += 1
                self._bury(d)
                return None
        if dup:
            self.duplicates += 1
            return None
        if not h.more:
            d.total = h.end
        if h.start == 0 and d.header is None:
            if h.ver == 6:
                # The per-fragment headers; the Next Header byte that named the Fragment
                # header names what followed it (RFC 8200 4.5 reassembly rules).
                hdr = bytearray(PyBytes_FromStringAndSize(<const char*>buf, h.unfrag))
                hdr[h.nh_at] = buf[h.unfrag]
                d.header = bytes(hdr)
            else:
                d.header = PyBytes_FromStringAndSize(<const char*>buf, h.hl)

        if h.end > h.start:
            # Memory: charge the whole fragment; make room by evicting the oldest.
            cost = h.total
            while self.held_bytes + cost > self.max_bytes:
                if key not in self.table:
                    return None             # this datagram itself was evicted
                self._evict_oldest()
            if key not in self.table:
                return None
            d.insert(i, h.start, h.end,
                     PyBytes_FromStringAndSize(<const char*>buf + h.hl, h.end - h.start))
            d.held += cost
            self.held_bytes += cost

        if d.total < 0 or d.header is None or d.have != d.total:
            return None
        out = self._assemble(d)
        self._drop(key, d)
        self.reassembled += 1
        return out

    cdef bytes _assemble(self, _Datagram d):
        cdef Py_ssize_t hl = PyBytes_GET_SIZE(d.header)
        cdef Py_ssize_t i
        cdef uint16_t c
        cdef bytes out = PyBytes_FromStringAndSize(NULL, hl + d.total)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef bytes piece
        memcpy(p, PyBytes_AS_STRING(d.header), hl)
        if (p[0] >> 4) == 6:
            wr16(p + 4, <uint16_t>(hl - 40 + d.total))      # no checksum in IPv6
            for i in range(d.n):
                piece = d.pieces[i]
                memcpy(p + hl + d.starts[i], PyBytes_AS_STRING(piece),
                       d.ends[i] - d.starts[i])
            return out
        wr16(p + 2, <uint16_t>(hl + d.total))
        wr16(p + 6, rd16(p + 6) & IP_KEEP_FLAGS)      # MF and fragment offset cleared
        p[10] = 0
        p[11] = 0
        c = checksum_finish(ft_csum_partial(p, hl, 0))
        memcpy(p + 10, &c, 2)
        for i in range(d.n):
            piece = d.pieces[i]
            memcpy(p + hl + d.starts[i], PyBytes_AS_STRING(piece), d.ends[i] - d.starts[i])
        return out
