"""Loss detection and the congestion response during recovery: policies, in plain Python.

Division of labour (as in congestion.py): the connection keeps the bookkeeping in C
(``Tcb.rtxq``, a :class:`fasttcp.tcp._rack.RackQueue`: every transmission in flight with
its latest send time and SACKed / lost / retransmitted flags) and calls these policies once
per ACK while data is in flight (the slow path; in-order pure ACKs never need them, nor an
ACK that leaves nothing outstanding) and when their timer fires. A connection makes its
policy at the first ACK that needs it.

- :class:`Rack` (the default, RFC 8985): time-based loss detection with a reordering
  window that adapts with D-SACK, plus tail-loss probes (TLP).
- :class:`DupThresh` (RFC 6675 IsLost): three SACKed segments above a hole, kept for
  comparison (``Settings.loss_detection = "dupthresh"``).
- :class:`Prr` (RFC 6937): how much fast recovery may send per ACK.

A policy marks segments lost in ``conn.rtxq``; the connection enters recovery when any is,
and retransmits them by RFC 6675 NextSeg.
"""
from __future__ import annotations

import abc
from typing import Dict, Optional, Tuple, Type

from fasttcp.tcp.congestion import resolve_policy

__all__ = ["LossDetection", "Rack", "DupThresh", "Prr", "LOSS_DETECTION", "resolve_loss"]

# RFC 8985 7.2: WCDelAckT, the worst-case delayed-ACK time added to the PTO when one
# segment is in flight (the receiver may hold its ACK that long), is the connection's
# minimum RTO (Settings.min_rto, 200 ms by default: the RFC's value), as Linux
# tcp_schedule_loss_probe adds tcp_rto_min.
#: Linux tcp_schedule_loss_probe adds TCP_TIMEOUT_MIN (2 jiffies: 2 ms) to 2 * SRTT with
#: more in flight: a probe never races an ACK due at 2 * SRTT (or leaves at once when the
#: RTT measures 0).
TLP_MIN_T = 0.002


class LossDetection(abc.ABC):
    """Marks segments lost in ``conn.rtxq`` (called per ACK and on its timer)."""

    name = "abstract"
    #: Send tail-loss probes (RFC 8985 7).
    tlp = False

    def on_ack(self, conn, now: float, dsack: bool) -> Tuple[int, Optional[float]]:
        """After an ACK's SACK blocks and cumulative ACK were taken into ``conn.rtxq``:
        mark what is lost; return (segments newly marked, when to call
        :meth:`on_ack` again from the timer, or None)."""
        return self.detect(conn, now)

    @abc.abstractmethod
    def detect(self, conn, now: float) -> Tuple[int, Optional[float]]:
        """Mark lost segments now (also from the loss timer)."""

    def on_exit_recovery(self) -> None:  # noqa: B027 (optional hook)
        """Fast or RTO recovery ended."""

    @property
    def reo_wnd_mult(self) -> int:
        return 1


class DupThresh(LossDetection):
    """RFC 6675 IsLost (section 4): an unSACKed segment is lost once DupThresh (3)
    discontiguous SACKed blocks, or more than (DupThresh - 1) * SMSS SACKed bytes, lie
    above it. No timer."""

    name = "dupthresh"

    def detect(self, conn, now: float) -> Tuple[int, Optional[float]]:
        edge = conn._lost_boundary()
        if edge <= conn.snd_una:
            return 0, None
        return conn.rtxq.mark_lost_below(edge), None


class Rack(LossDetection):
    """RACK-TLP (RFC 8985): a segment is lost when one sent after it was delivered and
    RACK.rtt + RACK.reo_wnd have passed since it was sent (section 6.2)."""

    name = "rack"
    tlp = True

    def __init__(self) -> None:
        # RFC 8985 6.1 / 6.2 step 4: the D-SACK-driven multiplier of the window.
        self._mult = 1
        self._persist = 0
        self._dsack_round: Optional[int] = None

    @property
    def reo_wnd_mult(self) -> int:
        return self._mult

    def on_ack(self, conn, now: float, dsack: bool) -> Tuple[int, Optional[float]]:
        # Section 6.2 step 4 (RACK_update_reo_wnd), the D-SACK part: grow the window by
        # one min_RTT/4 per round trip that sees a D-SACK; keep it for 16 recoveries.
        if self._dsack_round is not None and conn.snd_una >= self._dsack_round:
            self._dsack_round = None
        if dsack and self._dsack_round is None:
            self._dsack_round = conn.snd_nxt
            self._mult += 1
            self._persist = 16
        if dsack:
            # A D-SACK says a segment arrived twice: with a retransmission, the original
            # was late, not lost, so reordering was seen (as Linux tcp_sacktag_one,
            # which counts a D-SACKed retransmission as reordering).
            conn.rtxq.reordering_seen = True
        return self.detect(conn, now)

    def on_exit_recovery(self) -> None:
        if self._persist > 0:
            self._persist -= 1
            if self._persist == 0:
                self._mult = 1

    def reo_wnd(self, conn) -> float:
        """Section 6.2 step 4: 0 while no reordering was seen and either in recovery or
        DupThresh segments are SACKed (then the classic rule has spoken); else
        min(mult * min_RTT / 4, SRTT)."""
        q = conn.rtxq
        if not q.reordering_seen:
            if conn.in_recovery or conn._sacked_bytes(conn.snd_una, conn.snd_max) \
                    >= 3 * conn.mss:
                return 0.0
        rtt = conn.rtt
        min_rtt = rtt.min_rtt if rtt.min_rtt < 1e299 else 0.0
        srtt = rtt.srtt if rtt.srtt is not None else min_rtt
        return min(self._mult * min_rtt / 4, srtt)

    def detect(self, conn, now: float) -> Tuple[int, Optional[float]]:
        lost, timeout = conn.rtxq.detect_loss(now, self.reo_wnd(conn))
        return lost, (now + timeout if timeout > 0 else None)


class Prr:
    """Proportional Rate Reduction (RFC 6937 section 3, as Linux tcp_cwnd_reduction):
    during fast recovery, sends in proportion to what is delivered, so the window comes
    down to ssthresh smoothly, one segment at the start and then paced by the ACKs."""

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.delivered = 0          # prr_delivered
        self.out = 0                # prr_out
        self.recover_fs = 0         # RecoverFS

    def start(self, recover_fs: int, mss: int) -> None:
        """Entering recovery: RecoverFS = SND.NXT - SND.UNA (section 3)."""
        self.mss = mss
        self.delivered = 0
        self.out = 0
        self.recover_fs = max(recover_fs, 1)

    def sent(self, n: int) -> None:
        """prr_out += data sent (new or retransmitted)."""
        self.out += n

    def on_ack(self, delivered: int, pipe: int, ssthresh: int, una_advanced: bool) -> int:
        """The bytes recovery may send after this ACK (sndcnt): cwnd becomes pipe +
        sndcnt."""
        self.delivered += delivered
        if pipe > ssthresh:
            # Proportional part: sndcnt = CEIL(prr_delivered * ssthresh / RecoverFS)
            # - prr_out.
            sndcnt = -(-self.delivered * ssthresh // self.recover_fs) - self.out
        else:
            # PRR-SSRB (slow-start reduction bound): at most ssthresh - pipe, growing by
            # what was delivered plus one segment (Linux: when SND.UNA advanced).
            limit = max(self.delivered - self.out, delivered)
            if una_advanced:
                limit += self.mss
            sndcnt = min(ssthresh - pipe, limit)
        # Linux: force the fast retransmit when recovery starts (prr_out == 0).
        return max(sndcnt, 0 if self.out else self.mss)


#: Loss detection policies by name, for ``Settings.loss_detection``.
LOSS_DETECTION: Dict[str, Type[LossDetection]] = {Rack.name: Rack, DupThresh.name: DupThresh}


def resolve_loss(spec) -> Type[LossDetection]:
    """The policy class for a name in :data:`LOSS_DETECTION` or a LossDetection subclass."""
    return resolve_policy(spec, LOSS_DETECTION, LossDetection, "loss detection")
