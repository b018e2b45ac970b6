# cython: language_level=3
"""Per-segment transmit times and scoreboard flags (see _rack.pxd), in C.

One entry per transmission as Tcb.send_range made it (a TSO super-segment is one entry
until a retransmission or a SACK edge splits it), sorted by offset. Entries at or below
SND.UNA are dropped lazily. Called per ACK (``on_ack``, ``detect_loss``, ``pipe``,
``next_lost``) from the slow path; the fast path never touches it.
"""
from libc.stdlib cimport free, realloc
from libc.string cimport memmove

COMPILED = True

# RFC 8985 6.2: a timer tolerance, so a deadline computed as a sum fires (virtual time).
cdef double EPS = 1e-9


cdef inline bint _sent_after(double t1, int64_t seq1, double t2, int64_t seq2) noexcept:
    """RFC 8985 6.2 RACK_sent_after: t1/seq1 was sent after t2/seq2."""
    return t1 > t2 or (t1 == t2 and seq1 > seq2)


cdef class RackQueue:
    """The transmissions in flight of one connection, with their latest send times."""

    def __cinit__(self):
        self.segs = NULL
        self.head = self.n = self.cap = 0

    def __dealloc__(self):
        free(self.segs)

    cdef int _grow(self, bint compact) except -1:
        cdef Py_ssize_t cap
        cdef SentSeg* p
        if compact and self.head > 0:          # reuse the room of acknowledged entries
            memmove(self.segs, self.segs + self.head, (self.n - self.head) * sizeof(SentSeg))
            self.n -= self.head
            self.head = 0
            if self.n < self.cap:
                return 0
        cap = self.cap * 2 if self.cap else 16
        p = <SentSeg*>realloc(self.segs, cap * sizeof(SentSeg))
        if p == NULL:
            raise MemoryError()
        self.segs = p
        self.cap = cap
        return 0

    cdef void drop_acked(self, int64_t una) noexcept:
        while self.head < self.n and self.segs[self.head].end <= una:
            self.head += 1
        if self.head < self.n and self.segs[self.head].start < una:
            self.segs[self.head].start = una
        if self.head == self.n:
            self.head = self.n = 0

    cdef double acked_rtt(self, int64_t lo, int64_t hi, double now) noexcept:
        """An RTT sample for an ACK that moved SND.UNA from ``lo`` to ``hi``: from the most
        recently sent of the newly acknowledged transmissions that was never
        retransmitted (Karn, RFC 6298 3), as Linux takes its per-ACK ca_rtt from the skb
        send times (tcp_clean_rtx_queue); -1 when there is none. Call before the entries
        below ``hi`` are dropped."""
        cdef Py_ssize_t i
        cdef double latest = -1.0
        for i in range(self.head, self.n):
            if self.segs[i].start >= hi:
                break
            if (self.segs[i].end > lo and not self.segs[i].flags & SEG_EVER_RETRANS
                    and self.segs[i].ts > latest):
                latest = self.segs[i].ts
        return now - latest if latest >= 0 else -1.0

    cdef Py_ssize_t _split(self, int64_t off) except -2:
        """Make `off` an entry boundary; returns the index of the entry starting at off
        (or self.n when off is past the last entry)."""
        cdef Py_ssize_t lo = self.head, hi = self.n, mid
        while lo < hi:                         # first entry with end > off
            mid = (lo + hi) // 2
            if self.segs[mid].end <= off:
                lo = mid + 1
            else:
                hi = mid
        if lo == self.n or self.segs[lo].start >= off:
            return lo
        if self.n == self.cap:
            self._grow(False)                  # indices held by callers stay valid
        memmove(self.segs + lo + 1, self.segs + lo, (self.n - lo) * sizeof(SentSeg))
        self.n += 1
        self.segs[lo].end = off
        self.segs[lo + 1].start = off
        return lo + 1

    cdef int sent(self, int64_t off, int64_t end, double now, bint rtx,
                  int64_t una) except -1:
        """[off, end) was transmitted at `now` (a retransmission when rtx)."""
        cdef Py_ssize_t i, j
        cdef SentSeg* s
        if end <= off:
            return 0
        self.drop_acked(una)
        if self.n == self.head or off >= self.segs[self.n - 1].end:
            if self.n == self.cap:
                self._grow(True)
            s = &self.segs[self.n]
            s.start = off
            s.end = end
            s.ts = now
            s.flags = SEG_RETRANS | SEG_EVER_RETRANS if rtx else 0
            self.n += 1
            return 0
        # A retransmission (RFC 8985 6.1: xmit_ts is the latest transmission's time):
        # its entries are split at its edges and stamped.
        i = self._split(off)
        j = self._split(end)
        while i < j:
            s = &self.segs[i]
            s.ts = now
            if not s.flags & SEG_SACKED:
                s.flags |= SEG_RETRANS | SEG_EVER_RETRANS
            i += 1
        if end > self.segs[self.n - 1].end:   # beyond what we had: new transmission
            self.sent(self.segs[self.n - 1].end, end, now, rtx, una)
        return 0

    # --- per ACK (slow path) -------------------------------------------------------------

    def on_ack(self, long long una, list sacked, double now, double min_rtt):
        """An ACK moved SND.UNA to `una` with scoreboard `sacked` (sorted [start, end)
        lists): flag the newly SACKed entries and take every newly delivered one into the
        RACK state (RFC 8985 6.2 steps 2 and 3). Returns the bytes newly delivered."""
        cdef Py_ssize_t i, k
        cdef int64_t a, b, delivered = 0
        cdef SentSeg* s
        # Cumulatively acknowledged entries (not SACKed before) are delivered now.
        i = self.head
        while i < self.n and self.segs[i].start < una:
            s = &self.segs[i]
            if not s.flags & SEG_SACKED:
                delivered += (s.end if s.end < una else una) - s.start
                self._deliver(s, now, min_rtt)
            if s.end > una:
                break
            i += 1
        self.drop_acked(una)
        for blk in sacked:
            a = blk[0]
            b = blk[1]
            if b <= una:
                continue
            i = self._split(a if a > una else una)
            k = self._split(b)
            while i < k:
                s = &self.segs[i]
                if not s.flags & SEG_SACKED:
                    s.flags = (s.flags | SEG_SACKED) & ~(SEG_LOST | SEG_RETRANS)
                    delivered += s.end - s.start
                    self._deliver(s, now, min_rtt)
                i += 1
        return delivered

    cdef void _deliver(self, SentSeg* s, double now, double min_rtt) noexcept:
        cdef double rtt = now - s.ts
        if not s.flags & SEG_EVER_RETRANS and s.end <= self.orig_limit:
            self.orig_delivered += s.end - s.start      # (F-RTO: an original arrived)
        # Step 3, RACK_detect_reordering: delivered below the highest delivered end.
        if s.end > self.fack:
            self.fack = s.end
        elif s.end < self.fack and not s.flags & SEG_EVER_RETRANS:
            self.reordering_seen = True
            self.reordered += 1
            if self.fack - s.start > self.reorder_dist:
                self.reorder_dist = self.fack - s.start
        # Step 2, RACK_update: a retransmitted segment's ACK may be for the original; an
        # RTT below the minimum says it is (no TSecr test: the min_RTT one suffices here).
        if s.flags & SEG_EVER_RETRANS and rtt < min_rtt - EPS:
            return
        if _sent_after(s.ts, s.end, self.xmit_ts, self.end_seq):
            self.xmit_ts = s.ts
            self.end_seq = s.end
            self.rack_rtt = rtt

    def trim(self, long long una):
        """Forget the entries at or below SND.UNA (the fast path moves it alone)."""
        self.drop_acked(una)

    def detect_loss(self, double now, double reo_wnd):
        """RFC 8985 6.2 step 5, RACK_detect_loss: mark lost every unSACKed segment sent
        before RACK.xmit_ts by more than RACK.rtt + reo_wnd ago. Returns (segments newly
        marked lost, seconds until the next one would be: 0 when none waits)."""
        cdef Py_ssize_t i
        cdef int lost = 0
        cdef double remaining, timeout = 0.0
        cdef SentSeg* s
        for i in range(self.head, self.n):
            s = &self.segs[i]
            if s.flags & SEG_SACKED or (s.flags & SEG_LOST and not s.flags & SEG_RETRANS):
                continue
            if _sent_after(self.xmit_ts, self.end_seq, s.ts, s.end):
                remaining = s.ts + self.rack_rtt + reo_wnd - now
                if remaining <= EPS:
                    # Lost; a retransmission of it in flight is lost too (Linux
                    # tcp_mark_skb_lost clears its retransmitted mark).
                    s.flags = (s.flags | SEG_LOST) & ~SEG_RETRANS
                    lost += 1
                elif remaining > timeout:
                    timeout = remaining
        return lost, timeout

    def mark_lost_below(self, long long edge):
        """RFC 6675 IsLost by DupThresh: unSACKed entries below `edge` are lost (ones
        retransmitted already keep their retransmission in flight)."""
        cdef Py_ssize_t i
        cdef int lost = 0
        for i in range(self.head, self.n):
            if self.segs[i].start >= edge:
                break
            if not self.segs[i].flags & (SEG_SACKED | SEG_LOST | SEG_RETRANS):
                self._split(edge)
                self.segs[i].flags |= SEG_LOST
                lost += 1
        return lost

    def mark_all_lost(self):
        """After an RTO (RFC 8985 6.3, Linux tcp_timeout_mark_lost): every unSACKed entry
        is lost and none is in flight as a retransmission. The SACKed ones stay SACKed
        (RFC 6675 5.1: the scoreboard still says what need not be resent), unless the
        first one is: the receiver SACKed what it now lets time out, it reneged (RFC 2018
        section 8), and every SACK is forgotten. Returns True when it reneged."""
        cdef Py_ssize_t i
        cdef bint reneged = self.head < self.n and self.segs[self.head].flags & SEG_SACKED
        cdef int clear = SEG_RETRANS | (SEG_SACKED if reneged else 0)
        for i in range(self.head, self.n):
            if reneged or not self.segs[i].flags & SEG_SACKED:
                self.segs[i].flags = (self.segs[i].flags | SEG_LOST) & ~clear
        if reneged:
            # What the receiver held is acknowledged again in order: not reordering.
            self.fack = self.segs[self.head].start
        return reneged

    def clear_lost(self):
        """An RTO proved spurious (Linux tcp_undo_cwnd_reduction(unmark_loss)): nothing
        is deemed lost any more."""
        cdef Py_ssize_t i
        for i in range(self.head, self.n):
            self.segs[i].flags &= ~SEG_LOST

    def pipe(self):
        """RFC 6675 SetPipe with RACK's marks (Linux tcp_packets_in_flight): unSACKed
        bytes not deemed lost, plus bytes whose retransmission is in flight."""
        cdef Py_ssize_t i
        cdef int64_t p = 0, ln
        cdef SentSeg* s
        for i in range(self.head, self.n):
            s = &self.segs[i]
            if s.flags & SEG_SACKED:
                continue
            ln = s.end - s.start
            if not s.flags & SEG_LOST:
                p += ln
            if s.flags & SEG_RETRANS:
                p += ln
        return p

    def next_lost(self, long long from_off):
        """NextSeg rule (1): the first lost unSACKed range at or above from_off not
        retransmitted since, as (start, end), or None."""
        cdef Py_ssize_t i
        cdef SentSeg* s
        for i in range(self.head, self.n):
            s = &self.segs[i]
            if s.end <= from_off:
                continue
            if s.flags & SEG_LOST and not s.flags & (SEG_SACKED | SEG_RETRANS):
                return (s.start if s.start > from_off else from_off), s.end
        return None

    def lost_bytes(self):
        """Bytes marked lost and not retransmitted since."""
        cdef Py_ssize_t i
        cdef int64_t b = 0
        for i in range(self.head, self.n):
            if self.segs[i].flags & SEG_LOST and not self.segs[i].flags & (SEG_SACKED |
                                                                           SEG_RETRANS):
                b += self.segs[i].end - self.segs[i].start
        return b

    def is_retransmitted(self, long long off):
        """True when the segment holding `off` was retransmitted (Eifel/D-SACK use)."""
        cdef Py_ssize_t i
        for i in range(self.head, self.n):
            if self.segs[i].start <= off < self.segs[i].end:
                return bool(self.segs[i].flags & SEG_EVER_RETRANS)
        return False

    def entries(self):
        """[(start, end, ts, flags)] in flight (tests and debugging)."""
        return [(self.segs[i].start, self.segs[i].end, self.segs[i].ts, self.segs[i].flags)
                for i in range(self.head, self.n)]

    def __len__(self):
        return self.n - self.head
