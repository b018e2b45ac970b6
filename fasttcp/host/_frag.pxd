# C-level interface of the IPv4 fragment reassembler (RFC 791 section 3.2, RFC 815).
cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t


@cython.final
cdef class _Datagram:
    # One datagram being reassembled, keyed by (src, dst, protocol, identification).
    cdef double first_seen          # when its first fragment arrived (RFC 791 timer)
    cdef bytes header               # the offset-0 fragment's IPv4 header, once it arrived
    cdef Py_ssize_t total           # payload length, known once the MF=0 fragment arrived; -1
    cdef Py_ssize_t have            # payload bytes present (ranges are disjoint)
    cdef Py_ssize_t held            # bytes charged to the reassembler's budget
    cdef bint dead                  # discarded (overlap, too big): drop later fragments
    # Received payload ranges [starts[i], ends[i]) sorted and disjoint, with the payload
    # bytes of each in `pieces` at the same index.
    cdef uint32_t* starts
    cdef uint32_t* ends
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef list pieces

    cdef Py_ssize_t find(self, uint32_t start) noexcept nogil
    cdef int insert(self, Py_ssize_t i, uint32_t start, uint32_t end, bytes piece) except -1
    cdef void release(self) noexcept


@cython.final
cdef class FragmentReassembler:
    cdef dict table                 # key -> _Datagram, in order of creation (oldest first)
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t max_datagrams
    cdef readonly double timeout
    cdef readonly Py_ssize_t held_bytes
    # statistics
    cdef readonly uint64_t fragments_in   # calls to add()
    cdef readonly uint64_t reassembled    # datagrams completed
    cdef readonly uint64_t overlaps       # datagrams discarded for overlapping fragments
    cdef readonly uint64_t timeouts       # datagrams that expired incomplete
    cdef readonly uint64_t evicted        # datagrams dropped for the byte or count limit
    cdef readonly uint64_t too_big        # datagrams discarded: would exceed 65535 bytes
    cdef readonly uint64_t bad            # malformed fragments
    cdef readonly uint64_t duplicates     # exact duplicate fragments (ignored)
    cdef readonly uint64_t discarded      # fragments of a datagram already discarded
    cdef readonly uint64_t unfragmented   # whole datagrams passed through unchanged

    cdef void _drop(self, object key, _Datagram d) noexcept
    cdef void _bury(self, _Datagram d) noexcept
    cdef bytes _assemble(self, _Datagram d)
    cdef bint _evict_oldest(self) except -1
    cdef object _add(self, const unsigned char* buf, Py_ssize_t n, double now)
