# cython: language_level=3
"""Retransmission timer computation per RFC 6298.

The estimator only does the arithmetic. Which segments may be timed is the engine's business:
Karn's algorithm (RFC 6298 section 3: no sample from a retransmitted segment unless
timestamps disambiguate it, RFC 7323 section 4) and when the timer is started, restarted or
stopped (section 5) live in the connection.

Deviations from the RFC's SHOULDs, on purpose:
  - ``min_rto`` defaults to 0.2 s, as in Linux (TCP_RTO_MIN), not the 1 s floor that RFC
    6298 2.4 says SHOULD be used (a conservative choice against spurious retransmissions);
    with fine-grained timers and short paths 1 s makes every loss on a LAN cost a second.
    Pass ``min_rto=1.0`` for the RFC's value.
  - ``max_rto`` defaults to 60 s, the smallest upper bound RFC 6298 2.5 allows.
"""
from typing import Optional

__all__ = ["RttEstimator", "SYN_FALLBACK_RTO"]

COMPILED = True

#: RFC 6298 5.7: the RTO to use once data flows, after the SYN (or SYN-ACK) had to be
#: retransmitted and no RTT sample was taken. (Also the pre-RFC 6298 initial RTO.)
SYN_FALLBACK_RTO = 3.0


cdef class RttEstimator:
    """SRTT / RTTVAR / RTO of one connection (RFC 6298 sections 2 and 5).

    Times are seconds (floats). ``srtt`` and ``rttvar`` are None until the first sample.
    ``rto`` is the current timeout, backoff included; ``backoff_count`` counts the doublings
    since the last sample (the engine can use it to give up after too many).

    Compiled (rtt.pxd): the engine calls :meth:`sample` and reads :attr:`rto` per ACK batch.
    """

    def __init__(self, double initial_rto=1.0, double min_rto=0.2, double max_rto=60.0,
                 double granularity=0.001, double k=4, double alpha=0.125,
                 double beta=0.25) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        if initial_rto <= 0 or granularity < 0 or k <= 0:
            raise ValueError("initial_rto and k must be positive, granularity non-negative")
        if not (0 < alpha < 1 and 0 < beta < 1):
            raise ValueError("alpha and beta must lie strictly between 0 and 1")
        self.initial_rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = granularity
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.has_sample = False
        self.min_rtt = 1e300                 # no sample yet
        # 2.1: "Until a round-trip time (RTT) measurement has been made ... RTO <- 1 second"
        # (the initial value is a setting; it is clamped like every other RTO).
        self.rto = self._clamp(self.initial_rto)
        self.backoff_count = 0

    @property
    def srtt(self) -> Optional[float]:
        return self._srtt if self.has_sample else None

    @property
    def rttvar(self) -> Optional[float]:
        return self._rttvar if self.has_sample else None

    cdef double _clamp(self, double rto) noexcept:
        # 2.4: a lower bound (see the module docstring); 2.5: an upper bound of >= 60 s.
        return min(max(rto, self.min_rto), self.max_rto)

    cpdef sample(self, double rtt):
        """Take one RTT measurement R (seconds, >= 0) and recompute the RTO.

        A fresh sample also ends any backoff: the RTO is computed from SRTT/RTTVAR again
        (RFC 6298 5.7's note: the backed-off RTO is kept "until an acknowledgment is received
        for a segment that was not retransmitted", which is what yields a sample).
        """
        if not rtt >= 0:  # also rejects NaN
            raise ValueError(f"an RTT sample must be >= 0, got {rtt!r}")
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        if not self.has_sample:
            # 2.2: first measurement: SRTT <- R, RTTVAR <- R/2
            self._srtt = rtt
            self._rttvar = rtt / 2
            self.has_sample = True
        else:
            # 2.3: RTTVAR first, with the old SRTT:
            #   RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|
            #   SRTT <- (1 - alpha) * SRTT + alpha * R'
            self._rttvar = (1 - self.beta) * self._rttvar + self.beta * abs(self._srtt - rtt)
            self._srtt = (1 - self.alpha) * self._srtt + self.alpha * rtt
        self.backoff_count = 0
        # 2.2 / 2.3: RTO <- SRTT + max(G, K*RTTVAR)
        self.rto = self._clamp(self._srtt + max(self.granularity, self.k * self._rttvar))

    cpdef double backoff(self):
        """The retransmission timer expired: 5.5 "RTO <- RTO * 2", capped at ``max_rto``
        (2.5). Returns the new RTO."""
        self.rto = min(self.rto * 2, self.max_rto)
        self.backoff_count += 1
        return self.rto

    cpdef double on_syn_timeout_fallback(self):
        """Call when the handshake completes after the SYN (or SYN-ACK) timed out.

        RFC 6298 5.7: "If the timer expires awaiting the ACK of a SYN segment and the TCP
        implementation is using an RTO less than 3 seconds, the RTO MUST be re-initialized to
        3 seconds when data transmission begins (i.e., after the three-way handshake
        completes)." Only when no sample was taken: with timestamps (RFC 7323) the handshake
        can still yield a valid sample, and then the measured RTO stands. The handshake has
        completed, so the backoff ends: the RTO becomes max(initial_rto, 3 s) within
        [min_rto, max_rto]. Returns the RTO.
        """
        if not self.has_sample:
            # The un-backed-off RTO is initial_rto; when that is below 3 s, 3 s replaces it.
            self.rto = self._clamp(max(self.initial_rto, SYN_FALLBACK_RTO))
            self.backoff_count = 0
        return self.rto

    def __repr__(self) -> str:
        return (f"RttEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto}, "
                f"backoff_count={self.backoff_count})")
