# cython: language_level=3
"""Receive side: out-of-order assembler and in-order receive buffer in one ring.

RFC 9293 section 3.10.7.4 lets a receiver keep segments that arrive beyond RCV.NXT inside
the window and deliver them once the gap before them fills. Here the payload is written
straight to its final place in a ring covering the window [read_pos, read_pos + max_bytes);
a short sorted list of filled runs records which out-of-order ranges are present. Filling a
hole only merges runs; nothing is copied twice. In-order data with nothing out of order is
one memcpy - or none yet: with add_lazy_c the bytes stay in the caller's packet buffer
until the reader takes them or settle_c() copies them in (the engine settles once per
received batch, before the link reuses its buffers).

Memory is fixed at construction: the ring (max_bytes rounded up to a power of two) and
max_holes run slots. A segment that would need one run too many is refused and counted, so
a peer cannot grow either.
"""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free as c_free, malloc
from libc.string cimport memcpy, memmove

from fasttcp.storage._ring cimport (RING_MAX_CAPACITY, ring_alloc_size, ring_get, ring_move,
                                    ring_put)
from fasttcp.wire._wire cimport get_buffer

COMPILED = True

# A generous ceiling: SACK can name only 3-4 blocks per segment anyway (RFC 2018 section 3).
MAX_HOLES_LIMIT = 1 << 16


cdef class OooBudget:
    """Bytes held out of order by every Reassembler sharing this account, and the most
    they may hold (a host's settings.ooo_budget). The reassemblers keep ``held`` up to
    date as they store, deliver, prune and drop out-of-order data."""

    def __cinit__(self, limit: int):
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit

    def __repr__(self) -> str:
        return f"<OooBudget held={self.held} limit={self.limit} pruned={self.pruned_bytes}>"


cdef class Reassembler:
    """Receive buffer for one stream with bounded out-of-order storage.

    `read_pos` <= `next` <= (out-of-order runs) < `read_pos + max_bytes`; `readable` =
    `next - read_pos` bytes are ready for the user. With a `budget` (OooBudget) every
    out-of-order byte held is also counted there.
    """

    def __cinit__(self, max_bytes: int, max_holes: int = 32, OooBudget budget=None):
        if not (1 <= max_bytes <= RING_MAX_CAPACITY):
            raise ValueError(f"max_bytes must be in 1..{RING_MAX_CAPACITY}, got {max_bytes}")
        if not (0 <= max_holes <= MAX_HOLES_LIMIT):
            raise ValueError(f"max_holes must be in 0..{MAX_HOLES_LIMIT}, got {max_holes}")
        cdef size_t alloc = ring_alloc_size(<size_t>max_bytes)
        self.buf = <unsigned char*>malloc(alloc)
        # one slot even when max_holes == 0 keeps the pointer valid
        self.runs = <uint64_t*>malloc(2 * sizeof(uint64_t) * (max_holes if max_holes else 1))
        if self.buf == NULL or self.runs == NULL:
            raise MemoryError()
        self.mask = alloc - 1
        self.max_bytes = max_bytes
        self.max_holes = max_holes
        self.budget = budget

    def __dealloc__(self):
        self._account(-<int64_t>self.held_ooo)
        c_free(self.buf)
        c_free(self.runs)
        self.buf = NULL
        self.runs = NULL

    # --- C level ------------------------------------------------------------------------

    cdef void _account(self, int64_t delta) noexcept nogil:
        # held_ooo itself is updated by the caller; the host's total follows it.
        if self.budget is not None:
            self.budget.held += <uint64_t>delta

    cdef uint64_t missing_c(self, uint64_t offset, uint64_t end) noexcept nogil:
        cdef uint64_t limit = self.read_pos + <uint64_t>self.max_bytes
        cdef uint64_t n, rs, re
        cdef Py_ssize_t r
        if offset < self.next:
            offset = self.next
        if end > limit:
            end = limit
        if end <= offset:
            return 0
        n = end - offset
        for r in range(self.nruns):
            rs = self.runs[2 * r]
            re = self.runs[2 * r + 1]
            if rs >= end:
                break
            if re > offset:
                n -= (re if re < end else end) - (rs if rs > offset else offset)
        return n

    cdef uint64_t prune_c(self, uint64_t floor, uint64_t goal) noexcept nogil:
        cdef uint64_t freed = 0, rs, re, cut
        cdef Py_ssize_t r = self.nruns - 1
        while r >= 0 and freed < goal:
            rs = self.runs[2 * r]
            re = self.runs[2 * r + 1]
            if re <= floor:
                break
            cut = rs if rs > floor else floor
            if re - cut > goal - freed:
                cut = re - (goal - freed)
            freed += re - cut
            if cut == rs:
                self.nruns -= 1                     # the highest run goes entirely
            else:
                self.runs[2 * r + 1] = cut          # the run keeps its lower part
                break
            r -= 1
        if freed:
            self.held_ooo -= freed
            self._account(-<int64_t>freed)
            if self.budget is not None:
                self.budget.pruned_bytes += freed
        return freed

    cdef Py_ssize_t add_c(self, uint64_t offset, const unsigned char* data,
                          Py_ssize_t n) noexcept nogil:
        cdef uint64_t limit = self.read_pos + <uint64_t>self.max_bytes
        cdef uint64_t end, cur, rs, re, merged_end, room
        cdef uint64_t written = 0
        cdef Py_ssize_t lo, hi, mid, i, j, k, r, new_count
        if n <= 0:
            return 0

        # Fast path: the next expected bytes with nothing out of order (header prediction's
        # common case). One memcpy, no run bookkeeping.
        if offset == self.next and self.nruns == 0:
            room = limit - offset
            if <uint64_t>n > room:
                self.trimmed_bytes += <uint64_t>n - room
                n = <Py_ssize_t>room
            ring_put(self.buf, self.mask, offset, data, <size_t>n)
            self.next = offset + <uint64_t>n
            return n

        # Clip to the window [next, limit). Computing room first avoids overflow of offset+n.
        if offset >= limit:
            self.trimmed_bytes += <uint64_t>n
            return 0
        room = limit - offset
        if <uint64_t>n > room:
            self.trimmed_bytes += <uint64_t>n - room
            n = <Py_ssize_t>room
        end = offset + <uint64_t>n
        if end <= self.next:
            self.dup_bytes += <uint64_t>n
            return 0
        if offset < self.next:
            self.dup_bytes += self.next - offset
            data += self.next - offset
            offset = self.next
            n = <Py_ssize_t>(end - offset)

        # Runs touching [offset, end) (overlapping or adjacent) become one: [i, j).
        # Ends ascend with starts, so binary-search the first run ending at or after offset.
        lo = 0
        hi = self.nruns
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.runs[2 * mid + 1] < offset:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        j = i
        while j < self.nruns and self.runs[2 * j] <= end:
            j += 1
        k = j - i

        # Bounded memory: refuse a segment needing a run slot we do not have. A segment at
        # `next` never does (it joins the contiguous data), so in-order data always goes in.
        new_count = self.nruns - k + (0 if offset == self.next else 1)
        if new_count > self.max_holes:
            self.dropped_segments += 1
            self.dropped_bytes += <uint64_t>n
            return 0

        # Write only the gaps; bytes already held stay as first received.
        cur = offset
        for r in range(i, j):
            rs = self.runs[2 * r]
            re = self.runs[2 * r + 1]
            if rs > cur:
                ring_put(self.buf, self.mask, cur, data + (cur - offset), <size_t>(rs - cur))
                written += rs - cur
            if re > cur:
                cur = re
        if cur < end:
            ring_put(self.buf, self.mask, cur, data + (cur - offset), <size_t>(end - cur))
            written += end - cur
        self.dup_bytes += <uint64_t>n - written
        self.held_ooo += written
        self._account(<int64_t>written)

        merged_end = end
        if k and self.runs[2 * (j - 1) + 1] > merged_end:
            merged_end = self.runs[2 * (j - 1) + 1]

        if offset == self.next:
            # The hole at the front is filled (i == 0): runs [0, j) join the contiguous data.
            if 0 < j < self.nruns:
                memmove(self.runs, self.runs + 2 * j,
                        <size_t>(self.nruns - j) * 2 * sizeof(uint64_t))
            self.nruns -= j
            self.held_ooo -= merged_end - offset
            self._account(-<int64_t>(merged_end - offset))
            self.next = merged_end
            return <Py_ssize_t>(merged_end - offset)

        # Replace runs [i, j) by the merged run.
        if k and self.runs[2 * i] < offset:
            offset = self.runs[2 * i]
        if k != 1 and j < self.nruns:
            memmove(self.runs + 2 * (i + 1), self.runs + 2 * j,
                    <size_t>(self.nruns - j) * 2 * sizeof(uint64_t))
        self.nruns += 1 - k
        self.runs[2 * i] = offset
        self.runs[2 * i + 1] = merged_end
        return 0

    cdef Py_ssize_t add_lazy_c(self, uint64_t offset, const unsigned char* data,
                               Py_ssize_t n) noexcept nogil:
        cdef uint64_t room
        cdef Py_ssize_t k
        # Only the next expected bytes, with nothing out of order and nothing readable in
        # the ring after the spans (so the spans stay the front of the readable data).
        if (n <= 0 or offset != self.next or self.nruns != 0
                or self.read_pos + self.span_bytes != self.next
                or self.span_head + self.nspans >= MAX_SPANS):
            return self.add_c(offset, data, n)
        room = self.read_pos + <uint64_t>self.max_bytes - offset
        if <uint64_t>n > room:
            self.trimmed_bytes += <uint64_t>n - room
            n = <Py_ssize_t>room
            if n == 0:
                return 0
        k = self.span_head + self.nspans
        self.span_ptr[k] = data
        self.span_len[k] = n
        self.nspans += 1
        self.span_bytes += <uint64_t>n
        self.next = offset + <uint64_t>n
        return n

    cdef void settle_c(self) noexcept nogil:
        cdef uint64_t pos = self.read_pos
        cdef Py_ssize_t i
        for i in range(self.span_head, self.span_head + self.nspans):
            ring_put(self.buf, self.mask, pos, self.span_ptr[i], <size_t>self.span_len[i])
            pos += <uint64_t>self.span_len[i]
        self.span_head = 0
        self.nspans = 0
        self.span_bytes = 0

    cdef Py_ssize_t peek_into(self, unsigned char* dst, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t avail = <Py_ssize_t>(self.next - self.read_pos)
        cdef Py_ssize_t done = 0, take, i
        if n > avail:
            n = avail
        if n <= 0:
            return 0
        i = self.span_head
        while done < n and i < self.span_head + self.nspans:
            take = self.span_len[i]
            if take > n - done:
                take = n - done
            memcpy(dst + done, self.span_ptr[i], <size_t>take)
            done += take
            i += 1
        if done < n:
            ring_get(self.buf, self.mask, self.read_pos + <uint64_t>done, dst + done,
                     <size_t>(n - done))
        return n

    cdef Py_ssize_t read_into(self, unsigned char* dst, Py_ssize_t n) noexcept nogil:
        n = self.peek_into(dst, n)
        self.consume(n)
        return n

    cdef Py_ssize_t readable_chunk(self, const unsigned char** p) noexcept nogil:
        cdef size_t pos
        cdef uint64_t n
        if self.nspans:
            p[0] = self.span_ptr[self.span_head]
            return self.span_len[self.span_head]
        pos = <size_t>(self.read_pos & self.mask)
        n = self.mask + 1 - pos
        if n > self.next - self.read_pos:
            n = self.next - self.read_pos
        p[0] = self.buf + pos
        return <Py_ssize_t>n

    cdef void consume(self, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t take
        if n <= 0:
            return
        if <uint64_t>n > self.next - self.read_pos:
            n = <Py_ssize_t>(self.next - self.read_pos)
        self.read_pos += <uint64_t>n
        while n > 0 and self.nspans:
            take = self.span_len[self.span_head]
            if take > n:
                take = n
            self.span_ptr[self.span_head] += take
            self.span_len[self.span_head] -= take
            self.span_bytes -= <uint64_t>take
            n -= take
            if self.span_len[self.span_head] == 0:
                self.span_head += 1
                self.nspans -= 1
        if self.nspans == 0:
            self.span_head = 0

    cdef Py_ssize_t run_index(self, uint64_t offset) noexcept nogil:
        cdef Py_ssize_t lo = 0, hi = self.nruns, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.runs[2 * mid + 1] <= offset:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.nruns and self.runs[2 * lo] <= offset:
            return lo
        return -1

    # --- Python API ---------------------------------------------------------------------

    def add(self, offset: int, data) -> int:
        """Store `data` (any bytes-like) found at stream `offset`; returns how many bytes
        became readable at the front by this call (0 if it only filled a later gap, was a
        duplicate, fell outside the window or was refused)."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef uint64_t off = offset
        cdef int held = get_buffer(data, &view, &p, &n)
        cdef Py_ssize_t r = self.add_c(off, p, n)
        if held:
            PyBuffer_Release(&view)
        return r

    @property
    def readable(self) -> int:
        """Contiguous bytes ready to read."""
        return self.readable_c()

    @property
    def window(self) -> int:
        """Receive window to advertise: max_bytes minus the unread contiguous bytes."""
        return self.window_c()

    @property
    def holes(self) -> int:
        """Number of gaps before out-of-order runs (= the number of runs)."""
        return self.nruns

    def read(self, n: int = -1) -> bytes:
        """Consume and return up to n contiguous bytes (all of them when n < 0)."""
        cdef Py_ssize_t k = self.readable_c()
        if 0 <= n < k:
            k = n
        out = PyBytes_FromStringAndSize(NULL, k)
        self.read_into(<unsigned char*>PyBytes_AS_STRING(out), k)
        return out

    def peek(self, n: int = -1) -> bytes:
        """Return up to n contiguous bytes (all when n < 0) without consuming them."""
        cdef Py_ssize_t k = self.readable_c()
        if 0 <= n < k:
            k = n
        out = PyBytes_FromStringAndSize(NULL, k)
        self.peek_into(<unsigned char*>PyBytes_AS_STRING(out), k)
        return out

    def readinto(self, buffer) -> int:
        """Consume contiguous bytes into a writable buffer; returns the count."""
        cdef Py_buffer view
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            return self.read_into(<unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def ranges(self) -> list:
        """Held out-of-order runs as ascending (start, end) offsets, end exclusive (the
        material of SACK blocks, RFC 2018)."""
        return [(self.runs[2 * r], self.runs[2 * r + 1]) for r in range(self.nruns)]

    def missing(self, offset: int, end: int) -> int:
        """Bytes of [offset, end) inside the window that no out-of-order run holds."""
        return self.missing_c(<uint64_t>offset, <uint64_t>end)

    def prune(self, floor: int, goal: int) -> int:
        """Drop held out-of-order bytes at offsets >= floor, highest first, until goal
        bytes are freed; returns the bytes freed."""
        return self.prune_c(<uint64_t>floor, <uint64_t>goal)

    def run_containing(self, offset: int):
        """The (start, end) run holding `offset`, or None: RFC 2018 section 4 wants the
        block of the most recently received segment reported first."""
        cdef Py_ssize_t r = self.run_index(<uint64_t>offset)
        if r < 0:
            return None
        return (self.runs[2 * r], self.runs[2 * r + 1])

    def add_lazy(self, offset: int, data) -> int:
        """As :meth:`add`, but in-order data may be kept by reference until
        :meth:`settle` (no copy if the reader takes it first): ``data`` must stay
        unchanged until then. For tests; the engine calls the C version."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef int held = get_buffer(data, &view, &p, &n)
        cdef Py_ssize_t r = self.add_lazy_c(<uint64_t>offset, p, n)
        if held:
            PyBuffer_Release(&view)
        return r

    def settle(self) -> None:
        """Copy data still held by reference (:meth:`add_lazy`) into the buffer."""
        self.settle_c()

    def reset(self) -> None:
        """Empty the assembler for a new stream starting at offset 0, keeping the
        allocation (for recycling by the host)."""
        self.span_head = 0
        self.nspans = 0
        self.span_bytes = 0
        self.nruns = 0
        self.read_pos = 0
        self.next = 0
        self._account(-<int64_t>self.held_ooo)
        self.held_ooo = 0
        self.dup_bytes = 0
        self.trimmed_bytes = 0
        self.dropped_segments = 0
        self.dropped_bytes = 0

    def resize(self, max_bytes: int) -> None:
        """Change max_bytes. Every held byte must stay inside the new window (ValueError
        otherwise). Shrinking moves the window's right edge left, which RFC 9293 section
        3.8.6 discourages once it has been advertised: the engine decides."""
        if not (1 <= max_bytes <= RING_MAX_CAPACITY):
            raise ValueError(f"max_bytes must be in 1..{RING_MAX_CAPACITY}, got {max_bytes}")
        cdef uint64_t hi = self.runs[2 * self.nruns - 1] if self.nruns else self.next
        if hi - self.read_pos > <uint64_t>max_bytes:
            raise ValueError(f"cannot shrink to {max_bytes}: data is held up to "
                             f"{hi - self.read_pos} bytes past read_pos")
        self.settle_c()
        cdef size_t alloc = ring_alloc_size(<size_t>max_bytes)
        cdef unsigned char* nbuf
        cdef uint64_t nmask = alloc - 1
        cdef Py_ssize_t r
        if alloc != self.mask + 1:
            nbuf = <unsigned char*>malloc(alloc)
            if nbuf == NULL:
                raise MemoryError()
            ring_move(self.buf, self.mask, nbuf, nmask, self.read_pos,
                      <size_t>(self.next - self.read_pos))
            for r in range(self.nruns):
                ring_move(self.buf, self.mask, nbuf, nmask, self.runs[2 * r],
                          <size_t>(self.runs[2 * r + 1] - self.runs[2 * r]))
            c_free(self.buf)
            self.buf = nbuf
            self.mask = nmask
        self.max_bytes = max_bytes

    def stats(self) -> dict:
        """Counters as a dict (for the host's statistics)."""
        return {
            "dup_bytes": self.dup_bytes,
            "trimmed_bytes": self.trimmed_bytes,
            "dropped_segments": self.dropped_segments,
            "dropped_bytes": self.dropped_bytes,
        }

    def __repr__(self) -> str:
        return (f"<Reassembler read_pos={self.read_pos} next={self.next} "
                f"readable={self.next - self.read_pos} ooo={self.held_ooo} in "
                f"{self.nruns} runs max_bytes={self.max_bytes}>")
