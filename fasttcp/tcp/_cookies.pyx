# cython: language_level=3
"""SYN cookies (RFC 4987 section 3.6): a listener under a SYN flood answers with a SYN-ACK
whose ISN encodes what it needs to rebuild the connection, and keeps no state until the
handshake's ACK comes back with that ISN + 1.

The 32-bit cookie: 5 bits of a 64-second counter, 3 bits indexing the MSS table, and 24 bits of
a keyed MAC (SipHash-2-4 under a key derived from the host's secret) over the 4-tuple, the
client's ISN, the counter and the MSS index. A cookie is valid for the current and the previous
counter period (64-128 s). Window scale, SACK-permitted, ECN (RFC 3168) and timestamps cannot
fit in 32 bits; when the client offered timestamps they ride in the low 6 bits of our TSval (as
Linux does: cookie_init_timestamp, cookie_ecn_ok) and come back in the ACK's TSecr; without
timestamps the connection goes without them.
"""
from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.string cimport memcpy

from fasttcp.tcp._isn cimport IsnGenerator
from fasttcp.wire._wire cimport wr16, wr32

COMPILED = True
PERIOD = 64.0

# MSS values a cookie can carry: common path MTUs (minus 40), ascending.
cdef uint16_t MSS_TABLE[8]
MSS_TABLE[:] = [536, 1200, 1300, 1360, 1400, 1440, 1460, 8960]
MSS_VALUES = [MSS_TABLE[i] for i in range(8)]

# Low TSval bits: window scale (0..14, 15 = none), SACK-permitted and ECN (Linux's
# TS_OPT_WSCALE_MASK, TS_OPT_SACK, TS_OPT_ECN); OPT_MASK covers them all.
OPT_WSCALE_NONE = 15
OPT_SACK_BIT = 0x10
OPT_ECN_BIT = 0x20
OPT_MASK = 0x3F


cdef class SynCookies:
    """Make and check SYN cookies under an :class:`IsnGenerator`'s secret."""

    cdef IsnGenerator gen
    cdef readonly double period

    def __cinit__(self, IsnGenerator gen, double period=64.0):
        self.gen = gen
        self.period = period

    cdef inline uint32_t _mac(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                              uint32_t client_isn, uint32_t count, uint32_t idx) noexcept nogil:
        cdef unsigned char buf[21]
        wr32(buf, lip)
        wr16(buf + 4, lport)
        wr32(buf + 6, rip)
        wr16(buf + 10, rport)
        wr32(buf + 12, client_isn)
        wr32(buf + 16, count)
        buf[20] = <unsigned char>idx
        return <uint32_t>(self.gen.mac_c(buf, 21) & 0xFFFFFF)

    cdef uint32_t make_c(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                         uint32_t client_isn, uint16_t mss, double now) noexcept nogil:
        """The cookie (our ISN) for a SYN offering `mss`."""
        cdef uint32_t idx = 0, i
        cdef uint32_t count = <uint32_t>(<int64_t>(now / self.period))
        for i in range(8):
            if MSS_TABLE[i] <= mss:
                idx = i
        return (((count & 0x1F) << 27) | (idx << 24)
                | self._mac(lip, lport, rip, rport, client_isn, count, idx))

    cdef uint16_t check_c(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                          uint32_t client_isn, uint32_t cookie, double now) noexcept nogil:
        """The MSS the cookie carries when it is genuine and fresh, else 0."""
        cdef uint32_t now_count = <uint32_t>(<int64_t>(now / self.period))
        cdef uint32_t idx = (cookie >> 24) & 7
        cdef uint32_t age, count
        for age in range(2):
            count = now_count - age
            if ((count & 0x1F) == (cookie >> 27) and self._mac(
                    lip, lport, rip, rport, client_isn, count, idx) == (cookie & 0xFFFFFF)):
                return MSS_TABLE[idx]
        return 0

    cdef inline uint32_t _mac6(self, const unsigned char* lip, uint16_t lport,
                               const unsigned char* rip, uint16_t rport, uint32_t client_isn,
                               uint32_t count, uint32_t idx) noexcept nogil:
        # The same MAC over the IPv6 4-tuple (16-byte addresses).
        cdef unsigned char buf[45]
        memcpy(buf, lip, 16)
        wr16(buf + 16, lport)
        memcpy(buf + 18, rip, 16)
        wr16(buf + 34, rport)
        wr32(buf + 36, client_isn)
        wr32(buf + 40, count)
        buf[44] = <unsigned char>idx
        return <uint32_t>(self.gen.mac_c(buf, 45) & 0xFFFFFF)

    def make6(self, bytes lip, uint16_t lport, bytes rip, uint16_t rport,
              uint32_t client_isn, uint16_t mss, double now) -> tuple:
        """make() for IPv6 (addresses as their 16 bytes)."""
        cdef uint32_t idx = 0, i
        cdef uint32_t count = <uint32_t>(<int64_t>(now / self.period))
        if len(lip) != 16 or len(rip) != 16:
            raise ValueError("IPv6 addresses are 16 bytes")
        for i in range(8):
            if MSS_TABLE[i] <= mss:
                idx = i
        c = (((count & 0x1F) << 27) | (idx << 24)
             | self._mac6(<const unsigned char*>lip, lport, <const unsigned char*>rip,
                          rport, client_isn, count, idx))
        return c, MSS_TABLE[idx]

    def check6(self, bytes lip, uint16_t lport, bytes rip, uint16_t rport,
               uint32_t client_isn, uint32_t cookie, double now) -> int:
        """check() for IPv6."""
        cdef uint32_t now_count = <uint32_t>(<int64_t>(now / self.period))
        cdef uint32_t idx = (cookie >> 24) & 7
        cdef uint32_t age, count
        if len(lip) != 16 or len(rip) != 16:
            raise ValueError("IPv6 addresses are 16 bytes")
        for age in range(2):
            count = now_count - age
            if ((count & 0x1F) == (cookie >> 27) and self._mac6(
                    <const unsigned char*>lip, lport, <const unsigned char*>rip, rport,
                    client_isn, count, idx) == (cookie & 0xFFFFFF)):
                return MSS_TABLE[idx]
        return 0

    def make(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
             uint32_t client_isn, uint16_t mss, double now) -> tuple:
        """(cookie, the MSS it encodes: the largest table value <= mss)."""
        cdef uint32_t c = self.make_c(lip, lport, rip, rport, client_isn, mss, now)
        return c, MSS_TABLE[(c >> 24) & 7]

    def check(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
              uint32_t client_isn, uint32_t cookie, double now) -> int:
        return self.check_c(lip, lport, rip, rport, client_isn, cookie, now)

    def bench_check(self, Py_ssize_t n, double now) -> int:
        """Make and validate n cookies in C; returns how many validated."""
        cdef Py_ssize_t i
        cdef Py_ssize_t ok = 0
        cdef uint32_t c
        with nogil:
            for i in range(n):
                c = self.make_c(0x0A000002, 80, 0x0A000001 + <uint32_t>i, 40000, <uint32_t>i,
                                1460, now)
                if self.check_c(0x0A000002, 80, 0x0A000001 + <uint32_t>i, 40000, <uint32_t>i,
                                c, now):
                    ok += 1
        return ok


def encode_options(int wscale, bint sack, bint ecn=False) -> int:
    """Low TSval bits carrying the SYN's window scale (or none), SACK-permitted and
    whether ECN was agreed (an ECN-setup SYN, RFC 3168 6.1.1)."""
    return ((OPT_WSCALE_NONE if wscale < 0 else min(wscale, 14)) | (OPT_SACK_BIT if sack else 0)
            | (OPT_ECN_BIT if ecn else 0))


def cookie_ecn_ok(uint32_t tsecr) -> bool:
    """Whether the cookie's SYN-ACK agreed on ECN, from the TSecr of its ACK (Linux's
    cookie_ecn_ok)."""
    return bool(tsecr & OPT_ECN_BIT)


def decode_options(uint32_t tsecr) -> tuple:
    """(wscale or -1, sack) from the TSecr of a cookie's ACK."""
    cdef int ws = tsecr & 0x0F
    return (-1 if ws == OPT_WSCALE_NONE else ws), bool(tsecr & OPT_SACK_BIT)
