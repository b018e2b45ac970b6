# C-level interface of the receive-side assembler (out-of-order store + receive buffer).
cimport cython
from libc.stdint cimport int64_t, uint64_t


cdef enum:
    MAX_SPANS = 32


# The host-wide account of out-of-order bytes (settings.ooo_budget): one per host, shared
# by its reassemblers, which keep `held` equal to the sum of their held_ooo.
@cython.final
cdef class OooBudget:
    cdef readonly uint64_t held          # bytes held out of order, all reassemblers
    cdef public uint64_t limit           # the most `held` may reach
    cdef readonly uint64_t pruned_bytes  # dropped by prune_c to stay within the limit


@cython.final
cdef class Reassembler:
    # One ring covers the receive window [read_pos, read_pos + max_bytes): every byte is
    # written once, at its final place, whether it arrives in order or not.
    cdef unsigned char* buf
    cdef uint64_t mask
    # Out-of-order runs as [start0, end0, start1, end1, ...]: ascending, disjoint and not
    # touching (a gap between any two), every start > next. At most max_holes of them.
    cdef uint64_t* runs
    cdef readonly Py_ssize_t nruns
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t max_holes
    cdef readonly uint64_t read_pos      # bytes the user consumed
    cdef readonly uint64_t next          # end of the contiguous data (RCV.NXT as an offset)
    cdef readonly uint64_t held_ooo      # bytes held in the out-of-order runs
    cdef readonly OooBudget budget       # the host's account of held_ooo, or None
    # statistics
    cdef readonly uint64_t dup_bytes         # already received: before `next` or in a run
    cdef readonly uint64_t trimmed_bytes     # beyond the window edge read_pos + max_bytes
    cdef readonly uint64_t dropped_segments  # refused: would exceed max_holes runs
    cdef readonly uint64_t dropped_bytes     # in-window bytes of those segments
    # Deferred copy (add_lazy_c): the first readable bytes may still be in the caller's
    # packet buffers, as spans [span_head, span_head + nspans) covering
    # [read_pos, read_pos + span_bytes); settle_c() copies them into the ring.
    cdef const unsigned char* span_ptr[MAX_SPANS]
    cdef Py_ssize_t span_len[MAX_SPANS]
    cdef Py_ssize_t span_head
    cdef readonly Py_ssize_t nspans
    cdef readonly uint64_t span_bytes

    # Store a segment; returns the bytes that became contiguous by this call.
    cdef Py_ssize_t add_c(self, uint64_t offset, const unsigned char* data,
                          Py_ssize_t n) noexcept nogil
    # Consume up to n contiguous bytes into dst; returns the count.
    cdef Py_ssize_t read_into(self, unsigned char* dst, Py_ssize_t n) noexcept nogil
    # Copy up to n contiguous bytes without consuming them.
    cdef Py_ssize_t peek_into(self, unsigned char* dst, Py_ssize_t n) noexcept nogil
    # Pointer to the first contiguous bytes and how many follow before the ring wraps (or
    # before the end of the first deferred span: memory valid only until settle_c()).
    cdef Py_ssize_t readable_chunk(self, const unsigned char** p) noexcept nogil
    # Consume n bytes (clamped to readable) after reading them through readable_chunk.
    cdef void consume(self, Py_ssize_t n) noexcept nogil
    # Bytes of [offset, end), clipped to the window, that no run holds yet: what storing
    # them out of order would add to held_ooo.
    cdef uint64_t missing_c(self, uint64_t offset, uint64_t end) noexcept nogil
    # Drop out-of-order bytes at offsets >= floor, highest first, until `goal` bytes are
    # freed or none are left above floor; returns the bytes freed (Linux
    # tcp_prune_ofo_queue). SACK blocks, made from the runs, no longer name them.
    cdef uint64_t prune_c(self, uint64_t floor, uint64_t goal) noexcept nogil
    cdef void _account(self, int64_t delta) noexcept nogil
    # Index of the out-of-order run holding `offset`, or -1.
    cdef Py_ssize_t run_index(self, uint64_t offset) noexcept nogil
    # As add_c, but in-order data with nothing else pending is only remembered (no copy)
    # until settle_c(); the caller keeps `data` valid until then.
    cdef Py_ssize_t add_lazy_c(self, uint64_t offset, const unsigned char* data,
                               Py_ssize_t n) noexcept nogil
    # Copy the deferred spans into the ring.
    cdef void settle_c(self) noexcept nogil

    cdef inline Py_ssize_t readable_c(self) noexcept nogil:
        return <Py_ssize_t>(self.next - self.read_pos)

    cdef inline Py_ssize_t window_c(self) noexcept nogil:
        """Space the engine may advertise: the window's right edge stays read_pos +
        max_bytes, so it never moves left (RFC 9293 section 3.8.6)."""
        return self.max_bytes - <Py_ssize_t>(self.next - self.read_pos)
