# A set of IPv4 and IPv6 prefixes, tested in C (fasttcp/host/_prefix.pyx).
from libc.stdint cimport uint32_t, uint64_t


cdef class PrefixSet:
    cdef Py_ssize_t n4, n6
    cdef uint32_t* net4                 # network numbers (host bits zero) ...
    cdef uint32_t* mask4                # ... and their masks
    cdef uint64_t* net6                 # two words per IPv6 prefix (high, low) ...
    cdef uint64_t* mask6                # ... and the masks
    cdef readonly tuple prefixes        # canonical text, in the given order

    cdef void _free(self) noexcept
    cdef bint contains4(self, uint32_t addr) noexcept nogil
    cdef bint contains6(self, const unsigned char* addr) noexcept nogil
