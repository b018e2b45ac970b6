# HyStart++ (RFC 9406 4.2) bookkeeping of one connection's initial slow start, in C: the
# rounds (windowEnd), each round's minimum RTT and sample count, Conservative Slow Start
# (CSS) and its rounds. The policy (congestion.py:CongestionControl) owns one and answers
# its events; the engine (connection.pyx) feeds it per ACK batch without a Python call.
from libc.stdint cimport int64_t


cdef enum:
    HS_ENTER_CSS = 1        # the round's minimum RTT rose by RttThresh: CSS begins
    HS_LEAVE_CSS = 2        # a minimum below cssBaselineMinRtt: the exit was spurious
    HS_CSS_DONE = 4         # CSS_ROUNDS rounds of CSS: the policy enters congestion avoidance


cdef class HyStartRounds:
    cdef public int64_t window_end          # windowEnd (send offset); -1 before round 1
    cdef public double last_round_min_rtt   # lastRoundMinRTT
    cdef public double current_round_min_rtt    # currentRoundMinRTT
    cdef public int rtt_sample_count        # rttSampleCount
    cdef public double css_baseline_min_rtt     # cssBaselineMinRtt; finite = in CSS
    cdef public int css_rounds              # rounds spent in the current CSS
    cdef public bint done                   # the initial slow start is over
    # The RFC 9406 4.3 constants, from the policy's class attributes.
    cdef readonly double min_rtt_thresh, max_rtt_thresh
    cdef readonly int min_rtt_divisor, n_rtt_sample, css_rounds_max

    cpdef int take(self, int64_t ack, int64_t snd_nxt, double rtt, int samples) except -1
    cpdef end(self)
