# The transmission control block (RFC 9293 3.3.1) as a C struct behind a Python class, and
# the per-batch fast path that works on it.
#
# `fasttcp.tcp.connection.Connection` (connection.pyx) subclasses Tcb: the state machine
# there and the fast path here both touch these fields as C variables; Python code sees
# them as attributes. Send/receive positions are signed 64-bit offsets from ISS/IRS (see
# connection.pyx), so differences keep their sign; 32-bit sequence numbers exist only at
# the wire.
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t

from fasttcp.storage._reasm cimport Reassembler
from fasttcp.storage._ring cimport SendRing
from fasttcp.tcp.host_services cimport HostServices
from fasttcp.tcp.rtt cimport RttEstimator
from fasttcp.wire._wire cimport SegDesc, TcpOut

cdef class Tcb:
    cdef public HostServices host
    cdef public object settings
    cdef public object state            # fasttcp.State (for Python)
    cdef public int st                  # the same as an int (for C)
    cdef public uint32_t _lip, _rip
    cdef public uint16_t lport, rport
    cdef public uint32_t iss, irs
    # send side
    # snd_max: the highest offset sent (snd_nxt goes back below it to retransmit)
    cdef public int64_t snd_una, snd_nxt, snd_max, snd_wnd, max_snd_wnd
    cdef public uint32_t snd_wl1, snd_wl2
    cdef public object fin_off          # offset of our FIN once queued, else None
    cdef public SendRing _send_ring
    cdef public int mss, mss_limit, snd_wscale, rcv_wscale
    cdef public bint _ws_ok
    cdef public bint nodelay
    cdef public int ttl
    # receive side
    cdef public int64_t rcv_nxt, rcv_adv   # rcv_adv: the right edge we have advertised
    cdef public Reassembler _reasm
    cdef public bint user_closed
    cdef public int rcv_buf
    # ACK state
    cdef public bint _ack_now
    cdef public int64_t _unacked_bytes
    cdef public int _rcv_mss
    cdef public double delayed_ack
    # loss recovery / timers (timers are Optional[float] for the Python side)
    cdef public bint in_recovery, persist
    cdef public int dupacks, retries, keepalive_sent
    cdef public int64_t recover
    cdef public object rtx_at, delack_at
    cdef public object _rtt_off         # the one timed segment (Karn: cleared on resends)
    cdef public double _rtt_start, last_recv_at, last_send_at
    cdef public object cc
    cdef public RttEstimator rtt
    cdef public int64_t cwnd_bonus     # limited transmit (RFC 3042): dupacks * SMSS
    cdef public uint32_t gso_max        # largest super-segment for a TSO link; 0 = off
    # timestamps (RFC 7323) and SACK (RFC 2018)
    cdef public bint ts_ok              # both SYNs carried timestamps
    cdef public uint32_t ts_recent      # TS.Recent
    cdef public double ts_recent_at     # when TS.Recent was last set (RFC 7323 5.5)
    cdef public uint32_t ts_offset      # per-connection random offset of our TS clock
    cdef public int64_t last_ack_sent  # Last.ACK.sent, as a receive offset
    cdef public uint32_t fp_tsecr       # TSecr of the last ACK the fast path took
    cdef public bint sack_ok            # both SYNs carried SACK-permitted
    cdef public int64_t last_ooo_off   # receive offset of the latest out-of-order segment
    # D-SACK (RFC 2883): a duplicate segment's range (receive offsets), reported once as
    # the first SACK block of the next ACK; dsack_end == 0 when none is pending.
    cdef public int64_t dsack_start, dsack_end
    # counters
    cdef public int64_t bytes_sent, bytes_acked, bytes_received, segs_in, segs_out
    cdef public int64_t retransmits
    # per-batch accumulators of the fast path
    cdef public int64_t fp_acked
    cdef public int64_t fp_flight
    cdef public int fp_acks
    cdef public bint fp_touched

    cdef uint16_t advertised_window(self) noexcept
    cdef uint32_t tsval_at(self, double now) noexcept
    cdef void fill_header(self, TcpOut* t, uint64_t off, int flags, uint16_t window) noexcept
    cdef object build(self, uint64_t off, int flags, uint16_t window, Py_ssize_t n,
                     bint from_ring, double now)
    cdef int add_sack_blocks(self, TcpOut* t) noexcept
    cpdef bytes build_syn(self, bint ack, uint16_t window, int opts, double now)
    cdef int send_range(self, uint64_t off, uint64_t n, double now, list out,
                        bint retransmit) except -1
