# The connection's slow path (connection.pyx) is compiled too: with `self` typed, every
# read of a TCB field is a C load, not an attribute lookup. Fields the fast path needs are
# in Tcb (_fastpath.pxd); the ones only the state machine uses are declared here.
from libc.stdint cimport int64_t, uint32_t

from fasttcp.tcp._fastpath cimport Tcb
from fasttcp.wire._wire cimport Packet

# The states as C numbers (Tcb.st), in RFC 9293 order as fasttcp.State numbers them.
cdef enum:
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


cdef class Connection(Tcb):
    cdef public object local_address, remote_address   # (ip, port) tuples
    cdef public tuple key                               # (lport, remote ip int, rport)
    cdef public bint passive
    cdef public object listener          # set for passive opens until accepted
    cdef public object error             # the TcpError that ended the connection
    cdef public double created_at
    cdef public object rcv_fin_off       # the peer's FIN offset, once seen
    cdef public bint _fin_received
    cdef public object timewait_at, keepalive_at
    cdef public bint _syn_retransmitted
    cdef public bint _pending_rtx        # resend the segment at SND.UNA
    cdef public bint _probe              # send a zero-window probe
    cdef public object soft_error        # last ICMP soft error
    cdef public double _ts_next_sample
    cdef public object _ts_floor
    cdef public list sacked              # SACK scoreboard: sorted [start, end) offsets
    cdef public int64_t _high_rxt
    cdef public object _rescue_rxt
    cdef public bint _sack_recovery
    cdef public double _invalid_ack_at  # when we last answered an invalid pure segment
    cdef object __weakref__

    cpdef on_segment(self, Packet seg, double now)
    cdef _segment_syn_sent(self, Packet seg, double now)
    cdef _segment_synchronized(self, Packet seg, double now)
    cdef _take_syn_options(self, Packet seg)
    cpdef _open_passive(self, Packet seg, double now)
    cpdef _open_from_cookie(self, Packet seg, int mss, double now)
    cdef _update_window_from(self, Packet seg, bint syn)
    cdef _process_ack(self, Packet seg, int64_t ack_off, int64_t seg_len, double now)
    cdef bint _acceptable(self, int64_t seq_off, int64_t seg_len, int64_t wnd)
    cdef _challenge_ack(self, double now)
    cdef _invalid_ack(self, int64_t seg_len, double now)
    cdef bint _answered_recently(self, double now)
    cdef _note_duplicate(self, int64_t start, int64_t end)
    cdef _ts_sample(self, uint32_t tsecr, double now)
    cdef _new_ack(self, int64_t ack_off, double now)
    cdef _ack_advance(self, int64_t ack_off, double now)
    cdef _dupack(self, double now)
    cdef _receive_text(self, Packet seg, int64_t seq, double now)
    cdef _check_fin(self, double now)
    cdef _enter_time_wait(self, double now)
    cpdef object deadline(self)
    cpdef on_timer(self, double now)
    cpdef _output(self, double now, list out)
    cdef _send_syn(self, double now, list out, bint ack)
    cdef bint _output_data(self, double now, list out) except -1
    cdef _after_send_ack(self)
    cdef uint32_t _snd_seq(self, int64_t off) noexcept
    cdef uint32_t _rcv_seq(self, int64_t off) noexcept
    cdef int64_t _data_end(self)
    cdef _set_state(self, int st)
    cpdef _terminate(self, error)
    cdef _return_buffers(self)
    cpdef _fast_batch_done(self, double now)
    cdef _set_gso(self)
    cdef _set_ref_min(self)
    cdef int64_t _initial_rcv_window(self)
