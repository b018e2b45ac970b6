# The connection's slow path (connection.pyx) is compiled too: with `self` typed, every
# read of a TCB field is a C load, not an attribute lookup. Fields the fast path needs are
# in Tcb (_fastpath.pxd); the ones only the state machine uses are declared here.
from libc.stdint cimport int64_t

from fasttcp.tcp._fastpath cimport Tcb


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
    cdef object __weakref__
