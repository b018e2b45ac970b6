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
from __future__ import annotations

from typing import Optional

__all__ = ["RttEstimator", "SYN_FALLBACK_RTO"]

#: RFC 6298 5.7: the RTO to use once data flows, after the SYN (or SYN-ACK) had to be
#: retransmitted and no RTT sample was taken. (Also the pre-RFC 6298 initial RTO.)
SYN_FALLBACK_RTO = 3.0


class RttEstimator:
    """SRTT / RTTVAR / RTO of one connection (RFC 6298 sections 2 and 5).

    Times are seconds (floats). ``srtt`` and ``rttvar`` are None until the first sample.
    ``rto`` is the current timeout, backoff included; ``backoff_count`` counts the doublings
    since the last sample (the engine can use it to give up after too many).
    """

    __slots__ = ("initial_rto", "min_rto", "max_rto", "granularity", "k", "alpha", "beta",
                 "srtt", "rttvar", "rto", "backoff_count")

    def __init__(self, initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 60.0,
                 granularity: float = 0.001, k: float = 4, alpha: float = 1 / 8,
                 beta: float = 1 / 4) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError(f"need 0 < min_rto <= max_rto, got {min_rto}, {max_rto}")
        if initial_rto <= 0 or granularity < 0 or k <= 0:
            raise ValueError("initial_rto and k must be positive, granularity non-negative")
        if not (0 < alpha < 1 and 0 < beta < 1):
            raise ValueError("alpha and beta must lie strictly between 0 and 1")
        self.initial_rto = float(initial_rto)
        self.min_rto = float(min_rto)
        self.max_rto = float(max_rto)
        self.granularity = float(granularity)
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.srtt: Optional[float] = None
        self.rttvar: Optional[float] = None
        # 2.1: "Until a round-trip time (RTT) measurement has been made ... RTO <- 1 second"
        # (the initial value is a setting; it is clamped like every other RTO).
        self.rto: float = self._clamp(self.initial_rto)
        self.backoff_count = 0

    def _clamp(self, rto: float) -> float:
        # 2.4: a lower bound (see the module docstring); 2.5: an upper bound of >= 60 s.
        return min(max(rto, self.min_rto), self.max_rto)

    def _compute_rto(self) -> float:
        # 2.2 / 2.3: RTO <- SRTT + max(G, K*RTTVAR)
        assert self.srtt is not None and self.rttvar is not None
        return self._clamp(self.srtt + max(self.granularity, self.k * self.rttvar))

    def sample(self, rtt: float) -> None:
        """Take one RTT measurement R (seconds, >= 0) and recompute the RTO.

        A fresh sample also ends any backoff: the RTO is computed from SRTT/RTTVAR again
        (RFC 6298 5.7's note: the backed-off RTO is kept "until an acknowledgment is received
        for a segment that was not retransmitted", which is what yields a sample).
        """
        if not rtt >= 0:  # also rejects NaN
            raise ValueError(f"an RTT sample must be >= 0, got {rtt!r}")
        if self.srtt is None or self.rttvar is None:
            # 2.2: first measurement: SRTT <- R, RTTVAR <- R/2
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # 2.3: RTTVAR first, with the old SRTT:
            #   RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|
            #   SRTT <- (1 - alpha) * SRTT + alpha * R'
            self.rttvar = (1 - self.beta) * self.rttvar + self.beta * abs(self.srtt - rtt)
            self.srtt = (1 - self.alpha) * self.srtt + self.alpha * rtt
        self.backoff_count = 0
        self.rto = self._compute_rto()

    def backoff(self) -> float:
        """The retransmission timer expired: 5.5 "RTO <- RTO * 2", capped at ``max_rto``
        (2.5). Returns the new RTO."""
        self.rto = min(self.rto * 2, self.max_rto)
        self.backoff_count += 1
        return self.rto

    def on_syn_timeout_fallback(self) -> float:
        """Call when the handshake completes after the SYN (or SYN-ACK) timed out.

        RFC 6298 5.7: "If the timer expires awaiting the ACK of a SYN segment and the TCP
        implementation is using an RTO less than 3 seconds, the RTO MUST be re-initialized to
        3 seconds when data transmission begins (i.e., after the three-way handshake
        completes)." Only when no sample was taken: with timestamps (RFC 7323) the handshake
        can still yield a valid sample, and then the measured RTO stands. The handshake has
        completed, so the backoff ends: the RTO becomes max(initial_rto, 3 s) within
        [min_rto, max_rto]. Returns the RTO.
        """
        if self.srtt is None:
            # The un-backed-off RTO is initial_rto; when that is below 3 s, 3 s replaces it.
            self.rto = self._clamp(max(self.initial_rto, SYN_FALLBACK_RTO))
            self.backoff_count = 0
        return self.rto

    def __repr__(self) -> str:
        return (f"RttEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto}, "
                f"backoff_count={self.backoff_count})")
