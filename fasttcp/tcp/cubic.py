"""CUBIC congestion control (RFC 9438) as a :class:`CongestionControl` policy.

CUBIC keeps Reno's slow start and loss recovery but grows the window in congestion
avoidance as a cubic function of the *time* since the last congestion event, so its growth
does not depend on the RTT (RFC 9438 section 3):

    W_cubic(t) = C * (t - K)**3 + W_max                       (section 4.2, figure 1)
    K = cubic_root((W_max - cwnd_epoch) / C)                   (section 4.2, figure 2)

with C = 0.4 (section 4.2) and beta_cubic = 0.7 (section 4.6). Windows in these formulas
are in segments (SMSS), as in the RFC; the engine reads ``cwnd``/``ssthresh`` in bytes, so
the policy keeps W_max, W_est, cwnd_prior and cwnd_epoch in segments and converts at the
edges.

How the RFC's per-ACK rules meet the engine's per-batch hooks: an ACK batch acknowledging N
bytes is N/SMSS "segments_acked" (RFC 9438 section 4.1 defines it as a decimal number), so

  - the Reno-friendly estimate (4.3) grows by alpha_cubic * (N/SMSS) / cwnd segments, and
  - the cubic region (4.4/4.5), where each segment-ACK adds (target - cwnd)/cwnd, grows by
    (N/SMSS) * (target - cwnd)/cwnd segments, i.e. N * (target - cwnd)/cwnd bytes with
    target and cwnd in bytes, capped at target (a batch of a whole window reaches target
    exactly, which is what one RTT of per-segment ACKs would do).

Time comes only from the ``now`` argument of the hooks; the RTT used to look ahead in the
target computation is the ``rtt`` argument (the engine passes SRTT), else the last one seen,
else 0 (no look-ahead: the least aggressive choice).

Loss recovery stays the engine's. On the third duplicate ACK ssthresh = max(max(cwnd,
flight_size) * beta_cubic, 2*SMSS) (section 4.6, cwnd as Linux; see ``_reduced``). Without
SACK the engine runs RFC 5681/6582 NewReno recovery, which counts flight as SND.MAX -
SND.UNA and so needs the window inflation of that algorithm: cwnd = ssthresh + 3*SMSS (RFC
5681 3.2 step 3), +SMSS per further duplicate ACK, deflation on partial ACKs (RFC 6582);
with SACK (RFC 6675) the engine sets cwnd = ssthresh itself and lets its pipe estimate pace
the retransmissions. At the full ACK cwnd = ssthresh (as Linux), and the congestion
avoidance stage that follows starts a new cubic epoch.

Application-limited flows (section 5.8): "CUBIC does not increase its congestion window if
a flow is application limited", and t must not include such periods (section 4.2). A batch
counts as cwnd-limited when the data outstanding before it came within
``app_limited_slack`` segments of cwnd (in slow start: at least half of cwnd, since slow
start may double cwnd in a round); otherwise cwnd does not grow and the time since the
previous ACK is taken out of t. After everything was acknowledged (the flow may have gone
idle), at most one RTT of the gap before the next ACK is counted. ``on_idle`` shifts the
epoch by the idle time as well.

Slow start is HyStart++'s (RFC 9406, section 4.10's SHOULD; the base class's
``hystart_ack``), which leaves the initial slow start on a rise in the round's minimum RTT
through Conservative Slow Start into congestion avoidance, where ``_start_epoch`` starts
the curve with K = 0 (W_max undefined). Not done: spurious congestion event undo
(section 4.9, needs detection the engine lacks), and PRR (RFC 6937) in recovery.
"""
from __future__ import annotations

import math
from typing import Optional

from fasttcp.tcp.congestion import ALGORITHMS, INFINITE_SSTHRESH, CongestionControl

__all__ = ["Cubic"]


def _cbrt(x: float) -> float:
    """Real cube root, negative for negative x."""
    return math.copysign(abs(x) ** (1.0 / 3.0), x)


class Cubic(CongestionControl):
    """CUBIC (RFC 9438). See the module docstring for how it maps onto the engine's hooks.

    Readable state (windows in segments, times in seconds): ``w_max``, ``k``, ``cwnd_prior``,
    ``cwnd_epoch``, ``t_epoch`` (None outside congestion avoidance), ``w_est`` and
    ``region`` (``"slow_start"``, ``"reno_friendly"``, ``"concave"``, ``"convex"``,
    ``"app_limited"``, ``"recovery"``, ``"ecn"`` or ``"timeout"``: what the last hook did).
    """

    name = "cubic"
    #: RFC 9438 section 4.10: CUBIC "SHOULD use" HyStart++ (RFC 9406) in slow start.
    hystart: bool = True

    #: RFC 9438 section 4.2: C, in segments / s**3.
    C: float = 0.4
    #: RFC 9438 section 4.6: multiplicative decrease factor.
    beta_cubic: float = 0.7
    #: RFC 9438 section 4.7: on by default (Linux too); the RFC says it SHOULD be disabled
    #: only where a single CUBIC flow has the path to itself, which a stack cannot know.
    fast_convergence: bool = True
    #: RFC 3465 2.3 L, in SMSS, for slow start (as in NewReno).
    abc_limit: int = 2
    #: A congestion-avoidance batch is cwnd-limited when flight_size + this many SMSS
    #: reaches cwnd (section 5.8; room for a partial segment held back by SWS avoidance).
    app_limited_slack: int = 3
    #: Section 4.6's ssthresh from flight_size alone (the RFC's pseudocode), not from the
    #: larger of cwnd and flight_size (cwnd as Linux, which the RFC allows with section
    #: 5.8's rule in place): see ``_reduced``.
    ssthresh_from_flight: bool = False

    # Per-connection state. Each starts at the class-level value below (all immutable), so
    # creating a policy per connection costs only what __init__ sets; an instance stores a
    # field once it changes.
    w_max: Optional[float] = None       # segments; None before any congestion event
    cwnd_prior: Optional[float] = None  # segments: cwnd before the last reduction
    k: float = 0.0                      # seconds
    t_epoch: Optional[float] = None     # start of the current CA stage
    cwnd_epoch: float = 0.0             # segments, cwnd at t_epoch
    w_est: float = 0.0                  # segments, the Reno-friendly estimate
    region: str = "slow_start"
    rtt: Optional[float] = None         # last RTT (SRTT) seen
    # Sub-byte remainder of congestion-avoidance growth (cwnd itself stays an int).
    _carry: float = 0.0
    # As in NewReno: L = 1*SMSS in the slow start after an RTO, and one ssthresh reduction
    # per timed-out segment (RFC 5681 3.1).
    _slow_start_after_rto: bool = False
    _timeout_pending: bool = False
    # Section 4.8: the first CA stage after a timeout uses K = 0, W_max = cwnd_epoch.
    _after_timeout: bool = False
    _in_recovery: bool = False
    # Section 5.8 bookkeeping: the previous ACK's time, whether it left nothing outstanding,
    # and the time of a batch already found cwnd-limited (later slow-path calls of the same
    # batch see a smaller flight_size).
    _last_ack_at: Optional[float] = None
    _drained: bool = False
    _limited_at: Optional[float] = None

    def __init__(self, mss: int, initial_window: Optional[int] = None) -> None:
        super().__init__(mss, initial_window)
        # RFC 9438 section 4.3: alpha_cubic = 3 * (1 - beta) / (1 + beta), Reno's
        # average rate for CUBIC's beta (AIMD(alpha, beta) friendliness).
        self.alpha_cubic: float = 3.0 * (1.0 - self.beta_cubic) / (1.0 + self.beta_cubic)

    # --- the cubic function ---------------------------------------------------------------
    def w_cubic(self, t: float) -> float:
        """RFC 9438 section 4.2 figure 1: W_cubic(t) = C*(t - K)**3 + W_max, in segments,
        for the current epoch (t seconds since t_epoch)."""
        w_max = self.w_max if self.w_max is not None else self.cwnd_epoch
        d = t - self.k
        return self.C * d * d * d + w_max

    @staticmethod
    def k_for(w_max: float, cwnd_epoch: float, c: float = 0.4) -> float:
        """RFC 9438 section 4.2 figure 2: K = cubic_root((W_max - cwnd_epoch) / C)."""
        return _cbrt((w_max - cwnd_epoch) / c)

    def _start_epoch(self, now: float) -> None:
        """The first ACK of a congestion avoidance stage (section 4.2's t_epoch)."""
        mss = self.mss
        self.t_epoch = now
        self.cwnd_epoch = (self.cwnd + self._carry) / mss
        # Section 4.3: "W_est is set equal to cwnd_epoch at the start of the congestion
        # avoidance stage."
        self.w_est = self.cwnd_epoch
        if self._after_timeout or self.w_max is None:
            # Section 4.8 (first CA stage after a timeout) and section 4.10 (CA reached
            # without a congestion event, W_max undefined): "K is set to 0, and W_max is set
            # to the congestion window size at the beginning of the current congestion
            # avoidance stage".
            self.w_max = self.cwnd_epoch
            self.k = 0.0
            if self.cwnd_prior is None:
                self.cwnd_prior = self.cwnd_epoch   # section 4.10: cwnd_prior = cwnd
        else:
            # Figure 2. If cwnd_epoch > W_max (rare: slow start ran past the old W_max) K
            # is negative and the curve, still through (0, cwnd_epoch), is already convex.
            self.k = _cbrt((self.w_max - self.cwnd_epoch) / self.C)
        self._after_timeout = False
        self._last_ack_at = now
        self._drained = False

    # --- hooks ----------------------------------------------------------------------------
    def _cwnd_limited(self, flight_size: int, now: float) -> bool:
        """Section 5.8: was this batch's sending limited by cwnd (not the application or
        the receive window)?"""
        if self._limited_at == now:
            return True
        if self.cwnd < self.ssthresh:
            limited = 2 * flight_size >= self.cwnd
        else:
            limited = flight_size + self.app_limited_slack * self.mss >= self.cwnd
        if limited:
            self._limited_at = now
        return limited

    def on_ack(self, acked: int, flight_size: int, now: float, rtt: Optional[float],
               acks: int = 1) -> None:
        if acked <= 0:
            return
        self._timeout_pending = False
        self._in_recovery = False
        if rtt is not None and rtt > 0:
            self.rtt = rtt
        limited = self._cwnd_limited(flight_size, now)
        drained = flight_size - acked <= 0

        if self.cwnd < self.ssthresh:
            # Slow start (section 4.10: Reno's, RFC 5681 3.1 with RFC 3465 byte counting).
            # Leaving CA for slow start (restart after idle) ends the cubic epoch.
            self.t_epoch = None
            self.region = "slow_start"
            if not limited:
                self.region = "app_limited"
                self._note_ack(now, drained)
                return
            per_ack = self.mss if self._slow_start_after_rto else self.abc_limit * self.mss
            grow = self._slow_start_growth(min(acked, per_ack * max(acks, 1)))
            room = self.ssthresh - self.cwnd
            if grow < room:
                self._set_cwnd(self.cwnd + grow)
                self._note_ack(now, drained)
                return
            # Reaching ssthresh ends slow start; the rest of the credit goes to the first
            # ACK of congestion avoidance.
            self._set_cwnd(self.ssthresh)
            self._carry = 0.0
            self._slow_start_after_rto = False
            acked = grow - room
            if acked <= 0:
                self._note_ack(now, drained)
                return

        if self.t_epoch is None:
            self._start_epoch(now)
        elif self._last_ack_at is not None and now > self._last_ack_at:
            # Section 4.2 / 5.8: t excludes application-limited periods (and idle ones).
            gap = now - self._last_ack_at
            if not limited:
                self.t_epoch += gap
            elif self._drained:
                rtt_now = self.rtt if self.rtt is not None else 0.0
                self.t_epoch += max(0.0, gap - rtt_now)
        self._note_ack(now, drained)
        if not limited:
            self.region = "app_limited"
            return
        self._congestion_avoidance(acked, now)

    def _note_ack(self, now: float, drained: bool) -> None:
        self._last_ack_at = now
        self._drained = drained

    def _congestion_avoidance(self, acked: int, now: float) -> None:
        mss = self.mss
        cwnd_b = self.cwnd + self._carry            # bytes, with the fractional part
        cwnd = cwnd_b / mss                         # segments
        segments_acked = acked / mss                # section 4.1: may be fractional
        # Section 4.3, figure 4: W_est += alpha_cubic * segments_acked / cwnd, with
        # alpha_cubic -> 1 once W_est has reached cwnd_prior (then it grows like Reno).
        prior = self.cwnd_prior if self.cwnd_prior is not None else self.cwnd_epoch
        alpha = 1.0 if self.w_est >= prior else self.alpha_cubic
        self.w_est += alpha * segments_acked / cwnd
        t = now - self.t_epoch
        w_max = self.w_max if self.w_max is not None else self.cwnd_epoch
        if self.w_cubic(t) < self.w_est:
            # Section 4.3: the Reno-friendly region, cwnd = W_est. (We never lower cwnd
            # here: outside a congestion event the window only grows, as in Linux.)
            self.region = "reno_friendly"
            new = max(cwnd, self.w_est)
        else:
            # Sections 4.4 (concave, cwnd < W_max) and 4.5 (convex, cwnd >= W_max): the
            # target one RTT ahead, bounded to [cwnd, 1.5*cwnd] (section 4.2, figure 3).
            self.region = "concave" if cwnd < w_max else "convex"
            rtt = self.rtt if self.rtt is not None else 0.0
            w = self.w_cubic(t + rtt)
            if w < cwnd:
                target = cwnd
            elif w > 1.5 * cwnd:
                target = 1.5 * cwnd
            else:
                target = w
            # (target - cwnd)/cwnd per segment ACKed, for segments_acked of them.
            new = cwnd + min(segments_acked * (target - cwnd) / cwnd, target - cwnd)
        new_b = new * mss
        whole = int(new_b)
        if whole > INFINITE_SSTHRESH:
            whole, new_b = INFINITE_SSTHRESH, float(INFINITE_SSTHRESH)
        self._carry = new_b - whole
        if whole != self.cwnd:
            self._set_cwnd(whole)

    def _reduced(self, flight_size: int) -> int:
        """Section 4.6's new ssthresh, at least 2 SMSS. The RFC's pseudocode takes
        flight_size * beta_cubic and lets an implementation use cwnd if it keeps cwnd from
        growing while the flow is not cwnd-limited, which section 5.8's rule here does
        (``_cwnd_limited``); Linux uses cwnd (bictcp_recalc_ssthresh). Here the larger of
        the two: a loss found when the flight is below cwnd (just after a recovery, while
        PRR held it there, or late in a slow-start round whose ACKs have mostly come)
        does not cut the window from that lower flight, which on a path with random loss
        made each episode cost far more than beta_cubic, and short transfers restart
        from a few segments; a flight above cwnd (it counts SACKed data, RFC 5681's
        FlightSize) still counts. ``ssthresh_from_flight`` takes flight_size alone."""
        base = flight_size
        if not self.ssthresh_from_flight:
            base = max(base, self.cwnd)
        return max(round(base * self.beta_cubic), 2 * self.mss)

    def _congestion_event(self, flight_size: int) -> None:
        """Section 4.6 multiplicative decrease with section 4.7 fast convergence."""
        cwnd = self.cwnd / self.mss
        # Section 4.7: a flow whose window did not get back to the last W_max is losing
        # ground to others: leave room by remembering less than it reached.
        if self.fast_convergence and self.w_max is not None and cwnd < self.w_max:
            self.w_max = cwnd * (1.0 + self.beta_cubic) / 2.0
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        self.ssthresh = self._reduced(flight_size)
        self.t_epoch = None
        self._carry = 0.0

    def on_enter_recovery(self, flight_size: int, now: float) -> None:
        self._congestion_event(flight_size)
        self._after_timeout = False
        self._in_recovery = True
        self._slow_start_after_rto = False
        # Section 4.6 "cwnd = max(ssthresh, 2)" plus the RFC 5681 3.2 step 3 inflation by
        # the three segments that left the network (the engine's recovery is NewReno's).
        self._set_cwnd(self.ssthresh + 3 * self.mss)
        self.region = "recovery"

    def on_ecn(self, flight_size: int, now: float) -> None:
        # Section 4.6: on ECE, as on a loss, ssthresh = flight_size * beta_cubic and
        # "cwnd = max(ssthresh, 2)" (no inflation: nothing is retransmitted), with section
        # 4.7's fast convergence; the next ACK in CA starts a new epoch.
        self._congestion_event(flight_size)
        self._after_timeout = False
        self._slow_start_after_rto = False
        self._set_cwnd(self.ssthresh)
        self._leave_css()
        self.region = "ecn"

    # on_dupack_in_recovery / on_partial_ack: the base class's NewReno recovery arithmetic.

    def on_exit_recovery(self, flight_size: int) -> None:
        # RFC 6582 3.2 step 5, full acknowledgment, option (1) (the base class). The CA stage
        # that follows starts a new epoch at its first ACK (t_epoch was cleared on entry).
        super().on_exit_recovery(flight_size)
        self._in_recovery = False
        self._carry = 0.0
        self.t_epoch = None

    def on_timeout(self, flight_size: int) -> None:
        # Section 4.8: "CUBIC follows Reno to reduce cwnd [RFC5681] but sets ssthresh using
        # beta_cubic (same as in Section 4.6)". A repeated timeout of the same segment keeps
        # ssthresh (RFC 5681 3.1, note after equation 4).
        if not self._timeout_pending:
            if not self._in_recovery:
                # cwnd is the real window here, not one inflated by recovery.
                self.cwnd_prior = self.cwnd / self.mss
                self.ssthresh = self._reduced(flight_size)
            elif self.ssthresh_from_flight:
                self.ssthresh = self._reduced(flight_size)
            # (else: during a recovery, ssthresh stays what its start set, as Linux's
            # tcp_enter_loss leaves snd_ssthresh alone in the Recovery state)
        self._timeout_pending = True
        self._in_recovery = False
        self._after_timeout = True          # next CA stage: K = 0, W_max = cwnd_epoch
        self.t_epoch = None
        self._carry = 0.0
        # RFC 5681 3.1: cwnd = LW = 1 SMSS; RFC 3465: L = 1*SMSS in the slow start after.
        self._set_cwnd(self.mss)
        self._slow_start_after_rto = True
        self.region = "timeout"

    def on_idle(self, idle_time: float, rto: float) -> None:
        # Sections 4.2/5.8: idle time is not part of t. RFC 5681 4.1's restart window
        # still applies (base class); if it drops cwnd below ssthresh, slow start follows
        # and a new epoch starts after it.
        if idle_time > 0:
            if self.t_epoch is not None:
                self.t_epoch += idle_time
            if self._last_ack_at is not None:
                self._last_ack_at += idle_time
            self._drained = False
        super().on_idle(idle_time, rto)

    def set_mss(self, mss: int) -> None:
        # W_max, W_est, cwnd_prior and cwnd_epoch are in segments and keep their value; the
        # base class rescales cwnd and ssthresh in segments too.
        super().set_mss(mss)
        self._carry = 0.0

    def __repr__(self) -> str:
        ssthresh = "inf" if self.ssthresh == INFINITE_SSTHRESH else self.ssthresh
        w_max = "-" if self.w_max is None else f"{self.w_max:.1f}"
        return (f"<Cubic cwnd={self.cwnd} ssthresh={ssthresh} mss={self.mss} "
                f"w_max={w_max} k={self.k:.3f} region={self.region}>")


# Registered here rather than in congestion.py's dict literal: congestion.py imports this
# module at its end, and this line runs whichever of the two is imported first.
ALGORITHMS[Cubic.name] = Cubic
