# cython: language_level=3
"""Send buffer: a byte ring holding a stream's unacknowledged and unsent bytes.

Bytes are named by absolute uint64 stream offsets (the first byte ever written is 0); the
engine maps sequence numbers to offsets (RFC 9293 section 3.4: SND.UNA is `head`, the end
of the queued data is `tail`). Acknowledged bytes are released from the front; segments are
copied from any held offset straight into packet buffers with `copy_out`, or, for a link
that writes scatter lists, referenced in place (`chunk_at`, wire.SplitPacket) until written.
"""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.stdlib cimport free as c_free, malloc

from fasttcp.wire._wire cimport get_buffer

COMPILED = True


cdef unsigned char* _alloc(size_t n) except NULL:
    cdef unsigned char* p = <unsigned char*>malloc(n)
    if p == NULL:
        raise MemoryError()
    return p


cdef Py_ssize_t _check_capacity(object capacity) except -1:
    if not isinstance(capacity, int):
        raise TypeError("capacity must be an int")
    if capacity < 1 or capacity > RING_MAX_CAPACITY:
        raise ValueError(f"capacity must be in 1..{RING_MAX_CAPACITY}, got {capacity}")
    return capacity


cdef class SendRing:
    """Byte ring of `capacity` bytes addressed by absolute stream offset.

    `head` = bytes released so far (offset of the first held byte), `tail` = bytes written so
    far; held bytes are [head, tail).
    """

    def __cinit__(self, capacity: int):
        cdef Py_ssize_t cap = _check_capacity(capacity)
        cdef size_t alloc = ring_alloc_size(<size_t>cap)
        self.buf = _alloc(alloc)
        self.mask = alloc - 1
        self.capacity = cap
        self.head = 0
        self.tail = 0

    def __dealloc__(self):
        c_free(self.buf)
        self.buf = NULL

    # --- C level ------------------------------------------------------------------------

    cdef Py_ssize_t write_c(self, const unsigned char* src, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t room = self.capacity - <Py_ssize_t>(self.tail - self.head)
        if n > room:
            n = room
        if n <= 0:
            return 0
        ring_put(self.buf, self.mask, self.tail, src, <size_t>n)
        self.tail += <uint64_t>n
        return n

    cdef Py_ssize_t copy_out(self, uint64_t offset, unsigned char* dst, Py_ssize_t n) noexcept nogil:
        if offset < self.head:
            return -1
        if offset >= self.tail or n <= 0:
            return 0
        if <uint64_t>n > self.tail - offset:
            n = <Py_ssize_t>(self.tail - offset)
        ring_get(self.buf, self.mask, offset, dst, <size_t>n)
        return n

    cdef Py_ssize_t chunk_at(self, uint64_t offset, const unsigned char** p) noexcept nogil:
        if offset < self.head or offset >= self.tail:
            return 0
        cdef size_t pos = <size_t>(offset & self.mask)
        cdef uint64_t n = self.mask + 1 - pos
        if n > self.tail - offset:
            n = self.tail - offset
        p[0] = self.buf + pos
        return <Py_ssize_t>n

    cdef void release_c(self, uint64_t upto) noexcept nogil:
        if upto > self.tail:
            upto = self.tail
        if upto > self.head:
            self.head = upto

    # --- Python API ---------------------------------------------------------------------

    def __len__(self) -> int:
        return <Py_ssize_t>(self.tail - self.head)

    @property
    def free(self) -> int:
        """Bytes that `write` would accept now."""
        return self.free_space()

    def write(self, data) -> int:
        """Append as much of `data` (any bytes-like) as fits; returns the bytes accepted."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef int held = get_buffer(data, &view, &p, &n)
        try:
            return self.write_c(p, n)
        finally:
            if held:
                PyBuffer_Release(&view)

    def peek(self, offset: int, n: int) -> bytes:
        """A copy of held bytes [offset, offset+n), clipped to `tail`."""
        cdef uint64_t off = offset
        if off < self.head:
            raise ValueError(f"offset {offset} was already released (head is {self.head})")
        if n < 0:
            raise ValueError("n must be >= 0")
        cdef Py_ssize_t k = 0
        if off < self.tail:
            k = <Py_ssize_t>min(<uint64_t>n, self.tail - off)
        out = PyBytes_FromStringAndSize(NULL, k)
        ring_get(self.buf, self.mask, off, <unsigned char*>PyBytes_AS_STRING(out), <size_t>k)
        return out

    def copy_into(self, offset: int, buffer) -> int:
        """Copy held bytes from `offset` into a writable buffer (as many as fit and are
        held); returns the count."""
        cdef uint64_t off = offset
        if off < self.head:
            raise ValueError(f"offset {offset} was already released (head is {self.head})")
        cdef Py_buffer view
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            return self.copy_out(off, <unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def release(self, upto_offset: int) -> None:
        """Drop the bytes before `upto_offset` (they were acknowledged). Clamped to `tail`;
        an offset at or before `head` does nothing."""
        self.release_c(<uint64_t>upto_offset)

    def reset(self) -> None:
        """Forget every byte and start a new stream at offset 0, keeping the allocation
        (a host recycles rings of closed connections instead of freeing them)."""
        self.head = 0
        self.tail = 0

    def resize(self, new_capacity: int) -> None:
        """Change the capacity; shrinking below the bytes held raises ValueError."""
        cdef Py_ssize_t cap = _check_capacity(new_capacity)
        cdef Py_ssize_t held = <Py_ssize_t>(self.tail - self.head)
        if cap < held:
            raise ValueError(f"cannot shrink to {cap}: {held} bytes are held")
        cdef size_t alloc = ring_alloc_size(<size_t>cap)
        cdef unsigned char* nbuf
        if alloc != self.mask + 1:
            nbuf = _alloc(alloc)
            ring_move(self.buf, self.mask, nbuf, alloc - 1, self.head, <size_t>held)
            c_free(self.buf)
            self.buf = nbuf
            self.mask = alloc - 1
        self.capacity = cap

    def __repr__(self) -> str:
        return (f"<SendRing head={self.head} tail={self.tail} held={self.tail - self.head}"
                f" capacity={self.capacity}>")
