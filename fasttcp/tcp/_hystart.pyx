# cython: language_level=3
"""HyStart++ (RFC 9406 section 4.2) bookkeeping, in C (see _hystart.pxd).

Per ACK batch of the initial slow start, :meth:`HyStartRounds.take` tracks the round
(windowEnd), the round's minimum RTT and sample count, and runs the section 4.2 tests: a
delay increase enters Conservative Slow Start (CSS), a lower RTT in CSS leaves it, and
CSS_ROUNDS rounds of CSS end the slow start. It returns those as events; the congestion
policy (``CongestionControl.hystart_ack`` / ``hystart_exit``) answers the one that
changes the window. The engine calls ``take`` directly, so a slow-start ACK batch costs no
Python call until a decision is due.
"""
from libc.math cimport INFINITY

COMPILED = True
#: HyStartRounds.take's events, for Python.
ENTER_CSS = HS_ENTER_CSS
LEAVE_CSS = HS_LEAVE_CSS
CSS_DONE = HS_CSS_DONE


cdef class HyStartRounds:
    """The state of RFC 9406 section 4.2 for one connection (times in seconds, windows
    as send offsets). ``take`` returns a mask of HS_ENTER_CSS (1), HS_LEAVE_CSS (2) and
    HS_CSS_DONE (4)."""

    def __init__(self, int n_rtt_sample=8, double min_rtt_thresh=0.004,
                 double max_rtt_thresh=0.016, int min_rtt_divisor=8, int css_rounds=5):
        self.window_end = -1
        self.last_round_min_rtt = INFINITY
        self.current_round_min_rtt = INFINITY
        self.css_baseline_min_rtt = INFINITY
        self.n_rtt_sample = n_rtt_sample
        self.min_rtt_thresh = min_rtt_thresh
        self.max_rtt_thresh = max_rtt_thresh
        self.min_rtt_divisor = min_rtt_divisor
        self.css_rounds_max = css_rounds

    cpdef int take(self, int64_t ack, int64_t snd_nxt, double rtt, int samples) except -1:
        """One ACK batch in slow start: ``ack`` the new SND.UNA, ``snd_nxt`` the highest
        offset sent, ``rtt`` the batch's smallest RTT sample (negative: none) and
        ``samples`` how many ACKs carried one. Returns the events (0: none)."""
        cdef int ev = 0
        cdef double current, last, thresh
        if self.done:
            return 0
        if self.window_end < 0:
            self.window_end = snd_nxt               # the first round
        if rtt >= 0 and samples > 0:
            if rtt < self.current_round_min_rtt:
                self.current_round_min_rtt = rtt
            self.rtt_sample_count += samples
        current = self.current_round_min_rtt
        last = self.last_round_min_rtt
        if self.rtt_sample_count >= self.n_rtt_sample:
            if self.css_baseline_min_rtt == INFINITY:
                if current != INFINITY and last != INFINITY:
                    # Delay increase: RttThresh = max(MIN_RTT_THRESH,
                    # min(lastRoundMinRTT / MIN_RTT_DIVISOR, MAX_RTT_THRESH)).
                    thresh = max(self.min_rtt_thresh,
                                 min(last / self.min_rtt_divisor, self.max_rtt_thresh))
                    if current >= last + thresh:
                        self.css_baseline_min_rtt = current     # enter CSS
                        self.css_rounds = 0
                        ev |= HS_ENTER_CSS
            elif current < self.css_baseline_min_rtt:
                # "the slow start exit was spurious": back to slow start.
                self.css_baseline_min_rtt = INFINITY
                self.css_rounds = 0
                ev |= HS_LEAVE_CSS
        if ack >= self.window_end:
            # "When windowEnd is ACKed, the current round ends and windowEnd is set to
            # SND.NXT"; the next round starts with no samples.
            self.window_end = snd_nxt
            self.last_round_min_rtt = current
            self.current_round_min_rtt = INFINITY
            self.rtt_sample_count = 0
            if self.css_baseline_min_rtt != INFINITY:
                self.css_rounds += 1
                if self.css_rounds >= self.css_rounds_max:
                    # "If CSS_ROUNDS rounds are complete, enter congestion avoidance"
                    # (the policy sets ssthresh: CongestionControl.hystart_exit).
                    self.done = True
                    self.css_baseline_min_rtt = INFINITY
                    ev |= HS_CSS_DONE
        return ev

    cpdef end(self):
        """Loss or ECN-CE ended the initial slow start (and CSS): section 4.2 uses
        HyStart++ only there."""
        self.done = True
        self.css_baseline_min_rtt = INFINITY

    @property
    def in_css(self) -> bool:
        """In Conservative Slow Start (cssBaselineMinRtt is set)."""
        return self.css_baseline_min_rtt != INFINITY
