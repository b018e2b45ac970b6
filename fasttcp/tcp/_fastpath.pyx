# cython: language_level=3
"""The TCP receive fast path: header prediction over a whole received batch.

Receive (`receive_batch`): every packet of the batch is parsed in C; a segment for an
ESTABLISHED connection that carries the next expected in-order data and/or a plain
cumulative ACK (the common case of a bulk transfer, "header prediction" after Van Jacobson
and RFC 1323 appendix) is taken entirely here: payload into the reassembly ring, SND.UNA
forward, send ring released, ACK owed. Everything else — handshakes, FIN, RST, options,
out-of-order data, duplicate ACKs, loss recovery — goes to the state machine in
`connection.pyx`. The congestion policy and the RTO timer are then updated once per
connection per batch, not per segment. (The send side is Tcb's, in tcb.pyx.)
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memset

from fasttcp.storage._reasm cimport Reassembler
from fasttcp.tcp.host_services cimport (COUNT_ECN_CE_RECEIVED, COUNT_ECN_ECE_RECEIVED,
                                        HostServices)
from fasttcp.tcp.tcb cimport S_ESTABLISHED, Tcb
from fasttcp.wire._wire cimport (DROP_FRAGMENT, DROP_REASON_COUNT, IPPROTO_TCP, IPTOS_ECN_CE,
                                 IPTOS_ECN_MASK, OPT_TS, SegDesc, SegmentBatch, TH_ACK, TH_CWR,
                                 TH_ECE, TH_FIN, TH_RST, TH_SYN, TH_URG, seq_diff, seq_le,
                                 seq_lt)

COMPILED = True


cdef inline int fast_segment(Tcb c, SegDesc* d, const unsigned char* base, double now,
                             list deferred) except -1:
    """Header prediction. Returns 1 when the segment was fully handled here, 0 when the
    slow path must see it (nothing was changed then). With ``deferred`` (a list), in-order
    data is kept by reference (Reassembler.add_lazy_c) and its reassembler listed there
    for Host.settle()."""
    cdef uint32_t plen = d.payload_len
    cdef int32_t ad
    cdef uint64_t ack_off, wnd
    cdef Reassembler reasm
    cdef Py_ssize_t delivered, had_spans
    cdef int flags = d.flags
    if c.ecn_ok:
        flags &= ~(TH_ECE | TH_CWR)                # RFC 3168's flags, once negotiated
    if (flags & (TH_SYN | TH_FIN | TH_RST | TH_URG | TH_ACK | TH_ECE | TH_CWR)) != TH_ACK:
        return 0
    if c.in_recovery or c.persist or c._undo_eifel or c.frto or c._rto_recovery:
        return 0                                   # (Eifel, F-RTO: the slow path judges)
    if d.opt_present:
        # Only the timestamps option rides the fast path, and only once negotiated.
        if d.opt_present != OPT_TS or not c.ts_ok:
            return 0
        if seq_lt(d.tsval, c.ts_recent):
            return 0                               # PAWS (RFC 7323 5.3 R1): slow path drops
    elif c.ts_ok:
        return 0                                   # RFC 7323 3.2: the slow path drops it
    if d.seq != <uint32_t>(c.irs + c.rcv_nxt):
        return 0
    ad = seq_diff(d.ack, <uint32_t>(c.iss + c.snd_una))
    if ad < 0 or <uint64_t>ad > c.snd_max - c.snd_una:
        return 0
    if plen == 0 and ad == 0:
        return 0                                   # maybe a duplicate ACK: slow path counts
    reasm = c._reasm
    if plen:
        if reasm is None or reasm.nruns or c.user_closed:
            return 0
        if c.rcv_adv <= c.rcv_nxt or plen > c.rcv_adv - c.rcv_nxt:
            return 0
    wnd = (<uint64_t>d.window) << c.snd_wscale
    if c.snd_wnd == 0 and wnd:
        return 0                                   # the window reopens: persist logic
    # --- predicted: commit ---
    if d.opt_present and seq_le(d.seq, <uint32_t>(c.irs + c.last_ack_sent)):
        c.ts_recent = d.tsval                      # RFC 7323 4.3 (R3); TSval >= TS.Recent
        c.ts_recent_at = now
    c.segs_in += 1
    c.last_recv_at = now
    c.keepalive_sent = 0
    if c.ecn_ok:
        # RFC 3168 6.1.3: CWR ends our ECE echo, then CE (maybe on the same segment)
        # starts it again and is acknowledged at once (as Linux's tcp_ecn_check_ce).
        if d.flags & TH_CWR:
            c._ece_pending = False
        if (d.tos & IPTOS_ECN_MASK) == IPTOS_ECN_CE:
            c.ce_received += 1
            c._event(COUNT_ECN_CE_RECEIVED)
            if not c._ece_pending:
                c._ece_pending = True
                c._ack_now = True
        if d.flags & TH_ECE:
            c.ece_received += 1
            c._event(COUNT_ECN_ECE_RECEIVED)
            c.fp_ece = True                        # the reaction runs once per batch
    # Window update (RFC 9293 3.10.7.4 fifth check): in order and not older than SND.UNA.
    c.snd_wnd = wnd
    if wnd > c.max_snd_wnd:
        c.max_snd_wnd = wnd
    c.snd_wl1 = d.seq
    c.snd_wl2 = d.ack
    if ad > 0:
        ack_off = c.snd_una + <uint64_t>ad
        if c.fp_acked == 0:
            c.fp_flight = c.snd_max - c.snd_una
        if c._rtt_off is not None and ack_off > <uint64_t>c._rtt_off:
            c.rtt.sample(now - c._rtt_start)       # Karn: _rtt_off is cleared on resends
            c._rtt_off = None
        c.snd_una = ack_off
        if c.snd_nxt < ack_off:
            c.snd_nxt = ack_off
        c._send_ring.release_c(ack_off - 1)
        c.fp_acked += <uint64_t>ad
        c.fp_acks += 1
        if d.opt_present:
            c.fp_tsecr = d.tsecr
        c.bytes_acked += <uint64_t>ad
        c.retries = 0
        c.dupacks = 0
        c.cwnd_bonus = 0
    if plen:
        if deferred is not None:
            had_spans = reasm.nspans
            delivered = reasm.add_lazy_c(c.rcv_nxt - 1, base + d.payload_off, plen)
            if not had_spans and reasm.nspans:
                deferred.append(reasm)      # once per batch (settle empties every span)
        else:
            delivered = reasm.add_c(c.rcv_nxt - 1, base + d.payload_off, plen)
        c.rcv_nxt += <uint64_t>delivered
        c.bytes_received += <uint64_t>delivered
        # The ACK policy (Tcb.data_ack_policy, tcb.pyx): now or after the delayed-ACK
        # timer; the ACK itself leaves once per batch at transmit().
        c.data_ack_policy(plen, False, now)
    return 1


def receive_batch(HostServices host, SegmentBatch batch, list packets, double now,
                  int parse_flags, dict conns, list deferred=None) -> None:
    """Parse and process one received batch for `host` (see Host.receive): `conns` is
    its connection table; `deferred` (or None) collects the reassemblers that hold data
    by reference into `packets` (Host.settle).

    The demux key is the 4-tuple (local port, remote address, remote port, local
    address): an address is the IPv4 number, or for IPv6 its 16 bytes (two bytes
    objects, made once per run of segments of one 4-tuple); the connection found has the
    packet's destination as its local address (checked again, cheaply), or the slow path
    judges the packet."""
    cdef Py_ssize_t i, n
    cdef SegDesc* d
    cdef list touched = []
    cdef Tcb c = None
    cdef object obj
    cdef bint have_last = False
    cdef uint8_t last_ver = 0
    cdef uint16_t last_dport = 0, last_sport = 0
    cdef uint32_t last_src = 0, last_dst = 0
    cdef const unsigned char* last_src6 = NULL
    cdef const unsigned char* base
    cdef bint ours
    cdef uint64_t drops[DROP_REASON_COUNT]
    cdef uint64_t fast = 0
    memset(drops, 0, sizeof(drops))
    batch.parse(packets, parse_flags)
    n = batch.count
    for i in range(n):
        d = &batch.descs[i]
        if d.reason:
            if d.reason == DROP_FRAGMENT:
                # Reassembly (Python call, rare): a whole datagram comes back.
                if touched:
                    _finish(touched, now)
                    touched = []
                have_last = False
                host.input_fragment(packets[i], now)
                continue
            drops[d.reason] += 1
            continue
        if d.proto == IPPROTO_TCP:
            base = batch.bases[i]
            if d.ipver == 4:
                if not (have_last and last_ver == 4 and d.dport == last_dport
                        and d.src == last_src and d.sport == last_sport
                        and d.dst == last_dst):
                    obj = conns.get((d.dport, d.src, d.sport, d.dst))
                    c = <Tcb>obj if obj is not None else None
                    have_last = True
                    last_ver = 4
                    last_dport, last_src, last_sport = d.dport, d.src, d.sport
                    last_dst = d.dst
                ours = c is not None and c._lip == d.dst
            else:
                if not (have_last and last_ver == 6 and d.dport == last_dport
                        and d.sport == last_sport and memcmp(base + 8, last_src6, 32) == 0):
                    # (source and destination are bytes 8..40: one compare for both)
                    obj = conns.get((d.dport, PyBytes_FromStringAndSize(
                        <const char*>base + 8, 16), d.sport, PyBytes_FromStringAndSize(
                        <const char*>base + 24, 16)))
                    c = <Tcb>obj if obj is not None else None
                    have_last = True
                    last_ver = 6
                    last_dport, last_sport = d.dport, d.sport
                    last_src6 = base + 8
                ours = c is not None and memcmp(base + 24, c._lip6, 16) == 0
            if (ours and c.st == S_ESTABLISHED
                    and fast_segment(c, d, base, now, deferred)):
                fast += 1
                if not c.fp_touched:
                    c.fp_touched = True
                    touched.append(c)
                continue
        # The slow path sees state the fast path already committed; its per-batch work
        # (congestion policy, timers) is finished first so the order of events holds.
        if touched:
            _finish(touched, now)
            touched = []
        have_last = False
        host.input_slow(batch.packet(i), now)
    if touched:
        _finish(touched, now)
    host.count_batch(n, fast, drops)


cdef int _finish(list touched, double now) except -1:
    cdef Tcb c
    for obj in touched:
        c = <Tcb>obj
        c.fp_touched = False
        c._fast_batch_done(now)
    return 0
