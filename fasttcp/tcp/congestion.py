"""Congestion control policies: the cwnd/ssthresh arithmetic, in plain Python.

Division of labour:
  - The connection (engine) owns loss *detection*: it counts duplicate ACKs, decides when to
    fast-retransmit (RFC 5681 3.2 step 2, RFC 6582 3.2 step 2's "recover" check), keeps the
    recovery point ``recover``, tells full from partial ACKs (RFC 6582 3.2 step 5), runs the
    retransmission timer, and never calls ``on_ack`` for the SYN or SYN-ACK (RFC 5681 3.1:
    they "MUST NOT increase the size of the congestion window").
  - The policy owns ``cwnd`` and ``ssthresh`` (bytes) and the rules that change them. The
    engine may send while ``flight_size < cwnd`` (and the peer's window allows).

Hooks are called once per ACK *batch* (all the ACKs of one received batch for one
connection), not per byte or per segment; ``acked`` is the total newly acknowledged, and
``acks`` how many ACK segments it came from, so per-ACK limits (RFC 3465's L) still hold.
``now`` and ``rtt`` are passed so that time-based policies (CUBIC, RFC 9438) fit the same
interface; NewReno ignores them.

To write your own policy, subclass :class:`CongestionControl`, set ``name``, implement the
abstract hooks, and pass the class (or register it in :data:`ALGORITHMS`).
"""
from __future__ import annotations

import abc
import math
from typing import Any, Dict, Optional, Type, Union

from fasttcp.tcp._hystart import CSS_DONE, HyStartRounds

__all__ = ["CongestionControl", "NewReno", "ALGORITHMS", "INFINITE_SSTHRESH",
           "rfc6928_initial_window", "resolve"]

#: RFC 5681 3.1: "The initial value of ssthresh SHOULD be set arbitrarily high (e.g., to the
#: size of the largest possible advertised window)". 2**31 - 1 is above any scaled window
#: (RFC 7323: at most 2**30).
INFINITE_SSTHRESH = 0x7FFFFFFF


def rfc6928_initial_window(mss: int) -> int:
    """RFC 6928 section 2: IW = min(10*MSS, max(2*MSS, 14600)) bytes."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl(abc.ABC):
    """A congestion control policy for one connection.

    Attributes the engine reads: ``cwnd`` and ``ssthresh`` (bytes), ``mss`` (the SMSS).
    ``initial_window`` is the IW in bytes (RFC 6928 unless given).
    """

    #: Short lowercase name, as used in settings (``congestion="newreno"``).
    name: str = "abstract"

    #: HyStart++ (RFC 9406) in the initial slow start. The policy's default; the host sets
    #: it per connection when ``Settings.hystart`` says True or False.
    hystart: bool = False

    # RFC 9406 section 4.3 constants (times in seconds). L is not here: slow start keeps
    # RFC 3465's L = 2 (``abc_limit``), below 4.3's L = 8 for unpaced senders.
    HS_MIN_RTT_THRESH: float = 0.004
    HS_MAX_RTT_THRESH: float = 0.016
    HS_MIN_RTT_DIVISOR: int = 8
    HS_N_RTT_SAMPLE: int = 8
    HS_CSS_GROWTH_DIVISOR: int = 4
    HS_CSS_ROUNDS: int = 5

    # HyStart++ state (RFC 9406 section 4.2): a fasttcp.tcp._hystart.HyStartRounds (C),
    # made at the first slow-start ACK (hystart_rounds()), so an idle connection's policy
    # stays small. The engine feeds it per ACK batch; the policy answers its decisions.
    _hs: Optional[HyStartRounds] = None

    def __init__(self, mss: int, initial_window: Optional[int] = None) -> None:
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss}")
        if initial_window is not None and initial_window < mss:
            raise ValueError(f"initial_window ({initial_window}) is less than one segment")
        self.mss: int = mss
        self._fixed_iw: Optional[int] = initial_window
        self._syn_retransmitted = False
        self.initial_window: int = (initial_window if initial_window is not None
                                    else rfc6928_initial_window(mss))
        self.cwnd: int = self.initial_window
        self.ssthresh: int = INFINITE_SSTHRESH
        # True until the first change of cwnd: set_mss() then simply recomputes the IW.
        self._pristine = True

    # --- hooks the engine calls -----------------------------------------------------------
    @abc.abstractmethod
    def on_ack(self, acked: int, flight_size: int, now: float, rtt: Optional[float],
               acks: int = 1) -> None:
        """New data was cumulatively acknowledged outside of fast recovery.

        ``acked``: bytes newly acknowledged by the batch; ``flight_size``: bytes that were
        outstanding before the batch; ``now``: the current time (s); ``rtt``: an RTT sample
        taken from the batch, or None; ``acks``: how many ACK segments were coalesced.
        """

    @abc.abstractmethod
    def on_enter_recovery(self, flight_size: int, now: float) -> None:
        """The third duplicate ACK arrived and the engine fast-retransmits (RFC 5681 3.2
        steps 2-3, RFC 6582 3.2 step 3). ``flight_size`` is the data outstanding."""

    # The engine's fast recovery without SACK is NewReno's (RFC 5681 3.2, RFC 6582) for
    # every policy, so its window arithmetic lives here; a policy extends it as needed.

    def on_dupack_in_recovery(self) -> None:
        """A further duplicate ACK during fast recovery (RFC 5681 3.2 step 4 / RFC 6582
        3.2 step 4): cwnd += SMSS, a segment has left the network."""
        self._set_cwnd(self.cwnd + self.mss)

    def on_partial_ack(self, acked: int) -> None:
        """An ACK during fast recovery acknowledged ``acked`` new bytes but not all data up
        to ``recover`` (RFC 6582 3.2 step 5, partial acknowledgment): "deflate the congestion
        window by the amount of new data acknowledged ... If the partial ACK acknowledges at
        least one SMSS of new data, then add back SMSS bytes". Never below one SMSS."""
        self._timeout_pending = False
        cwnd = self.cwnd - acked
        if acked >= self.mss:
            cwnd += self.mss
        self._set_cwnd(max(cwnd, self.mss))

    def on_exit_recovery(self, flight_size: int) -> None:
        """A full ACK ended fast recovery (RFC 6582 3.2 step 5); ``flight_size`` is what is
        outstanding after it. Option (2), cwnd = ssthresh, as Linux does
        (tcp_end_cwnd_reduction: cwnd = ssthresh on leaving Recovery or CWR): option (1),
        min(ssthresh, max(FlightSize, SMSS) + SMSS), leaves 2 segments when nothing is
        in flight and makes the next write wait round trips to regrow. With PRR (RFC 6937)
        the window was already brought down to ssthresh during recovery, so no burst
        follows; the one that can follow an idle exit is the burst Linux sends too."""
        self._timeout_pending = False
        self._set_cwnd(self.ssthresh)

    @abc.abstractmethod
    def on_timeout(self, flight_size: int) -> None:
        """The retransmission timer expired (RFC 5681 3.1, equation 4; RFC 6582 3.2 step 6).
        ``flight_size`` is what was outstanding when it fired."""

    def on_ecn(self, flight_size: int, now: float) -> None:
        """An ACK carried ECE (RFC 3168 6.1.2); the engine calls this at most once per
        window of data and not during loss recovery. ``flight_size`` is what is
        outstanding. "the TCP source halves the congestion window cwnd and reduces the
        slow start threshold ssthresh", as for a loss but with nothing to retransmit:
        ssthresh = max(FlightSize / 2, 2*SMSS) (RFC 5681 equation 4), cwnd = ssthresh.
        It also ends HyStart++ (RFC 9406 4.2: exit on ECN-marking)."""
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self._set_cwnd(self.ssthresh)
        self._leave_css()

    def on_idle(self, idle_time: float, rto: float) -> None:
        """About to send after ``idle_time`` seconds without sending (RFC 5681 4.1).

        "a TCP SHOULD set cwnd to no more than RW before beginning transmission if the TCP
        has not sent data in an interval exceeding the retransmission timeout", with
        RW = min(IW, cwnd). ssthresh is left alone (RFC 5681 does not change it).
        """
        if idle_time > rto:
            restart_window = min(self.initial_window, self.cwnd)
            if restart_window < self.cwnd:
                self._set_cwnd(restart_window)

    def on_syn_retransmitted(self) -> None:
        """The SYN or SYN-ACK had to be retransmitted. RFC 5681 3.1: "If the SYN or SYN/ACK
        is lost, the initial window used by a sender after a correctly transmitted SYN MUST be
        one segment consisting of at most SMSS bytes." Call before any data is sent."""
        self._syn_retransmitted = True
        self.initial_window = self.mss
        self._set_cwnd(self.mss)

    def set_mss(self, mss: int) -> None:
        """The SMSS changed (MSS option, path MTU discovery).

        Before cwnd has moved, the IW is recomputed for the new size (RFC 6928's formula is
        not linear in the MSS). Afterwards cwnd and a finite ssthresh keep their size in
        segments, as Linux does (cwnd is counted in packets there): a PMTU drop from 1460 to
        1000 keeps the number of segments in flight, not the bytes.
        """
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss}")
        old = self.mss
        if mss == old:
            return
        self.mss = mss
        if self._syn_retransmitted:
            self.initial_window = mss
        elif self._fixed_iw is None:
            self.initial_window = rfc6928_initial_window(mss)
        else:
            self.initial_window = max(self._fixed_iw, mss)
        if self._pristine:
            self.cwnd = self.initial_window
            return
        self.cwnd = max(self.cwnd * mss // old, mss)
        if self.ssthresh != INFINITE_SSTHRESH:
            self.ssthresh = max(self.ssthresh * mss // old, 2 * mss)

    def hystart_rounds(self) -> Optional[HyStartRounds]:
        """The HyStart++ bookkeeping (RFC 9406 4.2, in C), made on first use with this
        class's RFC 9406 4.3 constants. The engine feeds it per ACK batch without calling
        :meth:`hystart_ack`, and calls :meth:`hystart_exit` when CSS ends. None when a
        subclass overrides :meth:`hystart_ack`: the engine calls that per batch instead."""
        if type(self).hystart_ack is not CongestionControl.hystart_ack:
            return None
        return self._hystart_state()

    def _hystart_state(self) -> HyStartRounds:
        if self._hs is None:
            self._hs = HyStartRounds(self.HS_N_RTT_SAMPLE, self.HS_MIN_RTT_THRESH,
                                     self.HS_MAX_RTT_THRESH, self.HS_MIN_RTT_DIVISOR,
                                     self.HS_CSS_ROUNDS)
        return self._hs

    def hystart_ack(self, ack: int, snd_nxt: int, rtt: Optional[float], samples: int) -> None:
        """HyStart++ (RFC 9406 section 4.2) for one ACK batch in slow start, before
        :meth:`on_ack`: ``ack`` is the new SND.UNA (send offset), ``snd_nxt`` the highest
        offset sent, ``rtt`` the smallest RTT sample of the batch (None: none) and
        ``samples`` how many ACKs of the batch carried one. Called only when ``hystart`` is
        on. Decides between slow start, Conservative Slow Start (CSS) and congestion
        avoidance; :meth:`_slow_start_growth` applies CSS's slower growth. (The rounds,
        RTT samples and the section 4.2 tests are ``HyStartRounds.take``'s, in C.)"""
        hs = self._hystart_state()
        if hs.done:
            return
        if self.ssthresh != INFINITE_SSTHRESH:
            # Section 4.2: "An implementation SHOULD use HyStart++ only for the initial
            # slow start ... and fall back to using standard slow start for the remainder
            # of the connection lifetime." A loss (or ECN-CE) set ssthresh: both slow start
            # and CSS are over (section 4.2: exit on loss or ECN-marking).
            hs.end()
            return
        if hs.take(ack, snd_nxt, rtt if rtt is not None else -1.0, samples) & CSS_DONE:
            self.hystart_exit()

    def hystart_exit(self) -> None:
        """HyStart++ completed CSS_ROUNDS rounds of Conservative Slow Start (RFC 9406 4.2):
        "enter congestion avoidance by setting the ssthresh to the current cwnd"."""
        self.ssthresh = max(self.cwnd, 2 * self.mss)

    # RFC 9406 4.2 state, read from the bookkeeping (HyStartRounds) when there is one.
    @property
    def hs_window_end(self) -> Optional[int]:
        """windowEnd (a send offset); None before the first round."""
        hs = self._hs
        return hs.window_end if hs is not None and hs.window_end >= 0 else None

    @property
    def hs_last_round_min_rtt(self) -> float:
        return self._hs.last_round_min_rtt if self._hs is not None else math.inf

    @property
    def hs_current_round_min_rtt(self) -> float:
        return self._hs.current_round_min_rtt if self._hs is not None else math.inf

    @property
    def hs_rtt_sample_count(self) -> int:
        return self._hs.rtt_sample_count if self._hs is not None else 0

    @property
    def hs_css_baseline_min_rtt(self) -> float:
        """cssBaselineMinRtt: finite while in CSS."""
        return self._hs.css_baseline_min_rtt if self._hs is not None else math.inf

    @hs_css_baseline_min_rtt.setter
    def hs_css_baseline_min_rtt(self, value: float) -> None:
        self._hystart_state().css_baseline_min_rtt = value

    @property
    def hs_css_rounds(self) -> int:
        return self._hs.css_rounds if self._hs is not None else 0

    @property
    def hs_done(self) -> bool:
        """The initial slow start is over (HyStart++ is not called again)."""
        return self._hs is not None and self._hs.done

    @hs_done.setter
    def hs_done(self, value: bool) -> None:
        self._hystart_state().done = value

    def _leave_css(self) -> None:
        """A congestion event (ECN-CE) ends CSS (RFC 9406 4.2)."""
        if self._hs is not None:
            self._hs.css_baseline_min_rtt = math.inf

    @property
    def in_css(self) -> bool:
        """In HyStart++'s Conservative Slow Start (RFC 9406 section 4.2)."""
        hs = self._hs
        return (hs is not None and hs.css_baseline_min_rtt != math.inf
                and self.ssthresh == INFINITE_SSTHRESH)

    def _slow_start_growth(self, grow: int) -> int:
        """Slow start's cwnd increase for a batch, divided by CSS_GROWTH_DIVISOR in CSS
        (RFC 9406 4.2: cwnd += min(N, L*SMSS) / CSS_GROWTH_DIVISOR)."""
        hs = self._hs
        if (hs is not None and hs.css_baseline_min_rtt != math.inf
                and self.ssthresh == INFINITE_SSTHRESH):
            return grow // self.HS_CSS_GROWTH_DIVISOR
        return grow

    # --- helpers --------------------------------------------------------------------------
    @property
    def in_slow_start(self) -> bool:
        """RFC 5681 3.1: slow start while cwnd < ssthresh (at equality we use congestion
        avoidance, which the RFC allows)."""
        return self.cwnd < self.ssthresh

    def _set_cwnd(self, cwnd: int) -> None:
        self.cwnd = cwnd
        self._pristine = False

    def __repr__(self) -> str:
        ssthresh = "inf" if self.ssthresh == INFINITE_SSTHRESH else self.ssthresh
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={ssthresh} mss={self.mss}>"


class NewReno(CongestionControl):
    """Reno with the NewReno modification to fast recovery (RFC 5681 + RFC 6582).

    Growth is byte counting everywhere, which is exact for batched ACKs:
      - slow start (RFC 5681 3.1, RFC 3465 2.2/2.3): cwnd += min(N, L) per ACK, N the bytes
        newly acknowledged, L = 2*SMSS (``abc_limit``; 3465 allows at most 2), and L = 1*SMSS
        in the slow start that follows a retransmission timeout (RFC 3465: after an RTO one
        cumulative ACK can cover much data that had arrived before, and 2*SMSS per ACK would
        turn it into a burst; L=1*SMSS is also the standards-track RFC 5681 value);
      - congestion avoidance (RFC 5681 3.1's RECOMMENDED byte counting = RFC 3465 2.1):
        bytes_acked accumulates the acknowledged bytes; when it reaches cwnd it is reduced by
        cwnd and cwnd grows by SMSS, i.e. one SMSS per window of data acknowledged, about
        one SMSS per RTT. We use this rather than equation 3 (cwnd += SMSS*SMSS/cwnd per ACK)
        because equation 3 depends on how many ACKs there were (5681 3.1 notes it is less
        aggressive than allowed when the receiver acknowledges every other segment), and we
        see ACKs coalesced into batches.
    """

    name = "newreno"

    #: RFC 3465 2.3: L, the most one ACK may grow cwnd by in slow start, in SMSS. "MAY use
    #: L=2*SMSS ... MUST NOT use L > 2*SMSS".
    abc_limit: int = 2

    def __init__(self, mss: int, initial_window: Optional[int] = None) -> None:
        super().__init__(mss, initial_window)
        # RFC 3465 2.1: bytes acknowledged in congestion avoidance, not yet turned into cwnd.
        self.bytes_acked = 0
        # In the slow start that follows an RTO (L = 1*SMSS).
        self._slow_start_after_rto = False
        # A timeout happened and no new data has been acknowledged since: a further timeout
        # is the same segment timing out again, which must not lower ssthresh again.
        self._timeout_pending = False

    def on_ack(self, acked: int, flight_size: int, now: float, rtt: Optional[float],
               acks: int = 1) -> None:
        if acked <= 0:
            return
        self._timeout_pending = False
        if self.cwnd < self.ssthresh:
            # Slow start, RFC 5681 3.1 equation 2 generalised by RFC 3465 2.2:
            #   cwnd += min(N, L*SMSS) for each ACK.
            per_ack = self.mss if self._slow_start_after_rto else self.abc_limit * self.mss
            grow = self._slow_start_growth(min(acked, per_ack * max(acks, 1)))
            room = self.ssthresh - self.cwnd
            if grow < room:
                self._set_cwnd(self.cwnd + grow)
                return
            # Reaching ssthresh ends slow start; the credit beyond it counts toward
            # congestion avoidance instead of overshooting ssthresh.
            self._set_cwnd(self.ssthresh)
            self._slow_start_after_rto = False
            acked = grow - room
            if acked <= 0:
                return
        # Congestion avoidance, RFC 3465 2.1 / RFC 5681 3.1 byte counting. At most one SMSS
        # per call: "cwnd MUST NOT be increased by more than SMSS bytes per RTT" (5681 3.1).
        self.bytes_acked += acked
        if self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self._set_cwnd(self.cwnd + self.mss)

    def on_enter_recovery(self, flight_size: int, now: float) -> None:
        # RFC 5681 3.2 step 2 / RFC 6582 3.2 step 3: ssthresh = max(FlightSize / 2, 2*SMSS)
        # (equation 4).
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        # RFC 5681 3.2 step 3: cwnd = ssthresh + 3*SMSS, "artificially inflates the
        # congestion window by the number of segments (three) that have left the network".
        self._set_cwnd(self.ssthresh + 3 * self.mss)
        self.bytes_acked = 0
        self._slow_start_after_rto = False

    def on_exit_recovery(self, flight_size: int) -> None:
        super().on_exit_recovery(flight_size)
        self.bytes_acked = 0

    def on_ecn(self, flight_size: int, now: float) -> None:
        super().on_ecn(flight_size, now)
        self.bytes_acked = 0
        self._slow_start_after_rto = False

    def on_timeout(self, flight_size: int) -> None:
        # RFC 5681 3.1: when loss is detected by the retransmission timer "and the given
        # segment has not yet been resent by way of the retransmission timer", ssthresh =
        # max(FlightSize / 2, 2*SMSS) (equation 4); on later timeouts of the same segment
        # ssthresh is held constant (5681 3.1, the note after equation 4).
        if not self._timeout_pending:
            self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self._timeout_pending = True
        # "upon a timeout ... cwnd MUST be set to no more than the loss window, LW, which
        # equals 1 full-sized segment".
        self._set_cwnd(self.mss)
        self.bytes_acked = 0
        self._slow_start_after_rto = True


#: Policies by name, for ``Settings.congestion``.
ALGORITHMS: Dict[str, Type[CongestionControl]] = {
    NewReno.name: NewReno,
}

# CUBIC (RFC 9438) lives in cubic.py and adds itself to ALGORITHMS when imported. A plain
# ``import`` (not ``from ... import``) also works when cubic.py happens to be imported first.
import fasttcp.tcp.cubic  # noqa: E402,F401  (registers "cubic")


def resolve_policy(spec: Any, registry: Dict[str, type], base: type, what: str) -> type:
    """The policy class for ``spec``: a name in ``registry`` (any case) or a subclass of
    ``base``. ``what`` names the kind of policy in the errors."""
    if isinstance(spec, str):
        try:
            return registry[spec.lower()]
        except KeyError:
            raise ValueError(f"unknown {what} {spec!r}; "
                             f"known: {', '.join(sorted(registry))}") from None
    if isinstance(spec, type) and issubclass(spec, base):
        return spec
    raise TypeError(f"{what} must be a name or a {base.__name__} subclass, got {spec!r}")


def resolve(spec: Union[str, Type[CongestionControl]]) -> Type[CongestionControl]:
    """The policy class for a name in :data:`ALGORITHMS` or a CongestionControl subclass."""
    return resolve_policy(spec, ALGORITHMS, CongestionControl, "congestion control")
