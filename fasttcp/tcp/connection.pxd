# The connection's slow path (connection.pyx) is compiled too: with `self` typed, every
# read of a TCB field is a C load, not an attribute lookup. All the fields are the Tcb's
# (tcb.pxd); Connection adds the state machine's methods.
from libc.stdint cimport int64_t, uint32_t, uint64_t

from fasttcp.storage._reasm cimport Reassembler

from fasttcp.tcp.tcb cimport (S_CLOSE_WAIT, S_CLOSED, S_CLOSING, S_ESTABLISHED, S_FIN_WAIT_1,
                              S_FIN_WAIT_2, S_LAST_ACK, S_LISTEN, S_SYN_RECEIVED, S_SYN_SENT,
                              S_TIME_WAIT, STATE_COUNT, Tcb)
from fasttcp.tcp.transitions cimport (E_2MSL_TIMEOUT, E_ABORT, E_ACK_OF_SYN, E_ACTIVE_OPEN,
                                      E_CLOSE, E_COOKIE_ACK, E_FIN, E_FIN_ACKED,
                                      E_FIN_OURS_ACKED, E_ICMP_UNREACHABLE, E_PASSIVE_OPEN,
                                      E_RST, E_SYN, E_SYN_ACK, E_TIME_WAIT_FULL,
                                      E_TIME_WAIT_REOPEN, E_TIMEOUT, next_state)
from fasttcp.tcp._timewait cimport TimeWait
from fasttcp.wire._wire cimport Packet


cdef class Connection(Tcb):
    cdef object __weakref__
    # Its TIME-WAIT record once the host keeps TIME-WAIT as one (Host.hold_time_wait):
    # then the state is TIME_WAIT while the record is live, CLOSED after.
    cdef readonly TimeWait _tw
    cdef bint _tw_closed(self)

    cpdef on_segment(self, Packet seg, double now)
    cdef _segment_syn_sent(self, Packet seg, double now)
    cdef _segment_synchronized(self, Packet seg, double now)
    cdef int _syn_received_syn(self, Packet seg, int64_t seq_off, double now) except -1
    cdef int _check_sequence(self, Packet seg, int64_t seq_off, int64_t seg_len,
                             double now) except -1
    cdef int _check_rst(self, Packet seg, int64_t seq_off, double now) except -1
    cdef int _check_syn(self, Packet seg, double now) except -1
    cdef int _check_ack(self, Packet seg, int64_t seg_len, double now) except -1
    cdef int _process_text(self, Packet seg, double now) except -1
    cdef _process_fin(self, Packet seg, int64_t seq_off, double now)
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
    cdef _ecn_input(self, Packet seg)
    cdef _on_ece(self, double now)
    cdef _hystart_ack(self, int64_t ack_off, double rtt, int acks, double now)
    cdef double _hystart_rtt(self, int64_t lo, int64_t hi, uint32_t tsecr, double now)
    cdef _ts_sample(self, uint32_t tsecr, double now)
    cdef _new_ack(self, int64_t ack_off, double now)
    cdef _ack_advance(self, int64_t ack_off, double now)
    cdef _dupack(self, double now)
    cdef _receive_text(self, Packet seg, int64_t seq, double now)
    cdef bint _ooo_admit(self, Reassembler reasm, uint64_t off, int64_t n) except -1
    cdef _check_fin(self, double now)
    cdef _enter_time_wait(self, int event, double now)
    cdef _to_record(self)
    cdef bint _user_timed_out(self, double now) except -1
    cdef int64_t time_wait_reopen(self, Packet seg) except -2
    cpdef object deadline(self)
    cpdef on_timer(self, double now)
    cpdef _output(self, double now, list out)
    cdef _send_syn(self, double now, list out, bint ack)
    cdef bint _output_data(self, double now, list out) except -1
    cdef _after_send_ack(self)
    cdef uint32_t _snd_seq(self, int64_t off) noexcept
    cdef uint32_t _rcv_seq(self, int64_t off) noexcept
    cdef int64_t _data_end(self)
    cdef _transition(self, int event)
    cdef _terminate(self, int event, error)
    cdef _return_buffers(self)
    cpdef _fast_batch_done(self, double now)
    cdef _set_send_mss(self, int peer_mss)
    cdef _dup_ack_now(self)
    cdef _handshake_window(self)
    cdef bint _in_ecn_reduction(self)
    cdef _arm_pto(self, double now)
    cdef _rate_sample(self, double now)
    cdef _set_gso(self)
    cdef _set_ref_min(self)
    cdef int64_t _initial_rcv_window(self)
