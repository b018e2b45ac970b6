# Per-segment loss-recovery bookkeeping of one connection, in C: every transmission in
# flight with its latest send time (RACK.xmit_ts, RFC 8985 6.1) and its scoreboard flags
# (SACKed, lost, retransmitted). The policies (fasttcp/tcp/loss.py) read and mark it once
# per ACK; Tcb.send_range records each transmission.
from libc.stdint cimport int64_t


cdef enum:
    SEG_SACKED = 1          # selectively acknowledged (RFC 2018)
    SEG_LOST = 2            # deemed lost (RACK, RFC 8985 6.2 step 5; or RFC 6675 IsLost)
    SEG_RETRANS = 4         # a retransmission of it is in flight (Linux TCPCB_SACKED_RETRANS)
    SEG_EVER_RETRANS = 8    # retransmitted at least once (RFC 8985 "Segment.retransmitted")


cdef struct SentSeg:
    int64_t start, end      # send offsets [start, end), the FIN included
    double ts               # latest transmission time
    int flags


cdef class RackQueue:
    cdef SentSeg* segs
    cdef Py_ssize_t head, n, cap
    # RACK state (RFC 8985 6.1): the most recently sent delivered segment, the RTT it
    # gave, the highest delivered end (RACK.fack), and whether reordering was seen.
    cdef public double xmit_ts, rack_rtt
    cdef public int64_t end_seq, fack
    cdef public bint reordering_seen
    cdef public int64_t reordered           # segments delivered below RACK.fack
    cdef public int64_t reorder_dist        # the largest distance (bytes) of one of them
    # F-RTO (RFC 5682): bytes delivered (ACKed or SACKed) from segments never
    # retransmitted that end at or below orig_limit (the SND.MAX of the last RTO; 0: none
    # counted), as Linux's FLAG_ORIG_SACK_ACKED
    cdef public int64_t orig_limit, orig_delivered

    cdef int sent(self, int64_t off, int64_t end, double now, bint rtx,
                  int64_t una) except -1
    cdef void drop_acked(self, int64_t una) noexcept
    cdef double acked_rtt(self, int64_t lo, int64_t hi, double now) noexcept
    cdef void _deliver(self, SentSeg* s, double now, double min_rtt) noexcept
    cdef int _grow(self, bint compact) except -1
    cdef Py_ssize_t _split(self, int64_t off) except -2
