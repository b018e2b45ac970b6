# cython: language_level=3, boundscheck=True, wraparound=True, cdivision=False
"""One TCP connection: the RFC 9293 state machine, user calls, timers and output.

Sans-IO: every method that needs the time takes ``now``; segments come in as parsed
:class:`fasttcp.wire.Packet` views and leave as IPv4 packets (bytes) from :meth:`_output`.

Sequence numbers are kept as unbounded *offsets* from the initial sequence numbers, so the
arithmetic below never wraps: on the send side offset 0 is our SYN (ISS), data byte ``k`` of
the stream is offset ``1 + k``, and our FIN follows the last byte. The receive side mirrors
this from the peer's IRS. 32-bit sequence numbers exist only at the wire boundary
(``_snd_seq``, ``_rcv_seq`` and the conversions in :meth:`on_segment`).

The variables are the Tcb's (tcb.pxd). The state changes only in ``_transition``, by the
table in transitions.pyx. The host is reached only through the HostServices interface
(host_services.pxd).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fasttcp.storage import SendRing
from fasttcp.storage._reasm cimport OooBudget, Reassembler
from fasttcp.wire._wire cimport (IPTOS_ECN_CE, IPTOS_ECN_MASK, OPT_MSS, OPT_SACK,
                                 OPT_SACK_PERM, OPT_TS, OPT_WSCALE, Packet, TH_ACK as ACK,
                                 TH_CWR as CWR, TH_ECE as ECE, TH_FIN as FIN, TH_RST as RST,
                                 TH_SYN as SYN)
from fasttcp.tcp._hystart cimport HS_CSS_DONE, HyStartRounds
from fasttcp.tcp.host_services cimport HostServices
from fasttcp.tcp._timewait cimport make_time_wait
from fasttcp.tcp.host_services cimport (
    COUNT_ACK_AT_WINDOW_EDGE, COUNT_CHALLENGE_ACKS_OUT, COUNT_CHALLENGE_ACKS_SUPPRESSED,
    COUNT_DROP_ACK_TOO_OLD, COUNT_DROP_ACK_UNSENT, COUNT_DROP_BAD_ACK,
    COUNT_DROP_MISSING_TIMESTAMP,
    COUNT_DROP_OOO_HOLE_LIMIT, COUNT_DROP_OUT_OF_WINDOW, COUNT_DROP_PAWS,
    COUNT_ECN_CE_RECEIVED, COUNT_ECN_ECE_RECEIVED, COUNT_ECN_NEGOTIATED, COUNT_ECN_REDUCTIONS,
    COUNT_FAST_RETRANSMITS, COUNT_FIN_WAIT_2_ORPHANS, COUNT_HOLE_FILLS_IN,
    COUNT_ICMP_IGNORED_SEQ, COUNT_ICMP_SOFT_ERRORS, COUNT_INVALID_ACKS_SUPPRESSED,
    COUNT_KEEPALIVE_PROBES, COUNT_OOO_SEGMENTS_IN, COUNT_PMTU_BLACK_HOLES,
    COUNT_PMTU_UPDATES, COUNT_PURE_ACKS_OUT,
    COUNT_RST_IN, COUNT_RSTS_OUT, COUNT_SACK_RECOVERIES, COUNT_SYN_ACKS_OUT,
    COUNT_SYNS_OUT, COUNT_TIME_WAIT_OVERFLOW, COUNT_TIME_WAIT_REOPENED, COUNT_TIMEOUTS,
    COUNT_TRIMMED_TO_WINDOW,
    COUNT_TS_RECENT_EXPIRED, COUNT_WINDOW_PROBES)
from fasttcp.tcp.host_services cimport (
    COUNT_DROP_OOO_BUDGET, COUNT_OOO_PRUNES, COUNT_ORPHAN_PROBE_ABORTS,
    COUNT_ORPHAN_RETRY_ABORTS, COUNT_ORPHANS_RESET, COUNT_PERSIST_TIMEOUTS,
    COUNT_USER_TIMEOUTS)
from fasttcp.tcp.host_services cimport (
    COUNT_REORDERING, COUNT_SEGMENTS_MARKED_LOST, COUNT_SPURIOUS_RTX_UNDONE,
    COUNT_TLP_LOSSES_REPAIRED, COUNT_TLP_PROBES)
from fasttcp.tcp.host_services cimport COUNT_FRTO_SPURIOUS_RTOS
from fasttcp.tcp.errors import (ConnectionAborted, ConnectionClosed, ConnectionRefused,
                                ConnectionReset, ConnectionTimedOut)
from fasttcp.tcp.congestion import INFINITE_SSTHRESH as _INFINITE_SSTHRESH
from fasttcp.tcp.loss import TLP_MIN_T, Prr, resolve_loss
from fasttcp.tcp.rtt import RttEstimator
from fasttcp.tcp.transitions import TcpEvent
from fasttcp.tcp.states import State


COMPILED = True
MASK = 0xFFFFFFFF
# RFC 7323 5.5: TS.Recent is invalid after 24 days of idleness (2**31 ms at the fastest
# allowed timestamp clock of 1 ms is 24.8 days).
cdef double TS_RECENT_MAX_IDLE = 24 * 86400.0

# Settings.loss_detection -> its LossDetection class: what a connection that has not made
# its policy yet (Connection._loss_policy, at the first ACK that needs it) asks of the
# class, without a Python call per ACK (RFC 8985 7.2's PTO is armed per ACK batch).
cdef dict _loss_classes = {}


cdef object _loss_class(object spec):
    cls = _loss_classes.get(spec)
    if cls is None:
        cls = _loss_classes[spec] = resolve_loss(spec)
    return cls


cpdef enum:
    LR_TLP = 1                  # the loss timer (Tcb._lr_at) is the TLP's PTO (RFC 8985 7.2)
    LR_REO = 2                  # ... RACK's reordering timer (RFC 8985 6.2 step 5)
    # F-RTO (RFC 5682; Linux tcp_process_loss), Tcb.frto: 0 off, or the step it is in
    FRTO_WAIT = 1               # step 2: SND.UNA was resent, waiting for the ACK of it
    FRTO_NEW_SENT = 2           # step 2b: new data sent, the go-back-N waits for one ACK
    FRTO_WATCH = 3              # step 3: resending again, but an original's ACK still undoes
    TS_OPTION_SPACE = 12        # NOP NOP + the 10-byte timestamps option, on every segment
    DEFAULT_PEER_MSS = 536      # RFC 9293 3.7.1 / RFC 6691: when the SYN has no MSS option
    MAX_WSCALE = 14             # RFC 7323 2.3
    # Path MTU (RFC 1191, RFC 4821), with Linux's values: the smallest next-hop MTU a
    # frag-needed may set (ip_rt_min_pmtu); for black-hole detection (tcp_mtu_probing=1)
    # the timeouts before it acts (tcp_retries1), the MSS it first falls to
    # (tcp_base_mss) and the floor of its halving (tcp_mtu_probe_floor).
    MIN_PMTU = 552
    MIN_PMTU6 = 1280            # RFC 8200 5 / RFC 8201 4: the IPv6 minimum link MTU
    BLACK_HOLE_RETRIES = 3
    BASE_MSS = 1024
    MTU_PROBE_FLOOR = 48


cdef inline int64_t _sdiff(int64_t a, int64_t b) noexcept:
    """a - b for 32-bit sequence numbers, as a signed int (RFC 1982)."""
    return <int32_t><uint32_t>(a - b)


# The parser leaves tsval/tsecr of a reused descriptor alone when the option is absent.
cdef inline uint32_t _tsval(Packet seg) noexcept:
    return seg.d.tsval if seg.d.opt_present & OPT_TS else 0


cdef inline uint32_t _tsecr(Packet seg) noexcept:
    return seg.d.tsecr if seg.d.opt_present & OPT_TS else 0

cdef class _ReceiveSpan:
    """Read-only buffer over bytes of a receive ring, for Connection.recv_to. It counts
    the views on it, so a consumer that keeps one is detected, and it holds the ring."""
    cdef Reassembler owner
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef int exports

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        PyBuffer_FillInfo(buffer, self, <void*>self.p, self.n, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports -= 1


# The State members by number, for Connection.state (the C code compares Tcb.st).
_STATES = tuple(State)


@dataclass
class ConnectionInfo:
    """A TCP_INFO-like snapshot (sequence variables as 32-bit wire values)."""

    state: str
    snd_una: int
    snd_nxt: int
    rcv_nxt: int
    snd_wnd: int
    rcv_wnd: int
    mss: int
    srtt: Optional[float]
    rttvar: float
    rto: float
    cwnd: int
    ssthresh: int
    retransmits: int
    bytes_sent: int
    bytes_acked: int
    bytes_received: int
    snd_wscale: int
    rcv_wscale: int
    unacked: int
    send_buffered: int
    recv_buffered: int
    reordering: int = 3             # largest reordering seen, in segments (Linux: at least 3)
    tlp_probes: int = 0             # tail-loss probes sent (RFC 8985 7)
    spurious_rtx_undone: int = 0    # window reductions undone as spurious
    delivery_rate: float = 0.0      # bytes/s acknowledged over the latest round trip
    ecn: bool = False           # ECN (RFC 3168) was negotiated
    ce_received: int = 0        # segments that arrived marked CE
    ece_received: int = 0       # segments that arrived with ECE


cdef class Connection(Tcb):
    """A TCP connection owned by a :class:`fasttcp.Host`.

    User calls: :meth:`send`, :meth:`recv`, :meth:`shutdown`, :meth:`close`, :meth:`abort`;
    inspect :attr:`state`, :attr:`eof`, :attr:`error`, :meth:`info`.

    Its variables are the C fields of :class:`Tcb` (``tcb.pxd``).
    """

    def __init__(self, HostServices host, tuple local, tuple remote, object remote_ip,
                 uint32_t iss, double now, bint passive, object local_ip=None) -> None:
        """`remote_ip`/`local_ip`: an IPv4 address as a number (local_ip None: the host's
        address_int), or an IPv6 address as its 16 bytes (then `local`/`remote` are
        (ip, port, 0, 0))."""
        s = host.settings
        # Every C field (tcb.pxd) starts at 0 / False / None:
        # no FIN queued or seen (fin_off, rcv_fin_off), no timer armed (rtx_at, delack_at,
        # timewait_at, keepalive_at), no error, no listener (set for passive opens until
        # accepted), no recovery state. Only what starts otherwise is set here.
        self.host = host
        self.settings = s
        self.local_address = local
        self.remote_address = remote
        if isinstance(remote_ip, bytes):
            if len(<bytes>remote_ip) != 16 or not isinstance(local_ip, bytes) or \
                    len(<bytes>local_ip) != 16:
                raise ValueError("IPv6 addresses are 16 bytes")
            self.ipver = 6
            memcpy(self._rip6, <const unsigned char*><bytes>remote_ip, 16)
            memcpy(self._lip6, <const unsigned char*><bytes>local_ip, 16)
        else:
            self.ipver = 4
            self._lip = self.host.address_int if local_ip is None else local_ip
            self._rip = remote_ip
        self.lport = local[1]
        self.rport = remote[1]
        self.nodelay = s.nodelay
        self.ttl = s.ttl
        self.rcv_buf = s.rcv_buf
        self.rcv_slack = s.rcv_storage - s.rcv_buf
        self.delayed_ack = s.delayed_ack
        # The demux key: the whole 4-tuple (docs/ARCHITECTURE.md "Demux"), each address
        # as the IPv4 number or the 16 bytes of the IPv6 address.
        self.key = (self.lport, remote_ip, self.rport,
                    local_ip if local_ip is not None else self._lip)
        self.passive = passive
        self.created_at = now
        self._invalid_ack_at = -1e300           # no invalid segment answered yet
        self.last_recv_at = now
        self.last_send_at = now

        # --- send side (offsets from ISS) ---
        self.iss = iss
        self.mss_limit = s.effective_mss        # what our MTU allows
        if self.ipver == 6 and self.mss_limit > s.mtu - 60:
            self.mss_limit = s.mtu - 60         # the IPv6 header is 20 bytes longer
        self.mss = min(self.mss_limit, DEFAULT_PEER_MSS)   # effective send MSS
        self.rcv_wscale = s.rcv_wscale if s.window_scaling else 0

        # --- timers, congestion policy ---
        self.rtt = RttEstimator(s.initial_rto, s.min_rto, s.max_rto)
        self.cc = self.host.make_congestion(self.mss)
        # SACK scoreboard (RFC 6675 section 3): SACKed [start, end) send offsets above
        # SND.UNA, sorted and merged (_high_rxt / _rescue_rxt: HighRxt and RescueRxt).
        self.sacked = []
        # RFC 7323 5.4: a per-connection random offset of the timestamp clock, from a keyed
        # hash distinct from the ISN's (so TSval reveals nothing about the ISN).
        if self.ipver == 6:
            self.ts_offset = self.host.ts_offset6(self.lport, remote_ip, self.rport)
        else:
            self.ts_offset = self.host.ts_offset(self.lport, remote_ip, self.rport)
        self._dr_t0 = -1.0                      # no delivery-rate interval open
        self.undo_marker = -1                   # no reduction to undo

    # ===================================================================================
    # User calls
    # ===================================================================================

    @property
    def state(self) -> State:
        """The connection's state (RFC 9293 3.3.2)."""
        if self._tw is not None:
            self._tw_closed()
        return _STATES[self.st]

    cdef bint _tw_closed(self):
        """With its TIME-WAIT kept as a record by the host: once the record is gone (2*MSL,
        an RST, a new incarnation's SYN), this connection is CLOSED too (the host counted
        the change when it dropped the record)."""
        if self._tw is not None and not self._tw.live:
            self._tw = None
            self.st = S_CLOSED
        return self.st == S_CLOSED

    @property
    def eof(self) -> bool:
        """True once the peer's FIN was reached and everything before it was read."""
        return self._fin_received and (self._reasm is None or self._reasm.readable == 0)

    @property
    def readable(self) -> int:
        return self._reasm.readable if self._reasm is not None else 0

    @property
    def send_space(self) -> int:
        """How many bytes :meth:`send` would accept now."""
        if self.fin_off is not None or self.error is not None:
            return 0
        return self._ring().free

    @property
    def unsent(self) -> int:
        # Never negative: snd_nxt passes the data end by our FIN, and a closed
        # connection's send ring is recycled (_data_end() is 1 then).
        return max(0, self._data_end() - max(self.snd_nxt, 1))

    @property
    def in_flight(self) -> int:
        return self.snd_max - self.snd_una

    def send(self, data) -> int:
        """Queue bytes for sending; returns how many the send buffer took (maybe 0).
        On a host that sends TSO super-segments as SplitPackets, at least
        ``settings.send_ref_min`` bytes of a ``bytes`` object (or a contiguous memoryview
        of one) are kept by reference until acknowledged, not copied."""
        self._raise_error()
        if self.fin_off is not None or self.st not in (
                S_SYN_SENT, S_SYN_RECEIVED, S_ESTABLISHED, S_CLOSE_WAIT):
            raise ConnectionClosed("connection closing: send after shutdown/close")
        n = self._ring().write(data)
        if n:
            self.host.want_output(self)
        return n

    def recv(self, max_bytes: int = 65536) -> bytes:
        """What is buffered now, up to max_bytes; b"" when nothing is (see :attr:`eof`)."""
        if self._reasm is None or self._reasm.readable == 0:
            if self.error is not None and not self._fin_received:
                raise self.error
            return b""
        data = self._reasm.read(max_bytes)
        self._after_read()
        return data

    def recv_into(self, buffer) -> int:
        """Like :meth:`recv`, into a writable buffer (no allocation); returns the count."""
        if self._reasm is None or self._reasm.readable == 0:
            if self.error is not None and not self._fin_received:
                raise self.error
            return 0
        n = self._reasm.readinto(buffer)
        self._after_read()
        return n

    def recv_to(self, consumer, Py_ssize_t max_bytes=65536) -> int:
        """Zero-copy receive: call ``consumer(view)`` with read-only memoryviews of the
        receive ring (up to max_bytes in all; two views when the ring wraps) and
        consume them. Each view is released when ``consumer`` returns, so it must copy
        what it keeps (``bytearray.extend`` does: asyncio's StreamReader.feed_data).
        Returns the bytes delivered; raises like :meth:`recv` when nothing is buffered
        and the connection failed."""
        cdef Reassembler reasm = self._reasm
        cdef _ReceiveSpan span
        cdef const unsigned char* p
        cdef Py_ssize_t n, total = 0
        if reasm is None or reasm.readable_c() == 0:
            if self.error is not None and not self._fin_received:
                raise self.error
            return 0
        # Data still in the link's buffers (Host.receive(defer_copy=True)) goes into the
        # ring first: a view must only ever cover memory the span's owner keeps alive, and
        # the ring gives one or two large views rather than one per packet.
        reasm.settle_c()
        while total < max_bytes:
            n = reasm.readable_chunk(&p)
            if n <= 0:
                break
            if n > max_bytes - total:
                n = max_bytes - total
            span = _ReceiveSpan.__new__(_ReceiveSpan)
            span.owner = reasm
            span.p = p
            span.n = n
            view = memoryview(span)
            try:
                consumer(view)
            finally:
                view.release()
            if span.exports:
                # The consumer kept a view (or a slice of one): the bytes stay buffered.
                raise BufferError("recv_to: the consumer kept a view of the receive buffer")
            reasm.consume(n)
            total += n
        self._after_read()
        return total

    def _after_read(self) -> None:
        # Receiver SWS avoidance (RFC 9293 3.8.6.2.2): announce the opened window only
        # once it grew by min(rcv_buf / 2, MSS).
        if self.st in (S_ESTABLISHED, S_FIN_WAIT_1, S_FIN_WAIT_2):
            if self.window_edge() > self.rcv_adv:
                self._ack_now = True
                self.host.want_output(self)

    def shutdown(self) -> None:
        """Half-close: send FIN after the queued data, keep receiving (RFC 9293 3.10.4)."""
        st = self.st
        if st in (S_ESTABLISHED, S_SYN_RECEIVED, S_CLOSE_WAIT):
            self._queue_fin()
            self._transition(E_CLOSE)
        elif st == S_SYN_SENT:
            self._terminate(E_CLOSE, None)
        self.host.wake(self)

    def close(self) -> None:
        """Full close. With unread received data this resets the connection instead
        (RFC 1122 4.2.2.13), as data arriving later would."""
        if self._tw_closed():
            return
        if self._reasm is not None and self._reasm.readable and self.state.synchronized:
            self.abort()
            return
        if self.st == S_TIME_WAIT:
            if not self.user_closed and self._tw is None:
                self.user_closed = True
                self._to_record()     # shut down before, closed only now: as at entry
            return
        self.user_closed = True
        if self.fin_off is None:
            self.shutdown()
        elif self.st == S_FIN_WAIT_2:
            self._orphan_timeout(self.host.now)
        if not self.orphan and self.st in (S_FIN_WAIT_1, S_FIN_WAIT_2, S_CLOSING, S_LAST_ACK):
            # Only the host holds it now: an orphan. With settings.max_orphans of them held
            # already it is reset at once instead (Linux tcp_close: tcp_too_many_orphans).
            if not self.host.adopt_orphan(self):
                self._event(COUNT_ORPHANS_RESET)
                self.abort()

    def _orphan_timeout(self, now: float) -> None:
        """A fully closed connection in FIN-WAIT-2 waits for the peer's FIN at most 2*MSL
        (like Linux's tcp_fin_timeout): nobody can read or close it any more, and a peer
        that never closes would otherwise hold it for ever. The TIME-WAIT timer serves."""
        self.timewait_at = now + 2 * self.settings.msl
        self._event(COUNT_FIN_WAIT_2_ORPHANS)

    def abort(self) -> None:
        """Reset the connection (RST) and discard everything (RFC 9293 3.10.5)."""
        if self._tw_closed():
            return
        if self._tw is not None:
            self.host.drop_time_wait(self._tw)   # its record goes; _terminate counts
            self._tw = None
        if self.state.synchronized:
            # RFC 9293 3.10.5: <SEQ=SND.NXT>, the highest sent (snd_nxt may be rewound).
            self.host.emit(self._packet(self.snd_max, RST, ack=False))
        self._terminate(E_ABORT, ConnectionAborted("connection aborted by this side"))

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            state=self.state.rfc_name,
            snd_una=self._snd_seq(self.snd_una), snd_nxt=self._snd_seq(self.snd_nxt),
            rcv_nxt=self._rcv_seq(self.rcv_nxt), snd_wnd=self.snd_wnd,
            rcv_wnd=max(0, self.rcv_adv - self.rcv_nxt), mss=self.mss,
            srtt=self.rtt.srtt, rttvar=self.rtt.rttvar, rto=self.rtt.rto,
            cwnd=self.cc.cwnd, ssthresh=self.cc.ssthresh, retransmits=self.retransmits,
            bytes_sent=self.bytes_sent, bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_received, snd_wscale=self.snd_wscale,
            rcv_wscale=self.rcv_wscale if self._ws_ok else 0, unacked=self.in_flight,
            send_buffered=len(self._send_ring) if self._send_ring is not None else 0,
            recv_buffered=self.readable,
            reordering=(max(3, -(-self.rtxq.reorder_dist // self.mss))
                        if self.rtxq is not None else 3),
            tlp_probes=self.tlp_probes, spurious_rtx_undone=self.spurious_rtx_undone,
            delivery_rate=self.delivery_rate,
            ecn=self.ecn_ok, ce_received=self.ce_received, ece_received=self.ece_received,
        )

    def __repr__(self) -> str:
        la, lp = self.local_address[:2]
        ra, rp = self.remote_address[:2]
        if self.ipver == 6:
            la, ra = f"[{la}]", f"[{ra}]"
        return f"<Connection {la}:{lp} -> {ra}:{rp} {self.state.rfc_name}>"

    # ===================================================================================
    # Opening
    # ===================================================================================

    def _open_active(self, now: float) -> None:
        self._transition(E_ACTIVE_OPEN)
        self._ack_now = False
        self.host.wake(self)

    cpdef _open_passive(self, Packet seg, double now):
        """A SYN reached a listener (RFC 9293 3.10.7.2)."""
        self.irs = seg.d.seq
        self.rcv_nxt = 1
        self._take_syn_options(seg)
        self._update_window_from(seg, syn=True)
        self.rcv_adv = self.rcv_nxt + self._initial_rcv_window()
        self._transition(E_PASSIVE_OPEN)
        self.host.wake(self)

    cpdef _open_from_cookie(self, Packet seg, int mss, double now):
        """Rebuild the TCB from a validated SYN cookie's ACK (RFC 4987 3.6): our SYN
        (ISS = the cookie) is acknowledged, the peer's ISN is SEG.SEQ - 1."""
        from fasttcp.tcp._cookies import cookie_ecn_ok, decode_options
        s = self.settings
        self.irs = (seg.d.seq - 1) & MASK
        self.rcv_nxt = 1
        self.snd_una = self.snd_nxt = self.snd_max = 1
        wscale, sack = -1, False
        if seg.d.opt_present & OPT_TS and s.timestamps:
            wscale, sack = decode_options(_tsecr(seg))
            # ECN as the host's SYN-cookie SYN-ACK agreed it (Linux's cookie_ecn_ok).
            self.ecn_ok = s.ecn != 0 and cookie_ecn_ok(_tsecr(seg))
            if self.ecn_ok:
                self._event(COUNT_ECN_NEGOTIATED)
            self.ts_ok = True
            self.ts_recent = _tsval(seg)
            self.ts_recent_at = now
        self.sack_ok = sack and s.sack
        if wscale >= 0 and s.window_scaling:
            self._ws_ok = True
            self.snd_wscale = min(wscale, MAX_WSCALE)
        else:
            self._ws_ok = False
            self.snd_wscale = self.rcv_wscale = 0
        self._set_send_mss(mss)
        self.rcv_adv = self.rcv_nxt + self._initial_rcv_window()   # as our SYN-ACK said
        self.last_ack_sent = self.rcv_nxt
        self._update_window_from(seg, syn=False)
        self._transition(E_COOKIE_ACK)
        self.host.wake(self)

    cdef _take_syn_options(self, Packet seg):
        cdef int o = seg.d.opt_present
        cdef int peer_mss = seg.d.mss if o & OPT_MSS and seg.d.mss else DEFAULT_PEER_MSS
        cdef int flags = seg.d.flags
        s = self.settings
        if flags & ACK:
            # RFC 3168 6.1.1: our ECN-setup SYN is answered by an ECN-setup SYN-ACK: ECE
            # set, CWR not (Linux's tcp_ecn_rcv_synack).
            self.ecn_ok = self._ecn_syn and flags & ECE and not flags & CWR
        else:
            # An ECN-setup SYN (ECE and CWR) is accepted unless settings.ecn is 0 (Linux's
            # tcp_ecn = 2 default: accept, do not ask). A SYN that is itself ECT or CE
            # came through a broken path: no ECN (Linux's tcp_ecn_create_request).
            self.ecn_ok = (s.ecn != 0 and flags & ECE and flags & CWR
                           and (seg.d.tos & IPTOS_ECN_MASK) == 0)
        if self.ecn_ok:
            self._event(COUNT_ECN_NEGOTIATED)
        # RFC 7323 3.2: timestamps are on only when both SYNs carry them; RFC 2018 likewise
        # for SACK.
        self.ts_ok = s.timestamps and o & OPT_TS
        if self.ts_ok:
            self.ts_recent = seg.d.tsval
            self.ts_recent_at = self.host.now
        self.sack_ok = s.sack and o & OPT_SACK_PERM
        self._set_send_mss(peer_mss)
        # RFC 7323 2.2: scaling is on only when both SYNs carry the option.
        if o & OPT_WSCALE and s.window_scaling:
            self._ws_ok = True
            self.snd_wscale = min(seg.d.wscale, MAX_WSCALE)
        else:
            self._ws_ok = False
            self.snd_wscale = 0
            self.rcv_wscale = 0

    cdef _set_send_mss(self, int peer_mss):
        """The send MSS from the peer's MSS option: the option space a segment always
        carries comes out of it (RFC 6691), and it is at least settings.min_mss bytes of
        payload, as Linux's tcp_min_snd_mss (since CVE-2019-11479: a peer announcing a tiny
        MSS must not make us cut its data into one segment per byte), unless our own MTU
        allows less. Also the first estimate of the peer's segment size for the ACK policy
        (Linux's tcp_initialize_rcv_mss: at most 536 bytes and half our window)."""
        cdef int opts = TS_OPTION_SPACE if self.ts_ok else 0
        cdef int floor = min(self.settings.min_mss, self.mss_limit - opts)
        self.mss = max(1, floor, min(self.mss_limit, peer_mss) - opts)
        self.cc.set_mss(self.mss)
        self._set_gso()
        self._rcv_mss = max(1, min(self.mss_limit, self.mss, DEFAULT_PEER_MSS,
                                   self._initial_rcv_window() // 2))

    cdef _set_gso(self):
        """Super-segments only when our segments fill the link MTU: the TSO link cuts
        them by its MTU, so a peer with a smaller MSS gets ordinary segments."""
        s = self.settings
        full = self.mss + (TS_OPTION_SPACE if self.ts_ok else 0) + self.ip_overhead() == s.mtu
        self.gso_max = min(s.gso_max, 65535 - 100) if full and s.gso_max > self.mss else 0
        self._set_ref_min()

    cdef _set_ref_min(self):
        """Zero-copy send (settings.send_ref_min) only while super-segments go out as
        SplitPackets, where the kernel reads the application's bytes itself. Where each
        MSS-sized segment is copied into a packet anyway, copying it out of the
        application's (cold) memory is slower than out of the (warm) ring: 18.3 against
        19.8 Gbit/s in process. Affects later sends only."""
        if self._send_ring is not None:
            self._send_ring.ref_min = (self.settings.send_ref_min
                                       if self.gso_max > 0 and self.host.split_tx else 0)

    cdef int64_t _initial_rcv_window(self):
        # The window field of a SYN is never scaled (RFC 7323 2.2).
        return min(self.settings.rcv_buf, 65535)

    # ===================================================================================
    # SEGMENT ARRIVES (RFC 9293 3.10.7)
    # ===================================================================================

    cpdef on_segment(self, Packet seg, double now):
        self.segs_in += 1
        self.last_recv_at = now
        if self.settings.keepalive is not None:
            self.keepalive_sent = 0
        st = self.st
        if st == S_SYN_SENT:
            self._segment_syn_sent(seg, now)
        elif st != S_CLOSED:
            self._segment_synchronized(seg, now)
        if self.st != S_CLOSED:
            self.host.wake(self)

    cdef _segment_syn_sent(self, Packet seg, double now):
        """A segment in SYN-SENT (RFC 9293 3.10.7.3): first the ACK, second RST, (third,
        security, does not apply), fourth SYN."""
        cdef int flags
        cdef int64_t d
        flags = seg.d.flags
        ack_ok = False
        if flags & ACK:
            d = _sdiff(seg.d.ack, self._snd_seq(0))
            # SND.UNA < SEG.ACK =< SND.NXT, i.e. it acknowledges our SYN exactly.
            if d <= 0 or d > self.snd_nxt:
                if not flags & RST:
                    self._emit_rst(seq=seg.d.ack)
                self._event(COUNT_DROP_BAD_ACK)
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:                   # RFC 5961 3.2: only if it acknowledges our SYN
                self._terminate(E_RST, ConnectionRefused("connection refused"))
            return
        if not flags & SYN:
            return
        self.irs = seg.d.seq
        self.rcv_nxt = 1
        self._take_syn_options(seg)
        self.rcv_adv = self.rcv_nxt + self._initial_rcv_window()
        if ack_ok:
            self._ack_advance(1, now)
            self._update_window_from(seg, syn=True)
            self._transition(E_SYN_ACK)
            self._ack_now = True
            if self._syn_retransmits:
                self.rtt.on_syn_timeout_fallback()   # RFC 6298 5.7
            self._handshake_window()
            if seg.d.payload_len:
                self._receive_text(seg, seg.d.seq + 1, now)
        else:
            # Simultaneous open (RFC 9293 figure 8): answer SYN,ACK from SYN-RECEIVED.
            self._update_window_from(seg, syn=True)
            self._transition(E_SYN)
            self.snd_nxt = 0                   # resend our SYN, now with ACK
            self.rtx_at = None

    cdef _segment_synchronized(self, Packet seg, double now):
        """A segment in SYN-RECEIVED or a synchronized state: the checks of RFC 9293
        3.10.7.4 in their order, one method each; a check returns 0 when the segment is
        done with (dropped, answered or acted on)."""
        cdef int flags = seg.d.flags
        cdef int64_t plen = seg.d.payload_len
        cdef int64_t seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        cdef int64_t seq_off = self.rcv_nxt + _sdiff(seg.d.seq, self._rcv_seq(self.rcv_nxt))
        if self.st == S_SYN_RECEIVED and not self._syn_received_syn(seg, seq_off, now):
            return
        if not self._check_sequence(seg, seq_off, seg_len, now):    # first (and PAWS)
            return
        if not self._check_rst(seg, seq_off, now):                  # second
            return
        # Third, security: fasttcp sends and accepts no IP security option; nothing to do.
        if not self._check_syn(seg, now):                           # fourth
            return
        if not self._check_ack(seg, seg_len, now):                  # fifth
            return
        # Sixth, URG: fasttcp has no urgent mode; the pointer is ignored (RFC 6093).
        if not self._process_text(seg, now):                        # seventh
            return
        if self.ecn_ok:
            self._ecn_input(seg)                                    # RFC 3168 6.1.3
        self._process_fin(seg, seq_off, now)                        # eighth

    cdef int _syn_received_syn(self, Packet seg, int64_t seq_off, double now) except -1:
        """SYN-RECEIVED and the peer's SYN again (at its ISN, no RST)."""
        cdef int flags = seg.d.flags
        cdef int64_t ack_off
        if not (flags & SYN and seq_off == 0 and not flags & RST):
            return 1
        if not flags & ACK:
            # A retransmitted SYN while our SYN,ACK is outstanding: answer it again.
            self.snd_nxt = 0
            return 0
        # Simultaneous open (RFC 9293 figure 8, line 6): the peer's SYN,ACK carries the
        # SYN we already acknowledged and acknowledges ours: the handshake is complete.
        ack_off = _sdiff(seg.d.ack, self._snd_seq(0))
        if 0 < ack_off <= self.snd_max:
            self._transition(E_ACK_OF_SYN)
            self._ack_advance(ack_off, now)
            self._update_window_from(seg, syn=True)
            return 0
        return 1

    cdef int _check_sequence(self, Packet seg, int64_t seq_off, int64_t seg_len,
                             double now) except -1:
        """First: PAWS (RFC 7323 5.3 R1), then sequence number acceptability (RFC 9293
        3.10.7.4's table)."""
        cdef int flags = seg.d.flags
        cdef int64_t plen = seg.d.payload_len
        if self.ts_ok and not flags & RST:
            if not seg.d.opt_present & OPT_TS:
                self._event(COUNT_DROP_MISSING_TIMESTAMP)    # RFC 7323 3.2
                return 0
            if _sdiff(_tsval(seg), self.ts_recent) < 0:
                if now - self.ts_recent_at > TS_RECENT_MAX_IDLE:
                    # RFC 7323 5.5: idle for longer than 24 days, TS.Recent is invalid
                    # (the peer's clock may have wrapped): take the segment's TSval.
                    self.ts_recent = _tsval(seg)
                    self.ts_recent_at = now
                    self._event(COUNT_TS_RECENT_EXPIRED)
                else:
                    self._invalid_ack(seg_len, now)   # RFC 7323 5.3 R1: send an ACK
                    self._event(COUNT_DROP_PAWS)
                    return 0
        if self.st == S_TIME_WAIT and flags & FIN and not flags & RST:
            # The peer did not see our ACK of its FIN: acknowledge again, restart 2*MSL.
            self._ack_now = True
            self.timewait_at = now + 2 * self.settings.msl
            return 0
        if self._acceptable(seq_off, seg_len, self.rcv_adv - self.rcv_nxt):
            return 1
        if not flags & (SYN | RST) and seq_off == max(self.rcv_adv, self.rcv_nxt):
            # A segment starting exactly at the right edge carries a valid ACK: RFC 9293
            # 3.10.7.4 asks for "special allowance" for the ACKs of a zero window, and
            # Linux takes any segment that starts at or before the edge (tcp_sequence).
            # Linux also puts the edge in the sequence field of its pure ACKs once its
            # data runs past our window (tcp_acceptable_seq). Dropping those would lose
            # every acknowledgement it sends while our window is closed. The data itself
            # is not taken (_receive_text trims it to the window, RFC 9293 "seventh").
            self._event(COUNT_ACK_AT_WINDOW_EDGE)
            return 1
        if flags & SYN and not flags & RST:
            # RFC 5961 4.2: a SYN gets a challenge ACK "irrespective of the sequence
            # number", so it is rate-limited (section 7) like the in-window ones.
            self._challenge_ack(now)
            return 0
        if not flags & RST:
            if plen and seq_off + plen <= self.rcv_nxt:
                self._note_duplicate(seq_off, seq_off + plen)    # all old data
            self._invalid_ack(seg_len, now)       # RFC 9293 3.10.7.4: <ACK>
        self._event(COUNT_DROP_OUT_OF_WINDOW)
        return 0

    cdef int _check_rst(self, Packet seg, int64_t seq_off, double now) except -1:
        """Second: RST, with RFC 5961 3.2's blind-reset protection."""
        cdef int st = self.st
        if not seg.d.flags & RST:
            return 1
        if seq_off != self.rcv_nxt:
            self._challenge_ack(now)              # in window but not exact (RFC 5961 3.2)
            return 0
        if st == S_SYN_RECEIVED:
            if self.passive:
                self._terminate(E_RST, None)      # back to LISTEN: just forget it
            else:
                self._terminate(E_RST, ConnectionRefused("connection refused"))
        elif st in (S_ESTABLISHED, S_FIN_WAIT_1, S_FIN_WAIT_2, S_CLOSE_WAIT):
            self._terminate(E_RST, ConnectionReset("connection reset by peer"))
        else:
            self._terminate(E_RST, None)
        self._event(COUNT_RST_IN)
        return 0

    cdef int _check_syn(self, Packet seg, double now) except -1:
        """Fourth: a SYN in a synchronized state gets a challenge ACK (RFC 5961 4.2)."""
        if seg.d.flags & SYN:
            self._challenge_ack(now)
            return 0
        return 1

    cdef _ecn_input(self, Packet seg):
        """The ECN bits of an acceptable segment (RFC 3168 6.1.3), as the fast path
        takes them: CWR ends our ECE echo; CE starts it (again) and is acknowledged at
        once; ECE is counted here and acted on in _process_ack."""
        cdef int flags = seg.d.flags
        if flags & CWR:
            self._ece_pending = False
        if (seg.d.tos & IPTOS_ECN_MASK) == IPTOS_ECN_CE:
            self.ce_received += 1
            self._event(COUNT_ECN_CE_RECEIVED)
            if not self._ece_pending:
                self._ece_pending = True
                self._ack_now = True
        if flags & ECE:
            self.ece_received += 1
            self._event(COUNT_ECN_ECE_RECEIVED)

    cdef bint _in_ecn_reduction(self):
        """An ECE reduction's window is still open (SND.UNA below what was outstanding at
        it): a loss found now must not reduce again (RFC 3168 6.1.2, once per window;
        Linux enters Recovery from CWR without a new tcp_init_cwnd_reduction)."""
        return self.snd_una < self._ecn_recover

    cdef _on_ece(self, double now):
        """ECE arrived (RFC 3168 6.1.2): the network marked our data. Reduce cwnd and
        ssthresh as for a loss (the policy's on_ecn, with what is outstanding now), at
        most once per window of data: not again until SND.UNA is above what was
        outstanding at the last reduction, so that our CWR has reached the receiver
        (Linux's CWR state, tcp_fastretrans_alert); never during loss recovery, which
        already reduced for this window. Then CWR goes on the next new data segment."""
        if self.in_recovery or self.snd_una <= self._ecn_recover:
            return
        self.cc.on_ecn(self.snd_max - self.snd_una, now)
        self._ecn_recover = self.snd_max
        self._cwr_pending = True
        self._event(COUNT_ECN_REDUCTIONS)

    cdef int _check_ack(self, Packet seg, int64_t seg_len, double now) except -1:
        """Fifth: ACK. Completes the handshake in SYN-RECEIVED, takes acceptable ACKs
        (RFC 5961 5.2), and moves on when our FIN is acknowledged."""
        cdef int64_t ack_off
        cdef int st
        if not seg.d.flags & ACK:
            return 0
        ack_off = self.snd_una + _sdiff(seg.d.ack, self._snd_seq(self.snd_una))
        if self.st == S_SYN_RECEIVED:
            if self.snd_una < ack_off <= self.snd_max:
                self._transition(E_ACK_OF_SYN)
                self._update_window_from(seg, syn=False)
                self._handshake_window()
                self.host.queue_for_accept(self)
            else:
                self._emit_rst(seq=seg.d.ack)
                return 0
        # RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT]; anything
        # else is dropped and answered with a (rate-limited) challenge ACK.
        if ack_off > self.snd_max:
            self._event(COUNT_DROP_ACK_UNSENT)
            self._challenge_ack(now)
            return 0
        if ack_off < self.snd_una - max(self.max_snd_wnd, 1):
            self._event(COUNT_DROP_ACK_TOO_OLD)
            self._challenge_ack(now)
            return 0
        # RFC 7323 4.3 (R3): TS.Recent follows the segment at the left edge of our last ACK.
        # Only now, after the RST, SYN and RFC 5961 ACK checks: a forged in-window segment
        # that gets a challenge ACK must not move TS.Recent, or later genuine segments
        # would all fail PAWS (as Linux, tcp_replace_ts_recent after ACK validation).
        if seg.d.opt_present & OPT_TS and self.ts_ok \
                and _sdiff(seg.d.seq, self._rcv_seq(self.last_ack_sent)) <= 0 \
                and _sdiff(_tsval(seg), self.ts_recent) >= 0:
            self.ts_recent = _tsval(seg)
            self.ts_recent_at = now
        self._process_ack(seg, ack_off, seg_len, now)
        st = self.st
        if st == S_CLOSED:
            return 0
        if self.fin_off is not None and self.snd_una > self.fin_off:    # our FIN is acked
            if st == S_FIN_WAIT_1:
                self._transition(E_FIN_ACKED)
                if self.user_closed:
                    self._orphan_timeout(now)
            elif st == S_CLOSING:
                self._enter_time_wait(E_FIN_ACKED, now)
                return 0
            elif st == S_LAST_ACK:
                self._terminate(E_FIN_ACKED, None)
                return 0
        return st != S_TIME_WAIT

    cdef int _process_text(self, Packet seg, double now) except -1:
        """Seventh: the segment's data, in the states that still receive."""
        if seg.d.payload_len and self.st in (S_ESTABLISHED, S_FIN_WAIT_1, S_FIN_WAIT_2):
            if self.user_closed:
                # Nobody will read it: reset (RFC 1122 4.2.2.13, as Linux does).
                self._emit_rst(seq=self._snd_seq(self.snd_max))
                self._terminate(E_ABORT, ConnectionAborted("data arrived after close()"))
                return 0
            self._receive_text(seg, seg.d.seq, now)
        return 1

    cdef _process_fin(self, Packet seg, int64_t seq_off, double now):
        """Eighth: note the peer's FIN where it sits, and act on it once every byte before
        it has arrived (maybe only now, with a hole filled)."""
        cdef int64_t fin_off
        if (seg.d.flags & FIN and self.rcv_fin_off is None
                and self.st not in (S_CLOSE_WAIT, S_CLOSING, S_LAST_ACK)):
            fin_off = seq_off + seg.d.payload_len
            # A FIN trimmed off is not seen; a bare FIN at RCV.NXT is, even in a zero
            # window (it takes no buffer; Linux's tcp_data_queue takes it too).
            if self.rcv_nxt <= fin_off < self.rcv_adv or (
                    fin_off == self.rcv_nxt and not seg.d.payload_len):
                self.rcv_fin_off = fin_off
                if fin_off > self.rcv_nxt and not seg.d.payload_len:
                    # Out of order: an immediate duplicate ACK, as for out-of-order data
                    # (RFC 5681 4.2; Linux queues the FIN out of order and ACKs at once).
                    # (A FIN riding on data was answered with that data.)
                    self._dup_ack_now()
        self._check_fin(now)

    cdef _note_duplicate(self, int64_t start, int64_t end):
        """Data in [start, end) (receive offsets) arrived again: with SACK on, report it
        as a D-SACK block in the next ACK, sent at once (RFC 2883), so the sender can tell
        a spurious retransmission (and undo its window reduction)."""
        if self.sack_ok and end > start and self.settings.dsack:
            self.dsack_start = start
            self.dsack_end = end
            self._ack_now = True

    cdef _invalid_ack(self, int64_t seg_len, double now):
        """The ACK owed for a segment that failed the window or PAWS test. For one
        without data, SYN or FIN, at most one per ``invalid_ack_interval`` per connection
        (as Linux's tcp_invalid_ratelimit): a flood of forged or looping pure ACKs must
        not draw one ACK each. Retransmitted data is always answered."""
        if seg_len == 0:
            if self._answered_recently(now):
                self._event(COUNT_INVALID_ACKS_SUPPRESSED)
                return
            self._invalid_ack_at = now
        self._ack_now = True

    cdef bint _answered_recently(self, double now):
        """This connection answered an invalid segment (an ACK or a challenge ACK) less
        than ``invalid_ack_interval`` ago: Linux's per-socket tcp_invalid_ratelimit."""
        interval = self.settings.invalid_ack_interval
        return interval > 0 and now - self._invalid_ack_at < interval

    cdef _challenge_ack(self, double now):
        """A challenge ACK (RFC 5961 3.2, 4.2, 5.2) within the rate limits (section 7):
        first this connection's (one per ``invalid_ack_interval``, as Linux's per-socket
        limit), then the host's ``challenge_ack_limit``. The per-connection limit comes
        first so that one flooded connection cannot spend the host-wide budget, whose
        exhaustion an off-path attacker could otherwise observe (CVE-2016-5696)."""
        if self._answered_recently(now):
            self._event(COUNT_CHALLENGE_ACKS_SUPPRESSED)
            return
        if self.host.challenge_ack_allowed(now):
            self._invalid_ack_at = now
            self._ack_now = True
            self._event(COUNT_CHALLENGE_ACKS_OUT)
        else:
            self._event(COUNT_CHALLENGE_ACKS_SUPPRESSED)

    cdef bint _acceptable(self, int64_t seq_off, int64_t seg_len, int64_t wnd):
        cdef int64_t nxt, end
        nxt = self.rcv_nxt
        if seg_len == 0:
            if wnd <= 0:
                return seq_off == nxt
            return nxt <= seq_off < nxt + wnd
        if wnd <= 0:
            return False
        end = seq_off + seg_len - 1
        return nxt <= seq_off < nxt + wnd or nxt <= end < nxt + wnd

    cdef _update_window_from(self, Packet seg, bint syn):
        # RFC 7323 2.2: the window field of a SYN is never scaled.
        self.snd_wnd = seg.d.window if syn else seg.d.window << self.snd_wscale
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = seg.d.seq
        self.snd_wl2 = seg.d.ack if seg.d.flags & ACK else 0

    cdef _process_ack(self, Packet seg, int64_t ack_off, int64_t seg_len, double now):
        cdef int64_t wnd, wl1_d, newly_sacked
        cdef double hs_rtt
        wnd = seg.d.window << self.snd_wscale
        self.probes_unanswered = 0                # the peer answers (RFC 1122 4.2.2.17)
        # Window update rule (RFC 9293 3.10.7.4, fifth check, ESTABLISHED).
        wl1_d = _sdiff(seg.d.seq, self.snd_wl1)
        window_changed = wnd != self.snd_wnd
        if self.snd_una <= ack_off and (
                wl1_d > 0 or (wl1_d == 0 and _sdiff(seg.d.ack, self.snd_wl2) >= 0)):
            self.snd_wnd = wnd
            self.max_snd_wnd = max(self.max_snd_wnd, wnd)
            self.snd_wl1 = seg.d.seq
            self.snd_wl2 = seg.d.ack
            if wnd > 0 and self.persist:
                self.persist = False              # window opened: leave persist mode
                self.rtx_at = now + self.rtt.rto if self.snd_max > self.snd_una else None
                # A probe byte the receiver refused (beyond its zero window, RFC 9293
                # 3.8.6.1) was dropped, not lost in flight: send again from SND.UNA.
                self.snd_nxt = self.snd_una
            if self.probes_out and ack_off + wnd >= min(self._data_end(), ack_off + self.mss):
                # The window lets the next segment out: the persist backoff and the stall
                # end (Linux tcp_ack_probe clears icsk_backoff only then).
                self.probes_out = 0

        newly_sacked = 0
        dsack = dup = False
        if self.sack_ok and seg.d.opt_present & OPT_SACK:
            blocks = seg.sack_blocks
            dsack = self._is_dsack(blocks, ack_off)
            newly_sacked = self._update_scoreboard(blocks, ack_off)
        q = self.rtxq
        una_before = self.snd_una
        flight_before = self.snd_max - self.snd_una
        delivered = 0
        orig = False
        hs_rtt = -1.0
        if ack_off > self.snd_una and not self.in_recovery and self.snd_una > 0:
            # HyStart++'s sample, before RACK's bookkeeping drops the acknowledged entries.
            hs_rtt = self._hystart_rtt(self.snd_una, ack_off,
                                       _tsecr(seg) if self.ts_ok else 0, now)
        if q is not None and self.sack_ok:
            # The bookkeeping of RACK (RFC 8985 6.2 steps 2-3) for this ACK, in C.
            reordered = q.reordered
            orig0 = q.orig_delivered
            delivered = q.on_ack(max(ack_off, self.snd_una), self.sacked, now,
                                 self.rtt.min_rtt)
            orig = q.orig_delivered > orig0
            for _ in range(q.reordered - reordered):
                self._event(COUNT_REORDERING)
        if self.undo_marker >= 0 and (dsack or ack_off > self.undo_marker):
            self._undo_check(seg, ack_off, dsack, now)
        if ack_off > self.snd_una:
            if not self.in_recovery and self.snd_una > 0:
                self._hystart_ack(ack_off, hs_rtt, 1, now)
            if self.ts_ok and _tsecr(seg):
                self._ts_sample(_tsecr(seg), now)
            self._new_ack(ack_off, now)
            if q is None and self.sack_ok and not self.in_recovery and self.sacked \
                    and self._lost_boundary() > self.snd_una and self.snd_una >= self.recover:
                self._enter_recovery(now)         # RFC 6675 5 (2): IsLost(HighACK + 1)
        elif (ack_off == self.snd_una and seg_len == 0 and self.snd_max > self.snd_una
              and wnd > 0 and (newly_sacked > 0
                               or (not window_changed and not self.sacked and not dsack))):
            # RFC 5681 section 2 "duplicate ACK" (with SACK: one that SACKs new data, RFC
            # 6675 section 2). Not with a zero window: those ACKs answer window probes
            # (RFC 9293 3.8.6.1), and a fast retransmit would send past the window.
            self._dupack(now)
            dup = True
        if self.frto and self.st != S_CLOSED:
            self._frto_ack(now, self.snd_una > una_before, newly_sacked > 0, dup, orig)
        if q is not None and self.sack_ok and self.st != S_CLOSED:
            self._loss_step(now, delivered, dsack, self.snd_una > una_before, flight_before)
        if self.ecn_ok and seg.d.flags & ECE:
            self._on_ece(now)

    cpdef _fast_batch_done(self, double now):
        """After the fast path took segments of this connection in a batch: the RTO
        timer (RFC 6298 5.2/5.3) and the congestion policy, once per batch."""
        cdef int64_t acked = self.fp_acked
        cdef int acks
        if acked:
            self.fp_acked = 0
            acks = self.fp_acks
            self.fp_acks = 0
            if not self.persist:
                self.rtx_at = None if self.snd_una >= self.snd_max else now + self.rtt.rto
            cc = self.cc
            self._hystart_ack(self.snd_una,
                              self._hystart_rtt(self.snd_una - acked, self.snd_una,
                                                self.fp_tsecr if self.ts_ok else 0, now),
                              acks, now)
            cc.on_ack(acked, self.fp_flight, now, self.rtt.srtt, acks)
            if self.fp_tsecr:
                self._ts_sample(self.fp_tsecr, now)
                self.fp_tsecr = 0
            self._rate_sample(now)
            if self.rtxq is not None:
                # RFC 8985 7.2: an ACK of new data restarts the PTO (7.4: and may end a
                # probe episode).
                if self.tlp_end and self.snd_una >= self.tlp_end:
                    self._tlp_acked(now, False, self.fp_flight)
                self._arm_pto(now)
        if self.probes_out and self.snd_wnd >= min(self.mss, self._data_end() - self.snd_una):
            self.probes_out = 0                   # the window opened (as in _process_ack)
        if self.fp_ece:
            self.fp_ece = False
            self._on_ece(now)                      # once per batch, after on_ack
        self.host.wake(self)

    cdef double _hystart_rtt(self, int64_t lo, int64_t hi, uint32_t tsecr, double now):
        """The RTT sample HyStart++ takes from an ACK that moved SND.UNA from ``lo`` to
        ``hi`` (RFC 9406 4.2: one per ACK), -1 for none. With timestamps: now - TSecr
        (RFC 7323 4.1). Without (Windows' default, for one) and with SACK: the send time of
        the newest never-retransmitted segment it acknowledged, kept by RACK's per-segment
        queue (Linux samples the same way from its skb times). Without either: none, and
        slow start is RFC 5681's. Only while HyStart++ may still act."""
        cdef uint32_t rtt_ms
        cdef HyStartRounds hs = self.hs
        if (hs is not None and hs.done) or not self.cc.hystart:
            return -1.0                          # (_hystart_ack would not use it)
        if tsecr:
            rtt_ms = self.tsval_at(now) - tsecr     # (uint32: modulo 2**32)
            return rtt_ms / 1000.0 if rtt_ms < 0x80000000 else -1.0
        if self.rtxq is not None and not self.ts_ok:
            return self.rtxq.acked_rtt(lo, hi, now)
        return -1.0

    cdef _hystart_ack(self, int64_t ack_off, double rtt, int acks, double now):
        """HyStart++ (RFC 9406 4.2) for an ACK batch: its round (windowEnd = SND.NXT, here
        the highest offset sent) and its RTT samples: ``rtt`` the batch's smallest
        (``_hystart_rtt``; negative: none), and ``acks`` ACKs carried one. The bookkeeping
        is the policy's HyStartRounds, fed here in C: the policy is called only when CSS
        ends (hystart_exit) or a loss has ended slow start."""
        cdef HyStartRounds hs = self.hs
        if hs is not None and hs.done:
            return
        cc = self.cc
        if not cc.hystart:
            return
        if hs is None:
            hs = cc.hystart_rounds()
            if hs is None:                        # the policy's own hystart_ack
                if not cc.hs_done:
                    cc.hystart_ack(ack_off, self.snd_max, rtt if rtt >= 0 else None,
                                   acks if rtt >= 0 else 0)
                return
            self.hs = hs
            if hs.done:
                return
        if cc.ssthresh != _INFINITE_SSTHRESH:
            hs.end()                              # a loss or CE ended slow start (4.2)
        elif hs.take(ack_off, self.snd_max, rtt, acks if rtt >= 0 else 0) & HS_CSS_DONE:
            cc.hystart_exit()

    cdef _ts_sample(self, uint32_t tsecr, double now):
        """An RTT sample from an echoed timestamp (RFC 7323 4.1): valid for retransmitted
        data too, so Karn's rule is not needed; one per RTT (RFC 7323 appendix G)."""
        cdef uint32_t rtt_ms
        if now < self._ts_next_sample:
            return
        # An echo older than our last timeout is ambiguous (Karn, RFC 6298 3): the go-back-N
        # resend may have reached the peer as an old duplicate, which it drops without
        # updating TS.Recent (RFC 7323 5.3 R2 before R3), so its ACK echoes a TSval from
        # before the whole backoff and would sample the backoff as the RTT.
        if self._ts_floor is not None and _sdiff(tsecr, self._ts_floor) < 0:
            return
        rtt_ms = self.tsval_at(now) - tsecr     # (uint32: modulo 2**32)
        if rtt_ms >= 0x80000000:
            return                                # an echo from the future: ignore
        self.rtt.sample(rtt_ms / 1000.0)
        self._ts_next_sample = now + (self.rtt._srtt if self.rtt.has_sample else 0.0)
        # The same ACK must not also end the timed SYN: one sample per RTT (RFC 7323 4.1).
        self._rtt_off = None

    cdef _new_ack(self, int64_t ack_off, double now):
        cdef int64_t acked, flight_before, data_acked, flight
        acked = ack_off - self.snd_una
        flight_before = self.snd_max - self.snd_una
        data_acked = acked
        if self.snd_una == 0:
            data_acked -= 1                       # our SYN
        if self.fin_off is not None and ack_off > self.fin_off:
            data_acked -= 1                       # our FIN
        self._ack_advance(ack_off, now)
        self.cwnd_bonus = 0
        self.bytes_acked += max(0, data_acked)
        self._rate_sample(now)
        flight = self.snd_max - self.snd_una
        if self.in_recovery:
            if ack_off >= self.recover:           # full ACK (RFC 6582 3.2 step 5)
                self.in_recovery = False
                self.dupacks = 0
                self.cc.on_exit_recovery(flight)
                if self.loss is not None:
                    self.loss.on_exit_recovery()
            elif self._sack_recovery:
                pass                              # RFC 6675: pipe decides what goes next
            else:                                 # partial ACK: resend the next hole
                self.cc.on_partial_ack(acked)
                self._retransmit_head()
        else:
            self.dupacks = 0
            if self._rto_recovery and ack_off >= self.recover:
                self._rto_recovery = False        # all sent before the RTO is acknowledged
            if data_acked > 0:
                self.cc.on_ack(data_acked, flight_before, now, self.rtt.srtt)

    cdef _ack_advance(self, int64_t ack_off, double now):
        """SND.UNA moves to ack_off: release buffer, sample RTT, manage the RTO timer."""
        if self._rtt_off is not None and ack_off > self._rtt_off:
            self.rtt.sample(now - self._rtt_start)   # Karn: _rtt_off is cleared on resends
            self._rtt_off = None
        self.snd_una = ack_off
        if self.snd_nxt < ack_off:
            self.snd_nxt = ack_off
        if self.sacked:
            self.sacked = [[max(a, ack_off), b] for a, b in self.sacked if b > ack_off]
        if self._send_ring is not None:
            self._send_ring.release(min(ack_off, self._data_end()) - 1 if ack_off > 0 else 0)
        self.retries = 0
        # RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it.
        if self.snd_una >= self.snd_max:
            if not self.persist:
                self.rtx_at = None
            self._lr_at = None                    # nothing left to probe or mark lost
        elif not self.persist:
            self.rtx_at = now + self.rtt.rto
        if self.host is not None:
            self.host.wake(self)

    cdef _dupack(self, double now):
        self.dupacks += 1
        if not self.in_recovery and self.dupacks <= 2:
            # Limited transmit (RFC 3042, RFC 5681 3.2 step 1): each of the first two
            # duplicate ACKs lets one new segment out beyond cwnd, so that small windows
            # still produce the three duplicates fast retransmit needs.
            self.cwnd_bonus = self.dupacks * self.mss
        if self.in_recovery:
            if not self._sack_recovery:
                self.cc.on_dupack_in_recovery()   # RFC 5681 3.2 step 4 (no SACK: inflate)
            return
        if self.sack_ok and self.rtxq is not None:
            # The loss-detection policy decides (_loss_step). RFC 6675 5 (2)'s DupAcks >=
            # DupThresh stays DupThresh's, and serves RACK too when the duplicates carry
            # no SACK block (as Linux tcp_newreno_mark_lost): RFC 8985 6 needs SACK.
            if (self.dupacks >= 3 and self.snd_una >= self.recover
                    and (not self.sacked or self._loss_policy().name == "dupthresh")):
                self._enter_recovery(now)
            return
        if self.sack_ok and self.sacked:
            # RFC 6675 5 (2): DupAcks >= DupThresh, or IsLost(HighACK + 1).
            if (self.dupacks >= 3 or self._lost_boundary() > self.snd_una) \
                    and self.snd_una >= self.recover:
                self._enter_recovery(now)
            return
        if self.dupacks == 3 and self.snd_una >= self.recover:
            # RFC 6582 3.2 step 2: enter fast retransmit only if the ACK covers more
            # than "recover" (avoids multiple reductions per window).
            self.cwnd_bonus = 0
            self.in_recovery = True
            self._sack_recovery = False
            self.recover = self.snd_max
            if self._in_ecn_reduction():
                # Already reduced for this window: RFC 5681 3.2 step 3's inflation only.
                self.cc.cwnd = self.cc.ssthresh + 3 * self.mss
            else:
                self.cc.on_enter_recovery(self.snd_max - self.snd_una, now)
            self._retransmit_head()
            self._event(COUNT_FAST_RETRANSMITS)

    # --- SACK-based loss recovery (RFC 6675) --------------------------------------------

    def _update_scoreboard(self, blocks, ack_off: int) -> int:
        """Merge SACK blocks (RFC 2018) into the scoreboard; returns newly SACKed bytes.
        Blocks outside (ack, SND.MAX] are ignored (D-SACK, RFC 2883, or bogus)."""
        una = max(self.snd_una, ack_off)
        base = self._snd_seq(self.snd_una)
        before = self._sacked_bytes(una, self.snd_max)
        board = self.sacked
        for left, right in blocks:
            lo = self.snd_una + _sdiff(left, base)
            hi = self.snd_una + _sdiff(right, base)
            if not (una < hi <= self.snd_max) or lo >= hi:
                continue
            lo = max(lo, una)
            # insert and merge (the board stays small: blocks coalesce as holes fill)
            merged = [lo, hi]
            keep = []
            for r in board:
                if r[1] < merged[0] or r[0] > merged[1]:
                    keep.append(r)
                else:
                    merged = [min(r[0], merged[0]), max(r[1], merged[1])]
            keep.append(merged)
            keep.sort()
            board = keep
        if len(board) > 256:                       # bound memory against a hostile peer
            board = board[-256:]
        self.sacked = [r for r in board if r[1] > una]
        for r in self.sacked:
            if r[0] < una:
                r[0] = una
        return self._sacked_bytes(una, self.snd_max) - before

    def _sacked_bytes(self, lo: int, hi: int) -> int:
        n = 0
        for a, b in self.sacked:
            a, b = max(a, lo), min(b, hi)
            if b > a:
                n += b - a
        return n

    def _lost_boundary(self) -> int:
        """Unsacked bytes below the returned offset are lost (RFC 6675 IsLost, DupThresh
        3): three discontiguous SACKed blocks above them, or more than 2 * SMSS bytes."""
        acc = 0
        board = self.sacked
        for i in range(len(board) - 1, -1, -1):
            acc += board[i][1] - board[i][0]
            if len(board) - i >= 3 or acc > 2 * self.mss:
                return board[i][0]
        return self.snd_una

    def _enter_recovery(self, now: float) -> None:
        """RFC 6675 section 5 (4): RecoveryPoint = HighData, cwnd = ssthresh."""
        self.cwnd_bonus = 0
        self.in_recovery = True
        self._sack_recovery = True
        self._rto_recovery = False
        self.recover = self.snd_max
        self._undo_start(now, False)
        if not self._in_ecn_reduction():
            self.cc.on_enter_recovery(self.snd_max - self.snd_una, now)
        self.cc.cwnd = self.cc.ssthresh           # no inflation with SACK
        self._high_rxt = self.snd_una
        self._rescue_rxt = None
        self._rtt_off = None
        q = self.rtxq
        if q is not None:
            # PRR (RFC 6937 section 3): RecoverFS = SND.NXT - SND.UNA at the start.
            if self.prr is None:
                self.prr = Prr(self.mss)
            self.prr.start(self.snd_max - self.snd_una, self.mss)
            q.trim(self.snd_una)
            if not q.lost_bytes():
                # RFC 6675 5 (4.2): retransmit the first segment presumed lost, HighACK+1.
                q.mark_lost_below(self.snd_una + self.mss)
            if self._lr_kind == LR_TLP:
                self._lr_at = None                # no probes during recovery (RFC 8985 7.2)
        self._event(COUNT_SACK_RECOVERIES)

    # --- RACK-TLP (RFC 8985) and PRR (RFC 6937) ------------------------------------------

    # --- undo of spurious reductions (RFC 3522, RFC 3708; Linux tcp_try_undo_*) -----------

    def _undo_start(self, now: float, rto: bool) -> None:
        """A reduction begins (fast recovery, or an RTO): remember what it undoes. An RTO
        within an episode keeps the episode's original values (Linux: undo_marker is set
        once, tcp_init_undo)."""
        if self.undo_marker >= 0 and self.snd_una <= self.undo_marker:
            self._undo_rto = self._undo_rto or rto
            self._undo_eifel = False              # a second retransmission: ambiguous
            return
        self.undo_marker = self.snd_una
        self._undo_cwnd = self.cc.cwnd
        self._undo_ssthresh = self.cc.ssthresh
        self._undo_rtx0 = self.retransmits
        self._undo_dsacked = 0
        self._undo_tsval = self.tsval_at(now)     # the retransmission's TSval (RFC 3522)
        self._undo_eifel = self.ts_ok
        self._undo_rto = rto

    def _undo_check(self, Packet seg, int64_t ack_off, bint dsack, double now):
        """Eifel (RFC 3522 section 3.2): the first ACK past the episode's start echoes a
        TSval older than the retransmission's: the original arrived, the retransmission
        was spurious. D-SACK (RFC 3708 section 3): every retransmission of the episode was
        reported as a duplicate. Either way the reduction is undone (Linux
        tcp_undo_cwnd_reduction)."""
        spurious = False
        if self._undo_eifel and ack_off > self.undo_marker:
            self._undo_eifel = False
            tsecr = _tsecr(seg)
            spurious = (seg.d.opt_present & OPT_TS and tsecr
                        and _sdiff(tsecr, self._undo_tsval) < 0)
        if dsack:
            blk = seg.sack_blocks[0]
            lo = self.snd_una + _sdiff(blk[0], self._snd_seq(self.snd_una))
            if lo >= self.undo_marker:
                self._undo_dsacked += 1
            rtx = self.retransmits - self._undo_rtx0
            spurious = spurious or (rtx > 0 and self._undo_dsacked >= rtx)
        if spurious:
            self._undo_apply()
        # (else a later D-SACK may still show it)

    def _undo_apply(self) -> None:
        """Restore cwnd and ssthresh from before the episode (Linux
        tcp_undo_cwnd_reduction); after an RTO, stop its go-back-N resend (Linux
        tcp_try_undo_loss). Once per episode: the marker is cleared, so Eifel, D-SACK and
        F-RTO cannot undo it twice."""
        prior_cwnd, prior_ssthresh = self._undo_cwnd, self._undo_ssthresh
        self.undo_marker = -1
        self._undo_eifel = False
        self.frto = 0
        self._frto_send = False
        self._rto_recovery = False
        if self.in_recovery:
            self.in_recovery = False
            self.dupacks = 0
            self.cc.on_exit_recovery(self.snd_max - self.snd_una)
            if self.loss is not None:
                self.loss.on_exit_recovery()
        if self._undo_rto:
            # The RTO was spurious: stop the go-back-N resend (Linux tcp_try_undo_loss).
            if self.rtxq is not None:
                self.rtxq.clear_lost()
            self.snd_nxt = self.snd_max
            self._pending_rtx = False
        self.cc.cwnd = max(self.cc.cwnd, prior_cwnd)
        self.cc.ssthresh = max(self.cc.ssthresh, prior_ssthresh)
        self.spurious_rtx_undone += 1
        self._event(COUNT_SPURIOUS_RTX_UNDONE)

    # --- F-RTO (RFC 5682; Linux tcp_process_loss with tcp_frto=2) -----------------------

    def _frto_ack(self, now: float, advanced: bool, sacked_new: bool, dup: bool,
                  orig: bool) -> None:
        """An ACK after an RTO that F-RTO watches (Tcb.frto). ``orig``: it acknowledged
        or SACKed data the RTO did not resend (Linux FLAG_ORIG_SACK_ACKED; without SACK,
        any advance once new data went out, RFC 5682 2.1 step 3b)."""
        if not self.sack_ok:
            orig = advanced and self.frto == FRTO_NEW_SENT
        if orig and self.undo_marker >= 0:
            # Step 3b: something sent before the timeout and never resent arrived, so not
            # all of it was lost: the timeout was spurious (Linux tcp_try_undo_loss(true)).
            self._undo_apply()
            self._event(COUNT_FRTO_SPURIOUS_RTOS)
            return
        if self.snd_una >= self.recover:
            self.frto = 0                         # step 2a: all sent before the RTO is acked
            return
        if self.frto != FRTO_WAIT:
            if sacked_new or dup:
                self.frto = 0                     # step 3a: the loss was real
            else:
                self.frto = FRTO_WATCH            # resend again (Linux REXMIT_LOST)
            return
        if dup and not self.sack_ok:
            self.frto = 0                         # RFC 5682 2.1 step 2a: a duplicate ACK
        elif advanced:
            if (self._data_end() > self.snd_max
                    and self.snd_una + self.snd_wnd > self.snd_max):
                # Step 2b: new data instead of the next retransmission (sent in _output_data).
                self.frto = FRTO_NEW_SENT
                self._frto_send = True
            else:
                self.frto = 0                     # no new data to send: the usual recovery

    def _frto_new_data(self, now: float, out: list) -> bool:
        """RFC 5682 step 2b: up to two new segments (as Linux, whose cwnd is two segments
        then and nothing is in flight), from SND.MAX; the go-back-N position is kept."""
        gbn, top = self.snd_nxt, self.snd_max
        sent = False
        for _ in range(2):
            off = self.snd_max
            n = min(self.mss_now(), self._data_end() - off, self.snd_una + self.snd_wnd - off)
            if n <= 0:
                break
            self._send_segment(off, n, now, out, False)
            sent = True
        if gbn < top:
            self.snd_nxt = gbn                    # (without SACK: where go-back-N resumes)
        return sent

    def _loss_policy(self):
        """The loss-detection policy (Settings.loss_detection), made on first use."""
        if self.loss is None:
            self.loss = _loss_class(self.settings.loss_detection)()
        return self.loss

    def _is_dsack(self, blocks, ack_off: int) -> bool:
        """RFC 2883 section 4: the first SACK block is a D-SACK when it lies below the
        cumulative ACK or within the second block."""
        if not blocks:
            return False
        base = self._snd_seq(self.snd_una)
        lo = self.snd_una + _sdiff(blocks[0][0], base)
        hi = self.snd_una + _sdiff(blocks[0][1], base)
        if hi <= ack_off:
            return hi > lo
        if len(blocks) > 1:
            lo2 = self.snd_una + _sdiff(blocks[1][0], base)
            hi2 = self.snd_una + _sdiff(blocks[1][1], base)
            return lo2 <= lo and hi <= hi2
        return False

    def _loss_step(self, now: float, delivered: int, dsack: bool, advanced: bool,
                   flight_before: int) -> None:
        """Per ACK on a SACK connection: end a TLP episode (RFC 8985 7.4), let the
        loss-detection policy mark lost segments, enter recovery when any is (RFC 8985
        6.2, RFC 6675 5), set PRR's window (RFC 6937), restart the PTO (RFC 8985 7.2)."""
        if (self.snd_una >= self.snd_max and not dsack and not self.tlp_end
                and not self.in_recovery):
            # Nothing in flight, nothing to judge: no segment can be marked lost, so the
            # policy is not asked (nor made, for a connection that never needed it); only
            # the timers move, as _after_detect and _arm_pto would move them.
            if self._lr_kind == LR_REO:
                self._lr_at = None
                self._lr_kind = 0
            if advanced:
                self._arm_pto(now)
            return
        loss = self._loss_policy()
        self.rtxq.trim(self.snd_una)
        if self.tlp_end:
            self._tlp_acked(now, dsack, flight_before)
        lost, at = loss.on_ack(self, now, dsack)
        self._after_detect(now, lost, at)
        if self.in_recovery and self._sack_recovery:
            self._prr_ack(delivered, advanced)
        elif advanced:
            self._arm_pto(now)

    def _after_detect(self, now: float, lost: int, at) -> None:
        for _ in range(lost):
            self._event(COUNT_SEGMENTS_MARKED_LOST)
        if at is not None:
            self._lr_at = at                      # RACK reordering timer (RFC 8985 6.2)
            self._lr_kind = LR_REO
        elif self._lr_kind == LR_REO:
            self._lr_at = None
            self._lr_kind = 0
        if (not self.in_recovery and self.snd_una >= self.recover
                and self.rtxq.lost_bytes() > 0):
            self._enter_recovery(now)

    def _prr_ack(self, delivered: int, advanced: bool) -> None:
        """cwnd = pipe + sndcnt (RFC 6937 section 3; Linux tcp_cwnd_reduction, which
        leaves cwnd alone on an ACK that delivers nothing once recovery has sent)."""
        if delivered <= 0 and self.prr.out > 0:
            return
        pipe = self._pipe()
        self.cc.cwnd = pipe + self.prr.on_ack(delivered, pipe, self.cc.ssthresh, advanced)

    def _tlp_acked(self, now: float, dsack: bool, flight: int) -> None:
        """RFC 8985 7.4: the ACK of a probe episode. A D-SACK for a probe that was a
        retransmission says nothing was lost; an ACK past it without one says the probe
        repaired a loss, and the window is reduced (Linux tcp_process_tlp_ack: CWR, then
        cwnd = ssthresh)."""
        if dsack and self.tlp_is_retrans:
            self.tlp_end = 0
        elif self.snd_una >= self.tlp_end:
            if self.tlp_is_retrans and not self.in_recovery and not self._in_ecn_reduction():
                self.cc.on_enter_recovery(flight, now)
                self.cc.on_exit_recovery(self.snd_max - self.snd_una)
                self._event(COUNT_TLP_LOSSES_REPAIRED)
            self.tlp_end = 0

    cdef _handshake_window(self):
        """The handshake completed after `_syn_retransmits` SYN (SYN-ACK) retransmissions.
        RFC 5681 3.1 makes the initial window one segment after a lost SYN or SYN-ACK;
        RFC 6928 section 2, whose 10-segment IW we use, RECOMMENDS keeping the IW unless
        there was more than one such retransmission (a single one is often spurious with
        RFC 6298's 1 s initial RTO): as Linux's tcp_init_transfer (total_retrans > 1).
        ssthresh is never cut by the handshake's timer (Linux's tcp_init_metrics)."""
        if self._syn_retransmits > 1:
            self.cc.on_syn_retransmitted()

    cdef _arm_pto(self, double now):
        """RFC 8985 7.2: PTO = 2 * SRTT (+ WCDelAckT with one segment in flight, else
        Linux's TCP_TIMEOUT_MIN), when the RTO would not fire first; one probe per
        episode, none in recovery."""
        cdef double pto, rto_left
        if self._lr_kind == LR_REO and self._lr_at is not None:
            return
        if (self.in_recovery or self._rto_recovery or self.persist or self.tlp_end
                or self.snd_max <= self.snd_una
                or self.st < S_ESTABLISHED or not self.settings.tlp
                or not (self.loss if self.loss is not None
                        else _loss_class(self.settings.loss_detection)).tlp):
            if self._lr_kind == LR_TLP:
                self._lr_at = None
            return
        pto = 2 * self.rtt._srtt if self.rtt.has_sample else 1.0
        if self.snd_max - self.snd_una <= self.mss + 1:     # one segment (and our FIN)
            pto += self.rtt.min_rto               # WCDelAckT: Linux's tcp_rto_min
        else:
            pto += TLP_MIN_T
        rto_left = self.rtx_at - now if self.rtx_at is not None else self.rtt.rto
        if pto >= rto_left:
            if self._lr_kind == LR_TLP:
                self._lr_at = None
            return
        self._lr_at = now + pto
        self._lr_kind = LR_TLP

    def _on_loss_timer(self, now: float) -> None:
        kind = self._lr_kind
        self._lr_kind = 0
        q = self.rtxq
        if q is None or self.snd_una >= self.snd_max:
            return
        if kind == LR_REO:
            # RFC 8985 6.2 step 5 again, now that the reordering window has passed; what
            # the fast path acknowledged meanwhile is delivered first.
            q.on_ack(self.snd_una, self.sacked, now, self.rtt.min_rtt)
            lost, at = self._loss_policy().detect(self, now)
            self._after_detect(now, lost, at)
            if self.in_recovery and self._sack_recovery:
                self._prr_ack(0, False)
        elif kind == LR_TLP and not self.in_recovery and not self.tlp_end:
            # RFC 8985 7.3: new data if the windows allow (cwnd is not consulted), else
            # the last segment again; sent at the next output.
            if (self._data_end() > self.snd_nxt == self.snd_max
                    and self.snd_una + self.snd_wnd > self.snd_nxt):
                self._tlp_send = 1
            else:
                self._tlp_send = 2

    cdef _rate_sample(self, double now):
        """delivery_rate: bytes acknowledged per second over about one SRTT."""
        cdef double span
        if self._dr_t0 < 0:
            self._dr_t0 = now
            self._dr_b0 = self.bytes_acked
            return
        span = now - self._dr_t0
        if span > 0 and span >= (self.rtt._srtt if self.rtt.has_sample else 0.0):
            self.delivery_rate = (self.bytes_acked - self._dr_b0) / span
            if self.snd_una >= self.snd_max:
                self._dr_t0 = -1.0                # idle next: open a new interval later
            else:
                self._dr_t0 = now
                self._dr_b0 = self.bytes_acked

    def _pipe(self) -> int:
        """SetPipe (RFC 6675 section 4): unSACKed bytes not deemed lost, plus unSACKed
        bytes already retransmitted."""
        if self.rtxq is not None:
            self.rtxq.trim(self.snd_una)
            return self.rtxq.pipe()               # by the loss policy's marks, in C
        una, top = self.snd_una, self.snd_max
        lost_edge = self._lost_boundary()
        unsacked = (top - una) - self._sacked_bytes(una, top)
        lost = (lost_edge - una) - self._sacked_bytes(una, lost_edge)
        hr = min(max(self._high_rxt, una), top)
        rexmit = (hr - una) - self._sacked_bytes(una, hr)
        return unsacked - lost + rexmit

    def _unsacked_from(self, off: int):
        """The first unSACKed offset >= off and where that hole ends."""
        for a, b in self.sacked:
            if off < a:
                return off, a
            if off < b:
                off = b
        return off, self.snd_max

    def _next_seg(self):
        """NextSeg (RFC 6675 section 4): (offset, length, is_retransmission) or None."""
        mss = self.mss_now()                    # its SACK blocks come out of its payload
        if self.rtxq is not None:
            return self._next_seg_marked()
        lost_edge = self._lost_boundary()
        start, hole_end = self._unsacked_from(max(self._high_rxt, self.snd_una))
        # (1) the first unSACKed hole above HighRxt that IsLost() says is lost
        if start < lost_edge and start < self.snd_max:
            return start, min(mss, hole_end - start, lost_edge - start), True
        # (2) new data, as the receiver's window allows
        seg = self._next_seg_new_data(mss)
        if seg is not None:
            return seg
        # (3) is applied in _next_seg_marked, where the loss-detection policy's marks
        # exist; this path (no per-transmission queue yet) goes straight to (4).
        # (4) rescue retransmission, once per recovery window
        return self._next_seg_rescue(mss)

    def _next_seg_new_data(self, mss: int):
        """NextSeg rule (2): new data the receiver's window allows, or None."""
        data_end = self._data_end()
        if data_end > self.snd_nxt and self.snd_una + self.snd_wnd > self.snd_nxt:
            n = min(mss, data_end - self.snd_nxt, self.snd_una + self.snd_wnd - self.snd_nxt)
            return self.snd_nxt, n, False
        return None

    def _next_seg_rescue(self, mss: int):
        """NextSeg rule (4): the rescue retransmission, once per recovery window, or None."""
        if self._rescue_rxt is None or self.snd_una > self._rescue_rxt:
            top_start, _ = self._unsacked_from(max(self.snd_max - mss, self.snd_una))
            if top_start < self.snd_max:
                self._rescue_rxt = self.recover
                return top_start, min(mss, self.snd_max - top_start), True
        return None

    def _next_seg_marked(self):
        """NextSeg (RFC 6675 section 4) with IsLost() given by the loss-detection
        policy's marks (RACK, RFC 8985 6.2, or DupThresh): (offset, length, rtx) or None."""
        mss = self.mss_now()                    # its SACK blocks come out of its payload
        # (1) the first segment deemed lost and not retransmitted since
        r = self.rtxq.next_lost(self.snd_una)
        if r is not None:
            return r[0], min(mss, r[1] - r[0]), True
        # (2) new data, as the receiver's window allows
        seg = self._next_seg_new_data(mss)
        if seg is not None:
            return seg
        # (3) an unSACKed segment above HighRxt and below the highest SACKed byte
        # (section 4 NextSeg rule (3), a SHOULD), with DupThresh's IsLost(). Not with
        # RACK: its time-based marks replace DupThresh (RFC 8985 6.2), and a hole RACK has
        # not marked is within the reordering window; Linux (tcp_xmit_retransmit_queue)
        # likewise retransmits only what is marked lost.
        if self.sacked and self._loss_policy().name != "rack":
            start, hole_end = self._unsacked_from(max(self._high_rxt, self.snd_una))
            if start < self.sacked[-1][1] and start < hole_end:
                return start, min(mss, hole_end - start), True
        # (4) rescue retransmission, once per recovery window (not after an RTO, where
        # everything unSACKed is marked lost already)
        return self._next_seg_rescue(mss) if self.in_recovery else None

    def _output_sack_recovery(self, now: float, out: List[bytes]) -> bool:
        sent = False
        pipe = self._pipe()
        for _ in range(1024):                      # bounded: at most cwnd / SMSS rounds
            if self.cc.cwnd - pipe < self.mss:
                break
            nxt = self._next_seg()
            if nxt is None:
                break
            off, n, rtx = nxt
            # Ranges up to snd_max include our FIN's sequence number, which is no data
            # byte (RFC 9293 3.4): stop at the data; send_range adds the FIN there.
            n = min(n, self._data_end() - off)
            fin_only = n <= 0 and self.fin_off is not None and off == self.fin_off
            if n <= 0 and not fin_only:
                break
            n = max(n, 0)
            self._send_segment(off, n, now, out, rtx)
            if rtx:
                self._high_rxt = max(self._high_rxt, off + max(n, 1))
            pipe += max(n, 1)
            if self.prr is not None:
                self.prr.sent(max(n, 1))          # prr_out (RFC 6937 section 3)
            sent = True
        return sent

    def _retransmit_head(self) -> None:
        """Resend the first unacknowledged segment at the next output."""
        self._pending_rtx = True
        self._rtt_off = None                      # Karn's rule

    cdef _receive_text(self, Packet seg, int64_t seq, double now):
        cdef int64_t seq_off, room, n
        data = seg.payload
        seq_off = self.rcv_nxt + _sdiff(seq, self._rcv_seq(self.rcv_nxt))
        reasm = self._reassembler()
        # Trim to the window: before RCV.NXT is duplicate, past the advertised edge is
        # not ours to take (RFC 9293 3.10.7.4 "seventh").
        if seq_off < self.rcv_nxt:
            self._note_duplicate(seq_off, min(seq_off + len(data), self.rcv_nxt))
            data = data[self.rcv_nxt - seq_off:]
            seq_off = self.rcv_nxt
        room = self.rcv_adv - seq_off
        if len(data) > room:
            data = data[:max(room, 0)]
            self._event(COUNT_TRIMMED_TO_WINDOW)
        if not data:
            self._ack_now = True
            return
        had_holes = reasm.holes > 0
        in_order = seq_off == self.rcv_nxt
        if not in_order:
            self._dup_ack_now()
            if not self._ooo_admit(reasm, seq_off - 1, len(data)):
                return                            # refused; its duplicate ACK is owed
            self.last_ooo_off = seq_off           # its block goes first in our SACK option
        refused = reasm.dropped_segments
        dups = reasm.dup_bytes
        delivered = reasm.add(seq_off - 1, data)
        if reasm.dup_bytes - dups == len(data):
            self._note_duplicate(seq_off, seq_off + len(data))   # held out of order already
        if reasm.dropped_segments != refused:
            # More holes than max_ooo_holes: the segment is not kept (the peer resends it).
            self._event(COUNT_DROP_OOO_HOLE_LIMIT)
        self.rcv_nxt = 1 + reasm.next
        self.bytes_received += delivered
        n = len(data)
        if not in_order or had_holes or delivered == 0:
            # RFC 5681 4.2 / RFC 9293 3.8.6.3: out-of-order data, or data that fills a
            # hole, is acknowledged at once (it drives the sender's fast retransmit).
            self._event(COUNT_OOO_SEGMENTS_IN if not in_order else COUNT_HOLE_FILLS_IN)
        # The ACK policy (Tcb.data_ack_policy, tcb.pyx); reordering grants quick ACKs again
        # (Linux's tcp_enter_quickack_mode).
        self.data_ack_policy(n, not in_order or had_holes or delivered == 0, now)
        if not in_order:
            self.enter_quickack()

    cdef _dup_ack_now(self):
        """An out-of-order segment arrived: its duplicate ACK is owed at once. RFC 5681 4.2:
        one for every out-of-order segment, also within one batch (a coalesced ACK hides
        the duplicates a sender counts): an ACK already owed goes out first."""
        if self._ack_now:
            self.host.emit(self._packet(self.snd_max, ACK))
            self._after_send_ack()
            self._event(COUNT_PURE_ACKS_OUT)
        self._ack_now = True

    cdef bint _ooo_admit(self, Reassembler reasm, uint64_t off, int64_t n) except -1:
        """Room in the host's out-of-order budget (settings.ooo_budget) for the data at
        reassembler offset `off`, n bytes. Under pressure this connection drops its own
        newest out-of-order data first: from the highest sequence down to the arriving
        segment, at least rcv_buf / 8 at a time (Linux tcp_prune_ofo_queue). That reneges
        on SACKed data, which RFC 2018 section 8 allows: the SACK blocks come from what is
        held, so they stop naming it, and the sender keeps data until it is cumulatively
        acknowledged. False (counted) when the segment still does not fit."""
        cdef OooBudget budget = reasm.budget
        cdef uint64_t need, goal
        if budget is None:
            return True
        need = reasm.missing_c(off, off + <uint64_t>n)
        if budget.held + need <= budget.limit:
            return True
        goal = budget.held + need - budget.limit
        if goal < <uint64_t>(self.rcv_buf >> 3):
            goal = <uint64_t>(self.rcv_buf >> 3)
        if reasm.prune_c(off, goal):
            self._event(COUNT_OOO_PRUNES)
            need = reasm.missing_c(off, off + <uint64_t>n)
            if budget.held + need <= budget.limit:
                return True
        self._event(COUNT_DROP_OOO_BUDGET)
        return False

    cdef _check_fin(self, double now):
        """Process the peer's FIN once every byte before it has arrived."""
        cdef int st
        if self._fin_received or self.rcv_fin_off is None or self.rcv_nxt != self.rcv_fin_off:
            return
        self._fin_received = True
        self.rcv_nxt += 1
        self._ack_now = True                      # RFC 9293: ACK the FIN at once
        st = self.st
        if st in (S_SYN_RECEIVED, S_ESTABLISHED):
            self._transition(E_FIN)
        elif st == S_FIN_WAIT_1:
            if self.fin_off is not None and self.snd_una > self.fin_off:
                self._enter_time_wait(E_FIN_OURS_ACKED, now)
            else:
                self._transition(E_FIN)           # to CLOSING
        elif st == S_FIN_WAIT_2:
            self._enter_time_wait(E_FIN, now)

    cdef _enter_time_wait(self, int event, double now):
        """TIME-WAIT by `event` (RFC 9293 3.10.7.4), or CLOSED when the host has
        settings.max_time_wait connections in it already."""
        if self.host.time_wait_full():
            self._event(COUNT_TIME_WAIT_OVERFLOW)
            self._ack_now = True
            self.host.emit(self._packet(self.snd_nxt, ACK))   # still ACK their FIN
            self._terminate(E_TIME_WAIT_FULL, None)
            return
        self._transition(event)
        self.rtx_at = None
        self.delack_at = None
        self.keepalive_at = None
        self.timewait_at = now + 2 * self.settings.msl
        # Everything we sent is acknowledged and nothing more arrives: the buffers go back
        # to the host's pools for new connections now, not 2*MSL later (as Linux's TIME-WAIT
        # is a small inet_timewait_sock). A server that closes first (HTTP with
        # Connection: close) would otherwise keep two fresh 1 MiB buffers per connection.
        self._return_buffers()
        if self.settings.msl == 0:
            self._ack_now = True
        if self.user_closed:
            self._to_record()

    cdef _to_record(self):
        """Closed by the application (or an orphan) in TIME-WAIT: the host keeps TIME-WAIT
        as a small record of C fields (as Linux's inet_timewait_sock) and lets this object
        go, so a server holding thousands costs the cyclic GC nothing. The ACK owed for
        the peer's FIN goes now, and the window of every later ACK is the one it
        advertises."""
        if not self.host.time_wait_compact(self):
            return
        if self._ack_now:
            self.host.emit(self._packet(self.snd_max, ACK))
            self._after_send_ack()
            self._event(COUNT_PURE_ACKS_OUT)
        window = self.advertised_window()
        deadline = self.timewait_at
        self.timewait_at = None
        self._tw = make_time_wait(self, window, deadline)
        self.host.hold_time_wait(self, self._tw)

    cdef int64_t time_wait_reopen(self, Packet seg) except -2:
        """A SYN (no ACK, no RST) for this TIME-WAIT connection that a listener could take:
        when it is beyond the old incarnation, delete this TCB and return the ISS for the
        new one; else -1 (the SYN then gets the usual TIME-WAIT answer, an ACK).

        As Linux's tcp_timewait_state_process: its sequence number is beyond RCV.NXT (RFC
        1122 4.2.2.13), or it carries a TSval newer than TS.Recent (RFC 6191 2); and with
        timestamps on, a TSval older than TS.Recent is refused in any case (PAWS, RFC 7323
        5.3). (A kernel's next SYN from a reused port often carries the same TSval as its
        last segment, within one millisecond, but a higher clock-driven ISN.) The new ISS
        lies beyond our old SND.NXT by a window and the SYN, so no old duplicate of ours
        can be taken for new data (Linux: tw_snd_nxt + 65535 + 2)."""
        cdef uint32_t iss
        cdef bint ts = self.ts_ok and seg.d.opt_present & OPT_TS
        if self.st != S_TIME_WAIT:
            return -1
        if ts and _sdiff(seg.d.tsval, self.ts_recent) < 0:
            return -1
        if not (_sdiff(seg.d.seq, self._rcv_seq(self.rcv_nxt)) > 0
                or (ts and _sdiff(seg.d.tsval, self.ts_recent) > 0)):
            return -1
        iss = self._snd_seq(self.snd_max) + 65535 + 2
        if iss == 0:
            iss = 1
        self._event(COUNT_TIME_WAIT_REOPENED)
        self._terminate(E_TIME_WAIT_REOPEN, None)
        return iss

    # ===================================================================================
    # ICMP (RFC 1122 4.2.3.9, RFC 5927, RFC 1191)
    # ===================================================================================

    def on_icmp_error(self, icmp_type: int, code: int, mtu: int, quoted_seq: int,
                      now: float) -> None:
        # RFC 5927 4.1: act only on errors quoting a sequence number we have in flight.
        off = self.snd_una + _sdiff(quoted_seq, self._snd_seq(self.snd_una))
        if not (self.snd_una <= off < max(self.snd_max, self.snd_una + 1)):
            self._event(COUNT_ICMP_IGNORED_SEQ)
            return
        if self.ipver == 6:
            self._on_icmpv6_error(icmp_type, code, mtu)
            return
        if icmp_type == 3 and code == 4:
            # Fragmentation needed (RFC 1191): the next-hop MTU, never below Linux's
            # min_pmtu (552), less the IP and TCP headers and the options every segment
            # carries (timestamps, RFC 7323; RFC 9293 3.7.1), as Linux's tcp_mtu_to_mss.
            # One that would not lower the MSS is ignored (RFC 1191 section 3).
            if not mtu:
                return
            self._path_mtu_lowered(max(mtu, MIN_PMTU), 40)
            return
        if self.st == S_SYN_SENT and icmp_type == 3 and code in (2, 3):
            # Protocol/port unreachable to our SYN is as good as a RST (hard error).
            self._terminate(E_ICMP_UNREACHABLE,
                            ConnectionRefused("connection refused (ICMP unreachable)"))
            return
        self.soft_error = (icmp_type, code)       # reported if the connection times out
        self._event(COUNT_ICMP_SOFT_ERRORS)

    def _path_mtu_lowered(self, pmtu: int, headers: int) -> None:
        """A router says the path takes `pmtu` bytes (`headers`: IP + TCP, 40 or 60). The
        MSS becomes that less the headers and the options every segment carries; one that
        would not lower the MSS is ignored (RFC 1191 3, RFC 8201 4: never increase on an
        ICMP message). What was in flight is resent at once at the new size: the packets
        were dropped (Linux's tcp_simple_retransmit). That resend re-arms the timers, so
        no tail-loss probe goes out first (Linux: tcp_rearm_rto)."""
        new_mss = pmtu - headers - (TS_OPTION_SPACE if self.ts_ok else 0)
        if new_mss >= self.mss:
            return
        self.mss_limit = min(self.mss_limit, pmtu - headers)
        self._lower_send_mss(new_mss)
        self.snd_nxt = self.snd_una
        self._rtt_off = None
        if self._lr_kind == LR_TLP:
            self._lr_at = None
            self._lr_kind = 0
        self._event(COUNT_PMTU_UPDATES)
        self.host.wake(self)

    def _on_icmpv6_error(self, icmp_type: int, code: int, mtu: int) -> None:
        if icmp_type == 2:
            # Packet Too Big (RFC 4443 3.2, RFC 8201 4): the path MTU, never below 1280
            # (a smaller value is taken as 1280, RFC 8201 4), less the IPv6 and TCP
            # headers and the options every segment carries, as for IPv4. One that would
            # not lower the MSS is ignored (RFC 8201 4: never increase on a PTB).
            self._path_mtu_lowered(max(mtu, MIN_PMTU6), 60)
            return
        # Linux icmpv6_err_convert: port unreachable (1/4) and an unrecognised next header
        # (parameter problem 4/1) are fatal, like protocol/port unreachable for IPv4
        # (RFC 1122 4.2.3.9): a hard error to our SYN. The rest are soft errors.
        if self.st == S_SYN_SENT and ((icmp_type == 1 and code == 4)
                                      or (icmp_type == 4 and code == 1)):
            self._terminate(E_ICMP_UNREACHABLE,
                            ConnectionRefused("connection refused (ICMPv6 unreachable)"))
            return
        self.soft_error = (icmp_type, code)
        self._event(COUNT_ICMP_SOFT_ERRORS)

    def _lower_send_mss(self, new_mss: int) -> None:
        """Lower the send MSS (path MTU discovery, black-hole detection): no more TSO
        super-segments cut for the link's MTU, and congestion control counts the new
        size."""
        self.mss = new_mss
        self.gso_max = 0
        self._set_ref_min()
        self.cc.set_mss(new_mss)

    # ===================================================================================
    # Timers
    # ===================================================================================

    cpdef object deadline(self):
        best = None
        for t in (self.rtx_at, self.delack_at, self.timewait_at, self.keepalive_at,
                  self._lr_at):
            if t is not None and (best is None or t < best):
                best = t
        return best

    cpdef on_timer(self, double now):
        if self.timewait_at is not None and now >= self.timewait_at:
            self._terminate(E_2MSL_TIMEOUT, None)
            return
        if self.delack_at is not None and now >= self.delack_at:
            self.delack_at = None
            self._ack_now = True
        if self._lr_at is not None and now >= self._lr_at:
            self._lr_at = None                    # TLP or RACK reordering timer (RFC 8985)
            if self.rtx_at is None or now < self.rtx_at:
                self._on_loss_timer(now)
        if self.rtx_at is not None and now >= self.rtx_at:
            self.rtx_at = None
            if self.persist:
                self._on_persist(now)
            else:
                self._on_rto(now)
        if (self.keepalive_at is not None and now >= self.keepalive_at
                and self.st != S_CLOSED):
            self._on_keepalive(now)
        if self.st != S_CLOSED:
            self.host.wake(self)

    def _on_rto(self, now: float) -> None:
        if self.snd_una >= self.snd_max and self.st not in (S_SYN_SENT, S_SYN_RECEIVED):
            return
        s = self.settings
        if self.retries == 0 and self.probes_out == 0:
            self.stall_at = now - self.rtt.rto    # a stall begins: when this timer started
        self.retries += 1
        if self.st in (S_SYN_SENT, S_SYN_RECEIVED):
            limit = s.syn_retries
        elif self.orphan:
            limit = s.orphan_retries              # Linux tcp_write_timeout, SOCK_DEAD
        else:
            limit = s.max_retries
        timed_out = self.retries > limit
        if timed_out and self.orphan and limit == s.orphan_retries:
            self._event(COUNT_ORPHAN_RETRY_ABORTS)
        elif self._user_timed_out(now):
            return
        if timed_out:
            err = ConnectionTimedOut("connection timed out")
            if self.st == S_SYN_RECEIVED and self.passive:
                err = None                        # a half-open connection just goes away
            self._terminate(E_TIMEOUT, err)
            return
        if self.st in (S_SYN_SENT, S_SYN_RECEIVED):
            self._syn_retransmits += 1
        elif (self.settings.mtu_probing and self.retries > BLACK_HOLE_RETRIES
              and min(self.snd_max, self._data_end()) - self.snd_una >= self.mss):
            # Black-hole detection (RFC 4821's full-stop timeout; Linux tcp_mtu_probing=1,
            # tcp_write_timeout): full-sized segments time out beyond tcp_retries1 with no
            # frag-needed: first tcp_base_mss, then half the MSS each further timeout.
            new_mss = BASE_MSS if self.mss > BASE_MSS else max(self.mss // 2, MTU_PROBE_FLOOR)
            if new_mss < self.mss:
                self._lower_send_mss(new_mss)
                self._event(COUNT_PMTU_BLACK_HOLES)
        # RFC 6298 5.4-5.6 and RFC 5681 eq. 4: back off, shrink cwnd, go back to SND.UNA.
        self.rtt.backoff()
        if self.ts_ok:
            self._ts_floor = self.ts_now(now)
        # F-RTO (RFC 5682 3.1 step 1), as Linux's tcp_enter_loss: not for a timeout during
        # fast recovery, where the loss is known to be real, unless it is a repeated one.
        frto = (s.frto and self.st not in (S_SYN_SENT, S_SYN_RECEIVED)
                and (not self.in_recovery or self.retries > 1))
        if self.st not in (S_SYN_SENT, S_SYN_RECEIVED):
            # A handshake timeout says nothing of the path's capacity: the window is set
            # when the handshake completes (_handshake_window), as Linux resets ssthresh
            # then (tcp_init_metrics) rather than keep a cut made for the SYN.
            self._undo_start(now, True)
            self.cc.on_timeout(self.snd_max - self.snd_una)
        self.in_recovery = False
        self.dupacks = 0
        self.cwnd_bonus = 0
        self.recover = self.snd_max
        self.frto = FRTO_WAIT if frto else 0
        self._frto_send = False
        q = self.rtxq
        if q is None or not self.sack_ok:
            self.sacked = []                      # RFC 2018 section 8: the receiver may renege
            self._rto_recovery = False
            self.snd_nxt = self.snd_una           # go back N (RFC 5681 3.1, RFC 6298 5.4)
        else:
            # RFC 8985 6.3: all in flight is lost; the SACKed stays SACKed unless the
            # receiver reneged (Linux tcp_timeout_mark_lost). Then the segments marked lost
            # go out as the pipe allows (RFC 6675 5.1: the scoreboard keeps serving after
            # an RTO), not the SACKed ones, as Linux's Loss state resends.
            q.trim(self.snd_una)
            if q.mark_all_lost():
                self.sacked = []
            q.orig_limit = self.snd_max
            self._rto_recovery = True
            self._high_rxt = self.snd_una
            self._rescue_rxt = None
        self._lr_at = None
        self.tlp_end = 0
        self._tlp_send = 0
        if self.snd_wnd > 0 and self.st not in (S_SYN_SENT, S_SYN_RECEIVED):
            # RFC 6298 5.4: retransmit the earliest unacknowledged segment, whatever Nagle
            # or SWS avoidance would say about a short one (else nothing re-arms the timer).
            self._pending_rtx = True
        self._rtt_off = None
        self._event(COUNT_TIMEOUTS)

    def _on_persist(self, now: float) -> None:
        # A zero-window probe (RFC 9293 3.8.6.1): the byte at SND.UNA, past the window,
        # the interval doubling with each probe up to max_rto (persist_timeout). Also when
        # sender SWS avoidance holds data with nothing in flight (output_data): then the
        # byte fits the window and its ACK brings the window we may have missed.
        if self._data_end() > self.snd_una:
            s = self.settings
            if self.retries == 0 and self.probes_out == 0:
                self.stall_at = now - self.persist_timeout()   # when the window shut
            if self.orphan and self.probes_out >= s.orphan_retries:
                # Nobody will read or send on it: give up after orphan_retries probes,
                # answered or not (Linux tcp_probe_timer with SOCK_DEAD).
                self._event(COUNT_ORPHAN_PROBE_ABORTS)
                self._terminate(E_TIMEOUT, ConnectionTimedOut("orphan: zero window"))
                return
            if self.probes_unanswered >= s.max_retries:
                # RFC 1122 4.2.2.17 keeps the connection open only while the receiver
                # acknowledges the probes: max_retries unanswered ones end it (Linux:
                # tcp_retries2 against icsk_probes_out).
                self._event(COUNT_PERSIST_TIMEOUTS)
                self._terminate(E_TIMEOUT, ConnectionTimedOut("zero window: peer not "
                                                              "answering probes"))
                return
            if self._user_timed_out(now):
                return
            self._probe = True
            self.probes_out += 1
            self.probes_unanswered += 1
            self._event(COUNT_WINDOW_PROBES)
        else:
            self.persist = False
            if self.snd_max > self.snd_una:
                # A FIN went out while persisting (send_range arms no RTO then): it needs
                # its retransmission timer (RFC 6298 5.1).
                self.rtx_at = now + self.rtt.rto

    cdef bint _user_timed_out(self, double now) except -1:
        """RFC 5482 / Linux TCP_USER_TIMEOUT: end the connection when its data has stayed
        unacknowledged, or behind a shut window, for settings.user_timeout seconds since
        the stall began (stall_at). Returns True when it did."""
        ut = self.settings.user_timeout
        if ut is None or now - self.stall_at < ut:
            return False
        self._event(COUNT_USER_TIMEOUTS)
        self._terminate(E_TIMEOUT, ConnectionTimedOut("user timeout: data unacknowledged "
                                                      f"for {ut:g} s"))
        return True

    def _on_keepalive(self, now: float) -> None:
        s = self.settings
        if self.keepalive_sent >= s.keepalive_probes:
            self._terminate(E_TIMEOUT, ConnectionTimedOut("keepalive: peer not answering"))
            return
        if self.st in (S_ESTABLISHED, S_CLOSE_WAIT, S_FIN_WAIT_2):
            # RFC 1122 4.2.3.6: SEG.SEQ = SND.NXT - 1, no data.
            self.host.emit(self._packet(self.snd_max - 1, ACK))
            self.keepalive_sent += 1
            self._event(COUNT_KEEPALIVE_PROBES)
        self.keepalive_at = now + s.keepalive_interval

    # ===================================================================================
    # Output
    # ===================================================================================

    cpdef _output(self, double now, list out):
        """Append every segment this connection should send now to ``out``."""
        cdef int st
        cdef bint sent_any
        st = self.st
        if st == S_CLOSED:
            return
        sent_any = False
        if st == S_SYN_SENT:
            if self.snd_nxt == 0:
                self._send_syn(now, out, ack=False)
                sent_any = True
        elif st == S_SYN_RECEIVED:
            if self.snd_nxt == 0:
                self._send_syn(now, out, ack=True)
                sent_any = True
        elif st != S_TIME_WAIT:
            sent_any = self._output_data(now, out)
        if self._ack_now and not sent_any:
            # <SEQ=SND.NXT> of RFC 9293 3.10.7.4 is the highest sequence sent (snd_max):
            # after a go-back-N rewind snd_nxt can lie below the peer's RCV.NXT, and an ACK
            # it finds unacceptable is answered by an ACK, forever (both sides rewound).
            out.append(self._packet(self.snd_max, ACK))
            self._after_send_ack()
            self._event(COUNT_PURE_ACKS_OUT)
        # Keepalive (RFC 1122 4.2.3.6): the idle clock restarts with every segment received.
        if (self.settings.keepalive is not None and self.keepalive_sent == 0
                and st in (S_ESTABLISHED, S_CLOSE_WAIT, S_FIN_WAIT_2)):
            self.keepalive_at = self.last_recv_at + self.settings.keepalive

    cdef _send_syn(self, double now, list out, bint ack):
        s = self.settings
        cdef int opts = OPT_MSS
        if s.window_scaling and (not ack or self._ws_ok):
            opts |= OPT_WSCALE
        if s.sack and (not ack or self.sack_ok):
            opts |= OPT_SACK_PERM
        if s.timestamps and (not ack or self.ts_ok):
            opts |= OPT_TS
        window = self._initial_rcv_window()
        if ack:
            self.rcv_adv = self.rcv_nxt + window
        ecn_flags = 0
        if ack:
            if self.ecn_ok:
                ecn_flags = ECE                    # RFC 3168 6.1.1: ECN-setup SYN-ACK
        elif self.retries == 0:
            # RFC 3168 6.1.1: an ECN-setup SYN (ECE and CWR) when settings.ecn == 1. A
            # retransmitted SYN goes without them (6.1.1.1: a path may drop such SYNs;
            # Linux's tcp_ecn_clear_syn with tcp_ecn_fallback).
            self._ecn_syn = s.ecn == 1
            if self._ecn_syn:
                ecn_flags = ECE | CWR
        out.append(self.build_syn(ack, window, opts, now, ecn_flags))
        self.snd_nxt = 1
        self.snd_max = max(self.snd_max, 1)
        if self.rtx_at is None:
            self.rtx_at = now + self.rtt.rto
        if self.retries == 0 and self._rtt_off is None:
            self._rtt_off = 0
            self._rtt_start = now
        if ack:
            self._after_send_ack()
        self._event(COUNT_SYN_ACKS_OUT if ack else COUNT_SYNS_OUT)

    cdef bint _output_data(self, double now, list out) except -1:
        sent = False
        if (self.snd_una == self.snd_max and self.snd_nxt == self.snd_una
                and now - self.last_send_at > self.rtt.rto and self.unsent > 0):
            # RFC 5681 4.1: restart from the restart window after an idle period > RTO.
            self.cc.on_idle(now - self.last_send_at, self.rtt.rto)
        if self._pending_rtx:                      # fast retransmit / partial ACK
            self._pending_rtx = False
            if self.snd_una < self.snd_max:
                n = max(0, min(self.mss_now(), self._data_end() - self.snd_una))
                self._send_segment(self.snd_una, n, now, out, True)
                sent = True
        if self._probe:                            # zero-window probe: one byte
            self._probe = False
            if self._data_end() > self.snd_una:
                n = 1
                if self.snd_wnd > 0 and self.snd_max == self.snd_una:
                    # Sender SWS avoidance held a short segment and its override timeout
                    # ran out (RFC 1122 4.2.3.4): send what the window takes, up to an MSS.
                    n = min(self.mss, self.snd_wnd, self._data_end() - self.snd_una)
                self._send_segment(self.snd_una, n, now, out, self.snd_una < self.snd_max)
                sent = True
            self.persist = True
            self.rtx_at = now + self.persist_timeout()
        if self._tlp_send:
            sent = self._send_probe(now, out) or sent
        if self.frto == FRTO_NEW_SENT:
            # F-RTO step 2b: new data, then no retransmission until the next ACK tells
            # whether the timeout was spurious (Linux tcp_xmit_recovery, REXMIT_NEW).
            if self._frto_send:
                self._frto_send = False
                sent = self._frto_new_data(now, out) or sent
            return sent
        if (self.in_recovery and self._sack_recovery) or self._rto_recovery:
            return self._output_sack_recovery(now, out) or sent
        # The steady-state loop (windows, Nagle, SWS, FIN) is compiled: Tcb.output_data.
        if self.output_data(now, out) > 0:
            if self.rtxq is not None:
                self._arm_pto(now)                # RFC 8985 7.2: after sending new data
            return True
        return sent

    def _send_probe(self, now: float, out: list) -> bool:
        """The tail-loss probe (RFC 8985 7.3): one segment of new data, or the last
        segment sent, then the RTO restarted."""
        kind, self._tlp_send = self._tlp_send, 0
        if self.snd_una >= self.snd_max or self.in_recovery:
            return False
        data_end = self._data_end()
        if kind == 1 and data_end > self.snd_nxt:
            off = self.snd_nxt
            n = min(self.mss, data_end - off, self.snd_una + self.snd_wnd - off)
            rtx = False
        else:
            # The last segment sent: its data ends at SND.MAX (or the data's end, when the
            # FIN went too), whatever the user has queued beyond.
            top = min(data_end, self.snd_max)
            off = max(self.snd_una, top - self.mss)
            n = max(0, top - off)
            rtx = True
        if n <= 0 and not (self.fin_off is not None and off == self.fin_off):
            return False
        self._send_segment(off, n, now, out, rtx)
        if rtx:
            self._rtt_off = None                  # Karn's rule
        self.tlp_end = self.snd_max               # TLP.end_seq
        self.tlp_is_retrans = rtx
        self.tlp_probes += 1
        self._event(COUNT_TLP_PROBES)
        self.rtx_at = now + self.rtt.rto
        return True

    cdef _after_send_ack(self):
        self.ack_sent()

    def _emit_rst(self, seq: int) -> None:
        self.host.emit(self._rst_packet(seq & MASK))
        self._event(COUNT_RSTS_OUT)

    # ===================================================================================
    # Helpers
    # ===================================================================================

    cdef uint32_t _snd_seq(self, int64_t off) noexcept:
        return <uint32_t>(self.iss + off)

    cdef uint32_t _rcv_seq(self, int64_t off) noexcept:
        return <uint32_t>(self.irs + off)

    def _ring(self) -> SendRing:
        # Buffers are created on first use: an idle connection holds no buffer memory.
        if self._send_ring is None:
            self._send_ring = self.host.take_ring()
            self._set_ref_min()
        return self._send_ring

    def _reassembler(self) -> Reassembler:
        if self._reasm is None:
            self._reasm = self.host.take_reassembler()
        return self._reasm

    cdef int64_t _data_end(self):
        """Offset just past the last byte written by the user."""
        return 1 + (self._send_ring.tail if self._send_ring is not None else 0)

    def _queue_fin(self) -> None:
        if self.fin_off is None:
            self.fin_off = self._data_end()

    cdef _transition(self, int event):
        """The one place a connection changes state: to where `event` leads from the
        current state, as the table in transitions.pyx says; the host is told."""
        cdef int old = self.st
        cdef int new = next_state(old, event)
        if new < 0:
            raise RuntimeError(f"TCP state machine: {_STATES[old].name} has no transition "
                               f"on {TcpEvent(event).name}")
        self.st = new
        self.host.state_changed(self, old, new)

    cdef _terminate(self, int event, error):
        """Enter CLOSED by `event`: delete the TCB (RFC 9293 3.10.7) and report
        ``error``."""
        if error is not None and self.error is None:
            self.error = error
        self.rtx_at = self.delack_at = self.timewait_at = self.keepalive_at = None
        self._transition(event)
        self._return_buffers()

    cdef _return_buffers(self):
        """Give the buffers to the host's pools for new connections: allocating and
        freeing 1 MiB rings per connection costs more than the whole handshake."""
        ring = self._send_ring
        if ring is not None:
            ring.reset()          # also lets go of referenced application bytes at once
            if self.host.return_ring(ring):
                self._send_ring = None
        reasm = self._reasm
        # Unread data stays readable after CLOSED: only an empty assembler goes back.
        if reasm is not None and reasm.readable == 0 and self.host.return_reassembler(reasm):
            self._reasm = None

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error
