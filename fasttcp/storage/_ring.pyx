# cython: language_level=3
"""Send buffer: a byte ring holding a stream's unacknowledged and unsent bytes.

Bytes are named by absolute uint64 stream offsets (the first byte ever written is 0); the
engine maps sequence numbers to offsets (RFC 9293 section 3.4: SND.UNA is `head`, the end
of the queued data is `tail`). Acknowledged bytes are released from the front; segments are
copied from any held offset straight into packet buffers with `copy_out`, or, for a link
that writes scatter lists, referenced in place (`chunk_at`, wire.SplitPacket) until written.

Zero-copy send: a large write of bytes nobody can change (a `bytes` object, or a contiguous
memoryview of one) is not copied into the ring. The ring keeps a reference to the object
and an extent naming the stream offsets it holds; segments are read from there, and the
reference goes when those offsets are acknowledged. The bytes count against the capacity
exactly as copied ones do.
"""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport uint64_t
from libc.stdlib cimport free as c_free, malloc, realloc
from libc.string cimport memcpy, memmove

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

    def __cinit__(self, capacity: int, ref_min: int = 0):
        cdef Py_ssize_t cap = _check_capacity(capacity)
        cdef size_t alloc = ring_alloc_size(<size_t>cap)
        self.buf = _alloc(alloc)
        self.mask = alloc - 1
        self.capacity = cap
        self.head = 0
        self.tail = 0
        self.ref_min = ref_min                   # validated by the setter
        self.ext = NULL
        self.ext_first = 0
        self.ext_count = 0
        self.ext_cap = 0

    def __dealloc__(self):
        self._drop_extents(<uint64_t>-1)
        c_free(self.ext)
        self.ext = NULL
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

    cdef int write_ref_c(self, object owner, const unsigned char* p, Py_ssize_t n) except -1:
        cdef Extent* e
        cdef Py_ssize_t newcap
        if n <= 0 or n > self.free_space():
            raise ValueError("write_ref_c: n must be 1..free space")
        if self.ext_count:
            # The same object's memory right after the last run (a transport feeding the
            # rest of one write as space opens): grow that run.
            e = &self.ext[self.ext_first + self.ext_count - 1]
            if (e.end == self.tail and e.owner == <PyObject*>owner
                    and e.p + (e.end - e.start) == p):
                e.end += <uint64_t>n
                self.tail += <uint64_t>n
                return 0
        if self.ext_first + self.ext_count == self.ext_cap:
            if self.ext_first:                   # room at the front: compact
                memmove(self.ext, self.ext + self.ext_first, self.ext_count * sizeof(Extent))
                self.ext_first = 0
            else:
                newcap = 8 if self.ext_cap == 0 else 2 * self.ext_cap
                e = <Extent*>realloc(self.ext, newcap * sizeof(Extent))
                if e == NULL:
                    raise MemoryError()
                self.ext = e
                self.ext_cap = newcap
        e = &self.ext[self.ext_first + self.ext_count]
        e.start = self.tail
        e.end = self.tail + <uint64_t>n
        e.p = p
        e.owner = <PyObject*>owner
        Py_INCREF(owner)
        self.ext_count += 1
        self.tail += <uint64_t>n
        return 0

    cdef Py_ssize_t copy_out(self, uint64_t offset, unsigned char* dst,
                             Py_ssize_t n) noexcept nogil:
        cdef const unsigned char* p
        cdef Py_ssize_t done = 0, k
        if offset < self.head:
            return -1
        if offset >= self.tail or n <= 0:
            return 0
        if <uint64_t>n > self.tail - offset:
            n = <Py_ssize_t>(self.tail - offset)
        if self.ext_count == 0:
            ring_get(self.buf, self.mask, offset, dst, <size_t>n)
            return n
        while done < n:
            k = self.chunk_at(offset + <uint64_t>done, &p)
            if k <= 0:                           # cannot happen inside [head, tail)
                break
            if k > n - done:
                k = n - done
            memcpy(dst + done, p, <size_t>k)
            done += k
        return done

    cdef Py_ssize_t chunk_at(self, uint64_t offset, const unsigned char** p) noexcept nogil:
        cdef PyObject* owner
        return self.chunk_owned(offset, p, &owner)

    cdef Py_ssize_t chunk_owned(self, uint64_t offset, const unsigned char** p,
                                PyObject** owner) noexcept nogil:
        if offset < self.head or offset >= self.tail:
            return 0
        cdef uint64_t limit = self.tail
        cdef Py_ssize_t lo = self.ext_first, hi = self.ext_first + self.ext_count, mid
        cdef Extent* e
        while lo < hi:                           # the first run that ends after offset
            mid = (lo + hi) >> 1
            if self.ext[mid].end <= offset:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.ext_first + self.ext_count:
            e = &self.ext[lo]
            if e.start <= offset:                # inside a referenced run
                p[0] = e.p + (offset - e.start)
                owner[0] = e.owner
                return <Py_ssize_t>(e.end - offset)
            limit = e.start                      # ring bytes up to the next run
        cdef size_t pos = <size_t>(offset & self.mask)
        cdef uint64_t n = self.mask + 1 - pos
        if n > limit - offset:
            n = limit - offset
        p[0] = self.buf + pos
        owner[0] = <PyObject*>self
        return <Py_ssize_t>n

    cdef void release_c(self, uint64_t upto) noexcept:
        if upto > self.tail:
            upto = self.tail
        if upto > self.head:
            self.head = upto
            if self.ext_count:
                self._drop_extents(upto)

    cdef void _drop_extents(self, uint64_t upto) noexcept:
        """Let go of the referenced runs that end at or before `upto`."""
        cdef Extent* e
        while self.ext_count:
            e = &self.ext[self.ext_first]
            if e.end > upto:
                break
            Py_DECREF(<object>e.owner)
            e.owner = NULL
            self.ext_first += 1
            self.ext_count -= 1
        if self.ext_count == 0:
            self.ext_first = 0

    # --- Python API ---------------------------------------------------------------------

    def __len__(self) -> int:
        return <Py_ssize_t>(self.tail - self.head)

    @property
    def free(self) -> int:
        """Bytes that `write` would accept now."""
        return self.free_space()

    def write(self, data) -> int:
        """Append as much of `data` (any bytes-like) as fits; returns the bytes accepted.
        With `ref_min` set, a `bytes` object or a contiguous memoryview of one, when at
        least `ref_min` of it fits, is referenced rather than copied (its contents cannot
        change); the reference goes when its last byte is released."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n, room
        cdef object owner = None
        if self._ref_min:
            if PyBytes_CheckExact(data):
                owner = data
            elif type(data) is memoryview and PyBytes_CheckExact(data.obj) and data.c_contiguous:
                owner = data.obj
        cdef int held = get_buffer(data, &view, &p, &n)
        try:
            room = self.free_space()
            if owner is not None and n >= self._ref_min and room >= self._ref_min:
                if n > room:
                    n = room
                self.write_ref_c(owner, p, n)
                return n
            return self.write_c(p, n)
        finally:
            if held:
                PyBuffer_Release(&view)

    @property
    def ref_min(self) -> int:
        """Writes of bytes whose contents cannot change are referenced from this size
        on; 0 copies everything. Affects later writes only."""
        return self._ref_min

    @ref_min.setter
    def ref_min(self, value) -> None:
        if not isinstance(value, int):
            raise TypeError(f"ref_min must be an int, got {type(value).__name__}")
        if not 0 <= value <= RING_MAX_CAPACITY:
            raise ValueError(f"ref_min must be in 0..{RING_MAX_CAPACITY}, got {value}")
        self._ref_min = value

    @property
    def referenced_runs(self) -> int:
        """How many referenced runs are held (adjacent pieces of one object count once)."""
        return self.ext_count

    @property
    def referenced(self) -> int:
        """Held bytes that live in referenced objects rather than in the ring."""
        cdef Py_ssize_t i
        cdef uint64_t total = 0, start
        for i in range(self.ext_first, self.ext_first + self.ext_count):
            start = self.ext[i].start if self.ext[i].start > self.head else self.head
            total += self.ext[i].end - start
        return total

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
        self.copy_out(off, <unsigned char*>PyBytes_AS_STRING(out), k)
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
        self._drop_extents(<uint64_t>-1)
        if self.ext_cap > 64:                    # a burst of runs: do not keep the table
            c_free(self.ext)
            self.ext = NULL
            self.ext_cap = 0
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
                f" capacity={self.capacity} referenced={self.referenced}"
                f" in {self.ext_count} runs>")
