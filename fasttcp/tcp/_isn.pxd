# C-level interface of the ISN generator (RFC 6528) and the keyed MAC that SYN cookies
# (RFC 4987 section 3.6) will use. Other Cython modules `cimport` this to get an ISN or a MAC
# without a Python call.
from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef class IsnGenerator:
    # The secret key as SipHash loads it (two little-endian 64-bit words): the ISN's F.
    cdef uint64_t k0
    cdef uint64_t k1
    # A second key derived from the secret for mac_c, so that no MAC output can equal an F.
    cdef uint64_t mk0
    cdef uint64_t mk1

    cdef uint32_t isn_c(self, uint32_t lip, uint16_t lport, uint32_t rip, uint16_t rport,
                        double now) noexcept nogil
    # RFC 6528 over IPv6 addresses (16 bytes each, as in the header)
    cdef uint32_t isn6_c(self, const unsigned char* lip, uint16_t lport,
                         const unsigned char* rip, uint16_t rport, double now) noexcept nogil
    cdef uint64_t mac_c(self, const unsigned char* p, size_t n) noexcept nogil
