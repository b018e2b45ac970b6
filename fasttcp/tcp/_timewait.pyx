# cython: language_level=3
"""TIME-WAIT as a small record (as Linux's inet_timewait_sock, tcp_timewait_state_process).

A connection the application has closed keeps nothing in TIME-WAIT but what answers
segments for 2*MSL (RFC 9293 3.10.7.4, 3.6.1): addresses, ports, SND.NXT, RCV.NXT, the
window, the timestamp state and the deadline. The host swaps its Connection for a
:class:`TimeWait` (see Connection._enter_time_wait and Host.hold_time_wait): a cdef class
of C fields only, so Cython gives it no GC traversal and a full collection of a server
holding thousands of them walks none (a whole Connection is three GC-tracked objects).

:meth:`TimeWait.segment` answers a segment exactly as Connection._segment_synchronized
does in TIME-WAIT (its checks in the same order, with the same counters); the host
handles what needs it: the SYN that may reopen the 4-tuple (:meth:`reopen_iss`), expiry.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from fasttcp.tcp.host_services cimport (
    COUNT_CHALLENGE_ACKS_OUT, COUNT_CHALLENGE_ACKS_SUPPRESSED, COUNT_DROP_ACK_TOO_OLD,
    COUNT_DROP_ACK_UNSENT, COUNT_DROP_MISSING_TIMESTAMP, COUNT_DROP_OUT_OF_WINDOW,
    COUNT_DROP_PAWS, COUNT_INVALID_ACKS_SUPPRESSED, COUNT_PURE_ACKS_OUT, COUNT_RST_IN,
    COUNT_TIME_WAIT_REOPENED, COUNT_TS_RECENT_EXPIRED, HostServices)
from fasttcp.tcp.tcb cimport Tcb
from fasttcp.wire._wire cimport (OPT_SACK, OPT_TS, Packet, TcpOut, TH_ACK as ACK,
                                 TH_ECE as ECE, TH_FIN as FIN, TH_RST as RST, TH_SYN as SYN,
                                 build_tcp_into, tcp_options_len)

COMPILED = True
# RFC 7323 5.5: TS.Recent is invalid after 24 days idle (as connection.pyx).
cdef double TS_RECENT_MAX_IDLE = 24 * 86400.0


cdef inline int64_t _sdiff(uint32_t a, uint32_t b) noexcept:
    """a - b for 32-bit sequence numbers, as a signed int (RFC 1982)."""
    return <int32_t>(a - b)


cdef inline bytes _b16(const unsigned char* a):
    return PyBytes_FromStringAndSize(<const char*>a, 16)


cdef TimeWait make_time_wait(Tcb c, uint16_t window, double deadline):
    """The record of connection `c`, in TIME-WAIT with everything it sent acknowledged;
    `window` is the window field its ACKs carry (Tcb.advertised_window() once more)."""
    cdef TimeWait tw = TimeWait.__new__(TimeWait)
    tw.ipver = c.ipver
    if c.ipver == 6:
        memcpy(tw.lip6, c._lip6, 16)
        memcpy(tw.rip6, c._rip6, 16)
    else:
        tw.lip = c._lip
        tw.rip = c._rip
    tw.lport = c.lport
    tw.rport = c.rport
    tw.snd_nxt = <uint32_t>(c.iss + c.snd_max)
    tw.rcv_nxt = <uint32_t>(c.irs + c.rcv_nxt)
    tw.rcv_wnd = c.rcv_adv - c.rcv_nxt
    tw.window = window
    tw.snd_wscale = c.snd_wscale
    tw.max_snd_wnd = c.max_snd_wnd
    tw.snd_wl1 = c.snd_wl1
    tw.snd_wl2 = c.snd_wl2
    tw.ts_ok = c.ts_ok
    tw.ts_recent = c.ts_recent
    tw.ts_recent_at = c.ts_recent_at
    tw.ts_offset = c.ts_offset
    tw.sack_ok = c.sack_ok
    tw.irs = c.irs
    tw.ece = c._ece_pending
    tw.ttl = c.ttl
    tw.invalid_ack_at = c._invalid_ack_at
    tw.deadline = deadline
    tw.live = True
    return tw


cdef class TimeWait:
    """A closed connection's TIME-WAIT (RFC 9293 3.10.7.4), kept by its host: a read-only
    view with a connection's ``state``, ``local_address``, ``remote_address`` and
    ``info()`` (in :meth:`fasttcp.Host.connections`)."""

    def __init__(self) -> None:
        raise TypeError("TIME-WAIT records are made by the host")

    # --- the read-only view ---

    @property
    def state(self):
        """TIME_WAIT while the host holds the record, then CLOSED."""
        from fasttcp.tcp.states import State
        return State.TIME_WAIT if self.live else State.CLOSED

    @property
    def local_address(self):
        from fasttcp.wire import bytes_to_ip6, int_to_ip
        if self.ipver == 6:
            return (bytes_to_ip6(_b16(self.lip6)), self.lport, 0, 0)
        return (int_to_ip(self.lip), self.lport)

    @property
    def remote_address(self):
        from fasttcp.wire import bytes_to_ip6, int_to_ip
        if self.ipver == 6:
            return (bytes_to_ip6(_b16(self.rip6)), self.rport, 0, 0)
        return (int_to_ip(self.rip), self.rport)

    @property
    def key(self):
        """The host's demux key (local port, remote address, remote port, local
        address)."""
        if self.ipver == 6:
            return (self.lport, _b16(self.rip6), self.rport, _b16(self.lip6))
        return (self.lport, self.rip, self.rport, self.lip)

    def info(self):
        """A ConnectionInfo as a TIME-WAIT Connection's (nothing in flight or buffered;
        the congestion figures of the closed connection are not kept: 0)."""
        from fasttcp.tcp.connection import ConnectionInfo
        return ConnectionInfo(
            state=self.state.rfc_name, snd_una=self.snd_nxt, snd_nxt=self.snd_nxt,
            rcv_nxt=self.rcv_nxt, snd_wnd=0, rcv_wnd=max(0, self.rcv_wnd), mss=0,
            srtt=None, rttvar=0.0, rto=0.0, cwnd=0, ssthresh=0, retransmits=0,
            bytes_sent=0, bytes_acked=0, bytes_received=0, snd_wscale=self.snd_wscale,
            rcv_wscale=0, unacked=0, send_buffered=0, recv_buffered=0)

    def __eq__(self, other):
        # A view of a closed connection: equal to the Connection it stands for, when the
        # application still holds that (its _tw), so host.connections() == [conn] holds
        # through TIME-WAIT. (Hashing stays by identity: a record and its connection are
        # two keys in a set or dict.)
        if other is self:
            return True
        return getattr(other, "_tw", None) is self

    def __hash__(self):
        return object.__hash__(self)

    def __repr__(self) -> str:
        la, lp = self.local_address[:2]
        ra, rp = self.remote_address[:2]
        if self.ipver == 6:
            la, ra = f"[{la}]", f"[{ra}]"
        return f"<TimeWait {la}:{lp} -> {ra}:{rp} {self.state.rfc_name}>"

    # --- segments ---

    cdef bytes ack_packet(self, double now):
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with the options Tcb.build gives a pure
        ACK of this connection: timestamps, a pending D-SACK block, ECE."""
        cdef TcpOut t
        cdef Py_ssize_t total
        cdef bytes pkt
        cdef unsigned char* p
        cdef int flags = ACK
        memset(&t, 0, sizeof(t))
        if self.ts_ok:
            t.opt_present = OPT_TS                 # RFC 7323 3.2
            t.tsval = <uint32_t>(<int64_t>(now * 1000.0)) + self.ts_offset
            t.tsecr = self.ts_recent
        if self.sack_ok and self.dsack:
            t.sack[0] = self.dsack_start           # RFC 2883 section 4, sent once
            t.sack[1] = self.dsack_end
            t.nsack = 1
            t.opt_present |= OPT_SACK
            self.dsack = False
        if self.ece:
            flags |= ECE                           # RFC 3168 6.1.3: until CWR arrives
        if self.ipver == 6:
            t.ipver = 6
            memcpy(t.src6, self.lip6, 16)
            memcpy(t.dst6, self.rip6, 16)
        else:
            t.src = self.lip
            t.dst = self.rip
        t.sport = self.lport
        t.dport = self.rport
        t.seq = self.snd_nxt
        t.ack = self.rcv_nxt
        t.flags = flags
        t.window = self.window
        t.ttl = self.ttl
        t.df = True
        total = (60 if self.ipver == 6 else 40) + tcp_options_len(&t)
        pkt = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char*>PyBytes_AS_STRING(pkt)
        build_tcp_into(p, total, &t, p + total, 0)
        return pkt

    cdef int _ack(self, HostServices host) except -1:
        host.emit(self.ack_packet(host.now))
        host.count(COUNT_PURE_ACKS_OUT)
        return 0

    cdef bint _answered_recently(self, double interval, double now):
        return interval > 0 and now - self.invalid_ack_at < interval

    cdef int _invalid_ack(self, HostServices host, int64_t seg_len, double now) except -1:
        """As Connection._invalid_ack: a pure segment's ACK at most once per
        invalid_ack_interval (Linux tcp_invalid_ratelimit)."""
        if seg_len == 0:
            if self._answered_recently(host.settings.invalid_ack_interval, now):
                host.count(COUNT_INVALID_ACKS_SUPPRESSED)
                return 0
            self.invalid_ack_at = now
        return self._ack(host)

    cdef int _challenge_ack(self, HostServices host, double now) except -1:
        """As Connection._challenge_ack (RFC 5961 7): the per-connection limit, then the
        host's budget."""
        if self._answered_recently(host.settings.invalid_ack_interval, now):
            host.count(COUNT_CHALLENGE_ACKS_SUPPRESSED)
            return 0
        if host.challenge_ack_allowed(now):
            self.invalid_ack_at = now
            host.count(COUNT_CHALLENGE_ACKS_OUT)
            return self._ack(host)
        host.count(COUNT_CHALLENGE_ACKS_SUPPRESSED)
        return 0

    cdef int segment(self, HostServices host, Packet seg, double now) except -1:
        """A segment for this TIME-WAIT 4-tuple (RFC 9293 3.10.7.4's checks, as
        Connection._segment_synchronized runs them in TIME-WAIT). Returns 1 when an
        acceptable RST deletes the record (the host then drops it; Linux's default
        tcp_rfc1337=0 does the same), else 0."""
        cdef int flags = seg.d.flags
        cdef int64_t plen = seg.d.payload_len
        cdef int64_t seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        cdef int64_t d = _sdiff(seg.d.seq, self.rcv_nxt)     # seq_off - RCV.NXT
        cdef int64_t a, wnd, end, wl1_d
        cdef uint32_t tsval
        cdef bint ok
        # First: PAWS (RFC 7323 5.3 R1).
        if self.ts_ok and not flags & RST:
            if not seg.d.opt_present & OPT_TS:
                host.count(COUNT_DROP_MISSING_TIMESTAMP)    # RFC 7323 3.2
                return 0
            tsval = seg.d.tsval
            if _sdiff(tsval, self.ts_recent) < 0:
                if now - self.ts_recent_at > TS_RECENT_MAX_IDLE:
                    self.ts_recent = tsval                 # RFC 7323 5.5
                    self.ts_recent_at = now
                    host.count(COUNT_TS_RECENT_EXPIRED)
                else:
                    self._invalid_ack(host, seg_len, now)  # RFC 7323 5.3 R1: an ACK
                    host.count(COUNT_DROP_PAWS)
                    return 0
        if flags & FIN and not flags & RST:
            # The peer did not see our ACK of its FIN: acknowledge again, restart 2*MSL
            # (RFC 9293 3.10.7.4 eighth, TIME-WAIT).
            self.deadline = now + 2 * host.settings.msl
            self._ack(host)
            return 0
        # Then the acceptability test (RFC 9293 3.10.7.4's table) on RCV.WND.
        wnd = self.rcv_wnd
        if seg_len == 0:
            ok = d == 0 if wnd <= 0 else 0 <= d < wnd
        elif wnd <= 0:
            ok = False
        else:
            end = d + seg_len - 1
            ok = 0 <= d < wnd or 0 <= end < wnd
        if not ok:
            if flags & SYN and not flags & RST:
                self._challenge_ack(host, now)             # RFC 5961 4.2
                return 0
            if not flags & RST:
                if (plen and d + plen <= 0 and self.sack_ok and host.settings.dsack
                        and <uint32_t>(seg.d.seq + plen) != self.irs):
                    # All old data: a D-SACK block on the ACK (RFC 2883); as the
                    # Connection's, none for a block ending at receive offset 0.
                    self.dsack = True
                    self.dsack_start = seg.d.seq
                    self.dsack_end = <uint32_t>(seg.d.seq + plen)
                self._invalid_ack(host, seg_len, now)      # RFC 9293 3.10.7.4: <ACK>
            host.count(COUNT_DROP_OUT_OF_WINDOW)
            return 0
        # Second: RST (RFC 5961 3.2: exactly RCV.NXT, else a challenge ACK).
        if flags & RST:
            if d != 0:
                self._challenge_ack(host, now)
                return 0
            host.count(COUNT_RST_IN)
            return 1
        # Fourth: SYN (RFC 5961 4.2).
        if flags & SYN:
            self._challenge_ack(host, now)
            return 0
        # Fifth: ACK (RFC 5961 5.2), TS.Recent (RFC 7323 4.3) and the window update; in
        # TIME-WAIT nothing else follows.
        if not flags & ACK:
            return 0
        a = _sdiff(seg.d.ack, self.snd_nxt)
        if a > 0:
            host.count(COUNT_DROP_ACK_UNSENT)
            self._challenge_ack(host, now)
            return 0
        if a < -max(self.max_snd_wnd, 1):
            host.count(COUNT_DROP_ACK_TOO_OLD)
            self._challenge_ack(host, now)
            return 0
        if seg.d.opt_present & OPT_TS and self.ts_ok and d <= 0 \
                and _sdiff(seg.d.tsval, self.ts_recent) >= 0:
            self.ts_recent = seg.d.tsval
            self.ts_recent_at = now
        wl1_d = _sdiff(seg.d.seq, self.snd_wl1)
        if a == 0 and (wl1_d > 0 or (wl1_d == 0 and _sdiff(seg.d.ack, self.snd_wl2) >= 0)):
            wnd = (<int64_t>seg.d.window) << self.snd_wscale
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            self.snd_wl1 = seg.d.seq
            self.snd_wl2 = seg.d.ack
        return 0

    cdef int64_t reopen_iss(self, HostServices host, Packet seg) except -2:
        """As Connection.time_wait_reopen: the ISS for a new incarnation's SYN, or -1 (RFC
        1122 4.2.2.13, RFC 6191 2, PAWS RFC 7323 5.3; Linux tcp_timewait_state_process);
        the host then drops the record."""
        cdef uint32_t iss
        cdef bint ts = self.ts_ok and seg.d.opt_present & OPT_TS
        if ts and _sdiff(seg.d.tsval, self.ts_recent) < 0:
            return -1
        if not (_sdiff(seg.d.seq, self.rcv_nxt) > 0
                or (ts and _sdiff(seg.d.tsval, self.ts_recent) > 0)):
            return -1
        iss = self.snd_nxt + 65535 + 2
        if iss == 0:
            iss = 1
        host.count(COUNT_TIME_WAIT_REOPENED)
        return iss
