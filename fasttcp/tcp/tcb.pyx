# cython: language_level=3
"""The transmission control block (declared whole in tcb.pxd) and its send side: the
segment builder and the steady-state loop that cuts the send ring into segments (window,
cwnd, Nagle, sender SWS avoidance), building each packet straight from the ring.

`fasttcp.tcp.connection.Connection` subclasses Tcb; the receive fast path is in
_fastpath.pyx.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from fasttcp.storage._reasm cimport Reassembler
from fasttcp.tcp._rack cimport RackQueue
from fasttcp.tcp.host_services cimport (COUNT_ECN_CWR_OUT, COUNT_FINS_OUT,
                                        COUNT_RETRANSMITTED_SEGMENTS, Count)
from fasttcp.wire._wire cimport (IPTOS_ECN_ECT0, OPT_SACK, OPT_TS, TH_ACK, TH_CWR, TH_ECE,
                                 TH_FIN, TH_PSH, TH_RST, TH_SYN, TcpOut, build_tcp_headers,
                                 build_tcp_into, make_split_packet, tcp_options_len)

COMPILED = True


cdef class Tcb:
    """Every variable of a connection (tcb.pxd) and the segment output on them.
    Subclassed by Connection."""

    cdef int _event(self, Count what) except -1:
        """Count `what` with the host (Host.stats()); with the host tracing (DEBUG logging
        or a traced connection) also hand it to Host.trace_event."""
        self.host.count(what)
        if self.host.tracing:
            self.host.trace_event(self, what)
        return 0

    cdef int64_t window_edge(self) noexcept:
        """Where the right edge of the receive window (RCV.NXT + RCV.WND) belongs now: at
        the end of the free buffer, cut to what the 16-bit window field can say (65535 <<
        our shift, RFC 7323 2.3) in whole units of the shift; but moved right only once it
        can move by min(rcv_buf / 2, MSS) (receiver SWS avoidance, RFC 9293 3.8.6.2.2),
        and never left: otherwise the edge already advertised (rcv_adv)."""
        cdef int64_t free = self.rcv_buf
        cdef int shift = self.rcv_wscale if self._ws_ok else 0
        cdef int64_t cap = (<int64_t>65535) << shift
        cdef int64_t thresh = self.rcv_buf // 2
        cdef int64_t edge
        if self._reasm is not None:
            free = self._reasm.window_c() - self.rcv_slack     # the slack is not offered
        if thresh > self.mss_limit:
            thresh = self.mss_limit
        if free < 0:
            free = 0
        if free > cap:
            free = cap
        edge = self.rcv_nxt + ((free >> shift) << shift)
        if edge > self.rcv_adv and edge - self.rcv_adv >= thresh:
            return edge
        return self.rcv_adv

    cdef uint16_t advertised_window(self) noexcept:
        """The window field to send. rcv_adv is the furthest right edge ever announced:
        the peer may have sent up to it, so RCV.WND (rcv_adv - rcv_nxt: the acceptance
        test, RST/SYN checks, trimming) is everything it was ever offered, and that edge
        always fits in the buffer."""
        cdef int shift = self.rcv_wscale if self._ws_ok else 0
        cdef int64_t wnd = self.window_edge() - self.rcv_nxt
        cdef int64_t room = self.rcv_buf + self.rcv_slack
        cdef int64_t edge
        if self._reasm is not None:
            room = self._reasm.window_c()
        if wnd < 0:
            wnd = 0
        # A scaled window rounds up to whole units, so the edge already advertised never
        # moves left (RFC 7323 2.4, RFC 9293 3.8.6.2.1; as Linux's tcp_select_window)...
        wnd = (wnd + ((<int64_t>1 << shift) - 1)) >> shift
        # ...but never past the end of the buffer. While the application does not read,
        # every ACK after a segment of unaligned length rounds the edge up again: a
        # closing window creeps right, into the buffer's slack (Settings.rcv_storage).
        # Past the slack the peer would send bytes we cannot store, never see them
        # acknowledged, and back off its retransmission timer instead of probing a zero
        # window. So there the announced edge moves left, by less than one unit (RFC 7323
        # appendix F; Linux's tcp_shrink_window), while rcv_adv stays where it was:
        # whatever the peer sent up to it is still taken.
        if room < 0:
            room = 0
        if wnd > room >> shift:
            wnd = room >> shift
        if wnd > 65535:
            wnd = 65535
        edge = self.rcv_nxt + (wnd << shift)
        if edge > self.rcv_adv:
            self.rcv_adv = edge
        return <uint16_t>wnd

    # --- ACK policy (RFC 5681 4.2, RFC 9293 3.8.6.3), modelled on Linux's quickack mode --
    # Receiving data: the receiver's estimate of the peer's MSS (_rcv_mss) is the largest
    # segment seen, at most ours (tcp_measure_rcv_mss). An ACK goes at once when more than
    # one such segment is unacknowledged (__tcp_ack_snd_check: at least every second
    # full-sized segment, RFC 5681 4.2), while quick ACKs are left (tcp_in_quickack_mode),
    # and for out-of-order data or data filling a hole (RFC 5681 4.2); otherwise within
    # the delayed-ACK timer (RFC 1122 4.2.3.2). Quick ACKs (settings.quick_acks, Linux's
    # TCP_MAX_QUICKACKS = 16) are granted when the first data arrives and again after
    # out-of-order data (tcp_incr_quickack / tcp_enter_quickack_mode); each ACK that
    # acknowledges data uses one (tcp_dec_quickack_mode).

    cdef int enter_quickack(self) except -1:
        """Grant quick ACKs: rcv window / (2 * rcv_mss) of them, at least 2, at most
        settings.quick_acks (tcp_incr_quickack)."""
        cdef int most = self.settings.quick_acks
        cdef int64_t n = (self.rcv_adv - self.rcv_nxt) // (2 * max(self._rcv_mss, 1))
        if n < 2:
            n = 2
        if n > most:
            n = most
        if n > self._quick_acks:
            self._quick_acks = <int>n
        return 0

    cdef int data_ack_policy(self, int64_t n, bint at_once, double now) except -1:
        """n bytes of data arrived (`at_once`: out of order, filling a hole, or refused):
        owe an ACK now or arm the delayed-ACK timer."""
        if not self._data_seen:
            self._data_seen = True
            self.enter_quickack()
        if n > self._rcv_mss:
            self._rcv_mss = <int>(n if n < self.mss_limit else self.mss_limit)
        self._unacked_bytes += n
        if (at_once or self._quick_acks > 0 or self.delayed_ack <= 0
                or self._unacked_bytes > self._rcv_mss):
            self._ack_now = True
        elif self.delack_at is None:
            self.delack_at = now + self.delayed_ack
        return 0

    cdef int ack_sent(self) except -1:
        """A segment with ACK went out: nothing is owed any more; one that acknowledged
        data used a quick ACK."""
        if self._unacked_bytes > 0 and self._quick_acks > 0:
            self._quick_acks -= 1
        self._ack_now = False
        self._unacked_bytes = 0
        self.delack_at = None
        return 0

    cdef int add_sack_blocks(self, TcpOut* t) noexcept:
        """SACK blocks for an ACK (RFC 2018 section 4): first the block holding the latest
        out-of-order segment, then the others, highest first; the builder keeps what fits."""
        cdef Reassembler r = self._reasm
        cdef Py_ssize_t first = -1, i, k = 0
        cdef uint32_t base = self.irs + 1       # receive offset 1 is the reassembler's 0
        if self.dsack_end:
            # RFC 2883 section 4: the duplicate's block first, sent once.
            t.sack[0] = <uint32_t>(self.irs + self.dsack_start)
            t.sack[1] = <uint32_t>(self.irs + self.dsack_end)
            k = 1
            self.dsack_end = 0
            t.opt_present |= OPT_SACK
        if r is None or r.nruns == 0:
            t.nsack = k
            return k
        if self.last_ooo_off:
            first = r.run_index(self.last_ooo_off - 1)
        if first >= 0:
            t.sack[2 * k] = <uint32_t>(base + r.runs[2 * first])
            t.sack[2 * k + 1] = <uint32_t>(base + r.runs[2 * first + 1])
            k += 1
        i = r.nruns - 1
        while i >= 0 and k < 4:
            if i != first:
                t.sack[2 * k] = <uint32_t>(base + r.runs[2 * i])
                t.sack[2 * k + 1] = <uint32_t>(base + r.runs[2 * i + 1])
                k += 1
            i -= 1
        t.nsack = k
        t.opt_present |= OPT_SACK
        return k

    cdef int sack_space(self) noexcept:
        """Bytes the SACK option takes on our next segment with ACK: two NOPs, kind,
        length and 8 per block (RFC 2018 3), as many blocks as add_sack_blocks reports and
        the 40 bytes of option space hold; 0 when none is due."""
        cdef Py_ssize_t k = 0, room
        if not self.sack_ok:
            return 0
        if self.dsack_end:
            k = 1
        if self._reasm is not None:
            k += self._reasm.nruns
        if k == 0:
            return 0
        room = (40 - (12 if self.ts_ok else 0) - 4) // 8     # as tcp_options_len
        if k > room:
            k = room
        return <int>(4 + 8 * k)

    cdef int mss_now(self) noexcept:
        """The payload of a full-sized data segment sent now: the MSS (which already
        leaves room for the timestamps every segment carries) less the SACK blocks this
        segment's ACK will carry. RFC 9293 3.7.1: the options of that very segment count
        against the MTU; Linux's tcp_current_mss shrinks the payload the same way."""
        cdef int m = self.mss - self.sack_space()
        return m if m > 0 else 1

    cdef uint32_t tsval_at(self, double now) noexcept:
        """Our TSval at `now`: a 1 ms clock plus the connection's random offset (RFC 7323
        5.4), modulo 2**32."""
        return <uint32_t>(<int64_t>(now * 1000.0)) + self.ts_offset

    cdef int ip_overhead(self) noexcept:
        """The IP and TCP header bytes of a segment without options."""
        return 60 if self.ipver == 6 else 40

    cdef void fill_header(self, TcpOut* t, uint64_t off, int flags, uint16_t window) noexcept:
        """The addresses, ports, sequence numbers, flags and window of a segment at send
        offset `off`; one with ACK acknowledges RCV.NXT, which becomes Last.ACK.sent."""
        if self.ipver == 6:
            t.ipver = 6
            memcpy(t.src6, self._lip6, 16)
            memcpy(t.dst6, self._rip6, 16)
        else:
            t.src = self._lip
            t.dst = self._rip
        t.sport = self.lport
        t.dport = self.rport
        t.seq = <uint32_t>(self.iss + off)
        t.ack = <uint32_t>(self.irs + self.rcv_nxt) if flags & TH_ACK else 0
        t.flags = flags
        t.window = window
        t.ttl = self.ttl
        t.df = True
        if flags & TH_ACK:
            self.last_ack_sent = self.rcv_nxt

    cdef object build(self, uint64_t off, int flags, uint16_t window, Py_ssize_t n,
                      bint from_ring, double now, bint ect=False):
        """An IPv4+TCP packet for send offset `off` carrying n bytes from the send ring,
        with the timestamp and SACK options the connection negotiated. A TSO
        super-segment for a host whose link writes scatter lists (``host.split_tx``) is
        a SplitPacket: the headers, then views of the send ring (no copy). ``ect``: mark
        it ECT(0) (new data of an ECN connection, see send_range)."""
        cdef TcpOut t
        cdef Py_ssize_t total, olen, n1, n2, budget
        cdef bytes pkt
        cdef unsigned char* p
        cdef const unsigned char* p1
        cdef const unsigned char* p2
        cdef PyObject* o1 = NULL
        cdef PyObject* o2 = NULL
        cdef Py_ssize_t hdr = 60 if self.ipver == 6 else 40     # ip_overhead(), inline
        memset(&t, 0, sizeof(t))
        if self.ts_ok and not flags & TH_RST:
            # RFC 7323 3.2: TSval from our clock, TSecr = TS.Recent on segments with ACK.
            t.opt_present = OPT_TS
            t.tsval = self.tsval_at(now)
            t.tsecr = self.ts_recent if flags & TH_ACK else 0
        if self.sack_ok and flags & TH_ACK and not flags & TH_RST:
            self.add_sack_blocks(&t)
        olen = tcp_options_len(&t)
        if t.nsack and n <= self.mss:
            # Never above the path MTU (RFC 9293 3.7.1): the senders cut data by mss_now(),
            # so this only trims SACK blocks of a segment cut before they were due.
            budget = self.mss + (12 if self.ts_ok else 0) - n     # option room left
            if olen > budget:
                budget -= 12 if t.opt_present & OPT_TS else 0
                t.nsack = <uint8_t>((budget - 4) // 8 if budget >= 12 else 0)
                if t.nsack == 0:
                    t.opt_present &= ~OPT_SACK
                olen = tcp_options_len(&t)
        total = hdr + olen + n
        if self._ece_pending and flags & TH_ACK and not flags & (TH_SYN | TH_RST):
            flags |= TH_ECE       # RFC 3168 6.1.3: ECE on every ACK until CWR arrives
        self.fill_header(&t, off, flags, window)
        if ect:
            t.tos = IPTOS_ECN_ECT0                 # RFC 3168 6.1.2: ECT(0) on data
        if n > self.mss:
            t.no_tcp_csum = True                   # a super-segment: the TSO link sums it
            if from_ring and self.host.split_tx:
                # The payload in place, in at most two pieces: the ring's bytes up to its
                # wrap or an application's bytes object (zero-copy send), then the rest.
                n1 = self._send_ring.chunk_owned(off - 1, &p1, &o1)
                if n1 > n:
                    n1 = n
                n2 = n - n1
                p2 = NULL
                o2 = o1
                if n2 == 0 or self._send_ring.chunk_owned(
                        off - 1 + <uint64_t>n1, &p2, &o2) >= n2:
                    pkt = PyBytes_FromStringAndSize(NULL, hdr + olen)
                    build_tcp_headers(<unsigned char*>PyBytes_AS_STRING(pkt), hdr + olen, &t, n)
                    # The packet keeps alive whatever holds its payload.
                    owner = <object>o1 if o2 == o1 else (<object>o1, <object>o2)
                    return make_split_packet(pkt, owner, p1, n1, p2, n2)
        pkt = PyBytes_FromStringAndSize(NULL, total)
        p = <unsigned char*>PyBytes_AS_STRING(pkt)
        if n and from_ring:
            self._send_ring.copy_out(off - 1, p + hdr + olen, n)
        build_tcp_into(p, total, &t, p + hdr + olen, n)
        return pkt

    cpdef bytes build_syn(self, bint ack, uint16_t window, int opts, double now,
                          int ecn_flags=0):
        """Our SYN (or SYN,ACK) with the options in `opts` (OPT_* bits): MSS from our
        link, our window scale, SACK-permitted and timestamps (RFC 9293 3.1, 7323, 2018);
        ``ecn_flags`` (ECE, CWR) for ECN setup (RFC 3168 6.1.1)."""
        cdef TcpOut t
        cdef Py_ssize_t total
        cdef bytes pkt
        memset(&t, 0, sizeof(t))
        t.opt_present = opts
        t.mss = self.mss_limit
        t.wscale = self.settings.rcv_wscale
        if opts & OPT_TS:
            t.tsval = self.tsval_at(now)
            t.tsecr = self.ts_recent if ack else 0
        self.fill_header(&t, 0, TH_SYN | (TH_ACK if ack else 0) | ecn_flags, window)
        total = (60 if self.ipver == 6 else 40) + tcp_options_len(&t)
        pkt = PyBytes_FromStringAndSize(NULL, total)
        build_tcp_into(<unsigned char*>PyBytes_AS_STRING(pkt), total, &t, NULL, 0)
        return pkt

    # --- Python-visible helpers used by the slow path ---

    def _rst_packet(self, uint32_t seq) -> bytes:
        """A bare RST with sequence number `seq` (no ACK, no options), of the
        connection's family."""
        cdef TcpOut t
        cdef Py_ssize_t total = self.ip_overhead()
        cdef bytes pkt
        memset(&t, 0, sizeof(t))
        self.fill_header(&t, 0, TH_RST, 0)
        t.seq = seq
        t.ttl = self.settings.ttl
        pkt = PyBytes_FromStringAndSize(NULL, total)
        build_tcp_into(<unsigned char*>PyBytes_AS_STRING(pkt), total, &t, NULL, 0)
        return pkt

    def _advertised_window(self) -> int:
        return self.advertised_window()

    def _packet(self, uint64_t off, int flags, bint ack=True) -> bytes:
        """A segment without data (pure ACK, keepalive, RST) at send offset `off`."""
        cdef uint16_t window = 0
        if flags & TH_ACK or (ack and not flags & TH_RST):
            flags |= TH_ACK
            window = self.advertised_window()
        return self.build(off, flags, window, 0, False, self.host.now)

    def ts_now(self, double now) -> int:
        """Our TSval for time `now`."""
        return self.tsval_at(now)

    def _send_segment(self, uint64_t off, uint64_t n, double now, list out,
                      bint retransmit) -> None:
        self.send_range(off, n, now, out, retransmit)

    cdef int send_range(self, uint64_t off, uint64_t n, double now, list out,
                        bint retransmit) except -1:
        """Send data [off, off+n), with our FIN when it ends where the FIN sits."""
        cdef uint64_t data_end = 1 + (self._send_ring.tail if self._send_ring is not None else 0)
        cdef int flags = TH_ACK
        cdef uint64_t length = n, end
        # RFC 3168 6.1.2: ECT(0) on data segments; not on retransmissions (6.1.5: MUST
        # NOT), nor on window probes (6.1.6); pure ACKs, SYNs and FIN-only segments carry
        # none (6.1.4, 6.1.1). CWR goes on the first new data segment after a reduction.
        cdef bint ect = self.ecn_ok and n > 0 and not retransmit and not self.persist
        if ect and self._cwr_pending:
            flags |= TH_CWR
            self._cwr_pending = False
            self._event(COUNT_ECN_CWR_OUT)
        if off + n == data_end:
            if n:
                flags |= TH_PSH                    # the last data of the buffer
            if self.fin_off is not None and off + n == <uint64_t>self.fin_off:
                flags |= TH_FIN
                length += 1
                self._event(COUNT_FINS_OUT)
        out.append(self.build(off, flags, self.advertised_window(), n, True, now, ect))
        self.ack_sent()                            # every segment carries the ACK
        end = off + length
        if self.sack_ok and length:
            # RACK.xmit_ts of every transmission (RFC 8985 6.1), kept in C.
            if self.rtxq is None:
                self.rtxq = RackQueue()
            self.rtxq.sent(off, end, now, retransmit, self.snd_una)
        if end > self.snd_nxt:
            self.snd_nxt = end
        if end > self.snd_max:
            if self._rtt_off is None and not retransmit and not self.ts_ok:
                self._rtt_off = off                # time this segment (one at a time)
                self._rtt_start = now
            self.snd_max = end
        if retransmit and self._rtt_off is not None and off <= self._rtt_off < end:
            self._rtt_off = None                   # Karn's rule
        if self.rtx_at is None and not self.persist:
            self.rtx_at = now + self.rtt.rto
        self.last_send_at = now
        self.segs_out += 1
        if retransmit:
            self.retransmits += 1
            self._event(COUNT_RETRANSMITTED_SEGMENTS)
        else:
            self.bytes_sent += n
        return 0

    cdef double persist_timeout(self) noexcept:
        """The persist timer's interval: the RTO doubled with every probe since the window
        last opened (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17: exponential backoff), capped at
        max_rto (Linux: tcp_probe0_when, up to TCP_RTO_MAX). Kept apart from the RTO's own
        backoff: an RTT sample (an ACK of the probe byte) must not reset it."""
        cdef double t = self.rtt.rto
        cdef int k = self.probes_out
        while k > 0 and t < self.rtt.max_rto:
            t *= 2
            k -= 1
        return t if t < self.rtt.max_rto else self.rtt.max_rto

    def output_data(self, double now, list out) -> int:
        """Cut new data from the send ring into segments as the windows allow; returns
        how many segments were sent."""
        cdef uint64_t data_end = 1 + (self._send_ring.tail if self._send_ring is not None else 0)
        cdef bint fin_queued = self.fin_off is not None
        cdef uint64_t fin_off = self.fin_off if fin_queued else 0
        cdef bint nodelay = self.nodelay or fin_queued   # a FIN-carrying tail skips Nagle
        cdef object cwnd_obj = self.cc.cwnd
        cdef uint64_t cwnd = (cwnd_obj if cwnd_obj > 0 else 0) + self.cwnd_bonus
        cdef uint64_t nxt, avail, usable, wnd, n, mss
        cdef uint64_t seg_max
        cdef int sent = 0
        while True:
            # The segment's own SACK blocks come out of its payload (mss_now): the first
            # segment may carry a D-SACK the next ones do not.
            mss = seg_max = <uint64_t>self.mss_now()
            if self.gso_max > mss:
                # TSO: one super-segment carries as many MSS-sized segments as fit 64 KiB;
                # the link (kernel) cuts it by the MTU less these very headers, so the wire
                # sees ordinary segments of this size.
                seg_max = (self.gso_max // mss) * mss
            nxt = self.snd_nxt
            avail = data_end - nxt if data_end > nxt else 0
            if avail > 0:
                wnd = self.snd_wnd if self.snd_wnd < cwnd else cwnd
                usable = self.snd_una + wnd - nxt if self.snd_una + wnd > nxt else 0
                if usable == 0:
                    if self.snd_wnd == 0 and self.rtx_at is None:
                        self.persist = True        # nothing will elicit a window update
                        self.rtx_at = now + self.persist_timeout()
                    break
                n = seg_max
                if avail < n:
                    n = avail
                if usable < n:
                    n = usable
                if n < mss and n < avail:
                    # Sender SWS avoidance (RFC 9293 3.8.6.2.1): a partial segment only
                    # when it is at least half the largest window the peer offered.
                    if n < self.max_snd_wnd // 2:
                        if self.snd_max == self.snd_una and self.rtx_at is None:
                            # Nothing in flight will bring the window update that lets
                            # this go (the last one may be lost): probe for it as for a
                            # zero window (RFC 1122 4.2.3.4's override timeout, RFC 9293
                            # 3.8.6.1), or both ends wait for ever.
                            self.persist = True
                            self.rtx_at = now + self.persist_timeout()
                        break
                elif (n < mss and not nodelay and nxt >= self.snd_max
                      and self.snd_una < self.snd_sml <= <int64_t>nxt):
                    # Nagle (RFC 9293 3.7.4) in Minshall's variant, as Linux
                    # (tcp_nagle_check / tcp_minshall_check): new data short of a full
                    # segment waits while an earlier short segment is unacknowledged,
                    # not behind full-sized ones, so a write's tail leaves with it.
                    break
                if n % mss and nxt >= self.snd_max:
                    self.snd_sml = nxt + n         # Linux tcp_minshall_update
                self.send_range(nxt, n, now, out, nxt < self.snd_max)
                sent += 1
                continue
            if fin_queued and nxt == fin_off:      # all data out: the FIN on its own
                self.send_range(nxt, 0, now, out, nxt < self.snd_max)
                sent += 1
            break
        return sent
