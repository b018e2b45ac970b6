# C-level interface of the send ring, plus the ring-addressing helpers the reassembler shares.
#
# Both stores address their buffer by absolute uint64 stream offset: byte `off` lives at
# `buf[off & mask]` with a power-of-two allocation, so no head/tail index ever needs
# renormalising and a wrap is one extra memcpy.
cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

# Largest buffer either store accepts (1 GiB): far above any sane TCP window, and small
# enough that offsets plus sizes cannot overflow anywhere.
cdef enum:
    RING_MAX_CAPACITY = 1 << 30


cdef inline size_t ring_alloc_size(size_t n) noexcept nogil:
    """The power of two >= n (at least 64, so tiny rings still get whole cache lines)."""
    cdef size_t a = 64
    while a < n:
        a <<= 1
    return a


cdef inline void ring_put(unsigned char* buf, uint64_t mask, uint64_t off,
                          const unsigned char* src, size_t n) noexcept nogil:
    """Copy n bytes (n <= mask + 1) to stream offset `off`, wrapping at the end."""
    cdef size_t pos = <size_t>(off & mask)
    cdef size_t first = <size_t>(mask + 1) - pos
    if n <= first:
        memcpy(buf + pos, src, n)
    else:
        memcpy(buf + pos, src, first)
        memcpy(buf, src + first, n - first)


cdef inline void ring_get(const unsigned char* buf, uint64_t mask, uint64_t off,
                          unsigned char* dst, size_t n) noexcept nogil:
    """Copy n bytes (n <= mask + 1) from stream offset `off`, wrapping at the end."""
    cdef size_t pos = <size_t>(off & mask)
    cdef size_t first = <size_t>(mask + 1) - pos
    if n <= first:
        memcpy(dst, buf + pos, n)
    else:
        memcpy(dst, buf + pos, first)
        memcpy(dst + first, buf, n - first)


cdef inline void ring_move(const unsigned char* old, uint64_t old_mask, unsigned char* new,
                           uint64_t new_mask, uint64_t off, size_t n) noexcept nogil:
    """Copy stream bytes [off, off+n) from one ring to another of a different size."""
    cdef size_t pos, chunk
    while n:
        pos = <size_t>(off & old_mask)
        chunk = <size_t>(old_mask + 1) - pos
        if chunk > n:
            chunk = n
        ring_put(new, new_mask, off, old + pos, chunk)
        off += chunk
        n -= chunk


# A run of stream bytes that lives in an immutable bytes object of the application's
# rather than in the ring (zero-copy send): [start, end) is at p, kept alive by `owner`.
cdef struct Extent:
    uint64_t start
    uint64_t end
    const unsigned char* p
    PyObject* owner


@cython.final
cdef class SendRing:
    cdef unsigned char* buf
    cdef uint64_t mask              # allocation - 1
    cdef readonly Py_ssize_t capacity
    cdef readonly uint64_t head     # offset of the first held byte (= bytes released)
    cdef readonly uint64_t tail     # offset after the last held byte (= bytes written)
    # Bytes-like writes of at least this many bytes whose contents cannot change are
    # referenced, not copied (0, the default: never).
    cdef Py_ssize_t _ref_min
    # Referenced runs in stream order, all inside [head, tail): ext[ext_first ...
    # ext_first + ext_count). The ring slots of their offsets go unused.
    cdef Extent* ext
    cdef Py_ssize_t ext_first
    cdef Py_ssize_t ext_count
    cdef Py_ssize_t ext_cap

    # Append up to free space; returns bytes taken.
    cdef Py_ssize_t write_c(self, const unsigned char* src, Py_ssize_t n) noexcept nogil
    # Append the first n bytes at p (n <= free space), kept alive by a reference to owner.
    cdef int write_ref_c(self, object owner, const unsigned char* p, Py_ssize_t n) except -1
    # The readers below are nogil, but the run table moves when a write adds a run: hold
    # the GIL (or otherwise keep writers out) while calling them.
    # Copy held bytes [offset, offset+n) clipped to tail into dst; returns bytes copied,
    # -1 if offset < head (already released).
    cdef Py_ssize_t copy_out(self, uint64_t offset, unsigned char* dst, Py_ssize_t n) noexcept nogil
    # Pointer to held bytes at offset and how many follow contiguously (up to the wrap, the
    # tail or where a referenced run starts or ends; 0 if none): for checksumming or
    # writev without a copy. owner: the object that keeps that memory alive (borrowed).
    cdef Py_ssize_t chunk_at(self, uint64_t offset, const unsigned char** p) noexcept nogil
    cdef Py_ssize_t chunk_owned(self, uint64_t offset, const unsigned char** p,
                                PyObject** owner) noexcept nogil
    # Drop bytes before upto (clamped to [head, tail]); referenced runs wholly before it
    # are let go.
    cdef void release_c(self, uint64_t upto) noexcept
    cdef void _drop_extents(self, uint64_t upto) noexcept

    cdef inline Py_ssize_t held(self) noexcept nogil:
        return <Py_ssize_t>(self.tail - self.head)

    cdef inline Py_ssize_t free_space(self) noexcept nogil:
        return self.capacity - <Py_ssize_t>(self.tail - self.head)
