# The transmission control block (RFC 9293 3.3.1): every variable of one connection, as C
# fields of one cdef class, and the TCP states as one C enum.
#
# Connection (connection.pyx: the state machine, user calls, timers) subclasses Tcb; the
# fast path (_fastpath.pyx) works on Tcb directly. Both read and write these fields as C
# variables; Python code sees them as attributes. tcb.pyx holds Tcb's own methods: the
# segment builder and the steady-state send loop.
#
# Sequence space: send and receive positions are signed 64-bit *offsets* from ISS and IRS
# (offset 0 is the SYN, data byte k is offset 1 + k, the FIN follows the last byte), so
# differences keep their sign and never wrap; 32-bit sequence numbers exist only at the
# wire.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from fasttcp.storage._reasm cimport Reassembler
from fasttcp.storage._ring cimport SendRing
from fasttcp.tcp._hystart cimport HyStartRounds
from fasttcp.tcp._rack cimport RackQueue
from fasttcp.tcp.host_services cimport Count, HostServices
from fasttcp.tcp.rtt cimport RttEstimator
from fasttcp.wire._wire cimport TcpOut


# The eleven states (RFC 9293 3.3.2), numbered in the RFC's order. This is the one
# definition: fasttcp.tcp.states.State takes its values from here.
cpdef enum TcpState:
    S_CLOSED = 0
    S_LISTEN = 1
    S_SYN_SENT = 2
    S_SYN_RECEIVED = 3
    S_ESTABLISHED = 4
    S_FIN_WAIT_1 = 5
    S_FIN_WAIT_2 = 6
    S_CLOSE_WAIT = 7
    S_CLOSING = 8
    S_LAST_ACK = 9
    S_TIME_WAIT = 10
    STATE_COUNT = 11                    # how many there are (not a state)


cdef class Tcb:
    # --- the connection and its owner ---
    cdef public HostServices host
    cdef public object settings
    # The state (TcpState); changed only by Connection._transition (connection.pyx).
    cdef readonly int st
    # IPv4: the addresses as numbers; IPv6 (ipver 6): their 16 bytes (never Python objects)
    cdef public uint32_t _lip, _rip
    cdef readonly uint8_t ipver         # 4 or 6
    cdef unsigned char _lip6[16]
    cdef unsigned char _rip6[16]
    cdef public uint16_t lport, rport
    # the demux 4-tuple: (lport, remote ip, rport, local ip), IPv4 addresses as numbers,
    # IPv6 addresses as their 16 bytes
    cdef public tuple key
    # (ip, port) tuples; IPv6: (ip, port, 0, 0) as the socket module's
    cdef public object local_address, remote_address
    cdef public bint passive
    cdef public bint user_closed        # close() was called: nobody reads any more
    cdef public object listener         # set for passive opens until accepted
    cdef public object error            # the TcpError that ended the connection
    cdef public object soft_error       # last ICMP soft error
    cdef public double created_at

    # --- send sequence space (RFC 9293 3.3.1) ---
    cdef public uint32_t iss
    # snd_max: the highest offset sent (snd_nxt goes back below it to retransmit)
    cdef public int64_t snd_una, snd_nxt, snd_max, snd_wnd, max_snd_wnd
    # snd_sml: the end of the last sub-MSS segment of new data sent (Minshall's Nagle
    # variant, as Linux tcp_minshall_update; 0: none yet)
    cdef int64_t snd_sml
    cdef public uint32_t snd_wl1, snd_wl2
    cdef public object fin_off          # offset of our FIN once queued, else None
    cdef public SendRing _send_ring
    cdef public bint nodelay
    cdef public int ttl
    cdef public bint _pending_rtx       # resend the segment at SND.UNA
    cdef public bint _probe             # send a zero-window probe

    # --- receive sequence space ---
    cdef public uint32_t irs
    cdef public int rcv_buf
    cdef public int rcv_slack           # buffer bytes past rcv_buf (Settings.rcv_storage)
    cdef public int64_t rcv_nxt, rcv_adv   # rcv_adv: the right edge we have advertised
    cdef public Reassembler _reasm
    cdef public object rcv_fin_off      # the peer's FIN offset, once seen
    cdef public bint _fin_received
    # ACK owed: at once, or after delayed_ack (RFC 5681 4.2)
    cdef public bint _ack_now
    cdef public int _rcv_mss            # estimate of the peer's MSS (the ACK policy)
    cdef public int64_t _unacked_bytes
    cdef public double delayed_ack
    cdef public int _quick_acks         # ACKs left to send at once (Linux's quickack mode)
    cdef public bint _data_seen         # data has arrived (quick ACKs granted)

    # --- timers (Optional[float] deadlines for the Python side) ---
    cdef public object rtx_at, delack_at, timewait_at, keepalive_at
    cdef public bint persist            # the retransmission timer is the persist timer
    cdef public int _syn_retransmits     # SYN / SYN-ACK retransmissions (RFC 6928 2)
    cdef public int retries, keepalive_sent
    cdef public RttEstimator rtt
    cdef public object _rtt_off         # the one timed segment (Karn: cleared on resends)
    cdef public double _rtt_start, last_recv_at, last_send_at
    cdef public double _invalid_ack_at  # when we last answered an invalid pure segment
    # Zero-window probing (RFC 9293 3.8.6.1, RFC 1122 4.2.2.17), as Linux counts it:
    # probes_out: probes since the window last let a segment out (the persist backoff
    # shift, Linux icsk_backoff; also what an orphan's orphan_retries limits);
    # probes_unanswered: probes since the peer last sent an ACK (Linux icsk_probes_out,
    # limited by max_retries). stall_at: when the current stall began (the first timer
    # expiry without progress; valid while retries or probes_out is non-zero), for
    # settings.user_timeout (RFC 5482).
    cdef public int probes_out, probes_unanswered
    cdef public double stall_at
    cdef public bint orphan             # counted in the host's orphans (settings.max_orphans)

    # --- negotiated options ---
    cdef public int mss, mss_limit, snd_wscale, rcv_wscale
    cdef public bint _ws_ok             # window scaling (RFC 7323 2)
    cdef public bint ts_ok              # both SYNs carried timestamps (RFC 7323 3)
    cdef public uint32_t ts_recent      # TS.Recent
    cdef public double ts_recent_at     # when TS.Recent was last set (RFC 7323 5.5)
    cdef public uint32_t ts_offset      # per-connection random offset of our TS clock
    cdef public bint sack_ok            # both SYNs carried SACK-permitted (RFC 2018)
    cdef public int64_t last_ack_sent   # Last.ACK.sent, as a receive offset
    cdef public double _ts_next_sample  # one timestamp RTT sample per RTT (RFC 7323 4.1)
    cdef public object _ts_floor        # echoes older than our last timeout are ambiguous
    cdef public int64_t last_ooo_off    # receive offset of the latest out-of-order segment
    # D-SACK (RFC 2883): a duplicate segment's range (receive offsets), reported once as
    # the first SACK block of the next ACK; dsack_end == 0 when none is pending.
    cdef public int64_t dsack_start, dsack_end
    cdef public uint32_t gso_max        # largest super-segment for a TSO link; 0 = off

    # --- congestion control and loss recovery ---
    cdef public object cc               # fasttcp.tcp.congestion.CongestionControl
    # HyStart++ (RFC 9406 4.2): the policy's bookkeeping (cc.hystart_rounds()), fed per ACK
    # batch in C; None until the first slow-start ACK batch (or for a policy that keeps
    # its own hystart_ack).
    cdef HyStartRounds hs
    cdef public bint in_recovery
    cdef public int dupacks
    cdef public int64_t recover
    cdef public int64_t cwnd_bonus      # limited transmit (RFC 3042): dupacks * SMSS
    # SACK scoreboard (RFC 6675 3): sorted [start, end) send offsets above SND.UNA
    cdef public list sacked
    cdef public int64_t _high_rxt       # HighRxt
    cdef public object _rescue_rxt      # RescueRxt
    cdef public bint _sack_recovery
    # RACK-TLP (RFC 8985) and PRR (RFC 6937): the per-segment send times and scoreboard
    # flags (created at the first data sent on a SACK connection), the loss-detection and
    # PRR policies (fasttcp/tcp/loss.py), and the loss timer that shares the RTO's role
    # (as Linux's ICSK_TIME_LOSS_PROBE / ICSK_TIME_REO_TIMEOUT): its deadline and kind.
    cdef public RackQueue rtxq
    cdef public object loss, prr
    cdef public object _lr_at
    cdef public int _lr_kind
    cdef public int64_t tlp_end         # TLP.end_seq (0: no probe episode)
    cdef public bint tlp_is_retrans     # TLP.is_retrans
    cdef public int _tlp_send           # at the next output: 1 new data, 2 the last segment
    cdef public int64_t tlp_probes, spurious_rtx_undone
    # Undo of a spurious reduction (RFC 3522 Eifel, RFC 3708 D-SACK; Linux undo_marker):
    # the episode's start (SND.UNA; -1 none), cwnd and ssthresh before it, retransmissions
    # before it and D-SACKed since, our TSval when it began, and whether Eifel may still
    # judge it (the first ACK past the marker).
    cdef public int64_t undo_marker, _undo_rtx0, _undo_dsacked
    cdef public object _undo_cwnd, _undo_ssthresh
    cdef public uint32_t _undo_tsval
    cdef public bint _undo_eifel, _undo_rto
    # F-RTO (RFC 5682) after an RTO: its step (FRTO_* in connection.pyx; 0 off), and new
    # data owed at the next output (step 2b)
    cdef public int frto
    cdef public bint _frto_send
    # After an RTO on a SACK connection, until SND.UNA passes "recover": what is marked
    # lost is resent as the pipe allows, SACKed data is not (Linux's Loss state)
    cdef public bint _rto_recovery
    cdef public double delivery_rate    # bytes/s over the latest round trip
    cdef public double _dr_t0
    cdef public int64_t _dr_b0

    # --- ECN (RFC 3168) ---
    cdef public bint ecn_ok             # both SYNs agreed on ECN (6.1.1)
    cdef public bint _ecn_syn           # our SYN asked for it (settings.ecn == 1)
    cdef public bint _ece_pending       # receiver: CE seen; ECE on every ACK until CWR (6.1.3)
    cdef public bint _cwr_pending       # sender: CWR on the next new data segment (6.1.2)
    cdef public bint fp_ece             # the fast path took an ACK with ECE in this batch
    # sender: one reduction per window: none until SND.UNA passes this, the SND.MAX of the
    # last one (6.1.2)
    cdef public int64_t _ecn_recover
    cdef public int64_t ce_received, ece_received

    # --- counters ---
    cdef public int64_t bytes_sent, bytes_acked, bytes_received, segs_in, segs_out
    cdef public int64_t retransmits

    # --- per-batch accumulators of the fast path (_fastpath.pyx) ---
    cdef public int64_t fp_acked
    cdef public int64_t fp_flight
    cdef public int fp_acks
    cdef public bint fp_touched
    cdef public uint32_t fp_tsecr       # TSecr of the last ACK the fast path took

    # Count an event with the host, and trace it when the host traces (Host.trace_event).
    cdef int _event(self, Count what) except -1
    cdef int64_t window_edge(self) noexcept
    cdef uint16_t advertised_window(self) noexcept
    cdef int enter_quickack(self) except -1
    cdef int data_ack_policy(self, int64_t n, bint at_once, double now) except -1
    cdef int ack_sent(self) except -1
    cdef uint32_t tsval_at(self, double now) noexcept
    cdef int ip_overhead(self) noexcept      # IP + TCP header bytes: 40, or 60 for IPv6
    cdef void fill_header(self, TcpOut* t, uint64_t off, int flags, uint16_t window) noexcept
    cdef object build(self, uint64_t off, int flags, uint16_t window, Py_ssize_t n,
                      bint from_ring, double now, bint ect=*)
    cdef int add_sack_blocks(self, TcpOut* t) noexcept
    cdef int sack_space(self) noexcept
    cdef int mss_now(self) noexcept
    cpdef bytes build_syn(self, bint ack, uint16_t window, int opts, double now,
                          int ecn_flags=*)
    cdef int send_range(self, uint64_t off, uint64_t n, double now, list out,
                        bint retransmit) except -1
    cdef double persist_timeout(self) noexcept
